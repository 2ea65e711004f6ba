"""Plotting helpers shared by the mechanistic tools: heat maps and line plots.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`, drawn
by the Agg canvas), never through pyplot: no global figure state, no display
backend, safe in tests and worker processes. Every function returns the Figure
and, given `path`, also writes it as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A Figure attached to an Agg canvas (so savefig works without pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path | None, dpi: int = 120) -> Figure:
    """Write `fig` as a PNG at `path` (parent folders made) if a path is given."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def heatmap(
    values: Tensor,  # (rows, cols)
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
    cbar_label: str = "",
    diverging: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    path: str | Path | None = None,
) -> Figure:
    """A heat map of a 2-D tensor, row 0 at the top.

    diverging=True centres a red-blue colour map on 0 with symmetric limits (for
    signed effects such as normalised patching scores); False uses a sequential
    map from vmin (default min) to vmax (default max), for scores in [0, 1].
    """
    v = values.detach().float().cpu()
    if v.dim() != 2:
        raise ValueError(f"heatmap needs a 2-D tensor, got shape {tuple(v.shape)}")
    rows, cols = v.shape
    fig = new_figure(min(max(5.0, 2.5 + 0.45 * cols), 16.0), min(max(3.0, 1.8 + 0.4 * rows), 12.0))
    ax = fig.add_subplot()
    finite = v[torch.isfinite(v)]
    if diverging:
        lim = float(finite.abs().max()) if finite.numel() else 1.0
        lim = lim if lim > 0 else 1.0
        lo, hi, cmap = -lim if vmin is None else vmin, lim if vmax is None else vmax, "RdBu_r"
    else:
        lo = vmin if vmin is not None else (float(finite.min()) if finite.numel() else 0.0)
        hi = vmax if vmax is not None else (float(finite.max()) if finite.numel() else 1.0)
        cmap = "viridis"
    im = ax.imshow(v.numpy(), cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax)
    if cbar_label:
        cbar.set_label(cbar_label)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _ticks(ax.set_xticks, ax.set_xticklabels, cols, xticklabels, rotation=90)
    _ticks(ax.set_yticks, ax.set_yticklabels, rows, yticklabels, rotation=0)
    return save_figure(fig, path)


def line_plot(
    series: dict[str, Tensor],  # label -> (n,)
    *,
    x: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    path: str | Path | None = None,
) -> Figure:
    """One line per entry of `series`, all over the same x (tick labels `x`)."""
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    n = 0
    for label, ys in series.items():
        ys = ys.detach().float().cpu()
        n = max(n, ys.numel())
        ax.plot(range(ys.numel()), ys.numpy(), marker="o", label=label)
    if x is not None:
        ax.set_xticks(range(len(x)))
        ax.set_xticklabels(list(x), rotation=45 if len(x) > 8 else 0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _ticks(set_ticks, set_labels, n: int, labels: Sequence[str] | None, rotation: int) -> None:
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"{len(labels)} tick labels for {n} cells")
        set_ticks(range(n))
        set_labels(list(labels), rotation=rotation)
    elif n <= 40:
        set_ticks(range(n))
