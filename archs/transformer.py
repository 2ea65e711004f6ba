"""The backbone: a Llama-style decoder-only transformer with named hook points.

token embedding -> n_layers x [pre-norm RMSNorm, causal rotary attention, residual,
pre-norm RMSNorm, feed-forward slot, residual] -> final RMSNorm -> unembedding.

With `ffn.kind: dense, activation: swiglu` this is exactly HF transformers'
LlamaForCausalLM (same weights give the same logits; see archs/export/hf.py).

Shapes: batch B, positions T (S for keys, which include the KV cache), heads H,
key/value heads G (grouped-query), d_head D.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.archs.config import ModelConfig, validate_model_config
from glassbox.archs.ffn import FFN, build_ffn
from glassbox.archs.generation import GenerationOutput, generate
from glassbox.archs.hooks import HookedModule, HookPoint
from glassbox.archs.kv_cache import KVCache
from glassbox.archs.routing import Sequences
from glassbox.archs.weight_sparsity import ResidualTopK, add_masks, prune_to_schedule

__all__ = ["Attention", "Block", "KVCache", "RMSNorm", "Rotary", "Transformer", "segment_positions"]

# scaled_dot_product_attention(enable_gqa=...) exists from torch 2.5.
_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """x / rms(x) * w, computed in float32. Hook point `hook_normalized` is the output."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d))
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            # One reduction (the norm) instead of squaring the whole tensor first:
            # the same value to float rounding, and the cheapest form on CPU.
            ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1]
            y = x * torch.rsqrt(ms + self.eps) * self.w
        else:
            y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.w
        return self.hook_normalized(y)


