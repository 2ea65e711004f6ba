"""The readable units of a model on a text corpus, by domain (the FFN contract's
units: neurons, latents, expert gates), for analysis.text_analysis: how much more
each unit is used on a domain's tokens (`usage_contrast`), the rise of next-token
loss on every domain when a domain's most-used units are ablated
(`unit_selectivity`), what each unit writes and the tokens it promotes
(`unit_directions`, `promoted_tokens`), and the feature pages of the units most
selective for each domain (`feature_pages`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.activations import Collected
from glassbox.analysis.feature_pages import feature_contexts, render_html, render_text
from glassbox.analysis.logit_lens import unembed
from glassbox.analysis.mean_ablation import unit_groups, unit_means
from glassbox.analysis.routing_metrics import selectivity
from glassbox.analysis.specialisation import label_loss
from glassbox.archs.units import HookUnits

LABEL = "domain"  # the batches' per-token label column


def token_text(tokenizer, i: int) -> str:
    """Token i as the text it stands for (line breaks and tabs shown as escapes)."""
    if tokenizer is None:
        return str(i)
    text = tokenizer.decode([i], skip_special_tokens=False)
    return text.replace("\n", "\\n").replace("\t", "\\t") if text else f"<{i}>"


def usage_contrast(acts: Tensor, labels: Tensor, n_labels: int) -> Tensor:
    """(L, U) how much more each unit is used on a label's tokens than on the rest:
    (mean |act| on the label - mean |act| elsewhere) / mean |act| overall (0 for a
    unit never active). acts (N, U), labels (N,) (< 0 left out)."""
    keep = labels >= 0
    a, lab = acts[keep].abs().double(), labels[keep].long()
    sums = torch.zeros(n_labels, a.shape[1], dtype=torch.float64).index_add_(0, lab, a)
    n = torch.bincount(lab, minlength=n_labels).double()[:, None]
    total, N = sums.sum(0, keepdim=True), n.sum()
    on = sums / n.clamp_min(1)
    off = (total - sums) / (N - n).clamp_min(1)
    overall = total / max(float(N), 1.0)
    return torch.where(overall > 0, (on - off) / overall.clamp_min(1e-30), 0.0)


def unit_selectivity(
    model,
    acts: Mapping[int, Tensor],
    labels: Tensor,
    select_batches: Sequence[Mapping[str, Tensor]],
    causal_batches: Sequence[Mapping[str, Tensor]],
    label_names: Sequence[str],
    unit_share: float = 1 / 16,
    mode: str = "zero",
) -> dict[str, Any]:
    """Selectivity by label of neurons / latents: for each label, ablate in every
    layer of `acts` ({layer: (N, U)} over the tokens `labels` (N,) names) the
    ceil(unit_share * U) units with the largest `usage_contrast`, and measure the rise
    of next-token loss on every label of `causal_batches` (`label_loss`). mode
    "zero" sets them to 0, "mean" to their mean over `select_batches`
    (analysis.circuits.unit_means). Returns units {label:
    {layer: [u, ...]}}, base_loss (L,), drop (L, L) (row: whose units were ablated;
    column: label measured), delta_target, delta_others, selectivity."""
    L = len(label_names)
    groups = {
        g.layer: g
        for g in unit_groups(model, include_heads=False)
        if isinstance(g, HookUnits) and g.layer in acts
    }
    if mode == "mean":
        means = unit_means(model, select_batches, list(groups.values()))
    else:
        means = {g.name: torch.zeros(g.n_units, device=model.device) for g in groups.values()}
    contrast = {i: usage_contrast(acts[i], labels, L) for i in groups}
    present = torch.bincount(labels[labels >= 0], minlength=L)[:L] > 0
    base = label_loss(model, causal_batches, L, LABEL)
    drop = torch.full((L, L), float("nan"), dtype=torch.float64)
    chosen: dict[str, dict[int, list[int]]] = {}
    for d, name in enumerate(label_names):
        if not present[d]:
            continue
        hooks, chosen[name] = [], {}
        for i, g in groups.items():
            n = max(1, math.ceil(unit_share * g.n_units))
            units = contrast[i][d].topk(min(n, g.n_units)).indices
            keep = torch.ones(1, g.n_units, dtype=torch.bool, device=model.device)
            keep[0, units.to(model.device)] = False
            hooks += g.hooks(means[g.name], keep)
            chosen[name][i] = units.tolist()
        with model.hooks(hooks):
            drop[d] = label_loss(model, causal_batches, L, LABEL) - base
    sel = selectivity(drop)
    return {
        "mode": mode,
        "measure": "loss",
        "units": chosen,
        "base_loss": base.tolist(),
        "drop": drop.tolist(),
        "delta_target": sel["delta_target"].tolist(),
        "delta_others": sel["delta_others"].tolist(),
        "selectivity": sel["score"],
    }


@torch.no_grad()
def unit_directions(model, layer: int, batches: Sequence[Mapping[str, Tensor]]) -> Tensor | None:
    """(U, d_model) what each readable unit of a layer (`FFN.read_units`'s units)
    writes into the residual stream, as its kind's unit group says (archs.units: a
    neuron's W_out column, a latent's W_dec row, an expert's mean output over
    `batches`); None where the kind gives none."""
    mlp = model.blocks[layer].mlp
    for group in mlp.unit_groups(layer):
        if group.kind == mlp.unit_name:
            directions = group.directions(model, batches)
            return None if directions is None else directions.to(model.device)
    return None


@torch.no_grad()
def promoted_tokens(model, directions: Tensor, tokenizer=None, top: int = 8) -> list[list[str]]:
    """Per row of directions (U, d_model), the `top` tokens its logits through
    ln_final and W_U raise most (analysis.logit_lens.unembed)."""
    logits = unembed(model, directions.to(model.device).float())
    logits = logits - logits.mean(-1, keepdim=True)
    ids = logits.topk(min(top, logits.shape[-1]), dim=-1).indices.tolist()
    return [[token_text(tokenizer, i) for i in row] for row in ids]


def feature_pages(
    model,
    layer: int,
    acts: Tensor,
    col: Collected,
    labels: Tensor,
    label_names: Sequence[str],
    contrast: Tensor,
    batches: Sequence[Mapping[str, Tensor]],
    out_dir: Path,
    per_label: int = 4,
    k: int = 8,
) -> dict[str, str]:
    """features_layer{layer}.txt / .html: the `per_label` units most selective for
    each domain (by `contrast`, (L, U)), their top-k contexts, and per unit a line
    with its domain, its relative usage there and the tokens it promotes."""
    name = f"blocks.{layer}.mlp.units"
    units: list[int] = []
    for d in range(len(label_names)):
        units += [u for u in contrast[d].topk(min(per_label, acts.shape[1])).indices.tolist()]
    units = list(dict.fromkeys(units))
    page_col = replace(col, acts={name: acts}, skill=labels)
    contexts = feature_contexts(
        page_col,
        name,
        units,
        k=k,
        tokenizer=lambda i: token_text(model.tokenizer, i),
        skill_names=list(label_names),
    )
    for ctxs in contexts.values():  # the label is a domain here, not a skill
        for c in ctxs:
            if "skill" in c.labels:
                c.labels = {LABEL: c.labels.pop("skill"), **c.labels}
    summaries = _unit_lines(model, layer, acts, labels, label_names, contrast, units, batches)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "text": out_dir / f"features_layer{layer}.txt",
        "html": out_dir / f"features_layer{layer}.html",
    }
    paths["text"].write_text(render_text(contexts, summaries))
    paths["html"].write_text(
        render_html(contexts, summaries, title=f"layer {layer}: units by domain")
    )
    return {k: str(v) for k, v in paths.items()}


def _unit_lines(
    model,
    layer: int,
    acts: Tensor,
    labels: Tensor,
    label_names: Sequence[str],
    contrast: Tensor,
    units: list[int],
    batches: Sequence[Mapping[str, Tensor]],
) -> dict[int, str]:
    """{unit: one line}: the domain it is most used on (by `contrast`), the share of
    its |activation| and of the tokens there, and the tokens it promotes."""
    directions = unit_directions(model, layer, batches)
    promoted = (
        promoted_tokens(model, directions[units], model.tokenizer)
        if directions is not None
        else None
    )
    best = contrast[:, units].argmax(0).tolist()
    # share of each unit's |activation| that falls on each label, and of the tokens
    keep = labels >= 0
    mass = torch.zeros(len(label_names), len(units), dtype=torch.float64).index_add_(
        0, labels[keep].long(), acts[keep][:, units].abs().double()
    )
    mass = mass / mass.sum(0, keepdim=True).clamp_min(1e-30)
    tokens = torch.bincount(labels[keep].long(), minlength=len(label_names)) / max(
        int(keep.sum()), 1
    )
    summaries = {}
    for j, u in enumerate(units):
        d = best[j]
        line = (
            f"most used on {label_names[d]}: {float(mass[d, j]):.0%} of its activation, "
            f"{float(tokens[d]):.0%} of the tokens"
        )
        if promoted is not None:
            line += " | promotes: " + " ".join(f"'{t}'" for t in promoted[j])
        summaries[u] = line
    return summaries


__all__ = [
    "LABEL",
    "feature_pages",
    "promoted_tokens",
    "token_text",
    "unit_directions",
    "unit_selectivity",
    "usage_contrast",
]
