"""trainer.compile=true: the compiled run trains to the eager run's losses step by
step, and its exported checkpoint (the uncompiled weights) loads and gives the eager
export's logits. Inductor compiles C++ on the CPU: about a minute cold, hence slow."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from glassbox.archs import load_pretrained
from glassbox.training.config import load_config
from glassbox.training.train import train

# Packed rows (fixed shapes): the compiled graph is built once, as on a GPU.
TINY = [
    "model.d_model=32",
    "model.ffn.d_ff=64",
    "model.max_seq_len=64",
    "data.mix={copy: 1, modadd: 0, reverse: 0, sort: 0, addition: 0, dyck: 0, facts: 0, ioi: 0}",
    "data.copy.max_len=5",
    "data.n_train=500",
    "data.n_val=50",
    "data.n_test=50",
    "data.n_ood=20",
    "data.pack_length=64",
    "data.batch_size=4",
    "trainer.max_steps=20",
    "trainer.log_every_n_steps=1",
    "trainer.val_every_n_steps=20",
    "trainer.limit_val_batches=1",
    "trainer.progress_bar=false",
    "trainer.loggers=[csv]",
    "optim.warmup_steps=5",
    "run.eval_max_batches=2",
]


def _run(tmp_path, compiled: bool):
    out = tmp_path / f"compile={compiled}"
    cfg = load_config(
        "configs/dense.yaml",
        TINY
        + [
            f"trainer.compile={str(compiled).lower()}",
            f"data.cache_dir={tmp_path / 'data'}",
            f"run.out_dir={out}",
        ],
    )
    export = train(cfg)
    with open(out / "logs" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return export, losses, json.loads((export / "metrics.json").read_text())


@pytest.mark.slow
def test_compiled_run_matches_eager_and_its_export_loads(tmp_path):
    eager, eager_losses, eager_metrics = _run(tmp_path, compiled=False)
    compiled, compiled_losses, compiled_metrics = _run(tmp_path, compiled=True)
    assert len(compiled_losses) == len(eager_losses) == 20
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert eager_losses[-1] < 0.9 * eager_losses[0]  # it trained
    assert compiled_metrics["val_loss"] == pytest.approx(eager_metrics["val_loss"], rel=1e-4)
    a, b = load_pretrained(compiled), load_pretrained(eager)
    assert set(a.state_dict()) == set(b.state_dict())  # no "_orig_mod." prefixes
    tokens = torch.randint(0, a.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(tokens), b(tokens), atol=1e-3, rtol=1e-3)
