"""glassbox Transformer -> TransformerLens.

TransformerLens 4 removed `HookedTransformer`; its model class is `TransformerBridge`,
which wraps an HF model and gives it TL's hook points, `run_with_cache`, `hooks` and
`to_tokens`. Since the dense baseline is exactly an HF Llama (archs/export/hf.py),
the export is: our weights -> LlamaForCausalLM (eager attention, so that the bridge
can hook attention patterns) -> TransformerBridge with TL's Llama adapter. Logits
equal ours (tests/test_transformer_lens_export.py checks 1e-4).

The bridge runs the raw weights, as `boot_transformers` does: call
`bridge.enable_compatibility_mode()` for HookedTransformer's folded-LayerNorm
numerics (logits stay, intermediate activations then differ from ours).

Hook names: most are the same in both; the norms differ. TL's `ln*.hook_normalized`
is x / rms(x) *before* the norm's weight; ours is the norm's output, after the weight,
which TL calls `ln*.hook_out`. So our `blocks.{i}.hook_mlp_in` (the normalised input
the FFN reads) is TL's `blocks.{i}.ln2.hook_out` (== `blocks.{i}.mlp.hook_in`); it
is TL's `ln2.hook_normalized` only where the norm weight is all ones, and never TL's
own `blocks.{i}.hook_mlp_in`, which sits before ln2. `TL_HOOK_NAMES` is the table.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from glassbox.archs.export.errors import llama_ffn, require
from glassbox.archs.export.hf import (
    checkpoint_inputs,
    hf_tokenizer,
    model_to_export,
    to_hf_llama,
    write_hf,
)
from glassbox.archs.transformer import Transformer

TARGET = "transformer-lens"

# ours -> TransformerLens (TransformerBridge), per layer {i}. Every hook point of a
# dense glassbox model is here; the activations are equal (same shapes).
TL_HOOK_NAMES: dict[str, str] = {
    "hook_embed": "hook_embed",
    "blocks.{i}.hook_resid_pre": "blocks.{i}.hook_resid_pre",
    "blocks.{i}.ln1.hook_normalized": "blocks.{i}.ln1.hook_out",
    "blocks.{i}.attn.hook_q": "blocks.{i}.attn.hook_q",  # (B, T, H, D), before rotary
    "blocks.{i}.attn.hook_k": "blocks.{i}.attn.hook_k",  # (B, T, G, D), before rotary
    "blocks.{i}.attn.hook_v": "blocks.{i}.attn.hook_v",  # (B, T, G, D)
    "blocks.{i}.attn.hook_pattern": "blocks.{i}.attn.hook_pattern",  # (B, H, T, S)
    "blocks.{i}.attn.hook_z": "blocks.{i}.attn.hook_z",  # (B, T, H, D)
    "blocks.{i}.hook_attn_out": "blocks.{i}.hook_attn_out",
    "blocks.{i}.hook_resid_mid": "blocks.{i}.hook_resid_mid",
    "blocks.{i}.ln2.hook_normalized": "blocks.{i}.ln2.hook_out",
    "blocks.{i}.hook_mlp_in": "blocks.{i}.ln2.hook_out",
    "blocks.{i}.mlp.hook_pre": "blocks.{i}.mlp.hook_pre",  # the gate, before silu
    "blocks.{i}.mlp.hook_post": "blocks.{i}.mlp.hook_post",  # silu(gate) * up
    "blocks.{i}.hook_mlp_out": "blocks.{i}.hook_mlp_out",
    "blocks.{i}.hook_resid_post": "blocks.{i}.hook_resid_post",
    "ln_final.hook_normalized": "ln_final.hook_out",
}

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def tl_hook_name(name: str) -> str:
    """The TransformerLens hook name of one of our hook names:
    'blocks.3.hook_mlp_in' -> 'blocks.3.ln2.hook_out'. KeyError for a name with no
    TL counterpart (the hook points of MoE and transcoder FFNs)."""
    m = _LAYER.match(name)
    pattern = _LAYER.sub("blocks.{i}.", name) if m else name
    if pattern not in TL_HOOK_NAMES:
        raise KeyError(
            f"{name!r} has no TransformerLens counterpart; mapped: {list(TL_HOOK_NAMES)}"
        )
    return TL_HOOK_NAMES[pattern].format(i=m.group(1)) if m else TL_HOOK_NAMES[pattern]


def to_transformer_lens(model: Transformer):
    """glassbox Transformer (dense SwiGLU) -> transformer_lens.TransformerBridge, in
    eval mode, with copies of its weights; its tokenizer (when the model has one)
    becomes the bridge's, so `bridge.to_tokens(text)` works.

    Raises ExportError for a model that is not a dense SwiGLU Llama, and
    ModuleNotFoundError when transformer-lens (>= 4) or transformers is missing.
    """
    llama_ffn(model.cfg, TARGET)
    require("transformer_lens", TARGET)
    try:
        from transformer_lens.model_bridge.sources import build_bridge_from_module
    except ImportError as e:
        raise ModuleNotFoundError(
            "export to transformer-lens needs transformer-lens >= 4 (TransformerBridge): "
            "pip install -U transformer-lens"
        ) from e
    transformers = require("transformers", TARGET)
    hf = to_hf_llama(model, attn_implementation="eager")
    tokenizer = hf_tokenizer(model)
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer is not None:
            # TL re-loads a tokenizer from its name_or_path (to switch on BOS), so
            # hand it one that was loaded from a directory.
            tokenizer.save_pretrained(tmp)
            tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
        bridge = build_bridge_from_module(
            hf,
            "LlamaForCausalLM",
            hf_config=hf.config,
            tokenizer=tokenizer,
            model_name=model.cfg.name,
        )
    return bridge.eval()


def export_transformer_lens(
    model_or_checkpoint: Transformer | str | os.PathLike,
    out_dir: str | os.PathLike,
    force: bool = False,
) -> Path:
    """Write a directory that TransformerLens loads offline:
    `TransformerBridge.boot_transformers(out_dir)` (TL >= 4 boots HF directories).

    It is the HF export (archs.export.export_hf: config.json, model.safetensors,
    tokenizer files), checked first against what the TL export supports, written
    where export_hf writes (force as there). Returns out_dir as a Path; ExportError
    for a model that is not a dense SwiGLU Llama.
    """
    model = model_to_export(model_or_checkpoint, out_dir, force)
    llama_ffn(model.cfg, TARGET)
    return write_hf(model, out_dir, checkpoint_inputs(model_or_checkpoint), force)
