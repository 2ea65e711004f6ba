"""The gap report: report.md, report.html, report.json, pareto.png.

A `Report` holds the typed results of one compare and the metric registry
(glassbox.metrics); every table is built from the registry's entries of its
section, and report.json's aggregates from the same summary.

report.md opens with the headline table (the registry's `headline` entries: per kind,
the capability gap and the informative scores beside their untrained twin; at most
HEADLINE_MAX_COLUMNS columns), then the capability table, then one table per topic
(TOPICS) with a row per score and a column per architecture, so that a table is as
wide as the number of kinds however many scores a topic holds. report.html has the
same tables with the plots embedded (one file that opens offline) and links to each
model's card and feature dashboards. Every number of every table is in report.json.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glassbox.analysis.intervals import decide
from glassbox.archs.checkpoint import resolve_checkpoint
from glassbox.archs.errors import CheckpointError
from glassbox.compare_config import BASELINE
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
HEADLINE_MAX_COLUMNS = 8
# The interpretability section's topics, one table each: an entry joins the first topic
# whose pattern its key matches (re.search), one matching none the last table.
TOPICS: tuple[tuple[str, str], ...] = (
    ("Specialisation: what a unit says about the skill beyond the token",
     r"nmi|purity|selectivity|speciali[sz]|info_beyond"),
    ("Coverage: ground-truth features read off single units", r"coverage|lift"),
    ("Circuits: the fewest units that keep a skill", r"circuit|nonsense"),
    ("Sparsity of the latents", r"\.l0$|dead"),
    ("Tool calls", r"tool|call_"),
)  # fmt: skip
OTHER_TOPIC = "Other scores"


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


@dataclass(frozen=True)
class Table:
    """One table of the report: a label column (`first`), then `headers`; rendered as
    markdown (report.md) and HTML (report.html) from the same cells."""

    title: str
    first: str
    headers: Sequence[str]
    rows: Sequence[tuple[str, Sequence[str]]]
    note: str = ""

    @property
    def n_columns(self) -> int:
        return 1 + len(self.headers)

    def markdown(self) -> list[str]:
        lines = _table(self.first, self.headers, self.rows)
        return [*lines, "", self.note] if self.note else lines

    def html(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in [self.first, *self.headers])
        body = "".join(
            f"<tr><th>{esc(label)}</th>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
            for label, cells in self.rows
        )
        note = f"<p>{_md_inline(self.note)}</p>" if self.note else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _md_inline(text: str) -> str:
    """The little markdown the report's prose uses (**bold**, `code`, [text](link)) as HTML."""
    out = html.escape(text.strip())
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


