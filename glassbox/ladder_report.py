"""The size ladder's summary: the gap against size, read from the rungs' report.json.

    report_ladder/
      ladder.md, ladder.json, ladder.png     the summary (write_ladder_summary)
      S/, M/, L/                              each rung's compare (report.json, runs/)

Each rung's report.json is read back into the report's own tables (its `runs` become
RunResults, aggregated by glassbox.report_tables.ReportTables over seeds, with the
report's "not informative" test and its difference to dense), so a cell here is the cell
of that rung's report: no number is recomputed but one: each kind's micro-circuit edges
over dense's (per task from the rung's runs, the geometric mean over the tasks both
learned, with the t interval over those tasks; over several seeds each seed's
ratio against dense's at that seed, combined as a score is over seeds). Per score, a
table with a row per kind and a column per rung; the scores are the capability (val loss
and its gap to dense), the report's headline scores, every other interpretability score
of the registry that is informative (moves away from its untrained twin) for some kind
at some rung, a cell not informative at its rung marked † as in the report, and where a
rung scored micro-task circuits, their edges against dense's and their own controls
(held-out faithfulness, beating random units). Then each kind's difference to dense with
its interval, on the scores kinds are told apart on (ReportTables.vs_dense: the "Against
dense" table, whose decisions mark the score tables "above / below dense"). ladder.png
draws the gap and the informative scores with intervals against the dense model's active
parameters, a line per kind.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glassbox.analysis.intervals import decide
from glassbox.compare_config import BASELINE
from glassbox.metrics import DOMAINS, INTERPRETABILITY, METRICS, Metric, Stat
from glassbox.report_tables import ReportTables
from glassbox.results import RunResult, gap_percent, stat, t975
from glassbox.table import NOT_INFORMATIVE, Table

__all__ = [
    "Rung",
    "circuit_ratio",
    "edges_ratio",
    "ladder_tables",
    "read_rung",
    "task_edges",
    "write_ladder_summary",
]

VAL_LOSS = METRICS["capability:val_loss"]
# the micro-task circuits' own controls (random units of the circuit's size, held-out
# prompts), shown where a rung scored circuits: an untrained twin learns no task, so
# these have no twin to be informative against
CIRCUIT_SCORES = tuple(
    METRICS[f"interpretability:interp.microcircuit_{k}"]
    for k in ("tasks", "faithfulness_heldout", "beats_random")
)
MAX_PANELS = 8  # ladder.png: the val-loss gap and at most 7 scores


@dataclass(frozen=True)
class Rung:
    """One rung's compare, as its report.json says: the report's tables and the corpus."""

    name: str
    tables: ReportTables
    corpus: Mapping[str, Any]  # the code corpus the rung read (ladder.json's `corpus`)

    def stat(self, arch: str, key: str) -> Stat | None:
        return self.tables.summary.get(arch, {}).get(key)

    def constant(self, arch: str, key: str) -> float | None:
        s = self.stat(arch, key)
        return None if s is None else s["mean"]


def read_rung(name: str, report_json: Path, corpus: Mapping[str, Any] | None = None) -> Rung:
    """A rung from its compare's report.json (the runs it scored, re-aggregated)."""
    d = json.loads(Path(report_json).read_text())
    runs = tuple(
        RunResult.from_json({k: v for k, v in r.items() if k != "posthoc"}) for r in d["runs"]
    )
    seeds = tuple(sorted({r.seed for r in runs}))
    tables = ReportTables(Path(report_json).parent, seeds, d.get("config", {}), runs)
    return Rung(name, tables, dict(corpus or {}))


def _kinds(rungs: Sequence[Rung]) -> list[str]:
    """Every architecture of any rung, dense first, then in the rungs' order."""
    out: list[str] = []
    for r in rungs:
        out += [a for a in r.tables.summary if a not in out]
    return sorted(out, key=lambda a: a != BASELINE)


def informative_scores(rungs: Sequence[Rung]) -> list[Metric]:
    """The interpretability and domain entries (expanded per name) that have an
    untrained twin and a value at some rung: the headline ones always (marked † where
    not informative), the others where informative for some kind at some rung; in
    the registry's order, headline first."""
    out: list[Metric] = []
    for r in rungs:
        flagged = {a: {m.key for m in ms} for a, ms in r.tables.not_informative().items()}
        for m in r.tables.section(INTERPRETABILITY) + r.tables.section(DOMAINS):
            if "init" not in m.baselines or any(m.key == o.key for o in out):
                continue
            has = [a for a, s in r.tables.summary.items() if s.get(m.key)]
            if has and (m.headline or any(m.key not in flagged.get(a, ()) for a in has)):
                out.append(m)
    order = [m.key for m in METRICS.values()]
    return sorted(out, key=lambda m: (not m.headline, order.index(m.key) if m.key in order else len(order)))  # fmt: skip


