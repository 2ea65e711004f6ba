"""Ground-truth coverage (Karvonen et al.'s board-state coverage, as used by MoE-X):
for every binary ground-truth feature, the best F1 of any single unit (latent,
neuron, expert gate) thresholded at any of its quantile thresholds; the mean over
features. It works on any (N, units) activation matrix, so a dense model's neurons
(`blocks.i.mlp.hook_post`) are scored the same way as transcoder latents.

    col = collect_activations(model, batches, ["blocks.0.mlp.hook_latents"])  # analysis.activations
    labels, names = ground_truth_labels(col.features, suite.feature_names,
                                        suite.feature_kinds, col.skill, suite.skill_names)
    res = coverage(col.acts["blocks.0.mlp.hook_latents"], labels, names)
    res.coverage, res.best_f1, res.best_unit

`coverage` is a chain of small steps, each usable alone (to score the same units
against other labels, or other units on the same thresholds): unit_thresholds ->
threshold_counts -> f1_and_precision -> best_units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

NOT_APPLICABLE = ("negative", "exclude")

# ------------------------------------------------------------------ ground truth


def ground_truth_labels(
    features: Tensor,
    feature_names: Sequence[str],
    feature_kinds: Sequence[str] | None = None,
    skill: Tensor | None = None,
    skill_names: Sequence[str] | None = None,
    max_values: int = 8,
    min_count: int = 5,
) -> tuple[Tensor, list[str]]:
    """Binary ground-truth features from the skill suite's variables.

    features (N, F) integer, -1 where a variable does not apply; kinds as in
    `SuiteData.feature_kinds` (bool | int | cat | pos | token; inferred when None:
    values within {-1, 0, 1} are bool, others cat).
    - bool: one feature, named as the variable, positive where it is 1.
    - int, cat: one-vs-rest, "name=v" for each of the `max_values` most frequent
      values v (a depth, a digit, a category...).
    - pos, token: left out; a position or a token id is a pointer to another token,
      not a property a single unit could threshold.
    - skill (N,) with skill_names: one-vs-rest "skill=<name>".
    A feature needs at least `min_count` positives and `min_count` negatives among
    the tokens it applies to. Returns labels (N, G) int8: 1 true, 0 false, -1 not
    applicable; and the G names.
    """
    cols: list[Tensor] = []
    names: list[str] = []

    def add(valid: Tensor, pos: Tensor, name: str) -> None:
        n_pos = int(pos.sum())
        if n_pos >= min_count and int(valid.sum()) - n_pos >= min_count:
            lab = torch.full(valid.shape, -1, dtype=torch.int8)
            lab[valid] = 0
            lab[pos] = 1
            cols.append(lab)
            names.append(name)

    for j, name in enumerate(feature_names):
        v = features[:, j]
        valid = v >= 0
        kind = feature_kinds[j] if feature_kinds is not None else None
        if kind is None:
            kind = "bool" if bool(((v >= -1) & (v <= 1)).all()) else "cat"
        if kind in ("pos", "token") or not bool(valid.any()):
            continue
        if kind == "bool":
            add(valid, v == 1, name)
            continue
        values, counts = v[valid].unique(return_counts=True)
        for val in values[counts.argsort(descending=True)[:max_values]].tolist():
            add(valid, v == val, f"{name}={val}")
    if skill is not None and skill_names is not None:
        for s, sname in enumerate(skill_names):
            add(skill >= 0, skill == s, f"skill={sname}")
    if not cols:
        return torch.zeros(features.shape[0], 0, dtype=torch.int8), []
    return torch.stack(cols, 1), names


@dataclass
class CoverageResult:
    """Best single unit per feature, and best feature per unit, by F1.

    Per feature (G,): best_f1, best_unit, best_threshold (the unit predicts the
    feature where its activation > threshold), best_precision, best_recall,
    n_positive. Per unit (U,): unit_feature (its best feature), unit_f1,
    unit_precision (precision for that feature at the F1-best threshold), fires
    (whether the unit is ever above its lowest threshold). coverage: mean of
    best_f1 over the features with positives."""

    coverage: float
    feature_names: list[str]
    best_f1: Tensor
    best_unit: Tensor
    best_threshold: Tensor
    best_precision: Tensor
    best_recall: Tensor
    n_positive: Tensor
    unit_feature: Tensor
    unit_f1: Tensor
    unit_precision: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: coverage, and per feature its best unit and scores."""
        return {
            "coverage": self.coverage,
            "features": {
                n: {
                    "f1": float(self.best_f1[g]),
                    "unit": int(self.best_unit[g]),
                    "threshold": float(self.best_threshold[g]),
                    "precision": float(self.best_precision[g]),
                    "recall": float(self.best_recall[g]),
                }
                for g, n in enumerate(self.feature_names)
            },
            **self.extra,
        }