def _img(path: Path, alt: str) -> str:
    """An <img> holding the PNG at `path` as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0}th,td{padding:3px 10px;"
    "border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}th:first-child,"
    "thead th{text-align:left}thead th{border-bottom:2px solid #888}tbody th{font-weight:normal}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}"
    "dt{font-weight:bold;margin-top:.4em}"
)


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
    """Whether a score moved with learning. Where both carry 95% intervals (the
    audited scores): whether the intervals are apart (analysis.intervals.decide).
    Otherwise (the old protocol's scores): |trained mean - untrained mean| above the
    seed spread, max(std of either over seeds, TRUST_TOLERANCE). None when either is
    missing (nothing to compare)."""
    if not trained or not untrained:
        return None
    if trained.get("ci") and untrained.get("ci"):
        return decide(trained["ci"], untrained["ci"]) != "same"
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
    metrics: tuple[Metric, ...] = field(default_factory=lambda: tuple(METRICS.values()))

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
        return self.summary.get(BASELINE, {})

    # --- the tables

    def _flagged(self) -> dict[str, set[str]]:
        return {a: {m.key for m in ms} for a, ms in self.not_informative().items()}

    def _rows_by_arch(
        self, ms: Sequence[Metric], archs: Sequence[str] | None = None
    ) -> list[tuple[str, list[str]]]:
        """A row per architecture, a column per entry (and its gap), † where flagged."""
        flagged = self._flagged()
        rows = []
        for arch, s in self.summary.items():
            if archs is not None and arch not in archs:
                continue
            cols = [m.key for m in ms for _ in ([0, 1] if m.gap else [0])]
            cells = _cells(ms, s, self._dense)
            bad = flagged.get(arch, set())
            rows.append((arch, [f"{c} {NOT_INFORMATIVE}" if k in bad else c for k, c in zip(cols, cells)]))  # fmt: skip
        return rows

    def _columns_of_archs(self, ms: Sequence[Metric]) -> list[tuple[str, Mapping]]:
        """The columns of a score-per-row table: each architecture, then the post-hoc
        route beside the architecture it was fitted to where it has any of `ms`."""
        out: list[tuple[str, Mapping]] = []
        for arch, s in self.summary.items():
            out.append((arch, s))
            post = self.posthoc_summary.get(arch, {})
            if any(post.get(m.key) for m in ms):
                out.append((f"{arch} + post-hoc", post))
        return out

    def score_table(
        self, ms: Sequence[Metric], title: str, note: str = "", first: str = "score"
    ) -> Table | None:
        """A row per entry (its baselines are entries of their own, after it), a column
        per architecture; a cell the twin's spread holds is marked. None if empty."""
        ms = [m for m in ms if any(s.get(m.key) for s in self.summary.values())
              or any(s.get(m.key) for s in self.posthoc_summary.values())]  # fmt: skip
        if not ms:
            return None
        columns = self._columns_of_archs(ms)
        flagged = self._flagged()
        rows = []
        for m in ms:
            cells = []
            for name, s in columns:
                cell = m.format(s.get(m.key))
                cells.append(
                    f"{cell} {NOT_INFORMATIVE}" if m.key in flagged.get(name, ()) else cell
                )
            rows.append((m.header, cells))
        return Table(title, first, [name for name, _ in columns], rows, note)

    def headline(self) -> Table:
        """Per architecture: the registry's headline entries. A capability entry with
        its gap to dense; a score as "value (twin x)", its untrained twin's value."""
        keys = {k for r in self.runs for k in r.values()}
        ms = [m for m in expand([m for m in self.metrics if m.headline], keys) if m.headline]
        ms = [m for m in ms if any(s.get(m.key) for s in self.summary.values())]
        headers = [h for m in ms for h in ([m.header, "gap"] if m.gap else [m.header])]
        flagged = self._flagged()
        rows = []
        for arch, s in self.summary.items():
            cells = []
            for m in ms:
                cell = m.format(s.get(m.key))
                twin = s.get(m.baseline("init").key) if "init" in m.baselines else None
                if twin and s.get(m.key):
                    cell += f" (twin {m.format_value(twin['mean'])})"  # its interval: below
                cells.append(
                    f"{cell} {NOT_INFORMATIVE}" if m.key in flagged.get(arch, ()) else cell
                )
                if m.gap:
                    cells.append(_gap(s.get(m.key), self._dense.get(m.key)))
            rows.append((arch, cells))
        return Table("", "architecture", headers, rows)

    def decisions(self) -> Table | None:
        """What the 95% intervals decide, per architecture, for each headline score that
        has one: against 0 (nothing beyond the token), its untrained twin, its control
        (random directions, a within-token shuffle) and dense: "above" when the
        intervals are apart with this one higher, "below", or "same". None without
        intervals."""
        ms = [m for m in self.metrics if m.headline and m.section == INTERPRETABILITY]
        ms = [m for m in ms if any((s.get(m.key) or {}).get("ci") for s in self.summary.values())]
        if not ms:
            return None
        headers, rows = [], []
        for m in ms:
            headers += [f"{m.header} vs 0"] + [f"vs {b}" for b in m.baselines] + ["vs dense"]
        for arch, s in self.summary.items():
            cells = []
            for m in ms:
                ci = (s.get(m.key) or {}).get("ci")
                others = [[0.0, 0.0]] + [
                    (s.get(m.baseline(b).key) or {}).get("ci") for b in m.baselines
                ]
                dense = None if arch == BASELINE else (self._dense.get(m.key) or {}).get("ci")
                cells += [decide(ci, o) or "–" for o in [*others, dense]]
            rows.append((arch, cells))
        note = (
            "Each cell compares the 95% intervals (bootstrap over the held-out examples; "
            "the t interval over seeds where there are several): above / below when they "
            "are apart, same when they overlap."
        )
        return Table("What the intervals decide", "architecture", headers, rows, note)

    def capability_table(self) -> list[str]:
        return self.capability().markdown()

    def capability(self) -> Table:
        ms = self.section(CAPABILITY)
        return Table("Capability", "architecture", _columns(ms), self._rows_by_arch(ms),
                     "Test split; gaps are to the dense baseline.")  # fmt: skip

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

    def topics(self) -> list[tuple[str, list[Metric]]]:
        """The interpretability entries (each followed by its baselines) by topic, in
        TOPICS' order; the entries no topic names under OTHER_TOPIC."""
        groups: dict[str, list[Metric]] = {title: [] for title, _ in TOPICS}
        groups[OTHER_TOPIC] = []
        for m in self.section(INTERPRETABILITY):
            base = re.sub(r"^baselines\.[^.]+\.", "", m.key)
            title = next((t for t, pat in TOPICS if re.search(pat, base)), OTHER_TOPIC)
            groups[title].append(m)
        return [(t, ms) for t, ms in groups.items() if ms]

    def topic_tables(self) -> list[Table]:
        """One score-per-row table per topic; circuits per skill and tool calling join
        their topic's table list after it."""
        out = []
        for title, ms in self.topics():
            t = self.score_table(ms, title)
            if t is not None:
                out.append(t)
            if title.startswith("Circuits"):
                out += [t for t in [self.circuits()] if t is not None]
            if title == "Tool calls":
                out += [t for t in [self.tools()] if t is not None]
        if not any(t.title.startswith("Circuits") for t in out):
            out += [t for t in [self.circuits()] if t is not None]
        if not any(t.title.startswith("Tool calling") for t in out):
            out += [t for t in [self.tools()] if t is not None]
        return out

    def interpretability_table(self) -> list[str]:
        """Every topic's table, in markdown (the interpretability scores)."""
        return [line for t in self.topic_tables() for line in [*t.markdown(), ""]]

    def trust_note(self) -> list[str]:
        """In words: which scores did not move with learning at this budget."""
        flagged = {a: ms for a, ms in self.not_informative().items() if ms}
        rule = (
            "(init) and twin are the untrained twin (the same config and seed at "
            "initialisation), (token) what the current token alone predicts, (random) random "
            "directions in the units' span, (shuffled) the groups shuffled within each token, "
            "all scored by the same code on the same tokens. Brackets are 95% intervals. "
        )
        moved = (
            "its untrained twin's interval (scores with intervals) or seed spread (max(std "
            f"over seeds, {TRUST_TOLERANCE}), the older scores)"
        )
        if not flagged:
            return [rule + f"Every score with an untrained baseline moved beyond {moved}.\n"]
        lists = "; ".join(f"{a}: {', '.join(m.header for m in ms)}" for a, ms in flagged.items())
        return [
            rule + f"{NOT_INFORMATIVE} **Not informative at this budget**: the trained value lies "
            f"within {moved}, so the score does not tell this model from an untrained one: "
            f"{lists}.\n"
        ]

    def circuits(self) -> Table | None:
        ms = self.section(CIRCUITS)
        if not ms:
            return None
        return self.score_table(
            ms, "Circuit size per skill",
            "The fewest readable units (attention heads plus the kind's units: neurons, "
            "experts, latents) that, with every other unit of those layers mean-ablated, recover "
            "90% of the skill's answer-loss gap between all-ablated and clean (analysis.circuits); "
            "fraction of all units; AUC: area under faithfulness against fraction kept. A skill "
            "whose loss rises by less than 0.1 nats with every unit ablated has no circuit (–).",
        )  # fmt: skip

    def circuits_table(self) -> list[str]:
        t = self.circuits()
        return [] if t is None else [*t.markdown(), ""]

    def skills(self) -> Table | None:
        return self.score_table(
            self.section(SKILLS), "Per-skill answer accuracy (%)", first="skill"
        )

    def skills_table(self) -> list[str]:
        t = self.skills()
        return [] if t is None else t.markdown()

    def tools(self) -> Table | None:
        with_tools = {r.arch for r in self.runs if r.tools}
        if not with_tools:
            return None
        ms = self.section(TOOLS)
        return Table(
            "Tool calling against answering from the weights (%)", "architecture", _columns(ms),
            self._rows_by_arch(ms, sorted(with_tools)),
            "Generated answers (greedy; tool calls executed for a tool model). Reliance: the share "
            "of answers that follow a counterfactual result injected in place of the tool's (the "
            "true sum plus a random nonzero offset; a different attribute).",
        )  # fmt: skip

    def tools_table(self) -> list[str]:
        t = self.tools()
        return [] if t is None else [*t.markdown(), ""]

    def posthoc_route(self) -> Table | None:
        if not self.posthoc:
            return None
        ms = self.section(POSTHOC)
        rows = [
            (str(p.seed), [m.format_value(p.values().get(m.key)) for m in ms]) for p in self.posthoc
        ]
        return Table(
            "The post-hoc route on the dense baseline", "seed", _columns(ms), rows,
            "The cost ratio is wall-clock time measured in one process: fitting the transcoders "
            f"({self.posthoc[0].steps} steps) plus reading features through them, against one "
            "cached forward pass of the transcoder model over the same held-out tokens "
            "(analysis.feature_cost.measure_feature_cost).",
        )  # fmt: skip

    def posthoc_table(self) -> list[str]:
        t = self.posthoc_route()
        return [] if t is None else [*t.markdown(), ""]

    # --- the prose

    def _data_words(self) -> str:
        text = any(r.not_applicable for r in self.runs)  # text runs list the ground-truth keys
        return "the same text corpus and seed" if text else "the skill suite, same seed"

    def _spread_words(self) -> str:
        if len(self.seeds) > 1:
            return f"Mean ± standard deviation over seeds {list(self.seeds)}"
        return f"One seed ({self.seeds[0]}): no spread over seeds is measured, so none is printed"

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
            f"{self._spread_words()}; gaps are to the dense baseline (negative accuracy gap = "
            "capability given up). "
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
            "examples carry the tool's result in the context, so those answers are copies; the "
            "tool-calling table compares generated answers, the tool model's with calls executed, "
            "the dense model's from its weights.\n"
        ]

    def column_docs(self) -> list[str]:
        ms = [m for s in (CAPABILITY, INTERPRETABILITY) for m in self.section(s) if m.doc]
        return ["## Columns\n", *(f"- **{m.header}**: {m.doc}." for m in ms), ""]

    def _rel(self, path: str | Path) -> str:
        """A path as report.md links it: relative to out_dir (a path outside it too)."""
        p = Path(path)
        if not p.is_absolute():
            p = Path.cwd() / p
        return Path(os.path.relpath(p, self.out_dir.resolve())).as_posix()

    def plots_section(self) -> list[str]:
        lines = ["## Plots\n", "![capability against interpretability](pareto.png)\n"]
        for r in self.runs:
            for p in r.plots:
                lines.append(f"- {r.arch} seed {r.seed}: [{Path(p).stem}]({self._rel(p)})")
        return [*lines, ""]

    def checkpoint_dirs(self) -> dict[str, Path]:
        """arch -> the checkpoint directory scored at the first seed: the one the
        compare config names (`checkpoints`, a shipped one) or the run's export."""
        named = dict(self.config.get("checkpoints") or {})
        out: dict[str, Path] = {}
        for r in self.runs:
            if r.arch in out:
                continue
            try:
                out[r.arch] = resolve_checkpoint(named[r.arch]) if r.arch in named else None
            except (CheckpointError, OSError):
                out[r.arch] = None
            if out[r.arch] is None:
                out[r.arch] = Path(r.run_dir) / "checkpoint"
        return out

    def models_section(self) -> list[str]:
        """A line per architecture: its model card and feature dashboards, where they exist."""
        lines = []
        for arch, path in self.checkpoint_dirs().items():
            links = [f"[model card]({self._rel(path / 'README.md')})"] if (path / "README.md").is_file() else []  # fmt: skip
            if (path / "features" / "index.html").is_file():
                links.append(f"[feature dashboards]({self._rel(path / 'features' / 'index.html')})")
            if links:
                lines.append(f"- {arch}: {', '.join(links)}")
        return ["## Models\n", *lines, ""] if lines else []

    # --- the documents

    def domains_section(self) -> list[str]:
        """Text corpora: the scores by domain (analysis.text_analysis) that stand where
        the ground-truth ones cannot, a row per score and a column per architecture,
        then one table per per-domain score with a column per domain; and which columns
        do not apply."""
        return [
            line for t in self.domain_tables() for line in [*t.markdown(), ""]
        ] + self._na_line()

    def domain_tables(self) -> list[Table]:
        keys = {k for r in self.runs for k in r.values()}
        if not any(k.startswith("domains.") for k in keys):
            return []
        head = self.section(DOMAINS)
        out = []
        t = self.score_table(head, "Domains of the text corpus",
                             " ".join(f"**{m.header}**: {m.doc}." for m in head if m.doc))  # fmt: skip
        if t is not None:
            out.append(t)
        for entry in in_section(self.metrics, PER_DOMAIN):
            ms = expand([entry], keys)
            if ms:
                rows = [(a, _cells(ms, s, self._dense)) for a, s in self.summary.items()]
                out.append(Table(f"Per domain, {entry.doc}", "architecture", _columns(ms), rows))
        return out

    def _na_line(self) -> list[str]:
        na = {k for r in self.runs for k in r.not_applicable}
        shown = [m.header for s in (CAPABILITY, INTERPRETABILITY) for m in self.section(s)]
        marked = [m.header for m in self.metrics if m.key in na and m.header in shown]
        if not marked:
            return []
        return [
            f"Not applicable on text (no skills, no ground-truth features; shown as –): "
            f"{', '.join(dict.fromkeys(marked))}.\n"
        ]

    def tables(self) -> list[Table]:
        """Every table of the report, in its order."""
        out = [self.headline(), *[t for t in [self.decisions()] if t is not None]]
        out.append(self.capability())
        out += self.domain_tables()
        out += self.topic_tables()
        out += [t for t in [self.posthoc_route(), self.skills()] if t is not None]
        return out

    def markdown_summary(self) -> str:
        """The title, the headline table, what it means and what was held equal."""
        lines = [
            "# What interpretability costs, and what it buys\n",
            *self.headline().markdown(),
            "",
            *self.trust_note(),
            self.held_equal(),
            "",
            *self.tool_note(),
        ]
        return "\n".join(lines)

    def markdown(self) -> str:
        """report.md's text."""
        body = [line for t in self.tables()[1:] for line in [f"## {t.title}\n", *t.markdown(), ""]]
        parts = [
            self.markdown_summary(),
            *body,
            *self._na_line(),
            *self.models_section(),
            *self.column_docs(),
            *self.plots_section(),
        ]
        return "\n".join(parts) + "\n"

    def html(self) -> str:
        """report.html: the tables, the frontier and every run's plots embedded as data
        URIs (one file that opens offline), links to the model cards and dashboards."""
        esc = html.escape
        body = ["<h1>What interpretability costs, and what it buys</h1>"]
        body.append(self.headline().html())
        body += [f"<p>{_md_inline(p)}</p>" for p in [*self.trust_note(), self.held_equal(), *self.tool_note()] if p.strip()]  # fmt: skip
        pareto = self.out_dir / "pareto.png"
        if pareto.is_file():
            body.append(f'<figure>{_img(pareto, "capability against interpretability")}'
                        "<figcaption>The capability–interpretability frontier</figcaption></figure>")  # fmt: skip
        for t in self.tables()[1:]:
            body += [f"<h2>{esc(t.title)}</h2>", t.html()]
        links = self.models_section()
        if links:
            body += ["<h2>Models</h2>", "<ul>"]
            body += [f"<li>{_md_inline(line[2:])}</li>" for line in links if line.startswith("- ")]
            body.append("</ul>")
        docs = [m for s in (CAPABILITY, INTERPRETABILITY) for m in self.section(s) if m.doc]
        body += ["<h2>Columns</h2>", "<dl>"]
        body += [f"<dt>{esc(m.header)}</dt><dd>{esc(m.doc)}.</dd>" for m in docs]
        body += ["</dl>", "<h2>Plots</h2>"]
        for r in self.runs:
            for p in r.plots:
                path = Path(p) if Path(p).is_absolute() else Path.cwd() / p
                if path.is_file() and path.suffix == ".png":
                    caption = f"{r.arch} seed {r.seed}: {path.stem}"
                    body.append(f"<figure>{_img(path, caption)}<figcaption>{esc(caption)}</figcaption></figure>")  # fmt: skip
        return "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                "<title>glassbox: the gap report</title>",
                f"<style>{_CSS}</style></head><body>",
                *body,
                "</body></html>",
            ]
        )

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

    def publish(self, dest: str | Path) -> Path:
        """This report rewritten into `dest` to be committed (docs/results): report.md,
        .html, .json, pareto.png, and every run's plots copied to
        plots/<arch>-seed<s>/ (the runs/ folders of out_dir are build output), each
        link made relative to `dest`. Returns report.md's path there."""
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        runs = []
        for r in self.runs:
            plots = []
            for p in r.plots:
                src = Path(p) if Path(p).is_absolute() else Path.cwd() / p
                if src.is_file():
                    to = dest / "plots" / f"{r.arch}-seed{r.seed}" / src.name
                    to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, to)
                    plots.append(to.as_posix())
            runs.append(replace(r, plots=tuple(plots)))
        return replace(self, out_dir=dest, runs=tuple(runs)).write()

    def write(self) -> Path:
        """pareto.png, report.md, report.html and report.json into out_dir; returns
        report.md's path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pareto_plot(self, self.out_dir / "pareto.png")
        self.path.write_text(self.markdown())
        (self.out_dir / "report.html").write_text(self.html())
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
