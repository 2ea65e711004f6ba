"""Circuit size at matched pretraining loss (Gao et al. 2025's comparison).

A weight-sparse model trained for as many steps as a dense one usually ends at a
higher loss, and a model's circuits shrink or grow as it learns, so two kinds' circuit
sizes are compared where their losses are equal: each run's checkpoints along training
give points (loss, size); the baseline's size is read at the other kind's loss by
interpolating between the two evaluated points whose losses bracket it.

    points = [Point(step, loss, tasks) for each checkpoint]      (score_checkpoint)
    ratio_at_matched_loss(sparse_points, dense_points, "edges")

Which tasks: the tasks both final checkpoints learned (`common_tasks`); each task's
size is read at the matched loss on its own curve (the checkpoints where that task is
learned), and the ratio is the geometric mean of the per-task ratios over the tasks
whose curve reaches that loss (`tasks_read`): the same tasks on both sides.

Reading the curve: size is interpolated linearly in log(size) against loss between
consecutive checkpoints (by step) whose losses bracket the loss asked for; where
several pairs bracket it (the loss is not monotone in steps) the latest pair is read.
A loss outside a curve's range is not extrapolated: the comparison says so (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SIZES = ("nodes", "edges")

__all__ = [
    "SIZES",
    "Point",
    "common_tasks",
    "curve",
    "ratio_at_matched_loss",
    "size_at_loss",
    "task_curve",
]


@dataclass(frozen=True)
class Point:
    """One checkpoint: its step, its pretraining loss, and per micro-task its circuit
    (`{"learned": bool, "nodes": int, "edges": int}`; analysis.microcircuits' dicts)."""

    step: int
    loss: float
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def learned(self) -> set[str]:
        return {n for n, t in self.tasks.items() if t.get("learned") and t.get("nodes")}

    def gmean(self, tasks: Sequence[str], size: str) -> float | None:
        """Geometric mean of `size` over `tasks`; None unless every one is learned here."""
        if not tasks or not set(tasks) <= self.learned():
            return None
        return math.exp(sum(math.log(self.tasks[t][size]) for t in tasks) / len(tasks))

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, "tasks": self.tasks}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Point:
        return cls(int(d["step"]), float(d["loss"]), dict(d["tasks"]))


def common_tasks(*runs: Sequence[Point]) -> list[str]:
    """The tasks learned at the last point of every run (the final checkpoints'), sorted:
    the tasks a matched-loss comparison can average over."""
    sets = [run[-1].learned() for run in runs if run]
    return sorted(set.intersection(*sets)) if sets and len(sets) == len(runs) else []


def curve(
    points: Sequence[Point], tasks: Sequence[str], size: str
) -> list[tuple[int, float, float]]:
    """(step, loss, size) of the points where every task of `tasks` is learned, by step."""
    out = []
    for p in sorted(points, key=lambda p: p.step):
        s = p.gmean(tasks, size)
        if s is not None:
            out.append((p.step, p.loss, s))
    return out


def size_at_loss(points: Sequence[tuple[int, float, float]], loss: float) -> float | None:
    """The size at `loss` on a (step, loss, size) curve: log-linear between the latest
    consecutive pair of points whose losses bracket it; None outside the curve's range."""
    for (_, l0, s0), (_, l1, s1) in reversed(list(zip(points, points[1:]))):
        lo, hi = min(l0, l1), max(l0, l1)
        if lo <= loss <= hi:
            if l0 == l1:
                return math.sqrt(s0 * s1)
            w = (loss - l0) / (l1 - l0)
            return math.exp((1 - w) * math.log(s0) + w * math.log(s1))
    exact = [s for _, l, s in points if l == loss]
    return exact[-1] if exact else None


def task_curve(points: Sequence[Point], task: str, size: str) -> list[tuple[int, float, float]]:
    """(step, loss, size) of one task's circuit at the points where it is learned, by step."""
    return curve(points, [task], size)


def ratio_at_matched_loss(
    kind: Sequence[Point], baseline: Sequence[Point], size: str = "edges"
) -> dict[str, Any]:
    """`kind`'s circuit size over the baseline's at matched loss: per task both final
    checkpoints learned, the size of each run at the matched loss, and their ratio's
    geometric mean over the tasks where both sizes are defined. The loss matched is the
    higher of the two final losses (the one both runs pass through): the run that ends
    lower is read along its checkpoints (where it had learned the task) at the other's
    final loss. Also the ratio of the final checkpoints at their own losses. "ratio" is
    None, with "why", when no task can be read at that loss."""
    tasks = common_tasks(kind, baseline)
    out: dict[str, Any] = {"size": size, "tasks": tasks, "ratio": None}
    if not tasks:
        out["why"] = "no micro-task learned by both final checkpoints"
        return out
    last_k, last_b = max(kind, key=lambda p: p.step), max(baseline, key=lambda p: p.step)
    loss = max(last_k.loss, last_b.loss)
    read_kind = last_k.loss < last_b.loss  # the kind ends lower: its own curve is read
    out.update(loss=loss, kind_final_loss=last_k.loss, baseline_final_loss=last_b.loss,
               read="kind" if read_kind else "baseline",
               final_ratio=last_k.gmean(tasks, size) / last_b.gmean(tasks, size))  # fmt: skip
    per_task: dict[str, dict[str, float | None]] = {}
    for t in tasks:
        if read_kind:
            k_size, b_size = size_at_loss(task_curve(kind, t, size), loss), last_b.tasks[t][size]
        else:
            k_size, b_size = (
                last_k.tasks[t][size],
                size_at_loss(task_curve(baseline, t, size), loss),
            )
        per_task[t] = {"kind": k_size, "baseline": b_size,
                       "ratio": k_size / b_size if k_size and b_size else None}  # fmt: skip
    out["per_task"] = per_task
    read = [t for t, r in per_task.items() if r["ratio"]]
    out["tasks_read"] = read
    if not read:
        runs = kind if read_kind else baseline
        lo, hi = min(p.loss for p in runs), max(p.loss for p in runs)
        out["why"] = (
            f"no common task's curve reaches loss {loss:.4f} (the checkpoints read span "
            f"{lo:.4f}-{hi:.4f}, each task counted where it is learned)"
        )
        return out
    out["ratio"] = math.exp(sum(math.log(per_task[t]["ratio"]) for t in read) / len(read))
    out["kind_size"] = math.exp(sum(math.log(per_task[t]["kind"]) for t in read) / len(read))
    out["baseline_size"] = math.exp(
        sum(math.log(per_task[t]["baseline"]) for t in read) / len(read)
    )
    return out
