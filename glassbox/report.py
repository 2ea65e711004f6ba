"""The gap report: report.md (tables first), report.json, pareto.png.

A `Report` holds the typed results of one compare and the metric registry
(glassbox.metrics); every table is built from the registry's entries of its
section, and report.json's aggregates from the same summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glassbox.metrics import (
    CAPABILITY,
    CIRCUITS,
    DOMAINS,
    INTERPRETABILITY,
    METRICS,
    PER_DOMAIN,
    POSTHOC,
    SKILLS,
    TOOLS,
    Metric,
    Stat,
    expand,
    in_section,
)
from glassbox.results import PostHocResult, RunResult, aggregate, gap_percent

Summary = dict[str, dict[str, Stat | None]]  # arch -> key -> Stat over seeds

# The frontier's axes: capability (x) against interpretability (y).
FRONTIER = ("mean_accuracy", "interp.coverage_lift")
FRONTIER_LABELS = (
    "capability: mean answer-token accuracy (test split)",
    "interpretability: contextual coverage lift over the token id",
)
# A score whose trained value lies within max(std over seeds, TRUST_TOLERANCE) of its
# untrained twin's is not informative at this budget (the tolerance alone with one seed).
TRUST_TOLERANCE = 0.02
NOT_INFORMATIVE = "†"
POSTHOC_LABEL = "post-hoc transcoders"
# report.json nests these key families under their first part; other keys are flat.
JSON_GROUPS = ("interp", "tools", "skills", "baselines")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher is better), by x."""
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
    )


def _gap(stat: Stat | None, dense: Stat | None) -> str:
    g = gap_percent(stat["mean"] if stat else None, dense["mean"] if dense else None)
    return "–" if g is None else f"{g:+.1f}%"


def _table(
    first: str, headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]
) -> list[str]:
    """A markdown table: a label column, then one column per header."""
    lines = ["| " + " | ".join([first, *headers]) + " |", "|---|" + "---|" * len(headers)]
    return lines + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]


def _columns(metrics: Sequence[Metric]) -> list[str]:
    return [h for m in metrics for h in ([m.header, "gap"] if m.gap else [m.header])]


def _cells(
    metrics: Sequence[Metric], stats: Mapping[str, Stat | None], dense: Mapping
) -> list[str]:
    """A row of stats formatted per metric, with its gap to dense where the metric has one."""
    out = []
    for m in metrics:
        out.append(m.format(stats.get(m.key)))
        if m.gap:
            out.append(_gap(stats.get(m.key), dense.get(m.key)))
    return out


def informative(trained: Stat | None, untrained: Stat | None) -> bool | None:
    """Whether a score moved with learning: |trained mean - untrained mean| above the
    seed spread, max(std of either over seeds, TRUST_TOLERANCE). None when either is
    missing (nothing to compare)."""
    if not trained or not untrained:
        return None
    spread = max(trained["std"], untrained["std"], TRUST_TOLERANCE)
    return abs(trained["mean"] - untrained["mean"]) > spread


def _json_key(key: str) -> tuple[str | None, str]:
    """Where a key sits in report.json's per-architecture entry: (group, name)."""
    group = key.split(".", 1)[0]
    return (group, key) if group in JSON_GROUPS and "." in key else (None, key.replace(".", "_"))


def _json_value(metric: Metric | None, stat: Stat | None) -> Any:
    if stat is not None and metric is not None and metric.constant:
        m = stat["mean"]
        return int(m) if float(m).is_integer() else m
    return stat


