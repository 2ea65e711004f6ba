"""A MoE layer's readable units (its part of the FFN contract: `MoE.unit_groups`,
archs/moe.py): its experts whole and its experts' hidden units, with the conditional
means their ablation substitutes (`expert_means`: an expert's mean output over the
tokens routed to it). The layers are found through the contract (`FFN.routes`), so
this module needs nothing of archs/moe.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassbox.archs.units import Hook, UnitGroup, real_tokens


def routed_layers(model: nn.Module, layers: Sequence[int] | None = None) -> dict[int, nn.Module]:
    """{layer: FFN} of the layers whose FFN routes tokens to experts (`FFN.routes`),
    all of them or `layers` (ValueError naming the routed layers for another)."""
    routed = {i: b.mlp for i, b in enumerate(model.blocks) if b.mlp.routes}
    for layer in layers if layers is not None else ():
        if layer not in routed:
            raise ValueError(
                f"layer {layer} has no MoE feed-forward; MoE layers are {sorted(routed) or 'none'}"
            )
    return routed if layers is None else {i: routed[i] for i in layers}


@torch.no_grad()
def expert_means(
    model: nn.Module, batches, layers: Sequence[int] | None = None
) -> dict[int, Tensor]:
    """Mean unweighted output of every expert over the tokens routed to it.

    batches: iterable of (B, T) token tensors or dicts with `input_ids` (and
    optionally `attention_mask`; padded positions are left out). Returns
    {layer: (n_experts, d_model)}; an expert that received no token gets zeros.
    """
    moes = routed_layers(model, None if layers is None else list(layers))
    layers = list(moes)
    sums = {i: torch.zeros(moes[i].n_experts, moes[i].d_model) for i in layers}
    counts = {i: torch.zeros(moes[i].n_experts) for i in layers}
    names = [f"blocks.{i}.hook_mlp_in" for i in layers]
    names += [f"blocks.{i}.mlp.hook_expert_indices" for i in layers]
    for batch in batches:
        tokens, mask = (
            (batch["input_ids"], batch.get("attention_mask"))
            if isinstance(batch, Mapping)
            else (batch, None)
        )
        tokens = tokens.to(model.device)
        _, cache = model.run_with_cache(tokens, names_filter=names)
        keep = (mask.bool() if mask is not None else torch.ones_like(tokens, dtype=torch.bool)).to(
            tokens.device
        )
        for i in layers:
            moe = moes[i]
            x = cache[f"blocks.{i}.hook_mlp_in"][keep]  # (N, d_model)
            idx = cache[f"blocks.{i}.mlp.hook_expert_indices"][keep]  # (N, k)
            flat = idx.reshape(-1)
            c = torch.bincount(flat, minlength=moe.n_experts)
            order = flat.argsort(stable=True)
            ys = moe.experts(x.index_select(0, order.div(moe.k, rounding_mode="floor")), c)
            sums[i].index_add_(0, flat[order].cpu(), ys.float().cpu())
            counts[i] += c.float().cpu()
    return {i: sums[i] / counts[i].clamp_min(1)[:, None] for i in layers}


@dataclass
class ExpertUnits(UnitGroup):
    """The routed experts of an MoE layer, one unit each. Routing is left as it is;
    an ablated expert's output at a token routed to it becomes its mean output,
    still weighted by its gate: exactly `archs.moe_interventions.ablate_experts(mode="mean")`,
    done with hooks so that every row of a batch can have its own keep-mask. The
    gate weight of each slot is scaled by m, and (1 - m) x gate x mean is added to
    the layer's output (shared experts are not units and are never ablated)."""

    def mean(self, model, batches) -> Tensor:
        return expert_means(model, batches, [self.layer])[self.layer].to(model.device)

    def unit_weights(self, model) -> list[Tensor]:
        """Each expert's W_gate, W_in and W_out."""
        moe = model.blocks[self.layer].mlp
        mats = [moe.W_gate, moe.W_in] if moe.activation == "swiglu" else [moe.W_in]
        return [w.weight for w in [*mats, moe.W_out]]

    def channel_weights(self, model) -> tuple[list[Tensor], list[Tensor]]:
        """Each expert's W_gate and W_in (E, d_expert, d_model) read, its W_out writes."""
        moe = model.blocks[self.layer].mlp
        mats = [moe.W_gate, moe.W_in] if moe.activation == "swiglu" else [moe.W_in]
        return [w.weight.transpose(1, 2) for w in mats], [moe.W_out.weight]

    def directions(self, model, batches=()) -> Tensor:
        """(E, d_model): each expert's mean output over the tokens routed to it."""
        return self.mean(model, batches)

    def hooks(self, mean: Tensor, keep: Tensor) -> list[Hook]:
        state: dict[str, Tensor] = {}

        def on_indices(idx: Tensor, _hook) -> None:  # (B, T, k)
            state["idx"] = idx

        def on_weights(w: Tensor, _hook) -> Tensor:  # (B, T, k)
            idx = state["idx"]
            B = w.shape[0]
            m = keep.to(w.dtype).expand(B, -1).gather(1, idx.reshape(B, -1)).view_as(w)
            state["fill"] = (1 - m) * w  # (B, T, k): weight of the mean output
            return w * m

        def on_out(out: Tensor, _hook) -> Tensor:  # (B, T, d_model)
            idx, fill = state.pop("idx"), state.pop("fill")
            means = mean.to(out.dtype)[idx]  # (B, T, k, d_model)
            return out + (fill.unsqueeze(-1) * means).sum(-2)

        i = self.layer
        return [
            (f"blocks.{i}.mlp.hook_expert_indices", on_indices),
            (f"blocks.{i}.mlp.hook_expert_weights", on_weights),
            (f"blocks.{i}.hook_mlp_out", on_out),
        ]


