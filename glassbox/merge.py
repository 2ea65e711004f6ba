"""`glassbox merge`: one gap report from the reports of runs scored apart.

    glassbox merge A/report.json B/report.json ... --out DIR
    glassbox merge A/report.json B/report.json:moe,transcoder --out DIR   (B's moe and
                                                            transcoder runs only)

A compare's runs need not be scored in one place: a seed more trained in another
session, the kinds a second machine ran, a rung's report published before. Each
report.json keeps every run's scores (and the bootstrap replicates its decisions pair
on), so their runs can make one report without scoring anything again: DIR gets
report.md, .html, .json and pareto.png with every run's plots and model card
(Report.publish), and the decisions over seeds and against dense are made afresh over
the runs together.

Only runs scored the same way merge. The reports must agree on what every run's
scores depend on (the run overrides, analysis_examples, the post-hoc route's settings;
for an architecture two reports share, its run config, its overrides and its named
checkpoint), else one line names the key and the two reports. A run (architecture and
seed) in several reports must have the same scores in each (timings aside): the first
is kept, and a difference is one line naming the key (score both with the same code,
or take the run from one report only: `path:kind,kind`). A run trained again is not
always the same run: the same code, data and seed on another machine's CPU can round
floats otherwise and train other weights. Reports scored with and without the
micro-task circuits (`microcircuits`) merge without them: those keys are dropped from
the runs that have them, so that no kind is averaged over the seeds that happened to
compute them.

The merged config records its sources (`merged_from`, each as given) and, for a source
that was itself merged, what that one was merged from (`merged_before`), so a report
merged again with each new seed keeps its whole chain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from glassbox.analysis.microcircuits import is_microcircuit_key
from glassbox.archs.errors import ArgumentError
from glassbox.compare_config import BASELINE
from glassbox.report import Report
from glassbox.results import PostHocResult, RunResult

__all__ = ["MergeError", "SCORED_BY", "merge_reports"]

# the compare keys every run's scores depend on: two reports merge only where these agree
SCORED_BY = ("overrides", "analysis_examples", "posthoc")
# the keys an architecture's runs depend on, where two reports both have that architecture
PER_ARCH = ("architectures", "arch_overrides", "checkpoints")
# keys of a run that say how and where it ran, not what it scored (its content key
# names the micro-task setting too, which a merge may drop)
NOT_SCORES = ("run_dir", "plots", "trained_now", "train_seconds", "analysis_seconds", "key")
ROUTE_TIMINGS = ("fit_seconds", "cost_ratio")  # a post-hoc route's wall-clock times


class MergeError(ArgumentError):
    """Two reports that cannot make one: `report=path: what differs`."""

    def __init__(self, path: str | Path, what: str):
        super().__init__("report", str(path), what)


def _without_microcircuits(run: RunResult) -> RunResult:
    interp = {k: v for k, v in run.interp.items() if not is_microcircuit_key(k)}
    return replace(run, interp=interp)


def _scores(run: RunResult) -> dict[str, Any]:
    return {k: v for k, v in run.to_json().items() if k not in NOT_SCORES}


def _route_scores(route: PostHocResult) -> dict[str, Any]:
    """A post-hoc route's scores and coverage, its timings aside (fit_seconds and the
    cost ratio are wall-clock times)."""
    saved = route.to_json()
    scores = {k: v for k, v in saved["scores"].items() if k not in ROUTE_TIMINGS}
    return {"scores": scores, "coverage_by_layer": saved["coverage_by_layer"]}


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted key of the first place two JSON values differ, None where equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}{k} (in one only)"
            if (d := _first_difference(a[k], b[k], f"{where}{k}.")) is not None:
                return d
        return None
    return None if a == b else where.rstrip(".") or "(the value)"


def _check_config(first: Report, path: Path, report: Report, first_path: Path) -> None:
    for key in SCORED_BY:
        if report.config.get(key) != first.config.get(key):
            raise MergeError(
                path, f"scored with another {key} than {first_path} ({report.config.get(key)!r} "
                f"against {first.config.get(key)!r}): its runs are not comparable",
            )  # fmt: skip


def _merge_arch_keys(reports: Sequence[tuple[Path, Report]]) -> dict[str, dict[str, Any]]:
    """architectures, arch_overrides and checkpoints over every report, checked equal
    for an architecture two reports share; architectures in the order first met."""
    merged: dict[str, dict[str, Any]] = {key: {} for key in PER_ARCH}
    said: dict[tuple[str, str], Path] = {}
    for path, report in reports:
        for arch in report.config.get("architectures") or {}:
            for key in PER_ARCH:
                have = (report.config.get(key) or {}).get(arch)
                if (key, arch) in said and merged[key].get(arch) != have:
                    raise MergeError(
                        path, f"{key}.{arch} is {have!r} and {said[key, arch]}'s "
                        f"{merged[key].get(arch)!r}: not the same architecture",
                    )  # fmt: skip
                said[key, arch] = path
                if have is not None:
                    merged[key][arch] = have
    return merged


def _report_and_kinds(given: str | Path) -> tuple[Path, list[str] | None]:
    """A report.json, and the architectures to take from it where the path ends in
    `:kind,kind` (all of them without)."""
    p, kinds = Path(given), None
    if not p.is_file() and ":" in str(given):
        path, _, names = str(given).rpartition(":")
        p, kinds = Path(path), [k for k in names.split(",") if k]
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such report.json")
    return p, kinds


def _only(report: Report, path: Path, kinds: list[str]) -> Report:
    """`report` with the runs and post-hoc routes of `kinds` alone; MergeError naming a
    kind it does not have."""
    have = list(report.config.get("architectures") or {})
    if not kinds or (missing := [k for k in kinds if k not in have]):
        raise MergeError(path, f"has no architecture {','.join(missing) if kinds else '(none named after :)'} "
                               f"(it has {', '.join(have)})")  # fmt: skip
    config = {**report.config, "architectures": {k: v for k, v in report.config["architectures"].items() if k in kinds}}  # fmt: skip
    return replace(
        report, config=config,
        runs=tuple(r for r in report.runs if r.arch in kinds),
        posthoc=tuple(p for p in report.posthoc if p.arch in kinds),
    )  # fmt: skip


PROVENANCE = ("merged_from", "merged_before")


def _provenance(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a merged report's config says it was merged from ({} for a compare's)."""
    return {k: config[k] for k in PROVENANCE if k in config}


