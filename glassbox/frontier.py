"""The capability–interpretability frontier of the gap report: pareto.png."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glassbox.metrics import Stat
from glassbox.report_tables import ReportTables

FRONTIER = ("mean_accuracy", "interp.coverage_lift")
FRONTIER_LABELS = (
    "capability: mean answer-token accuracy (test split)",
    "interpretability: contextual coverage lift over the token id",
)
POSTHOC_LABEL = "post-hoc transcoders"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher is better), by x."""
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
    )


def _frontier_point(values: Mapping[str, Stat | None] | None, capability: Mapping) -> tuple | None:
    """(capability mean, interpretability mean) of a summary, or None if either is missing."""
    x, y = capability.get(FRONTIER[0]), (values or {}).get(FRONTIER[1])
    return (x["mean"], y["mean"]) if x and y else None


def pareto_plot(report: ReportTables, path: Path) -> Path:
    """Capability (mean answer accuracy) against interpretability (coverage): every
    seed as a small dot, each architecture's mean as a labelled marker, the post-hoc
    route as a diamond at its architecture's capability, the non-dominated means
    joined into the frontier (pareto_front; both axes are higher-is-better)."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]

    def mark(xy: tuple, marker: str, label: str, offset: tuple[int, int], colour: str) -> None:
        ax.scatter([xy[0]], [xy[1]], s=70, marker=marker, color=colour, edgecolor="black", zorder=3)
        ax.annotate(label, xy, textcoords="offset points", xytext=offset, fontsize=9)

    points = []
    for n, (arch, s) in enumerate(report.summary.items()):
        c = colours[n % len(colours)]
        seeds = [r.values() for r in report.runs if r.arch == arch]
        xs, ys = ([v.get(k) for v in seeds] for k in FRONTIER)
        ax.scatter(xs, ys, s=12, color=c, alpha=0.5)
        if (p := _frontier_point(s, s)) is not None:
            mark(p, "o", arch, (6, 4), c)
            points.append(p)
        if (q := _frontier_point(report.posthoc_summary.get(arch), s)) is not None:
            mark(q, "D", f"{arch} + {POSTHOC_LABEL}", (6, -10), c)
    frontier = pareto_front(points)
    if len(frontier) > 1:
        ax.plot(*zip(*frontier), color="grey", linestyle="--", linewidth=1, zorder=1)
    ax.set_xlabel(FRONTIER_LABELS[0])
    ax.set_ylabel(FRONTIER_LABELS[1])
    ax.set_title("The capability–interpretability frontier")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return path
