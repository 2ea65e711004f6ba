"""Readable units: what the analysis reads, counts, ablates and traces in a model.

A `UnitGroup` is one family of readable units of one layer: `n_units` units called
`kind` ("neuron", "latent", "head", "expert", "expert_hidden", or a new kind's
name), each reading and writing `params_per_unit` parameters. It says

    mean(model, batches)    what a mean-ablation substitutes (shaped as hooks wants)
    hooks(mean, keep)       hooks that keep the units `keep` says and put the mean
                            (or zero: pass zeros) at the others, one keep-mask per
                            batch row if asked, differentiable in a float mask
    directions(model, ...)  (n_units, d_model): what one unit writes into the
                            residual stream per unit of its activation, or None

Every FFN kind lists its groups in its own file (`FFN.unit_groups(layer)`, archs/ffn.py),
its finest first; the attention heads are `head_units`. A family whose units sit
on the third axis of one hook point's activation is a `HookUnits` with that hook;
a kind with another layout (a MoE's experts) subclasses `UnitGroup`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Hook = tuple[str, Callable[[Tensor, Any], Tensor | None]]


@dataclass
class UnitGroup(ABC):
    """A family of readable units of one layer (the module docstring)."""

    name: str  # unique in the model, e.g. "blocks.0.mlp.neurons"
    layer: int
    kind: str  # neuron | latent | head | expert | expert_hidden | residual | a new kind's
    n_units: int
    params_per_unit: int
    reads: str = "mlp"  # the residual read its units take in: "attn" (heads) or "mlp"

    @abstractmethod
    def mean(self, model, batches: Iterable[Mapping[str, Tensor]]) -> Tensor:
        """The means the ablation substitutes, shaped as `hooks` wants them."""

    @abstractmethod
    def hooks(self, mean: Tensor, keep: Tensor) -> list[Hook]:
        """Hooks that keep the units `keep` says and mean-ablate the others.

        keep: (R, n_units), R = 1 (every row of the batch) or R = the batch size (a
        mask per row). bool: True keeps the clean value, False puts the mean. float:
        m interpolates, act' = mean + m (act - mean) (differentiable in m)."""

    def directions(self, model, batches: Sequence[Mapping[str, Tensor]] = ()) -> Tensor | None:
        """(n_units, d_model): what each unit writes into the residual stream per unit
        of its activation; None where a unit has no one direction (a head)."""
        return None

    def unit_weights(self, model) -> list[Tensor]:
        """The weights the units read and write, each (n_units, ...) with a unit's
        slice on the first axis (a neuron's W_in row, W_out column, ...); [] where the
        group does not say (then `nonzero_params` counts params_per_unit)."""
        return []

    def channel_weights(self, model) -> tuple[list[Tensor], list[Tensor]]:
        """(reads, writes): the weights joining each unit to the residual stream's
        channels, each (n_units, ..., d_model) with the channel on the last axis: what
        it reads from its layer's `reads` input and writes into the stream (a neuron's
        W_in row, its W_out column). ([], []) where the group does not say (then its
        edges do not depend on which channels are kept)."""
        return [], []

    @torch.no_grad()
    def nonzero_params(self, model) -> Tensor:
        """(n_units,) the non-zero weights each unit reads and writes: its edges to the
        residual stream, what a weight-sparse model saves (Gao et al. 2025)."""
        weights = self.unit_weights(model)
        if not weights:
            return torch.full((self.n_units,), self.params_per_unit, dtype=torch.long)
        return sum((w != 0).reshape(self.n_units, -1).sum(1).cpu() for w in weights)


@dataclass
class HookUnits(UnitGroup):
    """Units on the third axis of a hook point's activation, (B, T, n_units, ...):
    neurons, latents, heads (hook_z's d_head axis goes with its head). `write`, if
    given, returns the units' (n_units, d_model) write directions; `weights`, the
    weights they read and write, each (n_units, ...) (`UnitGroup.unit_weights`)."""

    hook: str = ""
    write: Callable[[], Tensor] | None = field(default=None, repr=False, compare=False)
    weights: Callable[[], list[Tensor]] | None = field(default=None, repr=False, compare=False)
    channels: Callable[[], tuple[list[Tensor], list[Tensor]]] | None = field(
        default=None, repr=False, compare=False
    )

    def mean(self, model, batches) -> Tensor:
        return hook_means(model, batches, [self.hook])[self.hook]

    def hooks(self, mean: Tensor, keep: Tensor) -> list[Hook]:
        def fn(act: Tensor, _hook) -> Tensor:
            k = keep.view(keep.shape[0], 1, self.n_units, *([1] * (act.dim() - 3)))
            m = mean.to(act.dtype)
            if k.dtype == torch.bool:
                return torch.where(k, act, m)
            return m + k.to(act.dtype) * (act - m)

        return [(self.hook, fn)]

    def directions(self, model, batches=()) -> Tensor | None:
        return None if self.write is None else self.write()

    def unit_weights(self, model) -> list[Tensor]:
        return [] if self.weights is None else self.weights()

    def channel_weights(self, model) -> tuple[list[Tensor], list[Tensor]]:
        return ([], []) if self.channels is None else self.channels()


