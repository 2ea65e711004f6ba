"""A model frozen at one prompt: every attention pattern, every RMSNorm scale (the
1/rms factor) and each FFN slot's nonlinear factors (`FFN.linearise`) held at the
prompt's values. What is left is linear: the residual stream at any position is a sum
of the token embeddings and the FFN units' writes, carried through attention's OV
circuits and the norms' gains.

`capture(model, ids)` records the frozen values in one forward pass. `back_attention`
and `back_ffn` carry linear functionals of the residual stream (n of them, each a
(P, d_model) covector over the first P positions) backwards through one block's
attention or FFN, so that a target's direct effects on every earlier write are dot
products (analysis.graphs.attribution).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from glassbox.archs.linearised import LinearFFN


@dataclass
class Frozen:
    """The frozen values of one prompt (positions T)."""

    tokens: Tensor  # (T,) long
    ln1: list[Tensor]  # per layer (T,): the 1/rms scale before attention
    ln2: list[Tensor]  # per layer (T,): before the FFN
    patterns: list[Tensor]  # per layer (H, T, T)
    ffn: list[LinearFFN]  # per layer, the slot at the T tokens
    mlp_in: list[Tensor]  # per layer (T, d_model): the FFN's input
    keep: list[Tensor | None]  # per layer (T, d_model): the residual top-k's mask, or None
    ln_final: Tensor  # (T,)
    logits: Tensor  # (T, vocab): the model's own
    replaced: list[int] = field(default_factory=list)  # layers a post-hoc replacement took


def _rms_scale(x: Tensor, eps: float) -> Tensor:
    """(T, d) -> (T,): the 1/rms factor RMSNorm multiplies x by."""
    return torch.rsqrt(x.pow(2).mean(-1) + eps)


def _names(model) -> list[str]:
    names = ["ln_final.hook_normalized"]
    for i, block in enumerate(model.blocks):
        names += [f"blocks.{i}.{h}" for h in ("hook_resid_pre", "hook_resid_mid", "hook_mlp_in")]
        names += [f"blocks.{i}.{h}" for h in ("hook_mlp_out", "hook_resid_post")]
        names += [f"blocks.{i}.attn.hook_pattern"]
        names += [f"blocks.{i}.mlp.{h}" for h in block.mlp.hooks_to_read()]
    return names


@torch.no_grad()
def capture(model, ids: Tensor, replacements: Mapping[int, object] | None = None) -> Frozen:
    """Run `model` on one prompt ids (T,) and freeze it. replacements: {layer: a
    post-hoc transcoder} read in place of that layer's FFN (its error, the FFN's
    output minus the transcoder's, kept per position)."""
    replacements = dict(replacements or {})
    logits, cache = model.run_with_cache(ids[None], names_filter=_names(model))
    eps = model.cfg.norm_eps
    fz = Frozen(ids, [], [], [], [], [], [], None, logits[0], sorted(replacements))  # type: ignore[arg-type]
    for i, block in enumerate(model.blocks):
        c = {
            k[len(f"blocks.{i}.") :]: v[0] for k, v in cache.items() if k.startswith(f"blocks.{i}.")
        }
        fz.ln1.append(_rms_scale(c["hook_resid_pre"], eps))
        fz.ln2.append(_rms_scale(c["hook_resid_mid"], eps))
        fz.patterns.append(c["attn.hook_pattern"])
        x = c["hook_mlp_in"]
        fz.mlp_in.append(x)
        if i in replacements:
            lin = replacements[i].linearise(x, None, target=c["hook_mlp_out"])
        else:
            lin = block.mlp.linearise(x, {h: c[f"mlp.{h}"] for h in block.mlp.hooks_to_read()})
        fz.ffn.append(lin)
        pre_topk = c["hook_resid_mid"] + c["hook_mlp_out"]
        fz.keep.append(
            (c["hook_resid_post"] == pre_topk).to(x.dtype)
            if model.cfg.weight_sparsity.residual_topk
            else None
        )
    final = cache[f"blocks.{len(model.blocks) - 1}.hook_resid_post"][0]
    fz.ln_final = _rms_scale(final, eps)
    return fz


def through_keep(fz: Frozen, layer: int, G: Tensor) -> Tensor:
    """G (n, P, d) on the residual after block `layer` -> on what the residual top-k
    (if any) kept of it: the covector every write of the block meets."""
    keep = fz.keep[layer]
    return G if keep is None else G * keep[: G.shape[1]].to(G.dtype)


def back_ffn(model, fz: Frozen, layer: int, G: Tensor) -> Tensor:
    """G (n, P, d) on block `layer`'s output before its residual top-k (through_keep)
    -> on its middle (after attention): the residual path plus the FFN's linear skip;
    its units and biases are held fixed (they are sources)."""
    P = G.shape[1]
    skip = fz.ffn[layer].skip
    if skip is None:
        return G
    gain = model.blocks[layer].ln2.w * fz.ln2[layer][:P, None]  # (P, d)
    if skip.dim() == 2:
        through = G @ skip.T.to(G.dtype)
    else:
        through = torch.einsum("npe,pde->npd", G, skip[:P].to(G.dtype))
    return G + through * gain


def back_attention(model, fz: Frozen, layer: int, G: Tensor) -> Tensor:
    """G (n, P, d) on the residual after block `layer`'s attention -> before it: the
    residual path plus every head's OV circuit under the frozen pattern and norm."""
    attn = model.blocks[layer].attn
    n, P, d = G.shape
    H, D, kv = attn.n_heads, attn.d_head, attn.n_kv
    dz = (G @ attn.W_O.weight.to(G.dtype)).view(n, P, H, D)  # d logit / d z
    A = fz.patterns[layer][:, :P, :P].to(G.dtype)  # (H, P, P) query p, key q
    dv = torch.einsum("hpq,nphd->nqhd", A, dz)  # (n, P, H, D)
    if kv != H:  # grouped-query: each key/value head serves H / kv query heads
        dv = dv.view(n, P, kv, H // kv, D).sum(3)
    dx = dv.reshape(n, P, kv * D) @ attn.W_V.weight.to(G.dtype)  # (n, P, d)
    gain = model.blocks[layer].ln1.w * fz.ln1[layer][:P, None]
    return G + dx * gain


def ffn_input_covector(model, fz: Frozen, layer: int, read: Tensor, pos: Tensor) -> Tensor:
    """The FFN inputs' read vectors (n, d) at positions pos (n,) as covectors on the
    block's middle residual: read . ln2(mid) = (read * w * scale) . mid."""
    return read * model.blocks[layer].ln2.w * fz.ln2[layer][pos, None]


def logit_covector(model, fz: Frozen, direction: Tensor, pos: int) -> Tensor:
    """The unembedding direction (d,) (a row of W_U, or a difference of rows) as a
    covector on the final residual at pos: direction . ln_final(resid)."""
    return direction * model.ln_final.w * fz.ln_final[pos]
