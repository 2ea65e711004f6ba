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
and z-losses every MoE layer has. A router with keys of its own brings them as a
dataclass, `register_router(name, config=ItsKeys)`: the router registry (`ROUTERS`,
archs/registry.py) makes its fields keys of MoEConfig, beside the layer's own
(`moe.pool_size`, flat, as the shipped configs have them), and the router reads them
from the MoEConfig it is built with. Each key must default to off (0, False): set to
anything else while another router is chosen, it is a config error naming the key.

A router that reads a token's sequence (`reads_sequence = True`: the pooled router)
also gets `seq`, a `Sequences`: which tokens of the pass form one sequence (packed
rows), which are real (left padding in generation), and the KV cache's carry of its
layer, so that routing token t never reads a token after t and a pass with a cache
routes as the full forward does.

To add a router: a `Router` subclass here with `@register_router("name",
config=NameKeys)` (its keys' dataclass beside it, every key commented and off by
default, their values checked in `check_config`), a YAML that sets `moe.router: name`,
a test.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.archs.errors import ConfigError, check_non_negative
from glassbox.archs.ffn import AuxLosses
from glassbox.archs.hooks import HookPoint
from glassbox.archs.registry import Registry


@dataclass
class Sequences:
    """Which tokens of one forward pass form a sequence, for a router that reads a
    token's prefix. Made by the backbone (`Transformer.forward`); a layer called on its
    own gets None: each row is one sequence, every token real, no cache."""

    segment_ids: Tensor | None = None  # (B, T) packed rows: a sequence per id; None: per row
    valid: Tensor | None = None  # (B, T) bool, False on padding (no pool reads it); None: all
    state: dict[str, Tensor] | None = None  # this layer's KV-cache carry (the router fills it)


class Router(nn.Module, ABC):
    """Base class. A module (without parameters of its own for the built-in ones),
    so that a router may hold buffers or parameters, named `mlp.router.*`."""

    name: ClassVar[str] = ""
    # MoEConfig keys that only this router reads: its config's fields, set by
    # register_router (set to a non-zero value with another router, a config error)
    own_keys: ClassVar[tuple[str, ...]] = ()
    # whether `route` reads the token's sequence (its `seq` argument)
    reads_sequence: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:  # cfg: the layer's MoEConfig
        super().__init__()

    @classmethod
    def check_config(cls, cfg: Any, prefix: str) -> None:
        """Raise ConfigError for an impossible value of the router's own keys of
        the MoEConfig `cfg` (whose key is `prefix`, e.g. `model.ffn.moe`)."""

    @abstractmethod
    def route(
        self, logits: Tensor, x: Tensor, w_in: Tensor, seq: Sequences | None = None
    ) -> tuple[Tensor, Tensor]:
        """logits (..., E) float32, x (..., d_model), w_in (E, d_model, d_expert), seq
        (read only where `reads_sequence`) -> gates (..., E), scores (..., E)."""

    def aux_losses(self, logits: Tensor) -> AuxLosses:
        """The router's own losses on logits (N, E) float32; {} by default."""
        return {}


def _check_router(name: str, cls: Any, config: type | None) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Router)):
        raise TypeError(f"register_router({name!r}): {cls!r} is not a subclass of Router")
    for f in fields(config) if config is not None else ():
        if f.default_factory is not MISSING or f.default:
            raise ValueError(
                f"register_router({name!r}): key {f.name!r} must default to off (0, False), "
                "so that it means nothing with another router"
            )


# The MoE routers (archs/registry.py), in registration order; each router's keys are
# keys of MoEConfig (flat: `moe.<key>`), which archs/moe.py makes hold them.
ROUTERS: Registry[type[Router]] = Registry("MoE router", check=_check_router)


def register_router(name: str, config: type | None = None):
    """Class decorator: make the Router subclass selectable as `moe.router: name`.

    config: the dataclass of the router's own keys (or None); each becomes a key of
    MoEConfig (`moe.<key>`), off by default, and the router's `own_keys`."""

    def deco(cls: type[Router]) -> type[Router]:
        ROUTERS.register(name, cls, config=config)
        cls.name = name
        cls.own_keys = tuple(f.name for f in fields(config)) if config is not None else ()
        return cls

    return deco


@register_router("softmax")
class SoftmaxRouter(Router):
    """Switch / Mixtral: gates = scores = softmax(logits)."""

    def route(
        self, logits: Tensor, x: Tensor, w_in: Tensor, seq: Sequences | None = None
    ) -> tuple[Tensor, Tensor]:
        gates = logits.softmax(-1)
        return gates, gates


