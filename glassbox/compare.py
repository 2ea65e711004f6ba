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
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from glassbox.analysis.audit import audited_scores
from glassbox.analysis.feature_cost import measure_feature_cost
from glassbox.analysis.interp import coverage_scores, interp_with_baselines, suite_batches
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.splicing import splice_fidelity
from glassbox.analysis.text_analysis import text_with_baselines
from glassbox.analysis.tools import tool_report
from glassbox.archs import Transformer
from glassbox.archs.checkpoint import load_pretrained, read_metrics, resolve_checkpoint, shipped_dir
from glassbox.archs.config import ConfigError, TranscoderConfig
from glassbox.archs.errors import GlassboxError, one_line
from glassbox.archs.writes import Output, close_output_dir, open_output_dir
from glassbox.console import Jobs, quiet_third_party
from glassbox.report import Report
from glassbox.results import (
    PostHocResult,
    RunResult,
    capability_values,
    content_key,
    gap_percent,
    load_saved,
    save,
)
from glassbox.training.config import ExperimentConfig, load_config, load_yaml_file, to_dict
from glassbox.training.data import SuiteData, build_datasets
from glassbox.training.train import train
from glassbox.training.transcoder_fit import fit_transcoders, splice

__all__ = [
    "CheckpointRun",
    "CompareConfig",
    "PostHocConfig",
    "check_runs",
    "compare",
    "gap_percent",
    "load_compare_config",
    "run_overrides",
    "train_runs",
]


@dataclass
class PostHocConfig:
    enabled: bool = True  # fit transcoders to the dense baseline's MLPs (the post-hoc route)
    steps: int = 300  # optimiser steps of each fit
    d_latent: int = 1024  # width, as the by-construction transcoder's
    k: int = 16  # TopK active latents


@dataclass
class CompareConfig:
    out_dir: str = "report"  # report.md, report.json, pareto.png and runs/
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one run per architecture and seed
    # architecture name -> its run config; `dense` is the baseline every gap is measured to
    architectures: dict[str, str] = field(default_factory=dict)
    # key=value overrides applied to every run: the matched budget (steps, batch, data)
    overrides: list[str] = field(default_factory=list)
    # architecture -> more overrides for it alone (sizes that must scale per kind)
    arch_overrides: dict[str, list[str]] = field(default_factory=dict)
    # architecture -> an existing checkpoint (directory, hub id or "glassbox/<name>") that
    # is scored instead of training that architecture: its own config.yaml is the run
    # (overrides do not apply), at the seed it was trained with (run.seed, in `seeds`)
    checkpoints: dict[str, str] = field(default_factory=dict)
    analysis_examples: int = 512  # held-out examples each interpretability score reads
    # micro-task circuits by learned masks (analysis.microcircuits): 1-4 CPU-minutes per
    # model on the CPU default size, the largest share of the scoring
    microcircuits: bool = True
    # runs trained (then scored) at once, each a process of its own (CPU: cores // jobs
    # threads each); 1 trains and scores them one after another in this process
    jobs: int = 1
    posthoc: PostHocConfig = field(default_factory=PostHocConfig)


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """The compare YAML plus key=value overrides. Keys of a run section (model.,
    data., optim., trainer., run.) are passed on to every run."""
    base = OmegaConf.structured(CompareConfig)
    run_keys = []
    raw = load_yaml_file(Path(path))
    for key in ("architectures", "arch_overrides", "checkpoints", "posthoc"):
        if raw.get(key) is not None and not isinstance(raw[key], DictConfig):
            value = (
                OmegaConf.to_container(raw[key]) if isinstance(raw[key], ListConfig) else raw[key]
            )
            raise ConfigError(key, value, f"must be a mapping (name: value) (in {path})")
    try:
        cfg = OmegaConf.merge(base, raw)
        for item in overrides or []:
            if item.split("=", 1)[0].split(".")[0] in ("model", "data", "optim", "trainer", "run"):
                run_keys.append(item)
            elif "=" not in item:
                raise ConfigError(item, None, "overrides are key=value, e.g. seeds=[0]")
            else:  # replace, not merge: `architectures={dense: ...}` means only those
                key = item.split("=", 1)[0]
                OmegaConf.update(
                    cfg, key, OmegaConf.select(OmegaConf.from_dotlist([item]), key), merge=False
                )
        out: CompareConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise ConfigError(
            getattr(e, "full_key", "?") or "?", None, f"{str(e).splitlines()[0]} (in {path})"
        ) from None
    if "dense" not in out.architectures:
        raise ConfigError(
            "architectures", list(out.architectures), "must include the dense baseline"
        )
    if not out.seeds:
        raise ConfigError("seeds", out.seeds, "at least one seed")
    if out.jobs < 1:
        raise ConfigError("jobs", out.jobs, f"runs trained at once: 1 or more (in {path})")
    out.overrides = list(out.overrides) + run_keys
    return out


