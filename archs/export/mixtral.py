"""glassbox Transformer with softmax top-k MoE layers -> HF transformers'
MixtralForCausalLM.

The `moe` kind with a softmax router, SwiGLU experts, renormalised top-k gate weights
and no shared experts is Mixtral's sparse block: router logits W_router x, softmax,
top-k, the k weights divided by their sum, each chosen expert silu(x W_gate) * (x
W_in) @ W_out, the weighted sum (tests/test_mixtral_export.py checks logits within
1e-4 in float32 and greedy generation equal). The rest of the model is the Llama
backbone (archs/export/hf.py: same attention, norms and rotary).

| glassbox                               | MixtralForCausalLM                            |
|----------------------------------------|-----------------------------------------------|
| blocks.{i}.mlp.W_router.weight (E, d)  | model.layers.{i}.mlp.gate.weight (E, d)       |
| blocks.{i}.mlp.W_gate / W_in .weight   | model.layers.{i}.mlp.experts.gate_up_proj     |
|   each (E, d, d_expert)                |   (E, 2 d_expert, d): [gate; up], transposed  |
| blocks.{i}.mlp.W_out.weight            | model.layers.{i}.mlp.experts.down_proj        |
|   (E, d_expert, d)                     |   (E, d, d_expert), transposed                |
| everything else                        | as the Llama export                           |

What Mixtral cannot hold is refused before anything is built (ExportError, one line
naming the key): a relu router, GELU/ReLU experts, shared experts, unnormalised gate
weights, a layer of another kind or another expert shape, a residual TopK. Mixtral's
`router_jitter_noise` is 0 and `output_router_logits` False (neither exists here at
inference); `router_aux_loss_coef` takes `moe.load_balance_weight` (training only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassbox.archs.config import FFNConfig, ModelConfig
from glassbox.archs.export.backbone import attention_map, decoder_config_kwargs
from glassbox.archs.export.errors import ExportError, check_no_residual_topk, require
from glassbox.archs.transformer import Transformer

TARGET = "hf"


def mixtral_ffn(cfg: ModelConfig, target: str = TARGET) -> FFNConfig:
    """The one MoE config every layer uses, or ExportError naming the first key that
    a Mixtral cannot hold."""
    check_no_residual_topk(cfg, target, "a Mixtral")
    first = cfg.ffn_for_layer(0)
    for i in range(cfg.n_layers):
        ffn = cfg.ffn_for_layer(i)
        key = f"model.ffn_by_layer.{i}" if str(i) in cfg.ffn_by_layer else "model.ffn"
        if ffn.kind != "moe":
            raise ExportError(
                target,
                f"{key}.kind",
                ffn.kind,
                "a Mixtral has an MoE block in every layer: every layer must be 'moe' "
                "(a model of dense layers exports as a Llama)",
            )
        m = ffn.moe
        wants = [
            ("router", "softmax", "Mixtral routes by softmax top-k (the relu router has no HF form)"),
            ("expert_activation", "swiglu", "Mixtral experts are silu(gate) * up"),
            ("n_shared_experts", 0, "Mixtral has no shared (always-on) experts"),
            ("normalize_weights", True, "Mixtral renormalises the top-k gate weights to sum to 1"),
        ]  # fmt: skip
        for name, value, why in wants:
            if getattr(m, name) != value:
                raise ExportError(target, f"{key}.moe.{name}", getattr(m, name), why)
        for name in ("n_experts", "k", "d_expert"):
            if getattr(m, name) != getattr(first.moe, name):
                raise ExportError(
                    target,
                    f"{key}.moe.{name}",
                    getattr(m, name),
                    f"every layer must have the same {name} (layer 0 has "
                    f"{getattr(first.moe, name)}): a Mixtral has one expert shape",
                )
    return first


def hf_mixtral_config(model, attn_implementation: str = "sdpa"):
    """A transformers.MixtralConfig describing `model` (every layer a softmax top-k
    SwiGLU MoE). Raises ExportError for what a Mixtral cannot hold."""
    transformers = require("transformers", TARGET)
    cfg: ModelConfig = model.cfg
    m = mixtral_ffn(cfg).moe
    config = transformers.MixtralConfig(
        **decoder_config_kwargs(model),
        intermediate_size=m.d_expert,
        sliding_window=None,
        num_local_experts=m.n_experts,
        num_experts_per_tok=m.k,
        output_router_logits=False,
        router_aux_loss_coef=float(m.load_balance_weight),
        router_jitter_noise=0.0,
    )
    config._attn_implementation = attn_implementation
    return config


def name_map(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(glassbox name, MixtralForCausalLM name) of every weight that maps one to one
    (the attention, norms, embeddings and router); the experts are stacked and
    transposed by `to_hf_mixtral`."""
    mixtral_ffn(cfg)
    pairs = [("W_E.weight", "model.embed_tokens.weight")]
    for i in range(cfg.n_layers):
        pairs += attention_map(i)
        pairs.append((f"blocks.{i}.mlp.W_router.weight", f"model.layers.{i}.mlp.gate.weight"))
    pairs.append(("ln_final.w", "model.norm.weight"))
    if not cfg.tie_embeddings:
        pairs.append(("W_U.weight", "lm_head.weight"))
    return pairs


def mixtral_experts(w_gate: Tensor, w_in: Tensor, w_out: Tensor) -> tuple[Tensor, Tensor]:
    """Our experts' weights W_gate, W_in (E, d, d_expert) and W_out (E, d_expert, d) as
    Mixtral's `experts.gate_up_proj` (E, 2 d_expert, d: [gate; up]) and
    `experts.down_proj` (E, d, d_expert)."""
    return torch.cat([w_gate, w_in], dim=-1).transpose(1, 2), w_out.transpose(1, 2)


@torch.no_grad()
def to_hf_mixtral(model: Transformer, attn_implementation: str = "sdpa"):
    """glassbox Transformer (softmax top-k SwiGLU MoE in every layer) ->
    transformers.MixtralForCausalLM with copies of its weights, in eval mode, on the
    model's device and dtype. Raises ExportError for what a Mixtral cannot hold."""
    transformers = require("transformers", TARGET)
    config = hf_mixtral_config(model, attn_implementation)
    param = next(model.parameters())
    hf = transformers.MixtralForCausalLM(config).to(device=param.device, dtype=param.dtype)
    ours, theirs = model.state_dict(), hf.state_dict()
    for a, b in name_map(model.cfg):
        theirs[b].copy_(ours[a])
    for i in range(model.cfg.n_layers):
        mlp, hf_experts = f"blocks.{i}.mlp.", f"model.layers.{i}.mlp.experts."
        gate_up, down = mixtral_experts(
            ours[mlp + "W_gate.weight"], ours[mlp + "W_in.weight"], ours[mlp + "W_out.weight"]
        )
        theirs[hf_experts + "gate_up_proj"].copy_(gate_up)
        theirs[hf_experts + "down_proj"].copy_(down)
    return hf.eval()
