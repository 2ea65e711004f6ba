"""Callbacks for the cross-cutting work of a run: throughput and MFU, a guard against
non-finite losses and gradients, the config's optimiser settings on resume, and
checkpoint files written atomically."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from rich.progress import Progress
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from glassbox.archs.errors import GlassboxError
from glassbox.training.flops import device_peak_flops


class NonFiniteError(GlassboxError, RuntimeError):
    """Training produced NaN or Inf; raised to stop the run before the weights are hit.
    One line: the step, the loss, the last checkpoint on disk (or that there is none)."""


class NaNGuard(L.Callback):
    """Stops the run with a clear message when the loss or the gradient norm is not
    finite. Both are checked before the optimizer step, so a bad step never reaches
    the weights, and the last Lightning checkpoint stays the last good state. One
    read of the device a step (a GPU waits there, and its queue runs dry): the losses
    since the last update and every gradient's norm are reduced to one flag on the
    device first."""

    def __init__(self) -> None:
        self.loss = float("nan")
        self._losses: list[Tensor] = []  # the micro-batches' losses since the last update

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        losses, self._losses = self._losses, []
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        checks = [torch.stack(losses).float()] if losses else []
        checks += [torch.stack(torch._foreach_norm(grads)).float()] if grads else []
        if not checks or bool(torch.isfinite(torch.cat(checks)).all()):
            return
        if losses:
            bad = [float(x) for x in losses if not math.isfinite(float(x))]
            self.loss = bad[0] if bad else float(losses[-1])
            if bad:
                raise NonFiniteError(self._message(trainer, "the training loss is not finite"))
        bad_names = [
            n
            for n, p in pl_module.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        raise NonFiniteError(
            self._message(trainer, f"non-finite gradients in {', '.join(bad_names[:3])}")
        )

    def _message(self, trainer, what: str) -> str:
        cb = trainer.checkpoint_callback
        last = last_checkpoint(Path(cb.dirpath)) if cb is not None and cb.dirpath else None
        if last is None:
            where = (
                "no checkpoint was written before it, so there is nothing to resume: start again"
            )
        else:
            path, step = last
            at = f" (step {step})" if step is not None else ""
            where = f"the last checkpoint is {path}{at}: resume from it with run.resume=last"
        return (
            f"stopped at step {trainer.global_step}: {what} (loss {self.loss:.4g}); no update "
            f"was applied. {where[0].upper()}{where[1:]}, with a lower optim.lr, a longer "
            "optim.warmup_steps or a trainer.gradient_clip_val."
        )


def last_checkpoint(ckpt_dir: Path) -> tuple[Path, int | None] | None:
    """The newest resumable checkpoint in `ckpt_dir` and its step (from the newest
    `step=N.ckpt` beside last.ckpt), or None when there is none."""
    if not ckpt_dir.is_dir():
        return None
    steps = []
    for f in ckpt_dir.glob("step=*.ckpt"):
        try:
            steps.append((int(f.stem.split("=", 1)[1]), f))
        except ValueError:
            continue
    step = max(steps)[0] if steps else None
    if (ckpt_dir / "last.ckpt").is_file():
        return ckpt_dir / "last.ckpt", step
    return (max(steps)[1], step) if steps else None


class ResumeOptimSettings(L.Callback):
    """On resume, the run's optim settings apply, not the checkpoint's.

    Lightning restores the optimizer and the scheduler as they were saved, learning
    rate, betas, eps and weight decay included, so `optim.lr=1e-5` given on resume
    would be silently ignored. This rewrites those values in the loaded checkpoint
    before Lightning restores from it (the schedule's shape, warm-up and
    min_lr_ratio, is the config's already: it is a function, not state), sets the
    first resumed step's learning rate from the config's schedule, and says in one
    line what changed. The optimizer's groups are LMModule's: [decayed, not].
    """

    def __init__(self, optim: dict[str, Any]):
        self.optim = optim
        self.changed: list[str] = []
        self.resumed = False

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        o = self.optim
        saved = (checkpoint.get("hyper_parameters") or {}).get("optim") or {}
        self.changed = [
            f"optim.{k} {saved[k]!r} -> {o[k]!r}" for k in o if k in saved and saved[k] != o[k]
        ]
        for state in checkpoint.get("optimizer_states", []):
            for i, group in enumerate(state.get("param_groups", [])):
                group["initial_lr"] = o["lr"]
                group["betas"] = (o["beta1"], o["beta2"])
                group["eps"] = o["eps"]
                if i == 0:  # LMModule's decayed group; the other keeps no decay
                    group["weight_decay"] = o["weight_decay"]
        for sched in checkpoint.get("lr_schedulers", []):
            if "base_lrs" in sched:
                sched["base_lrs"] = [o["lr"]] * len(sched["base_lrs"])
        self.resumed = True
        if self.changed:
            notice(f"resuming with the config's {', '.join(self.changed)} (applied from this step)")

    def on_train_start(self, trainer, pl_module) -> None:
        # The restored learning rate is the old schedule's; the first resumed step takes
        # the config's schedule (peak, warm-up, max_steps) at the resumed step instead.
        if not self.resumed:
            return
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            if isinstance(sched, LambdaLR):
                for group, base, fn in zip(
                    sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas
                ):
                    group["lr"] = base * fn(sched.last_epoch)


@rank_zero_only
def notice(message: str) -> None:
    """One line on stderr, from the first process only."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


def batch_tokens(batch: dict) -> int:
    """The batch's non-padding tokens: "n_tokens", counted on the host before the batch
    moved to the device (TrainModule.on_before_batch_transfer), else its
    attention_mask's sum (a read of the device)."""
    n = batch.get("n_tokens")
    return int(batch["attention_mask"].sum()) if n is None else n


class Throughput(L.Callback):
    """Logs train/tokens_per_second (non-padding tokens), train/flops_per_second and
    train/mfu = achieved model FLOP/s / the device's peak (training.flops: a datasheet
    table of GPUs, else a matmul timed at the start of training, as on every CPU)."""

    def __init__(self, flops_per_token: float, window: int = 20):
        self.flops_per_token = flops_per_token
        self.window = window
        self.tokens = 0
        self.t0: float | None = None
        self.peak: float | None = None
        self.peak_source = ""
        self.world_size = 1
        self.tokens_per_second: float = float("nan")
        self.total_tokens = 0
        self.total_time = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.peak, self.peak_source = device_peak_flops(pl_module.device, str(trainer.precision))
        self.world_size = trainer.world_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.t0 is None:
            self._sync(pl_module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.tokens += batch_tokens(batch) * trainer.world_size
        if (batch_idx + 1) % self.window:
            return
        self._sync(pl_module)
        dt = time.perf_counter() - (self.t0 or time.perf_counter())
        if dt > 0:
            self.tokens_per_second = self.tokens / dt
            self.total_tokens += self.tokens
            self.total_time += dt
            flops = self.tokens_per_second * self.flops_per_token
            pl_module.log("train/tokens_per_second", self.tokens_per_second)
            pl_module.log("train/flops_per_second", flops)
            pl_module.log("train/mfu", flops / (self.peak * trainer.world_size))
        self.tokens, self.t0 = 0, None

    def mean_tokens_per_second(self) -> float:
        return self.total_tokens / self.total_time if self.total_time else self.tokens_per_second

    def summary(self) -> dict[str, float | str]:
        """tokens_per_second, flops_per_second and mfu over the run (all processes),
        peak_flops (one device) and peak_source: the `train` keys of metrics.json."""
        tps = self.mean_tokens_per_second()
        flops = tps * self.flops_per_token
        return {
            "tokens_per_second": tps,
            "flops_per_second": flops,
            "mfu": flops / (self.peak * self.world_size) if self.peak else float("nan"),
            "peak_flops": self.peak or float("nan"),
            "peak_source": self.peak_source,
        }

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


class ProgressLines(L.Callback):
    """Without a progress bar (`trainer.progress_bar=false`: logs, compare's runs): one
    line per tenth of the run, "step S/N, elapsed, about T left", the time left from
    rich's estimate over the run's mean pace (a resumed run counts from where it was)."""

    def __init__(self, parts: int = 10):
        self.parts = parts
        self.progress: Progress | None = None
        self.task = 0
        self.said = -1

    @rank_zero_only
    def on_train_start(self, trainer, pl_module) -> None:
        self.progress = Progress(disable=True, speed_estimate_period=24 * 3600)
        self.task = self.progress.add_task("train", total=trainer.max_steps, completed=trainer.global_step)  # fmt: skip

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress is None:
            return
        step, total = trainer.global_step, trainer.max_steps
        self.progress.update(self.task, completed=step)
        every = max(1, total // self.parts)
        if (step % every and step != total) or step == self.said:
            return  # (a step spans several batches when gradients accumulate)
        self.said = step
        task = self.progress.tasks[0]
        left = task.time_remaining if step < total else None
        eta = f", about {_clock(left)} left" if left is not None else ""
        print(f"train: step {step}/{total}, {_clock(task.elapsed or 0)} elapsed{eta}", flush=True)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint files written to a temporary name, flushed, then renamed:
    a crash mid-write leaves the previous file intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @staticmethod
    def clean(ckpt_dir: Path) -> list[Path]:
        """Remove the temporary files of writes a killed run left in `ckpt_dir`."""
        stale = sorted(Path(ckpt_dir).glob(".*.ckpt.tmp-*")) if Path(ckpt_dir).is_dir() else []
        for f in stale:
            f.unlink(missing_ok=True)
        return stale
