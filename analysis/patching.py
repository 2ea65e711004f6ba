"""Activation patching (denoising): run the corrupted input, put back the clean
value of one component, and measure how much of the clean behaviour returns.

    score = (metric(patched) - metric(corrupted)) / (metric(clean) - metric(corrupted))

1 means the component alone restores the clean behaviour, 0 that it does nothing
(Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024, "How to use and
interpret activation patching").

Everything is built on one generic operation, "patch a slice of any hook point":
`slice_patch(name, index, clean_cache)` returns a (hook name, hook fn) pair that
overwrites `act[index]` with the clean run's `act[index]`. `index` indexes the
whole activation, batch dimension included, e.g.

    (slice(None), 3)                 position 3 of (B, T, d) in every example
    (slice(None), slice(None), 2)    head 2 of hook_z (B, T, H, D), every position
    (Ellipsis, 17)                   latent 17 of a transcoder's hook_latents

The helpers sweep the usual components and return (n_layers, n_pos),
(n_layers, n_heads), (n_layers, n_experts), (n_latents,) grids. Any variant works:
the helpers only look for hook names (an MoE layer is one that has
`blocks.{i}.mlp.hook_expert_weights`, a transcoder layer one that has
`blocks.{i}.mlp.hook_latents`).

Clean and corrupted inputs must have the same shape (and the same padding): a
position means the same slot in both. `metric(logits) -> scalar` reduces over
the batch. Each patch is a run of the corrupted batch; a sweep stacks several
patched copies of it into one forward pass (up to `max_rows` rows) when the
model computes every row on its own, which `rows_independent` checks first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from glassbox.analysis.plots import heatmap, line_plot
from glassbox.archs.hooks import ActivationCache, HookFn

Hook = tuple[str, HookFn]
Metric = Callable[[Tensor], Tensor | float]  # logits (B, T, V) -> scalar
SiteFn = Callable[[tuple[int, ...]], Sequence[Hook]]

BLOCK_OUTPUTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@dataclass
class PatchingResult:
    """A grid of patching scores.

    scores: normalised (patched - corrupted) / (clean - corrupted), grid shape.
    patched: the raw metric of each patched run, grid shape.
    clean, corrupted: the metric of the unpatched clean and corrupted runs.
    dims: what each grid axis indexes, e.g. ("layer", "pos").
    labels: per axis, tick labels (e.g. layer numbers of the MoE layers), or None.
    """

    scores: Tensor
    patched: Tensor
    clean: float
    corrupted: float
    dims: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)


def normalise(patched: Tensor, clean: float, corrupted: float) -> Tensor:
    """(patched - corrupted) / (clean - corrupted)."""
    gap = clean - corrupted
    if gap == 0:
        raise ValueError(
            f"the metric is {clean} on both the clean and the corrupted input: nothing to "
            "restore; use inputs the model tells apart (or normalise=False)"
        )
    return (patched - corrupted) / gap


def slice_patch(name: str, index, source: ActivationCache | dict[str, Tensor]) -> Hook:
    """A hook that overwrites `act[index]` with `source[name][index]`.

    index: anything a tensor accepts (tuple of ints / slices / Ellipsis / index
    tensors), over the whole activation including the batch dimension."""
    value = source[name]

    def fn(act: Tensor, hook) -> Tensor:
        out = act.clone()
        out[index] = value[index].to(out.dtype)
        return out

    return name, fn


def add_patch(name: str, delta: Tensor) -> Hook:
    """A hook that adds `delta` (broadcastable to the activation) to it."""

    def fn(act: Tensor, hook) -> Tensor:
        return act + delta.to(act.dtype)

    return name, fn


def metric_value(metric: Metric, logits: Tensor) -> float:
    v = metric(logits)
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(
                f"the metric returned a tensor of shape {tuple(v.shape)}; it must reduce "
                "the batch to one number"
            )
        return float(v.detach().float().cpu())
    return float(v)


@torch.no_grad()
def run_with_patches(
    model,
    tokens: Tensor,  # (B, T)
    hooks: Sequence[Hook],
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Logits (B, T, V) of `tokens` with the given patch hooks attached."""
    with model.hooks(list(hooks)):
        return model(tokens, attention_mask=attention_mask)


