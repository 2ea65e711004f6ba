"""Tiny trained checkpoints shared by the tests of what reads shipped checkpoints (hub,
export, dashboards, compare on checkpoints): `glassbox train` on the FAST slice of the
suite (tests/test_training.py), a few steps, once per kind and test process.

They stand in for the converged checkpoints of checkpoints/: the same file format,
made by the same command, so code tested on them reads the shipped ones unchanged.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from glassbox.cli import main
from tests.test_training import FAST

# per kind: its run config and the overrides that keep it tiny
KINDS = {
    "dense": ("configs/dense.yaml", []),
    "moe": (
        "configs/moe.yaml",
        ["model.ffn.moe.n_experts=4", "model.ffn.moe.k=2", "model.ffn.moe.d_expert=32"],
    ),
    "transcoder": (
        "configs/transcoder.yaml",
        ["model.ffn.transcoder.d_latent=128", "model.ffn.transcoder.k=8"],
    ),
}


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="glassbox-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def tiny_checkpoint(kind: str, steps: int = 30) -> Path:
    """The exported checkpoint directory of a tiny `kind` run (dense, moe, transcoder)
    trained for `steps` optimiser steps at seed 0; trained once per test process."""
    config, extra = KINDS[kind]
    out = _root() / f"{kind}-{steps}"
    args = [
        "train", config, *FAST, *extra, f"data.cache_dir={_root() / 'data'}",
        f"run.out_dir={out}", f"trainer.max_steps={steps}", "optim.warmup_steps=2",
        "run.seed=0",
    ]  # fmt: skip
    if main(args) != 0:
        raise RuntimeError(f"training the tiny {kind} checkpoint failed: {args}")
    return out / "checkpoint"