def merge_reports(paths: Sequence[str | Path], out: str | Path) -> Report:
    """One Report of every run in the report.json files `paths` (a path ending in
    `:kind,kind` gives only those architectures' runs), written (published: plots and
    cards copied) into `out`. MergeError (one line) where the reports were
    scored differently, a run appears twice with other scores, `out` is one of the
    reports' folders, or the merged runs have no dense baseline."""
    out = Path(out)
    if len(paths) < 2:
        raise ArgumentError("reports", [str(p) for p in paths], "at least two report.json files")
    reports: list[tuple[Path, Report]] = []
    said = []
    for given in paths:
        p, kinds = _report_and_kinds(given)
        if os.path.realpath(p.parent) == os.path.realpath(out):
            raise MergeError(p, f"is in --out ({out}): merge into another folder")
        report = Report.read(p)
        if kinds is not None:
            report = _only(report, p, kinds)
        reports.append((p, report))
        said.append(Path(p).as_posix() + (f":{','.join(kinds)}" if kinds is not None else ""))
    first_path, first = reports[0]
    for path, report in reports[1:]:
        _check_config(first, path, report, first_path)
    arch_keys = _merge_arch_keys(reports)
    if BASELINE not in arch_keys["architectures"]:
        raise MergeError(first_path, f"none of the reports has the {BASELINE} baseline")
    microcircuits = all(bool(r.config.get("microcircuits")) for _, r in reports)

    runs: dict[tuple[str, int], tuple[RunResult, Path]] = {}
    posthoc: dict[tuple[str, int], tuple[PostHocResult, Path]] = {}
    for path, report in reports:
        for run in report.runs:
            run = run if microcircuits else _without_microcircuits(run)
            if (at := (run.arch, run.seed)) in runs:
                kept, kept_path = runs[at]
                if (d := _first_difference(_scores(kept), _scores(run))) is not None:
                    raise MergeError(
                        path, f"{run.arch} at seed {run.seed} differs from {kept_path}'s at "
                        f"{d}: score both with the same code, or leave one report out",
                    )  # fmt: skip
                continue
            runs[at] = (run, path)
        for route in report.posthoc:
            at = (route.arch, route.seed)
            if at in posthoc and _route_scores(posthoc[at][0]) != _route_scores(route):
                raise MergeError(path, f"its post-hoc route of {at[0]} at seed {at[1]} differs "
                                       f"from {posthoc[at][1]}'s")  # fmt: skip
            posthoc.setdefault(at, (route, path))

    order = {arch: i for i, arch in enumerate(arch_keys["architectures"])}
    seeds = tuple(sorted({seed for _, seed in runs}))
    # a source that was itself merged keeps its own sources, so the chain survives
    earlier = {s: p for s, (_, r) in zip(said, reports) if (p := _provenance(r.config))}
    config = {
        **{k: v for k, v in first.config.items() if k not in PROVENANCE},
        **arch_keys,
        "seeds": list(seeds),
        "microcircuits": microcircuits,
        "out_dir": out.as_posix(),
        "merged_from": said,
        **({"merged_before": earlier} if earlier else {}),
    }
    merged = Report(
        out_dir=out,
        seeds=seeds,
        config=config,
        runs=tuple(
            r for r, _ in sorted(runs.values(), key=lambda x: (order[x[0].arch], x[0].seed))
        ),  # fmt: skip
        posthoc=tuple(p for p, _ in posthoc.values()),
    )
    return Report.read(merged.publish(out).with_name("report.json"))