def run_overrides(cc: CompareConfig, arch: str) -> list[str]:
    """The overrides every run gets, then this architecture's own."""
    return [*cc.overrides, *cc.arch_overrides.get(arch, [])]


def check_runs(cc: CompareConfig) -> None:
    """Load every architecture's run config with its overrides, so a bad key fails
    before hours of training rather than in the middle."""
    for arch, path in cc.architectures.items():
        load_config(path, run_overrides(cc, arch))


def _config_key(cfg: ExperimentConfig) -> str:
    """What of a resolved run config decides its checkpoint: all of it but where it goes."""
    d = to_dict(cfg)
    d["run"].pop("out_dir", None)
    return content_key("run config", d, scoring=False)


class RunInputs:
    """One architecture at one seed: its resolved run config, then its checkpoint,
    model and data, each made or read at most once and shared by the run's scoring
    and the post-hoc route."""

    def __init__(self, arch: str, seed: int, cfg: ExperimentConfig, run_dir: Path) -> None:
        self.arch, self.seed, self.cfg, self.run_dir = arch, seed, cfg, run_dir
        self.config_key = _config_key(cfg)
        self.export = run_dir / "checkpoint"
        self.analysis_dir = run_dir / "analysis"
        self.trained_now = False
        self.train_seconds = 0.0

    @property
    def name(self) -> str:
        return f"{self.arch}-seed{self.seed}"

    def is_current(self) -> bool:
        """Whether the exported checkpoint was made from this very run config (its
        key is kept in run_dir/train_key)."""
        stamp = self.run_dir / "train_key"
        current = stamp.is_file() and stamp.read_text().strip() == self.config_key
        return current and (self.export / "metrics.json").is_file()

    def _trained(self, seconds: float) -> None:
        self.train_seconds = seconds
        self.trained_now = True
        (self.run_dir / "train_key").write_text(self.config_key + "\n")

    def ensure_trained(self) -> None:
        """Train in this process unless the checkpoint is current (training is the
        expensive part)."""
        if self.is_current():
            return
        t0 = time.perf_counter()
        train(self.cfg)
        self._trained(time.perf_counter() - t0)

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"

    def train_in_subprocess(self, threads: int | None) -> int:
        """`glassbox train` on this run's resolved config (written to
        run_dir/train_config.yaml), output to run_dir/train.log; `threads` sets
        trainer.cpu_threads. Returns the exit status."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "train_config.yaml"
        config.write_text(OmegaConf.to_yaml(to_dict(self.cfg)))
        if _config_key(load_config(config)) != self.config_key:  # the file must be the run
            raise GlassboxError(f"compare: {config} does not reload as run {self.name}'s config")
        cmd = [sys.executable, "-m", "glassbox.cli", "train", str(config)]
        if threads:
            cmd.append(f"trainer.cpu_threads={threads}")
        t0 = time.perf_counter()
        with self.log.open("w") as log:
            code = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            ).returncode
        if code == 0:
            self._trained(time.perf_counter() - t0)
        return code

    @cached_property
    def metrics(self) -> dict[str, Any]:
        return read_metrics(self.export)

    @cached_property
    def model(self) -> Transformer:
        return load_pretrained(self.export)

    @cached_property
    def suite(self) -> SuiteData:
        return build_datasets(self.cfg.data)

    @cached_property
    def checkpoint_key(self) -> str:
        """The run config and the checkpoint's metrics.json (new at every training)."""
        return content_key(
            self.config_key, (self.export / "metrics.json").read_text(), scoring=False
        )

    def uses_tool_skills(self) -> bool:
        """Whether the tool analysis applies: the data has addition or facts, plain
        (the dense baseline answers from its weights) or through tools."""
        data = self.cfg.data
        names = ("addition", "facts", "addition_tool", "facts_tool")
        return data.source == "skills" and any(data.mix.get(n, 0) > 0 for n in names)


