"""An FFN slot at given tokens, written as a sum that is linear in its input once the
factors the tokens fix are held at their values: what an attribution graph needs of
a kind (`FFN.linearise`, archs/ffn.py).

At N tokens with input x (N, d_model) (the normalised residual `hook_mlp_in`):

    out[n] = sum_{m : token[m] = n} act[m] * write[m]  +  bias[n]  +  skip(x)[n]  (+ error[n])
    act[m] = x[token[m]] . read[m] + read_bias[m]

m runs over the M active units (unit[m] its index in the kind's
`unit_groups(layer)[group]`). Both lines hold exactly at these tokens. `exact` says whether the second is the unit's own
computation (a transcoder latent: its encoder pre-activation, which its activation
equals wherever it fires) or a linearisation at these tokens (the unit's nonlinear
factor frozen: silu(gate) of a SwiGLU unit, gelu(a) / a of a GELU unit, a MoE
expert's gate weight); `frozen` says which factors, in words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LinearFFN:
    """The module docstring's decomposition of one FFN slot at N tokens."""

    token: Tensor  # (M,) long: the token of each active unit
    unit: Tensor  # (M,) long: its index in the group
    act: Tensor  # (M,): its activation (what multiplies write)
    write: Tensor  # (M, d_model)
    read: Tensor  # (M, d_model)
    read_bias: Tensor  # (M,)
    bias: Tensor  # (N, d_model): the output's constant terms
    skip: Tensor | None = None  # None, (d_model, d_model) or (N, d_model, d_model): + x @ skip
    error: Tensor | None = None  # (N, d_model): what the units miss (a post-hoc replacement)
    exact: bool = True
    frozen: str = ""
    group: int = 0  # which of the kind's unit_groups(layer) the unit indices refer to

    def skip_out(self, x: Tensor) -> Tensor:
        """The skip's part of the output, (N, d_model) (0 without a skip)."""
        if self.skip is None:
            return torch.zeros_like(x)
        if self.skip.dim() == 2:
            return x @ self.skip
        return torch.einsum("nd,nde->ne", x, self.skip)

    def output(self, x: Tensor) -> Tensor:
        """out (N, d_model) from the decomposition (equals the FFN's output on x)."""
        out = self.bias + self.skip_out(x)
        out = out.index_add(0, self.token, self.act[:, None] * self.write)
        return out if self.error is None else out + self.error


def frozen_factor(pre: Tensor, activation: str) -> Tensor:
    """The factor a unit's nonlinearity is frozen at: unit = factor * (a linear map of
    x). swiglu: silu(gate) (pass the gate; the unit is silu(gate) * W_in x); gelu:
    gelu(a) / a (1/2 at a = 0); relu: 1[a > 0]."""
    if activation == "swiglu":
        return F.silu(pre)
    if activation == "relu":
        return (pre > 0).to(pre.dtype)
    if activation == "gelu":
        safe = torch.where(pre == 0, torch.ones_like(pre), pre)
        return torch.where(pre == 0, torch.full_like(pre, 0.5), F.gelu(safe) / safe)
    raise ValueError(f"frozen_factor: unknown activation {activation!r}")


FROZEN_WORDS = {
    "swiglu": "silu(gate) of each SwiGLU unit",
    "gelu": "gelu(a) / a of each GELU unit",
    "relu": "1[a > 0] of each ReLU unit (exact where it fires)",
}
