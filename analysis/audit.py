"""The audited scores of one model on the skill suite: one activation pass over each
of two splits, every reading of every layer's units scored under one protocol.

The fit split is the suite's validation sample, the score split its test sample
(other examples, the same generator). Per layer, the kind says what its units are
(archs.ffn.FFN.read_all: the readings, the headline one first; `groups`: its own
routing of tokens, if any), so nothing here depends on the kind:

- coverage (analysis.heldout): held-out pooled lift over the token at matched
  candidates, for every reading, beside a random-direction control;
- specialisation (analysis.beyond_token; on data with skills): held-out information
  about the skill beyond the token, of k-means clusters of the headline reading
  (`n_groups` clusters for every kind: one scale), and of the kind's own routing
  (top-1 group and each slot), each beside its within-token shuffle.

Summary keys (means over layers; every interval from the same bootstrap draws,
averaged over layers replicate by replicate):

    interp.lift_pooled (+ _ci)          headline: held out, matched candidates
    interp.lift_pooled_all (+ _ci)      every unit as a candidate
    interp.coverage_heldout (+ _ci)     mean held-out F1, contextual features
    interp.coverage_matched (+ _ci)     the same at matched candidates
    interp.coverage_insample            the same chosen and scored on the fit split
    interp.random_control.lift_pooled (+ _ci), .coverage_matched
    interp.info_beyond_token (+ _ci)    bits/token, k-means clusters
    interp.info_beyond_token_shuffled (+ _ci)
    interp.info_beyond_token_routed (+ _ci, _shuffled): the kind's top-1 group
    baselines.token.interp.coverage_heldout (+ _ci)
    interp.skill_entropy_given_token    bits/token: the most any grouping can add

The scores kinds are told apart on (lift_pooled, coverage_matched, info_beyond_token
and _routed) keep their replicates as <key>_boot (analysis.intervals.boot), and so do
their controls (random_control.*, *_shuffled and their baselines.* copies), all over
the same draws: a score's difference to another model's (dense, the untrained twin) or
to its control has its paired interval.

The controls are repeated as baselines.random.interp.{lift_pooled, coverage_matched}
and baselines.shuffled.interp.info_beyond_token[_routed], beside the untrained
twin's baselines.init.* and the token's baselines.token.*.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.activations import Collected, collect_activations
from glassbox.analysis.batches import Sample, suite_batches
from glassbox.analysis.beyond_token import info_with_control
from glassbox.analysis.coverage import ground_truth_labels
from glassbox.analysis.heldout import (
    MATCHED_UNITS,
    MIN_POSITIVES,
    N_SUBSETS,
    Protocol,
    Split,
    protocol,
    score_random_control,
    score_units,
)
from glassbox.analysis.intervals import boot, draws_id, interval
from glassbox.analysis.jsonable import mean_defined
from glassbox.analysis.routing_metrics import kmeans_centres, nearest_centre
from glassbox.training.data import SuiteData

N_GROUPS = 32  # k-means clusters of every kind's units (the shipped MoE's expert count)
BOOT_KEYS = ("lift_pooled", "coverage_matched")  # coverage scores whose replicates are kept


@dataclass
class Readings:
    """One split read: per layer {reading: (N, n)} and the kind's groups (N, k) or
    None, with the collection (tokens, features, skills, examples)."""

    units: dict[int, dict[str, Tensor]]
    groups: dict[int, Tensor | None]
    col: Collected


def read_units(model, batches: Iterable, max_tokens: int | None = None) -> Readings:
    """Every reading of every layer's units over the batches, in one pass."""
    ffns = {i: b.mlp for i, b in enumerate(model.blocks) if b.mlp.hooks_to_read()}
    names = [f"blocks.{i}.mlp.{h}" for i, f in ffns.items() for h in f.hooks_to_read()]
    col = collect_activations(model, batches, names, max_tokens=max_tokens)
    units, groups = {}, {}
    for i, f in ffns.items():
        acts = {h: col.acts[f"blocks.{i}.mlp.{h}"] for h in f.hooks_to_read()}
        units[i] = {k: v.float() for k, v in f.read_all(acts).items()}
        groups[i] = f.groups(acts)
    return Readings(units, groups, col)


def _splits(fit: Collected, score: Collected, suite: SuiteData) -> tuple[Split, Split, list[str]]:
    """The two splits' binary labels, one feature set for both (named and valued on
    their union)."""
    features = torch.cat([fit.features, score.features])
    skill = torch.cat([fit.skill, score.skill])
    labels, names = ground_truth_labels(
        features, suite.feature_names, suite.feature_kinds, skill, suite.skill_names, min_count=1
    )
    n = fit.n_tokens
    sides = [
        Split(c.token_ids, lab, c.where[:, 0].long(), len(c.sequences))
        for c, lab in ((fit, labels[:n]), (score, labels[n:]))
    ]
    return sides[0], sides[1], names