def unit_thresholds(
    acts: Tensor, n_thresholds: int = 16, max_tokens: int = 16384
) -> tuple[Tensor, Tensor]:
    """Candidate thresholds per unit, lowest first: (thresholds (Q, U), density (Q, U)).

    The thresholds are each unit's activation quantiles at firing rates spaced
    geometrically from 0.95 down to max(1/N, 1e-4), so that common features (half
    the tokens) and rare ones (0.01%) both get candidates; density[q, u] is the share
    of rows with activation > thresholds[q, u] (at most the rate; less where values
    tie, e.g. the zeros of a sparse latent). Computed on at most `max_tokens` evenly
    spaced rows."""
    N, U = acts.shape
    rows = acts if N <= max_tokens else acts[torch.linspace(0, N - 1, max_tokens).long()]
    n = rows.shape[0]
    lo = torch.tensor(max(1.0 / n, 1e-4)).log10()
    rates = torch.logspace(float(torch.tensor(0.95).log10()), float(lo), n_thresholds)
    # Row of the ascending sort at quantile level 1 - rate, rounded up: activation >
    # threshold then holds on at most a `rate` share of the rows.
    idx = ((1 - rates) * (n - 1)).ceil().long().clamp(0, n - 1)
    thr = torch.empty(n_thresholds, U)
    dens = torch.empty(n_thresholds, U)
    step = max(1, (1 << 24) // n)  # units per chunk: a (units, n) float32 copy of <= 64 MiB
    for u in range(0, U, step):
        col = rows[:, u : u + step].T.float().contiguous().sort(-1).values  # (Uc, n) ascending
        t = col[:, idx]  # (Uc, Q)
        thr[:, u : u + step] = t.T
        below = torch.searchsorted(col, t.contiguous(), right=True)
        dens[:, u : u + step] = 1 - below.T.float() / n
    return thr, dens


def _count_dense(a: Tensor, m: Tensor, thr: Tensor, G: int, exclude: bool):
    """Counts for the thresholds thr (Q', U) one matrix product each: (tp, pp) of
    shapes (Q', U, G) and (Q', U, G or 1)."""
    tp, pp = [], []
    for t in thr:
        pred = (a > t).float()  # (C, U)
        counts = pred.T @ m  # (U, G or 2G)
        tp.append(counts[:, :G])
        pp.append(counts[:, G:] if exclude else pred.sum(0)[:, None])
    return torch.stack(tp).double(), torch.stack(pp).double()


def _bin_sparse(a: Tensor, m: Tensor, thr: Tensor, hist: Tensor, max_pairs: int) -> None:
    """Add into hist (U * (Q' + 1), width + 1) the (token, unit) pairs above the
    lowest of thr (Q', U), binned by how many thresholds lie below the activation:
    per bin the pairs' label rows, and in the last column their count."""
    n_bins = thr.shape[0] + 1
    n_idx, u_idx = (a > thr[0]).nonzero(as_tuple=True)
    # float32 counts are exact up to 2^24, far more than one chunk's tokens.
    part = torch.zeros(hist.shape, dtype=torch.float32)
    for s in range(0, n_idx.numel(), max_pairs):
        n_s, u_s = n_idx[s : s + max_pairs], u_idx[s : s + max_pairs]
        b = (a[n_s, u_s][None] > thr[:, u_s]).sum(0)  # 1..Q': thresholds below
        src = torch.cat([m[n_s], torch.ones(n_s.numel(), 1)], 1)
        part.index_add_(0, u_s * n_bins + b, src)
    hist += part


def _counts_from_hist(hist: Tensor, U: int, G: int, exclude: bool) -> tuple[Tensor, Tensor]:
    """(tp, pp) of shapes (Q', U, G) and (Q', U, G or 1) from _bin_sparse's histogram:
    the pairs above threshold q are those in the bins past q, summed from the top."""
    width = hist.shape[1] - 1
    h = hist.view(U, -1, width + 1)
    above = h.flip(1).cumsum(1).flip(1)[:, 1:].permute(1, 0, 2)  # (Q', U, width + 1)
    return above[..., :G], (above[..., G:width] if exclude else above[..., width:])


@torch.no_grad()
def threshold_counts(
    acts: Tensor,
    labels: Tensor,
    thresholds: Tensor,
    densities: Tensor,
    not_applicable: str = "negative",
    chunk_tokens: int = 4096,
    sparse_below: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """How often each unit, thresholded, predicts each feature: (tp (Q, U, G),
    pp (Q, U, G or 1)) float64.

    acts (N, U); labels (N, G) int8 (1 true, 0 false, -1 not applicable);
    thresholds, densities (Q, U) as unit_thresholds gives them. tp[q, u, g]: tokens
    where unit u > thresholds[q, u] and feature g is true; pp: tokens where unit u is
    above threshold (per feature among the tokens where it applies, for
    not_applicable="exclude"; otherwise one column for every feature).

    Thresholds above which more than `sparse_below` of all (token, unit) pairs lie
    take one matrix product each (O(N U G), in token chunks); the rest, where pairs
    are few (every threshold of a sparse latent), take a histogram over the pairs,
    O(pairs x G). No (N, U, G) tensor is formed.
    """
    N, U = acts.shape
    G = labels.shape[1]
    pos = labels == 1
    exclude = not_applicable == "exclude"
    Q = thresholds.shape[0]
    sparse = densities.mean(1) <= sparse_below  # (Q,): the densest levels come first
    q0 = int(sparse.float().argmax()) if bool(sparse.any()) else Q
    tp = torch.zeros(Q, U, G, dtype=torch.float64)
    pp = torch.zeros(Q, U, G if exclude else 1, dtype=torch.float64)
    width = 2 * G if exclude else G
    hist = torch.zeros(U * (Q - q0 + 1), width + 1, dtype=torch.float64)
    max_pairs = max(1, (1 << 24) // (width + 1))
    for c in range(0, N, chunk_tokens):
        a = acts[c : c + chunk_tokens].float()
        m = pos[c : c + chunk_tokens].float()  # (C, G)
        if exclude:
            m = torch.cat([m, (labels[c : c + chunk_tokens] >= 0).float()], 1)  # (C, 2G)
        if q0 > 0:
            t_, p_ = _count_dense(a, m, thresholds[:q0], G, exclude)
            tp[:q0] += t_
            pp[:q0] += p_
        if q0 < Q:
            _bin_sparse(a, m, thresholds[q0:], hist, max_pairs)
    if q0 < Q:
        tp[q0:], pp[q0:] = _counts_from_hist(hist, U, G, exclude)
    return tp, pp


def f1_and_precision(tp: Tensor, pp: Tensor, n_positive: Tensor) -> tuple[Tensor, Tensor]:
    """(f1, precision), each (Q, U, G) float64, from threshold_counts' tp, pp and the
    (G,) number of tokens where each feature is true; 0 where undefined."""
    denom = pp + n_positive  # 2TP + FP + FN = (TP + FP) + (TP + FN)
    zero = torch.zeros((), dtype=torch.float64)
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), zero)
    precision = torch.where(pp > 0, tp / pp.clamp_min(1), zero).expand(tp.shape)
    return f1, precision


def best_units(
    f1: Tensor,
    precision: Tensor,
    tp: Tensor,
    n_positive: Tensor,
    thresholds: Tensor,
    feature_names: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> CoverageResult:
    """The best (unit, threshold) per feature and the best (feature, threshold) per
    unit by F1 (f1, precision, tp: (Q, U, G); n_positive (G,); thresholds (Q, U)).
    coverage: the mean best F1 over the features with positives (nan if none)."""
    Q, U, G = f1.shape
    best_f1, flat = f1.reshape(Q * U, G).max(0)
    bq, bu = flat // U, flat % U
    g_idx = torch.arange(G)
    uf1, uflat = f1.permute(1, 0, 2).reshape(U, Q * G).max(1)
    uq, ug = uflat // G, uflat % G
    has_pos = n_positive > 0
    cov = float(best_f1[has_pos].mean()) if bool(has_pos.any()) else float("nan")
    return CoverageResult(
        coverage=cov,
        feature_names=list(feature_names),
        best_f1=best_f1.float(),
        best_unit=bu,
        best_threshold=thresholds[bq, bu],
        best_precision=precision[bq, bu, g_idx].float(),
        best_recall=(tp[bq, bu, g_idx] / n_positive.clamp_min(1)).float(),
        n_positive=n_positive.long(),
        unit_feature=ug,
        unit_f1=uf1.float(),
        unit_precision=precision[uq, torch.arange(U), ug].float(),
        extra={**(extra or {}), "n_features": int(has_pos.sum())},
    )


@torch.no_grad()
def coverage(
    acts: Tensor,
    labels: Tensor,
    feature_names: Sequence[str] | None = None,
    n_thresholds: int = 16,
    not_applicable: str = "negative",
    chunk_tokens: int = 4096,
    sparse_below: float = 0.1,
) -> CoverageResult:
    """Ground-truth coverage of a set of units.

    acts (N, U): activations of U units (transcoder latents, MLP neurons, ...) on N
    tokens. labels (N, G): binary features, 1 true, 0 false, -1 not applicable (bool
    also accepted). A unit predicts a feature where its activation > t, for t one of
    `unit_thresholds` (n_thresholds quantiles per unit; a unit reading a feature by
    being low is not credited: pass -acts as more units for that). not_applicable:
    "negative" (default) counts tokens where a feature does not apply as negatives
    (a "carry" latent must not fire outside additions); "exclude" scores each
    feature only on the tokens where it applies.

    The steps, each its own function: unit_thresholds -> threshold_counts (how the
    counting stays O(N U G) without an (N, U, G) tensor is said there) ->
    f1_and_precision -> best_units.
    """
    if not_applicable not in NOT_APPLICABLE:
        raise ValueError(f"coverage: not_applicable={not_applicable!r}: one of negative, exclude")
    N, G = acts.shape[0], labels.shape[1]
    if labels.shape[0] != N:
        raise ValueError(f"coverage: acts has {N} rows, labels {labels.shape[0]}")
    names = list(feature_names) if feature_names is not None else [str(g) for g in range(G)]
    lab = labels.to(torch.int8)
    thr, dens = unit_thresholds(acts, n_thresholds)  # (Q, U) each, thresholds ascending
    tp, pp = threshold_counts(acts, lab, thr, dens, not_applicable, chunk_tokens, sparse_below)
    n_positive = (lab == 1).sum(0).double()  # (G,)
    f1, precision = f1_and_precision(tp, pp, n_positive)
    return best_units(
        f1, precision, tp, n_positive, thr, names, extra={"not_applicable": not_applicable}
    )


__all__ = [
    "CoverageResult",
    "best_units",
    "coverage",
    "f1_and_precision",
    "ground_truth_labels",
    "threshold_counts",
    "unit_thresholds",
]
