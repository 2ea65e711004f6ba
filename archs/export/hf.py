"""HF transformers' LlamaForCausalLM <-> glassbox Transformer, and `export_hf`, which
writes a dense model as a Llama and a softmax top-k MoE as a Mixtral
(archs/export/mixtral.py), choosing by the FFN kind (`to_hf`).

The dense baseline (`ffn.kind: dense, activation: swiglu`) is a Llama: the same
weights give the same logits (tests/test_hf_parity.py checks 1e-5 in float32). The
weights map one to one, with no reshaping: both split heads as (..., heads, d_head)
and rotate the two halves of each head (GPT-NeoX / Llama rotary).

| glassbox                       | LlamaForCausalLM                                   |
|--------------------------------|----------------------------------------------------|
| W_E.weight                     | model.embed_tokens.weight                          |
| blocks.{i}.ln1.w               | model.layers.{i}.input_layernorm.weight            |
| blocks.{i}.attn.W_{Q,K,V,O}    | model.layers.{i}.self_attn.{q,k,v,o}_proj          |
| blocks.{i}.ln2.w               | model.layers.{i}.post_attention_layernorm.weight   |
| blocks.{i}.mlp.W_gate / W_in   | model.layers.{i}.mlp.gate_proj / up_proj           |
| blocks.{i}.mlp.W_out           | model.layers.{i}.mlp.down_proj                     |
| ln_final.w                     | model.norm.weight                                  |
| W_U.weight                     | lm_head.weight                                     |
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from glassbox.archs.checkpoint import load_pretrained, resolve_checkpoint, shipped_dir
from glassbox.archs.config import FFNConfig, ModelConfig
from glassbox.archs.export.backbone import attention_map, decoder_config_kwargs, special_token_ids
from glassbox.archs.export.errors import ExportError, llama_ffn, require
from glassbox.archs.export.mixtral import mixtral_ffn, to_hf_mixtral
from glassbox.archs.transformer import Transformer
from glassbox.archs.writes import Output, claim_output_dir, write_output_dir

TARGET = "hf"


def _layer_map(i: int, bias: bool) -> list[tuple[str, str]]:
    pairs = attention_map(i)
    ours, hf = f"blocks.{i}.", f"model.layers.{i}."
    for a, b in (("W_gate", "gate_proj"), ("W_in", "up_proj"), ("W_out", "down_proj")):
        pairs.append((f"{ours}mlp.{a}.weight", f"{hf}mlp.{b}.weight"))
        if bias:
            pairs.append((f"{ours}mlp.{a}.bias", f"{hf}mlp.{b}.bias"))
    return pairs


def name_map(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(glassbox parameter name, LlamaForCausalLM parameter name) for every weight.
    With tied embeddings W_U.weight is W_E.weight and lm_head follows embed_tokens."""
    bias = llama_ffn(cfg, TARGET).bias
    pairs = [("W_E.weight", "model.embed_tokens.weight")]
    for i in range(cfg.n_layers):
        pairs += _layer_map(i, bias)
    pairs.append(("ln_final.w", "model.norm.weight"))
    if not cfg.tie_embeddings:
        pairs.append(("W_U.weight", "lm_head.weight"))
    return pairs


def hf_llama_config(model, attn_implementation: str = "sdpa"):
    """A transformers.LlamaConfig describing `model` (a dense glassbox Transformer).

    Raises ExportError when some layer is not a dense SwiGLU MLP.
    """
    transformers = require("transformers", TARGET)
    cfg: ModelConfig = model.cfg
    ffn = llama_ffn(cfg, TARGET)
    config = transformers.LlamaConfig(
        **decoder_config_kwargs(model),
        intermediate_size=ffn.d_ff,
        attention_bias=False,
        mlp_bias=ffn.bias,
    )
    config._attn_implementation = attn_implementation
    return config


@torch.no_grad()
def to_hf_llama(model: Transformer, attn_implementation: str = "sdpa"):
    """glassbox Transformer -> transformers.LlamaForCausalLM with copies of its
    weights, in eval mode, on the model's device and dtype.

    attn_implementation: HF's attention kernel ("sdpa", "eager", ...).
    Raises ExportError for a model that is not a dense SwiGLU Llama.
    """
    transformers = require("transformers", TARGET)
    config = hf_llama_config(model, attn_implementation)
    param = next(model.parameters())
    hf = transformers.LlamaForCausalLM(config).to(device=param.device, dtype=param.dtype)
    ours = model.state_dict()
    theirs = hf.state_dict()
    for a, b in name_map(model.cfg):
        theirs[b].copy_(ours[a])
    return hf.eval()