@torch.no_grad()
def rows_independent(model, tokens: Tensor, attention_mask: Tensor | None = None) -> bool:
    """Whether each row of a batch is computed on its own: the logits of `tokens`
    alone equal their logits next to other rows. False for a model with a
    batch-level operation (a BatchTopK transcoder choosing its top k*N over the
    batch), where patches must not share a forward pass."""
    g = torch.Generator().manual_seed(0)
    other = torch.randint(0, model.cfg.vocab_size, tokens.shape, generator=g).to(tokens.device)
    mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    alone = model(tokens, attention_mask=attention_mask).float()
    joint = model(torch.cat([tokens, other]), attention_mask=mask)[: len(tokens)].float()
    return torch.allclose(alone, joint, rtol=1e-4, atol=1e-4 * float(alone.abs().max()))


def _stacked_hooks(per_copy: list[Sequence[Hook]], B: int) -> list[Hook]:
    """Hooks for a batch of stacked copies of the corrupted input: copy j (rows
    j*B .. (j+1)*B) gets the hooks per_copy[j], applied to its rows only."""
    by_name: dict[str, list[tuple[int, HookFn]]] = {}
    for j, hooks in enumerate(per_copy):
        for name, fn in hooks:
            by_name.setdefault(name, []).append((j, fn))

    def combined(entries: list[tuple[int, HookFn]]) -> HookFn:
        def fn(act: Tensor, hook) -> Tensor:
            out = act.clone()
            for j, f in entries:
                res = f(act[j * B : (j + 1) * B], hook)
                if res is not None:
                    out[j * B : (j + 1) * B] = res
            return out

        return fn

    return [(name, combined(entries)) for name, entries in by_name.items()]


@torch.no_grad()
def patch_sweep(
    model,
    corrupted_tokens: Tensor,  # (B, T)
    metric: Metric,
    sites: SiteFn,
    shape: tuple[int, ...],
    clean: float,
    corrupted: float,
    dims: tuple[str, ...],
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
    max_rows: int | None = 256,
) -> PatchingResult:
    """Run the corrupted input once per grid cell with the hooks `sites(cell)`
    returns; gather the metric into a grid of `shape`.

    Several cells share a forward pass as stacked copies of the corrupted batch
    (up to `max_rows` rows), each copy patched on its own rows and scored by
    `metric` on its own logits; this is exact when rows do not interact
    (checked with `rows_independent`, else one cell per pass). max_rows=None:
    always one cell per pass."""
    B = len(corrupted_tokens)
    cells = list(itertools.product(*(range(n) for n in shape)))
    per_pass = 1
    if max_rows is not None and max_rows >= 2 * B and len(cells) > 1:
        if rows_independent(model, corrupted_tokens, attention_mask):
            per_pass = max_rows // B
    patched = torch.empty(shape, dtype=torch.float64)
    for start in range(0, len(cells), per_pass):
        chunk = cells[start : start + per_pass]
        n = len(chunk)
        if n == 1:
            logits = run_with_patches(model, corrupted_tokens, sites(chunk[0]), attention_mask)
            patched[chunk[0]] = metric_value(metric, logits)
            continue
        hooks = _stacked_hooks([sites(cell) for cell in chunk], B)
        mask = None if attention_mask is None else attention_mask.repeat(n, 1)
        logits = run_with_patches(model, corrupted_tokens.repeat(n, 1), hooks, mask)
        for j, cell in enumerate(chunk):
            patched[cell] = metric_value(metric, logits[j * B : (j + 1) * B])
    scores = normalise(patched, clean, corrupted) if normalise_scores else patched.clone()
    return PatchingResult(scores.float(), patched.float(), clean, corrupted, dims)


