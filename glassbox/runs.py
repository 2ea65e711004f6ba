"""The runs of `glassbox compare`: one architecture at one seed, with its resolved run
config, its run directory and its checkpoint, and what is loaded from them (metrics,
model, data), each at most once per process.

A Run is a picklable description (arch, seed, config, run directory, checkpoint path):
a scoring worker gets the runs of its job as they are, without re-planning; what is
loaded (the model, the data) stays in the process that loaded it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from glassbox.archs import Transformer
from glassbox.archs.checkpoint import CONFIG, load_pretrained, read_metrics, resolve_checkpoint
from glassbox.archs.errors import GlassboxError
from glassbox.console import PARENT_ENV
from glassbox.results import content_key
from glassbox.training.config import ExperimentConfig, load_config, to_dict
from glassbox.training.data import DataConfig, SuiteData, build_datasets
from glassbox.training.train import train

__all__ = ["CheckpointRun", "Run", "config_key", "load_suite"]


def config_key(cfg: ExperimentConfig) -> str:
    """What of a resolved run config decides its checkpoint: all of it but where it goes
    and the clock it trains under (trainer.max_seconds: a run it stopped says so in its
    metrics.json, and Run.is_current reads that)."""
    d = to_dict(cfg)
    d["run"].pop("out_dir", None)
    d["trainer"].pop("max_seconds", None)
    return content_key("run config", d, scoring=False)


# data sets loaded in this process, by the content of their data config: the runs of a
# compare share their data (the matched budget), so it is read once, not once per run
_SUITES: OrderedDict[str, SuiteData] = OrderedDict()
_MAX_SUITES = 4  # distinct data configs kept (the shipped compare has two)


def load_suite(cfg: DataConfig) -> SuiteData:
    """build_datasets(cfg), read once per process for each distinct data config (the
    data is only read by the analysis, never changed)."""
    key = content_key("data", to_dict(cfg), scoring=False)
    if key not in _SUITES:
        _SUITES[key] = build_datasets(cfg)
        while len(_SUITES) > _MAX_SUITES:
            _SUITES.popitem(last=False)
    _SUITES.move_to_end(key)
    return _SUITES[key]


class Run:
    """One architecture at one seed: its resolved run config, its run directory and
    the checkpoint exported there. Its model is loaded at most once per Run object and
    process, shared by the run's scoring and the post-hoc route; its data through
    load_suite."""

    def __init__(self, arch: str, seed: int, cfg: ExperimentConfig, run_dir: Path) -> None:
        self.arch, self.seed, self.cfg, self.run_dir = arch, seed, cfg, run_dir
        self.config_key = config_key(cfg)
        self.export = run_dir / "checkpoint"
        self.analysis_dir = run_dir / "analysis"
        self.trained_now = False
        self.train_seconds = 0.0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for a worker process) without its loaded model."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}

    @property
    def name(self) -> str:
        return f"{self.arch}-seed{self.seed}"

    def is_current(self) -> bool:
        """Whether the exported checkpoint was made from this very run config (its
        key is kept in run_dir/train_key). A run that trainer.max_seconds stopped short
        of max_steps is current only where a time limit is set too (the GPU script's
        scoring): without one, it is trained again to its steps."""
        stamp = self.run_dir / "train_key"
        metrics = self.export / "metrics.json"
        if not (stamp.is_file() and stamp.read_text().strip() == self.config_key):
            return False
        if not metrics.is_file():
            return False
        try:
            stopped = json.loads(metrics.read_text()).get("train", {}).get("stopped")
        except (OSError, ValueError):
            return False
        return stopped != "max_seconds" or self.cfg.trainer.max_seconds > 0

    def check_current(self) -> None:
        """GlassboxError (one line) unless the checkpoint is current: scoring reads a
        checkpoint, it never trains one (compare's train_runs does, before)."""
        if not self.is_current():
            raise GlassboxError(
                f"compare: run {self.name} has no checkpoint made from its run config in "
                f"{self.export}: train it first (scoring never trains)"
            )

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
        if config_key(load_config(config)) != self.config_key:  # the file must be the run
            raise GlassboxError(f"compare: {config} does not reload as run {self.name}'s config")
        cmd = [sys.executable, "-m", "glassbox.cli", "train", str(config)]
        if threads:
            cmd.append(f"trainer.cpu_threads={threads}")
        t0 = time.perf_counter()
        with self.log.open("w") as log:
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
            code = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
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

    @property
    def suite(self) -> SuiteData:
        return load_suite(self.cfg.data)

    @cached_property
    def checkpoint_key(self) -> str:
        """The run config and the checkpoint's metrics.json (new at every training)."""
        return content_key(
            self.config_key, (self.export / "metrics.json").read_text(), scoring=False
        )


class CheckpointRun(Run):
    """An architecture scored from an existing checkpoint (CompareConfig.checkpoints):
    never trained; its run config is the checkpoint's config.yaml, its seed the one
    it was trained with; its scores and analysis go to run_dir as a trained run's do."""

    def __init__(self, arch: str, checkpoint: str, out: Path) -> None:
        path = resolve_checkpoint(checkpoint)
        cfg = load_config(path / CONFIG)
        seed = cfg.run.seed
        super().__init__(arch, seed, cfg, out / "runs" / f"{arch}-seed{seed}")
        self.source = checkpoint
        self.export = path

    def is_current(self) -> bool:
        return True
