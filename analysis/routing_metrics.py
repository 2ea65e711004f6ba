"""Routing metrics: pure functions on the groups a layer sends tokens to (a MoE's
experts, or k-means clusters of a dense layer's hidden activations, `kmeans` at the
end, so dense models get the same numbers).

Inputs are plain tensors for N tokens of one layer: `indices` (N, k) the experts
each token was sent to, `labels` (N,) an integer label per token (skill id, value
of a ground-truth variable, token id), `logits` (N, E) router logits. With k > 1
every token-slot counts once: a token contributes to each of its k experts.

Metric names follow the literature:
  load, load_cv, routing_entropy        how evenly the experts are used
  nmi                                   normalised mutual information expert / label
  purity                                share of an expert's slots from its top label
  domain_specialization,                OLMoE (Muennighoff et al. 2024, sec. 5):
  vocab_specialization,                 N(expert, domain) / N(domain),
  coactivation, router_saturation       N(e_i and e_j) / N(e_i), |S_a & S_b| / k
  selectivity                           causal: ablate a skill's experts, compare drops
The runner that collects routing from a model is analysis.specialisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# --- usage -----------------------------------------------------------------------


def expert_load(indices: Tensor, n_experts: int) -> Tensor:
    """(N, k) expert indices -> (E,) share of the N*k token-slots each expert got."""
    counts = torch.bincount(indices.reshape(-1), minlength=n_experts).double()
    return counts / counts.sum().clamp_min(1)


def load_cv(load: Tensor) -> float:
    """Coefficient of variation std/mean of the per-expert load (0 = perfectly even)."""
    return (load.double().std(correction=0) / load.double().mean()).item()


def _entropy(p: Tensor) -> Tensor:
    """Entropy in nats along the last dim of a probability tensor (0 log 0 = 0)."""
    p = p.double()
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def routing_entropy(load: Tensor) -> float:
    """Entropy of the expert-load distribution over log E: 1 when every expert gets
    the same share, 0 when one expert gets everything."""
    n = load.numel()
    return (_entropy(load / load.sum()) / math.log(n)).item() if n > 1 else 0.0


def router_token_entropy(logits: Tensor) -> float:
    """Mean over tokens of the entropy of softmax(router logits), over log E:
    how undecided the router is about a single token (1 = uniform)."""
    E = logits.shape[-1]
    if E < 2:
        return 0.0
    return (_entropy(logits.double().softmax(-1)).mean() / math.log(E)).item()


# --- expert x label ----------------------------------------------------------------


def contingency(indices: Tensor, labels: Tensor, n_experts: int, n_labels: int) -> Tensor:
    """(E, L) counts of token-slots by expert and label. Tokens with label < 0 are
    left out (padding, 'not applicable')."""
    keep = labels >= 0
    idx, lab = indices[keep], labels[keep].long()
    k = idx.shape[-1] if idx.dim() > 1 else 1
    flat_e = idx.reshape(-1).long()
    flat_l = lab.repeat_interleave(k)
    counts = torch.bincount(flat_e * n_labels + flat_l, minlength=n_experts * n_labels)
    return counts.view(n_experts, n_labels).double()


def mutual_information(counts: Tensor) -> float:
    """I(X; Y) in nats from an (X, Y) table of counts."""
    p = counts.double() / counts.sum().clamp_min(1e-300)
    px, py = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
    nz = p > 0
    return (p[nz] * (p[nz] / (px * py).expand_as(p)[nz]).log()).sum().clamp_min(0).item()


def nmi(counts: Tensor, normalization: str = "arithmetic") -> float:
    """Normalised mutual information of an (expert, label) count table.

    arithmetic: 2 I / (H(expert) + H(label)), sklearn's normalized_mutual_info_score
                default; 1 for a one-to-one routing (k=1), below 1 for k > 1 since
                a token's k experts add log k to H(expert).
    label:      I / H(label), the share of the label's entropy the expert explains:
                1 whenever the expert determines the label, for any k.
    0 on independent expert and label (and when either is constant).
    """
    p = counts.double() / counts.sum().clamp_min(1e-300)
    h_e, h_l = _entropy(p.sum(1)).item(), _entropy(p.sum(0)).item()
    mi = mutual_information(counts)
    if normalization == "arithmetic":
        denom = (h_e + h_l) / 2
    elif normalization == "label":
        denom = h_l
    else:
        raise ValueError(f"nmi: normalization={normalization!r}: one of 'arithmetic', 'label'")
    return min(mi / denom, 1.0) if denom > 1e-12 else 0.0


def expert_label_nmi(
    indices: Tensor,
    labels: Tensor,
    n_experts: int,
    n_labels: int | None = None,
    normalization: str = "arithmetic",
) -> float:
    """NMI between the chosen expert and a per-token label; indices (N, k), labels (N,)."""
    if n_labels is None:
        n_labels = int(labels.max()) + 1 if (labels >= 0).any() else 1
    return nmi(contingency(indices, labels, n_experts, n_labels), normalization)


def purity(counts: Tensor) -> Tensor:
    """(E, L) counts -> (E,) share of each expert's slots from its most common label
    (nan for an expert that got no slot)."""
    tot = counts.sum(1)
    return torch.where(tot > 0, counts.max(1).values / tot.clamp_min(1e-300), float("nan"))


def mean_purity(counts: Tensor) -> float:
    """Purity averaged over experts weighted by their load (= share of all slots that
    sit in their expert's majority label)."""
    return (counts.max(1).values.sum() / counts.sum().clamp_min(1e-300)).item()


# --- OLMoE's routing properties ----------------------------------------------------


def domain_specialization(indices: Tensor, labels: Tensor, n_experts: int, n_labels: int) -> Tensor:
    """(E, L): share of the tokens of label (domain, skill) l that have expert e among
    their k (OLMoE). Under uniform random routing every entry is k/E; a column sums to k."""
    counts = contingency(indices, labels, n_experts, n_labels)
    n_tokens = torch.bincount(labels[labels >= 0].long(), minlength=n_labels).double()
    return counts / n_tokens.clamp_min(1)


def specialization_score(spec: Tensor, min_count: Tensor | None = None) -> float:
    """Summary of a (E, L) specialisation table: mean over labels of the largest
    entry (the share of the label's tokens its favourite expert sees); labels with
    `min_count` == False or no tokens are left out. k/E under random routing, 1
    when some expert handles every token of every label."""
    best = spec.max(0).values
    keep = spec.sum(0) > 0 if min_count is None else min_count & (spec.sum(0) > 0)
    return best[keep].mean().item() if keep.any() else float("nan")


def vocab_specialization(
    indices: Tensor, tokens: Tensor, n_experts: int, vocab_size: int
) -> tuple[Tensor, Tensor]:
    """(E, V) share of the occurrences of token id x routed to expert e (OLMoE), and
    (V,) the occurrence counts."""
    spec = domain_specialization(indices, tokens, n_experts, vocab_size)
    return spec, torch.bincount(tokens[tokens >= 0].long(), minlength=vocab_size)


def coactivation(indices: Tensor, n_experts: int) -> Tensor:
    """(E, E): C[i, j] = N(i and j both among a token's k) / N(i), over all pairs of
    the top-k (OLMoE). Diagonal 0; rows of unused experts 0."""
    onehot = torch.zeros(indices.shape[0], n_experts, dtype=torch.float64)
    onehot.scatter_(1, indices.long(), 1.0)
    both = onehot.T @ onehot  # (E, E), diag = N(i)
    n_i = both.diagonal().clone()
    both.fill_diagonal_(0)
    return both / n_i.clamp_min(1)[:, None]


def router_saturation(indices_a: Tensor, indices_b: Tensor) -> float:
    """Share of the experts chosen at checkpoint b that checkpoint a also chose, on
    the same tokens: mean over tokens of |S_a & S_b| / k (OLMoE; 1 = same routing)."""
    if indices_a.shape != indices_b.shape:
        raise ValueError(f"router_saturation: shapes {indices_a.shape} != {indices_b.shape}")
    same = (indices_a[:, :, None] == indices_b[:, None, :]).any(-1)  # (N, k)
    return same.double().mean().item()


# --- causal specialisation -----------------------------------------------------------


def skill_experts(
    indices: Tensor, labels: Tensor, n_experts: int, n_labels: int, n_per_label: int
) -> Tensor:
    """(L, n) the experts each label relies on more than the other labels do: the
    largest usage contrast N(e, l) / N(l) - N(e, not l) / N(not l)."""
    spec = domain_specialization(indices, labels, n_experts, n_labels)  # (E, L)
    counts = contingency(indices, labels, n_experts, n_labels)
    n_tokens = torch.bincount(labels[labels >= 0].long(), minlength=n_labels).double()
    rest = (counts.sum(1, keepdim=True) - counts) / (n_tokens.sum() - n_tokens).clamp_min(1)
    contrast = spec - rest  # (E, L)
    return contrast.topk(min(n_per_label, n_experts), dim=0).indices.T


def selectivity(drop: Tensor) -> dict[str, Tensor | float]:
    """Causal selectivity from an (S, S) matrix: drop[s, t] = accuracy on skill t with
    intact experts minus with skill s's experts ablated.

    Returns delta_target (S,) = drop[s, s], delta_others (S,) = mean over t != s of
    drop[s, t], and score = mean over s of delta_target - delta_others (1 when
    every ablation removes exactly its own skill from perfect accuracy, 0 when it
    hurts all skills alike). Skills with nan entries (no answer tokens) are left
    out of the means.
    """
    S = drop.shape[0]
    d = drop.double()
    target = d.diagonal()
    off = ~torch.eye(S, dtype=torch.bool)
    others = torch.stack(
        [d[s][off[s] & ~d[s].isnan()].mean() if S > 1 else d.new_tensor(0.0) for s in range(S)]
    )
    gap = target - others
    ok = ~gap.isnan()
    return {
        "delta_target": target,
        "delta_others": others,
        "score": gap[ok].mean().item() if ok.any() else float("nan"),
    }


# --- dense baseline ------------------------------------------------------------------


def nearest_centre(x: Tensor, centres: Tensor) -> Tensor:
    """(N,) the index of the centre (k, d) nearest each row of x (N, d) in Euclidean
    distance: the argmin of |c|^2 - 2 x.c, one matrix product (|x|^2 is the same for
    every centre of a row, and no square root changes an order)."""
    return ((centres * centres).sum(1)[None] - 2 * x @ centres.T).argmin(1)


def kmeans_centres(
    x: Tensor, n_clusters: int, iters: int = 50, seed: int = 0, max_fit: int = 20000
) -> Tensor:
    """(n_clusters, d) k-means centres of the rows of x (N, d) (k-means++ seeding,
    Lloyd steps), fitted on at most `max_fit` random rows, in x's float dtype."""
    g = torch.Generator().manual_seed(seed)
    fit = x[torch.randperm(x.shape[0], generator=g)[:max_fit]] if x.shape[0] > max_fit else x
    centers = fit[torch.randint(fit.shape[0], (1,), generator=g)]
    d2 = (fit - centers).square().sum(1).double()  # squared distance to the nearest centre
    for _ in range(1, n_clusters):  # k-means++: next centre with prob ~ squared distance
        if d2.sum() <= 0:
            nxt = torch.randint(fit.shape[0], (1,), generator=g)
        else:
            nxt = torch.multinomial(d2 / d2.sum(), 1, generator=g)
        centers = torch.cat([centers, fit[nxt]])
        d2 = torch.minimum(d2, (fit - fit[nxt]).square().sum(1).double())
    for _ in range(iters):
        assign = nearest_centre(fit, centers)
        sums = torch.zeros_like(centers).index_add_(0, assign, fit)
        n = torch.bincount(assign, minlength=n_clusters).to(fit.dtype)
        new = torch.where(n[:, None] > 0, sums / n.clamp_min(1)[:, None], centers)
        if torch.allclose(new, centers):
            break
        centers = new
    return centers


def kmeans(
    x: Tensor, n_clusters: int, iters: int = 50, seed: int = 0, max_fit: int = 20000
) -> Tensor:
    """Cluster the rows of x (N, d) with k-means (k-means++ seeding, Lloyd steps) and
    return (N,) labels. Fits on at most `max_fit` random rows, assigns all."""
    x = x.double()
    return nearest_centre(x, kmeans_centres(x, n_clusters, iters, seed, max_fit))