class CheckpointRun(RunInputs):
    """An architecture scored from an existing checkpoint (CompareConfig.checkpoints):
    never trained; its run config is the checkpoint's config.yaml, its seed the one
    it was trained with; its scores and analysis go to run_dir as a trained run's do."""

    def __init__(self, arch: str, checkpoint: str, out: Path) -> None:
        path = resolve_checkpoint(checkpoint)
        cfg = load_config(path / "config.yaml")
        seed = cfg.run.seed
        super().__init__(arch, seed, cfg, out / "runs" / f"{arch}-seed{seed}")
        self.source = checkpoint
        self.export = path

    def is_current(self) -> bool:
        return True


def architecture_of(cfg: ExperimentConfig) -> dict[str, Any]:
    """What makes a run config the architecture it is, key by key: the FFN kind of
    each layer, the MoE router, weight sparsity, tool use, and the data it learns."""
    m = cfg.model
    ffns = [m.ffn_for_layer(i) for i in range(m.n_layers)]
    kinds = sorted({f.kind for f in ffns})
    return {
        "model.ffn.kind": kinds[0] if len(kinds) == 1 else kinds,
        "model.ffn.moe.router": sorted({f.moe.router for f in ffns if f.kind == "moe"}) or None,
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


def plan_runs(cc: CompareConfig, out: Path) -> list[RunInputs]:
    """Every architecture x seed with its run config loaded and checked, before any
    training starts (a bad key fails now, not hours in); an architecture with a
    checkpoint (cc.checkpoints) is that checkpoint, scored and not trained."""
    plan: list[RunInputs] = []
    loaded = checkpoint_runs(cc, out)
    for seed in cc.seeds:
        for arch, path in cc.architectures.items():
            if arch in loaded:
                plan.append(loaded[arch])
                continue
            run_dir = out / "runs" / f"{arch}-seed{seed}"
            extra = [f"run.seed={seed}", f"run.name={arch}", f"run.out_dir={run_dir}"]
            cfg = load_config(path, [*run_overrides(cc, arch), *extra])
            plan.append(RunInputs(arch, seed, cfg, run_dir))
    return plan


def _threads(cfg: ExperimentConfig, jobs: int) -> int | None:
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


def train_runs(plan: list[RunInputs], jobs: int, progress: Jobs | None = None) -> None:
    """Train every run of `plan` whose checkpoint is not current. jobs=1: one after
    another in this process. jobs>1: up to `jobs` at once, each its own `glassbox
    train` process (RunInputs.train_in_subprocess) with its share of the CPU cores
    (`_threads`). After a failure no new run starts and the running ones finish (their
    checkpoints are reused by the next compare); then a one-line GlassboxError names
    the failed run and its log. `progress` (the compare's bar) counts each trained run."""
    todo = [run for run in plan if not run.is_current()]
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

    def one(run: RunInputs) -> int | None:
        if failed.is_set():
            return None  # not started
        code = run.train_in_subprocess(_threads(run.cfg, jobs))
        if code:
            failed.set()
        else:
            progress.done(f"compare: trained {run.name} in {run.train_seconds:.0f} s")
        return code

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(one, todo))
    bad = [(run, code) for run, code in zip(todo, codes) if code]
    if bad:
        run, code = bad[0]
        others = f" ({len(bad) - 1} more failed)" if len(bad) > 1 else ""
        raise GlassboxError(
            f"compare: training run {run.name} failed (exit {code}): {_last_line(run.log)}; "
            f"its log: {run.log}{others}"
        )


