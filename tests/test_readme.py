"""The README's Python example runs as written, on a checkpoint at the path it names."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from glassbox.cli import main
from tests.test_training import FAST

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    configs = README.parent / "configs"
    shutil.copytree(configs, tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # the example names runs/tour/checkpoint, relative
    args = [
        "train", "configs/dense.yaml", *FAST, f"data.cache_dir={tmp_path / 'data'}",
        "run.out_dir=runs/tour", "trainer.max_steps=4", "optim.warmup_steps=1",
    ]  # fmt: skip
    assert main(args) == 0
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
    # the example zeroes head 2 of layer 0 through a hook: the output must change
    clean = scope["model"](scope["tokens"])
    assert scope["ablated"].shape == clean.shape
    assert not torch.allclose(scope["ablated"], clean)
