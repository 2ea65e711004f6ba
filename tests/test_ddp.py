"""Data parallel proven: `glassbox train` with trainer.strategy=ddp on 2 CPU processes
(gloo) follows the loss curve of one process with the same global batch, for dense
(unpacked and packed rows) and moe (packed). About a minute per case.

Why they must agree: DDP averages the two processes' gradients, each the gradient of
its own mean token loss; that is the gradient of the global mean when both hold as
many loss tokens, which copying lists of one fixed length guarantees (packed: each
row then holds as many examples). The sampler gives process r of 2 the half of each
global batch that one process would take at its position. What is left is float
summation order, and for moe the load-balancing loss, which each process computes on
its own tokens (a product of batch means: not exactly the global one).

This file is also the script each run executes (`python tests/test_ddp.py ...`):
Lightning's DDP launcher starts the second process by running the same command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = 12
TINY = [
    "model.d_model=32",
    "model.ffn.d_ff=64",
    "model.ffn.moe.n_experts=4",
    "model.ffn.moe.k=2",
    "model.ffn.moe.d_expert=16",
    "model.max_seq_len=32",
    "data.mix={copy: 1, modadd: 0, reverse: 0, sort: 0, addition: 0, dyck: 0, facts: 0, ioi: 0}",
    "data.copy.min_len=4",
    "data.copy.max_len=4",  # every example: 4 answer tokens + <eos> under the loss
    "data.copy.ood_max_len=6",
    "data.n_train=400",
    "data.n_val=40",
    "data.n_test=40",
    "data.n_ood=20",
    f"trainer.max_steps={STEPS}",
    f"trainer.val_every_n_steps={STEPS}",
    "trainer.limit_val_batches=1",
    "trainer.checkpoint_every_n_steps=1000",
    "trainer.progress_bar=false",
    "trainer.loggers=[csv]",
    "optim.warmup_steps=2",
    "optim.lr=1e-2",
    "run.eval_max_batches=1",
]


def run(kind: str, processes: int, packed: bool, tmp_path: Path) -> list[float]:
    """The global-batch loss of every step of a run on `processes` CPU processes."""
    rows = 4 if packed else 16  # the global batch: 4 rows of 3 examples, or 16 examples
    args = TINY + [
        f"data.cache_dir={tmp_path / 'data'}",
        f"run.out_dir={tmp_path / f'{kind}-{processes}-{packed}'}",
        f"data.batch_size={rows // processes}",
        f"data.pack_length={36 if packed else 0}",  # 3 examples of 12 tokens
        f"trainer.devices={processes}",
        f"trainer.strategy={'ddp' if processes > 1 else 'auto'}",
    ]
    out = tmp_path / f"losses-{kind}-{processes}-{packed}.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, __file__, kind, str(out), *args],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, packed, rel",
    [("dense", False, 1e-5), ("dense", True, 1e-5), ("moe", True, 1e-3)],
    ids=["dense-unpacked", "dense-packed", "moe-packed"],
)
def test_ddp_on_two_processes_follows_one_process(kind, packed, rel, tmp_path):
    one = run(kind, 1, packed, tmp_path)
    two = run(kind, 2, packed, tmp_path)
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=rel)
    assert one[-1] < 0.9 * one[0]  # the curve moves: agreement is not two flat lines


def _main(kind: str, out: str, overrides: list[str]) -> None:
    """Train `configs/{kind}.yaml` with `overrides`, recording the mean loss over
    processes at every step; process 0 writes the curve to `out` as JSON."""
    import lightning as L

    import glassbox.training.train as train_mod
    from glassbox.training.config import load_config

    class LossCurve(L.Callback):
        def __init__(self):
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"].detach().clone()
            if torch.distributed.is_initialized():
                torch.distributed.all_reduce(loss)
                loss /= torch.distributed.get_world_size()
            self.losses.append(float(loss))

    curve = LossCurve()
    build = train_mod.build_trainer

    def build_with_curve(*args, **kwargs):
        trainer, throughput = build(*args, **kwargs)
        trainer.callbacks.append(curve)
        return trainer, throughput

    train_mod.build_trainer = build_with_curve
    train_mod.train(load_config(f"configs/{kind}.yaml", overrides))
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        Path(out).write_text(json.dumps(curve.losses))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], sys.argv[3:])


def test_fsdp_trainer_config_composes(tmp_path):
    from glassbox.training.config import load_config

    run = tmp_path / "fsdp.yaml"
    run.write_text(
        "defaults:\n  - model: dense\n  - data: skills\n  - optim: adamw\n  - trainer: fsdp\n"
    )
    t = load_config(run).trainer
    assert (t.strategy, t.precision, t.accelerator) == ("fsdp", "bf16-mixed", "gpu")