def score_key(run: RunInputs, cc: CompareConfig) -> str:
    """What a run's scores depend on: its checkpoint and the compare keys they read."""
    return content_key("scores", run.checkpoint_key, cc.analysis_examples, cc.microcircuits)


def score_run(run: RunInputs, cc: CompareConfig) -> RunResult:
    """Train (or load) one run and score it; scores saved under the same key are reused."""
    run.ensure_trained()
    key = score_key(run, cc)
    saved_path = run.analysis_dir / "row.json"
    saved = load_saved(saved_path, key)
    if saved is not None:  # capability is re-read: it is metrics.json's (in the key)
        return RunResult.from_json(
            saved, trained_now=run.trained_now, capability=capability_values(run.metrics)
        )
    run.analysis_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # every score beside its untrained twin's (the run's config at its training seed)
    # text carries no ground truth: its scores are by domain
    score = text_with_baselines if run.cfg.data.source == "text" else interp_with_baselines
    skills = {} if run.cfg.data.source == "text" else {"microcircuits": cc.microcircuits}
    analysis = score(
        run.model,
        run.suite,
        run.analysis_dir,
        n_examples=cc.analysis_examples,
        seed=run.seed,
        init_seed=run.cfg.run.seed,
        **skills,
    )
    tool_summary: dict[str, Any] = {}
    if run.uses_tool_skills():
        report = tool_report(
            run.model, run.suite, data_cfg=run.cfg.data, tools=run.cfg.tools, seed=run.seed
        )
        tool_summary = report["summary"]
    analysis_seconds = time.perf_counter() - t0
    (run.analysis_dir / "analysis.json").write_text(json.dumps(jsonable(analysis), indent=2))
    interp = {**analysis["summary"]}  # interp.*, baselines.init.interp.*, baselines.token.interp.*
    interp.update({k: v for k, v in tool_summary.items() if k.startswith("interp.")})
    result = RunResult(
        arch=run.arch,
        seed=run.seed,
        run_dir=str(run.run_dir),
        capability=capability_values(run.metrics),
        interp=interp,
        tools={k: v for k, v in tool_summary.items() if k.startswith("tools.")} or None,
        plots=tuple(analysis.get("moe", {}).get("plots", analysis.get("plots", []))),
        trained_now=run.trained_now,
        train_seconds=run.train_seconds,
        analysis_seconds=analysis_seconds,
        key=key,
        not_applicable=tuple(analysis.get("not_applicable", ())),
    )
    save(saved_path, key, result)
    return result


def posthoc_key(dense: RunInputs, tc: RunInputs | None, cc: CompareConfig) -> str:
    """What the post-hoc route depends on: the dense checkpoint, the transcoder
    checkpoint it is timed against, the fit settings and the examples it scores."""
    return content_key(
        "posthoc",
        dense.checkpoint_key,
        tc.checkpoint_key if tc is not None else None,
        asdict(cc.posthoc),
        cc.analysis_examples,
    )


def posthoc_applies(dense: RunInputs, cc: CompareConfig) -> bool:
    """Whether the post-hoc route runs: enabled, and on data with ground truth (not text)."""
    return cc.posthoc.enabled and dense.cfg.data.source != "text"


