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
"""

from __future__ import annotations

from collections.abc import Sequence

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


__all__ = ["LEVEL", "N_BOOT", "bootstrap_weights", "decide", "interval", "ratio_replicates"]