@torch.no_grad()
def activation_patching(
    model,
    clean_tokens: Tensor,  # (B, T)
    corrupted_tokens: Tensor,  # (B, T)
    metric: Metric,
    hook_names: Sequence[str],
    sites: Callable[[tuple[int, ...], ActivationCache], Sequence[Hook]],
    shape: tuple[int, ...],
    dims: tuple[str, ...],
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
    max_rows: int | None = 256,
) -> PatchingResult:
    """The generic sweep: cache `hook_names` on the clean input, then for every
    cell of `shape` run the corrupted input with `sites(cell, clean_cache)`.

    Example (every latent of a transcoder layer, every position):

        activation_patching(model, clean, corrupt, metric, ["blocks.1.mlp.hook_latents"],
            lambda c, cache: [slice_patch("blocks.1.mlp.hook_latents", (slice(None), c[1], c[0]), cache)],
            shape=(d_latent, T), dims=("latent", "pos"))
    """
    _check_pair(clean_tokens, corrupted_tokens)
    clean_logits, cache = model.run_with_cache(
        clean_tokens, attention_mask=attention_mask, names_filter=list(hook_names)
    )
    clean = metric_value(metric, clean_logits)
    corrupted = metric_value(metric, model(corrupted_tokens, attention_mask=attention_mask))
    return patch_sweep(
        model,
        corrupted_tokens,
        metric,
        lambda cell: sites(cell, cache),
        shape,
        clean,
        corrupted,
        dims,
        attention_mask,
        normalise_scores,
        max_rows,
    )


def patch_slices(
    model,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    hook_name: str,
    indices: Sequence,
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
    max_rows: int | None = 256,
) -> PatchingResult:
    """Patch each of `indices` of one hook point in turn: result (len(indices),).

    `patch_slices(m, c, x, metric, "blocks.0.hook_resid_post", [(slice(None), p) for p in range(T)])`
    is one row of `patch_residual`."""
    _require_hook(model, hook_name)
    return activation_patching(
        model,
        clean_tokens,
        corrupted_tokens,
        metric,
        [hook_name],
        lambda c, cache: [slice_patch(hook_name, indices[c[0]], cache)],
        (len(indices),),
        ("slice",),
        attention_mask,
        normalise_scores,
        max_rows,
    )


def patch_residual(
    model,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    hook: str = "resid_pre",
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
    max_rows: int | None = 256,
) -> PatchingResult:
    """Patch one block output at one position: (n_layers, n_pos).

    hook: resid_pre | resid_mid | resid_post | attn_out | mlp_out (the hook
    `blocks.{layer}.hook_{hook}`), patched at position `pos` of every example."""
    if hook not in BLOCK_OUTPUTS:
        raise ValueError(f"hook={hook!r}: one of {', '.join(BLOCK_OUTPUTS)}")
    n_layers, T = model.cfg.n_layers, clean_tokens.shape[1]
    names = [f"blocks.{i}.hook_{hook}" for i in range(n_layers)]
    return activation_patching(
        model,
        clean_tokens,
        corrupted_tokens,
        metric,
        names,
        lambda c, cache: [slice_patch(names[c[0]], (slice(None), c[1]), cache)],
        (n_layers, T),
        ("layer", "pos"),
        attention_mask,
        normalise_scores,
        max_rows,
    )


def patch_mlp_out(model, clean_tokens, corrupted_tokens, metric, **kw) -> PatchingResult:
    """Patch the FFN output (any kind) of one layer at one position: (n_layers, n_pos)."""
    return patch_residual(model, clean_tokens, corrupted_tokens, metric, hook="mlp_out", **kw)