def posthoc_route(dense: RunInputs, tc: RunInputs | None, cc: CompareConfig) -> PostHocResult:
    """The post-hoc route on one dense run: fit TopK transcoders to its MLPs (as
    wide and as sparse as the by-construction transcoder), splice them in, and score
    them like any model: ground-truth coverage of the post-hoc latents, FVU, CE loss
    recovered, KL. With a transcoder run of the same seed, the fit is timed against
    reading features off that model (one cached forward) in the same process:
    analysis.feature_cost.measure_feature_cost. Reused when saved under the same key."""
    key = posthoc_key(dense, tc, cc)
    saved_path = dense.analysis_dir / "posthoc.json"
    saved = load_saved(saved_path, key)
    if saved is not None:
        return PostHocResult.from_json(saved)
    seed, model = dense.seed, dense.model
    layers = list(range(model.cfg.n_layers))
    tc_cfg = TranscoderConfig(d_latent=cc.posthoc.d_latent, k=cc.posthoc.k, activation="topk")
    fit_batches = suite_batches(
        dense.suite, "train", 4096, batch_size=dense.cfg.data.batch_size, seed=seed
    )
    val = suite_batches(dense.suite, "val", cc.analysis_examples, seed=seed)
    cost = None
    t0 = time.perf_counter()
    if tc is not None:
        cost, transcoders = measure_feature_cost(
            tc.model, model, val, layers, fit_batches=fit_batches, cfg=tc_cfg,
            return_transcoders=True, max_steps=cc.posthoc.steps, seed=seed,
        )  # fmt: skip
    else:
        transcoders = fit_transcoders(
            model, fit_batches, layers, tc_cfg, max_steps=cc.posthoc.steps, seed=seed
        )
    fit_seconds = time.perf_counter() - t0
    spliced = splice(model, transcoders)
    fid = splice_fidelity(model, spliced, val)
    cov = coverage_scores(spliced, val, dense.suite)
    # the audited coverage too: chosen on val, scored on test, like every run's
    test = suite_batches(dense.suite, "test", cc.analysis_examples, seed=seed + 1)
    audit = audited_scores(spliced, dense.suite, val, test, seed=seed)["summary"]
    result = PostHocResult(
        arch=dense.arch,
        seed=seed,
        steps=cc.posthoc.steps,
        scores={
            **{
                k: cov.get(k)
                for k in (
                    "interp.coverage",
                    "interp.coverage_contextual",
                    "interp.coverage_lift",
                    "interp.coverage_lexical",
                    "interp.l0",
                    "interp.dead_fraction",
                )
            },
            **{
                k: audit.get(k)
                for k in (
                    "interp.lift_pooled",
                    "interp.lift_pooled_ci",
                    "interp.coverage_heldout",
                    "interp.coverage_heldout_ci",
                    "interp.info_beyond_token",
                    "interp.info_beyond_token_ci",
                )
            },
            **{f"interp.{k}": fid.get(k) for k in ("fvu", "ce_loss_recovered", "kl_to_clean")},
            "fit_seconds": fit_seconds,
            "cost_ratio": cost["ratio"] if cost else None,
        },
        coverage_by_layer=cov["coverage_by_layer"],
        cost=cost,
        key=key,
    )
    save(saved_path, key, result)
    return result


def _score_job(cc: CompareConfig, seed: int, arch: str | None, threads: int | None) -> str | None:
    """One scoring job, in a worker process: the run `arch` at `seed`, or (arch None)
    the seed's post-hoc route, saved under its key for compare() to read. Returns the
    error's line instead of raising it: compare() redoes a failed job in its own
    process, where the error is raised as it is."""
    quiet_third_party()  # a spawned process: the CLI's filters are not inherited
    try:
        if threads:
            torch.set_num_threads(threads)
        runs = {(r.arch, r.seed): r for r in plan_runs(cc, Path(cc.out_dir))}
        if arch is None:
            posthoc_route(runs[("dense", seed)], runs.get(("transcoder", seed)), cc)
        else:
            score_run(runs[(arch, seed)], cc)
        return None
    except Exception as e:  # noqa: BLE001 - reported, then redone in the main process
        return one_line(f"{type(e).__name__}: {e}")


Job = tuple[int, str | None, RunInputs]  # (seed, arch or None for the post-hoc route, run)


def _job_name(seed: int, arch: str | None) -> str:
    return f"{arch} seed {seed}" if arch else f"post-hoc transcoders on dense seed {seed}"