def _draws(weights: Tensor, score: Readings) -> str:
    """The id of bootstrap draws over the score split's examples (intervals.draws_id)."""
    return draws_id(weights, score.col.token_ids, score.col.where[:, 0])


def _summarise(
    prefix: str, scored: list, keys: tuple[str, ...], draws: str | None = None
) -> dict[str, Any]:
    """Means over layers of `keys` from Scored-like (values, replicates) pairs, with
    intervals of the replicate-wise means; with `draws`, those of BOOT_KEYS kept as
    <key>_boot."""
    out: dict[str, Any] = {}
    for k in keys:
        out[f"{prefix}{k}"] = mean_defined([v[k] for v, _ in scored])
        reps = [r[k] for _, r in scored if k in r]
        if reps:
            mean = torch.stack(reps).mean(0)
            out[f"{prefix}{k}_ci"] = interval(mean)
            if draws is not None and k in BOOT_KEYS:
                out[f"{prefix}{k}_boot"] = boot(mean, draws)
    return out


def coverage_section(
    p: Protocol, fit: Readings, score: Readings, matched_units: int, n_subsets: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary keys, per-layer details) of held-out coverage."""
    head, rand, details = [], [], {}
    for i in fit.units:
        layer: dict[str, Any] = {}
        for j, (name, acts) in enumerate(fit.units[i].items()):
            s = score_units(p, acts, score.units[i][name], matched_units, n_subsets, seed)
            layer[name] = s.values
            if j == 0:
                r = score_random_control(p, acts, score.units[i][name], matched_units, seed)
                layer[name]["random_control"] = r.values
                head.append((s.values, s.replicates))
                rand.append((r.values, r.replicates))
        details[str(i)] = layer
    keys = ("lift_pooled", "lift_pooled_all", "coverage_heldout", "coverage_matched")
    draws = _draws(p.weights, score)
    out = _summarise("interp.", head, keys, draws)
    out["interp.coverage_insample"] = mean_defined([v["coverage_insample"] for v, _ in head])
    control = ("lift_pooled", "coverage_matched")
    out.update(_summarise("interp.random_control.", rand, control, draws))
    return out, details


@dataclass
class Labelled:
    """A label per token of both splits' readings (the skill; a text's domain), -1
    where none applies, and the bootstrap draws over the score split's examples."""

    fit: Tensor
    score: Tensor
    n_labels: int
    weights: Tensor

    def info(self, fit: Readings, score: Readings, fg: Tensor, sg: Tensor, seed: int):
        """info_with_control of the groups fg (fit) and sg (score) on labelled tokens."""
        fm, sm = self.fit >= 0, self.score >= 0
        ex = score.col.where[:, 0].long()
        return info_with_control(
            fit.col.token_ids[fm], fg[fm], self.fit[fm].long(),
            score.col.token_ids[sm], sg[sm], self.score[sm].long(),
            ex[sm], len(score.col.sequences), self.n_labels, self.weights, seed=seed,
        )  # fmt: skip


