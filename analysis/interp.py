"""Interpretability scores of one model against the skill suite's ground truth,
whatever its FFN kind: the numbers the gap report puts beside capability.

Every variant is scored on the same footing, the ground-truth coverage of its most
readable units (Karvonen et al.; analysis.coverage.coverage): the mean over
ground-truth binary features of the best single unit's F1. The units are

    dense        MLP neurons                 blocks.{i}.mlp.hook_post
    moe          expert gate weights         blocks.{i}.mlp.hook_expert_{indices,weights}
    transcoder   sparse latents              blocks.{i}.mlp.hook_latents

and each kind adds its own scores: expert specialisation and causal selectivity
(analysis.specialisation), latent health (l0, dead and dense fractions).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.batches import to_device
from glassbox.analysis.coverage import collect_activations, coverage, ground_truth_labels
from glassbox.analysis.sae_metrics import dead_fraction, dense_fraction, l0
from glassbox.analysis.specialisation import specialisation_report
from glassbox.training.data import SuiteData, collate


def suite_batches(
    suite: SuiteData, split: str, n_examples: int, batch_size: int = 64, seed: int = 0, device=None
) -> list[dict[str, Tensor]]:
    """A seeded sample of n_examples rows of a split, collated into batches."""
    ds = suite.splits[split]
    idx = list(range(len(ds)))
    random.Random(seed).shuffle(idx)
    rows = [ds[i] for i in sorted(idx[:n_examples])]
    batches = [
        collate(rows[i : i + batch_size], suite.pad_id) for i in range(0, len(rows), batch_size)
    ]
    if device is not None:
        batches = [to_device(b, device) for b in batches]
    return batches


def ffn_kinds(model) -> dict[int, str]:
    return {i: model.cfg.ffn_for_layer(i).kind for i in range(model.cfg.n_layers)}


def _gate_matrix(indices: Tensor, weights: Tensor, n_experts: int) -> Tensor:
    """(N, k) expert ids and gate weights -> (N, E) weight of each expert (0 if unchosen)."""
    out = torch.zeros(indices.shape[0], n_experts)
    out.scatter_(1, indices.long(), weights.float())
    return out


def unit_activations(model, batches, max_tokens: int | None = 20_000):
    """Per layer, the (N, U) activations of the readable units, plus the collected
    tokens' features and skills (analysis.transcoder.Collected).

    The units are what each layer's FFN kind says they are (archs.ffn.FFN:
    `unit_hooks` names the hook points that hold them, `read_units` makes the
    (N, U) matrix), so a new kind is read without a change here."""
    ffns = {i: block.mlp for i, block in enumerate(model.blocks) if block.mlp.unit_hooks}
    names = [f"blocks.{i}.mlp.{h}" for i, ffn in ffns.items() for h in ffn.unit_hooks]
    col = collect_activations(model, batches, names, max_tokens=max_tokens)
    units: dict[int, Tensor] = {
        i: ffn.read_units({h: col.acts[f"blocks.{i}.mlp.{h}"] for h in ffn.unit_hooks})
        for i, ffn in ffns.items()
    }
    return units, col


def coverage_scores(
    model, batches, suite: SuiteData, max_tokens: int | None = 20_000
) -> dict[str, Any]:
    """interp.coverage (mean over layers of each layer's coverage), per-layer
    coverage, and for transcoder layers l0 / dead_fraction / dense_fraction."""
    units, col = unit_activations(model, batches, max_tokens)
    labels, names = ground_truth_labels(
        col.features, suite.feature_names, suite.feature_kinds, col.skill, suite.skill_names
    )
    layers: dict[str, Any] = {}
    health: dict[str, list[float]] = {"l0": [], "dead_fraction": [], "dense_fraction": []}
    for i, acts in units.items():
        res = coverage(acts, labels, names)
        entry: dict[str, Any] = {"coverage": res.coverage, "n_units": acts.shape[1]}
        if ffn_kinds(model)[i] == "transcoder":
            entry.update(
                l0=l0(acts), dead_fraction=dead_fraction(acts), dense_fraction=dense_fraction(acts)
            )
            for k in health:
                health[k].append(entry[k])
        layers[str(i)] = entry
    out: dict[str, Any] = {
        "interp.coverage": sum(e["coverage"] for e in layers.values()) / max(len(layers), 1),
        "coverage_by_layer": layers,
        "n_ground_truth_features": len(names),
        "n_tokens": int(labels.shape[0]),
    }
    for k, vals in health.items():
        if vals:
            out[f"interp.{k}"] = sum(vals) / len(vals)
    return out


def interp_report(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 512,
    seed: int = 0,
    causal: bool = True,
) -> dict[str, Any]:
    """Every applicable interpretability score of `model` on the suite's held-out
    data: coverage for every kind; expert specialisation, the dense k-means
    comparison point and causal selectivity for moe and dense models (val split
    picks each skill's experts, test split scores their ablation).

    Returns {"summary": {"interp.<metric>": float}, "coverage": {...}, "moe": {...}}.
    """
    device = model.device
    val = suite_batches(suite, "val", n_examples, seed=seed, device=device)
    test = (
        suite_batches(suite, "test", n_examples, seed=seed + 1, device=device) if causal else None
    )
    cov = coverage_scores(model, val, suite)
    summary = {k: v for k, v in cov.items() if k.startswith("interp.")}
    report: dict[str, Any] = {"coverage": cov}
    kinds = set(ffn_kinds(model).values())
    if kinds & {"moe", "dense"}:
        moe = specialisation_report(
            model,
            val,
            suite.skill_names,
            suite.feature_names,
            causal_batches=test if "moe" in kinds else None,
            plot_dir=out_dir,
            seed=seed,
        )
        report["moe"] = moe
        for k, v in moe["summary"].items():
            summary.setdefault(k, v)
    report["summary"] = summary
    return report
