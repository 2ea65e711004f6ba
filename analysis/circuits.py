"""Circuit size per skill: the fewest readable units that keep a skill's behaviour
when every other unit is mean-ablated (Gao et al. 2025, "Weight-sparse transformers
have interpretable circuits"; the circuit-performance ratio of MIB, Mueller et al. 2025).

For a skill s and a set S of units,

    faithfulness(S) = (L_ablated - L_S) / (L_ablated - L_clean)

where L is the skill's answer loss (mean next-token cross-entropy on the answer
tokens of the skill's examples, as training.skill_scores has `skills.<name>.loss`),
L_S the loss with every unit not in S replaced by its mean activation and the units
of S at their clean values, L_ablated = L_{} (every unit mean-ablated) and
L_clean = L_{all units}. So faithfulness({}) = 0 and faithfulness(all) = 1 by
construction; both are computed by the same code path as every other set.

Units are the readable units each kind lists in its own file (`FFN.unit_groups`,
archs/units.py), one `UnitGroup` per (layer, kind): the heads (all d_head dims of
hook_z together), then each FFN's finest units (a dense MLP's neurons, a transcoder's
latents, a MoE's experts' hidden units; `level=1` the next coarser, a MoE's whole
experts). Means are over every real (non-padding) token of the analysis batches, all
skills together, as each group computes them (a MoE's are conditional on the tokens
routed to the expert: archs/moe.py). `circuit_report` on a model whose kinds list
coarser units too reports the circuit in the finest and, under `.coarse`, in those.

Method (per skill):

1. Rank. Every unit gets a continuous keep-mask m in [0, 1] (m = 1 clean, m = 0 its
   mean: act' = mean + m (act - mean), the same m at every position). The score of a
   unit is -dL/dm, which is attribution patching (Nanda 2023; Syed et al. 2023):
   grad(L) . (clean - mean) summed over positions. It is taken at the clean point
   (m = 1 everywhere: "what does removing this unit cost") and at the all-ablated
   point (m = 0: "what does restoring this unit alone give") and averaged: the
   two-point trapezoid of integrated gradients along the straight path from
   all-ablated to clean, so the scores add up approximately to L_ablated - L_clean,
   and a unit that only matters when others are ablated (or only when they are not)
   is still seen. `attribution="clean" | "ablated"` uses one point. Scores are
   signed (a unit whose presence raises the skill's loss ranks last, not first: a
   prefix should add what helps); `signed=False` ranks by magnitude.
2. Curve. Faithfulness of the top-k prefixes on a log-spaced grid of k (plus k = 0
   and k = all), evaluated in one forward pass by stacking copies of the batch, each
   copy with its own keep-mask.
3. Search. Between the last grid size below the target and the first at or above it,
   a batched bisection (`search_points` sizes per stacked forward) finds the smallest
   prefix that reaches the target (assuming the curve is monotone inside the bracket,
   as bisection does).

Reported per skill (`CircuitResult`): `size`, `fraction` (of all units considered),
`params_read_written` (what the circuit's units read and write), `faithfulness` at
that size, the grid curve, and `auc`: the area under faithfulness (clipped to [0, 1])
against fraction over [0, 1], trapezoids on the grid with (0, 0) and (1, 1) (the
clip keeps a prefix that overshoots the clean loss, or undershoots the ablated one,
from counting more than a perfect or an empty circuit). A target never reached (it
is above 1, or ablating every unit does not raise the skill's loss by `min_gap`)
gives size = total and `reached = False`, with a `note` saying why.

A new kind of unit is its FFN kind's business: `unit_groups(layer)` in the kind's
file returns `archs.units.HookUnits` (units on a hook point's third axis) or its own
`UnitGroup` subclass (a name, a count, the parameters of one unit, how to compute its
means, and the hooks that mean-ablate the units a keep-mask leaves out).

    from glassbox.analysis.circuits import circuit_report

    report = circuit_report(model, suite)   # {skill name: CircuitResult}
    report["copy"].size, report["copy"].units, report["copy"].curve_faithfulness
    report.to_dict()                        # {"skill_circuit_size.copy": ..., ...}: nest under interp.

The units, their means, a skill's examples and the loss under keep-masks are
analysis.mean_ablation's (importable from here too). The ranking and the
faithfulness are computed on the same examples (as Gao et al.
and most circuit-discovery work do); pass held-out batches to `faithfulness` to
check a circuit on other data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.batches import suite_batches
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.mean_ablation import (
    SkillData,
    answer_tokens,
    attribution_scores,
    keep_losses,
    skill_data,
    unit_groups,
    unit_means,
)
from glassbox.archs.units import HookUnits, UnitGroup, eval_mode
from glassbox.training.data import SuiteData

Unit = tuple[str, int]  # (group name, unit index in the group)


# --------------------------------------------------------------------- results


@dataclass
class CircuitResult:
    """The circuit of one skill. Sizes count units; fractions are of `total`."""

    skill: str
    size: int  # units in the circuit (total when the target was not reached)
    total: int  # units considered
    fraction: float  # size / total
    faithfulness: float  # at `size`
    reached: bool  # faithfulness >= target at some size (False: size = total)
    target: float
    params_read_written: int  # parameters the circuit's units read and write
    params_total: int  # the same over all units considered
    auc: float  # area under clipped faithfulness vs fraction over [0, 1]
    loss_clean: float  # L_clean: the skill's answer loss, nothing ablated
    loss_ablated: float  # L_ablated: every unit mean-ablated
    n_tokens: int  # answer tokens scored
    units: list[Unit]  # the circuit, best-ranked first
    by_group: dict[str, int]  # units of the circuit in each group
    curve_sizes: list[int]  # the grid, 0 and total included
    curve_fractions: list[float]
    curve_faithfulness: list[float]
    searched: dict[int, float] = field(default_factory=dict)  # bisection: size -> faithfulness
    note: str = ""

    @property
    def fraction_params(self) -> float:
        return self.params_read_written / max(self.params_total, 1)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (nan -> None)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["units"] = [list(u) for u in self.units]
        d["searched"] = {str(k): v for k, v in sorted(self.searched.items())}
        d["fraction_params"] = self.fraction_params
        return jsonable(d)


class CircuitReport(dict):
    """{skill name: CircuitResult}. `to_dict()` gives the flat summary the caller
    nests under `interp.`; `details()` every result in full. `coarse`: for a model
    whose FFN kind lists coarser units too (a MoE: whole experts), the same report in
    those (None otherwise), named by their kind (`coarse_kind`: "expert")."""

    coarse: CircuitReport | None = None
    coarse_kind: str = ""

    def to_dict(self, suffix: str = "") -> dict[str, float | int | None]:
        """{"skill_circuit_size.<skill>", "skill_circuit_fraction.<skill>", "skill_circuit_auc.<skill>",
        "skill_circuit_faithfulness.<skill>", "skill_circuit_params.<skill>",
        "skill_circuit_reached.<skill>"} per skill, plus
        "skill_circuit_fraction" and "skill_circuit_auc": means over the skills whose loss gap
        was defined (None when none was). `suffix` goes after "circuit_<name>"; the
        coarse report's keys follow with suffix "_<coarse_kind>"
        ("skill_circuit_size_expert.<skill>", ..., "skill_circuit_auc_expert")."""
        out: dict[str, Any] = {}
        for name, r in self.items():
            out[f"skill_circuit_size{suffix}.{name}"] = r.size
            out[f"skill_circuit_fraction{suffix}.{name}"] = r.fraction
            out[f"skill_circuit_auc{suffix}.{name}"] = r.auc
            out[f"skill_circuit_faithfulness{suffix}.{name}"] = r.faithfulness
            out[f"skill_circuit_params{suffix}.{name}"] = r.params_read_written
            out[f"skill_circuit_reached{suffix}.{name}"] = r.reached
        ok = [r for r in self.values() if math.isfinite(r.auc)]
        out[f"skill_circuit_fraction{suffix}"] = (
            sum(r.fraction for r in ok) / len(ok) if ok else None
        )
        out[f"skill_circuit_auc{suffix}"] = sum(r.auc for r in ok) / len(ok) if ok else None
        if self.coarse is not None:
            out.update(self.coarse.to_dict(f"{suffix}_{self.coarse_kind}"))
        return jsonable(out)

    def details(self) -> dict[str, dict[str, Any]]:
        return {name: r.to_dict() for name, r in self.items()}


# ------------------------------------------------------------------- the search


def log_grid(total: int, n_grid: int = 12) -> list[int]:
    """0, about n_grid log-spaced sizes from 1 to total, and total (sorted, unique)."""
    if total <= 0:
        return [0]
    pts = torch.logspace(0, math.log10(total), max(n_grid, 2), dtype=torch.float64)
    return sorted({0, total, *(int(round(float(p))) for p in pts)})


def _faith(loss: Tensor, l_abl: float, l_clean: float) -> Tensor:
    return (l_abl - loss) / (l_abl - l_clean)


def _auc(fractions: Sequence[float], faith: Sequence[float]) -> float:
    """Trapezoid area of clip(faithfulness, 0, 1) over fraction in [0, 1]."""
    if any(not math.isfinite(f) for f in faith):
        return float("nan")
    x = torch.tensor(fractions, dtype=torch.float64)
    y = torch.tensor(faith, dtype=torch.float64).clamp(0, 1)
    return float(torch.trapezoid(y, x))


def circuit_for_skill(
    model,
    batches: Iterable[Mapping[str, Tensor]] | SkillData,
    skill_id: int,
    groups: Sequence[UnitGroup],
    means: Mapping[str, Tensor],
    target: float = 0.9,
    skill_name: str | None = None,
    n_grid: int = 12,
    search_points: int = 7,
    attribution: str = "both",
    signed: bool = True,
    mask_key: str = "answer_mask",
    max_rows: int = 1024,
    min_gap: float = 1e-3,
    label_key: str = "skill",
) -> CircuitResult:
    """The smallest top-ranked set of units whose faithfulness reaches `target`.

    batches: collated batches (dicts with input_ids, answer_mask or loss_mask, skill)
    or a SkillData. groups, means: from `unit_groups`, `unit_means` (means over all
    skills' tokens). The ranking (module docstring) and the evaluation use the same
    examples. `search_points` sizes are tried per stacked forward in the search (1:
    plain bisection). L_ablated - L_clean < min_gap (nats: ablating every unit does
    not hurt the skill, as in many untrained models) leaves faithfulness and auc
    undefined (nan), size = total and reached = False: there is no damage to recover.
    label_key: the label column a "skill" is read from (`skill_data`).
    """
    name = skill_name if skill_name is not None else str(skill_id)
    with eval_mode(model):
        sd = _as_skill_data(model, batches, skill_id, mask_key, name, label_key)
        score = attribution_scores(model, sd, groups, means, attribution, max_rows)
        return search_circuit(
            model,
            sd,
            groups,
            means,
            score if signed else score.abs(),
            target=target,
            skill_name=name,
            n_grid=n_grid,
            search_points=search_points,
            max_rows=max_rows,
            min_gap=min_gap,
        )


def _as_skill_data(
    model, batches, skill_id: int, mask_key: str, name: str, label_key: str = "skill"
) -> SkillData:
    if isinstance(batches, SkillData):
        return batches
    sd = skill_data(batches, skill_id, mask_key, model.cfg.pad_token_id, model.device, label_key)
    if sd is None:
        raise ValueError(f"skill {name} (id {skill_id}) has no answer tokens in the batches")
    return sd


@torch.no_grad()
def search_circuit(
    model,
    sd: SkillData,
    groups: Sequence[UnitGroup],
    means: Mapping[str, Tensor],
    score: Tensor,
    target: float = 0.9,
    skill_name: str = "",
    n_grid: int = 12,
    search_points: int = 7,
    max_rows: int = 1024,
    min_gap: float = 1e-3,
) -> CircuitResult:
    """The grid curve and the search of `circuit_for_skill`, for any ranking: score
    (total,) over the units of `groups` in order, higher first (ties: group order)."""
    total = score.numel()
    # Stable sort on -score: ties keep the groups' order (layer, then unit index).
    order = torch.sort(-score, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(total, device=order.device)

    def losses(sizes: Sequence[int]) -> Tensor:
        s = torch.tensor(list(sizes), device=rank.device)
        return keep_losses(model, sd, groups, means, rank[None, :] < s[:, None], max_rows)

    grid = log_grid(total, n_grid)
    faith, l_abl, l_clean, gap_ok = _curve(losses(grid), min_gap)
    fractions = [k / total for k in grid]
    found, searched = _bisect(
        lambda sizes: _faith(losses(sizes), l_abl, l_clean).tolist(),
        grid, faith, target, search_points,
    )  # fmt: skip
    nan, note = float("nan"), ""
    if not gap_ok:
        size, f_size, reached = total, nan, False
        note = f"no loss gap: L_ablated - L_clean = {l_abl - l_clean:.3g} < {min_gap}"
    elif found is None:
        size, f_size, reached = total, 1.0, False
        note = f"target {target} not reached (faithfulness of all units is 1)"
    else:
        (size, f_size), reached = found, True
    return CircuitResult(
        skill=skill_name,
        size=size,
        total=total,
        fraction=size / total if total else nan,
        faithfulness=f_size,
        reached=reached,
        target=target,
        auc=_auc(fractions, faith) if gap_ok else nan,
        loss_clean=l_clean,
        loss_ablated=l_abl,
        n_tokens=sd.n_tokens,
        **_circuit_units(groups, order[:size].tolist()),
        curve_sizes=grid,
        curve_fractions=fractions,
        curve_faithfulness=faith,
        searched=searched,
        note=note,
    )


def _curve(grid_loss: Tensor, min_gap: float) -> tuple[list[float], float, float, bool]:
    """Faithfulness on the grid from its losses (grid_loss[0]: every unit ablated,
    [-1]: none; nan everywhere when the gap is below min_gap), L_ablated, L_clean,
    and whether the gap reaches min_gap."""
    l_abl, l_clean = float(grid_loss[0]), float(grid_loss[-1])
    gap_ok = l_abl - l_clean >= min_gap
    faith = (
        _faith(grid_loss, l_abl, l_clean).tolist() if gap_ok else [float("nan")] * len(grid_loss)
    )
    if gap_ok:  # exact by definition; the division can be off by rounding
        faith[0], faith[-1] = 0.0, 1.0
    return faith, l_abl, l_clean, gap_ok


def _bisect(
    faith_of: Callable[[list[int]], list[float]],
    grid: Sequence[int],
    faith: Sequence[float],
    target: float,
    search_points: int,
) -> tuple[tuple[int, float] | None, dict[int, float]]:
    """The smallest size that reaches `target` and its faithfulness (None when no grid
    size does), and {every size tried: its faithfulness}: a batched bisection between
    the last grid size below the target and the first at or above it, `search_points`
    sizes per call of `faith_of` (sizes -> their faithfulness)."""
    searched: dict[int, float] = {}
    hits = [j for j, f in enumerate(faith) if f >= target]
    if not hits:
        return None, searched
    j = hits[0]
    lo, hi, f_hi = grid[j - 1], grid[j], faith[j]  # j >= 1: faith[0] = 0 < target
    while hi - lo > 1:
        n = min(search_points, hi - lo - 1)
        cand = sorted({lo + round((hi - lo) * (c + 1) / (n + 1)) for c in range(n)})
        cand = [c for c in cand if lo < c < hi]
        f = faith_of(cand)
        searched.update(zip(cand, f))
        above = [c for c, v in zip(cand, f) if v >= target]
        if above:
            new_hi = above[0]
            f_hi = searched[new_hi]
            below = [c for c in cand if c < new_hi]
            lo, hi = (below[-1] if below else lo), new_hi
        else:
            lo = cand[-1]
    return (hi, f_hi), searched


def _circuit_units(groups: Sequence[UnitGroup], units_idx: list[int]) -> dict[str, Any]:
    """CircuitResult's units (those at flat indices `units_idx`, as (group name, unit
    index)), by_group (their count per group), params_read_written and params_total."""
    flat_units = [(g.name, u) for g in groups for u in range(g.n_units)]
    params = [g.params_per_unit for g in groups for _ in range(g.n_units)]
    units = [flat_units[i] for i in units_idx]
    by_group = {g.name: 0 for g in groups}
    for gname, _ in units:
        by_group[gname] += 1
    return {
        "params_read_written": sum(params[i] for i in units_idx),
        "params_total": sum(params),
        "units": units,
        "by_group": by_group,
    }


# --------------------------------------------------------- faithfulness of sets


def _offsets(groups: Sequence[UnitGroup]) -> list[int]:
    out, o = [], 0
    for g in groups:
        out.append(o)
        o += g.n_units
    return out


@dataclass
class Faithfulness:
    """Faithfulness of given unit sets: values (R,), losses (R,), and the two ends."""

    values: Tensor
    losses: Tensor
    loss_clean: float
    loss_ablated: float


def faithfulness(
    model,
    batches: Iterable[Mapping[str, Tensor]] | SkillData,
    skill_id: int,
    groups: Sequence[UnitGroup],
    means: Mapping[str, Tensor],
    circuits: Sequence[Collection[Unit]],
    mask_key: str = "answer_mask",
    max_rows: int = 1024,
    label_key: str = "skill",
) -> Faithfulness:
    """Faithfulness of each circuit, a set of (group name, unit index); the empty
    set and the set of all units are evaluated in the same stacked forward for the
    two ends. Returns values (R,) float64."""
    with eval_mode(model):
        sd = _as_skill_data(model, batches, skill_id, mask_key, str(skill_id), label_key)
        index = {
            (g.name, u): o + u for g, o in zip(groups, _offsets(groups)) for u in range(g.n_units)
        }
        total = len(index)
        keep = torch.zeros(len(circuits) + 2, total, dtype=torch.bool, device=sd.input_ids.device)
        keep[1] = True
        for r, c in enumerate(circuits):
            for unit in c:
                if tuple(unit) not in index:
                    raise KeyError(
                        f"unit {unit!r} is not in the groups ({', '.join(g.name for g in groups)})"
                    )
                keep[r + 2, index[tuple(unit)]] = True
        loss = keep_losses(model, sd, groups, means, keep, max_rows)
    l_abl, l_clean = float(loss[0]), float(loss[1])
    return Faithfulness(_faith(loss[2:], l_abl, l_clean), loss[2:], l_clean, l_abl)


# ------------------------------------------------------------------ the report


def circuit_report(
    model,
    data: SuiteData | Sequence[Mapping[str, Tensor]],
    skills: Sequence[str | int] | None = None,
    skill_names: Sequence[str] | None = None,
    target: float = 0.9,
    include_heads: bool = True,
    n_examples: int = 256,
    split: str = "val",
    seed: int = 0,
    level: int = 0,
    coarse: bool = True,
    **kw,
) -> CircuitReport:
    """The circuit of every skill (or of `skills`, names or ids).

    data: a SuiteData (then n_examples rows of `split` are sampled with `seed`) or
    collated batches (then skill_names names the ids; default the ids themselves).
    Means are over all the sampled tokens; each skill's circuit is searched on its
    own examples among them. kw goes to `circuit_for_skill`. Skills without answer
    tokens in the data are left out. With kw label_key="domain" and
    mask_key="loss_mask" (and batches of a text corpus, skill_names its domain
    names) the "skills" are domains and the behaviour is their next-token loss.
    level: which of each FFN kind's unit groups (`unit_groups`); with coarse, a model
    whose kinds list coarser units too (a MoE's whole experts) also gets its circuits
    in those as `report.coarse` (same examples, same means of the heads).
    """
    if isinstance(data, SuiteData):
        batches = suite_batches(data, split, n_examples, seed=seed)  # the one sampler
        skill_names = data.skill_names
    else:
        batches = list(data)
    key, label_key = kw.get("mask_key", "answer_mask"), kw.get("label_key", "skill")
    present = sorted(
        {int(s) for b in batches for s in b[label_key][answer_tokens(b, key)].tolist() if s >= 0}
    )
    names = (
        list(skill_names)
        if skill_names is not None
        else [str(i) for i in range(max(present, default=-1) + 1)]
    )
    if skills is None:
        ids = present
    else:
        ids = [names.index(s) if isinstance(s, str) else int(s) for s in skills]
    groups = unit_groups(model, include_heads=include_heads, level=level)
    means = unit_means(model, batches, groups)
    report = _report(model, batches, ids, present, names, groups, means, target, kw)
    coarser = unit_groups(model, include_heads=include_heads, level=level + 1)
    new = [g for g in coarser if g.name not in means]
    if coarse and new:
        coarse_means = {**means, **unit_means(model, batches, new)}
        report.coarse = _report(
            model, batches, ids, present, names, coarser, coarse_means, target, kw
        )
        report.coarse_kind = "_".join(sorted({g.kind for g in new}))
    return report


def _report(model, batches, ids, present, names, groups, means, target, kw) -> CircuitReport:
    report = CircuitReport()
    for sid in ids:
        if sid not in present:
            continue
        report[names[sid]] = circuit_for_skill(
            model, batches, sid, groups, means, target=target, skill_name=names[sid], **kw
        )
    return report


__all__ = [
    "CircuitReport",
    "CircuitResult",
    "Faithfulness",
    "HookUnits",
    "SkillData",
    "UnitGroup",
    "attribution_scores",
    "circuit_for_skill",
    "circuit_report",
    "faithfulness",
    "keep_losses",
    "log_grid",
    "search_circuit",
    "skill_data",
    "unit_groups",
    "unit_means",
]
