"""The dense MLP: the baseline feed-forward slot (Llama's SwiGLU, or a GELU MLP)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.archs.errors import ConfigError
from glassbox.archs.ffn import FFN, FFNConfig, register_ffn
from glassbox.archs.hooks import HookPoint

ACTIVATIONS = ("swiglu", "gelu")


@register_ffn("dense")
class DenseMLP(FFN):
    """swiglu: W_out(silu(W_gate x) * W_in x)   gelu: W_out(gelu(W_in x)).

    Reads the top-level keys of its slot (`ffn.activation`, `ffn.d_ff`, `ffn.bias`).
    Hook points: `hook_pre` (the activation's input: the gate for swiglu),
    `hook_post` (the hidden neurons W_out reads), both (batch, pos, d_ff).
    Readable units: the neurons of `hook_post`.
    """

    unit_name = "neuron"
    unit_hooks = ("hook_post",)

    def __init__(self, d_model: int, cfg: FFNConfig):
        super().__init__()
        self.activation = cfg.activation
        self.d_ff = cfg.d_ff
        if cfg.activation == "swiglu":
            self.W_gate = nn.Linear(d_model, cfg.d_ff, bias=cfg.bias)
        self.W_in = nn.Linear(d_model, cfg.d_ff, bias=cfg.bias)
        self.W_out = nn.Linear(cfg.d_ff, d_model, bias=cfg.bias)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    @classmethod
    def check_config(cls, cfg: FFNConfig, prefix: str) -> None:
        if cfg.activation not in ACTIVATIONS:
            raise ConfigError(
                f"{prefix}.activation", cfg.activation, f"one of {', '.join(ACTIVATIONS)}"
            )
        if cfg.d_ff <= 0:
            raise ConfigError(f"{prefix}.d_ff", cfg.d_ff, "must be a positive integer")

    def forward(self, x: Tensor) -> Tensor:  # (batch, pos, d_model)
        if self.activation == "swiglu":
            pre = self.hook_pre(self.W_gate(x))  # (batch, pos, d_ff)
            post = self.hook_post(F.silu(pre) * self.W_in(x))
        else:
            pre = self.hook_pre(self.W_in(x))
            post = self.hook_post(F.gelu(pre))
        return self.W_out(post)
