"""Sparse mixture of experts: many small experts, top-k routing, dropless.

Every token is processed by exactly k of the n_experts routed experts (no capacity
factor, nothing dropped), plus the always-on shared experts if any (DeepSeekMoE):

    logits  = W_router x                                   (E,)   hook_router_logits
    experts = top-k of score(logits)                       (k,)   hook_expert_indices
    w       = gate(logits)[experts], renormalised          (k,)   hook_expert_weights
    y       = sum_j w_j * expert_{experts_j}(x)  +  shared(x)

Routers (`moe.router`, archs/routing.py, one class each):
  softmax  Switch / Mixtral: score = gate = softmax(logits).
  relu     sparsity-aware, in the spirit of MoE-X (Yang et al. 2025): gates are
           ReLU(logits), and the choice favours experts expected to fire few
           hidden units on this token.
  pooled   in the spirit of EMO (Ai2 2026): each sequence's tokens choose among a
           pool of `pool_size` experts read from the sequence's prefix (causal).

Auxiliary losses (`self.aux_losses`, in training mode only, summed over layers by
the backbone):
  load_balance  Switch: E * sum_e f_e P_e, f_e = share of the N*k token-slots sent
                to expert e, P_e = mean softmax router probability; 1 when balanced.
  router_z      ST-MoE z-loss: mean over tokens of logsumexp(logits)^2.
  router_l1     relu router only: mean over tokens of sum_e ReLU(logits_e).

Dispatch: the N*k token-slots are sorted by expert, gathered once, and every
expert matmul runs as one grouped matmul (`torch.nn.functional.grouped_mm`), or,
where that kernel does not apply (older torch, float64, unaligned widths), as one
bmm over a padded (E, C_max, d) batch, C_max the largest load of this batch. The
gate weights scale the hidden units (d_expert wide) before W_out, and one
index_add sums the k weighted outputs of each token.

Precision: the expert matmuls run in `expert_dtype` (autocast's dtype where autocast
is on, so bf16-mixed on a GPU gets the grouped kernel, else the weights' dtype), and
their outputs are cast once back to the residual's dtype, in which the k outputs of a
token are summed (as HF Mixtral does under autocast). benchmarks/bench_moe.py
times it against HF Mixtral's block and the equal-active dense MLP.

Hidden units: `hook_expert_hidden` (B, T, E * d_expert) shows every expert's hidden
units (after the activation, before the gate weight scales them; unit j of expert e
at e * d_expert + j), 0 for the experts a token was not routed to. The dense view is
built only while the hook point has hooks (the dispatch itself never holds it); a
hook that returns a tensor replaces the hidden units of the routed experts (the
other entries are ignored).

Interventions: `ablate_experts(model, {layer: [experts]}, mode="zero"|"mean")`,
`remove_experts(model, {layer: [experts]})` (the router never chooses them: the model
pruned to the rest) and `force_routing(model, {layer: experts})`, context managers
that undo themselves on exit even when the body raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.archs.errors import ConfigError, check_non_negative
from glassbox.archs.experts import ExpertLinear, SharedExpert, act, expert_dtype, grouped_matmul
from glassbox.archs.ffn import FFN, AuxLosses, FFNConfig, register_ffn
from glassbox.archs.hooks import HookPoint
from glassbox.archs.linearised import FROZEN_WORDS, LinearFFN, frozen_factor
from glassbox.archs.moe_units import ExpertHiddenUnits, ExpertUnits
from glassbox.archs.routing import ROUTERS, Sequences
from glassbox.archs.units import UnitGroup

EXPERT_ACTIVATIONS = ("swiglu", "gelu", "relu")


@dataclass
class MoEConfig:
    """The `ffn.moe` section. Beside the keys below, each router's own keys (archs/
    routing.py: `sparsity_weight` for relu, `pool_*` for pooled), put here by the
    router registry, flat (`moe.pool_size`), after z_loss_weight."""

    n_experts: int = 16  # routed experts per layer (fine-grained: 16 to 128)
    k: int = 2  # experts per token (top-k); every token gets exactly k (dropless)
    d_expert: int = 64  # hidden width of one expert
    router: str = "softmax"  # softmax (Switch/Mixtral top-k) | relu (MoE-X style: ReLU gates, sparsity-aware choice)
    expert_activation: str = "swiglu"  # swiglu | gelu | relu (MoE-X uses relu experts)
    n_shared_experts: int = 0  # always-on shared experts of width d_expert each (DeepSeekMoE)
    normalize_weights: bool = True  # renormalise the top-k gate weights to sum to 1
    load_balance_weight: float = 0.01  # Switch load-balancing loss weight (1.0 = balanced)
    z_loss_weight: float = 0.001  # router z-loss weight (ST-MoE)


ROUTERS.hold_sections(MoEConfig, flat=True)  # each router's keys: MoEConfig's, after these


def expert_gates(indices: Tensor, weights: Tensor, n_experts: int) -> Tensor:
    """(N, k) expert ids and gate weights -> (N, E) float32 weight of each expert (0
    where unchosen), on the CPU."""
    out = torch.zeros(indices.shape[0], n_experts)
    out.scatter_(1, indices.long().cpu(), weights.float().cpu())
    return out


@register_ffn("moe", config=MoEConfig)
class MoE(FFN):
    """Mixture of `n_experts` small MLPs, each token through exactly `k` of them.

    Parameters: W_router (Linear d_model -> E); per expert e: W_gate.weight[e]
    (swiglu only), W_in.weight[e] (d_model, d_expert), W_out.weight[e]
    (d_expert, d_model); `shared` (optional, always on).

    Hook points: hook_router_logits (B, T, E), hook_expert_indices (B, T, k) int64,
    hook_expert_weights (B, T, k), hook_expert_hidden (B, T, E * d_expert; only
    built when hooked, 0 at unrouted experts). A hook on hook_expert_indices that
    returns a tensor forces the routing; the gate weights are then read at the
    forced experts.

    Interventions: `self.ablation` maps expert -> None (zero its output) or a
    (d_model,) tensor (replace its output by it); set it through `ablate_experts`.

    Readable units: the experts, their gate weight at each token (`read_units`: the
    (N, E) matrix of hook_expert_weights scattered at hook_expert_indices). The
    audited scores read the experts' hidden units first (`read_all`: "expert_neuron",
    (N, E * d_expert), 0 at unrouted experts), so that a MoE is read through as many
    candidates as a dense MLP of the same active width, and the gates second; the
    routing is the kind's own grouping of tokens (`groups`).
    """

    unit_name = "expert"
    unit_hooks = ("hook_expert_indices", "hook_expert_weights")
    reading_hooks = ("hook_expert_indices", "hook_expert_weights", "hook_expert_hidden")
    routes = True

    def __init__(self, d_model: int, cfg: FFNConfig):
        super().__init__()
        m = cfg.moe
        self.d_model, self.n_experts, self.k, self.d_expert = d_model, m.n_experts, m.k, m.d_expert
        self.activation = m.expert_activation
        self.router = ROUTERS[m.router](m)
        self.normalize_weights = m.normalize_weights
        self.loss_weights = {
            "load_balance": m.load_balance_weight,
            "router_z": m.z_loss_weight,
        }
        self.W_router = nn.Linear(d_model, m.n_experts, bias=False)
        if m.expert_activation == "swiglu":
            self.W_gate = ExpertLinear(m.n_experts, d_model, m.d_expert)
        self.W_in = ExpertLinear(m.n_experts, d_model, m.d_expert)
        self.W_out = ExpertLinear(m.n_experts, m.d_expert, d_model)
        self.shared = (
            SharedExpert(d_model, m.n_shared_experts * m.d_expert, m.expert_activation)
            if m.n_shared_experts
            else None
        )
        self.hook_router_logits = HookPoint()
        self.hook_expert_indices = HookPoint()
        self.hook_expert_weights = HookPoint()
        self.hook_expert_hidden = HookPoint()
        self.ablation: dict[int, Tensor | None] = {}
        self.removed: frozenset[int] = frozenset()  # experts the router may not choose

    @classmethod
    def check_config(cls, cfg: FFNConfig, prefix: str) -> None:
        m = cfg.moe
        p = f"{prefix}.moe"
        if m.n_experts <= 0:
            raise ConfigError(f"{p}.n_experts", m.n_experts, "must be a positive integer")
        if not 1 <= m.k <= m.n_experts:
            raise ConfigError(f"{p}.k", m.k, f"must be between 1 and moe.n_experts={m.n_experts}")
        if m.router not in ROUTERS:
            raise ConfigError(f"{p}.router", m.router, f"one of {', '.join(ROUTERS)}")
        if m.expert_activation not in EXPERT_ACTIVATIONS:
            raise ConfigError(
                f"{p}.expert_activation",
                m.expert_activation,
                f"one of {', '.join(EXPERT_ACTIVATIONS)}",
            )
        if m.d_expert <= 0:
            raise ConfigError(f"{p}.d_expert", m.d_expert, "must be a positive integer")
        if m.n_shared_experts < 0:
            raise ConfigError(f"{p}.n_shared_experts", m.n_shared_experts, "must be >= 0")
        for key in ("load_balance_weight", "z_loss_weight"):
            check_non_negative(f"{p}.{key}", getattr(m, key), " (0 disables)")
        router = ROUTERS[m.router]
        for other in ROUTERS.values():  # another router's keys are off
            for key in other.own_keys if other is not router else ():
                if getattr(m, key):
                    raise ConfigError(
                        f"{p}.{key}",
                        getattr(m, key),
                        f"only applies to moe.router={other.name}; set 0",
                    )
        router.check_config(m, p)

    @property
    def reads_sequence(self) -> bool:
        """Whether forward needs its `seq` (a router that reads the token's prefix)."""
        return self.router.reads_sequence

    # --- bookkeeping -------------------------------------------------------------

    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        n_mats = 3 if self.activation == "swiglu" else 2
        return n_mats * self.d_model * self.d_expert

    def inactive_params(self) -> int:
        """Parameters a token does not use: the n_experts - k experts it skips."""
        return (self.n_experts - self.k) * self.expert_params()

    def read_units(self, acts: Mapping[str, Tensor]) -> Tensor:
        """(N, E): each expert's gate weight at each token, 0 where it was not chosen."""
        return expert_gates(
            acts["hook_expert_indices"], acts["hook_expert_weights"], self.n_experts
        )

    def read_all(self, acts: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{"expert_neuron": (N, E * d_expert) hidden units, "expert": (N, E) gates}."""
        return {"expert_neuron": acts["hook_expert_hidden"], "expert": self.read_units(acts)}

    def groups(self, acts: Mapping[str, Tensor]) -> Tensor:
        """(N, k) the experts each token is routed to, the top one first."""
        return acts["hook_expert_indices"].long()

    def unit_groups(self, layer: int) -> list[UnitGroup]:
        """Its experts' hidden units (each reads its W_gate and W_in columns, W_in only
        for relu/gelu experts, and writes its W_out row), then the experts whole (their
        weights; the router row is not counted: routing is never ablated)."""
        n_mats = 3 if self.activation == "swiglu" else 2
        return [
            ExpertHiddenUnits(
                name=f"blocks.{layer}.mlp.expert_hidden",
                layer=layer,
                kind="expert_hidden",
                n_units=self.n_experts * self.d_expert,
                params_per_unit=n_mats * self.d_model,
                d_expert=self.d_expert,
            ),
            ExpertUnits(
                name=f"blocks.{layer}.mlp.experts",
                layer=layer,
                kind="expert",
                n_units=self.n_experts,
                params_per_unit=self.expert_params(),
            ),
        ]

    def linearise(self, x: Tensor, acts: Mapping[str, Tensor]) -> LinearFFN:
        """x (N, d_model), acts {"hook_expert_indices", "hook_expert_weights": (N, k)}
        as the model routed the N tokens -> the routed experts' nonzero hidden units
        (unit_groups' first group: e * d_expert + j), linearised with the routing, each
        expert's gate weight and each unit's activation factor frozen
        (archs.linearised): act = gate * factor * (x . W_in[e][:, j]), written along
        W_out[e][j]. The shared experts, frozen the same way, are the skip (one
        (d_model, d_model) map per token): not units, never ablated."""
        idx = acts["hook_expert_indices"].reshape(-1).long()  # (S,) S = N * k
        gate = acts["hook_expert_weights"].reshape(-1).to(x.dtype)
        tok = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.k)
        w_in = self.W_in.weight[idx].to(x.dtype)  # (S, d_model, d_expert)
        a = torch.einsum("sd,sdh->sh", x[tok], w_in)
        pre = torch.einsum("sd,sdh->sh", x[tok], self.W_gate.weight[idx].to(x.dtype)) if (
            self.activation == "swiglu"
        ) else a  # fmt: skip
        scale = gate[:, None] * frozen_factor(pre, self.activation)  # (S, d_expert)
        slot, j = (scale * a).nonzero(as_tuple=True)
        return LinearFFN(
            token=tok[slot],
            unit=idx[slot] * self.d_expert + j,
            act=(scale * a)[slot, j],
            write=self.W_out.weight[idx[slot], j].to(x.dtype),
            read=scale[slot, j, None] * w_in[slot, :, j],
            read_bias=x.new_zeros(len(slot)),
            bias=x.new_zeros(x.shape),
            skip=self._shared_skip(x),
            exact=False,
            frozen="the routing and gate weight of each token's experts; "
            + FROZEN_WORDS[self.activation]
            + (" (the shared experts' too, as the skip)" if self.shared is not None else ""),
        )

    def _shared_skip(self, x: Tensor) -> Tensor | None:
        """(N, d_model, d_model): the shared experts at each token with their units'
        activation factors frozen, x[n] @ skip[n] their output; None without them."""
        s = self.shared
        if s is None:
            return None
        a = s.W_in(x.to(s.W_in.weight.dtype))
        pre = s.W_gate(x.to(a.dtype)) if s.activation == "swiglu" else a
        f = frozen_factor(pre, s.activation).to(x.dtype)  # (N, d_hidden)
        w_in, w_out = s.W_in.weight.to(x.dtype), s.W_out.weight.to(x.dtype)
        return torch.einsum("hd,nh,eh->nde", w_in, f, w_out)

    @classmethod
    def label(cls, cfg: FFNConfig) -> str:
        return f"moe ({cfg.moe.router} router)"

    @classmethod
    def describe(cls, cfg: FFNConfig) -> str:
        m = cfg.moe
        slot = (
            f"a mixture of {m.n_experts} experts of width {m.d_expert}, {m.k} active "
            f"per token, {m.router} router"
        )
        if m.pool_size:
            slot += f" (each sequence's tokens inside a pool of {m.pool_size} experts)"
        return slot

    # --- routing -----------------------------------------------------------------

    def expert_input_weight(self) -> Tensor:
        """(E, d_model, d_expert): the weights that make the experts' hidden
        pre-activations (the gate for swiglu), which a router may read."""
        return (self.W_gate if self.activation == "swiglu" else self.W_in).weight

    def route(self, x: Tensor, seq: Sequences | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d_model), seq (a router that reads the sequence) -> logits (B, T, E),
        indices (B, T, k), weights (B, T, k)."""
        logits = self.hook_router_logits(self.W_router(x))  # (B, T, E)
        lf = logits.float()
        if self.removed:  # removed experts get no probability and are never chosen
            gone = torch.zeros(self.n_experts, dtype=torch.bool, device=x.device)
            gone[list(self.removed)] = True
            lf = lf.masked_fill(gone, float("-inf"))
        gates, score = self.router.route(lf, x, self.expert_input_weight(), seq)
        if self.removed:
            score = score.masked_fill(gone, float("-inf"))
        indices = self.hook_expert_indices(score.topk(self.k, dim=-1, sorted=True).indices)
        weights = gates.gather(-1, indices)  # (B, T, k)
        if self.normalize_weights:
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-9)
        weights = self.hook_expert_weights(weights.to(x.dtype))
        return logits, indices, weights

    def _aux(self, logits: Tensor, counts: Tensor) -> AuxLosses:
        lf = logits.float().flatten(0, -2)  # (N, E)
        probs = lf.softmax(-1).mean(0)  # P_e
        frac = counts.to(probs.dtype) / counts.sum().clamp_min(1)  # f_e
        out = {
            "load_balance": (
                self.loss_weights["load_balance"],
                self.n_experts * (frac * probs).sum(),
            ),
            "router_z": (self.loss_weights["router_z"], lf.logsumexp(-1).square().mean()),
        }
        out.update(self.router.aux_losses(lf))
        return out

    # --- experts -----------------------------------------------------------------

    def experts(
        self,
        xs: Tensor,
        counts: Tensor,
        scale: Tensor | None = None,
        token: Tensor | None = None,
        expert: Tensor | None = None,
        lead: tuple[int, ...] | None = None,
    ) -> Tensor:
        """Token-slots sorted by expert (S, d_model), counts (E,) -> outputs (S, d_model)
        in xs's dtype (computed in `expert_dtype`). scale (S, 1), the gate weights,
        multiplies the hidden units before W_out: the same as scaling the output, on
        d_expert columns instead of d_model. token, expert (S,): each slot's token
        (an index into the prod(lead) tokens) and expert, for hook_expert_hidden
        (lead: the tokens' shape, (B, T)); without them the hook point is not run."""
        out_dtype = xs.dtype
        xs = xs.to(expert_dtype(self.W_in.weight))
        offsets = counts.cumsum(0).to(torch.int32)
        if self.activation == "swiglu":
            if self.d_expert < self.d_model:
                # Narrow experts: one grouped matmul for gate and input (reads xs once;
                # measured faster below d_model, slower at it).
                gate_in = torch.cat([self.W_gate.weight, self.W_in.weight], dim=-1)
                g, h = grouped_matmul(xs, gate_in.to(xs.dtype), counts, offsets).chunk(2, dim=-1)
            else:
                g, h = self.W_gate(xs, counts, offsets), self.W_in(xs, counts, offsets)
            h = F.silu(g) * h  # (S, d_expert)
        else:
            h = act(self.W_in(xs, counts, offsets), self.activation)
        if expert is not None and self.hook_expert_hidden.has_hooks:
            h = self._hook_hidden(h, token, expert, lead)
        if scale is not None:
            h = h * scale.to(h.dtype)
        return self.W_out(h, counts, offsets).to(out_dtype)

    def _hook_hidden(
        self, h: Tensor, token: Tensor, expert: Tensor, lead: tuple[int, ...]
    ) -> Tensor:
        """Run hook_expert_hidden on the dense (*lead, E * d_expert) view of the slots'
        hidden units h (S, d_expert); a replacement is read back at the routed slots."""
        n_tokens = math.prod(lead)
        dense = h.new_zeros(n_tokens, self.n_experts, self.d_expert)
        dense[token, expert] = h  # (N, E, d_expert), 0 where unrouted
        flat = dense.view(*lead, self.n_experts * self.d_expert)
        out = self.hook_expert_hidden(flat)
        if out is flat:
            return h
        return out.reshape(n_tokens, self.n_experts, self.d_expert)[token, expert].to(h.dtype)

    def forward(self, x: Tensor, seq: Sequences | None = None) -> Tensor:  # (B, T, d_model)
        shape = x.shape
        logits, indices, weights = self.route(x, seq)
        xf = x.reshape(-1, self.d_model)  # (N, d_model)
        flat = indices.reshape(-1)  # (S,) S = N * k, token-major
        # (E,) slots per expert; bincount's output shape depends on the data (a graph
        # break under torch.compile), a scatter into E zeros does not
        counts = flat.new_zeros(self.n_experts).scatter_add_(0, flat, torch.ones_like(flat))
        order = flat.argsort(stable=True)  # slots grouped by expert
        token = order.div(self.k, rounding_mode="floor")  # (S,) token of each sorted slot
        w = weights.reshape(-1, 1).index_select(0, order)  # (S, 1) gate weight of each slot
        hooked = self.hook_expert_hidden.has_hooks  # else no dense view, no extra work
        expert = flat.index_select(0, order) if self.ablation or hooked else None  # (S,)
        slots = dict(token=token, expert=expert, lead=tuple(shape[:-1])) if hooked else {}
        if self.ablation:
            ablated, replacement = self._ablation_tables(w)
            scale = w.masked_fill(ablated[expert], 0)
            ys = self.experts(xf.index_select(0, token), counts, scale, **slots)
            ys = ys + w * replacement[expert]  # zero, or the expert's mean output, weighted
        else:
            ys = self.experts(xf.index_select(0, token), counts, w, **slots)  # (S, d_model)
        # ys is in xf's dtype (the experts cast back once), so the sum is too.
        out = torch.zeros_like(xf).index_add_(0, token, ys)
        if self.shared is not None:
            out = out + self.shared(xf)
        self.aux_losses = self._aux(logits, counts) if self.training else {}
        return out.view(shape)

    def _ablation_tables(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(E, 1) bool: expert ablated; (E, d_model): what its output becomes."""
        ablated = torch.zeros(self.n_experts, 1, dtype=torch.bool, device=like.device)
        replacement = like.new_zeros(self.n_experts, self.d_model)
        for e, value in self.ablation.items():
            ablated[e] = True
            if value is not None:
                replacement[e] = value.to(replacement)
        return ablated, replacement

    def expert_output(self, x: Tensor, expert: int) -> Tensor:
        """One expert's unweighted output on x (N, d_model) -> (N, d_model)."""
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=x.device)
        counts[expert] = x.shape[0]
        return self.experts(x, counts)


# --- interventions ---------------------------------------------------------------


def moe_layers(model: nn.Module) -> dict[int, MoE]:
    """{layer index: MoE module} of a Transformer (layers whose FFN is `moe`)."""
    return {i: b.mlp for i, b in enumerate(model.blocks) if isinstance(b.mlp, MoE)}


def check_moe_layers(model: nn.Module, layers: Sequence[int]) -> dict[int, MoE]:
    moes = moe_layers(model)
    for layer in layers:
        if layer not in moes:
            raise ValueError(
                f"layer {layer} has no MoE feed-forward; MoE layers are {sorted(moes) or 'none'}"
            )
    return moes
