"""glassbox models: one backbone with pluggable feed-forward slots and named hook points,
their configs, checkpoints (save, load, ship), generation, symbolic tools (tools/) and
export to HF and TransformerLens (export/). Re-exported here: the model API."""

from glassbox.archs.checkpoint import (
    load_pretrained,
    push_checkpoint,
    save_pretrained,
    shipped_checkpoints,
)
from glassbox.archs.config import ConfigError, FFNConfig, ModelConfig, MoEConfig, TranscoderConfig
from glassbox.archs.errors import ArgumentError, CheckpointError, GlassboxError
from glassbox.archs.ffn import FFN, register_ffn
from glassbox.archs.hooks import ActivationCache, HookPoint
from glassbox.archs.transformer import Transformer

__all__ = [
    "ActivationCache",
    "ArgumentError",
    "CheckpointError",
    "ConfigError",
    "FFN",
    "FFNConfig",
    "GlassboxError",
    "HookPoint",
    "ModelConfig",
    "MoEConfig",
    "Transformer",
    "TranscoderConfig",
    "load_pretrained",
    "push_checkpoint",
    "register_ffn",
    "save_pretrained",
    "shipped_checkpoints",
]
