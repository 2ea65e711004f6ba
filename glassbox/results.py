"""Typed results of the gap report: one per run, one per post-hoc fit, their
aggregation over seeds, and the content keys that say when a saved one is stale.

A result is built once, with every number it reports, and never changed after.
Its numbers are one flat mapping from dotted keys (`val_loss`, `interp.coverage`,
`skills.copy.accuracy`, `tools.exact_match`), the keys of glassbox.metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from glassbox.analysis.jsonable import is_defined, jsonable, mean_defined
from glassbox.archs.checkpoint import flatten
from glassbox.metrics import METRICS, Metric, Stat, expand, unique_keys

# Bump when the scoring (analysis, post-hoc fitting, what a result holds) changes what
# the same checkpoint and settings produce: every saved score then misses and is redone.
# 3: baselines (untrained twin, token identity), contextual coverage, circuits
# 4: the audited scores (held out, both signs, matched candidates, pooled, intervals)
# 5: modularity (keep-25% cost, delta target, delta others: analysis.modularity)
# 6: one sampler (circuits read the coverage sample's examples), analysis.json of analysis.pipeline
# 7: micro-circuit edges and the same-heads, task-means controls
# 8: attribution-graph statistics (analysis.graphs.scores), the post-hoc route's too
# 9: the older whole-skill circuits renamed interp.skill_circuit_* (micro-circuits are
#    interp.microcircuit*); a micro-circuit's size chosen on a third of the prompts that
#    neither fits the mask nor scores it
# 10: k-means assigns by one matrix product (its near-ties can fall the other way); each
#    micro-circuit records its residual-channel nodes (0 while the channels stay whole)
# 11: an empty micro-circuit (a task the direct path performs) is counted
#    (interp.microcircuit_empty) and left out of the size means, ratios and random controls
# 12: a domain with no tokens in the sample has no per-domain specialisation (None, was 0)
ANALYSIS_VERSION = 12

Values = Mapping[str, Any]


def content_key(*parts: Any, scoring: bool = True) -> str:
    """16 hex digits of sha256 over `parts` as sorted JSON, ANALYSIS_VERSION included
    for a key of scores (scoring=True): a training run's key leaves it out, so that a
    change of the scoring re-scores a run without retraining it."""
    v = ANALYSIS_VERSION if scoring else None
    blob = json.dumps({"v": v, "parts": parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def capability_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's metrics.json, flat, plus the means over skills the report leads
    with: mean_accuracy, mean_exact_match, ood_accuracy. params.active counts the
    non-zero parameters that touch a token: a weight-sparse model's pruned weights
    (zeros) are not active (min of params.active and params.nonzero; exact for the
    dense and MoE kinds and for weight sparsity outside MoE experts)."""
    skills = metrics.get("skills", {})
    flat = flatten({k: v for k, v in metrics.items() if k != "split"})
    active, nonzero = flat.get("params.active"), flat.get("params.nonzero")
    if active is not None and nonzero is not None:
        flat["params.active"] = min(active, nonzero)
    return {
        **flat,
        "mean_accuracy": mean_defined(v.get("accuracy") for v in skills.values()),
        "mean_exact_match": mean_defined(v.get("exact_match") for v in skills.values()),
        "ood_accuracy": mean_defined(v.get("ood_accuracy") for v in skills.values()),
    }


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


def _plain(result: Any) -> dict[str, Any]:
    """A result's fields as JSON-safe plain data (read-only mappings as dicts)."""

    def thaw(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: thaw(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x

    return jsonable({f.name: thaw(getattr(result, f.name)) for f in fields(result)})


@dataclass(frozen=True)
class RunResult:
    """One architecture at one seed, scored.

    capability: metrics.json flat (val_loss, skills.<s>.accuracy, params.active,
    train.tokens, ...) and the means over skills; interp: interp.* scores; tools:
    tools.* scores of the tool analysis (None where it does not apply)."""

    arch: str
    seed: int
    run_dir: str
    capability: Values
    interp: Values
    tools: Values | None = None
    plots: tuple[str, ...] = ()  # figures the analysis wrote (paths)
    trained_now: bool = False  # trained by this compare, not loaded
    train_seconds: float = 0.0
    analysis_seconds: float = 0.0
    key: str = ""  # content key of what produced the scores (see compare)
    # keys that do not apply to this run's data (text: the scores against ground truth)
    not_applicable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "not_applicable", tuple(self.not_applicable))
        object.__setattr__(self, "capability", _frozen(self.capability))
        object.__setattr__(self, "interp", _frozen(self.interp))
        if self.tools is not None:
            object.__setattr__(self, "tools", _frozen(self.tools))
        object.__setattr__(self, "plots", tuple(self.plots))

    def values(self) -> dict[str, Any]:
        """Every number of the run by dotted key."""
        return {**self.capability, **self.interp, **(self.tools or {})}

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], **changes: Any) -> RunResult:
        return cls(
            **{
                **d,
                "plots": tuple(d.get("plots", ())),
                "not_applicable": tuple(d.get("not_applicable", ())),
                **changes,
            }
        )


