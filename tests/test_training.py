"""Training: config errors, a short run that learns, exact resumption, the NaN guard,
the exported checkpoint and the CLI around them."""

from __future__ import annotations

import collections
import inspect
import json
import math
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import glassbox.training.train as train_mod
from glassbox import archs
from glassbox.archs.config import ConfigError
from glassbox.cli import main
from glassbox.training.config import load_config
from glassbox.training.evaluate import evaluate_model, load_suite_for
from glassbox.training.module import cosine_with_warmup
from glassbox.training.train import train

# A small, quickly learnable slice of the suite: copying short lists of 16 symbols
# (an induction task: it needs two layers of attention working together).
FAST = [
    "model.d_model=64",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.ffn.d_ff=128",
    "model.max_seq_len=64",
    "data.mix={copy: 1, modadd: 0, reverse: 0, sort: 0, addition: 0, dyck: 0, facts: 0, ioi: 0}",
    "data.copy.n_values=16",
    "data.copy.min_len=2",
    "data.copy.max_len=5",
    "data.copy.ood_max_len=8",
    "data.n_train=2000",
    "data.n_val=200",
    "data.n_test=200",
    "data.n_ood=100",
    "data.batch_size=32",
    "trainer.progress_bar=false",
    "trainer.loggers=[csv]",
    "trainer.limit_val_batches=2",
    "run.eval_max_batches=4",
]


