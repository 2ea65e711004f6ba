"""Ground-truth coverage under the audited protocol: units chosen on one split and
scored on another, read with both signs, at a matched number of candidates, pooled
over features, with intervals and a random-direction control.

`analysis.coverage.coverage` picks, per binary feature, the best (unit, threshold) of
all candidates and reports that F1 on the same tokens: with 1,024 units x 16
thresholds and features of a few positives that is optimism, and more candidates
score higher whether or not they mean anything. Here, for one set of units:

1. fit (the first split, `Split`): every unit read both ways (activation > t, and
   -activation > t: a signed unit, or a unit that is low on the feature, counts), at
   each of its quantile thresholds; per feature the best (unit, sign, threshold) by
   F1 (`fit_units`). The token-only predictor (analysis.baselines) is fitted on the
   same split, and decides which features are lexical (its F1 >= LEXICAL_F1).
2. score (the second split): each feature's chosen unit, sign and threshold are
   applied unchanged, and F1 is counted per example (`example_counts`).
3. matched candidates: the choice in 1 is made among `matched_units` units drawn at
   random (n_subsets draws), so a kind with more units gets no more chances; with
   fewer units than that, all of them. The full set is scored too (`..._all`).
4. pooled lift over the token, on contextual features, held out:

       lift_pooled = sum_g (F1_unit[g] - F1_token[g]) / sum_g (1 - F1_token[g])

   (a mean of per-feature ratios lets features whose token F1 is near 1 decide).
5. intervals: the bootstrap over the score split's examples (analysis.intervals),
   one set of draws for every score of the run; a replicate also draws its subset.
6. a random control: as many random directions in the units' span as the matched
   candidates, scored by the same steps; a score a random basis reaches is no
   evidence that the units are the readable ones.

A feature needs `min_positives` positives and negatives on each split; the others
are left out and counted (`n_features_left_out`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.baselines import LEXICAL_F1, fit_token_predictor
from glassbox.analysis.coverage import f1_and_precision, threshold_counts, unit_thresholds
from glassbox.analysis.intervals import N_BOOT, bootstrap_weights, interval

MIN_POSITIVES = 10  # positives (and negatives) a feature needs on each split
MATCHED_UNITS = 512  # candidate units per comparison (the dense baseline's width)
N_SUBSETS = 8  # random draws of the matched candidates
N_THRESHOLDS = 16  # quantile thresholds per unit and sign


@dataclass
class Split:
    """The tokens of one side of a held-out comparison: tokens (N,) ids, labels
    (N, G) int8 (1 true, 0 false, -1 not applicable), example (N,) the index of each
    token's example in 0..n_examples-1."""

    tokens: Tensor
    labels: Tensor
    example: Tensor
    n_examples: int

    def positives(self) -> tuple[Tensor, Tensor]:
        """(G,) positives and negatives (not-applicable counts as negative)."""
        pos = (self.labels == 1).sum(0)
        return pos, self.labels.shape[0] - pos