def patch_heads(
    model,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    by_position: bool = False,
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
    max_rows: int | None = 256,
) -> PatchingResult:
    """Patch one head's output `blocks.{l}.attn.hook_z[:, :, h]` (before W_O).

    Returns (n_layers, n_heads), every position at once, or with by_position
    (n_layers, n_heads, n_pos)."""
    n_layers, H, T = model.cfg.n_layers, model.cfg.n_heads, clean_tokens.shape[1]
    names = [f"blocks.{i}.attn.hook_z" for i in range(n_layers)]
    if by_position:
        return activation_patching(
            model,
            clean_tokens,
            corrupted_tokens,
            metric,
            names,
            lambda c, cache: [slice_patch(names[c[0]], (slice(None), c[2], c[1]), cache)],
            (n_layers, H, T),
            ("layer", "head", "pos"),
            attention_mask,
            normalise_scores,
            max_rows,
        )
    return activation_patching(
        model,
        clean_tokens,
        corrupted_tokens,
        metric,
        names,
        lambda c, cache: [slice_patch(names[c[0]], (slice(None), slice(None), c[1]), cache)],
        (n_layers, H),
        ("layer", "head"),
        attention_mask,
        normalise_scores,
        max_rows,
    )


def ffn_layers_with(model, hook_suffix: str) -> list[int]:
    """Layers whose FFN has the hook `blocks.{i}.mlp.{hook_suffix}`."""
    names = set(model.hook_names)
    return [i for i in range(model.cfg.n_layers) if f"blocks.{i}.mlp.{hook_suffix}" in names]


def patch_latents(
    model,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    layer: int,
    latents: Sequence[int] | None = None,
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
    max_rows: int | None = 256,
) -> PatchingResult:
    """Patch one transcoder latent `blocks.{layer}.mlp.hook_latents[..., j]` at
    every position: (len(latents),). latents=None takes the latents whose value
    differs between the clean and corrupted runs (the others patch to a no-op and
    score exactly 0), in increasing order; result.labels["latent"] names them."""
    name = f"blocks.{layer}.mlp.hook_latents"
    _require_hook(model, name, "a transcoder layer")
    if latents is None:
        latents = changed_latents(model, clean_tokens, corrupted_tokens, layer, attention_mask)
    latents = [int(j) for j in latents]
    result = patch_slices(
        model,
        clean_tokens,
        corrupted_tokens,
        metric,
        name,
        [(Ellipsis, j) for j in latents],
        attention_mask,
        normalise_scores,
        max_rows,
    )
    result.dims = ("latent",)
    result.labels = {"latent": [str(j) for j in latents]}
    return result


@torch.no_grad()
def changed_latents(
    model, clean_tokens: Tensor, corrupted_tokens: Tensor, layer: int, attention_mask=None
) -> list[int]:
    """Latents of a transcoder layer whose activations differ anywhere between the
    clean and the corrupted input."""
    name = f"blocks.{layer}.mlp.hook_latents"
    _, a = model.run_with_cache(clean_tokens, attention_mask=attention_mask, names_filter=[name])
    _, b = model.run_with_cache(
        corrupted_tokens, attention_mask=attention_mask, names_filter=[name]
    )
    diff = (a[name] - b[name]).abs().flatten(0, -2).amax(0)  # (d_latent,)
    return diff.nonzero().flatten().tolist()