def specialisation_section(
    labels: Labelled, fit: Readings, score: Readings, n_groups: int, seed: int,
    prefix: str = "interp.", label: str = "skill",
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(summary keys, per-layer details) of information beyond the token about the
    label: {prefix}info_beyond_token[_routed] (+ _ci, _shuffled, _shuffled_ci) and
    {prefix}{label}_entropy_given_token."""
    clusters, routed, details = [], [], {}
    for i in fit.units:
        acts_fit = next(iter(fit.units[i].values()))
        acts_score = next(iter(score.units[i].values()))
        centres = kmeans_centres(acts_fit, n_groups, iters=30, seed=seed)
        fg, sg = nearest_centre(acts_fit, centres), nearest_centre(acts_score, centres)
        v, r = labels.info(fit, score, fg, sg, seed)
        layer: dict[str, Any] = {"clusters": v}
        clusters.append((v, r))
        if fit.groups[i] is not None:
            slots = {}
            for s in range(fit.groups[i].shape[1]):
                vs, rs = labels.info(fit, score, fit.groups[i][:, s], score.groups[i][:, s], seed)
                slots[f"slot{s}"] = vs
                if s == 0:
                    routed.append((vs, rs))
            layer["routed"] = slots
        details[str(i)] = layer
    draws = _draws(labels.weights, score)
    out = _info_summary(f"{prefix}info_beyond_token", clusters, draws)
    if routed:
        out.update(_info_summary(f"{prefix}info_beyond_token_routed", routed, draws))
    out[f"{prefix}{label}_entropy_given_token"] = mean_defined(
        [v["entropy_given_token_bits"] for v, _ in clusters]
    )
    return out, details


def _info_summary(key: str, per_layer: list, draws: str) -> dict[str, Any]:
    out = {key: mean_defined([v["info_bits"] for v, _ in per_layer])}
    mean = torch.stack([r["info"] for _, r in per_layer]).mean(0)
    out[f"{key}_ci"] = interval(mean)
    out[f"{key}_boot"] = boot(mean, draws)
    out[f"{key}_shuffled"] = mean_defined([v["shuffled"]["info_bits"] for v, _ in per_layer])
    shuffled = torch.stack([r["shuffled"] for _, r in per_layer]).mean(0)
    out[f"{key}_shuffled_ci"] = interval(shuffled)
    # the shuffle is the score's control: also under baselines.shuffled.<key>, its column
    # (its replicates there only, as the report reads them)
    out[f"baselines.shuffled.{key}"] = out[f"{key}_shuffled"]
    out[f"baselines.shuffled.{key}_ci"] = out[f"{key}_shuffled_ci"]
    out[f"baselines.shuffled.{key}_boot"] = boot(shuffled, draws)
    return out


def _as_baselines(summary: dict[str, Any]) -> dict[str, Any]:
    """The random control also under baselines.random.interp.{lift_pooled,
    coverage_matched} (+ _ci; its replicates, _boot, moved there), the report's
    baseline columns (the within-token shuffle's are made with it, in _info_summary)."""
    out = {}
    for k in ("lift_pooled", "coverage_matched"):
        for tail in ("", "_ci", "_boot"):
            control = f"interp.random_control.{k}{tail}"
            out[f"baselines.random.interp.{k}{tail}"] = (
                summary.pop(control) if tail == "_boot" else summary[control]
            )
    return out


def audit_samples(
    suite: SuiteData, n_examples: int, seed: int = 0, device=None
) -> tuple[Sample, Sample]:
    """The two splits every analysis scores on: n_examples rows of val (the fit side,
    drawn with `seed`) and of test (the score side, `seed` + 1)."""
    return (
        suite_batches(suite, "val", n_examples, seed=seed, device=device),
        suite_batches(suite, "test", n_examples, seed=seed + 1, device=device),
    )


@torch.no_grad()
def audited_scores(
    model,
    suite: SuiteData,
    fit_batches: Iterable,
    score_batches: Iterable,
    seed: int = 0,
    matched_units: int = MATCHED_UNITS,
    n_subsets: int = N_SUBSETS,
    min_positives: int = MIN_POSITIVES,
    n_groups: int = N_GROUPS,
    max_tokens: int | None = 20_000,
) -> dict[str, Any]:
    """The audited scores of `model`: {"summary": {interp.* and
    baselines.token.interp.* keys above}, "token": the token predictor's held-out
    scores and every feature's counts, "coverage": per layer and reading,
    "specialisation": per layer}. fit_batches and score_batches: the two splits'
    batches (different examples); seed: subsets, random directions, bootstrap,
    k-means."""
    fit = read_units(model, fit_batches, max_tokens)
    score = read_units(model, score_batches, max_tokens)
    fit_split, score_split, names = _splits(fit.col, score.col, suite)
    p = protocol(fit_split, score_split, names, min_positives, seed=seed)
    token = p.token_summary()
    summary: dict[str, Any] = {
        "baselines.token.interp.coverage_heldout": token["coverage_heldout"],
        "baselines.token.interp.coverage_heldout_ci": token["coverage_heldout_ci"],
        "interp.n_features_scored": token["n_features_scored"],
        "interp.n_features_left_out": token["n_features_left_out"],
    }
    report: dict[str, Any] = {"token": token}
    if fit.units:
        cov, cov_layers = coverage_section(p, fit, score, matched_units, n_subsets, seed)
        summary.update(cov)
        summary.update(_as_baselines(summary))
        report.update(coverage=cov_layers)
    if fit.units and suite.skill_names:  # about the skill: data without skills has none
        skills = Labelled(fit.col.skill, score.col.skill, len(suite.skill_names), p.weights)
        spec, spec_layers = specialisation_section(skills, fit, score, n_groups, seed)
        summary.update(spec)
        report.update(specialisation=spec_layers)
    report["summary"] = summary
    return report


__all__ = [
    "BOOT_KEYS",
    "N_GROUPS",
    "Readings",
    "audit_samples",
    "audited_scores",
    "coverage_section",
    "read_units",
]