@dataclass
class UnitFit:
    """Per (unit, feature), the best reading on the fit split: f1 (U, G), sign (U, G)
    +1 / -1 (which side of the threshold predicts the feature), threshold (U, G)."""

    f1: Tensor
    sign: Tensor
    threshold: Tensor

    def choose(self, candidates: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per feature, the best of `candidates` (C,) unit ids: (unit, sign,
        threshold, fit F1), each (G,)."""
        sub = self.f1[candidates]  # (C, G)
        f1, i = sub.max(0)
        g = torch.arange(sub.shape[1])
        unit = candidates[i]
        return unit, self.sign[unit, g], self.threshold[unit, g], f1


@torch.no_grad()
def fit_units(acts: Tensor, labels: Tensor, n_thresholds: int = N_THRESHOLDS) -> UnitFit:
    """Each unit of acts (N, U), read both ways at its quantile thresholds, scored
    against labels (N, G) by F1 on these tokens; the best sign and threshold per
    (unit, feature)."""
    U, G = acts.shape[1], labels.shape[1]
    both = torch.cat([acts, -acts], 1).float()  # (N, 2U): unit u and its negation U + u
    thr, dens = unit_thresholds(both, n_thresholds)  # (Q, 2U)
    tp, pp = threshold_counts(both, labels.to(torch.int8), thr, dens)
    f1, _ = f1_and_precision(tp, pp, (labels == 1).sum(0).double())  # (Q, 2U, G)
    best, q = f1.max(0)  # (2U, G)
    t = thr.T.gather(1, q)  # (2U, G)
    neg = best[U:] > best[:U]
    return UnitFit(
        f1=torch.where(neg, best[U:], best[:U]).float(),
        sign=torch.where(neg, -1.0, 1.0).expand(U, G).clone(),
        threshold=torch.where(neg, t[U:], t[:U]).float(),
    )


def example_counts(pred: Tensor, labels: Tensor, example: Tensor, n_examples: int) -> Tensor:
    """(S, G, 3) float64: per example and feature, (true positives, false positives,
    false negatives) of pred (N, G) bool against labels (N, G)."""
    pos = labels == 1
    c = torch.stack([pred & pos, pred & ~pos, ~pred & pos], -1).double()  # (N, G, 3)
    out = torch.zeros(n_examples, *c.shape[1:], dtype=torch.float64)
    return out.index_add_(0, example, c)


def f1_of(counts: Tensor) -> Tensor:
    """F1 from (..., 3) summed (tp, fp, fn); 0 where there is nothing to count."""
    tp, fp, fn = counts.unbind(-1)
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp_min(1e-12), 0.0)


def pooled_lift(unit_f1: Tensor, token_f1: Tensor, mask: Tensor) -> Tensor:
    """(...,): sum over features in mask of (unit - token) / sum of (1 - token);
    unit_f1, token_f1 (..., G). nan where no feature is in mask."""
    u, t = unit_f1[..., mask].double(), token_f1[..., mask].double()
    den = (1 - t).sum(-1)
    return torch.where(den > 0, (u - t).sum(-1) / den.clamp_min(1e-12), torch.nan)


def _mean_over(f1: Tensor, mask: Tensor) -> Tensor:
    return (
        f1[..., mask].double().mean(-1)
        if bool(mask.any())
        else f1.new_full(f1.shape[:-1], torch.nan)
    )


@dataclass
class Protocol:
    """What every set of units of one run is scored against: the two splits, the
    features kept (eligible (G,): enough positives on both sides) and which of them
    are contextual, the token predictor's per-example counts on the score split, and
    the bootstrap draws (weights (B, S))."""

    fit: Split
    score: Split
    names: list[str]
    eligible: Tensor
    contextual: Tensor
    token_fit_f1: Tensor
    token_counts: Tensor
    weights: Tensor
    min_positives: int

    @property
    def scored(self) -> Tensor:
        """(G,) the eligible contextual features: the ones every headline is over."""
        return self.eligible & self.contextual

    def replicate_f1(self, counts: Tensor) -> Tensor:
        """(B, G) F1 of each bootstrap replicate of per-example counts (S, G, 3)."""
        return f1_of(torch.tensordot(self.weights, counts, dims=1))

    def token_summary(self) -> dict[str, Any]:
        """The token predictor's held-out coverage and every feature's bookkeeping."""
        point = f1_of(self.token_counts.sum(0))
        reps = self.replicate_f1(self.token_counts)
        n_fit, _ = self.fit.positives()
        n_score, _ = self.score.positives()
        return {
            "coverage_heldout": _value(_mean_over(point, self.scored)),
            "coverage_heldout_ci": interval(_mean_over(reps, self.scored)),
            "n_features_scored": int(self.scored.sum()),
            "n_features_lexical": int((self.eligible & ~self.contextual).sum()),
            "n_features_left_out": int((~self.eligible).sum()),
            "min_positives": self.min_positives,
            "n_examples_fit": self.fit.n_examples,
            "n_examples_score": self.score.n_examples,
            "features": {
                n: {
                    "kind": "contextual" if bool(self.contextual[g]) else "lexical",
                    "scored": bool(self.eligible[g]),
                    "n_positive_fit": int(n_fit[g]),
                    "n_positive_score": int(n_score[g]),
                    "token_f1_fit": float(self.token_fit_f1[g]),
                    "token_f1": float(point[g]),
                }
                for g, n in enumerate(self.names)
            },
        }


def protocol(
    fit: Split,
    score: Split,
    names: Sequence[str],
    min_positives: int = MIN_POSITIVES,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Protocol:
    """The protocol of one run: features kept, token predictor fitted on `fit` and
    counted on `score`, bootstrap draws over score's examples."""
    ok = torch.ones(fit.labels.shape[1], dtype=torch.bool)
    for side in (fit, score):
        pos, neg = side.positives()
        ok &= (pos >= min_positives) & (neg >= min_positives)
    tok = fit_token_predictor(fit.tokens, fit.labels)
    pred = tok.predict(score.tokens)
    return Protocol(
        fit=fit,
        score=score,
        names=list(names),
        eligible=ok,
        contextual=tok.f1 < LEXICAL_F1,
        token_fit_f1=tok.f1,
        token_counts=example_counts(pred, score.labels, score.example, score.n_examples),
        weights=bootstrap_weights(score.n_examples, n_boot, seed),
        min_positives=min_positives,
    )


@dataclass
class Scored:
    """One set of units scored: JSON-ready values, and the bootstrap replicates (B,)
    of the headline scores (to average over layers replicate by replicate)."""

    values: dict[str, Any]
    replicates: dict[str, Tensor]


def _candidate_draws(n_units: int, matched: int, n_subsets: int, seed: int) -> list[Tensor]:
    if n_units <= matched:
        return [torch.arange(n_units)]
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_units, generator=g)[:matched].sort().values for _ in range(n_subsets)]


