"""One table of the gap report and its cells.

A `Table` renders as markdown (report.md) and HTML (report.html) from the same cells;
a cell is a registry entry's Stat formatted (glassbox.metrics), its gap to the dense
baseline, and NOT_INFORMATIVE where the score did not move with learning (`informative`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from glassbox.analysis.intervals import decide
from glassbox.metrics import Metric, Stat
from glassbox.results import gap_percent

# A score whose trained value lies within max(std over seeds, TRUST_TOLERANCE) of its
# untrained twin's is not informative at this budget (the tolerance alone with one seed).
TRUST_TOLERANCE = 0.02
NOT_INFORMATIVE = "†"


def format_gap(stat: Stat | None, dense: Stat | None) -> str:
    """The gap of a Stat's mean to dense's, in percent; – where either is missing."""
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
        note = f"<p>{md_inline(self.note)}</p>" if self.note else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def md_inline(text: str) -> str:
    """The little markdown the report's prose uses (**bold**, `code`, [text](link)) as HTML."""
    out = html.escape(text.strip())
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


def metric_headers(metrics: Sequence[Metric]) -> list[str]:
    """The column headers of `metrics`: each one's, then "gap" where it has one."""
    return [h for m in metrics for h in ([m.header, "gap"] if m.gap else [m.header])]


def metric_cells(
    metrics: Sequence[Metric], stats: Mapping[str, Stat | None], dense: Mapping
) -> list[str]:
    """A row of stats formatted per metric, with its gap to dense where the metric has one."""
    out = []
    for m in metrics:
        out.append(m.format(stats.get(m.key)))
        if m.gap:
            out.append(format_gap(stats.get(m.key), dense.get(m.key)))
    return out


def decide_paired(
    pairs: Sequence[tuple[Sequence[float] | None, Sequence[float] | None]],
) -> str | None:
    """A score against a baseline measured on the same run (its untrained twin, its
    random control), seed by seed: `pairs` holds each seed's (score interval, its own
    baseline's interval). The decision every seed makes ("above", "below"), or "same"
    where any seed's intervals overlap or two seeds disagree; None where a seed lacks an
    interval. One seed: its own decision. Several: each seed's twin is its own, so the
    twins' spread over seeds does not enter (the t interval of the twins' mean would
    carry it, at one degree of freedom for two seeds 12.7 standard errors wide)."""
    if not pairs:
        return None
    made = [decide(a, b) for a, b in pairs]
    if any(d is None for d in made):
        return None
    return made[0] if all(d == made[0] for d in made) else "same"


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
