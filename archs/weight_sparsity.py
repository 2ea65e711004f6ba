"""Weight-sparse transformers (Gao et al. 2025, "Weight-sparse transformers have
interpretable circuits"): any kind with most of its weights held at exactly zero.

After every optimizer step each sparsified matrix keeps only its top-magnitude
entries and the rest are set to zero:

    density(t)  = 1 - (1 - target_density) * min(1, t / (anneal_fraction * T))
    keep        = the round(density(t) * n) entries of largest |w|, per matrix of n
    w          <- w * keep

t optimizer steps done out of T: dense at the start, the target density from
`anneal_fraction` of the run on. The sparsified matrices are every parameter of two
or more dimensions (attention W_Q/W_K/W_V/W_O, every FFN kind's weights, routers)
except the embeddings unless `include_embeddings`; an MoE's (E, d_in, d_out) expert
weight is E matrices, each kept at the density. Norm gains and biases stay dense.

Which entries are kept is chosen afresh at every step, so a pruned weight whose
gradient grows it past the smallest kept one comes back (as in Gao et al., who zero
the pruned weights after each step and leave the optimizer alone): AdamW's moments
of pruned entries are kept, not reset. The choice is recorded in a boolean buffer
beside each matrix, `<name>_mask` (`W_Q.weight_mask`, `W_enc_mask`), so a saved
checkpoint carries it and a loaded model knows which connections exist.

Optionally (`residual_topk` > 0) the residual stream is activation-sparse too: after
each block only the k entries of largest magnitude of each token survive
(`ResidualTopK`, before `hook_resid_post`, so every hook sees what the next block
reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassbox.archs.errors import ConfigError, check_fraction

MASK_SUFFIX = "_mask"
EMBEDDINGS = ("W_E.weight", "W_U.weight")


@dataclass
class WeightSparsityConfig:
    """The `model.weight_sparsity` section; target_density 1 (the default) is off."""

    target_density: float = 1.0  # kept fraction of each sparsified matrix once annealed (1 = dense)
    anneal_fraction: float = 0.5  # share of the run over which the density falls from 1 to target
    include_embeddings: bool = False  # sparsify W_E and W_U too
    residual_topk: int = (
        0  # keep the k largest-magnitude residual entries per token after each block (0 = off)
    )

    @property
    def enabled(self) -> bool:
        """Whether any weight is pruned (target_density < 1)."""
        return self.target_density < 1

    def density_at(self, step: int, total_steps: int) -> float:
        """The kept fraction after `step` of `total_steps` optimizer steps."""
        if self.anneal_fraction == 0:
            return self.target_density
        progress = min(1.0, step / (self.anneal_fraction * max(total_steps, 1)))
        return 1 - (1 - self.target_density) * progress


def check_weight_sparsity_config(c: WeightSparsityConfig, d_model: int, prefix: str) -> None:
    """Raise ConfigError for an impossible value of `c`, whose key is `prefix`."""
    if not (math.isfinite(c.target_density) and 0 < c.target_density <= 1):
        raise ConfigError(
            f"{prefix}.target_density", c.target_density, "must be in (0, 1] (1 = dense, off)"
        )
    check_fraction(f"{prefix}.anneal_fraction", c.anneal_fraction, closed_high=True)
    if not 0 <= c.residual_topk <= d_model:
        raise ConfigError(
            f"{prefix}.residual_topk",
            c.residual_topk,
            f"must be between 0 (off) and model.d_model={d_model}",
        )


def sparsified(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(parameter name, owning module, attribute) of every matrix that weight sparsity
    prunes in a Transformer: parameters of >= 2 dims, the embeddings only with
    `include_embeddings`; tied weights once."""
    include_embeddings = model.cfg.weight_sparsity.include_embeddings
    out, seen = [], set()
    for mod_name, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{attr}" if mod_name else attr
            if p.dim() < 2 or id(p) in seen:
                continue
            if not include_embeddings and name.endswith(EMBEDDINGS):
                continue
            seen.add(id(p))
            out.append((name, module, attr))
    return out


def add_masks(model: nn.Module) -> None:
    """Register the all-True `<attr>_mask` buffer beside every sparsified matrix
    (the Transformer does it when weight sparsity is on, so a checkpoint holds them)."""
    for _, module, attr in sparsified(model):
        p = getattr(module, attr)
        module.register_buffer(attr + MASK_SUFFIX, torch.ones_like(p, dtype=torch.bool))


def _rows(t: Tensor) -> Tensor:
    """A weight as the matrices that are pruned separately: (E, d_in * d_out) for an
    MoE's expert weight (E, d_in, d_out), (1, n) otherwise."""
    return t.reshape(t.shape[0], -1) if t.dim() == 3 else t.reshape(1, -1)


def kept_count(numel: int, density: float) -> int:
    """Entries a matrix of `numel` keeps at `density`: round(density * numel), >= 1."""
    return max(1, min(numel, round(density * numel)))


@torch.no_grad()
def apply_weight_sparsity(model: nn.Module, density: float) -> None:
    """Keep the top-|w| `kept_count(n, density)` entries of every sparsified matrix
    of n entries, zero the rest, and record the choice in its mask buffer."""
    for _, module, attr in sparsified(model):
        w = getattr(module, attr)
        rows = _rows(w)
        k = kept_count(rows.shape[1], density)
        keep = torch.zeros_like(rows, dtype=torch.bool)
        keep.scatter_(1, rows.abs().topk(k, dim=1, sorted=False).indices, True)
        keep = keep.view_as(w)
        w.mul_(keep)
        mask = getattr(module, attr + MASK_SUFFIX, None)
        if mask is not None:
            mask.copy_(keep)


def prune_to_schedule(model: nn.Module, step: int, total_steps: int) -> float | None:
    """Prune `model` (a Transformer) to its scheduled density after `step` of
    `total_steps` optimizer steps; returns that density, or None when weight
    sparsity is off."""
    cfg = model.cfg.weight_sparsity
    if not cfg.enabled:
        return None
    density = cfg.density_at(step, total_steps)
    apply_weight_sparsity(model, density)
    return density


def weight_masks(model: nn.Module) -> dict[str, Tensor]:
    """{parameter name: its bool mask} of a weight-sparse model ({} when off)."""
    out = {}
    for name, module, attr in sparsified(model):
        mask = getattr(module, attr + MASK_SUFFIX, None)
        if mask is not None:
            out[name] = mask
    return out


def nonzero_params(model: nn.Module) -> int:
    """Parameters that are not exactly zero, tied weights once: what a weight-sparse
    model is matched on."""
    unique = {id(p): p for p in model.parameters()}.values()
    return int(sum(int(torch.count_nonzero(p.detach())) for p in unique))


class ResidualTopK(nn.Module):
    """Per token, keep the k residual entries of largest magnitude and zero the
    rest: (..., d_model) -> (..., d_model). The gradient flows to the kept ones."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        idx = x.abs().topk(self.k, dim=-1, sorted=False).indices
        return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))

    def extra_repr(self) -> str:
        return f"k={self.k}"