@torch.no_grad()
def score_units(
    p: Protocol,
    acts_fit: Tensor,
    acts_score: Tensor,
    matched_units: int = MATCHED_UNITS,
    n_subsets: int = N_SUBSETS,
    seed: int = 0,
    n_thresholds: int = N_THRESHOLDS,
) -> Scored:
    """The audited coverage of one set of units, acts_fit (N_fit, U) and acts_score
    (N_score, U) its activations on the protocol's two splits.

    values: lift_pooled (held out, matched candidates; the headline), its _ci,
    lift_pooled_all and coverage_heldout (every unit), coverage_matched, the
    in-sample numbers the old protocol printed (coverage_insample,
    lift_pooled_insample), n_units, n_candidates, n_subsets, and per feature the
    chosen unit, sign and threshold with its fit and held-out F1."""
    U = acts_fit.shape[1]
    fit = fit_units(acts_fit, p.fit.labels, n_thresholds)
    token_point = f1_of(p.token_counts.sum(0))
    token_reps = p.replicate_f1(p.token_counts)
    mask = p.scored

    def counts_for(candidates: Tensor):
        unit, sign, thr, f1_fit = fit.choose(candidates)
        pred = sign * acts_score[:, unit].float() > thr  # (N, G)
        return example_counts(pred, p.score.labels, p.score.example, p.score.n_examples), (
            unit, sign, thr, f1_fit,
        )  # fmt: skip

    all_counts, (unit, sign, thr, f1_fit) = counts_for(torch.arange(U))
    draws = _candidate_draws(U, matched_units, n_subsets, seed)
    matched = [counts_for(c)[0] for c in draws]
    m_reps = _matched_replicates(p, matched)
    m_point = torch.stack([f1_of(c.sum(0)) for c in matched]).mean(0)
    a_point, a_reps = f1_of(all_counts.sum(0)), p.replicate_f1(all_counts)
    token_fit = p.token_fit_f1.float()
    reps = {
        "lift_pooled": pooled_lift(m_reps, token_reps, mask),
        "lift_pooled_all": pooled_lift(a_reps, token_reps, mask),
        "coverage_heldout": _mean_over(a_reps, mask),
        "coverage_matched": _mean_over(m_reps, mask),
    }
    values: dict[str, Any] = {
        "lift_pooled": _value(
            torch.stack([pooled_lift(f1_of(c.sum(0)), token_point, mask) for c in matched]).mean()
        ),
        "lift_pooled_all": _value(pooled_lift(a_point, token_point, mask)),
        "coverage_heldout": _value(_mean_over(a_point, mask)),
        "coverage_matched": _value(_mean_over(m_point, mask)),
        "coverage_insample": _value(_mean_over(f1_fit, mask)),
        "lift_pooled_insample": _value(pooled_lift(f1_fit, token_fit, mask)),
        "n_units": U,
        "n_candidates": min(U, matched_units),
        "n_subsets": len(draws),
    }
    values.update({f"{k}_ci": interval(v) for k, v in reps.items()})
    values["features"] = _feature_choices(p, unit, sign, thr, f1_fit, a_point, m_point)
    return Scored(values, reps)


