"""The dense MLP: the baseline feed-forward slot (Llama's SwiGLU, or a GELU MLP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.archs.errors import ConfigError
from glassbox.archs.ffn import FFN, FFNConfig, register_ffn
from glassbox.archs.hooks import HookPoint
from glassbox.archs.linearised import FROZEN_WORDS, LinearFFN, frozen_factor
from glassbox.archs.units import HookUnits, UnitGroup

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
    cluster_units = True

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

    def unit_groups(self, layer: int) -> list[UnitGroup]:
        """The neurons of hook_post: each reads its W_gate and W_in rows (W_in only
        for gelu, plus their biases) and writes its W_out column."""
        reads = 2 if self.activation == "swiglu" else 1
        bias = reads if self.W_in.bias is not None else 0
        return [
            HookUnits(
                name=f"blocks.{layer}.mlp.neurons",
                layer=layer,
                kind=self.unit_name,
                n_units=self.d_ff,
                params_per_unit=(reads + 1) * self.W_out.out_features + bias,
                hook=f"blocks.{layer}.mlp.hook_post",
                write=lambda: self.W_out.weight.T,
                weights=self._unit_weights,
                channels=self._channel_weights,
            )
        ]

    def _channel_weights(self) -> tuple[list[Tensor], list[Tensor]]:
        """Each neuron's W_gate and W_in rows (what it reads), its W_out column (writes)."""
        mats = [self.W_gate, self.W_in] if self.activation == "swiglu" else [self.W_in]
        return [m.weight for m in mats], [self.W_out.weight.T]

    def _unit_weights(self) -> list[Tensor]:
        """Each neuron's W_gate and W_in rows (and biases) and W_out column."""
        mats = [self.W_gate, self.W_in] if self.activation == "swiglu" else [self.W_in]
        out = [m.weight for m in mats] + [self.W_out.weight.T]
        return out + [m.bias[:, None] for m in mats if m.bias is not None]

    def linearise(self, x: Tensor, acts=None) -> LinearFFN:
        """x (N, d_model) -> every nonzero neuron at each token, linearised with its
        activation's factor frozen (archs.linearised): act = factor * (W_in x + b_in),
        factor = silu(W_gate x + b_gate) for swiglu, gelu(a) / a for gelu."""
        a = self.W_in(x)  # (N, d_ff)
        gate = self.W_gate(x) if self.activation == "swiglu" else a
        factor = frozen_factor(gate, self.activation)
        post = factor * a
        token, unit = post.nonzero(as_tuple=True)
        f = factor[token, unit]
        b_in = self.W_in.bias
        b_out = self.W_out.bias
        return LinearFFN(
            token=token,
            unit=unit,
            act=post[token, unit],
            write=self.W_out.weight.T[unit],
            read=f[:, None] * self.W_in.weight[unit],
            read_bias=f * b_in[unit] if b_in is not None else torch.zeros_like(f),
            bias=(b_out if b_out is not None else x.new_zeros(x.shape[-1])).expand_as(x),
            exact=False,
            frozen=FROZEN_WORDS[self.activation],
        )

    @classmethod
    def label(cls, cfg: FFNConfig) -> str:
        return f"dense ({cfg.activation})"

    @classmethod
    def describe(cls, cfg: FFNConfig) -> str:
        return f"a dense {cfg.activation} MLP of width {cfg.d_ff}"

    def forward(self, x: Tensor) -> Tensor:  # (batch, pos, d_model)
        if self.activation == "swiglu":
            pre = self.hook_pre(self.W_gate(x))  # (batch, pos, d_ff)
            post = self.hook_post(F.silu(pre) * self.W_in(x))
        else:
            pre = self.hook_pre(self.W_in(x))
            post = self.hook_post(F.gelu(pre))
        return self.W_out(post)