def _header(r: Rung) -> str:
    n = r.constant(BASELINE, "params.active")
    return f"{r.name} ({n / 1e6:.2f}M)" if n else r.name


def _score_table(m: Metric, rungs: Sequence[Rung], kinds: Sequence[str]) -> Table:
    """A row per kind, a column per rung: the rung report's cell (value, interval,
    † where not informative there), and "above dense" / "below dense" where the
    interval of the kind's difference to its rung's dense model excludes 0 (the rung
    report's "vs dense" decision), on the scores that give every kind as many
    candidate units (Metric.matched)."""
    rows, decided = [], False
    for arch in kinds:
        cells = []
        for r in rungs:
            cell = m.format(r.stat(arch, m.key))
            flagged = {x.key for x in r.tables.not_informative().get(arch, [])}
            twin = r.stat(arch, m.baseline("init").key)
            if twin and r.stat(arch, m.key):
                cell += f" (twin {m.format_value(twin['mean'])})"
            if arch != BASELINE and m.matched:  # kinds told apart only at equal chances
                vs = decide(r.tables.vs_dense(arch, m.key), [0.0, 0.0])
                decided |= vs is not None
                if vs in ("above", "below"):
                    cell += f", {vs} dense"
            cells.append(f"{cell} {NOT_INFORMATIVE}" if m.key in flagged else cell)
        rows.append((arch, cells))
    note = m.doc
    if decided:
        note += ("; above / below dense: the 95% interval of the difference to the rung's "
                 "dense model excludes 0 (table \"Against dense\")")  # fmt: skip
    return Table(m.header, "kind", [_header(r) for r in rungs], rows, note)


def _vs_dense_table(
    ms: Sequence[Metric], rungs: Sequence[Rung], kinds: Sequence[str]
) -> Table | None:
    """Each kind's difference to its rung's dense model on the scores kinds are told
    apart on (Metric.matched, with intervals): the difference of the means, its 95%
    interval (glassbox.results.difference) and what it decides. None where no rung
    has one."""
    rows = []
    for m in ms:
        for arch in kinds:
            cells = [_vs_dense_cell(r, arch, m) for r in rungs]
            if arch != BASELINE and m.matched and any(c != "–" for c in cells):
                rows.append((f"{m.header}: {arch}", cells))
    if not rows:
        return None
    note = ("A kind's mean minus its rung's dense model's, and the 95% interval of that "
            "difference: at one seed the paired bootstrap interval (both kinds resampled "
            "alike over the same examples, which keeps the hard ones they share) where both "
            "runs kept their replicates, else from the two intervals taken as independent "
            "(either covers the held-out examples: it tells two trained models apart, and "
            "only seeds tell the kinds apart); over several seeds Welch's t interval, never "
            "narrower than the seeds' own intervals allow; above / below where it excludes "
            "0, same where it holds 0; in parentheses, with several seeds, what each seed's "
            "difference to the dense model of the same seed decides (paired where both kept "
            "their replicates). Only the scores that give every kind as many candidate "
            "units.")  # fmt: skip
    return Table("Against dense", "score: kind", [_header(r) for r in rungs], rows, note)


def _vs_dense_cell(r: Rung, arch: str, m: Metric) -> str:
    """ "+0.032 [0.008, 0.056], above", and with two seeds or more against dense's of
    the same seed each seed's own decision: "(seeds 0, 1, 2: above, above, same)"."""
    said = r.tables.vs_dense_said(arch, m)
    if not said:
        return "–"
    per = r.tables.vs_dense_per_seed(arch, m)
    seeds = "" if len(per) < 2 else (
        f" (seeds {', '.join(map(str, per))}: {', '.join(d for d, _ in per.values())})"
    )  # fmt: skip
    return f"{said[1]}, {said[0]}{seeds}"


