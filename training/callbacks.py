"""Callbacks for the cross-cutting work of a run: throughput and MFU, a guard against
non-finite losses and gradients, and checkpoint files written atomically."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from glassbox.training.flops import device_peak_flops


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; raised to stop the run before the weights are hit."""


class NaNGuard(L.Callback):
    """Stops the run with a clear message when the loss or the gradient norm is not
    finite. The gradient check runs before the optimizer step, so a bad step never
    reaches the weights, and the last Lightning checkpoint stays the last good state."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise NonFiniteError(self._message(trainer, f"the training loss is {float(loss)}"))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        norms = [p.grad.detach().norm() for p in pl_module.parameters() if p.grad is not None]
        if norms and not torch.isfinite(torch.stack(norms)).all():
            bad = [
                n
                for n, p in pl_module.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            raise NonFiniteError(
                self._message(trainer, f"non-finite gradients in {', '.join(bad[:3])}")
            )

    @staticmethod
    def _message(trainer, what: str) -> str:
        ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
        return (
            f"stopped at step {trainer.global_step}: {what}. No update was applied; "
            f"the last good checkpoint is in {ckpt_dir} (resume with run.resume=last). "
            "Try a lower optim.lr, a smaller optim.warmup_steps ramp, or trainer.gradient_clip_val."
        )


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
        self.tokens += int(batch["attention_mask"].sum()) * trainer.world_size
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