def head_units(model, layer: int) -> HookUnits:
    """The attention heads of a layer: one unit each, all d_head dims of hook_z
    together, reading W_Q, W_K, W_V and writing W_O (4 d_head d_model parameters)."""
    attn = model.blocks[layer].attn
    H, n_kv, d_head = attn.n_heads, attn.n_kv, attn.d_head

    def weights() -> list[Tensor]:
        q = attn.W_Q.weight.view(H, d_head, -1)
        k, v = (w.weight.view(n_kv, d_head, -1).repeat_interleave(H // n_kv, 0)
                for w in (attn.W_K, attn.W_V))  # fmt: skip
        o = attn.W_O.weight.view(-1, H, d_head).transpose(0, 1)
        return [q, k, v, o]

    def channels() -> tuple[list[Tensor], list[Tensor]]:
        q, k, v, o = weights()
        return [q, k, v], [o.transpose(1, 2)]  # o: (H, d_model, d_head) -> channel last

    return HookUnits(
        name=f"blocks.{layer}.attn.heads",
        layer=layer,
        kind="head",
        n_units=attn.n_heads,
        params_per_unit=4 * attn.d_head * model.cfg.d_model,
        reads="attn",
        hook=f"blocks.{layer}.attn.hook_z",
        weights=weights,
        channels=channels,
    )


# the residual reads of a block, in forward order: what attention reads (after ln1),
# then what the FFN reads (after ln2); the unembedding's read (after ln_final) is last
RESIDUAL_READS = {"attn": "blocks.{i}.ln1.hook_normalized", "mlp": "blocks.{i}.hook_mlp_in"}
FINAL_READ = "ln_final.hook_normalized"


def residual_reads(model) -> list[HookUnits]:
    """The residual stream's channels as each layer reads them (Gao et al. 2025's
    residual nodes): for every block, the d_model channels of attention's normalised
    input, then of the FFN's, and last those the unembedding reads. A channel unit
    mean-ablated changes what that one read sees, not the stream itself. A channel
    owns no weights (params_per_unit 0): the weights that read and write it are the
    units' (`UnitGroup.channel_weights`), and they join it in a circuit's edges."""
    d = model.cfg.d_model
    out = []
    for i in range(len(model.blocks)):
        for site, hook in RESIDUAL_READS.items():
            out.append(HookUnits(name=f"blocks.{i}.resid_read.{site}", layer=i, kind="residual",
                                 n_units=d, params_per_unit=0, reads=site,
                                 hook=hook.format(i=i)))  # fmt: skip
    out.append(HookUnits(name="ln_final.resid_read", layer=len(model.blocks), kind="residual",
                         n_units=d, params_per_unit=0, reads="unembed", hook=FINAL_READ))  # fmt: skip
    return out


def read_site(group: UnitGroup) -> int:
    """Where a group sits among the residual reads, in forward order: 2 layer for
    attention's read (heads, and its channel units), 2 layer + 1 for the FFN's, and
    2 n_layers for the unembedding's. A unit reads at its site and writes into the
    stream that every later site reads."""
    return 2 * group.layer + {"attn": 0, "mlp": 1, "unembed": 0}[group.reads]


def real_tokens(batch: Mapping[str, Tensor] | Tensor, device) -> tuple[Tensor, Tensor]:
    """(ids, real) of a batch (a dict with input_ids and maybe attention_mask, or a
    (B, T) tensor) on `device`: the tokens and the (B, T) mask of non-padding ones."""
    if isinstance(batch, Mapping):
        ids, att = batch["input_ids"], batch.get("attention_mask")
    else:
        ids, att = batch, None
    ids = ids.to(device)
    real = att.bool() if att is not None else torch.ones_like(ids, dtype=torch.bool)
    return ids, real.to(device)


@torch.no_grad()
def hook_means(model, batches, names: Sequence[str]) -> dict[str, Tensor]:
    """Mean over the real tokens of every batch of each hook's activation,
    (B, T, *shape) -> shape, in float32 on the model's device."""
    sums: dict[str, Tensor] = {}
    count = 0
    for batch in batches:
        ids, real = real_tokens(batch, model.device)
        _, cache = model.run_with_cache(ids, names_filter=list(names))
        for n in names:
            s = cache[n][real].float().sum(0)
            sums[n] = sums[n] + s if n in sums else s
        count += int(real.sum())
    return {n: s / max(count, 1) for n, s in sums.items()}


def unit_groups(model, include_heads: bool = True, include_ffn: bool = True) -> list[UnitGroup]:
    """The readable units of every layer, in forward order: the heads, then each
    FFN kind's groups (`FFN.unit_groups`), its finest first."""
    groups: list[UnitGroup] = []
    for i, block in enumerate(model.blocks):
        if include_heads:
            groups.append(head_units(model, i))
        if include_ffn:
            groups.extend(block.mlp.unit_groups(i))
    return groups


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The body runs with the model in eval mode; its mode is restored on exit."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextmanager
def frozen(model: nn.Module | None) -> Iterator[None]:
    """The body runs with no gradient computed for the model's weights (a backward
    pass reaches only what else requires one: masks, ablation coefficients); each
    weight's requires_grad is restored on exit. None: the body runs as it is."""
    if model is None:
        yield
        return
    was = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in was:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in was:
            p.requires_grad_(r)
