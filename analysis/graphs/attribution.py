"""Direct effects between the nodes of an attribution graph, through a model frozen at
one prompt (analysis.graphs.frozen).

Sources are the active units of every FFN slot (the kind's `linearise`), the error of
each post-hoc replacement per (layer, position), and the token embeddings. A target
(the logit, or a unit's input) is a covector on the residual stream; carried backwards
block by block it meets each source's write, and the dot product is the source's
direct effect on the target. The effects of every source plus the constant terms
(biases, a unit's read bias) add up to the target's value: `Rows.value`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from glassbox.analysis.graphs.frozen import (
    Frozen,
    back_attention,
    back_ffn,
    ffn_input_covector,
    through_keep,
)

ROW_BUDGET = 1 << 25  # floats of (targets x sources) effects held at once


@dataclass
class Sources:
    """Every source of a frozen prompt, in one column order: each layer's units (in
    its LinearFFN's order, or those of `members` in their order), then each replaced
    layer's error per position, then the token embeddings per position, then (with
    `members`) per layer and position the sum of the units left out."""

    unit_offset: list[int]  # per layer: the column of its first unit
    error_offset: dict[int, int]  # replaced layer -> the column of its position 0
    embed_offset: int
    n: int
    padded: list[tuple[Tensor, Tensor]]  # per layer: (T, K, d) act x write, (T, K) column
    left_out: Tensor | None = None  # (L, T, d): the writes of the units left out, summed

    @property
    def left_out_offset(self) -> int:
        """The column of layer 0's position 0 among the left-out sums."""
        return self.embed_offset + (self.left_out.shape[1] if self.left_out is not None else 0)


def _padded(lin, idx: Tensor, T: int, col: int) -> tuple[Tensor, Tensor]:
    """Units idx of lin, written per token: (T, K, d) act x write, (T, K) their columns
    (col + their place in idx; -1 where a token has fewer than K)."""
    token = lin.token[idx]
    counts = torch.bincount(token, minlength=T)
    K = int(counts.max()) if len(token) else 0
    order = torch.argsort(token, stable=True)
    tok = token[order]
    slot = torch.arange(len(tok), device=tok.device) - (counts.cumsum(0) - counts)[tok]
    W = lin.write.new_zeros(T, K, lin.write.shape[-1])
    W[tok, slot] = lin.act[idx[order], None] * lin.write[idx[order]]
    C = torch.full((T, K), -1, dtype=torch.long, device=tok.device)
    C[tok, slot] = col + order
    return W, C


def sources(fz: Frozen, members: list[Tensor] | None = None) -> Sources:
    """The column layout of fz's sources, with each layer's writes padded per token.
    members: per layer, the units (indices into its LinearFFN) that are columns of their
    own; the others' writes are summed per (layer, position) into one column each, so
    that effects on n targets cost n x (members + L x T) and not n x every unit."""
    T = len(fz.tokens)
    unit_offset, col, padded = [], 0, []
    for i, lin in enumerate(fz.ffn):
        unit_offset.append(col)
        idx = torch.arange(len(lin.token), device=fz.tokens.device)
        padded.append(_padded(lin, idx if members is None else members[i], T, col))
        col += len(idx) if members is None else len(members[i])
    error_offset = {}
    for layer in fz.replaced:
        error_offset[layer] = col
        col += T
    if members is None:
        return Sources(unit_offset, error_offset, col, col + T, padded)
    d = fz.mlp_in[0].shape[-1]
    left = fz.mlp_in[0].new_zeros(len(fz.ffn), T, d)
    for i, (lin, idx) in enumerate(zip(fz.ffn, members, strict=True)):
        out = torch.ones(len(lin.token), dtype=torch.bool, device=left.device)
        out[idx] = False
        w = lin.act[out, None].to(left.dtype) * lin.write[out].to(left.dtype)
        left[i].index_add_(0, lin.token[out], w)
    return Sources(unit_offset, error_offset, col, col + T + len(fz.ffn) * T, padded, left)