def task_edges(r: Rung, arch: str, seed: int | None = None) -> dict[str, float]:
    """{micro-task: its circuit's edges} for the tasks `arch` learned at rung r (the
    mean over its seeds that learned the task, or at `seed` alone), from the runs'
    per-task results."""
    prefix, per_task = "interp.microcircuit.", {}
    for run in r.tables.runs:
        if run.arch != arch or seed not in (None, run.seed):
            continue
        for key, v in run.values().items():
            if key.startswith(prefix) and key.endswith(".edges") and v:
                per_task.setdefault(key[len(prefix) : -len(".edges")], []).append(float(v))
    return {t: sum(vs) / len(vs) for t, vs in per_task.items()}


def edges_ratio(kind: Mapping[str, float], dense: Mapping[str, float]) -> dict[str, Any] | None:
    """kind's micro-circuit edges over dense's, the geometric mean over the tasks both
    learned, with the 95% t interval of the mean log ratio over those tasks (k - 1
    degrees of freedom); one shared task gives the ratio with no interval ("ci" None),
    none gives None. Not a bootstrap over the tasks: a percentile bootstrap never
    reaches past the most extreme task, so over 2, 3, 5 or 7 tasks its 95% interval
    holds the true mean in about 50%, 75%, 85% and 88% of draws (normal log ratios),
    the t interval in 95%."""
    tasks = sorted(set(kind) & set(dense))
    if not tasks:
        return None
    logs = [math.log(kind[t] / dense[t]) for t in tasks]
    mean, ci = statistics.fmean(logs), None
    if len(logs) > 1:
        half = t975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        ci = [math.exp(mean - half), math.exp(mean + half)]
    return {"ratio": math.exp(mean), "ci": ci, "tasks": tasks}


def circuit_ratio(r: Rung, arch: str) -> dict[str, Any] | None:
    """`arch`'s micro-circuit edges over dense's at rung r, paired by seed: each seed both
    kinds have gives edges_ratio of the kind's runs against dense's at that seed; one
    seed is that ratio, several are combined as a score is over seeds
    (glassbox.results.stat on the log ratios: the t interval of their mean, never
    narrower than the seeds' own intervals allow), so seeds whose ratios disagree widen
    the interval instead of averaging into a narrow one. Adds "seeds" (those paired),
    "per_seed" ({seed: that seed's edges_ratio}) and "said" ("larger" or "smaller"
    where the interval excludes 1, else "same"), each seed's ratio with its own "said";
    "tasks" is every task some seed shared. None where no seed shares a learned task."""
    seeds = sorted({run.seed for run in r.tables.runs if run.arch == arch}
                   & {run.seed for run in r.tables.runs if run.arch == BASELINE})  # fmt: skip
    per = {}
    for seed in seeds:
        e = edges_ratio(task_edges(r, arch, seed), task_edges(r, BASELINE, seed))
        if e is not None:
            per[seed] = {**e, "said": _size_said(e["ci"])}
    if not per:
        return None
    out = {"seeds": list(per), "per_seed": per}
    if len(per) == 1:
        return {**next(iter(per.values())), **out}
    logs = stat([math.log(e["ratio"]) for e in per.values()],
                [[math.log(x) for x in e["ci"]] if e["ci"] else None for e in per.values()])  # fmt: skip
    ci = [math.exp(x) for x in logs["ci"]] if "ci" in logs else None
    tasks = sorted({t for e in per.values() for t in e["tasks"]})
    return {"ratio": math.exp(logs["mean"]), "ci": ci, "tasks": tasks,
            "said": _size_said(ci), **out}  # fmt: skip


def _size_said(ci: Sequence[float] | None) -> str:
    """ "larger" or "smaller" than dense's where the interval excludes 1, else "same"
    (no interval: "same"); the report's decide against the point 1."""
    return {"above": "larger", "below": "smaller"}.get(decide(ci, [1.0, 1.0]), "same")


def _circuit_cell(e: Mapping[str, Any] | None, arch: str) -> str:
    """ "0.58x [0.26, 1.30], same (5 tasks)"; over several seeds each seed's ratio and its
    decision after the tasks: "(5 tasks; seeds 0, 1: 1.30x same, 0.58x same)"; one task,
    no interval: "3.00x (no interval), same (1 task)". Dense, the reference, gets no
    decision."""
    if e is None:
        return "–"
    cell = f"{e['ratio']:.2f}x " + (
        "(no interval)" if e["ci"] is None else f"[{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]"
    )  # fmt: skip
    tasks = f"{len(e['tasks'])} task{'s' * (len(e['tasks']) > 1)}"
    if arch == BASELINE:
        seeds = "" if len(e["seeds"]) == 1 else f", {len(e['seeds'])} seeds"
        return f"{cell} ({tasks}{seeds})"
    seeds = "" if len(e["seeds"]) == 1 else (
        f"; seeds {', '.join(map(str, e['seeds']))}: "
        + ", ".join(f"{p['ratio']:.2f}x {p['said']}" for p in e["per_seed"].values())
    )  # fmt: skip
    return f"{cell}, {e['said']} ({tasks}{seeds})"