@dataclass
class ReLURouterKeys:
    """The relu router's keys of MoEConfig."""

    sparsity_weight: float = 0.0  # relu router: weight of the L1 penalty on ReLU(router logits)


@register_router("relu", config=ReLURouterKeys)
class ReLURouter(Router):
    """Sparsity-aware, in the spirit of MoE-X (Yang et al. 2025).

    Gates are ReLU(logits): non-negative, exactly zero for rejected experts, with an
    L1 penalty `moe.sparsity_weight` (aux loss `router_l1`). The choice favours
    experts expected to fire few hidden units on this token: scores = logits +
    log(1 - rho), rho = P(pre-activation > 0) under a Gaussian model of the expert's
    input weights (`sparsity_estimate`). Meant for ReLU experts (`expert_activation:
    relu`), where rho is the expected fraction of non-zero hidden units.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.sparsity_weight = float(cfg.sparsity_weight)

    @classmethod
    def check_config(cls, cfg: Any, prefix: str) -> None:
        check_non_negative(f"{prefix}.sparsity_weight", cfg.sparsity_weight, " (0 disables)")

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

    def route(
        self, logits: Tensor, x: Tensor, w_in: Tensor, seq: Sequences | None = None
    ) -> tuple[Tensor, Tensor]:
        gates = F.relu(logits)
        with torch.no_grad():
            rho = self.sparsity_estimate(x.detach().float().flatten(0, -2), w_in)
            scores = logits + torch.log1p(-rho.clamp(max=1 - 1e-6)).view_as(logits)
        return gates, scores

    def aux_losses(self, logits: Tensor) -> AuxLosses:
        return {"router_l1": (self.sparsity_weight, F.relu(logits).sum(-1).mean())}


@dataclass
class PooledRouterKeys:
    """The pooled router's keys of MoEConfig."""

    pool_size: int = 0  # pooled router: experts in each sequence's pool (k..n_experts)
    pool_prefix: int = 0  # pooled router: the pool is read from a sequence's first pool_prefix tokens (0: every token so far)
    pool_gate: float = 0.0  # pooled router: gates times the prefix mean probability to this power (0: off), so the loss reaches the prefix's routing
    pool_balance_weight: float = (
        0.0  # pooled router: weight of the pool-level load balance (1.0 = balanced)
    )
    pool_leak_weight: float = (
        0.0  # pooled router: weight of the router probability outside the pool (concentration)
    )


