"""Interpretability scores of one model against the skill suite's ground truth,
whatever its FFN kind: the numbers the gap report puts beside capability.

Every variant is scored on the same footing, the ground-truth coverage of its most
readable units (Karvonen et al.; analysis.coverage.coverage): the mean over
ground-truth binary features of the best single unit's F1. The units are

    dense        MLP neurons                 blocks.{i}.mlp.hook_post
    moe          expert gate weights         blocks.{i}.mlp.hook_expert_{indices,weights}
    transcoder   sparse latents              blocks.{i}.mlp.hook_latents

and each kind adds its own scores: expert specialisation and causal selectivity
(analysis.specialisation), latent health (l0, dead and dense fractions), and every
kind gets the circuit size per skill (analysis.circuits: heads plus the kind's units).

Every score has its baselines (analysis.baselines): `interp_with_baselines` scores the
untrained twin with the same code on the same tokens (`baselines.init.<key>`), and
the token-identity baselines (`baselines.token.<key>`) come with the model's own
scores. Coverage is also split into lexical and contextual features, with the
contextual lift over the token predictor as the headline (`interp.coverage_lift`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from glassbox.analysis.activations import collect_activations, prefetch
from glassbox.analysis.audit import audit_samples, audited_scores
from glassbox.analysis.baselines import (
    feature_split,
    split_coverage,
    token_coverage,
    with_untrained_twin,
)
from glassbox.analysis.batches import suite_batches
from glassbox.analysis.circuits import circuit_report
from glassbox.analysis.coverage import coverage, ground_truth_labels
from glassbox.analysis.graphs.scores import graph_scores
from glassbox.analysis.jsonable import is_defined, mean_defined
from glassbox.analysis.microcircuits import microcircuit_report
from glassbox.analysis.modularity import modularity
from glassbox.analysis.sae_metrics import dead_fraction, dense_fraction, l0
from glassbox.analysis.specialisation import routed_and_clustered, specialisation_report
from glassbox.training.data import SuiteData

# nats: the least rise of a skill's answer loss, every unit mean-ablated, that a
# circuit is searched for (analysis.circuits' min_gap)
CIRCUIT_MIN_GAP = 0.1

__all__ = [
    "CIRCUIT_MIN_GAP",
    "coverage_scores",
    "format_scores",
    "interp_report",
    "interp_with_baselines",
    "suite_batches",
    "unit_activations",
]


def ffn_kinds(model) -> dict[int, str]:
    return {i: model.cfg.ffn_for_layer(i).kind for i in range(model.cfg.n_layers)}


def reading_hooks(model) -> list[str]:
    """Every hook point the FFN kinds' readings need (`unit_hooks`, `hooks_to_read`),
    in layer order: what the interpretability sections read over one sample."""
    return [
        f"blocks.{i}.mlp.{h}"
        for i, block in enumerate(model.blocks)
        for h in dict.fromkeys([*block.mlp.unit_hooks, *block.mlp.hooks_to_read()])
    ]


def unit_activations(model, batches, max_tokens: int | None = 20_000):
    """Per layer, the (N, U) activations of the readable units, plus the collected
    tokens' features and skills (analysis.activations.Collected).

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
    coverage, and for layers of sparse units (`FFN.sparse_units`: a transcoder's
    latents) l0 / dead_fraction / dense_fraction.

    With it, the lexical / contextual split (analysis.baselines): per layer and as
    means over layers, interp.coverage_lexical, interp.coverage_contextual and
    interp.coverage_lift (the normalised lift over the token predictor on contextual
    features); the token predictor's own coverage under baselines.token.interp.*;
    and, per feature, its token-identity F1 and kind (`features`)."""
    units, col = unit_activations(model, batches, max_tokens)
    labels, names = ground_truth_labels(
        col.features, suite.feature_names, suite.feature_kinds, col.skill, suite.skill_names
    )
    split = feature_split(col.token_ids, labels, names)
    layers: dict[str, Any] = {}
    health: dict[str, list[float]] = {"l0": [], "dead_fraction": [], "dense_fraction": []}
    for i, acts in units.items():
        res = coverage(acts, labels, names)
        entry: dict[str, Any] = {
            "coverage": res.coverage,
            **split_coverage(res.best_f1, split),
            "n_units": acts.shape[1],
            "best_f1": {n: float(res.best_f1[g]) for g, n in enumerate(names)},
        }
        if model.blocks[i].mlp.sparse_units:
            entry.update(
                l0=l0(acts), dead_fraction=dead_fraction(acts), dense_fraction=dense_fraction(acts)
            )
            for k in health:
                health[k].append(entry[k])
        layers[str(i)] = entry
    out: dict[str, Any] = {
        f"interp.{k}": mean_defined(e[k] for e in layers.values())
        for k in ("coverage", "coverage_contextual", "coverage_lift", "coverage_lexical")
    }
    out.update({f"baselines.token.interp.{k}": v for k, v in token_coverage(split).items()})
    out.update(
        coverage_by_layer=layers,
        features={
            n: {"token_f1": float(split.token_f1[g]), "kind": split.kind(g)}
            for g, n in enumerate(names)
        },
        n_ground_truth_features=len(names),
        n_lexical_features=int(split.lexical.sum()),
        n_tokens=int(labels.shape[0]),
    )
    for k, vals in health.items():
        if vals:
            out[f"interp.{k}"] = sum(vals) / len(vals)
    return out


def _scores(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k.startswith(("interp.", "baselines."))}


def interp_report(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 512,
    seed: int = 0,
    causal: bool = True,
    circuits: bool = True,
    circuit_examples: int = 256,
    circuit_min_gap: float = CIRCUIT_MIN_GAP,
    microcircuits: bool | None = None,
    graphs: bool = True,
) -> dict[str, Any]:
    """Every applicable interpretability score of `model` on the suite's held-out
    data: coverage (all, lexical, contextual, contextual lift) for every kind; expert
    specialisation, the dense k-means comparison point and causal selectivity for moe
    and dense models (val split picks each skill's experts, test split scores their
    ablation); modularity for moe and dense (analysis.modularity: keep-25% cost, delta
    target, delta others); the circuit size per skill (analysis.circuits on
    min(n_examples, circuit_examples) val rows: interp.skill_circuit_size.<skill>,
    interp.skill_circuit_fraction.<skill>, interp.skill_circuit_auc.<skill>, ... and their means
    interp.skill_circuit_fraction, interp.skill_circuit_auc over the skills whose answer loss
    rises by at least circuit_min_gap nats when every unit is mean-ablated; an
    untrained model's rises by ~0.01 nats of noise, and 90% of noise is no circuit,
    so its circuit scores are undefined). The token-identity baselines come with the scores
    (baselines.token.interp.*); the untrained twin's are interp_with_baselines'.

    Returns {"summary": {"interp.<metric>": float, "baselines.token.interp.<metric>":
    float}, "coverage": {...}, "moe": {...}, "circuits": {skill: {...}}, "audit": the
    audited scores' details (analysis.audit), "microcircuits": {task: {...}}}: the
    micro-task circuits (analysis.microcircuits; run with the circuits unless
    `microcircuits` says otherwise), "graphs": the attribution-graph statistics
    (analysis.graphs.scores: interp.graph_*), with `graphs`.
    """
    device = model.device
    val, test = audit_samples(suite, n_examples, seed, device)
    # one activation pass per sample for every hook the sections read (analysis.activations)
    prefetch(model, val, reading_hooks(model))
    cov = coverage_scores(model, val, suite)
    summary = _scores(cov)
    report: dict[str, Any] = {"coverage": cov}
    audit = audited_scores(model, suite, val, test, seed=seed)
    summary.update(audit["summary"])
    report["audit"] = {k: v for k, v in audit.items() if k != "summary"}
    _routing_scores(model, suite, val, test, causal, out_dir, seed, summary, report)
    if circuits:
        n = min(n_examples, circuit_examples)
        _circuit_scores(model, suite, n, seed, circuit_min_gap, summary, report)
    if circuits if microcircuits is None else microcircuits:
        # micro-task circuits by learned masks, held out, with controls (analysis.microcircuits)
        micro = microcircuit_report(model, suite, seed=seed)
        summary.update(micro["summary"])
        report["microcircuits"] = micro["tasks"]
    if graphs:  # exact attribution graphs of a fixed prompt set (analysis.graphs.scores)
        report["graphs"] = graph_scores(model, suite, seed=seed)
        summary.update(report["graphs"].pop("summary"))
    report["summary"] = summary
    return report


def _routing_scores(model, suite, val, test, causal, out_dir, seed, summary, report) -> None:
    """For moe and dense models: expert specialisation (and its plots), with causal
    the modularity too, into summary (the scores) and report ("moe", "modularity")."""
    routed, clustered = routed_and_clustered(model)
    if not (routed or clustered):
        return
    moe = specialisation_report(
        model,
        val,
        suite.skill_names,
        suite.feature_names,
        causal_batches=test if causal and routed else None,
        plot_dir=out_dir,
        seed=seed,
    )
    report["moe"] = moe
    for k, v in moe["summary"].items():
        summary.setdefault(k, v)
    if causal:  # keep 25% of a skill's experts (dense: neuron clusters), remove them
        mod = modularity(model, val, test, suite.skill_names, seed=seed)
        summary.update(mod.summary())
        report["modularity"] = mod.details()


def _circuit_scores(model, suite, n_examples, seed, min_gap, summary, report) -> None:
    """The circuit size per skill on n_examples val rows (analysis.circuits): its
    scores into summary as interp.skill_circuit_*, its details into report ("circuits",
    and for a MoE "circuits_expert": the same in whole experts)."""
    circ = circuit_report(model, suite, n_examples=n_examples, seed=seed, min_gap=min_gap)
    summary.update({f"interp.{k}": v for k, v in circ.to_dict().items()})
    report["circuits"] = circ.details()
    if circ.coarse is not None:  # a MoE: also in whole experts (interp.skill_circuit_*_expert)
        report[f"circuits_{circ.coarse_kind}"] = circ.coarse.details()


def interp_with_baselines(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 512,
    seed: int = 0,
    init_seed: int = 0,
    causal: bool = True,
    circuits: bool = True,
    microcircuits: bool | None = None,
    graphs: bool = True,
) -> dict[str, Any]:
    """interp_report of `model`, and of its untrained twin (analysis.baselines:
    the same config at init_seed, the run's training seed, at initialisation) with
    the same code on the same tokens (seed picks the tokens for both). The twin's
    interp.* scores join the summary as baselines.init.interp.*; its whole report is
    under "untrained_twin"."""
    kw: dict[str, Any] = {"causal": causal, "circuits": circuits, "microcircuits": microcircuits}
    kw["graphs"] = graphs

    def report_of(m, out):
        return interp_report(m, suite, out, n_examples, seed, **kw)

    return with_untrained_twin(report_of, model, out_dir, init_seed)


def format_scores(summary: Mapping[str, Any]) -> list[str]:
    """Lines for a terminal: each interp.* score beside its baselines, its lift over
    them (trained - baseline) and its 95% interval where it has one; "–" where a
    baseline is not defined. Per-skill circuit entries (interp.skill_circuit_*.<skill>)
    and the random control (interp.random_control.*) are left to the JSON."""

    def cell(x: Any) -> str:
        if isinstance(x, bool) or not is_defined(x):
            return f"{'–' if not is_defined(x) else x!s:>9}"
        return f"{x:9.4f}" if isinstance(x, float) else f"{x:>9}"

    def lift(a: Any, b: Any) -> Any:
        ok = is_defined(a) and is_defined(b) and not isinstance(a, bool)
        return a - b if ok else None

    head = (
        f"{'score':<36} {'trained':>9} {'untrained':>9} {'token':>9} {'- untr.':>9} "
        f"{'- token':>9}  95% interval"
    )
    lines = [head]
    for k, v in sorted(summary.items()):
        if not k.startswith("interp.") or k.count(".") > 1 or k.endswith(("_ci", "_boot")):
            continue
        init, tok = summary.get(f"baselines.init.{k}"), summary.get(f"baselines.token.{k}")
        row = [v, init, tok, lift(v, init), lift(v, tok)]
        ci = summary.get(f"{k}_ci")
        tail = f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        lines.append(f"{k:<36} " + " ".join(cell(x) for x in row) + tail)
    return lines