@dataclass(frozen=True)
class Report:
    """One compare's results. Build it, then `write()` report.md, report.json and
    pareto.png into out_dir; `markdown()` is report.md's text, `markdown_summary()`
    its tables before the first section."""

    out_dir: Path
    seeds: tuple[int, ...]
    config: Mapping[str, Any]  # the compare config, as report.json records it
    runs: tuple[RunResult, ...]
    posthoc: tuple[PostHocResult, ...] = ()
    metrics: tuple[Metric, ...] = METRICS

    @property
    def path(self) -> Path:
        return self.out_dir / "report.md"

    @classmethod
    def read(cls, path: str | Path) -> Report:
        """The Report a report.json holds (what `write` wrote), rebuilt from its runs."""
        path = Path(path)
        data = json.loads(path.read_text())
        runs, posthoc = [], []
        for r in data["runs"]:
            r = dict(r)
            if (p := r.pop("posthoc", None)) is not None:
                posthoc.append(PostHocResult.from_json(p))
            runs.append(RunResult.from_json(r))
        return cls(
            out_dir=path.parent,
            seeds=tuple(data["config"]["seeds"]),
            config=data["config"],
            runs=tuple(runs),
            posthoc=tuple(posthoc),
        )

    @cached_property
    def summary(self) -> Summary:
        """arch -> key -> Stat over seeds, for every registry key but the post-hoc table's."""
        return aggregate(self.runs, [m for m in self.metrics if m.section != POSTHOC])

    @cached_property
    def posthoc_summary(self) -> Summary:
        """The post-hoc route's scores over seeds, under the architecture it was fitted to."""
        keep = [m for m in self.metrics if m.section in (INTERPRETABILITY, POSTHOC)]
        return aggregate(self.posthoc, keep)

    def section(self, name: str) -> list[Metric]:
        """The registry's entries of one table, expanded per name over the runs' keys."""
        keys = {k for r in self.runs for k in r.values()}
        return expand(in_section(self.metrics, name), keys)

    @property
    def _dense(self) -> Mapping[str, Stat | None]:
        return self.summary.get("dense", {})

    # --- the tables

    def capability_table(self) -> list[str]:
        ms = self.section(CAPABILITY)
        rows = [(arch, _cells(ms, s, self._dense)) for arch, s in self.summary.items()]
        return _table("architecture", _columns(ms), rows)

    def not_informative(self) -> dict[str, list[Metric]]:
        """arch -> the interpretability scores (with an untrained baseline; the domain
        scores of a text corpus too) whose trained value lies within the seed spread
        of the untrained twin's."""
        scored = self.section(INTERPRETABILITY) + self.section(DOMAINS)
        ms = [m for m in scored if "init" in m.baselines]
        return {
            arch: [
                m for m in ms if informative(s.get(m.key), s.get(m.baseline("init").key)) is False
            ]
            for arch, s in self.summary.items()
        }

    def interpretability_table(self) -> list[str]:
        """Each score beside its untrained twin's (init) and the token-identity
        baseline's (token); a trained value the twin's seed spread holds is marked."""
        ms = self.section(INTERPRETABILITY)
        flagged = self.not_informative()
        rows = []
        for arch, s in self.summary.items():
            cells = _cells(ms, s, self._dense)
            bad = {m.key for m in flagged.get(arch, [])}
            cols = [m.key for m in ms for _ in ([0, 1] if m.gap else [0])]
            cells = [f"{c} {NOT_INFORMATIVE}" if k in bad else c for k, c in zip(cols, cells)]
            rows.append((arch, cells))
            if arch in self.posthoc_summary:
                post = self.posthoc_summary[arch]
                rows.append((f"{arch} + {POSTHOC_LABEL}", _cells(ms, post, self._dense)))
        return _table("architecture", _columns(ms), rows)

    def trust_note(self) -> list[str]:
        """In words: which scores did not move with learning at this budget."""
        flagged = {a: ms for a, ms in self.not_informative().items() if ms}
        rule = (
            "(init) is the untrained twin (the same config and seed at initialisation), "
            "(token) what the current token alone predicts, both scored by the same code on "
            "the same tokens. "
        )
        if not flagged:
            return [rule + "Every score with an untrained baseline moved beyond the seed spread "
                    f"(max(std over seeds, {TRUST_TOLERANCE})) of its untrained value.\n"]  # fmt: skip
        lists = "; ".join(f"{a}: {', '.join(m.header for m in ms)}" for a, ms in flagged.items())
        return [
            rule + f"{NOT_INFORMATIVE} **Not informative at this budget**: the trained value lies "
            f"within the seed spread (max(std over seeds, {TRUST_TOLERANCE})) of the untrained "
            f"twin's, so the score does not tell this model from an untrained one: {lists}.\n"
        ]

    def circuits_table(self) -> list[str]:
        ms = self.section(CIRCUITS)
        if not ms:
            return []
        rows = [(arch, _cells(ms, s, self._dense)) for arch, s in self.summary.items()]
        return [
            "## Circuit size per skill\n",
            *_table("architecture", _columns(ms), rows),
            "\nThe fewest readable units (attention heads plus the kind's units: neurons, "
            "experts, latents) that, with every other unit of those layers mean-ablated, recover "
            "90% of the skill's answer-loss gap between all-ablated and clean (analysis.circuits); "
            "fraction of all units; AUC: area under faithfulness against fraction kept. A skill "
            "whose loss rises by less than 0.1 nats with every unit ablated has no circuit (–).\n",
        ]

    def skills_table(self) -> list[str]:
        ms = self.section(SKILLS)
        rows = [(arch, _cells(ms, s, self._dense)) for arch, s in self.summary.items()]
        return ["## Per-skill answer accuracy (%)\n", *_table("architecture", _columns(ms), rows)]

    def tools_table(self) -> list[str]:
        with_tools = {r.arch for r in self.runs if r.tools}
        if not with_tools:
            return []
        ms = self.section(TOOLS)
        rows = [(a, _cells(ms, s, self._dense)) for a, s in self.summary.items() if a in with_tools]
        return [
            "\n## Tool calling against answering from the weights (%)\n",
            *_table("architecture", _columns(ms), rows),
            "\nGenerated answers (greedy; tool calls executed for a tool model). Reliance: the share of "
            "answers that follow a counterfactual result injected in place of the tool's (the true sum "
            "plus a random nonzero offset; a different attribute).\n",
        ]

    def posthoc_table(self) -> list[str]:
        if not self.posthoc:
            return []
        ms = self.section(POSTHOC)
        rows = [
            (str(p.seed), [m.format_value(p.values().get(m.key)) for m in ms]) for p in self.posthoc
        ]
        return [
            "## The post-hoc route on the dense baseline\n",
            *_table("seed", _columns(ms), rows),
            "\nThe cost ratio is wall-clock time measured in one process: fitting the transcoders "
            f"({self.posthoc[0].steps} steps) plus reading features through them, against one cached "
            "forward pass of the transcoder model over the same held-out tokens "
            "(analysis.feature_cost.measure_feature_cost).\n",
        ]

    # --- the prose

    def _data_words(self) -> str:
        text = any(r.not_applicable for r in self.runs)  # text runs list the ground-truth keys
        return "the same text corpus and seed" if text else "the skill suite, same seed"

    def held_equal(self) -> str:
        """What every run shared: the data, the steps and batch, the tokens, active parameters."""
        tokens = self._dense.get("train.tokens")
        if not tokens:
            return ""
        steps = max((r.capability.get("train.steps") or 0) for r in self.runs)
        params = ", ".join(
            f"{arch} {(s.get('params.active') or {}).get('mean', 0):,.0f} active / "
            f"{(s.get('params.total') or {}).get('mean', 0):,.0f} total"
            for arch, s in self.summary.items()
        )
        return (
            f"Mean ± standard deviation over seeds {list(self.seeds)}; gaps are to the dense "
            "baseline (negative accuracy gap = capability given up). "
            f"**Held equal:** the data ({self._data_words()}), {steps} optimiser steps "
            f"and batch size, so about {tokens['mean']:,.0f} training tokens per run, "
            "and active parameters per token (each configs/model/*.yaml states its matching): "
            f"{params}."
        )

    def tool_note(self) -> list[str]:
        callers = [a for a, s in self.summary.items() if s.get("interp.call_recall")]
        if not callers:
            return []
        return [
            f"{', '.join(callers)}: capability of the model with its tools. Its addition and facts "
            "examples carry the tool's result in the context, so those answers are copies; the table "
            "below compares generated answers, the tool model's with calls executed, the dense "
            "model's from its weights.\n"
        ]

    def column_docs(self) -> list[str]:
        ms = [m for s in (CAPABILITY, INTERPRETABILITY) for m in self.section(s) if m.doc]
        return ["## Columns\n", *(f"- **{m.header}**: {m.doc}." for m in ms), ""]

    def plots_section(self) -> list[str]:
        lines = ["## Plots\n", "![capability against interpretability](pareto.png)\n"]
        for r in self.runs:
            for p in r.plots:
                rel = (
                    Path(p).relative_to(self.out_dir)
                    if Path(p).is_relative_to(self.out_dir)
                    else Path(p)
                )
                lines.append(f"- {r.arch} seed {r.seed}: [{Path(p).stem}]({rel})")
        return [*lines, ""]

    # --- the documents

    def domains_section(self) -> list[str]:
        """Text corpora: the scores by domain (analysis.text_analysis) that stand where
        the ground-truth ones cannot, a row per architecture, then one table per
        per-domain score with a column per domain; and which columns do not apply."""
        keys = {k for r in self.runs for k in r.values()}
        if not any(k.startswith("domains.") for k in keys):
            return []
        head = self.section(DOMAINS)
        flagged = {a: {m.key for m in ms} for a, ms in self.not_informative().items()}
        rows = []
        for arch, s in self.summary.items():
            cells = [
                f"{c} {NOT_INFORMATIVE}" if m.key in flagged.get(arch, ()) else c
                for m, c in zip(head, _cells(head, s, self._dense))
            ]  # no DOMAINS entry has a gap column, so cells and entries align
            rows.append((arch, cells))
        lines = ["## Domains of the text corpus\n", *_table("architecture", _columns(head), rows)]
        lines += ["", *(f"- **{m.header}**: {m.doc}." for m in head if m.doc), ""]
        for entry in in_section(self.metrics, PER_DOMAIN):
            ms = expand([entry], keys)
            if ms:
                rows = [(a, _cells(ms, s, self._dense)) for a, s in self.summary.items()]
                lines += [
                    f"Per domain, {entry.doc}:\n",
                    *_table("architecture", _columns(ms), rows),
                ]
                lines.append("")
        na = {k for r in self.runs for k in r.not_applicable}
        shown = [m.header for s in (CAPABILITY, INTERPRETABILITY) for m in self.section(s)]
        marked = [m.header for m in self.metrics if m.key in na and m.header in shown]
        if marked:
            lines.append(
                f"Not applicable on text (no skills, no ground-truth features; shown as –): "
                f"{', '.join(dict.fromkeys(marked))}.\n"
            )
        return lines

    def markdown_summary(self) -> str:
        """The title, the two headline tables and what was held equal."""
        lines = [
            "# What interpretability costs, and what it buys\n",
            *self.capability_table(),
            "",
            *self.interpretability_table(),
            "",
            *self.domains_section(),
            *self.trust_note(),
            self.held_equal(),
            "",
            *self.tool_note(),
        ]
        return "\n".join(lines)

    def markdown(self) -> str:
        """report.md's text."""
        parts = [
            self.markdown_summary(),
            *self.column_docs(),
            *self.skills_table(),
            "",
            *self.circuits_table(),
            *self.tools_table(),
            *self.posthoc_table(),
            *self.plots_section(),
        ]
        return "\n".join(parts) + "\n"

    def architectures_json(self) -> dict[str, dict[str, Any]]:
        """report.json's aggregates: per architecture, each registry key's Stat
        (interp.*, tools.*, skills.* nested under their group; `train.tokens` as
        train_tokens), the post-hoc route's under its architecture with `_posthoc`."""
        by_key = {m.key: m for m in self.metrics}
        out: dict[str, dict[str, Any]] = {}
        for arch, stats in self.summary.items():
            post = {f"{k}_posthoc": v for k, v in self.posthoc_summary.get(arch, {}).items() if v}
            entry: dict[str, Any] = {}
            for key, st in {**stats, **post}.items():
                group, name = _json_key(key)
                value = _json_value(by_key.get(key), st)
                (entry.setdefault(group, {}) if group else entry)[name] = value
            entry["not_informative"] = [m.key for m in self.not_informative().get(arch, [])]
            out[arch] = entry
        return out

    def to_json(self) -> dict[str, Any]:
        runs = []
        post = {(p.arch, p.seed): p for p in self.posthoc}
        for r in self.runs:
            p = post.get((r.arch, r.seed))
            runs.append(r.to_json() | ({"posthoc": p.to_json()} if p else {}))
        return {
            "config": dict(self.config),
            "architectures": self.architectures_json(),
            "runs": runs,
        }

    def write(self) -> Path:
        """pareto.png, report.md and report.json into out_dir; returns report.md's path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pareto_plot(self, self.out_dir / "pareto.png")
        self.path.write_text(self.markdown())
        (self.out_dir / "report.json").write_text(json.dumps(self.to_json(), indent=2))
        return self.path


def _frontier_point(values: Mapping[str, Stat | None] | None, capability: Mapping) -> tuple | None:
    """(capability mean, interpretability mean) of a summary, or None if either is missing."""
    x, y = capability.get(FRONTIER[0]), (values or {}).get(FRONTIER[1])
    return (x["mean"], y["mean"]) if x and y else None


def pareto_plot(report: Report, path: Path) -> Path:
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
