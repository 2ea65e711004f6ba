"""Writing the gap report: report.md (tables first), report.json, pareto.png."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glassbox.compare import CompareConfig, gap_percent  # noqa: E402

# Interpretability columns: (key, header, what it is)
INTERP_COLUMNS = [
    ("interp.coverage", "coverage", "ground-truth coverage of the readable units (mean best F1)"),
    (
        "interp.nmi_expert_skill_label",
        "NMI(unit;skill)",
        "I(expert; skill)/H(skill); dense: k-means clusters of neurons",
    ),
    ("interp.purity", "purity", "share of an expert's tokens from its top skill"),
    (
        "interp.selectivity",
        "selectivity",
        "ablating a skill's experts: drop on it minus drop on the others",
    ),
    ("interp.l0", "L0", "active latents per token"),
    ("interp.dead_fraction", "dead", "share of latents that never fire"),
    ("interp.tool_reliance", "tool reliance", "answers that follow an injected tool result"),
]


def _fmt(stat: dict | None, digits: int = 3, pct: bool = False) -> str:
    if not stat:
        return "–"
    m, s = stat["mean"], stat["std"]
    if pct:
        return f"{100 * m:.1f} ± {100 * s:.1f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if stat["n"] > 1 else f"{m:.{digits}f}"


def _gap(stat: dict | None, dense: dict | None) -> str:
    g = gap_percent(stat["mean"] if stat else None, dense["mean"] if dense else None)
    return "–" if g is None else f"{g:+.1f}%"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher is better), by x."""
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
    )