@register_router("pooled", config=PooledRouterKeys)
class PooledRouter(Router):
    """Pooled routing, in the spirit of EMO (Ai2 2026): the tokens of a sequence choose
    their k experts only among a pool of `moe.pool_size` experts, the pool read from
    the sequence's prefix, so that a sequence (one skill, one document) lives in few
    experts and removing them spares the other sequences.

        p_s     = softmax(logits_s)                                          (E,)
        pool_t  = top-P of  mean over s in prefix(t) of p_s                  (P,)  hook_pool
        gates   = p_t * m_t ** g;  scores = p_t, -inf outside pool_t  (top-k: in the pool)

    m_t is the mean in pool_t's line. prefix(t) is the real tokens of t's sequence up
    to and with t (`pool_prefix: 0`), or only its first `pool_prefix` tokens (then the
    pool is fixed once they are read). The top-P choice passes no gradient; with
    `pool_gate` g > 0 the gates carry the prefix mean, so that the loss on a token
    reaches the routing of the tokens before it (its pool's makers); g = 0: p_t alone.
    Causal by construction: routing token t reads no later token, and a pass with a KV
    cache carries the prefix sums (`Sequences.state`), so it routes as the full forward.

    Losses (`aux_losses`, in training mode, beside the layer's own):
      pool_balance  E * sum_e f_e P_e, f_e = share of the tokens' pool slots held by
                    expert e, P_e = mean router probability; 1 when balanced.
      pool_leak     mean over tokens of the router probability outside the token's
                    pool: rewards each sequence concentrating on few experts.

    Hook point `hook_pool` (B, T, P) int64: each token's pool, its most used expert
    first; a hook that returns a tensor forces the pool.
    """

    reads_sequence = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.pool_size, self.pool_prefix = int(cfg.pool_size), int(cfg.pool_prefix)
        self.pool_gate = float(cfg.pool_gate)
        self.weights = {
            "pool_balance": float(cfg.pool_balance_weight),
            "pool_leak": float(cfg.pool_leak_weight),
        }
        self.hook_pool = HookPoint()
        self._last: tuple[Tensor, Tensor] | None = None  # (probs, in_pool) for aux_losses

    @classmethod
    def check_config(cls, cfg: Any, prefix: str) -> None:
        if not cfg.k <= cfg.pool_size <= cfg.n_experts:
            raise ConfigError(
                f"{prefix}.pool_size",
                cfg.pool_size,
                f"must be between moe.k={cfg.k} and moe.n_experts={cfg.n_experts}",
            )
        if cfg.pool_prefix < 0:
            raise ConfigError(f"{prefix}.pool_prefix", cfg.pool_prefix, "must be >= 0 (0: all)")
        for key in ("pool_gate", "pool_balance_weight", "pool_leak_weight"):
            check_non_negative(f"{prefix}.{key}", getattr(cfg, key), " (0 disables)")

    def prefix_means(self, probs: Tensor, seq: Sequences | None) -> Tensor:
        """probs (B, T, E) -> (B, T, E) float64: the mean of probs over prefix(t), each
        token's own sequence only; 0 where the prefix holds no real token. With a
        cache (seq.state) the sums carry over from the earlier passes and are saved."""
        B, T, _ = probs.shape
        valid = (
            seq.valid.to(probs.device).bool()
            if seq is not None and seq.valid is not None
            else torch.ones(B, T, dtype=torch.bool, device=probs.device)
        )
        state = seq.state if seq is not None else None
        w = valid.double()  # (B, T)
        n_before = _segment_cumsum(w, seq.segment_ids if seq is not None else None) - w
        if state:  # tokens of this sequence read by earlier passes (KV cache)
            n_before = n_before + state["seen"][:, None]
        if self.pool_prefix:  # only the first pool_prefix real tokens enter a pool
            w = w * (n_before < self.pool_prefix)
        p = probs.double() * w[..., None]  # (B, T, E)
        sums = _segment_cumsum(p, seq.segment_ids if seq is not None else None)
        counts = _segment_cumsum(w, seq.segment_ids if seq is not None else None)
        if state:
            sums = sums + state["sum"][:, None]
            counts = counts + state["count"][:, None]
        if state is not None:  # the carry for the next pass with this cache
            state["sum"], state["count"] = sums[:, -1].detach(), counts[:, -1]
            state["seen"] = n_before[:, -1] + valid[:, -1].double()
        return sums / counts.clamp_min(1)[..., None]

    def route(
        self, logits: Tensor, x: Tensor, w_in: Tensor, seq: Sequences | None = None
    ) -> tuple[Tensor, Tensor]:
        if logits.dim() != 3 and logits.dim() != 2:
            raise ValueError(f"pooled router: logits of shape {tuple(logits.shape)}: (B, T, E)")
        probs = logits.softmax(-1)
        if probs.dim() == 2:  # (N, E): one sequence
            probs = probs[None]
        means = self.prefix_means(probs if self.pool_gate else probs.detach(), seq)  # (B, T, E)
        with torch.no_grad():
            pool = self.hook_pool(means.topk(self.pool_size, dim=-1, sorted=True).indices)
            in_pool = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, pool.long(), True)
        self._last = (probs, in_pool)
        scores = probs.masked_fill(~in_pool, float("-inf"))
        gates = probs * means.to(probs.dtype) ** self.pool_gate if self.pool_gate else probs
        return gates.reshape(logits.shape), scores.reshape(logits.shape)

    def aux_losses(self, logits: Tensor) -> AuxLosses:
        if self._last is None:
            return {}
        probs, in_pool = self._last
        probs, in_pool = probs.flatten(0, -2), in_pool.flatten(0, -2)  # (N, E)
        E = probs.shape[-1]
        share = in_pool.double().mean(0) / self.pool_size  # f_e, sums to 1
        balance = E * (share.to(probs.dtype) * probs.mean(0)).sum()
        leak = probs.masked_fill(in_pool, 0.0).sum(-1).mean()
        return {
            "pool_balance": (self.weights["pool_balance"], balance),
            "pool_leak": (self.weights["pool_leak"], leak),
        }


def _segment_cumsum(x: Tensor, segment_ids: Tensor | None) -> Tensor:
    """Cumulative sum of x (B, T, ...) along T, restarting where segment_ids (B, T)
    changes (None: one segment per row)."""
    c = x.cumsum(1)
    if segment_ids is None:
        return c
    B, T = segment_ids.shape
    idx = torch.arange(T, device=x.device).expand(B, T)
    first = torch.ones_like(segment_ids, dtype=torch.bool)
    first[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    start = torch.where(first, idx, 0).cummax(-1).values  # (B, T) first token of t's segment
    zero = torch.zeros_like(c[:, :1])
    before = torch.cat([zero, c[:, :-1]], 1)  # (B, T, ...) sum of tokens before t
    gather = start.view(B, T, *([1] * (x.dim() - 2))).expand_as(c)
    return c - before.gather(1, gather)
