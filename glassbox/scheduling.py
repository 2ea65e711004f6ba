"""Where and when `glassbox compare`'s work runs: training in this process or in
`glassbox train` subprocesses (threads wait on them), scoring in this process or in a
pool of worker processes, each job with its share of the CPU cores. With several jobs
at once, training and scoring share the slots (train_and_score): a run is scored as
soon as it is trained, while the longer trainings go on, so no core waits for the
slowest run before any scoring starts.

A scoring job carries its runs (runs.Run: arch, seed, config, run directory,
checkpoint path), so a worker loads only what its job reads: no config is re-read
there, a checkpoint is loaded once per run and worker, the data once per data config
and worker (runs.load_suite).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from glassbox.archs.checkpoint import weights_bytes
from glassbox.archs.errors import GlassboxError, one_line
from glassbox.compare_config import BASELINE, BY_CONSTRUCTION, CompareConfig
from glassbox.console import Jobs, exit_with, quiet_third_party
from glassbox.results import PostHocResult, RunResult, load_saved
from glassbox.runs import Run
from glassbox.scoring import posthoc_applies, posthoc_key, score_key, score_posthoc, score_run
from glassbox.training.config import ExperimentConfig
from glassbox.training.data.config import row_length

__all__ = [
    "ScoreJob",
    "expected_cost",
    "next_work",
    "scoring_todo",
    "threads_per_job",
    "training_cost",
    "training_todo",
    "train_and_score",
    "train_runs",
]


def threads_per_job(cfg: ExperimentConfig, jobs: int) -> int | None:
    """CPU threads of one of `jobs` runs at once on this machine's cores, no more than
    the run asks for (trainer.cpu_threads, 0 = any); None for a run on a GPU."""
    accelerator = cfg.trainer.accelerator
    if accelerator != "cpu" and (accelerator != "auto" or torch.cuda.is_available()):
        return None
    share = max(1, (os.cpu_count() or 1) // jobs)
    return min(share, cfg.trainer.cpu_threads) if cfg.trainer.cpu_threads > 0 else share


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return one_line(lines[-1])[:200] if lines else "(empty log)"


def training_cost(run: Run) -> float:
    """What orders the trainings: the run's training FLOPs as MFU counts them
    (Transformer.flops_per_token at its context length, the matmuls dense, zeros
    included, so a weight-sparse model twice as wide costs its full width) times the
    tokens it trains on (max_steps x rows per step x that length), the model built on
    the meta device (no memory, no time). At rung M on 2 cores weight_sparse costs 3.6x
    dense and trained for 58 minutes against 11 to 24 for the other kinds."""
    from glassbox.archs import Transformer

    cfg = run.cfg
    seq = row_length(cfg.data) or cfg.model.max_seq_len
    with torch.device("meta"):  # a vocabulary still to come from the data: the kinds share it
        model = Transformer(replace(cfg.model, vocab_size=cfg.model.vocab_size or 1))
    rows = cfg.trainer.max_steps * cfg.data.batch_size * cfg.trainer.accumulate_grad_batches
    return model.flops_per_token(seq) * rows * seq


def training_todo(plan: list[Run]) -> list[Run]:
    """The runs of `plan` whose checkpoints are not current, the costliest first
    (training_cost; a kind's seeds in the plan's order), the order in which the slots
    of train_runs and train_and_score take them: the slowest training does not start
    last, after the others, with the whole of it still to go."""
    todo = [run for run in plan if not run.is_current()]
    return sorted(todo, key=training_cost, reverse=True)


def train_runs(plan: list[Run], jobs: int, progress: Jobs | None = None) -> None:
    """Train every run of `plan` whose checkpoint is not current. jobs=1: one after
    another in this process. jobs>1: up to `jobs` at once, each its own `glassbox
    train` process (Run.train_in_subprocess) with its share of the CPU cores
    (threads_per_job). After a failure no new run starts and the running ones finish
    (their checkpoints are reused by the next compare); then a one-line GlassboxError
    names the failed run and its log. `progress` (the compare's bar) counts each
    trained run. Runs start the costliest first (training_todo)."""
    todo = training_todo(plan)
    progress = progress or Jobs(len(todo), "train")
    if jobs == 1 or len(todo) <= 1:
        for run in todo:
            progress.say(f"compare: training {run.name}")
            with progress.paused():  # the run's own progress bar, if it asks for one
                run.ensure_trained()
            progress.done(f"compare: trained {run.name} in {run.train_seconds:.0f} s")
        return
    progress.say(
        f"compare: training {len(todo)} runs, {min(jobs, len(todo))} at a time "
        "(logs: runs/<arch>-seed<s>/train.log)"
    )
    failed = threading.Event()

    def one(run: Run) -> int | None:
        if failed.is_set():
            return None  # not started
        code = run.train_in_subprocess(threads_per_job(run.cfg, jobs))
        if code:
            failed.set()
        else:
            progress.done(f"compare: trained {run.name} in {run.train_seconds:.0f} s")
        return code

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(one, todo))
    _raise_failed([(run, code) for run, code in zip(todo, codes) if code])


def _raise_failed(bad: list[tuple[Run, int]]) -> None:
    """One line for the first of the failed trainings `bad` (run, exit status), if any:
    the run, its log's last line, the log's path, how many more failed."""
    if bad:
        run, code = bad[0]
        others = f" ({len(bad) - 1} more failed)" if len(bad) > 1 else ""
        raise GlassboxError(
            f"compare: training run {run.name} failed (exit {code}): {_last_line(run.log)}; "
            f"its log: {run.log}{others}"
        )


@dataclass(frozen=True)
class ScoreJob:
    """One scoring job: the scores of `run`, or (posthoc=True) the post-hoc route on
    the dense run `run`, timed against `transcoder` (the transcoder run of its seed,
    if any). Picklable: it is all a worker process gets."""

    run: Run
    posthoc: bool = False
    transcoder: Run | None = None

    @property
    def name(self) -> str:
        if self.posthoc:
            return f"post-hoc transcoders on dense seed {self.run.seed}"
        return f"{self.run.arch} seed {self.run.seed}"

    def is_saved(self, cc: CompareConfig) -> bool:
        """Whether its result is saved under its current key (nothing to do)."""
        if self.posthoc:
            path, key = (
                self.run.analysis_dir / "posthoc.json",
                posthoc_key(self.run, self.transcoder, cc),
            )
        else:
            path, key = self.run.analysis_dir / "row.json", score_key(self.run, cc)
        return load_saved(path, key) is not None

    def score(self, cc: CompareConfig) -> RunResult | PostHocResult:
        """Score it in this process (its saved result where current)."""
        if self.posthoc:
            return score_posthoc(self.run, self.transcoder, cc)
        return score_run(self.run, cc)


def scoring_jobs(plan: list[Run], cc: CompareConfig) -> list[ScoreJob]:
    """Every scoring job of `plan`: per seed, each run, then the post-hoc route on its
    dense run (where it applies), timed against its transcoder run."""
    jobs: list[ScoreJob] = []
    for seed in cc.seeds:
        of_seed = {r.arch: r for r in plan if r.seed == seed}
        jobs += [ScoreJob(run) for run in of_seed.values()]
        if posthoc_applies(of_seed[BASELINE], cc):
            jobs.append(ScoreJob(of_seed[BASELINE], True, of_seed.get(BY_CONSTRUCTION)))
    return jobs


def expected_cost(job: ScoreJob) -> int:
    """What orders the scoring jobs: the bytes of the weights the job's model holds in
    memory (its checkpoint's model.safetensors at full shape, a weight-sparse model's
    packed matrices unpacked: archs.checkpoint.weights_bytes; 0 where there is none
    yet). On the six shipped checkpoints each run's scoring time is 1.1-1.8 s per 10k
    weights, so the larger model is the longer job. The post-hoc route reads the
    dense checkpoint and costs about half its scoring."""
    size = weights_bytes(job.run.export / "model.safetensors")
    return size // 2 if job.posthoc else size


def scoring_todo(plan: list[Run], cc: CompareConfig) -> list[ScoreJob]:
    """The scoring jobs whose saved results are not current, the longest expected
    first (expected_cost), the order in which train_and_score's slots take the jobs
    that are ready: the longest do not start last, so the workers end close together."""
    todo = [job for job in scoring_jobs(plan, cc) if not job.is_saved(cc)]
    return sorted(todo, key=expected_cost, reverse=True)


# the runs this worker process has loaded (their models), by run and checkpoint: a job
# on a run this worker has seen (a dense run's scores, then its post-hoc route) reuses it
_LOADED: dict[tuple[str, str], Run] = {}


def _loaded(run: Run | None) -> Run | None:
    if run is None:
        return None
    return _LOADED.setdefault((run.name, str(run.export)), run)


def _score_job(job: ScoreJob, cc: CompareConfig, threads: int | None) -> str | None:
    """One scoring job, in a worker process, saved under its key for compare() to read.
    Returns the error's line instead of raising it: compare() redoes a failed job in
    its own process, where the error is raised as it is."""
    quiet_third_party()  # a spawned process: the CLI's filters are not inherited
    try:
        if threads:
            torch.set_num_threads(threads)
        ScoreJob(_loaded(job.run), job.posthoc, _loaded(job.transcoder)).score(cc)
        return None
    except Exception as e:  # noqa: BLE001 - reported, then redone in the main process
        return one_line(f"{type(e).__name__}: {e}")


def _needs(job: ScoreJob) -> set[str]:
    """The runs a scoring job reads (its run; the post-hoc route's transcoder run)."""
    return {run.name for run in (job.run, job.transcoder) if run is not None}


def next_work(to_train: list[Run], to_score: list[ScoreJob], training: set[str]) -> Run | ScoreJob | None:  # fmt: skip
    """What a free slot takes next: the next run to train (every run is trained in the
    end, and a trained run frees its scoring), else the longest of the scoring jobs
    whose runs are trained (none of them in `training`, the runs still to train or
    training; expected_cost), else None: what is left waits for a training to end."""
    if to_train:
        return to_train[0]
    ready = [job for job in to_score if not _needs(job) & training]
    return max(ready, key=expected_cost, default=None)


def train_and_score(plan: list[Run], cc: CompareConfig, progress: Jobs) -> list[ScoreJob]:
    """Train the runs of `plan` that are not current and score the jobs whose saved
    results are not, `cc.jobs` at once: a training in a `glassbox train` subprocess, a
    scoring job in a worker process, each with its share of the cores (threads_per_job)
    and each slot taking next_work as it frees. The costliest training starts first
    (training_todo), so the runs trained beside it are scored while it still trains (at
    rung L on 2 cores, weight_sparse trains for 92 minutes against 31 to 41 for the
    others). After a failed training nothing new starts,
    the running jobs finish, and a one-line GlassboxError names the run and its log, as
    train_runs does. Returns the scoring jobs that failed in their workers (compare()
    redoes them in its own process, where the error is raised as it is)."""
    to_train = training_todo(plan)
    training = {run.name for run in to_train}
    # a job on a run to train is to do (its key reads the checkpoint it has not made)
    to_score = [j for j in scoring_jobs(plan, cc) if _needs(j) & training or not j.is_saved(cc)]
    progress.set_total(len(to_train) + len(to_score))
    if to_train:
        progress.say(
            f"compare: training {len(to_train)} runs and scoring {len(to_score)} jobs, "
            f"{cc.jobs} at a time (logs: runs/<arch>-seed<s>/train.log)"
        )
    elif to_score:
        progress.say(f"compare: scoring {len(to_score)} jobs, {cc.jobs} at a time")
    bad: list[tuple[Run, int]] = []
    failed: list[ScoreJob] = []
    running: dict[Future, Run | ScoreJob] = {}
    spawn = multiprocessing.get_context("spawn")
    with (
        ThreadPoolExecutor(max_workers=cc.jobs) as trainers,
        ProcessPoolExecutor(  # each worker ends with this process (console.exit_with)
            max_workers=cc.jobs, mp_context=spawn, initializer=exit_with, initargs=(os.getpid(),)
        ) as scorers,
    ):
        while True:
            while len(running) < cc.jobs and not bad:
                work = next_work(to_train, to_score, training)
                if work is None:
                    break
                if isinstance(work, ScoreJob):  # never saved: a run trained now has a new key
                    to_score.remove(work)
                    threads = threads_per_job(work.run.cfg, cc.jobs)
                    running[scorers.submit(_score_job, work, cc, threads)] = work
                else:
                    to_train.remove(work)
                    threads = threads_per_job(work.cfg, cc.jobs)
                    running[trainers.submit(work.train_in_subprocess, threads)] = work
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                work = running.pop(future)
                if isinstance(work, ScoreJob):
                    error = future.result()
                    if error:
                        failed.append(work)
                    said = f" (failed: {error}; redone here)" if error else ""
                    progress.done(f"compare: scored {work.name}{said}")
                    continue
                training.discard(work.name)
                code = future.result()
                if code:
                    bad.append((work, code))
                else:
                    progress.done(f"compare: trained {work.name} in {work.train_seconds:.0f} s")
    _raise_failed(bad)
    return failed