def pareto_plot(rows: list[dict], agg: dict[str, dict], path: Path) -> Path:
    """Capability (mean answer accuracy) against interpretability (coverage): every
    seed as a small dot, each architecture's mean as a labelled marker, the
    non-dominated means joined into the frontier."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (arch, a) in enumerate(agg.items()):
        c = colours[n % len(colours)]
        xs = [r["mean_accuracy"] for r in rows if r["arch"] == arch]
        ys = [r["interp"].get("interp.coverage") for r in rows if r["arch"] == arch]
        ax.scatter(xs, ys, s=12, color=c, alpha=0.5)
        cov = a["interp"].get("interp.coverage")
        if a["mean_accuracy"] and cov:
            x, y = a["mean_accuracy"]["mean"], cov["mean"]
            ax.scatter([x], [y], s=70, color=c, edgecolor="black", zorder=3)
            ax.annotate(arch, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
            points.append((x, y))
        post = a["interp"].get("interp.coverage_posthoc")
        if post and a["mean_accuracy"]:
            x, y = a["mean_accuracy"]["mean"], post["mean"]
            ax.scatter([x], [y], s=70, marker="D", color=c, edgecolor="black", zorder=3)
            ax.annotate(
                f"{arch} + post-hoc transcoders",
                (x, y),
                textcoords="offset points",
                xytext=(6, -10),
                fontsize=9,
            )
    frontier = sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
    )
    if len(frontier) > 1:
        ax.plot(*zip(*frontier), color="grey", linestyle="--", linewidth=1, zorder=1)
    ax.set_xlabel("capability: mean answer-token accuracy (test split)")
    ax.set_ylabel("interpretability: ground-truth coverage")
    ax.set_title("The capability–interpretability frontier")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out: Path, cc: CompareConfig, rows: list[dict], agg: dict[str, dict]) -> Path:
    dense = agg.get("dense", {})
    lines: list[str] = []
    lines.append("# What interpretability costs, and what it buys\n")
    # --- capability table first
    lines.append(
        "| architecture | val loss | gap | answer accuracy | gap | exact match | OOD accuracy | active params |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for arch, a in agg.items():
        lines.append(
            f"| {arch} | {_fmt(a['val_loss'])} | {_gap(a['val_loss'], dense.get('val_loss'))} "
            f"| {_fmt(a['mean_accuracy'], pct=True)} | {_gap(a['mean_accuracy'], dense.get('mean_accuracy'))} "
            f"| {_fmt(a['mean_exact_match'], pct=True)} | {_fmt(a['ood_accuracy'], pct=True)} "
            f"| {a['params_active']:,} |"
        )
    lines.append("")
    lines.append("| architecture | " + " | ".join(h for _, h, _ in INTERP_COLUMNS) + " |")
    lines.append("|---|" + "---|" * len(INTERP_COLUMNS))
    for arch, a in agg.items():
        cells = [_fmt(a["interp"].get(k)) for k, _, _ in INTERP_COLUMNS]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
        if "interp.coverage_posthoc" in a["interp"]:
            post = [r["posthoc"] for r in rows if r["arch"] == arch and "posthoc" in r]
            cells = ["–"] * len(INTERP_COLUMNS)
            cells[0] = _fmt(a["interp"]["interp.coverage_posthoc"])
            l0s = [p["l0"] for p in post if p.get("l0") is not None]
            if l0s:
                cells[4] = f"{sum(l0s) / len(l0s):.1f}"
            lines.append(f"| {arch} + post-hoc transcoders | " + " | ".join(cells) + " |")
    lines.append("")
    steps = [r["train"].get("steps") for r in rows]
    tokens = dense.get("train_tokens")
    lines.append(
        f"Mean ± standard deviation over seeds {list(cc.seeds)}; gaps are to the dense baseline "
        "(negative accuracy gap = capability given up). "
        f"**Held equal:** the data (the skill suite, same seed), {max(s or 0 for s in steps)} optimiser steps "
        f"and batch size, so about {tokens['mean']:,.0f} training tokens per run, "
        "and active parameters per token (each configs/model/*.yaml states its matching): "
        + ", ".join(
            f"{arch} {a['params_active']:,} active / {a['params_total']:,} total"
            for arch, a in agg.items()
        )
        + "."
        if tokens
        else ""
    )
    lines.append("")
    callers = [arch for arch, a in agg.items() if a["interp"].get("interp.call_recall")]
    if callers:
        lines.append(
            f"{', '.join(callers)}: capability of the model with its tools. Its addition and facts "
            "examples carry the tool's result in the context, so those answers are copies; the table "
            "below compares generated answers, the tool model's with calls executed, the dense "
            "model's from its weights.\n"
        )
    lines.append("## Columns\n")
    lines.append(
        "- **val loss**: mean cross-entropy of the loss-masked (answer) tokens, test split."
    )
    lines.append(
        "- **answer accuracy**: answer tokens predicted right, mean over skills; **exact match**: whole answers right; **OOD**: the longer / deeper out-of-distribution split."
    )
    for _, h, what in INTERP_COLUMNS:
        lines.append(f"- **{h}**: {what}.")
    lines.append("")
    # --- per skill
    skills = sorted({s for a in agg.values() for s in a["skills"]})
    lines.append("## Per-skill answer accuracy (%)\n")
    lines.append("| architecture | " + " | ".join(skills) + " |")
    lines.append("|---|" + "---|" * len(skills))
    for arch, a in agg.items():
        lines.append(
            f"| {arch} | " + " | ".join(_fmt(a["skills"].get(s), pct=True) for s in skills) + " |"
        )
    lines.append("")
    # --- tool calling against answering from the weights
    tool_cols = [
        ("tools.exact_match", "addition + facts exact match"),
        ("tools.exact_match_withheld", "result withheld"),
        ("tools.addition_2x", "addition 2x digits"),
        ("tools.addition_4x", "addition 4x digits"),
        ("tools.facts_accuracy", "facts (held-out phrasing)"),
    ]
    with_tools = {arch: a for arch, a in agg.items() if a.get("tools")}
    if with_tools:
        lines.append("\n## Tool calling against answering from the weights (%)\n")
        lines.append(
            "| architecture | "
            + " | ".join(h for _, h in tool_cols)
            + " | call precision | call recall | reliance |"
        )
        lines.append("|---|" + "---|" * (len(tool_cols) + 3))
        for arch, a in with_tools.items():
            cells = [_fmt(a["tools"].get(k), pct=True) for k, _ in tool_cols]
            cells += [
                _fmt(a["interp"].get(k), pct=True)
                for k in ("interp.call_precision", "interp.call_recall", "interp.tool_reliance")
            ]
            lines.append(f"| {arch} | " + " | ".join(cells) + " |")
        lines.append(
            "\nGenerated answers (greedy; tool calls executed for a tool model). Reliance: the share of "
            "answers that follow a counterfactual result injected in place of the tool's (the true sum "
            "plus a random nonzero offset; a different attribute).\n"
        )
    # --- post-hoc fidelity and cost
    post = [r["posthoc"] for r in rows if "posthoc" in r]
    if post:
        lines.append("## The post-hoc route on the dense baseline\n")
        lines.append(
            "| seed | coverage | FVU | CE loss recovered | KL to clean | fit seconds | cost ratio (post-hoc / by construction) |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for p in post:
            ratio = p["cost"]["ratio"] if p.get("cost") else None
            lines.append(
                f"| {p['seed']} | {p['coverage']:.3f} | {_num(p.get('fvu'))} | {_num(p.get('ce_loss_recovered'))} "
                f"| {_num(p.get('kl_to_clean'))} | {p['fit_seconds']:.1f} | {_num(ratio, 1)} |"
            )
        lines.append(
            "\nThe cost ratio is wall-clock time measured in one process: fitting the transcoders "
            f"({post[0]['steps']} steps) plus reading features through them, against one cached "
            "forward pass of the transcoder model over the same held-out tokens "
            "(training.transcoder_fit.measure_feature_cost).\n"
        )
    # --- plots
    lines.append("## Plots\n")
    pareto = pareto_plot(rows, agg, out / "pareto.png")
    lines.append(f"![capability against interpretability]({pareto.name})\n")
    for r in rows:
        for p in r.get("plots", []):
            rel = Path(p).relative_to(out) if Path(p).is_relative_to(out) else Path(p)
            lines.append(f"- {r['arch']} seed {r['seed']}: [{Path(p).stem}]({rel})")
    lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    report = {
        "config": asdict(cc),
        "architectures": agg,
        "runs": rows,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return out / "report.md"


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"
