"""Specialisation as information beyond the token, held out.

How much does knowing which group (expert, cluster of units) a token went to say
about its label (the skill; a text's domain) beyond what the token id already says?
NMI between groups and labels cannot answer it: a router that sends every "+" to one
expert has high NMI with the addition skill and says nothing the token did not.

Fitted on one split, scored on the other (`info_beyond_token`):

    P(label | token)          counts on the fit split, smoothed towards P(label)
    P(label | token, group)   the same per (token, group) pair; a pair the fit split
                              never saw falls back to P(label | token)

    info = mean over score tokens of  log P(label | token, group) - log P(label | token)

in bits per token. A group that is a function of the token makes the two tables
equal row for row: info is exactly 0. A group that is the label itself makes the
second table certain: info is the held-out entropy of the label given the token. It
can be negative (a grouping that splits tokens into cells too small to estimate).
The control: the same with each token's groups shuffled among that token's
occurrences (`shuffle_within_token`), which keeps what the token says about the
group and removes the rest. Accuracies (argmax of each table) are reported beside.
Intervals by the bootstrap over score examples (analysis.intervals).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.intervals import interval, ratio_replicates

ALPHA = 1.0  # pseudo-counts of the smoothing towards the prior


def _lookup(keys: Tensor, table_keys: Tensor) -> tuple[Tensor, Tensor]:
    """(row in table_keys (sorted), seen) for each of keys."""
    if table_keys.numel() == 0:
        z = torch.zeros_like(keys)
        return z, torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(table_keys, keys).clamp_max(table_keys.numel() - 1)
    return pos, table_keys[pos] == keys


def _table(keys: Tensor, labels: Tensor, n_labels: int) -> tuple[Tensor, Tensor]:
    """(sorted distinct keys (K,), counts (K, n_labels))."""
    uniq, inv = keys.unique(return_inverse=True)
    counts = torch.zeros(uniq.numel(), n_labels, dtype=torch.float64)
    counts.index_put_((inv, labels), torch.ones_like(inv, dtype=torch.float64), accumulate=True)
    return uniq, counts


def _smoothed(counts: Tensor, prior: Tensor, alpha: float) -> Tensor:
    return (counts + alpha * prior) / (counts.sum(-1, keepdim=True) + alpha)


def conditional_probs(
    fit_keys: Tensor, fit_labels: Tensor, keys: Tensor, n_labels: int, prior: Tensor,
    fallback: Tensor, alpha: float = ALPHA,
) -> Tensor:  # fmt: skip
    """(N, n_labels) P(label | key) for keys (N,) from the fit split's (key, label)
    counts, smoothed towards `prior` (n_labels,); `fallback` (N, n_labels) where the
    fit split never saw the key."""
    tk, counts = _table(fit_keys, fit_labels, n_labels)
    pos, seen = _lookup(keys, tk)
    probs = _smoothed(counts, prior, alpha)[pos] if tk.numel() else fallback
    return torch.where(seen[:, None], probs, fallback)


def shuffle_within_token(tokens: Tensor, groups: Tensor, seed: int = 0) -> Tensor:
    """groups (N,) permuted among the occurrences of each token id (seeded): what
    the token says about the group is kept, the rest is destroyed."""
    g = torch.Generator().manual_seed(seed)
    n = tokens.numel()
    big = n + 1
    by_token = torch.argsort(tokens.long() * big + torch.arange(n))  # each token's rows, in order
    shuffled = torch.argsort(tokens.long() * big + torch.randperm(n, generator=g))
    out = torch.empty_like(groups)
    out[by_token] = groups[shuffled]
    return out


@torch.no_grad()
def info_beyond_token(
    fit_tokens: Tensor,
    fit_groups: Tensor,
    fit_labels: Tensor,
    tokens: Tensor,
    groups: Tensor,
    labels: Tensor,
    example: Tensor,
    n_examples: int,
    n_labels: int,
    weights: Tensor,
    alpha: float = ALPHA,
) -> tuple[dict[str, Any], Tensor]:
    """The held-out information about labels that groups add to tokens.

    fit_*: the fit split's tokens, groups, labels (N_fit,) each; tokens, groups,
    labels, example (N,): the score split (example: each token's example index);
    weights (B, n_examples): the run's bootstrap draws. Returns (values, replicates
    (B,) of info_bits): values info_bits, info_bits_ci, entropy_given_token_bits
    (the token table's held-out cross-entropy: the most info can be), acc_token,
    acc_token_group, n_tokens."""
    groups, fit_groups = groups.long(), fit_groups.long()
    n_groups = int(max(int(groups.max()), int(fit_groups.max()))) + 1 if groups.numel() else 1
    prior = (torch.bincount(fit_labels, minlength=n_labels).double() + 1) / (
        fit_labels.numel() + n_labels
    )
    base = prior.expand(tokens.numel(), n_labels)
    p_tok = conditional_probs(
        fit_tokens.long(), fit_labels, tokens.long(), n_labels, prior, base, alpha
    )
    p_grp = conditional_probs(
        fit_tokens.long() * n_groups + fit_groups,
        fit_labels,
        tokens.long() * n_groups + groups,
        n_labels,
        prior,
        p_tok,
        alpha,
    )
    rows = torch.arange(tokens.numel())
    ln_tok, ln_grp = p_tok[rows, labels].log(), p_grp[rows, labels].log()
    per_ex = torch.zeros(n_examples, 3, dtype=torch.float64)
    per_ex.index_add_(
        0, example, torch.stack([ln_grp - ln_tok, -ln_tok, torch.ones_like(ln_tok)], 1)
    )
    reps = ratio_replicates(per_ex[:, 0], per_ex[:, 2], weights) / math.log(2)
    n = max(tokens.numel(), 1)
    values = {
        "info_bits": float((ln_grp - ln_tok).sum()) / n / math.log(2),
        "info_bits_ci": interval(reps),
        "entropy_given_token_bits": float(-ln_tok.sum()) / n / math.log(2),
        "acc_token": float((p_tok.argmax(1) == labels).double().mean()),
        "acc_token_group": float((p_grp.argmax(1) == labels).double().mean()),
        "n_tokens": int(tokens.numel()),
    }
    return values, reps


def info_with_control(
    fit_tokens: Tensor, fit_groups: Tensor, fit_labels: Tensor, tokens: Tensor, groups: Tensor,
    labels: Tensor, example: Tensor, n_examples: int, n_labels: int, weights: Tensor,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Tensor]]:  # fmt: skip
    """info_beyond_token of the groups and of their shuffle within each token (on
    both splits): values {info_bits, ..., shuffled: {...}}, replicates {"info":
    (B,), "shuffled": (B,)}."""
    args = (n_examples, n_labels, weights)
    real, r_reps = info_beyond_token(
        fit_tokens, fit_groups, fit_labels, tokens, groups, labels, example, *args
    )
    sf = shuffle_within_token(fit_tokens, fit_groups, seed)
    ss = shuffle_within_token(tokens, groups, seed + 1)
    shuf, s_reps = info_beyond_token(fit_tokens, sf, fit_labels, tokens, ss, labels, example, *args)
    real["shuffled"] = shuf
    return real, {"info": r_reps, "shuffled": s_reps}


__all__ = [
    "ALPHA",
    "conditional_probs",
    "info_beyond_token",
    "info_with_control",
    "shuffle_within_token",
]
