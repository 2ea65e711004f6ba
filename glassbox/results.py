"""Typed results of the gap report: one per run, one per post-hoc fit, their
aggregation over seeds, and the content keys that say when a saved one is stale.

A result is built once, with every number it reports, and never changed after.
Its numbers are one flat mapping from dotted keys (`val_loss`, `interp.coverage`,
`skills.copy.accuracy`, `tools.exact_match`), the keys of glassbox.metrics.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from glassbox.analysis.intervals import paired_interval
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


@functools.lru_cache(maxsize=256)
def t975(df: float) -> float:
    """Student's t 97.5% quantile (the two-sided 95% interval's multiplier) at `df`
    degrees of freedom, whole or not (Welch's are not; below 1 they count as 1): the x
    at which the density's integral from 0 reaches 0.475, by Simpson's rule and
    bisection, to about 1e-6 (12.7062 at 1, 4.3027 at 2, 2.7764 at 4, 2.2281 at 10)."""
    df = max(float(df), 1.0)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def half_mass(x: float, steps: int = 400) -> float:  # integral of the density over [0, x]
        h = x / steps
        f = [
            math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(steps + 1)
        ]
        return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 1.9, 13.0  # the quantile at 1 df is 12.706, at infinitely many 1.960
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if half_mass(mid) < 0.475 else (lo, mid)
    return (lo + hi) / 2


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
    cis = [c for c in intervals if _is_interval(c)]
    if len(vals) == 1 and len(cis) == 1:
        out["ci"] = [float(cis[0][0]), float(cis[0][1])]
    elif len(vals) > 1 and cis:
        between = t975(len(vals) - 1) * out["std"] / len(vals) ** 0.5
        within = _sampling_error(cis)
        half = max(between, within)
        out["ci"] = [out["mean"] - half, out["mean"] + half]
    return out


def difference(
    a_values: Sequence[Any], a_intervals: Sequence[Any],
    b_values: Sequence[Any], b_intervals: Sequence[Any],
    a_boots: Sequence[Any] = (), b_boots: Sequence[Any] = (),
) -> list[float] | None:  # fmt: skip
    """The 95% interval of mean(a) - mean(b): two kinds' values of one score over their
    seeds, each with its run's 95% interval (and, where saved, its bootstrap
    replicates: `a_boots`, `b_boots`, analysis.intervals.boot); None where a run lacks
    an interval.

    Kinds are told apart by this interval (above where it lies above 0), not by whether
    their two intervals overlap: two 95% intervals can overlap while the difference is
    well away from 0 (for equal widths, non-overlap is a test at about 99.4%).

    - One seed on each side, both with replicates of the same draws over the same
      examples: the paired interval (the percentile interval of the replicate-wise
      differences, analysis.intervals.paired_interval). It keeps the covariance of two
      models scored on the same examples: one hard for both moves both together.
    - Otherwise one seed on either side: the MOVER interval (Zou & Donner 2008) from
      the two intervals, lo = d - sqrt((a - a_lo)^2 + (b_hi - b)^2), hi = d +
      sqrt((a_hi - a)^2 + (b - b_lo)^2), which treats the two estimates as independent
      (where their covariance is positive, as it is over shared examples, wider than the
      paired interval).
    - Several on both: Welch's t interval of the difference of the means (degrees of
      freedom by Welch-Satterthwaite), never narrower than the seeds' own intervals
      allow (as `stat`: each mean carries at least sqrt(sum of its seeds' squared
      half-widths) / n of sampling error)."""
    a = [(float(v), c) for v, c in zip(a_values, a_intervals, strict=True) if is_defined(v)]
    b = [(float(v), c) for v, c in zip(b_values, b_intervals, strict=True) if is_defined(v)]
    if not a or not b or not all(_is_interval(c) for _, c in a + b):
        return None
    if len(a_values) == len(b_values) == len(a_boots) == len(b_boots) == 1:
        paired = paired_interval(a_boots[0], b_boots[0])
        if paired is not None:
            return paired
    if len(a) == 1 or len(b) == 1:
        sa = stat([v for v, _ in a], [c for _, c in a])
        sb = stat([v for v, _ in b], [c for _, c in b])
        (ma, (la, ua)), (mb, (lb, ub)) = (sa["mean"], sa["ci"]), (sb["mean"], sb["ci"])
        d = ma - mb
        down = math.hypot(max(ma - la, 0.0), max(ub - mb, 0.0))
        up = math.hypot(max(ua - ma, 0.0), max(mb - lb, 0.0))
        return [d - down, d + up]
    va, vb = (statistics.variance([v for v, _ in x]) / len(x) for x in (a, b))
    d = statistics.fmean(v for v, _ in a) - statistics.fmean(v for v, _ in b)
    between = 0.0
    if va + vb > 0:
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        between = t975(df) * math.sqrt(va + vb)
    within = math.hypot(*(_sampling_error([c for _, c in x]) for x in (a, b)))
    half = max(between, within)
    return [d - half, d + half]


def _sampling_error(cis: Sequence[Sequence[float]]) -> float:
    """The half-width the mean of independent estimates with these 95% intervals
    carries at least: sqrt(sum of their squared half-widths) / their count."""
    return math.sqrt(sum(((hi - lo) / 2) ** 2 for lo, hi in cis)) / len(cis)


def _is_interval(c: Any) -> bool:
    return isinstance(c, list | tuple) and len(c) == 2


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
