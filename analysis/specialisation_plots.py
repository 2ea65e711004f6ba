"""Plots of expert specialisation: expert-by-skill heat maps and the causal
selectivity matrix. matplotlib's object API on the Agg canvas (no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_expert_skill(
    shares: Mapping[int, Tensor],
    skill_names: Sequence[str],
    path: str | Path | None = None,
    title: str = "share of each expert's token-slots by skill",
    ylabel: str = "expert",
    label: str = "skill",
) -> Figure:
    """One heat map per layer: shares[layer] is (n_experts, n_skills), rows sum to 1
    (P(skill | expert)); a specialised expert is a row with one bright cell. A column
    no unit of any layer saw (a label absent from the sample: on code every package is
    a domain and a sample holds a few) is left out. `label` names the columns."""
    layers = sorted(shares)
    seen = torch.stack([shares[i].sum(0) for i in layers]).sum(0) > 0
    if not seen.all():
        keep = seen.nonzero().flatten()
        shares = {i: shares[i][:, keep] for i in layers}
        skill_names = [skill_names[int(k)] for k in keep]
    n_groups = max(int(shares[i].shape[0]) for i in layers)
    width = min(2.5 + 0.45 * len(skill_names), 8.0) * len(layers)
    fig = _figure(min(width, 24.0), min(2.0 + 0.22 * n_groups, 14.0))
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        im = ax.imshow(shares[layer].float().cpu().numpy(), aspect="auto", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}")
        ax.set_xticks(range(len(skill_names)), list(skill_names), rotation=60, ha="right")
        ax.set_ylabel(ylabel)
    row = "expert" if ylabel == "expert" else "cluster"
    fig.colorbar(im, ax=list(axes), label=f"P({label} | {row})")
    fig.suptitle(title)
    return _save(fig, path)


def plot_selectivity(
    drop: Tensor, skill_names: Sequence[str], path: str | Path | None = None
) -> Figure:
    """drop[s, t]: accuracy lost on skill t when skill s's experts are ablated. A
    selective model has a bright diagonal and a dark rest."""
    v = drop.float().cpu()
    lim = max(float(v.nan_to_num().abs().max()), 1e-6)
    n = len(skill_names)
    fig = _figure(min(2.5 + 0.5 * n, 12.0), min(2.0 + 0.45 * n, 10.0))
    ax = fig.subplots()
    im = ax.imshow(v.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    for s in range(n):
        for t in range(n):
            if not v[s, t].isnan():
                colour = "white" if abs(float(v[s, t])) > 0.6 * lim else "black"
                ax.text(t, s, f"{v[s, t]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), list(skill_names), rotation=60, ha="right")
    ax.set_yticks(range(n), list(skill_names))
    ax.set_xlabel("accuracy drop on skill")
    ax.set_ylabel("experts ablated: those of skill")
    fig.colorbar(im, ax=ax, label="accuracy drop")
    ax.set_title("causal selectivity")
    return _save(fig, path)