def scoring_todo(plan: list[RunInputs], cc: CompareConfig) -> list[Job]:
    """The scoring jobs whose saved results are not current: per seed, the post-hoc
    route (where it applies), then each run."""
    todo: list[Job] = []
    for seed in cc.seeds:
        of_seed = {r.arch: r for r in plan if r.seed == seed}
        dense = of_seed["dense"]
        if posthoc_applies(dense, cc):
            tc = of_seed.get("transcoder")
            if load_saved(dense.analysis_dir / "posthoc.json", posthoc_key(dense, tc, cc)) is None:
                todo.append((seed, None, dense))
        for arch, run in of_seed.items():
            if load_saved(run.analysis_dir / "row.json", score_key(run, cc)) is None:
                todo.append((seed, arch, run))
    return todo


def score_in_workers(todo: list[Job], cc: CompareConfig, progress: Jobs) -> list[Job]:
    """Score `todo` (scoring_todo) `cc.jobs` at a time, each in its own process with
    its share of the cores (as training does); compare() then reads what they saved.
    Returns the jobs that failed there (compare() redoes them in its own process)."""
    progress.say(f"compare: scoring {len(todo)} jobs, {min(cc.jobs, len(todo))} at a time")
    spawn = multiprocessing.get_context("spawn")
    failed = []
    with ProcessPoolExecutor(max_workers=cc.jobs, mp_context=spawn) as pool:
        futures = {
            pool.submit(_score_job, cc, seed, arch, _threads(run.cfg, cc.jobs)): (seed, arch, run)
            for seed, arch, run in todo
        }
        for future in as_completed(futures):
            seed, arch, run = futures[future]
            error = future.result()
            if error:
                failed.append((seed, arch, run))
            said = f" (failed: {error}; redone here)" if error else ""
            progress.done(f"compare: scored {_job_name(seed, arch)}{said}")
    return failed


# What compare writes into its out_dir; a folder of an older version is known by its
# report.json or its runs/.
COMPARE = Output(
    "glassbox compare",
    legacy=lambda d: (d / "report.json").is_file() or (d / "runs").is_dir(),
    owns=("runs", "report.md", "report.json", "report.html", "pareto.png"),
    marker=False,  # known by what it writes, so that an interrupted compare resumes there
    force=False,
)


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
    runs: list[RunResult] = []
    posthoc: list[PostHocResult] = []
    with Jobs(n_train + len(plan) + len(cc.seeds), "compare") as progress:
        train_runs(plan, cc.jobs, progress)
        todo = scoring_todo(plan, cc)
        progress.set_total(n_train + len(todo))
        if cc.jobs > 1 and len(todo) > 1:
            redo = score_in_workers(todo, cc, progress)
            progress.set_total(n_train + len(todo) + len(redo))
            todo = redo
        left = {(seed, arch) for seed, arch, _ in todo}

        def scored(seed: int, arch: str | None, fn, *args):
            if (seed, arch) not in left:
                return fn(*args)  # current: read from its saved file
            progress.say(f"compare: scoring {_job_name(seed, arch)}")
            result = fn(*args)
            progress.done(f"compare: scored {_job_name(seed, arch)}")
            return result

        for seed in cc.seeds:  # a seed at a time: its dense and transcoder serve the post-hoc route
            of_seed = {r.arch: r for r in plan if r.seed == seed}
            for arch, inputs in of_seed.items():
                runs.append(scored(seed, arch, score_run, inputs, cc))
            if posthoc_applies(of_seed["dense"], cc):
                dense, tc = of_seed["dense"], of_seed.get("transcoder")
                posthoc.append(scored(seed, None, posthoc_route, dense, tc, cc))
    runs.sort(key=lambda r: (order[r.arch], r.seed))
    report = Report(
        out_dir=out,
        seeds=tuple(cc.seeds),
        config=asdict(cc),
        runs=tuple(runs),
        posthoc=tuple(posthoc),
    )
    report.write()
    close_output_dir(out, COMPARE, keep)
    return report
