"""Sparse-dictionary metrics, named as SAELens names them.

Sparsity and health (on a latent matrix, (N, d_latent) or (..., d_latent)):
    firing_rate     share of tokens on which each latent is nonzero
    l0              mean number of nonzero latents per token
    dead_fraction   share of latents that never fire on the given tokens
    dense_fraction  share of latents that fire on more than half of the tokens

Fidelity (a transcoder against the MLP it replaces):
    fvu               sum ||y - y_hat||^2 / sum ||y - mean(y)||^2
    ce_loss_recovered (CE_ablated - CE_spliced) / (CE_ablated - CE_clean): 1 when the
                      spliced model is as good as the clean one, 0 when it is no
                      better than the MLP output ablated (analysis.splicing)
    kl_to_clean       mean over tokens of KL(p_clean || p_spliced)
"""

from __future__ import annotations

from torch import Tensor


def _flat(latents: Tensor, mask: Tensor | None = None) -> Tensor:
    """(..., U) -> (N, U), keeping the tokens where mask (...) is nonzero."""
    flat = latents.reshape(-1, latents.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1).bool()]
    return flat


def firing_rate(latents: Tensor, mask: Tensor | None = None) -> Tensor:
    """(U,) share of tokens on which each latent is nonzero."""
    flat = _flat(latents, mask)
    return (flat != 0).float().mean(0)


def l0(latents: Tensor, mask: Tensor | None = None) -> float:
    """Mean number of nonzero latents per token. latents (..., U); mask (...) optional."""
    return float((_flat(latents, mask) != 0).sum(-1).float().mean())


def dead_fraction(latents: Tensor, mask: Tensor | None = None) -> float:
    """Share of latents that are zero on every token given."""
    return float((firing_rate(latents, mask) == 0).float().mean())


def dense_fraction(latents: Tensor, mask: Tensor | None = None, threshold: float = 0.5) -> float:
    """Share of latents firing on more than `threshold` of the tokens (default: most)."""
    return float((firing_rate(latents, mask) > threshold).float().mean())


def fvu(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of variance unexplained: sum ||target - pred||^2 over the variance of
    target around its mean over tokens. pred, target (..., d); mask (...) optional.
    0 for a perfect fit, 1 for predicting the mean."""
    p, t = _flat(pred, mask).double(), _flat(target, mask).double()
    return float((t - p).pow(2).sum() / (t - t.mean(0)).pow(2).sum())


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)."""
    return (ce_ablated - ce_spliced) / (ce_ablated - ce_clean)


def kl_to_clean(logits_clean: Tensor, logits_other: Tensor, mask: Tensor | None = None) -> float:
    """Mean over positions of KL(softmax(clean) || softmax(other)). logits (..., V)."""
    lp = logits_clean.float().log_softmax(-1)
    lq = logits_other.float().log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    if mask is None:
        return float(kl.mean())
    w = mask.float()
    return float((kl * w).sum() / w.sum())


__all__ = [
    "ce_loss_recovered",
    "dead_fraction",
    "dense_fraction",
    "firing_rate",
    "fvu",
    "kl_to_clean",
    "l0",
]
