"""Circuits of binary micro-tasks by learned masks, held out, against a reference
inside the scale and beside their controls (Gao et al. 2025; MIB, Mueller et al.
2025; Drori 2026's controls).

For a micro-task (analysis.microtasks: a prompt, the target token against one
alternative) and a model's readable units (analysis.mean_ablation.unit_groups: heads
and the kind's units), every unit gets a keep-mask m in [0, 1]; m = 0 puts the unit's
mean (over the analysis tokens, all skills) in place of its activation, m = 1 keeps
it. The task loss is the pair cross-entropy, so a uniform guess costs ln 2, and

    faithfulness(S) = (ln 2 - L_S) / (ln 2 - L_clean)

is 1 for the whole model and 0 at chance: the reference is inside the scale (never a
loss worse than a uniform guess). A task the model has not learned (L_clean above
half of ln 2) gets no circuit.

The task's prompts are split in three: the mask is fitted on the first third, the
circuit's size (the binarising threshold) chosen on the second, and everything is
scored on the last; a threshold chosen on the prompts the mask was fitted to made
circuits that lost 9 points of accuracy on new prompts (dense, 32 prompts a half).

1. Learn (on the fit third): masks m = sigmoid(theta), Adam on mean task loss +
   `sparsity` x mean(m), from every unit kept.
2. Binarise (on the select third): units ranked by theta; the task loss of the top-k
   is evaluated on a grid of k (log-spaced, then a linear grid in the bracket), and
   the circuit is the smallest evaluated k whose loss reaches the target (faithfulness
   `target` there) with an accuracy there at most `accuracy_gap` (5 points) below the
   model's. No monotone curve is assumed: only evaluated points are read.
3. Score (on the last third): held-out faithfulness and accuracy of the circuit; the
   MIB grid (faithfulness at 0.1% .. 100% of units, by the learned ranking) with CPR
   (area under it) and CMD (area between it and 1).
4. Controls: random sets of units of the circuit's size (held-out faithfulness), the
   circuit's own heads with random other units in the same count (a ranking that only
   finds heads does no better than these), the nonsense task (the same prompts, target
   and alternative swapped on a random half, its own mask learned beside the real one:
   the smallest circuit that reaches the real task's target loss on it, if any, beside
   the real task's size chosen the same way on the fit third: `nodes_fit`), zero-
   in place of mean-ablation (the smallest prefix of the same ranking that reaches the
   target with every left-out unit at 0), and the task's own means (over its fit
   prompts) in place of the global ones.
5. Edges: the non-zero weights whose two ends are kept (`Edges`), what a
   weight-sparse model saves; geometric mean over tasks as Gao et al. report it. By
   default every residual channel is kept, so a unit's edges are all the non-zero
   weights it reads and writes (`UnitGroup.nonzero_params`). With
   MaskConfig(residual=True) the residual channels each layer reads (attention's and
   the FFN's normalised inputs, the unembedding's; archs.units.residual_reads) are
   units as well, as Gao et al.'s residual nodes: a read weight counts where its
   channel is kept at its unit's read, a written one where a later read keeps its
   channel. Measured on the shipped checkpoints, the circuits then keep most
   channels in either kind: dense's median circuit is 43% of its 1,672 nodes,
   weight_sparse's 33% of 3,344 (dense: 66% with 120 mask steps, 51-82% with hard
   masks through a straight-through estimator); so the report keeps every channel,
   and `glassbox matched-loss --residual` compares the kinds with them.
6. An empty circuit: where every unit mean-ablated already reaches the target, the
   task is done by the token's direct path (embedding to unembedding) and the units'
   means, and its circuit has 0 nodes and 0 edges. It is counted
   (interp.microcircuit_empty) and its sizes stay in the per-task results, but the
   geometric means, the size ratios and the random-units controls are over the
   non-empty circuits: a ratio to an empty circuit is undefined, its logarithm is
   -inf, and random sets of no unit are the circuit itself.

    report = microcircuit_report(model, suite)
    report["summary"]["interp.microcircuit.dyck_first_closer.nodes"]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.batches import suite_batches
from glassbox.analysis.code_tasks import CODE_TASKS, code_task_data
from glassbox.analysis.mean_ablation import split_by_group, unit_groups, unit_means
from glassbox.analysis.microtasks import (
    MICRO_TASKS,
    TaskData,
    task_data,
    task_logit_diff,
    task_loss,
)
from glassbox.analysis.resume import part
from glassbox.archs.units import UnitGroup, frozen, read_site, residual_reads
from glassbox.training.data import SuiteData

LN2 = math.log(2)
MIB_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # share of units kept


@dataclass
class MaskConfig:
    steps: int = 40  # Adam steps of the mask
    lr: float = 0.2
    sparsity: float = 1.0  # weight of mean(m) beside the task loss
    target: float = 0.9  # faithfulness the binarised circuit must reach on the fit half
    accuracy_gap: float = 0.05  # and its accuracy there, at most this far below the model's
    n_random: int = 5  # random unit sets of the circuit's size
    max_rows: int = 2048  # rows per stacked forward
    # the residual channels each layer reads as units too (archs.units.residual_reads):
    # off by default, as every kind's circuits then keep most channels (the module
    # docstring)
    residual: bool = False


def _per_channel(weights: Sequence[Tensor], n_units: int, d_model: int) -> Tensor:
    """(n_units, d_model) the non-zero weights of each unit at each residual channel."""
    out = torch.zeros(n_units, d_model, dtype=torch.long)
    for w in weights:
        out += (w != 0).reshape(n_units, -1, d_model).sum(1).long().cpu()
    return out


class Edges:
    """A circuit's edges (Gao et al. 2025): the non-zero weights whose two ends are
    both kept. A unit's weights that read a residual channel join it to that channel
    at its own read (`read_site`); those that write a channel join it to the channel
    at every later read, so a write counts if any later read of its channel is kept.
    Its other weights (biases) count with the unit. Without residual channel units
    among the groups, every channel is kept and a unit's edges are all its non-zero
    weights (`UnitGroup.nonzero_params`)."""

    @torch.no_grad()
    def __init__(self, model, groups: Sequence[UnitGroup]) -> None:
        self.groups = list(groups)
        self.own = torch.cat([g.nonzero_params(model) for g in groups]).long()
        self.channel: dict[str, tuple[Tensor, Tensor]] = {}  # name: (reads, writes) counts
        for g in groups:  # channel units own no weights: they list none
            reads, writes = g.channel_weights(model)
            if reads or writes:
                self.channel[g.name] = (_per_channel(reads, g.n_units, model.cfg.d_model),
                                        _per_channel(writes, g.n_units, model.cfg.d_model))  # fmt: skip

    @property
    def total(self) -> int:
        return int(self.own.sum())

    @torch.no_grad()
    def count(self, keep: Tensor) -> int:
        """The edges of the circuit `keep` ((total,) bool over the groups' units)."""
        parts = split_by_group(keep.cpu()[None], self.groups)
        sites = {read_site(g): parts[g.name][0] for g in self.groups if g.kind == "residual"}

        def read_after(site: int) -> Tensor | None:  # the channels a later read keeps
            later = [kept for s, kept in sites.items() if s > site]
            return torch.stack(later).any(0) if later else None

        edges, start = 0, 0
        for g in self.groups:
            kept = parts[g.name][0]
            if g.kind != "residual" and kept.any():
                edges += int(self.own[start : start + g.n_units][kept].sum())
                if g.name in self.channel and sites:
                    reads, writes = self.channel[g.name]
                    site = read_site(g)
                    after = read_after(site)
                    if site in sites:
                        edges -= int(reads[kept][:, ~sites[site]].sum())
                    if after is not None:
                        edges -= int(writes[kept][:, ~after].sum())
            start += g.n_units
        return edges


def _hooks(groups: Sequence[UnitGroup], means: dict[str, Tensor], keep: Tensor, n: int):
    """Hooks for keep (R, total) over groups, each mask row repeated for n prompts."""
    parts = split_by_group(keep, groups)
    hooks = []
    for g in groups:
        hooks += g.hooks(means[g.name], parts[g.name].repeat_interleave(n, 0))
    return hooks


def length_groups(position: Tensor, max_groups: int = 4) -> list[Tensor]:
    """The prompts (indices, by length) in at most max_groups groups of contiguous
    lengths that compute the fewest tokens: a prompt is read up to its target
    (`position` tokens), so a group's forward computes its longest prompt's length
    times its count. Rung M's code prompts are 48-79% of a forward right-padded to
    the longest; four groups by length compute 59-82% of its tokens. Exact (n^2
    max_groups steps for n prompts), and computed once per set of lengths."""
    groups = _length_groups(tuple(position.tolist()), max_groups)
    return [torch.tensor(g, dtype=torch.long, device=position.device) for g in groups]


@functools.lru_cache(maxsize=64)  # a task's prompts are read by every mask step
def _length_groups(lengths: tuple[int, ...], max_groups: int) -> tuple[tuple[int, ...], ...]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)  # stable
    sort = [lengths[i] for i in order]
    n = len(sort)
    # cost[g][j]: the fewest tokens of the first j prompts in g groups
    inf = float("inf")
    cost = [[0.0] + [inf] * n] + [[inf] * (n + 1) for _ in range(max_groups)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    for g in range(1, max_groups + 1):
        cost[g][0] = 0.0
        for j in range(1, n + 1):
            for i in range(j):  # the last group is prompts i..j-1, its longest j-1
                c = cost[g - 1][i] + sort[j - 1] * (j - i)
                if c < cost[g][j]:
                    cost[g][j], cut[g][j] = c, i
    g = min(range(1, max_groups + 1), key=lambda g: (cost[g][n], g))
    groups, j = [], n
    while j > 0:
        i = cut[g][j]
        groups.append(tuple(order[i:j]))
        j, g = i, g - 1
    return tuple(groups[::-1])


def mask_diffs(
    model, data: TaskData, groups, means, keep: Tensor, max_rows: int = 2048,
    per_mask: Sequence[TaskData] | None = None, max_groups: int = 4,
) -> Tensor:  # fmt: skip
    """(R, N) logit differences (target - alternative) of the N prompts under each of
    the R keep-masks (bool or float, (R, total)); copies of the prompts are stacked
    into forwards of at most max_rows rows, the prompts in up to max_groups groups by
    length (`length_groups`), each group's forward cut after its longest prompt's
    last token read (the model is causal: what a prompt's target reads is the same,
    up to float rounding). per_mask: R tasks on the same prompts (a task and its
    nonsense twin), mask r scored on per_mask[r]'s pairs."""
    R, N = keep.shape[0], len(data)
    tasks = list(per_mask) if per_mask is not None else [data] * R
    per = max(1, max_rows // N)
    by_length = length_groups(data.position, max_groups)
    back = torch.cat(by_length).argsort().to(keep.device)  # the prompts' own order again
    out = []
    for r0 in range(0, R, per):
        k, ts = keep[r0 : r0 + per], tasks[r0 : r0 + per]
        diffs = []
        for idx in by_length:
            cut = int(data.position[idx].max())
            stacked = TaskData(data.name, data.input_ids[idx, :cut].repeat(k.shape[0], 1),
                               data.position[idx].repeat(k.shape[0]),
                               torch.cat([t.target[idx] for t in ts]),
                               torch.cat([t.alternative[idx] for t in ts]))  # fmt: skip
            with model.hooks(_hooks(groups, means, k, len(idx))):
                logits = model(stacked.input_ids)
            diffs.append(task_logit_diff(logits, stacked).view(k.shape[0], len(idx)))
        out.append(torch.cat(diffs, 1)[:, back])
    return torch.cat(out)


def learn_ranking(
    loss_fn, shape: int | tuple[int, ...], cfg: MaskConfig, device=None, model=None
) -> Tensor:
    """Mask logits theta of `shape` ((total,), or (R, total): R masks learned side by
    side, each with its own loss) after cfg.steps Adam steps on loss_fn(m) +
    cfg.sparsity x (mean of each mask), m = sigmoid(theta), from theta = 3 (every unit
    kept). loss_fn: m -> scalar (the sum of the masks' task losses; Adam moves each
    entry on its own gradient, so masks learned side by side are masks learned
    apart). model: the model loss_fn runs, whose weights are held fixed meanwhile (no
    gradient is computed for them). Higher theta: kept longer."""
    theta = torch.full(shape if isinstance(shape, tuple) else (shape,), 3.0, device=device,
                       requires_grad=True)  # fmt: skip
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    with frozen(model):  # the backward pass computes the masks' gradients, not the weights'
        for _ in range(cfg.steps):
            m = torch.sigmoid(theta)
            loss = loss_fn(m) + cfg.sparsity * m.mean(-1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return theta.detach()


def _grid(total: int) -> list[int]:
    pts = {0, total}
    k = 1.0
    while k < total:
        pts.add(int(round(k)))
        k *= 1.5
    return sorted(pts)


def smallest_reaching(
    losses_of, ranking: Tensor, target: float, chunk: int = 8
) -> tuple[int | None, dict]:
    """The smallest evaluated k whose top-k (by ranking) loss is <= target: a
    log-spaced grid, then a linear grid between the last k above and the first at
    or below (losses_of: (R, total) bool -> (R,) losses). None if no evaluated k
    reaches it. Also returns {k: loss} of every evaluated point. The log grid is
    evaluated `chunk` points at a time from the smallest k, and stops at the first
    chunk with a k that reaches the target: the points above it cannot change the
    answer."""
    total = ranking.numel()
    order = ranking.argsort(descending=True)

    def masks(ks: Sequence[int]) -> Tensor:
        keep = torch.zeros(len(ks), total, dtype=torch.bool, device=ranking.device)
        for i, k in enumerate(ks):
            keep[i, order[:k]] = True
        return keep

    seen: dict[int, float] = {}
    ks = _grid(total)
    hi = None
    for i in range(0, len(ks), chunk):  # ascending: no k above the first one reaching is read
        part = ks[i : i + chunk]
        seen.update(zip(part, losses_of(masks(part)).tolist()))
        hi = next((k for k in part if seen[k] <= target), None)
        if hi is not None:
            break
    if hi is None:
        return None, seen
    lo = max([k for k in ks if k < hi], default=0)
    fine = sorted({int(x) for x in torch.linspace(lo, hi, 18).round().tolist()} - set(seen))
    if fine:
        seen.update(zip(fine, losses_of(masks(fine)).tolist()))
    return min(k for k, v in seen.items() if v <= target), seen


def faith(loss: float, clean: float) -> float:
    return (LN2 - loss) / (LN2 - clean)


def _area(xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1)))


@torch.no_grad()
def _mean_losses(model, data, groups, means, keep, cfg, floor: float | None = None) -> Tensor:
    """(R,) mean task loss under each keep-mask; inf where the mask's accuracy is below
    `floor` (a circuit must keep the task's answers, not only its loss)."""
    d = mask_diffs(model, data, groups, means, keep, cfg.max_rows)
    loss = task_loss(d).mean(1)
    if floor is None:
        return loss
    return torch.where((d > 0).double().mean(1) >= floor - 1e-9, loss, torch.inf)


@torch.no_grad()
def circuit_for_task(
    model, fit: TaskData, score: TaskData, groups: Sequence[UnitGroup],
    means: dict[str, Tensor], cfg: MaskConfig, seed: int = 0, select: TaskData | None = None,
    edges: Edges | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The learned-mask circuit of one task (module docstring), with its held-out
    scores and controls. The mask is learned on `fit`, the circuit's size chosen on
    `select` (default: `fit`), its faithfulness scored on `score`. The controls'
    sizes (nonsense, zero-ablation, task means) are chosen on `fit`, beside the real
    task's size there (nodes_fit), so each ratio compares sizes found the same way.
    A task the model has not learned: {"learned": False, ...}."""
    total = sum(g.n_units for g in groups)
    ones = torch.ones(1, total, dtype=torch.bool, device=fit.input_ids.device)
    d = mask_diffs(model, fit, groups, means, ones, cfg.max_rows)[0]  # the clean model
    clean_fit = float(task_loss(d).mean())
    floor = float((d > 0).double().mean()) - cfg.accuracy_gap
    out: dict[str, Any] = {"n_fit": len(fit), "n_score": len(score), "total_units": total,
                           "clean_loss": clean_fit}  # fmt: skip
    if clean_fit > LN2 / 2:
        return {**out, "learned": False}
    target = clean_fit + (1 - cfg.target) * (LN2 - clean_fit)

    nonsense = fit.nonsense(seed)

    def fit_loss(m: Tensor) -> Tensor:  # (2, total): the task's mask, the nonsense task's
        d = mask_diffs(model, fit, groups, means, m, cfg.max_rows, per_mask=[fit, nonsense])
        return task_loss(d).mean(1).sum()

    def learn() -> Tensor:
        with torch.enable_grad():
            return learn_ranking(fit_loss, (2, total), cfg, fit.input_ids.device, model)

    # each step below is a part (analysis.resume): one task of rung L takes 15 to 25
    # minutes of a CPU core, so a scoring cut short resumes at the task's last finished
    # step. A part read back is its JSON copy: the ranking's float32 values exactly.
    learned = part("ranking", learn)
    theta, theta_nonsense = torch.as_tensor(learned, dtype=torch.float32, device=ones.device)

    def size(data: TaskData, ranking: Tensor, m: dict[str, Tensor], acc=floor, tgt=target):
        return smallest_reaching(
            lambda keep: _mean_losses(model, data, groups, m, keep, cfg, acc), ranking, tgt
        )[0]

    k_fit = part("size_fit", lambda: size(fit, theta, means))
    k_fit = total if k_fit is None else k_fit
    if select is None:
        k = k_fit
    else:  # the threshold is fitted too: on prompts neither the mask nor the score saw

        def size_select() -> int | None:
            sel = mask_diffs(model, select, groups, means, ones, cfg.max_rows)[0]
            clean_sel = float(task_loss(sel).mean())  # the same faithfulness, accuracy there
            return size(select, theta, means, float((sel > 0).double().mean()) - cfg.accuracy_gap,
                        clean_sel + (1 - cfg.target) * (LN2 - clean_sel))  # fmt: skip

        k = part("size_select", size_select)
        k = total if k is None else k
    order = theta.argsort(descending=True)
    held_out = part("held_out", lambda: _held_out(model, score, groups, means, order, k, cfg, seed))
    # controls: the nonsense task (its own mask, learned beside the real one), zero- in
    # place of mean-ablation (the real ranking, every left-out unit at 0) and the
    # task's own means in place of the global ones (over its fit prompts)
    # the nonsense task's size by its loss only (no answers: accuracy floor None)
    nonsense_k = part("size_nonsense", lambda: size(nonsense, theta_nonsense, means, None))
    zeros = {n: torch.zeros_like(m) for n, m in means.items()}
    zero_k = part("size_zero_ablation", lambda: size(fit, theta, zeros))
    task_k = part("size_task_means",
                  lambda: size(fit, theta, unit_means(model, [_as_batch(fit)], groups)))  # fmt: skip
    edges = edges or Edges(model, groups)
    kept = torch.zeros(total, dtype=torch.bool)
    kept[order[:k].cpu()] = True
    is_channel = _of_kind(groups, "residual")
    return {
        **out,
        "learned": True,
        "target_loss": target,
        "nodes": k,
        "nodes_fit": k_fit,
        "n_select": len(select) if select is not None else 0,
        "fraction": k / total,
        "edges": edges.count(kept),
        "edges_total": edges.total,
        "residual_nodes": int((kept & is_channel).sum()),
        **held_out,
        "nonsense_nodes": nonsense_k,
        "nonsense_reached": nonsense_k is not None,
        "zero_ablation_nodes": zero_k,
        "task_means_nodes": task_k,
    }


def _as_batch(data: TaskData) -> dict[str, Tensor]:
    """The prompts of a task as a batch whose real tokens end before each target."""
    T = data.input_ids.shape[1]
    real = torch.arange(T, device=data.position.device)[None] < data.position[:, None]
    return {"input_ids": data.input_ids, "attention_mask": real.long()}


@torch.no_grad()
def _held_out(
    model, score: TaskData, groups: Sequence[UnitGroup], means: dict[str, Tensor],
    order: Tensor, k: int, cfg: MaskConfig, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """On the held-out `score` examples: the faithfulness and accuracy of the circuit
    (the first k units of `order`) beside the clean model's accuracy, the faithfulness
    of cfg.n_random random sets of k units, and the MIB grid by the ranking (CPR, CMD)."""
    total = order.numel()
    ones = torch.ones(1, total, dtype=torch.bool, device=order.device)
    keep = torch.zeros(1, total, dtype=torch.bool, device=order.device)
    keep[0, order[:k]] = True
    d_clean = mask_diffs(model, score, groups, means, ones, cfg.max_rows)[0]
    d_circ = mask_diffs(model, score, groups, means, keep, cfg.max_rows)[0]
    clean_s, circ_s = float(task_loss(d_clean).mean()), float(task_loss(d_circ).mean())
    g = torch.Generator().manual_seed(seed)
    rand = torch.zeros(cfg.n_random, total, dtype=torch.bool, device=order.device)
    for r in range(cfg.n_random):
        rand[r, torch.randperm(total, generator=g)[:k].to(order.device)] = True
    rand_f = [
        faith(v, clean_s) for v in _mean_losses(model, score, groups, means, rand, cfg).tolist()
    ]
    heads = _same_heads(groups, keep[0], cfg.n_random, g)
    heads_f = [
        faith(v, clean_s) for v in _mean_losses(model, score, groups, means, heads, cfg).tolist()
    ]
    ks = [max(1, round(f * total)) for f in MIB_GRID]
    grid = torch.zeros(len(ks), total, dtype=torch.bool, device=order.device)
    for i, kk in enumerate(ks):
        grid[i, order[:kk]] = True
    grid_f = [
        faith(v, clean_s) for v in _mean_losses(model, score, groups, means, grid, cfg).tolist()
    ]
    fr = [kk / total for kk in ks]
    return {
        "faithfulness_heldout": faith(circ_s, clean_s),
        "accuracy_heldout": float((d_circ > 0).double().mean()),
        "accuracy_clean": float((d_clean > 0).double().mean()),
        "random_faithfulness": sum(rand_f) / len(rand_f),
        "random_faithfulness_max": max(rand_f),
        "same_heads_faithfulness": sum(heads_f) / len(heads_f),
        "same_heads_faithfulness_max": max(heads_f),
        "mib_fractions": fr,
        "mib_faithfulness": grid_f,
        "cpr": _area(fr, [min(max(f, 0.0), 1.0) for f in grid_f]),
        "cmd": _area(fr, [abs(1 - f) for f in grid_f]),
    }


def _of_kind(groups: Sequence[UnitGroup], kind: str) -> Tensor:
    """(total,) bool: which units belong to a group of `kind`."""
    return torch.cat([torch.full((g.n_units,), g.kind == kind) for g in groups])


def _same_heads(groups: Sequence[UnitGroup], keep: Tensor, n: int, g) -> Tensor:
    """(n, total) masks that keep the circuit's heads and as many random other units as
    it keeps (the control for a ranking that finds heads and no specific units)."""
    is_head = _of_kind(groups, "head").to(keep.device)
    others = (~is_head).nonzero().squeeze(1)
    n_other = int((keep & ~is_head).sum())
    out = (keep & is_head).repeat(n, 1)
    for r in range(n):
        out[r, others[torch.randperm(others.numel(), generator=g)[:n_other].to(keep.device)]] = True
    return out


def _gmean(xs: Sequence[float | None]) -> float | None:
    """Geometric mean of the positive values (None and 0 have no logarithm)."""
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarise(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Summary keys: per task interp.microcircuit.<task>.<key>; over the learned tasks
    interp.microcircuit_tasks, interp.microcircuit_empty (those whose circuit is
    empty: the module docstring), interp.microcircuit_fraction_median,
    interp.microcircuit_faithfulness_heldout (mean) and interp.microcircuit_accuracy_gap
    (clean minus circuit held-out accuracy, mean); over the learned tasks with a
    non-empty circuit interp.microcircuit_nodes_gmean, interp.microcircuit_edges_gmean,
    interp.microcircuit_beats_random (share of tasks whose held-out faithfulness beats
    every random set of its size), interp.microcircuit_beats_same_heads (the same
    against the circuit's heads with random other units), interp.nonsense_ratio
    (geometric mean of nonsense / real size, a nonsense task no size reaches counted at
    all units: a lower bound), interp.zero_ablation_ratio and interp.task_means_ratio
    (task-mean / global size), each ratio over the tasks whose fitted size (nodes_fit)
    is not 0."""
    out: dict[str, Any] = {}
    keys = ("nodes", "fraction", "edges", "faithfulness_heldout", "accuracy_heldout",
            "accuracy_clean", "random_faithfulness", "same_heads_faithfulness", "cpr", "cmd",
            "nonsense_nodes", "zero_ablation_nodes", "task_means_nodes")  # fmt: skip
    learned = {n: t for n, t in tasks.items() if t.get("learned")}
    for name, t in learned.items():
        for k in keys:
            out[f"interp.microcircuit.{name}.{k}"] = t[k]
    out["interp.microcircuit_tasks"] = len(learned)
    if not learned:
        return out
    vals = list(learned.values())
    sized = [t for t in vals if t["nodes"]]  # a non-empty circuit
    out["interp.microcircuit_empty"] = len(vals) - len(sized)
    fr = sorted(t["fraction"] for t in vals)
    out["interp.microcircuit_fraction_median"] = fr[len(fr) // 2] if len(fr) % 2 else (
        (fr[len(fr) // 2 - 1] + fr[len(fr) // 2]) / 2)  # fmt: skip
    out["interp.microcircuit_faithfulness_heldout"] = sum(
        t["faithfulness_heldout"] for t in vals
    ) / len(vals)
    out["interp.microcircuit_accuracy_gap"] = sum(
        t["accuracy_clean"] - t["accuracy_heldout"] for t in vals
    ) / len(vals)
    if not sized:
        return out
    out["interp.microcircuit_nodes_gmean"] = _gmean([t["nodes"] for t in sized])
    out["interp.microcircuit_edges_gmean"] = _gmean([t["edges"] for t in sized])
    out["interp.microcircuit_beats_random"] = sum(
        t["faithfulness_heldout"] > t["random_faithfulness_max"] for t in sized
    ) / len(sized)
    out["interp.microcircuit_beats_same_heads"] = sum(
        t["faithfulness_heldout"] > t["same_heads_faithfulness_max"] for t in sized
    ) / len(sized)
    for key, control in (("task_means_ratio", "task_means_nodes"),
                         ("nonsense_ratio", "nonsense_nodes"),
                         ("zero_ablation_ratio", "zero_ablation_nodes")):  # fmt: skip
        out[f"interp.{key}"] = _gmean([_size_ratio(t, control) for t in sized])
    return out


def is_microcircuit_key(key: str) -> bool:
    """A summary key only the micro-task circuits give (summarise's), the untrained
    twin's included: what a report scored without them lacks."""
    key = key.removeprefix("baselines.init.")
    return key.startswith("interp.microcircuit") or key in (
        "interp.nonsense_ratio", "interp.task_means_ratio", "interp.zero_ablation_ratio",
    )  # fmt: skip


def _size_ratio(task: dict[str, Any], control: str) -> float | None:
    """A control's circuit size over the real task's on the fit third (a control no
    size reaches counts as every unit); None where the real one is empty there."""
    real = task.get("nodes_fit", task["nodes"])
    size = task[control]
    return (task["total_units"] if size is None else size) / real if real else None


def microcircuit_report(
    model,
    suite: SuiteData,
    tasks: Sequence[str] | None = None,
    n_prompts: int = 96,
    n_mean_examples: int = 256,
    seed: int = 0,
    cfg: MaskConfig | None = None,
) -> dict[str, Any]:
    """Every micro-task's circuit (circuit_for_task): prompts from the val split
    (analysis.microtasks' on the skill suite, analysis.code_tasks' on code),
    fitting, choosing the size and scoring on a third each; means over n_mean_examples
    val examples (all skills). Returns {"summary": summarise(...), "tasks": {name:
    circuit_for_task's dict}}."""
    cfg = cfg or MaskConfig()
    skills = bool(suite.skill_names)  # else code: analysis.code_tasks
    names = list(tasks) if tasks is not None else list(MICRO_TASKS if skills else CODE_TASKS)
    device = model.device
    groups = unit_groups(model) + (residual_reads(model) if cfg.residual else [])
    edges = Edges(model, groups)
    means = unit_means(model, suite_batches(suite, "val", n_mean_examples, seed=seed), groups)
    data = (task_data if skills else code_task_data)(suite, "val", names, n=n_prompts, seed=seed)
    out: dict[str, dict[str, Any]] = {}
    model.eval()
    for name, d in data.items():
        d = d.to(device)
        third = len(d) // 3
        if third < 4:
            continue
        idx = torch.arange(len(d), device=device)
        fit, select, score = idx[:third], idx[third : 2 * third], idx[2 * third :]
        # a part each, and its steps parts within it (circuit_for_task): one task of
        # rung M's moe or weight-sparse model takes tens of minutes of a CPU core, so
        # a scoring cut short resumes at its task (analysis.resume)
        out[name] = part(name, functools.partial(
            circuit_for_task, model, d.subset(fit), d.subset(score), groups, means, cfg, seed,
            d.subset(select), edges,
        ))  # fmt: skip
    return {"summary": summarise(out), "tasks": out}


__all__ = [
    "LN2",
    "MIB_GRID",
    "MaskConfig",
    "circuit_for_task",
    "is_microcircuit_key",
    "learn_ranking",
    "length_groups",
    "mask_diffs",
    "microcircuit_report",
    "smallest_reaching",
    "summarise",
]
