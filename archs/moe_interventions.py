"""Interventions on a MoE model's experts (archs/moe.py), each a context manager that
restores the model on exit, also when its body raises:

    ablate_experts(model, {layer: [e, ...]}, mode="zero" | "mean", means=...)
    remove_experts(model, {layer: [e, ...]})     the router never chooses them
    force_routing(model, {layer: experts or fn}) the routing replaced
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from glassbox.archs.moe import check_moe_layers


@contextmanager
def ablate_experts(
    model: nn.Module,
    experts: Mapping[int, Sequence[int]],
    mode: str = "zero",
    means: Mapping[int, Tensor] | None = None,
) -> Iterator[nn.Module]:
    """Run the body with the given experts ablated: {layer: [expert, ...]}.

    mode="zero": the expert's output is zero for every token routed to it (the
    token keeps its k slots; the other experts' outputs and weights are unchanged).
    mode="mean": the output is replaced by `means[layer][expert]` (a (n_experts,
    d_model) tensor per layer, e.g. from `expert_means`). Restored on exit, also
    when the body raises.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablate_experts: mode={mode!r}: one of 'zero', 'mean'")
    if mode == "mean" and means is None:
        raise ValueError("ablate_experts: mode='mean' needs means={layer: (n_experts, d_model)}")
    moes = check_moe_layers(model, list(experts))
    saved = {layer: dict(moes[layer].ablation) for layer in experts}
    try:
        for layer, es in experts.items():
            moe = moes[layer]
            for e in es:
                if not 0 <= int(e) < moe.n_experts:
                    raise ValueError(f"layer {layer}: expert {e} is not in 0..{moe.n_experts - 1}")
                moe.ablation[int(e)] = None if mode == "zero" else means[layer][int(e)]
        yield model
    finally:
        for layer, old in saved.items():
            moes[layer].ablation = old


@contextmanager
def remove_experts(model: nn.Module, experts: Mapping[int, Sequence[int]]) -> Iterator[nn.Module]:
    """Run the body with the given experts removed: {layer: [expert, ...]}. The router
    never chooses a removed expert (its logit is -inf: no probability, no pool, no
    slot), so every token takes its k experts among the rest, as in a model pruned
    to them (EMO's expert subsets). At least k must remain in each layer. Restored
    on exit, also when the body raises."""
    moes = check_moe_layers(model, list(experts))
    saved = {layer: moes[layer].removed for layer in experts}
    try:
        for layer, es in experts.items():
            moe = moes[layer]
            gone = frozenset(int(e) for e in es) | moe.removed
            if any(not 0 <= e < moe.n_experts for e in gone):
                raise ValueError(f"layer {layer}: experts must be in 0..{moe.n_experts - 1}")
            if moe.n_experts - len(gone) < moe.k:
                raise ValueError(
                    f"layer {layer}: removing {len(gone)} of {moe.n_experts} experts leaves "
                    f"fewer than k={moe.k}"
                )
            moe.removed = gone
        yield model
    finally:
        for layer, old in saved.items():
            moes[layer].removed = old


@contextmanager
def force_routing(
    model: nn.Module, routing: Mapping[int, Tensor | Sequence[int] | Callable[[Tensor], Tensor]]
) -> Iterator[nn.Module]:
    """Run the body with the routing of the given layers replaced.

    routing[layer] is a tensor of expert indices broadcastable to (B, T, k) (e.g.
    `[3, 7]` sends every token to experts 3 and 7 when k=2), or a function from
    the router's indices (B, T, k) to new ones. The gate weights are read at the
    forced experts. Works through `hook_expert_indices`; hooks removed on exit.
    """
    moes = check_moe_layers(model, list(routing))

    def make_hook(layer: int, spec):
        moe = moes[layer]

        def hook(indices: Tensor, _hook) -> Tensor:
            new = spec(indices) if callable(spec) else torch.as_tensor(spec)
            new = new.to(device=indices.device, dtype=torch.long).expand_as(indices)
            if new.min() < 0 or new.max() >= moe.n_experts:
                raise ValueError(
                    f"force_routing: layer {layer}: experts must be in 0..{moe.n_experts - 1}"
                )
            return new.contiguous()

        return hook

    hooks = [
        (f"blocks.{layer}.mlp.hook_expert_indices", make_hook(layer, spec))
        for layer, spec in routing.items()
    ]
    with model.hooks(hooks):
        yield model
