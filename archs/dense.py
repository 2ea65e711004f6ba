"""The dense MLP: the baseline feed-forward slot (Llama's SwiGLU, or a GELU MLP)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.archs.config import FFNConfig
from glassbox.archs.ffn import register_ffn
from glassbox.archs.hooks import HookPoint


@register_ffn("dense")
class DenseMLP(nn.Module):
    """swiglu: W_out(silu(W_gate x) * W_in x)   gelu: W_out(gelu(W_in x)).

    Hook points: `hook_pre` (the activation's input: the gate for swiglu),
    `hook_post` (the hidden neurons W_out reads), both (batch, pos, d_ff).
    """

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
        self.aux_losses: dict = {}

    def forward(self, x: Tensor) -> Tensor:  # (batch, pos, d_model)
        if self.activation == "swiglu":
            pre = self.hook_pre(self.W_gate(x))  # (batch, pos, d_ff)
            post = self.hook_post(F.silu(pre) * self.W_in(x))
        else:
            pre = self.hook_pre(self.W_in(x))
            post = self.hook_post(F.gelu(pre))
        return self.W_out(post)