def _circuit_table(rungs: Sequence[Rung], kinds: Sequence[str]) -> Table | None:
    """Each kind's micro-circuit edges over its rung's dense model's, on the tasks both
    learned; None where no rung scored circuits."""
    if not any(task_edges(r, a) for r in rungs for a in kinds):
        return None
    rows = [(a, [_circuit_cell(circuit_ratio(r, a), a) for r in rungs]) for a in kinds]
    note = ("Non-zero weights of each micro-task's circuit (the fewest units keeping 90% of "
            "the way from a uniform guess to the model, fitted, sized and scored on separate "
            "prompts) over the rung's dense model's on the same task; geometric mean over the "
            "tasks both learned, [95% t interval over those tasks], larger or "
            "smaller where it excludes 1; over several seeds, each seed's ratio against "
            "dense's at the same seed, their geometric mean with the t interval over seeds "
            "(never narrower than the seeds' own intervals), then each seed's ratio. "
            "Each model at its own loss (the capability table): `glassbox matched-loss` "
            "holds the loss equal along training.")  # fmt: skip
    return Table("Micro-task circuits: edges / dense's", "kind", [_header(r) for r in rungs], rows, note)  # fmt: skip


def _capability_table(rungs: Sequence[Rung], kinds: Sequence[str]) -> Table:
    """Val loss per kind and rung, with its gap to the rung's dense model."""
    rows = []
    for arch in kinds:
        cells = []
        for r in rungs:
            s, d = r.stat(arch, VAL_LOSS.key), r.stat(BASELINE, VAL_LOSS.key)
            g = gap_percent(s["mean"] if s else None, d["mean"] if d else None)
            cells.append(VAL_LOSS.format(s) + ("" if g is None else f" ({g:+.1f}%)"))
        rows.append((arch, cells))
    note = "Test split, next-token loss on code; in brackets the gap to the rung's dense model."
    return Table("Capability: val loss (gap to dense)", "kind", [_header(r) for r in rungs], rows, note)  # fmt: skip


def _budget_table(rungs: Sequence[Rung], kinds: Sequence[str]) -> Table:
    """What each rung held equal: training tokens, and each kind's active / total parameters."""
    rows = []
    for r in rungs:
        tokens = r.constant(BASELINE, "train.tokens")
        cells = [f"{tokens:,.0f}" if tokens else "–"]
        for arch in kinds:
            act, tot = r.constant(arch, "params.active"), r.constant(arch, "params.total")
            cells.append(f"{act:,.0f} / {tot:,.0f}" if act and tot else "–")
        rows.append((r.name, cells))
    return Table(
        "What each rung holds equal", "rung", ["training tokens", *kinds], rows,
        "Active (non-zero, per token) / total parameters of each kind; every kind of a rung "
        "trains on the same tokens.",
    )  # fmt: skip


def ladder_tables(rungs: Sequence[Rung]) -> list[Table]:
    """The budget, the capability gap, one table per informative score, the micro-task
    circuits (their edges against dense's, and their own controls) where a rung scored
    them, and each kind's difference to dense where it has an interval."""
    kinds = _kinds(rungs)
    informative = informative_scores(rungs)
    scores = [_score_table(m, rungs, kinds) for m in informative]
    circuits = _circuit_table(rungs, kinds)
    if circuits is not None:
        scores += [circuits, *(_score_table(m, rungs, kinds) for m in CIRCUIT_SCORES)]
    vs_dense = _vs_dense_table(informative, rungs, kinds)
    scores += [vs_dense] if vs_dense is not None else []
    return [_budget_table(rungs, kinds), _capability_table(rungs, kinds), *scores]


def _corpus_note(rungs: Sequence[Rung]) -> str:
    """One line per rung on the corpus it read, and whether the rungs read the same one."""
    lines = []
    for r in rungs:
        c = r.corpus
        if c:
            lines.append(f"- {r.name}: Python {c.get('python', '?')}, {c.get('packages', '?')} "
                         f"packages, characters by split {c.get('chars', {})}")  # fmt: skip
    fingerprints = {json.dumps(r.corpus.get("package_names"), sort_keys=True) for r in rungs if r.corpus}  # fmt: skip
    if len(fingerprints) > 1:
        lines.append("- **The rungs read different corpora** (different installed packages): "
                     "the gap against size is confounded with the data.")  # fmt: skip
    return "\n".join(lines)


