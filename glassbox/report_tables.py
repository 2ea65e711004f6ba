"""The gap report's tables, built from one compare's results.

`ReportTables` holds the typed results of one compare and the metric registry
(glassbox.metrics); every table is built from the registry's entries of its section:
the headline (the registry's `headline` entries: per kind, the capability gap and the
informative scores beside their untrained twin; at most HEADLINE_MAX_COLUMNS columns),
what the intervals decide, capability, one table per topic (TOPICS) with a row per
score and a column per architecture, circuits, tool calling, the post-hoc route and
per-skill accuracy. glassbox.report.Report writes them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from glassbox.analysis.intervals import decide, paired_interval
from glassbox.analysis.jsonable import mean_defined
from glassbox.compare_config import BASELINE, BY_CONSTRUCTION
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
from glassbox.results import PostHocResult, RunResult, aggregate, difference
from glassbox.table import (
    NOT_INFORMATIVE,
    Table,
    decide_paired,
    format_gap,
    informative,
    metric_cells,
    metric_headers,
)

Summary = dict[str, dict[str, Stat | None]]  # arch -> key -> Stat over seeds


def _difference_of(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], key: str) -> list[float] | None:  # fmt: skip
    """results.difference of `key` between two sets of runs' values (a mapping a seed),
    with their intervals and, where kept, their replicates."""
    ci, bt = f"{key}_ci", f"{key}_boot"
    return difference(
        [v.get(key) for v in a], [v.get(ci) for v in a],
        [v.get(key) for v in b], [v.get(ci) for v in b],
        [v.get(bt) for v in a], [v.get(bt) for v in b],
    )  # fmt: skip


def _said(m: Metric, d: float, ci: Sequence[float]) -> tuple[str, str]:
    """What the interval `ci` of a difference `d` decides ("above", "below", "same") and
    the difference with its interval ("+0.042 [0.016, 0.068]")."""
    return decide(ci, [0.0, 0.0]), m.format_diff(d, ci)


HEADLINE_MAX_COLUMNS = 8
# The interpretability section's topics, one table each: an entry joins the first topic
# whose pattern its key matches (re.search), one matching none the last table.
TOPICS: tuple[tuple[str, str], ...] = (
    ("Specialisation: what a unit says about the skill beyond the token",
     r"nmi|purity|selectivity|speciali[sz]|info_beyond"),
    ("Coverage: ground-truth features read off single units", r"coverage|lift"),
    ("Circuits: the fewest units that keep a skill", r"circuit|nonsense"),
    ("Attribution graphs: the units that carry an answer's logit", r"graph_"),
    ("Sparsity of the latents", r"\.l0$|dead"),
    ("Tool calls", r"tool|call_"),
)  # fmt: skip
OTHER_TOPIC = "Other scores"


@dataclass(frozen=True)
class ReportTables:
    """One compare's results (its runs and post-hoc routes over seeds) and every table
    of the report built from them; glassbox.report.Report adds the prose and writes the
    files."""

    out_dir: Path
    seeds: tuple[int, ...]
    config: Mapping[str, Any]  # the compare config, as report.json records it
    runs: tuple[RunResult, ...]
    posthoc: tuple[PostHocResult, ...] = ()
    metrics: tuple[Metric, ...] = field(default_factory=lambda: tuple(METRICS.values()))

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
            cells = metric_cells(ms, s, self._dense)
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
                    cells.append(format_gap(s.get(m.key), self._dense.get(m.key)))
            rows.append((arch, cells))
        return Table("", "architecture", headers, rows)

    def decisions(self) -> Table | None:
        """What the 95% intervals decide, per architecture, for each headline score that
        has one: against 0 (nothing beyond the token), its untrained twin, its control
        (random directions, a within-token shuffle): "above" when the intervals are
        apart with this one higher, "below", or "same"; and dense: the same words by the
        interval of the difference (vs_dense), which follows them. None without
        intervals."""
        ms = self._decided_scores()
        if not ms:
            return None
        headers, rows = [], []
        for m in ms:
            headers += [f"{m.header} vs 0"] + [f"vs {b}" for b in m.baselines] + ["vs dense"]
        for arch, s in self.summary.items():
            cells = []
            for m in ms:
                ci = (s.get(m.key) or {}).get("ci")
                cells.append(decide(ci, [0.0, 0.0]) or "–")
                for b in m.baselines:  # measured on each run itself: seed by seed
                    base = m.baseline(b).key
                    paired = self.paired(arch, m.key, base)
                    cells.append(paired or decide(ci, (s.get(base) or {}).get("ci")) or "–")
                cells.append(self._vs_dense_cell(arch, m))
            rows.append((arch, cells))
        note = (
            "Each cell compares the 95% intervals (bootstrap over the held-out examples; "
            "the t interval over seeds where there are several, no narrower than the seeds' "
            "own): above / below when they are apart, same when they overlap. Against the "
            "twin and the control, which each run measures on itself on the same examples, "
            "seed by seed: above / below when every seed's paired interval of the "
            "difference excludes 0 that way (where the run kept the replicates; else its "
            "two intervals apart). Against dense, the 95% "
            "interval of the difference (in brackets; results.difference: at one seed the "
            "paired bootstrap over the same examples where both runs kept their replicates, "
            "else from the two intervals; Welch's t over seeds): above / below when it "
            "excludes 0."
        )
        return Table("What the intervals decide", "architecture", headers, rows, note)

    def _decided_scores(self) -> list[Metric]:
        """The headline interpretability scores some run has an interval of: the ones the
        report decides on."""
        ms = [m for m in self.metrics if m.headline and m.section == INTERPRETABILITY]
        return [m for m in ms if any((s.get(m.key) or {}).get("ci") for s in self.summary.values())]  # fmt: skip

    def vs_dense_per_seed(self, arch: str, m: Metric) -> dict[int, tuple[str, str]]:
        """seed -> what `arch` against the dense run of the same seed decides on `m` and
        the difference with its interval (results.difference of one run each: paired
        over the same held-out examples where both kept their replicates), for every
        seed both have; {} for dense itself."""
        if arch == BASELINE:
            return {}
        dense = {seed: v for a, seed, v in self._values if a == BASELINE}
        out = {}
        for _, seed, v in sorted((x for x in self._values if x[0] == arch), key=lambda x: x[1]):
            d = dense.get(seed)
            ci = None if d is None else _difference_of([v], [d], m.key)
            if ci is not None:
                out[seed] = _said(m, v[m.key] - d[m.key], ci)
        return out

    def vs_dense_by_seed(self) -> Table | None:
        """Against dense, seed by seed: for each kind sharing two seeds or more with dense
        and each decided score, the difference to the dense run of the same seed with its
        interval (vs_dense_per_seed), then over the seeds (vs_dense). It shows whether a
        decision over seeds is every seed's or a mean a seed carries. None where no kind
        shares two seeds with dense."""
        ms = self._decided_scores()
        per = {(a, m.key): self.vs_dense_per_seed(a, m) for a in self.summary for m in ms}
        shown = {a for (a, _), by in per.items() if len(by) >= 2}
        if not shown:
            return None
        seeds = sorted({s for (a, _), by in per.items() if a in shown for s in by})
        rows = []
        for arch in (a for a in self.summary if a in shown):
            for m in ms:
                by = per[arch, m.key]
                cells = [f"{by[s][0]} ({by[s][1]})" if s in by else "–" for s in seeds]
                rows.append((f"{arch}: {m.header}", [*cells, self._vs_dense_cell(arch, m)]))
        return Table(
            "Against dense, seed by seed", "kind: score",
            [f"seed {s}" for s in seeds] + ["over the seeds"], rows,
            "Each kind minus the dense run of the same seed (the same data, the same held-out "
            "examples): above / below when the 95% interval of the difference excludes 0, "
            "paired over the examples where both runs kept their replicates, else from the "
            "two intervals; over the seeds, Welch's t over every seed of each (the table "
            "\"What the intervals decide\"). A decision over the seeds that some seed does "
            "not make rests on the mean, not on every trained model.",
        )  # fmt: skip

    def _vs_dense_cell(self, arch: str, m: Metric) -> str:
        """ "above (+0.042 [0.016, 0.068])"; "–" for dense itself or without intervals."""
        said = self.vs_dense_said(arch, m)
        return f"{said[0]} ({said[1]})" if said else "–"

    def vs_dense_said(self, arch: str, m: Metric) -> tuple[str, str] | None:
        """What `arch` against dense on `m` decides ("above", "below", "same") and the
        difference of the means with its interval ("+0.042 [0.016, 0.068]"); None for
        dense itself or where a run lacks an interval."""
        ci = None if arch == BASELINE else self.vs_dense(arch, m.key)
        if ci is None:
            return None
        return _said(m, self.summary[arch][m.key]["mean"] - self._dense[m.key]["mean"], ci)

    def capability_table(self) -> list[str]:
        return self.capability().markdown()

    def capability(self) -> Table:
        ms = self.section(CAPABILITY)
        return Table("Capability", "architecture", metric_headers(ms), self._rows_by_arch(ms),
                     "Test split; gaps are to the dense baseline.")  # fmt: skip

    def paired(self, arch: str, key: str, base_key: str) -> str | None:
        """The seed-by-seed decision (table.decide_paired) of `key` against `base_key`,
        a baseline each run measures on itself (its twin, its control), over `arch`'s
        runs: each seed's paired interval of the difference against 0 where the run kept
        both scores' replicates (analysis.intervals.paired_interval), else its two
        intervals; None where a run lacks either interval."""

        def pair(v: dict[str, Any]) -> tuple[Any, Any]:
            a, b = v.get(f"{key}_ci"), v.get(f"{base_key}_ci")
            d = None if a is None or b is None else paired_interval(v.get(f"{key}_boot"), v.get(f"{base_key}_boot"))  # fmt: skip
            return (a, b) if d is None else (d, [0.0, 0.0])

        return decide_paired([pair(v) for v in self._values_of(arch)])

    def vs_dense(self, arch: str, key: str) -> list[float] | None:
        """The 95% interval of `arch`'s mean of `key` minus the dense baseline's, over
        their seeds (glassbox.results.difference: paired at one seed where both runs
        kept their replicates); None where a run lacks an interval."""
        return _difference_of(self._values_of(arch), self._values_of(BASELINE), key)

    @cached_property
    def _values(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(arch, seed, every number of the run) for each run, in the runs' order."""
        return [(r.arch, r.seed, r.values()) for r in self.runs]

    def _values_of(self, arch: str) -> list[dict[str, Any]]:
        """Every number of each of `arch`'s runs (one mapping a seed)."""
        return [v for a, _, v in self._values if a == arch]

    def not_informative(self) -> dict[str, list[Metric]]:
        """arch -> the interpretability scores (with an untrained baseline; the domain
        scores of a text corpus too) that do not tell the trained model from its
        untrained twin: with intervals, where some seed does not tell it from its own
        twin (`paired`: the paired interval of the difference holds 0, or without
        replicates the two intervals overlap) or two seeds disagree; without, where the
        trained value lies within the seed spread of the twin's."""
        return self._not_informative

    @cached_property
    def _not_informative(self) -> dict[str, list[Metric]]:  # read by every table's cells
        scored = self.section(INTERPRETABILITY) + self.section(DOMAINS)
        ms = [m for m in scored if "init" in m.baselines]

        def flat(arch: str, s: Mapping[str, Stat | None], m: Metric) -> bool:
            twin = m.baseline("init").key
            paired = self.paired(arch, m.key, twin)
            if paired is not None:
                return paired == "same"
            return informative(s.get(m.key), s.get(twin)) is False

        return {arch: [m for m in ms if flat(arch, s, m)] for arch, s in self.summary.items()}

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
            "Tool calling against answering from the weights (%)", "architecture", metric_headers(ms),
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
            "The post-hoc route on the dense baseline", "seed", metric_headers(ms), rows,
            "The cost ratio is wall-clock time measured in one process: fitting the transcoders "
            f"({self.posthoc[0].steps} steps) plus reading features through them, against one "
            "cached forward pass of the transcoder model over the same held-out tokens "
            "(analysis.feature_cost.measure_feature_cost).",
        )  # fmt: skip

    def posthoc_versus(self) -> Table | None:
        """The post-hoc latents against the units built to be read, on the post-hoc
        table's scores that have intervals: the route's mean minus the dense model's own
        neurons' and minus the by-construction transcoder's, with the interval of the
        difference (results.difference: paired at one seed, where the route kept its
        replicates over the same held-out examples as the runs). None without a post-hoc
        route on dense or without those scores' intervals."""
        routes = [p.values() for p in self.posthoc if p.arch == BASELINE]
        ms = [m for m in self.section(POSTHOC) if any(v.get(f"{m.key}_ci") for v in routes)]
        if not ms:
            return None
        rows = []
        for arch in (BASELINE, BY_CONSTRUCTION):
            runs = self._values_of(arch)
            if not runs:
                continue
            cells = []
            for m in ms:
                ci = _difference_of(routes, runs, m.key)
                means = [mean_defined([v.get(m.key) for v in vs]) for vs in (routes, runs)]
                said = None if ci is None or None in means else _said(m, means[0] - means[1], ci)
                cells.append(f"{said[0]} ({said[1]})" if said else "–")
            rows.append((f"post-hoc − {arch}", cells))
        return Table(
            "The post-hoc latents against units built to be read", "difference",
            metric_headers(ms), rows,
            "The post-hoc transcoders' latents in the dense model's place, read by the same "
            "audited protocol on the same held-out examples, minus the dense model's own "
            f"neurons and minus the {BY_CONSTRUCTION} model's latents: above / below when the "
            "95% interval of the difference excludes 0 (at one seed the paired interval over "
            "the examples where both kept their replicates, else from the two intervals; "
            "Welch's t over seeds).",
        )  # fmt: skip

    def posthoc_table(self) -> list[str]:
        t = self.posthoc_route()
        v = self.posthoc_versus()
        return ([] if t is None else [*t.markdown(), ""]) + (
            [] if v is None else [*v.markdown(), ""]
        )

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
            # a column per domain some model was scored on: on code every package is a
            # domain, and the test blocks hold a few of them
            ms = [m for m in expand([entry], keys)
                  if any(s.get(m.key) is not None for s in self.summary.values())]  # fmt: skip
            if ms:
                rows = [(a, metric_cells(ms, s, self._dense)) for a, s in self.summary.items()]
                out.append(
                    Table(f"Per domain, {entry.doc}", "architecture", metric_headers(ms), rows)
                )
        return out

    def tables(self) -> list[Table]:
        """Every table of the report, in its order."""
        out = [self.headline()]
        out += [t for t in [self.decisions(), self.vs_dense_by_seed()] if t is not None]
        out.append(self.capability())
        out += self.domain_tables()
        out += self.topic_tables()
        out += [
            t for t in [self.posthoc_route(), self.posthoc_versus(), self.skills()] if t is not None
        ]
        return out
