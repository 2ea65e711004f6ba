"""The experts' arithmetic of a MoE layer (archs/moe.py): E independent linear maps
applied to token-slots sorted by expert in one grouped matmul (`F.grouped_mm` where
the kernel applies, one padded bmm elsewhere), and the always-on shared expert."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_INIT_STD = 0.02  # the backbone re-initialises with model.init_std


class ExpertLinear(nn.Module):
    """E independent linear maps without bias: `weight` is (E, d_in, d_out).

    Called on token-slots sorted by expert, with `counts[e]` rows for expert e.
    A module (not a bare parameter) so that the weight is named `W_in.weight`,
    `W_out.weight`, ... like the dense MLP's, and the backbone's init treats the
    output projection the same way (scaled by 1/sqrt(2 n_layers)).
    """

    def __init__(self, n_experts: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_experts, d_in, d_out) * _INIT_STD)

    def forward(self, x: Tensor, counts: Tensor, offsets: Tensor) -> Tensor:
        # x (S, d_in) sorted by expert, in the expert dtype; counts (E,) int64;
        # offsets (E,) int32 cumsum
        return grouped_matmul(x, self.weight.to(x.dtype), counts, offsets)

    def extra_repr(self) -> str:
        E, d_in, d_out = self.weight.shape
        return f"n_experts={E}, d_in={d_in}, d_out={d_out}"


def expert_dtype(weight: Tensor) -> torch.dtype:
    """The dtype the expert matmuls of `weight` run in: autocast's where autocast is
    on for its device (float64 weights stay float64, as autocast leaves them), else
    the weight's own. F.grouped_mm is not on autocast's cast lists, so the experts
    cast their inputs and weights to this themselves."""
    device = weight.device.type
    if weight.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _grouped_mm_applies(x: Tensor, w: Tensor) -> bool:
    if not hasattr(F, "grouped_mm") or x.dtype != w.dtype:
        return False
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        ok_dtype = x.dtype in (torch.float32, torch.bfloat16, torch.float16)
    elif x.device.type == "cpu":  # the kernel's shape function (what compile traces) wants bf16
        ok_dtype = x.dtype == torch.bfloat16
    else:  # CUDA kernels: bf16 on sm80+ (get_device_properties: compile folds it to a constant)
        ok_dtype = (
            x.dtype == torch.bfloat16 and torch.cuda.get_device_properties(x.device).major >= 8
        )
    # The kernel wants 16-byte aligned row strides.
    return ok_dtype and all(n * x.element_size() % 16 == 0 for n in (x.shape[1], w.shape[2]))


def grouped_matmul(x: Tensor, w: Tensor, counts: Tensor, offsets: Tensor) -> Tensor:
    """Rows of x sorted by group times that group's matrix.

    x (S, d_in), rows [offsets[e-1], offsets[e]) belong to group e; w (E, d_in, d_out);
    counts (E,) rows per group; offsets (E,) int32 inclusive cumsum of counts.
    Returns (S, d_out).
    """
    if _grouped_mm_applies(x, w):
        return F.grouped_mm(x, w, offs=offsets)
    # Padded batch: scatter the rows into (E, C_max, d_in), one bmm, gather back.
    E, S = w.shape[0], x.shape[0]
    c_max = int(counts.max()) if S else 0
    group = torch.repeat_interleave(torch.arange(E, device=x.device), counts)  # (S,)
    slot = group * c_max + torch.arange(S, device=x.device) - (offsets.long() - counts)[group]
    padded = x.new_zeros(E * c_max, x.shape[1]).index_copy(0, slot, x)
    out = torch.bmm(padded.view(E, c_max, x.shape[1]), w)  # (E, C_max, d_out)
    return out.view(E * c_max, w.shape[2]).index_select(0, slot)


class SharedExpert(nn.Module):
    """Always-on expert(s) (DeepSeekMoE): a plain MLP of width n_shared * d_expert."""

    def __init__(self, d_model: int, d_hidden: int, activation: str):
        super().__init__()
        self.activation = activation
        if activation == "swiglu":
            self.W_gate = nn.Linear(d_model, d_hidden, bias=False)
        self.W_in = nn.Linear(d_model, d_hidden, bias=False)
        self.W_out = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (N, d_model) -> (N, d_model) in x's dtype
        xe = x.to(expert_dtype(self.W_in.weight))
        h = self.W_in(xe)
        h = F.silu(self.W_gate(xe)) * h if self.activation == "swiglu" else act(h, self.activation)
        return self.W_out(h).to(x.dtype)


def act(h: Tensor, activation: str) -> Tensor:
    return F.gelu(h) if activation == "gelu" else F.relu(h)