def _collect_ffn(fz: Frozen, src: Sources, layer: int, G: Tensor, eff: Tensor) -> Tensor:
    """Add layer's sources' direct effects (G on the residual after it) into eff (n,
    n_sources); return the constant part (n,): the slot's biases."""
    P = G.shape[1]
    W, C = src.padded[layer]
    if W.shape[1]:
        e = torch.einsum("npd,pkd->npk", G, W[:P].to(G.dtype))
        c = C[:P]
        real = c >= 0
        eff[:, c[real]] += e[:, real]
    lin = fz.ffn[layer]
    if layer in src.error_offset:
        o = src.error_offset[layer]
        eff[:, o : o + P] += (G * lin.error[:P].to(G.dtype)).sum(-1)
    if src.left_out is not None:
        o = src.left_out_offset + layer * src.left_out.shape[1]
        eff[:, o : o + P] += (G * src.left_out[layer, :P].to(G.dtype)).sum(-1)
    return (G * lin.bias[:P].to(G.dtype)).sum((1, 2))


def walk(model, fz: Frozen, src: Sources, G: Tensor, top: int, mid: bool) -> tuple[Tensor, Tensor]:
    """Direct effects of every source on n targets given as covectors G (n, P, d) on
    the residual after block `top` (mid False; top = n_layers for the final residual)
    or on block top's middle, after its attention (mid True). Returns (effects (n,
    n_sources), constant (n,)): the biases met on the way."""
    n, P, _ = G.shape
    eff = G.new_zeros(n, src.n)
    const = G.new_zeros(n)
    layer = top if mid else top - 1
    if mid:
        G = back_attention(model, fz, layer, G)
        layer -= 1
    while layer >= 0:
        G = through_keep(fz, layer, G)
        const += _collect_ffn(fz, src, layer, G, eff)
        G = back_attention(model, fz, layer, back_ffn(model, fz, layer, G))
        layer -= 1
    emb = model.W_E.weight[fz.tokens[:P]].to(G.dtype)  # (P, d)
    eff[:, src.embed_offset : src.embed_offset + P] = (G * emb).sum(-1)
    return eff, const


def total_effects(model, fz: Frozen, src: Sources, G: Tensor) -> Tensor:
    """(n_sources,): each source's total effect on one target G (1, T, d) on the final
    residual, in the frozen model with every unit linear in its input (its direct
    effect plus those through later units): the ranking that picks the units a graph
    keeps when there are more than it may hold."""
    eff = G.new_zeros(1, src.n)
    for layer in range(len(fz.ffn) - 1, -1, -1):
        G = through_keep(fz, layer, G)
        _collect_ffn(fz, src, layer, G, eff)
        lin = fz.ffn[layer]
        through = (G[0, lin.token] * lin.write.to(G.dtype)).sum(-1)  # d target / d act
        cov = ffn_input_covector(model, fz, layer, through[:, None] * lin.read, lin.token)
        G = back_ffn(model, fz, layer, G).index_add(1, lin.token, cov[None].to(G.dtype))
        G = back_attention(model, fz, layer, G)
    emb = model.W_E.weight[fz.tokens].to(G.dtype)
    eff[:, src.embed_offset : src.embed_offset + len(fz.tokens)] = (G * emb).sum(-1)
    return eff[0]


@dataclass
class Rows:
    """Incoming direct effects of some targets: effects (n, n_sources), constant (n,):
    effects.sum(1) + constant is each target's value in the frozen model."""

    effects: Tensor
    constant: Tensor


def unit_rows(model, fz: Frozen, src: Sources, layer: int, members: Tensor) -> Rows:
    """The incoming effects of layer's units `members` (indices into its LinearFFN),
    each target's input read at its own token, computed in chunks by position."""
    lin = fz.ffn[layer]
    pos = lin.token[members]
    order = torch.argsort(pos, stable=True)
    d = lin.read.shape[-1]
    eff = lin.read.new_zeros(len(members), src.n)
    const = lin.read_bias[members].clone()
    chunk = max(16, min(1024, ROW_BUDGET // max(src.n, 1)))
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        p = pos[idx]
        P = int(p.max()) + 1
        cov = ffn_input_covector(model, fz, layer, lin.read[members[idx]], p)
        G = lin.read.new_zeros(len(idx), P, d)
        G[torch.arange(len(idx)), p] = cov
        e, c = walk(model, fz, src, G, layer, mid=True)
        eff[idx] = e
        const[idx] += c
    return Rows(eff, const)
