"""Circuit size at matched pretraining loss (Gao et al. 2025's comparison).

A weight-sparse model trained for as many steps as a dense one usually ends at a
higher loss, and a model's circuits shrink or grow as it learns, so two kinds' circuit
sizes are compared where their losses are equal: each run's checkpoints along training
give points (loss, size); the baseline's size is read at the other kind's loss by
interpolating between the two evaluated points whose losses bracket it.

    points = [Point(step, loss, tasks) for each checkpoint]      (score_checkpoint)
    ratio_at_matched_loss(sparse_points, dense_points, "edges")

Which tasks: a geometric mean over tasks is only comparable over the same tasks, so a
comparison uses the tasks learned at every point it reads (`common_tasks`), and a
point where one of them is not learned is left out of the curve.

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


def ratio_at_matched_loss(
    kind: Sequence[Point], baseline: Sequence[Point], size: str = "edges"
) -> dict[str, Any]:
    """`kind`'s circuit size over the baseline's at matched loss, over the tasks both
    final checkpoints learned. The loss matched is the higher of the two final losses
    (the one both runs pass through): the run that ends lower is read along its
    checkpoints at the other's final loss. Also: the ratio of the final checkpoints (at
    their own losses), and where each side was read. {"ratio": None, "why": ...} when
    the curve read does not reach that loss."""
    tasks = common_tasks(kind, baseline)
    out: dict[str, Any] = {"size": size, "tasks": tasks, "ratio": None}
    if not tasks:
        out["why"] = "no micro-task learned by both final checkpoints"
        return out
    ck, cb = curve(kind, tasks, size), curve(baseline, tasks, size)
    if (
        not ck
        or not cb
        or ck[-1][0] != max(p.step for p in kind)
        or cb[-1][0] != max(p.step for p in baseline)
    ):
        out["why"] = "a final checkpoint lacks one of the common tasks"
        return out
    loss = max(ck[-1][1], cb[-1][1])
    read, ends = (cb, ck) if ck[-1][1] >= cb[-1][1] else (ck, cb)
    at = size_at_loss(read, loss)
    out.update(
        loss=loss, kind_final_loss=ck[-1][1], baseline_final_loss=cb[-1][1],
        final_ratio=ck[-1][2] / cb[-1][2], read="baseline" if read is cb else "kind",
    )  # fmt: skip
    if at is None:
        lo, hi = min(p[1] for p in read), max(p[1] for p in read)
        out["why"] = f"the checkpoints read span loss {lo:.4f}-{hi:.4f}, not {loss:.4f}"
        return out
    kind_size, base_size = (ends[-1][2], at) if read is cb else (at, ends[-1][2])
    out.update(kind_size=kind_size, baseline_size=base_size, ratio=kind_size / base_size)
    return out
