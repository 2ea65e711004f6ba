"""The gap report: report.md, report.html, report.json, pareto.png.

A `Report` holds the typed results of one compare and the metric registry
(glassbox.metrics); every table is built from the registry's entries of its
section (glassbox.report_tables), and report.json's aggregates from the same summary.

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
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from glassbox.archs.checkpoint import resolve_checkpoint
from glassbox.archs.errors import CheckpointError
from glassbox.frontier import pareto_plot
from glassbox.metrics import CAPABILITY, INTERPRETABILITY, Metric, Stat
from glassbox.report_tables import ReportTables
from glassbox.results import PostHocResult, RunResult
from glassbox.table import NOT_INFORMATIVE, TRUST_TOLERANCE, md_inline

# report.json nests these key families under their first part; other keys are flat.
JSON_GROUPS = ("interp", "tools", "skills", "baselines")


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
class Report(ReportTables):
    """One compare's results. Build it, then `write()` report.md, report.json and
    pareto.png into out_dir; `markdown()` is report.md's text, `markdown_summary()`
    its tables before the first section."""

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

    # --- the prose

    def trust_note(self) -> list[str]:
        """In words: which scores did not move with learning at this budget."""
        flagged = {a: ms for a, ms in self.not_informative().items() if ms}
        rule = (
            "(init) and twin are the untrained twin (the same config and seed at "
            "initialisation), (token) what the current token alone predicts, (random) random "
            "directions in the units' span, (shuffled) the groups shuffled within each token, "
            "all scored by the same code on the same tokens. Brackets are 95% intervals. "
        )
        still = (
            "the paired interval of its difference to the untrained twin holds 0 at some "
            "seed (scores whose runs kept their replicates), its interval overlaps the "
            "twin's (scores with intervals alone), or it lies within the twin's seed spread "
            f"(max(std over seeds, {TRUST_TOLERANCE}), the older scores)"
        )
        if not flagged:
            return [rule + f"Every score with an untrained baseline is told from it (none where {still}).\n"]  # fmt: skip
        lists = "; ".join(f"{a}: {', '.join(m.header for m in ms)}" for a, ms in flagged.items())
        return [
            rule + f"{NOT_INFORMATIVE} **Not informative at this budget**: {still}, so the "
            f"score does not tell this model from an untrained one: {lists}.\n"
        ]

    def _data_words(self) -> str:
        text = any(r.not_applicable for r in self.runs)  # text runs list the ground-truth keys
        return "the same text corpus and seed" if text else "the skill suite, same seed"

    def _spread_words(self) -> str:
        by_seeds: dict[tuple[int, ...], list[str]] = {}  # a merged report's kinds may differ
        for arch in dict.fromkeys(r.arch for r in self.runs):
            seeds = tuple(sorted(r.seed for r in self.runs if r.arch == arch))
            by_seeds.setdefault(seeds, []).append(arch)
        if len(by_seeds) > 1:
            each = "; ".join(
                f"{', '.join(a)}: {', '.join(map(str, s))}" for s, a in by_seeds.items()
            )
            return f"Mean ± standard deviation over each kind's seeds ({each}; one seed: no spread)"
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
        body += [f"<p>{md_inline(p)}</p>" for p in [*self.trust_note(), self.held_equal(), *self.tool_note()] if p.strip()]  # fmt: skip
        pareto = self.out_dir / "pareto.png"
        if pareto.is_file():
            body.append(f'<figure>{_img(pareto, "capability against interpretability")}'
                        "<figcaption>The capability–interpretability frontier</figcaption></figure>")  # fmt: skip
        for t in self.tables()[1:]:
            body += [f"<h2>{esc(t.title)}</h2>", t.html()]
        links = self.models_section()
        if links:
            body += ["<h2>Models</h2>", "<ul>"]
            body += [f"<li>{md_inline(line[2:])}</li>" for line in links if line.startswith("- ")]
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
        .html, .json, pareto.png, every run's plots copied to plots/<arch>-seed<s>/ and
        the model card the report links, where it is a trained run's (its checkpoint's
        README.md), to models/<arch>-seed<s>/checkpoint/ (the runs/ folders of out_dir
        are build output; a named checkpoint, a shipped one, is linked where it is), each link
        made relative to `dest`. Returns report.md's path there. Only what it writes is
        replaced: other results documents committed in `dest` stay."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        # Copied into a hidden folder in dest first: a report read from dest itself (published
        # again after a merge) has its plots and cards there, in the folders being replaced.
        staged = Path(tempfile.mkdtemp(prefix=".publish-", dir=dest))
        try:
            linked = self.checkpoint_dirs()  # the checkpoint each model card link points into
            runs = []
            for r in self.runs:
                plots = []
                for p in r.plots:
                    src = Path(p) if Path(p).is_absolute() else Path.cwd() / p
                    if src.is_file():
                        to = Path("plots") / f"{r.arch}-seed{r.seed}" / src.name
                        (staged / to).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, staged / to)
                        plots.append((dest / to).as_posix())
                run_dir, card = r.run_dir, Path(r.run_dir) / "checkpoint" / "README.md"
                if linked[r.arch] == card.parent and card.is_file():
                    to = Path("models") / f"{r.arch}-seed{r.seed}" / "checkpoint"
                    (staged / to).mkdir(parents=True)
                    shutil.copy2(card, staged / to / "README.md")
                    run_dir = (dest / to.parent).as_posix()
                runs.append(replace(r, plots=tuple(plots), run_dir=run_dir))
            for folder in ("plots", "models"):  # runs no longer in the report leave nothing
                if (dest / folder).exists():
                    shutil.rmtree(dest / folder)
                if (staged / folder).exists():
                    (staged / folder).rename(dest / folder)
        finally:  # a copy that fails leaves dest as it was
            shutil.rmtree(staged, ignore_errors=True)
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