def _matched_replicates(p: Protocol, matched: list[Tensor]) -> Tensor:
    """(B, G) the F1 of each bootstrap replicate b over the counts of candidate draw
    b mod R (matched: R per-example counts, one per draw)."""
    B = p.weights.shape[0]
    m_reps = torch.empty(B, len(p.names), dtype=torch.float64)
    for r, c in enumerate(matched):  # replicate b uses draw b mod R
        m_reps[r :: len(matched)] = f1_of(torch.tensordot(p.weights[r :: len(matched)], c, dims=1))
    return m_reps


def _feature_choices(
    p: Protocol, unit: Tensor, sign: Tensor, thr: Tensor, f1_fit: Tensor, a_point: Tensor,
    m_point: Tensor,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per eligible feature: its chosen unit, sign and threshold, with the fit F1 and
    the held-out F1 (every unit; matched candidates)."""
    return {
        n: {
            "unit": int(unit[g]),
            "sign": int(sign[g]),
            "threshold": float(thr[g]),
            "f1_fit": float(f1_fit[g]),
            "f1": float(a_point[g]),
            "f1_matched": float(m_point[g]),
        }
        for g, n in enumerate(p.names)
        if bool(p.eligible[g])
    }


def random_directions(n_units: int, n_directions: int, seed: int = 0) -> Tensor:
    """(n_units, n_directions) unit-norm Gaussian directions in the units' space."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n_units, n_directions, generator=g)
    return d / d.norm(dim=0, keepdim=True).clamp_min(1e-12)


def score_random_control(
    p: Protocol,
    acts_fit: Tensor,
    acts_score: Tensor,
    matched_units: int = MATCHED_UNITS,
    seed: int = 0,
    n_thresholds: int = N_THRESHOLDS,
) -> Scored:
    """score_units on min(U, matched_units) random directions in the span of the
    units (the same directions on both splits): what a basis with no claim to
    meaning reaches by the same steps."""
    U = acts_fit.shape[1]
    d = random_directions(U, min(U, matched_units), seed)
    return score_units(
        p, acts_fit.float() @ d, acts_score.float() @ d, matched_units, 1, seed, n_thresholds
    )


def _value(x: Tensor) -> float | None:
    v = float(x)
    return v if v == v else None


__all__ = [
    "MATCHED_UNITS",
    "MIN_POSITIVES",
    "N_SUBSETS",
    "Protocol",
    "Scored",
    "Split",
    "UnitFit",
    "example_counts",
    "f1_of",
    "fit_units",
    "pooled_lift",
    "protocol",
    "random_directions",
    "score_random_control",
    "score_units",
]