def _plot(rungs: Sequence[Rung], kinds: Sequence[str], path: Path) -> Path:
    """ladder.png: the val-loss gap to dense and each informative score (95% interval
    as error bars) against the dense model's active parameters, a line per kind."""
    panels: list[Metric | None] = [None, *informative_scores(rungs)][:MAX_PANELS]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = [r.constant(BASELINE, "params.active") or float(i + 1) for i, r in enumerate(rungs)]
    for n, m in enumerate(panels):
        ax = fig.add_subplot(rows, cols, n + 1)
        for c, arch in enumerate(kinds):
            pts = [(x, *_point(r, arch, m)) for x, r in zip(xs, rungs)]
            pts = [p for p in pts if p[1] is not None]
            if not pts:
                continue
            x, y, lo, hi = zip(*pts)
            ax.errorbar(x, y, yerr=[[a - b for a, b in zip(y, lo)], [b - a for a, b in zip(y, hi)]],
                        marker="o", capsize=3, color=colours[c % len(colours)], label=arch)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(xs, [r.name for r in rungs])
        ax.minorticks_off()
        ax.set_title("val loss gap to dense (%)" if m is None else m.header, fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.supxlabel("rung (x: the dense model's active parameters, log scale)")
    fig.savefig(path, dpi=110)
    return path


def _point(r: Rung, arch: str, m: Metric | None) -> tuple[float | None, float, float]:
    """(value, low, high) of a panel's point; the interval is the value where there is none."""
    if m is None:
        s, d = r.stat(arch, VAL_LOSS.key), r.stat(BASELINE, VAL_LOSS.key)
        g = gap_percent(s["mean"] if s else None, d["mean"] if d else None)
        return (g, g or 0.0, g or 0.0)
    s = r.stat(arch, m.key)
    if not s:
        return (None, 0.0, 0.0)
    lo, hi = s.get("ci") or (s["mean"], s["mean"])
    return (s["mean"], lo, hi)


def write_ladder_summary(out_dir: Path, rungs: Sequence[Rung]) -> Path:
    """ladder.md, ladder.json and ladder.png into out_dir; returns ladder.md's path."""
    out_dir = Path(out_dir)
    kinds = _kinds(rungs)
    _plot(rungs, kinds, out_dir / "ladder.png")
    lines = [
        "# The gap against size",
        "",
        f"Rungs {', '.join(r.name for r in rungs)} of configs/ladder/ (each rung's own report: "
        f"{', '.join(f'[{r.name}]({r.name}/report.md)' for r in rungs)}). Brackets are 95% "
        f"intervals, (twin x) the untrained twin's value, {NOT_INFORMATIVE} a score that does "
        "not tell the trained model from its twin at that rung.",
        "",
        _corpus_note(rungs),
        "",
        "![the gap against size](ladder.png)",
        "",
    ]
    for t in ladder_tables(rungs):
        lines += [f"## {t.title}", "", *t.markdown(), ""]
    path = out_dir / "ladder.md"
    path.write_text("\n".join(lines))
    (out_dir / "ladder.json").write_text(json.dumps(_json(rungs, kinds), indent=2))
    return path


def _json(rungs: Sequence[Rung], kinds: Sequence[str]) -> dict[str, Any]:
    """ladder.json: per rung, its corpus and per kind every score the tables show."""
    keys = ["params.active", "params.total", "train.tokens", VAL_LOSS.key]
    informative = informative_scores(rungs)
    keys += [k for m in informative for k in (m.key, m.baseline("init").key)]
    keys += [m.key for m in CIRCUIT_SCORES]
    return {
        r.name: {
            "corpus": dict(r.corpus),
            "kinds": {a: {k: r.stat(a, k) for k in keys} for a in kinds},
            "vs_dense": {
                a: {m.key: r.tables.vs_dense(a, m.key) for m in informative if m.matched}
                for a in kinds
                if a != BASELINE
            },  # fmt: skip
            "microcircuit_edges_to_dense": {a: circuit_ratio(r, a) for a in kinds},
            "not_informative": {
                a: [m.key for m in ms] for a, ms in r.tables.not_informative().items()
            },  # fmt: skip
        }
        for r in rungs
    }