@dataclass(frozen=True)
class PostHocResult:
    """Transcoders fitted post hoc to one `arch` run's MLPs, spliced in and scored.

    scores: interp.coverage, interp.l0, interp.dead_fraction, interp.fvu,
    interp.ce_loss_recovered, interp.kl_to_clean, fit_seconds, cost_ratio.
    cost: training.transcoder_fit.measure_feature_cost's dict (None without a
    by-construction transcoder run to time against)."""

    arch: str
    seed: int
    steps: int  # optimiser steps of each fit
    scores: Values
    coverage_by_layer: Mapping[str, Any] = field(default_factory=dict)
    cost: Mapping[str, Any] | None = None
    key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", _frozen(self.scores))

    def values(self) -> dict[str, Any]:
        return dict(self.scores)

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PostHocResult:
        return cls(**d)


class Scored(Protocol):
    arch: str

    def values(self) -> dict[str, Any]: ...


# two-sided 97.5% quantiles of Student's t, by degrees of freedom (beyond: the normal's)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}  # fmt: skip


def stat(values: Iterable[Any], intervals: Iterable[Any] = ()) -> Stat | None:
    """Mean and sample std of the defined values; None when there are none.

    With the runs' 95% intervals (`intervals`, one [lo, hi] or None per value), the
    Stat carries `ci`: for one seed its interval (the bootstrap over examples), for
    several the t interval of the mean over seeds, never narrower than the seeds' own
    intervals allow: each seed samples its examples with its seed, so the mean of n
    carries at least sqrt(sum of their squared half-widths) / n of sampling error. Two
    seeds that happen to agree would otherwise give an interval far inside either
    seed's (t's spread estimate from one degree of freedom can be near zero)."""
    vals = [v for v in values if is_defined(v)]
    if not vals:
        return None
    out = Stat(
        mean=statistics.fmean(vals),
        std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
        n=len(vals),
    )
    cis = [c for c in intervals if isinstance(c, list | tuple) and len(c) == 2]
    if len(vals) == 1 and len(cis) == 1:
        out["ci"] = [float(cis[0][0]), float(cis[0][1])]
    elif len(vals) > 1 and cis:
        between = _T975.get(len(vals) - 1, 1.96) * out["std"] / len(vals) ** 0.5
        within = math.sqrt(sum(((hi - lo) / 2) ** 2 for lo, hi in cis)) / len(cis)
        half = max(between, within)
        out["ci"] = [out["mean"] - half, out["mean"] + half]
    return out


def aggregate(
    results: Sequence[Scored], metrics: Iterable[Metric] | None = None
) -> dict[str, dict[str, Stat | None]]:
    """Per architecture (in order of first appearance), per key of `metrics`
    (expanded per skill over the keys the results hold): the Stat over seeds."""
    metrics = METRICS.values() if metrics is None else metrics  # None: every registered one
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_arch.setdefault(r.arch, []).append(r.values())
    keys = unique_keys(expand(metrics, (k for vs in by_arch.values() for v in vs for k in v)))
    return {
        arch: {k: stat([v.get(k) for v in vals], [v.get(f"{k}_ci") for v in vals]) for k in keys}
        for arch, vals in by_arch.items()
    }


def gap_percent(value: float | None, dense: float | None) -> float | None:
    """100 (value - dense) / |dense|; None when either is missing or dense is 0."""
    if value is None or dense is None or dense == 0:
        return None
    return 100.0 * (value - dense) / abs(dense)


def load_saved(path: Path, key: str) -> dict[str, Any] | None:
    """The result saved at `path` if it was made under `key`; None if absent or stale."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["result"] if saved.get("key") == key else None


def save(path: Path, key: str, result: RunResult | PostHocResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result.to_json()}, indent=2))