class Rotary(nn.Module):
    """Rotary position embedding, half-split convention (as Llama / GPT-NeoX).

    `cos`, `sin` are the usual tables; `tables()` returns `cos` and `sin_rot`, the sine
    with its first half negated, which `apply` pairs with the two halves of each head
    swapped (a roll): rotate_half(x) * sin == roll(x, D/2) * sin_rot, with one copy
    and no negation of activations.
    """

    def __init__(self, d_head: int, max_seq_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))
        t = torch.arange(max_seq_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (max_seq_len, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (max_seq_len, D)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        sign = torch.cat([-torch.ones(d_head // 2), torch.ones(d_head // 2)])
        self.register_buffer("sin_rot", emb.sin() * sign, persistent=False)
        self.max_seq_len = max_seq_len

    def tables(
        self, positions: Tensor | None, T: int, bounded: bool = False
    ) -> tuple[Tensor, Tensor]:
        """cos, sin_rot broadcastable to (B, T, H, D): (1, T, 1, D) or (B, T, 1, D).
        bounded: the caller knows every position is < T (nothing read back from the
        device to check them: no sync, no graph break under torch.compile)."""
        if positions is None:
            if T > self.max_seq_len:
                raise ValueError(
                    f"sequence of {T} tokens is longer than model.max_seq_len={self.max_seq_len}"
                )
            return self.cos[:T, None], self.sin_rot[:T, None]
        if not (bounded and T <= self.max_seq_len) and int(positions.max()) >= self.max_seq_len:
            raise ValueError(
                f"position {int(positions.max())} is past model.max_seq_len={self.max_seq_len}"
            )
        return self.cos[positions][:, :, None], self.sin_rot[positions][:, :, None]

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin_rot: Tensor) -> Tensor:  # x (B, T, H, D)
        """x rotated by the tables of `tables()`: x * cos + rotate_half(x) * sin."""
        rotated = x.roll(x.shape[-1] // 2, dims=-1)  # (x2, x1)
        return (x * cos + rotated * sin_rot).to(x.dtype)


class Attention(nn.Module):
    """Causal multi-head attention (grouped-query when n_kv_heads < n_heads).

    Hook points: hook_q, hook_k, hook_v (B, T, H or G, D; before rotary),
    hook_pattern (B, H, T, S), hook_z (B, T, H, D; per-head outputs before W_O).
    The pattern is only materialised when something hooks it; otherwise the fused
    scaled_dot_product_attention kernel runs.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.W_Q = nn.Linear(cfg.d_model, self.n_heads * self.d_head, bias=False)
        self.W_K = nn.Linear(cfg.d_model, self.n_kv * self.d_head, bias=False)
        self.W_V = nn.Linear(cfg.d_model, self.n_kv * self.d_head, bias=False)
        self.W_O = nn.Linear(self.n_heads * self.d_head, cfg.d_model, bias=False)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(
        self,
        x: Tensor,  # (B, T, d_model)
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,  # (B, 1, T, S) bool, True = attend; None = plain causal
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        B, T, _ = x.shape
        q = self.hook_q(self.W_Q(x).view(B, T, self.n_heads, self.d_head))
        k = self.hook_k(self.W_K(x).view(B, T, self.n_kv, self.d_head))
        v = self.hook_v(self.W_V(x).view(B, T, self.n_kv, self.d_head))
        q = Rotary.apply(q, cos, sin).transpose(1, 2)  # (B, H, T, D)
        k = Rotary.apply(k, cos, sin).transpose(1, 2)  # (B, G, T, D)
        v = v.transpose(1, 2)
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start : start + T] = k
            cache.v[layer][:, :, start : start + T] = v
            k = cache.k[layer][:, :, : start + T]
            v = cache.v[layer][:, :, : start + T]
        # Grouped-query: SDPA reads each key/value head for its group of query heads
        # (no copies) where its fast kernels can; elsewhere the heads are repeated.
        gqa = self.n_kv != self.n_heads
        hooked = self.hook_pattern.has_hooks
        if gqa and (hooked or not _SDPA_GQA or (mask is not None and x.device.type != "cpu")):
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            gqa = False
        kw = {"enable_gqa": True} if gqa else {}
        if hooked:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)  # (B, H, T, S)
            if mask is None:
                mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(
                    k.shape[2] - T
                )
            scores = scores.masked_fill(~mask, float("-inf"))
            pattern = self.hook_pattern(scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype))
            z = pattern @ v
        elif mask is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, **kw)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)
        z = self.hook_z(z.transpose(1, 2))  # (B, T, H, D)
        return self.W_O(z.reshape(B, T, self.n_heads * self.d_head))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.ln1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = build_ffn(cfg.d_model, cfg.ffn_for_layer(layer))
        self.hook_resid_pre = HookPoint()  # (B, T, d_model)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_in = HookPoint()  # the normalised input the FFN reads
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()
        k = cfg.weight_sparsity.residual_topk  # activation-sparse residual (weight_sparsity.py)
        self.resid_topk = ResidualTopK(k) if k else nn.Identity()

    def forward(self, x, cos, sin, mask, cache, seq: Sequences | None = None):
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(
            x + self.hook_attn_out(self.attn(self.ln1(x), cos, sin, mask, cache, self.layer))
        )
        h = self.hook_mlp_in(self.ln2(x))
        if getattr(self.mlp, "reads_sequence", False):  # a router reading the prefix
            state = cache.routing[self.layer] if cache is not None else None
            h = self.mlp(h, replace(seq or Sequences(), state=state))
        else:
            h = self.mlp(h)
        x = x + self.hook_mlp_out(h)
        return self.hook_resid_post(self.resid_topk(x))


def segment_positions(segment_ids: Tensor) -> Tensor:
    """(B, T) positions that restart at 0 wherever the segment id changes (segments
    are contiguous runs of one id)."""
    B, T = segment_ids.shape
    idx = torch.arange(T, device=segment_ids.device).expand(B, T)
    first = torch.ones_like(segment_ids, dtype=torch.bool)
    first[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return idx - torch.where(first, idx, 0).cummax(-1).values


class Transformer(HookedModule):
    """A decoder-only language model. forward(tokens) -> logits (B, T, vocab).

    Hook names (docs/design.md): hook_embed; blocks.{i}.hook_resid_pre,
    attn.hook_{q,k,v,pattern,z}, hook_attn_out, hook_resid_mid, hook_mlp_in,
    hook_mlp_out, hook_resid_post, plus the FFN's own (mlp.hook_pre/hook_post for
    dense, mlp.hook_router_logits/... for moe, mlp.hook_latents/... for transcoder);
    ln_final.hook_normalized. `model.hook_names` lists them.

    Packed rows (several examples per row, for training): forward(tokens,
    segment_ids=ids) keeps attention inside each example and restarts rotary
    positions per example, so each example's logits are those it has alone.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        validate_model_config(cfg)
        if cfg.vocab_size <= 0:
            raise ValueError(
                f"config error: model.vocab_size={cfg.vocab_size}: set it (training takes it from the tokenizer)"
            )
        self.cfg = cfg
        self.W_E = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()
        self.rotary = Rotary(cfg.d_head, cfg.max_seq_len, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_final = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.W_U = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.tokenizer = None  # set by load_pretrained / training (a tokenizers.Tokenizer)
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.W_U.weight = self.W_E.weight
        if cfg.weight_sparsity.enabled:
            add_masks(self)  # which weights are kept, saved with the checkpoint
        self.setup_hooks()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; output projections scaled by 1/sqrt(2 n_layers)
        (GPT-2); norms at 1. FFN variants may re-initialise their own parameters."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            scale = (
                1 / math.sqrt(2 * self.cfg.n_layers)
                if name.endswith(("W_O.weight", "W_out.weight"))
                else 1.0
            )
            nn.init.normal_(p, std=std * scale)
        for m in self.modules():
            if (
                m is not self
                and hasattr(m, "reset_parameters")
                and not isinstance(m, nn.Linear | nn.Embedding | RMSNorm)
            ):
                m.reset_parameters()

    @property
    def device(self) -> torch.device:
        return self.W_E.weight.device

    def forward(
        self,
        tokens: Tensor,  # (B, T) int
        attention_mask: Tensor | None = None,  # (B, S) 1 = real token, 0 = left padding
        positions: Tensor | None = None,  # (B, T) rotary positions; default from the mask
        cache: KVCache | None = None,
        segment_ids: Tensor | None = None,  # (B, T) packed rows: example index of each token
    ) -> Tensor:
        B, T = tokens.shape
        S = T + (cache.length if cache is not None else 0)
        mask, bounded = None, False
        if segment_ids is not None:
            # Packed rows (training): attention stays inside each example, rotary
            # positions restart at each example's first token.
            if attention_mask is not None or cache is not None:
                raise ValueError("segment_ids (packed rows) takes no attention_mask or cache")
            mask = self._segment_mask(segment_ids)
            if positions is None:
                positions, bounded = segment_positions(segment_ids), True
        elif attention_mask is not None or cache is not None:
            mask = self._mask(attention_mask, B, T, S, tokens.device)
            if positions is None and attention_mask is not None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, S - T :]
            elif positions is None:
                positions = torch.arange(S - T, S, device=tokens.device).expand(B, T)
        cos, sin = self.rotary.tables(positions, T, bounded)
        # which tokens form one sequence, for a router that reads a token's prefix
        valid = attention_mask[:, S - T : S].bool() if attention_mask is not None else None
        seq = Sequences(segment_ids=segment_ids, valid=valid)
        x = self.hook_embed(self.W_E(tokens))  # (B, T, d_model)
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache, seq)
        if cache is not None:
            cache.length += T
        return self.W_U(self.ln_final(x))  # (B, T, vocab)

    @staticmethod
    def _mask(attention_mask: Tensor | None, B: int, T: int, S: int, device) -> Tensor:
        """(B, 1, T, S) bool: causal, minus padded keys; every query sees itself so
        that rows of padding never softmax over nothing."""
        q_pos = torch.arange(S - T, S, device=device)[:, None]
        k_pos = torch.arange(S, device=device)[None, :]
        causal = k_pos <= q_pos  # (T, S)
        if attention_mask is None:
            return causal[None, None].expand(B, 1, T, S)
        keep = causal[None] & attention_mask[:, None, :S].bool()  # (B, T, S)
        keep |= k_pos == q_pos
        return keep[:, None]

    @staticmethod
    def _segment_mask(segment_ids: Tensor) -> Tensor:
        """(B, 1, T, T) bool: block-diagonal causal, a query sees the earlier tokens of
        its own segment (and itself)."""
        T = segment_ids.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
        same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T)
        return (same & causal)[:, None]

    def aux_losses(self) -> dict[str, Tensor]:
        """Auxiliary losses of the latest forward pass, weighted, summed over layers:
        {'aux/<name>': loss}. Empty for a dense model, and after a pass in eval mode
        (FFN kinds report them in training mode only)."""
        out: dict[str, Tensor] = {}
        for block in self.blocks:
            for name, (weight, loss) in block.mlp.aux_losses.items():
                if weight:
                    key = f"aux/{name}"
                    out[key] = out.get(key, 0.0) + weight * loss
        return out

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """The constraints kept after each optimizer step (`step` of `total_steps`
        done): weight sparsity prunes to its scheduled density (archs/weight_sparsity.py),
        then every FFN keeps its own (unit-norm transcoder decoders; zeros stay zero)."""
        prune_to_schedule(self, step, total_steps)
        for module in self.modules():
            if isinstance(module, FFN):
                module.after_optimizer_step()

    def num_params(self, active: bool = False) -> int:
        """Parameter count (tied weights once). active=True counts what one token
        uses: for MoE layers only k of the experts (the FFN reports it)."""
        total = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if not active:
            return total
        for block in self.blocks:
            total -= block.mlp.inactive_params()
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x active non-embedding parameters plus the
        attention scores (Kaplan et al. / PaLM appendix B)."""
        n = self.num_params(active=True) - self.W_E.weight.numel()
        attn = 12 * self.cfg.n_layers * self.cfg.d_model * seq_len
        return 6 * n + attn

    @torch.no_grad()
    def generate(self, tokens, **kwargs) -> GenerationOutput:
        """Sample a continuation with a KV cache; see archs.generation.generate."""
        return generate(self, tokens, **kwargs)