def _glassbox_config(hf_config) -> ModelConfig:
    """ModelConfig of a LlamaConfig, or ExportError for what our backbone lacks."""
    c = hf_config
    target = "glassbox (from hf)"
    if getattr(c, "model_type", "llama") != "llama":
        raise ExportError(target, "model_type", c.model_type, "only 'llama' can be imported")
    if c.hidden_act != "silu":
        raise ExportError(target, "hidden_act", c.hidden_act, "only 'silu' (SwiGLU) is supported")
    if c.attention_bias:
        raise ExportError(
            target, "attention_bias", True, "glassbox attention has no biases; only False"
        )
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if head_dim * c.num_attention_heads != c.hidden_size:
        raise ExportError(
            target,
            "head_dim",
            head_dim,
            f"must be hidden_size/num_attention_heads={c.hidden_size // c.num_attention_heads}",
        )
    rope = dict(getattr(c, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ExportError(
            target,
            "rope_parameters.rope_type",
            rope.get("rope_type"),
            "only 'default' rotary (no scaling) is supported",
        )
    if (getattr(c, "pretraining_tp", 1) or 1) != 1:
        raise ExportError(target, "pretraining_tp", c.pretraining_tp, "only 1 is supported")
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    kv = c.num_key_value_heads or c.num_attention_heads
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_kv_heads=None if kv == c.num_attention_heads else kv,
        max_seq_len=c.max_position_embeddings,
        rope_theta=float(theta),
        norm_eps=c.rms_norm_eps,
        tie_embeddings=bool(c.tie_word_embeddings),
        init_std=c.initializer_range,
        ffn=FFNConfig(
            kind="dense", activation="swiglu", d_ff=c.intermediate_size, bias=bool(c.mlp_bias)
        ),
        pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0,
        name=getattr(c, "_name_or_path", "") or "llama",
    )


@torch.no_grad()
def from_hf_llama(hf_model) -> Transformer:
    """transformers.LlamaForCausalLM (or a directory it loads from) -> glassbox
    Transformer with copies of its weights, in eval mode, on its device and dtype.

    Raises ExportError for Llama variants our backbone does not have (attention
    biases, scaled rotary, another activation).
    """
    if isinstance(hf_model, str | os.PathLike):
        transformers = require("transformers", TARGET)
        hf_model = transformers.LlamaForCausalLM.from_pretrained(hf_model)
    cfg = _glassbox_config(hf_model.config)
    param = next(hf_model.parameters())
    model = Transformer(cfg).to(device=param.device, dtype=param.dtype)
    ours = model.state_dict()
    theirs = hf_model.state_dict()
    for a, b in name_map(cfg):
        ours[a].copy_(theirs[b])
    return model.eval()


def hf_tokenizer(model):
    """transformers.PreTrainedTokenizerFast wrapping model.tokenizer (a
    tokenizers.Tokenizer), with the special tokens the model knows; None when the
    model has no tokenizer. Pads on the left, as glassbox generation does."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    transformers = require("transformers", TARGET)
    ids = special_token_ids(model)
    special = {f"{k}_token": tok.id_to_token(i) for k, i in ids.items() if i is not None}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        padding_side="left",
        model_max_length=model.cfg.max_seq_len,
        **special,
    )


def to_hf(model: Transformer, attn_implementation: str = "sdpa"):
    """The HF model of `model`, by its FFN kind: dense -> LlamaForCausalLM (to_hf_llama),
    moe -> MixtralForCausalLM (archs.export.mixtral.to_hf_mixtral). ExportError (one
    line, the key at fault) for another kind or a model the target cannot hold,
    before any weight is copied."""
    cfg: ModelConfig = model.cfg
    kind = cfg.ffn_for_layer(0).kind
    if kind == "moe":
        mixtral_ffn(cfg, TARGET)
        return to_hf_mixtral(model, attn_implementation)
    if kind != "dense":
        key = "model.ffn_by_layer.0" if "0" in cfg.ffn_by_layer else "model.ffn"
        raise ExportError(
            TARGET,
            f"{key}.kind",
            kind,
            "only 'dense' (as LlamaForCausalLM) and softmax top-k 'moe' (as "
            "MixtralForCausalLM) have an HF model (save it as a glassbox checkpoint instead)",
        )
    llama_ffn(cfg, TARGET)
    return to_hf_llama(model, attn_implementation)


EXPORT = Output("glassbox export")  # what an HF (or TransformerLens) export folder says


def export_hf(
    model_or_checkpoint: Transformer | str | os.PathLike,
    out_dir: str | os.PathLike,
    attn_implementation: str = "sdpa",
    force: bool = False,
) -> Path:
    """Write a directory that `AutoModelForCausalLM.from_pretrained` loads (a
    LlamaForCausalLM for a dense model, a MixtralForCausalLM for a softmax top-k MoE:
    `to_hf`): config.json, model.safetensors, generation_config.json, and the
    tokenizer files when the model has a tokenizer (so `AutoTokenizer.from_pretrained`
    works too).

    model_or_checkpoint: a Transformer, or a glassbox checkpoint directory / hub id /
    shipped name. The directory appears at `out_dir` complete or not at all (written
    beside it, then renamed); it must be new, empty or an earlier export, never the
    checkpoint itself or inside the shipped checkpoints (archs.writes: OutputError,
    one line); force writes into a folder of other files, keeping them. Returns
    out_dir as a Path. Raises ExportError for a model that neither target can hold,
    before anything is written.
    """
    model = model_to_export(model_or_checkpoint, out_dir, force)
    return write_hf(
        model, out_dir, checkpoint_inputs(model_or_checkpoint), force, attn_implementation
    )


def write_hf(
    model: Transformer, out_dir, inputs: list[Path], force: bool, attn_implementation: str = "sdpa"
) -> Path:
    """export_hf's writing half: `model` as an HF directory at out_dir, which must not
    be (or hold) one of `inputs`."""
    hf = to_hf(model, attn_implementation)
    tokenizer = hf_tokenizer(model)

    def write(tmp: Path) -> None:
        hf.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return write_output_dir(out_dir, write, EXPORT, inputs, [shipped_dir()], force)


def checkpoint_inputs(model_or_checkpoint) -> list[Path]:
    if isinstance(model_or_checkpoint, str | os.PathLike):
        return [resolve_checkpoint(model_or_checkpoint)]
    return []


def model_to_export(model_or_checkpoint, out_dir, force: bool) -> Transformer:
    """The model to export, loaded when a checkpoint is named, once out_dir is known
    to be a place the export may write (a refusal costs no load)."""
    claim_output_dir(
        out_dir, EXPORT, checkpoint_inputs(model_or_checkpoint), [shipped_dir()], force
    )
    if isinstance(model_or_checkpoint, str | os.PathLike):
        return load_pretrained(model_or_checkpoint)
    return model_or_checkpoint