@dataclass
class ExpertHiddenUnits(UnitGroup):
    """The hidden units of the routed experts of an MoE layer, (expert e, unit j) at
    index e * d_expert + j of `blocks.{i}.mlp.hook_expert_hidden`. The mean of a unit
    is conditional: over the token-slots routed to its expert. Ablation replaces a
    unit's value at the tokens routed to its expert (the only ones the layer reads
    back); routing and gate weights are left as they are."""

    d_expert: int = 0

    @property
    def hook(self) -> str:
        return f"blocks.{self.layer}.mlp.hook_expert_hidden"

    @torch.no_grad()
    def mean(self, model, batches) -> Tensor:
        """(E * d_expert,) float32: each unit's mean over the slots of its expert."""
        idx_hook = f"blocks.{self.layer}.mlp.hook_expert_indices"
        n_experts = self.n_units // self.d_expert
        sums = torch.zeros(self.n_units, device=model.device)
        counts = torch.zeros(n_experts, device=model.device)
        for batch in batches:
            ids, real = real_tokens(batch, model.device)
            _, cache = model.run_with_cache(ids, names_filter=[self.hook, idx_hook])
            sums += cache[self.hook][real].float().sum(0)  # unrouted entries are 0
            counts += torch.bincount(cache[idx_hook][real].reshape(-1), minlength=n_experts)
        return sums / counts.clamp_min(1).repeat_interleave(self.d_expert)

    def unit_weights(self, model) -> list[Tensor]:
        """Each hidden unit's W_gate and W_in columns and W_out row in its expert."""
        moe = model.blocks[self.layer].mlp
        ins = [moe.W_gate, moe.W_in] if moe.activation == "swiglu" else [moe.W_in]
        cols = [w.weight.transpose(1, 2).reshape(self.n_units, -1) for w in ins]
        return cols + [moe.W_out.weight.reshape(self.n_units, -1)]

    def channel_weights(self, model) -> tuple[list[Tensor], list[Tensor]]:
        """Each hidden unit's W_gate and W_in columns (read), its W_out row (written)."""
        reads = self.unit_weights(model)
        return reads[:-1], [reads[-1]]

    def directions(self, model, batches=()) -> Tensor:
        """(E * d_expert, d_model): each hidden unit's row of its expert's W_out."""
        w = model.blocks[self.layer].mlp.W_out.weight  # (E, d_expert, d_model)
        return w.reshape(self.n_units, -1)

    def hooks(self, mean: Tensor, keep: Tensor) -> list[Hook]:
        state: dict[str, Tensor] = {}

        def on_indices(idx: Tensor, _hook) -> None:  # (B, T, k)
            state["idx"] = idx

        def on_hidden(act: Tensor, _hook) -> Tensor:  # (B, T, E * d_expert)
            idx = state.pop("idx")
            n_experts = self.n_units // self.d_expert
            routed = torch.zeros(*idx.shape[:-1], n_experts, dtype=torch.bool, device=act.device)
            routed.scatter_(-1, idx, True)
            routed = routed.repeat_interleave(self.d_expert, -1)  # (B, T, E * d_expert)
            k = keep.view(keep.shape[0], 1, self.n_units)
            m = mean.to(act.dtype)
            new = (
                torch.where(k, act, m) if k.dtype == torch.bool else m + k.to(act.dtype) * (act - m)
            )
            return torch.where(routed, new, act)

        return [
            (f"blocks.{self.layer}.mlp.hook_expert_indices", on_indices),
            (self.hook, on_hidden),
        ]