def fast_cfg(tmp_path, *extra: str):
    return load_config(
        "configs/dense.yaml",
        FAST + [f"data.cache_dir={tmp_path / 'data'}", f"run.out_dir={tmp_path / 'run'}", *extra],
    )


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        (["model.n_heads=5"], "model.d_model", "divisible by model.n_heads=5"),
        (["model.dmodel=64"], "model.dmodel", "unknown key"),
        (["model.d_model=big"], "model.d_model", "big"),
        (["trainer.max_steps=0"], "trainer.max_steps", "positive"),
        (["optim.warmup_steps=-1"], "optim.warmup_steps", ">= 0"),
        (["trainer.max_seconds=-1"], "trainer.max_seconds", ">= 0"),
        (
            ["model.ffn.kind=moe", "model.ffn.moe.n_experts=4", "model.ffn.moe.k=5"],
            "model.ffn.moe.k",
            "n_experts=4",
        ),
        (["trainer.precision=fp8"], "trainer.precision", "one of"),
        (["data.loss_on=some"], "data.loss_on", "answer"),
        (["run.resume=yesterday"], "run.resume", "last"),
    ],
)
def test_config_errors_are_one_line_naming_key_and_value(override, key, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("configs/dense.yaml", override)
    msg = str(e.value)
    assert "\n" not in msg
    assert e.value.key == key, msg
    assert fragment in msg


def test_cli_config_error_exits_2_with_one_line(capsys):
    assert main(["train", "configs/dense.yaml", "model.n_heads=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.d_model=128" in err and "n_heads=5" in err


def test_defaults_compose_and_overrides_win():
    cfg = load_config("configs/dense.yaml", ["trainer.max_steps=700"])
    assert cfg.model.ffn.kind == "dense" and cfg.model.ffn.d_ff == 512  # configs/model/dense.yaml
    assert cfg.trainer.accelerator == "cpu"  # configs/trainer/cpu.yaml
    assert cfg.trainer.max_steps == 700


def test_schedule_closed_form():
    assert cosine_with_warmup(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_with_warmup(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(500, 10, 110, 0.1) == pytest.approx(0.1)


@pytest.mark.slow
def test_short_run_learns_and_exports(tmp_path):
    cfg = fast_cfg(
        tmp_path, "trainer.max_steps=300", "trainer.val_every_n_steps=300", "optim.warmup_steps=30"
    )
    export = train(cfg)
    metrics = json.loads((export / "metrics.json").read_text())
    model = archs.load_pretrained(export)
    torch.manual_seed(cfg.run.seed)
    untrained = evaluate_model(
        archs.Transformer(model.cfg), load_suite_for(export, model)[0], max_batches=4
    )
    assert untrained["val_loss"] > 0.9 * math.log(
        model.cfg.vocab_size
    )  # chance, near-uniform logits
    assert metrics["val_loss"] < 0.2 * untrained["val_loss"], metrics
    assert metrics["skills"]["copy"]["accuracy"] > 0.8, metrics
    assert metrics["skills"]["copy"]["ood_accuracy"] < metrics["skills"]["copy"]["accuracy"] + 0.05
    assert metrics["params"]["total"] == model.num_params()
    assert metrics["train"]["tokens"] > 0 and metrics["train"]["flops"] > 0
    for f in ("config.yaml", "model.safetensors", "tokenizer.json", "metrics.json", "README.md"):
        assert (export / f).is_file()
    # eval from the CLI reproduces the exported metrics on the same batches
    import sys
    from io import StringIO

    out, sys.stdout = sys.stdout, StringIO()
    try:
        assert main(["eval", str(export), "--json", "--max-batches", "4"]) == 0
        printed = json.loads(sys.stdout.getvalue())
    finally:
        sys.stdout = out
    assert printed["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)
    assert printed["skills"]["copy"]["accuracy"] == pytest.approx(
        metrics["skills"]["copy"]["accuracy"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        [],
        # after_optimizer_step renormalises the decoder: the checkpoint must hold it
        [
            "model.ffn.kind=transcoder",
            "model.ffn.transcoder.d_latent=128",
            "model.ffn.transcoder.k=8",
        ],
    ],
    ids=["dense", "transcoder"],
)
def test_resume_reproduces_uninterrupted_run(tmp_path, kind):
    steps = [
        "trainer.max_steps=24",
        "trainer.checkpoint_every_n_steps=12",
        "trainer.keep_checkpoints=3",
        "trainer.val_every_n_steps=12",
        "optim.warmup_steps=4",
        "trainer.log_every_n_steps=1",
        *kind,
    ]
    full = fast_cfg(tmp_path / "a", *steps)
    train(full)
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "step=12.ckpt"
    assert ckpt.is_file()
    resumed = fast_cfg(tmp_path / "b", *steps, f"run.resume={ckpt}")
    train(resumed)
    a = archs.load_pretrained(tmp_path / "a" / "run" / "checkpoint")
    b = archs.load_pretrained(tmp_path / "b" / "run" / "checkpoint")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    la, lb = _logged_losses(tmp_path / "a" / "run"), _logged_losses(tmp_path / "b" / "run")
    assert set(range(13, 24)) <= set(lb)
    for step in range(13, 24):
        assert la[step] == lb[step], step


def _logged_losses(run) -> dict[int, float]:
    import csv

    out = {}
    with open(run / "logs" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                out[int(row["step"])] = float(row["train/loss"])
    return out


def test_train_restores_torch_threads_on_return_and_on_error(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    seen = []

    def fake_train(cfg):
        seen.append(torch.get_num_threads())
        return tmp_path

    monkeypatch.setattr(train_mod, "_train", fake_train)
    assert train(fast_cfg(tmp_path, f"trainer.cpu_threads={before + 2}")) == tmp_path

    def failing_setup(self, stage=None):
        seen.append(torch.get_num_threads())
        raise RuntimeError("data went away")

    monkeypatch.undo()
    monkeypatch.setattr(train_mod.SuiteDataModule, "setup", failing_setup)
    with pytest.raises(RuntimeError, match="data went away"):
        train(fast_cfg(tmp_path, f"trainer.cpu_threads={before + 2}"))
    assert seen == [before + 2, before + 2]
    assert torch.get_num_threads() == before


def test_nan_guard_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = fast_cfg(
        tmp_path,
        "trainer.max_steps=40",
        "trainer.checkpoint_every_n_steps=5",
        "trainer.val_every_n_steps=100",
        "optim.warmup_steps=2",
    )
    from glassbox.training import module as mod

    real = mod.masked_lm_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 8 else loss

    mod.masked_lm_loss = poisoned
    try:
        from glassbox.training.callbacks import NonFiniteError

        with pytest.raises(NonFiniteError, match="step 7"):
            train(cfg)
    finally:
        mod.masked_lm_loss = real
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "step=5.ckpt" in ckpts and "last.ckpt" in ckpts
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


class _ValueReads(TorchDispatchMode):
    """Counts reads of a tensor's value into Python (.item(), int(), bool(), float():
    on a GPU each waits for the device) whose innermost Python frame is in the code
    that runs a step on the device: the model (archs/), the LightningModule and the
    callbacks. Not the data pipeline (host tensors), the optimizer's step counters
    (host tensors) or Lightning's logging (every log_every_n_steps)."""

    def __init__(self):
        super().__init__()
        self.where: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            frame = inspect.currentframe().f_back
            while frame and "torch" in frame.f_code.co_filename.split(os.sep)[-3:-1]:
                frame = frame.f_back  # out of torch's dispatch into the caller
            path = frame.f_code.co_filename if frame else ""
            parts = path.split(os.sep)[-2:]
            if parts in (["training", "module.py"], ["training", "callbacks.py"]) or (
                "archs" in parts[:1] and "site-packages" not in path
            ):
                self.where.append(f"{os.path.basename(path)}:{frame.f_code.co_name}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["dense", "moe", "transcoder", "weight_sparse"])
def test_a_training_step_reads_the_device_once(tmp_path, kind):
    """Each read of a value stalls a GPU's queue until it drains, so a training step
    reads one: NaNGuard's flag (the losses and every gradient's norm, reduced on the
    device). The tokens are counted on the host before the batch moves
    (SuiteDataModule.on_before_batch_transfer). Counted as the difference between a 16-step and an 8-step run (the same start,
    validation and export). The transcoder's AuxK asks whether any latent is dead and
    how many, eagerly; compiled (the GPU runs') it does not (tests/test_compile.py)."""
    reads = {}
    for steps in (8, 16):
        out = tmp_path / str(steps)
        cfg = load_config(
            f"configs/{kind}.yaml",
            [
                *FAST,
                f"data.cache_dir={tmp_path / 'data'}",
                f"run.out_dir={out / 'run'}",
                f"trainer.max_steps={steps}",
                f"trainer.val_every_n_steps={steps}",
                "trainer.log_every_n_steps=1000",
                "model.ffn.transcoder.dead_after_tokens=1",  # AuxK from the first step
            ],
        )
        with _ValueReads() as mode:
            train(cfg)
        reads[steps] = collections.Counter(mode.where)
    per_step = reads[16].copy()
    per_step.subtract(reads[8])
    expected = {"callbacks.py:on_before_optimizer_step": 1.0}
    if kind == "transcoder":
        expected["transcoder.py:_auxk"] = 2.0 * cfg.model.n_layers
    assert {k: v / 8 for k, v in per_step.items() if v} == expected


def test_max_seconds_ends_a_run_as_max_steps_would(tmp_path):
    """trainer.max_seconds stops training on the clock (benchmarks/scale_gpu.sh's runs
    on a GPU whose pace is not known before): the run still validates, exports and
    records its steps, and says what stopped it; with no limit, max_steps does."""
    timed = train(fast_cfg(tmp_path / "timed", "trainer.max_steps=100000", "trainer.max_seconds=3"))
    m = json.loads((timed / "metrics.json").read_text())
    assert m["train"]["stopped"] == "max_seconds"
    assert 0 < m["train"]["steps"] < 100000
    assert math.isfinite(m["val_loss"])
    assert archs.load_pretrained(timed).cfg.d_model == 64
    full = train(fast_cfg(tmp_path / "full", "trainer.max_steps=3"))
    m = json.loads((full / "metrics.json").read_text())
    assert (m["train"]["stopped"], m["train"]["steps"]) == ("max_steps", 3)
