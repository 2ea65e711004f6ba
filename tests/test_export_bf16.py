"""`glassbox export CKPT --to bf16 DIR` (archs/export/bf16.py): the copy's weights are
the original's rounded to bfloat16 and nothing else changes; it refuses the places an
export may not write."""

from __future__ import annotations

import pytest
import torch

from glassbox import archs
from glassbox.archs.checkpoint import resolve_checkpoint
from glassbox.archs.checkpoint_checks import read_header
from glassbox.archs.export.bf16 import export_bf16
from glassbox.archs.writes import OutputError
from glassbox.cli import main

SHIPPED = "glassbox/weight_sparse"  # packed masks and a tokenizer: every path the copy takes


def test_the_copy_is_the_original_rounded_to_bf16(tmp_path):
    out = export_bf16(SHIPPED, tmp_path / "bf16")
    src = resolve_checkpoint(SHIPPED)
    entries, _, _ = read_header(out / "model.safetensors")
    floats = [e["dtype"] for n, e in entries.items() if not n.endswith("_mask")]
    assert set(floats) == {"BF16"}
    original, copy = archs.load_pretrained(SHIPPED), archs.load_pretrained(out)
    for name, t in original.state_dict().items():
        want = t.to(torch.bfloat16).float() if t.is_floating_point() else t
        assert torch.equal(copy.state_dict()[name], want), name
    assert copy.tokenizer is not None  # its digest, recorded with the weights, still matches
    for f in src.iterdir():  # every other file as it was
        if f.is_file() and f.name != "model.safetensors":
            assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    ratio = (out / "model.safetensors").stat().st_size / (src / "model.safetensors").stat().st_size
    assert 0.5 < ratio < 0.6  # floats at half the bytes; the mask bits as they were


def test_the_command_line_writes_it(tmp_path, capsys):
    assert main(["export", SHIPPED, "--to", "bf16", str(tmp_path / "c")]) == 0
    assert "exported glassbox/weight_sparse" in capsys.readouterr().out
    assert archs.load_pretrained(tmp_path / "c").cfg.weight_sparsity.enabled


def test_it_never_writes_over_its_source_or_into_the_shipped_checkpoints(tmp_path):
    export_bf16(SHIPPED, tmp_path / "a")
    with pytest.raises(OutputError, match="is the checkpoint glassbox export reads"):
        export_bf16(tmp_path / "a", tmp_path / "a")
    with pytest.raises(OutputError, match="the shipped checkpoints"):
        export_bf16(tmp_path / "a", resolve_checkpoint(SHIPPED).parent / "weight_sparse_bf16")
    assert not (resolve_checkpoint(SHIPPED).parent / "weight_sparse_bf16").exists()
