"""`glassbox compare`: train (or load) every architecture at a matched budget over
several seeds, score capability and interpretability, write the gap report.

    report/
      report.md, report.json, pareto.png      the answer
      runs/<arch>-seed<s>/                      each run (glassbox train's run directory)
      runs/<arch>-seed<s>/analysis/             its plots and analysis.json

The budget: every run gets the same data, the same optimiser steps and batch size
(so the same training tokens), and the configs match active parameters per token
to the dense baseline (configs/model/*.yaml state how); the report prints both.
Nothing is redone that is still current: a run's exported checkpoint is loaded, not
retrained, when it was made from the same resolved run config (runs/<run>/train_key);
its scores (analysis/row.json) and the post-hoc route (analysis/posthoc.json) are
reused only when saved under the same content key: the checkpoint, the compare keys
that change them (analysis_examples, posthoc.*) and results.ANALYSIS_VERSION.

An architecture listed under `checkpoints` (configs/compare_shipped.yaml: the shipped
checkpoints, "glassbox/<name>") is not trained: that checkpoint is scored, beside its
untrained twin, with its own config.yaml as the run.

compare schedules and caches; it does no science. Here: the plan (every run's config
loaded and checked before anything is written) and the order of the work. Its parts:

    compare_config.py   CompareConfig, read from YAML and key=value overrides
    runs.py             Run: one architecture at one seed, its checkpoint, model and data
    scheduling.py       training (subprocesses) and scoring (workers) side by side, or in process
    scoring.py          a run's scores and the post-hoc route, saved under content keys
    analysis/           the science (analysis.interp, analysis.posthoc, analysis.tools)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from glassbox.archs.checkpoint import shipped_dir
from glassbox.archs.config import ConfigError
from glassbox.archs.ffn import FFN_KINDS
from glassbox.archs.writes import Output, close_output_dir, open_output_dir
from glassbox.compare_config import (
    CompareConfig,
    PostHocConfig,
    check_runs,
    load_compare_config,
    run_overrides,
)
from glassbox.console import Jobs
from glassbox.report import Report
from glassbox.results import PostHocResult, RunResult, gap_percent
from glassbox.runs import CheckpointRun, Run
from glassbox.scheduling import (
    ScoreJob,
    scoring_jobs,
    scoring_todo,
    train_and_score,
    train_runs,
)
from glassbox.training.config import ExperimentConfig, load_config

__all__ = [
    "CheckpointRun",
    "add_replicates_to_runs",
    "CompareConfig",
    "PostHocConfig",
    "Run",
    "check_runs",
    "compare",
    "gap_percent",
    "load_compare_config",
    "plan_runs",
    "run_overrides",
    "train_runs",
]


def architecture_of(cfg: ExperimentConfig) -> dict[str, Any]:
    """What makes a run config the architecture it is, key by key: the FFN slot of
    each layer in its kind's own words (`FFN.label`: the kind, a MoE's router), weight
    sparsity, tool use, and the data it learns."""
    m = cfg.model
    ffns = [m.ffn_for_layer(i) for i in range(m.n_layers)]
    kinds = sorted({FFN_KINDS[f.kind].label(f) for f in ffns})
    return {
        "model.ffn.kind": kinds[0] if len(kinds) == 1 else kinds,
        "model.weight_sparsity": "on" if m.weight_sparsity.target_density < 1 else "off",
        "tools.enabled": bool(cfg.tools.enabled),
        "data.source": cfg.data.source,
    }


def check_is_architecture(run: CheckpointRun, cc: CompareConfig) -> None:
    """ConfigError naming checkpoints.<arch> when the checkpoint is not the
    architecture of its key (a MoE checkpoint under dense, a text-trained one under
    a skills run): scored under that name, it would be reported as something it is not."""
    path = cc.architectures[run.arch]
    want = architecture_of(load_config(path, run_overrides(cc, run.arch)))
    have = architecture_of(run.cfg)
    for key, value in have.items():
        if value != want[key]:
            raise ConfigError(
                f"checkpoints.{run.arch}", run.source,
                f"is a {key}={value} checkpoint, and architectures.{run.arch} ({path}) "
                f"trains {key}={want[key]}: list it under the key of its own architecture",
            )  # fmt: skip


def checkpoint_runs(cc: CompareConfig, out: Path) -> dict[str, CheckpointRun]:
    """The architectures of `cc.checkpoints`, each checked: an architecture of the
    config, trained at a seed the compare runs (ConfigError naming the key if not)."""
    runs = {}
    for arch, checkpoint in cc.checkpoints.items():
        if arch not in cc.architectures:
            raise ConfigError(
                f"checkpoints.{arch}", checkpoint,
                f"not an architecture of this compare ({', '.join(cc.architectures)})",
            )  # fmt: skip
        run = CheckpointRun(arch, checkpoint, out)
        check_is_architecture(run, cc)
        seed = run.seed
        if list(cc.seeds) != [seed]:
            raise ConfigError(
                f"checkpoints.{arch}", checkpoint,
                f"was trained at run.seed={seed}, and a checkpoint is scored at its own seed "
                f"alone: set seeds=[{seed}] (seeds is {list(cc.seeds)})",
            )  # fmt: skip
        runs[arch] = run
    return runs


def add_replicates_to_runs(cc: CompareConfig) -> None:
    """The compare's scored runs with their headline scores' bootstrap replicates where
    they were scored before those were kept (glassbox.scoring.add_replicates), so that
    each seed's decisions (against dense, the untrained twin, the control) are paired;
    a line per run. A run not yet trained or scored is left to the compare, which scores
    it with its replicates."""
    from glassbox.scoring import add_replicates

    for run in plan_runs(cc, Path(cc.out_dir)):
        added = add_replicates(run, cc)
        said = "not scored yet (the compare scores it with them)" if added is None else (
            ", ".join(added) or "nothing to add"
        )  # fmt: skip
        print(f"replicates: {run.name}: {said}")


def plan_runs(cc: CompareConfig, out: Path) -> list[Run]:
    """Every architecture x seed with its run config loaded and checked, before any
    training starts (a bad key fails now, not hours in); an architecture with a
    checkpoint (cc.checkpoints) is that checkpoint, scored and not trained."""
    plan: list[Run] = []
    loaded = checkpoint_runs(cc, out)
    for seed in cc.seeds:
        for arch, path in cc.architectures.items():
            if arch in loaded:
                plan.append(loaded[arch])
                continue
            run_dir = out / "runs" / f"{arch}-seed{seed}"
            extra = [f"run.seed={seed}", f"run.name={arch}", f"run.out_dir={run_dir}"]
            cfg = load_config(path, [*run_overrides(cc, arch), *extra])
            plan.append(Run(arch, seed, cfg, run_dir))
    return plan


# What compare writes into its out_dir; a folder of an older version is known by its
# report.json or its runs/.
COMPARE = Output(
    "glassbox compare",
    legacy=lambda d: (d / "report.json").is_file() or (d / "runs").is_dir(),
    owns=("runs", "report.md", "report.json", "report.html", "pareto.png"),
    marker=False,  # known by what it writes, so that an interrupted compare resumes there
    force=False,
)


def _score_all(plan: list[Run], cc: CompareConfig, progress: Jobs, left: list[ScoreJob]) -> list[Any]:  # fmt: skip
    """Every scoring job's result, in scoring_jobs' order: the jobs `left` to do (not
    current, or failed in a worker) are scored here; the rest are read from their
    saved files."""
    names = {job.name for job in left}

    def scored(job: ScoreJob) -> RunResult | PostHocResult:
        if job.name not in names:
            return job.score(cc)  # current: read from its saved file
        progress.say(f"compare: scoring {job.name}")
        result = job.score(cc)
        progress.done(f"compare: scored {job.name}")
        return result

    # a seed at a time: its dense and transcoder runs serve the post-hoc route
    return [scored(job) for job in scoring_jobs(plan, cc)]


def compare(cc: CompareConfig) -> Report:
    """Run every architecture x seed, then write report.md, report.json, pareto.png.
    Returns the Report (its .path is report.md). The console shows one progress bar
    over every job (a run trained, a run or a post-hoc route scored)."""
    out = Path(cc.out_dir)
    plan = plan_runs(cc, out)  # every config checked before anything is written
    # a new or empty folder, or one a compare wrote before: never the user's files or
    # the shipped checkpoints
    keep = open_output_dir(out, COMPARE, protected=[shipped_dir()])
    n_train = sum(not run.is_current() for run in plan)
    order = {arch: i for i, arch in enumerate(cc.architectures)}
    with Jobs(n_train + len(plan) + len(cc.seeds), "compare") as progress:
        if cc.jobs > 1:  # a run is scored while the others still train
            left = train_and_score(plan, cc, progress)
            progress.set_total(progress.total + len(left))
        else:  # scoring reads checkpoints, never trains
            train_runs(plan, 1, progress)
            left = scoring_todo(plan, cc)
            progress.set_total(n_train + len(left))
        results = _score_all(plan, cc, progress, left)
    runs = sorted(
        (r for r in results if isinstance(r, RunResult)), key=lambda r: (order[r.arch], r.seed)
    )
    report = Report(
        out_dir=out,
        seeds=tuple(cc.seeds),
        config=asdict(cc),
        runs=tuple(runs),
        posthoc=tuple(r for r in results if isinstance(r, PostHocResult)),
    )
    report.write()
    close_output_dir(out, COMPARE, keep)
    return report
