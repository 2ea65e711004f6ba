"""Confidence intervals by the bootstrap over examples, and the decisions made by them.

Every audited score is a ratio of sums over the held-out examples (sequences): F1 of
summed counts, a pooled lift, a mean log-loss difference. A bootstrap replicate
resamples the examples with replacement, which is one weight per example (how many
times it was drawn): `bootstrap_weights` draws them once, (B, S), and every score of
one run, every layer and the token baseline, uses the same draws, so replicates are
paired and a difference between two scores has its own interval.

    w = bootstrap_weights(n_examples, n_boot=1000, seed=0)      # (B, S)
    reps = ratio_replicates(num_per_example, den_per_example, w)  # (B,)
    lo, hi = interval(reps)

Decisions ("above the token", "not informative", "beats dense") compare intervals:
`decide(a_ci, b_ci)` is "above" when a's interval lies wholly above b's, "below" when
wholly below, and "same" when they overlap.

Two runs scored on the same examples with the same seed draw the same replicates too.
A headline score keeps its replicates (`boot`: the values, and `draws_id` naming the
draws and the examples they resample), so a difference between two models has the
paired interval (`paired_interval`: the percentile interval of the replicate-wise
differences), which keeps the covariance two models have over shared hard examples.

    a = boot(reps_a, draws_id(w, tokens, example))   # saved with model a's scores
    paired_interval(a, b)                            # [lo, hi] of a - b, or None
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

N_BOOT = 1000  # bootstrap replicates of every interval
LEVEL = 0.95  # two-sided coverage of every interval


def bootstrap_weights(n_examples: int, n_boot: int = N_BOOT, seed: int = 0) -> Tensor:
    """(n_boot, n_examples) float64: how often each example is drawn in each
    replicate (each row sums to n_examples). Seeded, so two models scored on the same
    examples with the same seed get the same replicates."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n_examples, (n_boot, n_examples), generator=g)
    w = torch.zeros(n_boot, n_examples, dtype=torch.float64)
    return w.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def interval(replicates: Tensor, level: float = LEVEL) -> list[float] | None:
    """[lo, hi]: the percentile interval of the finite replicates, or None if none."""
    r = replicates.double().flatten()
    r = r[torch.isfinite(r)]
    if r.numel() == 0:
        return None
    a = (1 - level) / 2
    q = torch.quantile(r, torch.tensor([a, 1 - a], dtype=torch.float64))
    return [float(q[0]), float(q[1])]


def ratio_replicates(num: Tensor, den: Tensor, weights: Tensor) -> Tensor:
    """(B, ...) replicates of sum(num) / sum(den) over examples: num, den (S, ...)
    per-example sums; weights (B, S). nan where the resampled denominator is 0."""
    n = torch.tensordot(weights, num.double(), dims=1)
    d = torch.tensordot(weights, den.double(), dims=1)
    return torch.where(d != 0, n / torch.where(d != 0, d, 1.0), torch.nan)


def draws_id(weights: Tensor, *examples: Tensor) -> str:
    """16 hex digits naming bootstrap draws over examples: the draws (B, S) and what
    identifies the examples (their tokens, each token's example). Two scores with the
    same id were resampled alike over the same examples: their replicates pair."""
    h = hashlib.sha256()
    for t in (weights, *examples):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def boot(replicates: Tensor, draws: str) -> dict[str, Any]:
    """A score's replicates as saved beside it: {"draws": draws_id, "replicates": B
    values to 7 significant digits, None where undefined}."""
    r = replicates.double().flatten().tolist()
    return {"draws": draws, "replicates": [float(f"{x:.7g}") if x == x else None for x in r]}


def paired_interval(a: Any, b: Any, level: float = LEVEL) -> list[float] | None:
    """The percentile interval of a - b over paired replicates (two `boot` dicts);
    None unless both are saved replicates of the same draws."""
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or a.get("draws") != b.get("draws"):
        return None
    ra, rb = a.get("replicates"), b.get("replicates")
    if not ra or not rb or len(ra) != len(rb):
        return None
    nan = float("nan")
    d = torch.tensor([nan if x is None else x for x in ra], dtype=torch.float64)
    d -= torch.tensor([nan if x is None else x for x in rb], dtype=torch.float64)
    return interval(d, level)


def decide(a: Sequence[float] | None, b: Sequence[float] | None) -> str | None:
    """ "above" if interval a lies wholly above interval b, "below" if wholly below,
    "same" if they overlap; None if either is missing. A point is an interval of
    width 0."""
    if a is None or b is None:
        return None
    if a[0] > b[1]:
        return "above"
    if a[1] < b[0]:
        return "below"
    return "same"


__all__ = [
    "LEVEL",
    "N_BOOT",
    "boot",
    "bootstrap_weights",
    "decide",
    "draws_id",
    "interval",
    "paired_interval",
    "ratio_replicates",
]
