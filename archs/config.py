"""Model configuration: typed dataclass schemas checked by omegaconf.

Every field is a YAML key under `model:` in a run config. The feed-forward slot of
each block is an `FFNConfig`; `ffn_by_layer` overrides it for single layers, so a
model can mix kinds (dense below, experts above, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work. The message is one line naming the key,
    the value given and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config error: {key}={value!r}: {allowed}")


@dataclass
class MoEConfig:
    n_experts: int = 16  # routed experts per layer (fine-grained: 16 to 128)
    k: int = 2  # experts per token (top-k); every token gets exactly k (dropless)
    d_expert: int = 64  # hidden width of one expert
    router: str = "softmax"  # softmax (Switch/Mixtral top-k) | relu (MoE-X style: ReLU gates, sparsity-aware choice)
    expert_activation: str = "swiglu"  # swiglu | gelu | relu (MoE-X uses relu experts)
    n_shared_experts: int = 0  # always-on shared experts of width d_expert each (DeepSeekMoE)
    normalize_weights: bool = True  # renormalise the top-k gate weights to sum to 1
    load_balance_weight: float = 0.01  # Switch load-balancing loss weight (1.0 = balanced)
    z_loss_weight: float = 0.001  # router z-loss weight (ST-MoE)
    sparsity_weight: float = 0.0  # relu router: weight of the L1 penalty on ReLU(router logits)


@dataclass
class TranscoderConfig:
    d_latent: int = 1024  # width of the sparse bottleneck
    activation: str = "topk"  # topk | batchtopk | jumprelu
    k: int = 16  # active latents per token (topk; batchtopk: the mean over a batch)
    skip: bool = False  # add a linear skip W_skip (skip transcoder)
    normalize_decoder: bool = True  # keep W_dec rows at unit norm (call normalize_decoder())
    batchtopk_threshold_lr: float = 0.01  # batchtopk: rate of the running-average eval threshold
    jumprelu_init_threshold: float = 0.001  # initial JumpReLU threshold
    jumprelu_bandwidth: float = 0.001  # width of JumpReLU's straight-through rectangle kernel
    l0_weight: float = 0.0  # JumpReLU L0 penalty weight (needs > 0 to become sparse)
    aux_k: int = 256  # AuxK: dead latents used to model the residual error
    aux_k_weight: float = 1 / 32  # AuxK loss weight (0 disables)
    dead_after_tokens: int = 10_000_000  # a latent silent this many tokens counts as dead


@dataclass
class FFNConfig:
    kind: str = "dense"  # dense | moe | transcoder
    activation: str = "swiglu"  # dense MLP: swiglu (Llama) | gelu
    d_ff: int = 512  # dense MLP hidden width
    bias: bool = False  # biases in the dense MLP (Llama has none)
    moe: MoEConfig = field(default_factory=MoEConfig)
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig)


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


FFN_KINDS = ("dense", "moe", "transcoder")


def validate_model_config(cfg: ModelConfig, prefix: str = "model") -> None:
    """Raise ConfigError for any impossible combination."""
    if cfg.vocab_size < 0:
        raise ConfigError(f"{prefix}.vocab_size", cfg.vocab_size, "must be >= 0")
    for key in ("d_model", "n_layers", "n_heads", "max_seq_len"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{prefix}.{key}", getattr(cfg, key), "must be a positive integer")
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


def validate_ffn_config(ffn: FFNConfig, prefix: str) -> None:
    if ffn.kind not in FFN_KINDS:
        raise ConfigError(f"{prefix}.kind", ffn.kind, f"one of {', '.join(FFN_KINDS)}")
    if ffn.kind == "dense":
        if ffn.activation not in ("swiglu", "gelu"):
            raise ConfigError(f"{prefix}.activation", ffn.activation, "one of swiglu, gelu")
        if ffn.d_ff <= 0:
            raise ConfigError(f"{prefix}.d_ff", ffn.d_ff, "must be a positive integer")
    if ffn.kind == "moe":
        m = ffn.moe
        p = f"{prefix}.moe"
        if m.n_experts <= 0:
            raise ConfigError(f"{p}.n_experts", m.n_experts, "must be a positive integer")
        if not 1 <= m.k <= m.n_experts:
            raise ConfigError(f"{p}.k", m.k, f"must be between 1 and moe.n_experts={m.n_experts}")
        if m.router not in ("softmax", "relu"):
            raise ConfigError(f"{p}.router", m.router, "one of softmax, relu")
        if m.expert_activation not in ("swiglu", "gelu", "relu"):
            raise ConfigError(
                f"{p}.expert_activation", m.expert_activation, "one of swiglu, gelu, relu"
            )
        if m.d_expert <= 0:
            raise ConfigError(f"{p}.d_expert", m.d_expert, "must be a positive integer")
        if m.n_shared_experts < 0:
            raise ConfigError(f"{p}.n_shared_experts", m.n_shared_experts, "must be >= 0")
        for key in ("load_balance_weight", "z_loss_weight", "sparsity_weight"):
            if not getattr(m, key) >= 0:
                raise ConfigError(f"{p}.{key}", getattr(m, key), "must be >= 0 (0 disables)")
        if m.sparsity_weight > 0 and m.router != "relu":
            raise ConfigError(
                f"{p}.sparsity_weight", m.sparsity_weight, "only applies to moe.router=relu; set 0"
            )
    if ffn.kind == "transcoder":
        t = ffn.transcoder
        p = f"{prefix}.transcoder"
        if t.activation not in ("topk", "batchtopk", "jumprelu"):
            raise ConfigError(f"{p}.activation", t.activation, "one of topk, batchtopk, jumprelu")
        if t.d_latent <= 0:
            raise ConfigError(f"{p}.d_latent", t.d_latent, "must be a positive integer")
        if t.activation in ("topk", "batchtopk") and not 1 <= t.k <= t.d_latent:
            raise ConfigError(
                f"{p}.k", t.k, f"must be between 1 and transcoder.d_latent={t.d_latent}"
            )
        if not 0 < t.batchtopk_threshold_lr <= 1:
            raise ConfigError(
                f"{p}.batchtopk_threshold_lr", t.batchtopk_threshold_lr, "must be in (0, 1]"
            )
        for key in ("jumprelu_init_threshold", "jumprelu_bandwidth"):
            if not getattr(t, key) > 0:
                raise ConfigError(f"{p}.{key}", getattr(t, key), "must be > 0")
        for key in ("l0_weight", "aux_k", "aux_k_weight"):
            if getattr(t, key) < 0:
                raise ConfigError(f"{p}.{key}", getattr(t, key), "must be >= 0 (0 disables)")
        if t.dead_after_tokens <= 0:
            raise ConfigError(
                f"{p}.dead_after_tokens", t.dead_after_tokens, "must be a positive integer"
            )


def model_config_from_dict(d: dict | DictConfig) -> ModelConfig:
    """Build a checked ModelConfig from a plain dict (e.g. a checkpoint's config.yaml)."""
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), d)
    cfg: ModelConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate_model_config(cfg)
    return cfg