@torch.no_grad()
def expert_contribution(
    model,
    tokens: Tensor,  # (B, T)
    layer: int,
    expert: int,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """What routed expert `expert` of MoE layer `layer` adds to `hook_mlp_out`:
    (B, T, d_model), zero at tokens not routed to it.

    Computed as mlp_out minus mlp_out with that expert's gate weight zeroed
    (`hook_expert_weights` where `hook_expert_indices == expert`). The indices
    come from an unhooked run: zeroing a gate weight does not change the layer's
    input, so the routing in both runs is the same."""
    pre = f"blocks.{layer}.mlp"
    idx_name, w_name, out_name = (
        f"{pre}.hook_expert_indices",
        f"{pre}.hook_expert_weights",
        f"blocks.{layer}.hook_mlp_out",
    )
    _require_hook(model, w_name, "an MoE layer")
    _, cache = model.run_with_cache(
        tokens, attention_mask=attention_mask, names_filter=[idx_name, out_name]
    )
    chosen = cache[idx_name] == expert  # (B, T, k)

    def drop(w: Tensor, hook) -> Tensor:
        return w.masked_fill(chosen.reshape(w.shape), 0.0)

    with model.hooks([(w_name, drop)]):
        _, ablated = model.run_with_cache(
            tokens, attention_mask=attention_mask, names_filter=[out_name]
        )
    return cache[out_name] - ablated[out_name]


def n_experts_of(model, layer: int) -> int:
    """The number of groups a routed layer sends tokens to (`FFN.routes`: a MoE's
    experts); ValueError for a layer that does not route."""
    mlp = model.blocks[layer].mlp
    if not mlp.routes:
        raise ValueError(f"layer {layer} is not an MoE layer (ffn kind {mlp.kind!r})")
    return int(mlp.n_experts)


@torch.no_grad()
def patch_experts(
    model,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    layers: Sequence[int] | None = None,
    attention_mask: Tensor | None = None,
    normalise_scores: bool = True,
) -> PatchingResult:
    """Patch one expert's contribution: in the corrupted run, layer l's FFN output
    loses what expert e added there and gains what e added in the clean run
    (`hook_mlp_out += contrib_clean - contrib_corrupted`, every position).

    Returns (len(layers), max n_experts); layers=None takes every MoE layer;
    cells past a layer's expert count are NaN. result.labels["layer"] names the
    layers."""
    _check_pair(clean_tokens, corrupted_tokens)
    layers = list(ffn_layers_with(model, "hook_expert_weights") if layers is None else layers)
    if not layers:
        raise ValueError("patch_experts: the model has no MoE layer (no mlp.hook_expert_weights)")
    counts = [n_experts_of(model, layer) for layer in layers]
    clean = metric_value(metric, model(clean_tokens, attention_mask=attention_mask))
    corrupted = metric_value(metric, model(corrupted_tokens, attention_mask=attention_mask))
    patched = torch.full((len(layers), max(counts)), float("nan"), dtype=torch.float64)
    for row, (layer, n) in enumerate(zip(layers, counts)):
        for e in range(n):
            delta = expert_contribution(
                model, clean_tokens, layer, e, attention_mask
            ) - expert_contribution(model, corrupted_tokens, layer, e, attention_mask)
            hook = add_patch(f"blocks.{layer}.hook_mlp_out", delta)
            logits = run_with_patches(model, corrupted_tokens, [hook], attention_mask)
            patched[row, e] = metric_value(metric, logits)
    scores = normalise(patched, clean, corrupted) if normalise_scores else patched.clone()
    return PatchingResult(
        scores.float(),
        patched.float(),
        clean,
        corrupted,
        ("layer", "expert"),
        {"layer": [str(layer) for layer in layers]},
    )


def plot_patching(
    result: PatchingResult,
    title: str = "Activation patching",
    xticklabels: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Heat map of a 2-D result (rows: its first axis), or a line for a 1-D one.
    A 3-D result (layer, head, pos) is drawn one slice at a time by the caller."""
    s = result.scores
    if s.dim() == 1:
        x = result.labels.get(result.dims[0])
        return line_plot(
            {"score": s},
            x=x if x is not None else xticklabels,
            title=title,
            xlabel=result.dims[0],
            ylabel="normalised score",
            path=path,
        )
    if s.dim() != 2:
        raise ValueError(
            f"plot_patching draws 1-D and 2-D results; this one is {result.dims}: "
            "plot a slice (e.g. result.scores[:, :, pos])"
        )
    rows, cols = result.dims
    return heatmap(
        s,
        title=title,
        xlabel=cols,
        ylabel=rows,
        xticklabels=result.labels.get(cols, xticklabels),
        yticklabels=result.labels.get(rows),
        cbar_label="normalised effect",
        path=path,
    )


def _check_pair(clean: Tensor, corrupted: Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} "
            "must have the same shape (a position must mean the same slot in both)"
        )


def _require_hook(model, name: str, what: str = "") -> None:
    if name not in model.hook_dict:
        extra = f" (it needs {what})" if what else ""
        raise KeyError(f"the model has no hook point {name!r}{extra}")
