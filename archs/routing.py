"""MoE routers: how a layer turns its router logits into a choice of k experts and
their gate weights. One small class per router, registered by name (`moe.router`).

The router's linear map (`W_router`, d_model -> n_experts) stays on the MoE layer,
so parameter names are the same whatever the router; a router only transforms the
logits. Given logits (..., E) in float32, the layer input x (..., d_model) and the
weights that make each expert's hidden pre-activations, `w_in` (E, d_model, d_expert)
(the gate weights for swiglu experts), `route` returns

    gates   (..., E)  the weight each expert would get; read at the chosen experts
    scores  (..., E)  what top-k ranks to choose them

and `aux_losses(logits)` the router's own auxiliary losses, beside the load-balancing
and z-losses every MoE layer has. A router with keys of its own reads them from the
MoEConfig it is built with (add them there, in archs/moe.py).

To add a router: a `Router` subclass here with `@register_router("name")` (its keys
in MoEConfig, listed in `own_keys`, checked in `check_config`), a YAML that sets
`moe.router: name`, a test.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AuxLosses = dict[str, tuple[float, Tensor]]

ROUTERS: dict[str, type[Router]] = {}


def register_router(name: str):
    """Class decorator: make the Router subclass selectable as `moe.router: name`."""

    def deco(cls: type[Router]) -> type[Router]:
        ROUTERS[name] = cls
        cls.name = name
        return cls

    return deco


class Router(nn.Module, ABC):
    """Base class. A module (without parameters of its own for the built-in ones),
    so that a router may hold buffers or parameters, named `mlp.router.*`."""

    name: ClassVar[str] = ""
    # MoEConfig keys that only this router reads (set to a non-zero value with another
    # router, they are a config error)
    own_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any) -> None:  # cfg: the layer's MoEConfig
        super().__init__()

    @classmethod
    def check_config(cls, cfg: Any, prefix: str) -> None:
        """Raise ConfigError for an impossible value of the router's own keys of
        the MoEConfig `cfg` (whose key is `prefix`, e.g. `model.ffn.moe`)."""

    @abstractmethod
    def route(self, logits: Tensor, x: Tensor, w_in: Tensor) -> tuple[Tensor, Tensor]:
        """logits (..., E) float32, x (..., d_model), w_in (E, d_model, d_expert)
        -> gates (..., E), scores (..., E)."""

    def aux_losses(self, logits: Tensor) -> AuxLosses:
        """The router's own losses on logits (N, E) float32; {} by default."""
        return {}


@register_router("softmax")
class SoftmaxRouter(Router):
    """Switch / Mixtral: gates = scores = softmax(logits)."""

    def route(self, logits: Tensor, x: Tensor, w_in: Tensor) -> tuple[Tensor, Tensor]:
        gates = logits.softmax(-1)
        return gates, gates


@register_router("relu")
class ReLURouter(Router):
    """Sparsity-aware, in the spirit of MoE-X (Yang et al. 2025).

    Gates are ReLU(logits): non-negative, exactly zero for rejected experts, with an
    L1 penalty `moe.sparsity_weight` (aux loss `router_l1`). The choice favours
    experts expected to fire few hidden units on this token: scores = logits +
    log(1 - rho), rho = P(pre-activation > 0) under a Gaussian model of the expert's
    input weights (`sparsity_estimate`). Meant for ReLU experts (`expert_activation:
    relu`), where rho is the expected fraction of non-zero hidden units.
    """

    own_keys = ("sparsity_weight",)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.sparsity_weight = float(cfg.sparsity_weight)

    @staticmethod
    def sparsity_estimate(x: Tensor, w_in: Tensor) -> Tensor:
        """rho (N, E): P(a hidden unit's pre-activation > 0) per expert for x (N, d_model),
        with the pre-activation x . w_j ~ Normal(x . mean_j(w), sum_i x_i^2 var_j(w_i))
        over the hidden units j of w_in (E, d_model, d_expert)."""
        w = w_in.detach().to(x.dtype)  # bf16 experts beside the float32 router
        mean, var = w.mean(-1), w.var(-1, correction=0)  # (E, d_model) each
        mu = x @ mean.T  # (N, E)
        sigma = ((x * x) @ var.T).clamp_min(1e-12).sqrt()
        return 0.5 * (1 + torch.erf(mu / (sigma * math.sqrt(2))))

    def route(self, logits: Tensor, x: Tensor, w_in: Tensor) -> tuple[Tensor, Tensor]:
        gates = F.relu(logits)
        with torch.no_grad():
            rho = self.sparsity_estimate(x.detach().float().flatten(0, -2), w_in)
            scores = logits + torch.log1p(-rho.clamp(max=1 - 1e-6)).view_as(logits)
        return gates, scores

    def aux_losses(self, logits: Tensor) -> AuxLosses:
        return {"router_l1": (self.sparsity_weight, F.relu(logits).sum(-1).mean())}
