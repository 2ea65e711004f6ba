"""Model configuration: typed dataclass schemas checked by omegaconf.

Every field is a YAML key under `model:` in a run config. The feed-forward slot of
each block is an `FFNConfig` (archs/ffn.py); `ffn_by_layer` overrides it for single
layers, so a model can mix kinds (dense below, experts above, ...). Each FFN kind
brings its own section of FFNConfig (`ffn.moe`, `ffn.transcoder`) and checks it
itself; importing the kinds here registers them before any config is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig, OmegaConf

# Importing the built-in FFN kinds registers them and their config sections (a new
# kind in archs/ is one more import here).
from glassbox.archs.dense import DenseMLP
from glassbox.archs.errors import ConfigError, check_positive
from glassbox.archs.ffn import FFNConfig, validate_ffn_config
from glassbox.archs.moe import MoE, MoEConfig
from glassbox.archs.transcoder import Transcoder, TranscoderConfig
from glassbox.archs.weight_sparsity import WeightSparsityConfig, check_weight_sparsity_config

__all__ = [
    "ConfigError",
    "DenseMLP",
    "FFNConfig",
    "ModelConfig",
    "MoE",
    "MoEConfig",
    "Transcoder",
    "TranscoderConfig",
    "WeightSparsityConfig",
    "model_config_from_dict",
    "validate_ffn_config",
    "validate_model_config",
]


@dataclass
class ModelConfig:
    vocab_size: int = 0  # 0: taken from the data's tokenizer when training
    d_model: int = 128  # residual stream width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # query heads; d_head = d_model / n_heads
    n_kv_heads: Optional[int] = None  # key/value heads (grouped-query); None = n_heads
    max_seq_len: int = 256  # longest sequence (rotary table, KV cache)
    rope_theta: float = 10000.0  # rotary base
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = False  # share W_E and W_U
    init_std: float = 0.02  # normal init of weights
    ffn: FFNConfig = field(default_factory=FFNConfig)
    # Per-layer overrides, keyed by layer index as a string: {"1": {kind: moe}}.
    ffn_by_layer: dict[str, FFNConfig] = field(default_factory=dict)
    # Weight-sparse training (Gao et al. 2025): top-magnitude weights kept after each
    # optimizer step; archs/weight_sparsity.py. Off by default (target_density 1).
    weight_sparsity: WeightSparsityConfig = field(default_factory=WeightSparsityConfig)
    pad_token_id: int = 0  # ignored by the loss; used to left-pad batched prompts
    name: str = "glassbox"  # free-form label shown in model cards and reports

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    def ffn_for_layer(self, i: int) -> FFNConfig:
        return self.ffn_by_layer.get(str(i), self.ffn)


def validate_model_config(cfg: ModelConfig, prefix: str = "model") -> None:
    """Raise ConfigError for any impossible combination."""
    if cfg.vocab_size < 0:
        raise ConfigError(f"{prefix}.vocab_size", cfg.vocab_size, "must be >= 0")
    for key in ("d_model", "n_layers", "n_heads", "max_seq_len"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{prefix}.{key}", getattr(cfg, key), "must be a positive integer")
    for key in ("rope_theta", "norm_eps", "init_std"):
        check_positive(f"{prefix}.{key}", getattr(cfg, key))
    if cfg.pad_token_id < 0 or (cfg.vocab_size and cfg.pad_token_id >= cfg.vocab_size):
        raise ConfigError(
            f"{prefix}.pad_token_id",
            cfg.pad_token_id,
            f"must be a token id in 0..{cfg.vocab_size - 1}" if cfg.vocab_size else "must be >= 0",
        )
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(
            f"{prefix}.d_model",
            cfg.d_model,
            f"must be divisible by model.n_heads={cfg.n_heads}",
        )
    if cfg.d_head % 2:
        raise ConfigError(
            f"{prefix}.n_heads",
            cfg.n_heads,
            f"d_head=d_model/n_heads={cfg.d_head} must be even (rotary)",
        )
    if cfg.n_kv_heads is not None and (cfg.n_kv_heads <= 0 or cfg.n_heads % cfg.n_kv_heads):
        raise ConfigError(
            f"{prefix}.n_kv_heads",
            cfg.n_kv_heads,
            f"must be a positive divisor of model.n_heads={cfg.n_heads}",
        )
    for key in cfg.ffn_by_layer:
        if not key.isdigit() or int(key) >= cfg.n_layers:
            raise ConfigError(
                f"{prefix}.ffn_by_layer", key, f"keys are layer indices 0..{cfg.n_layers - 1}"
            )
    layers = [("ffn", cfg.ffn)] + [(f"ffn_by_layer.{k}", v) for k, v in cfg.ffn_by_layer.items()]
    for name, ffn in layers:
        validate_ffn_config(ffn, f"{prefix}.{name}")
    check_weight_sparsity_config(cfg.weight_sparsity, cfg.d_model, f"{prefix}.weight_sparsity")


def model_config_from_dict(d: dict | DictConfig) -> ModelConfig:
    """Build a checked ModelConfig from a plain dict (e.g. a checkpoint's config.yaml)."""
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), d)
    cfg: ModelConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate_model_config(cfg)
    return cfg
