"""A checkpoint with its weights in bfloat16: `glassbox export CKPT --to bf16 DIR`.

The same directory (config.yaml, tokenizer.json, metrics.json, the card and whatever
else it holds) with every floating-point tensor of model.safetensors rounded to
bfloat16: half the bytes, a weight-sparse model's pruned matrices still packed
(archs/packed_masks.py), masks and integer buffers as they were. It loads like any
checkpoint (`load_pretrained`, into float32 parameters holding the bf16 values), so
what a bf16 copy scores can be compared with the original's. This is how a model
trained on a GPU comes back through a channel that takes less (benchmarks/
scale_gpu.sh) and how the large rungs ship.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from glassbox.archs.checkpoint import (
    load_pretrained,
    resolve_checkpoint,
    shipped_dir,
    write_weights,
)
from glassbox.archs.checkpoint_checks import TOKENIZER_DIGEST_KEY, read_header
from glassbox.archs.export.hf import EXPORT
from glassbox.archs.writes import MARKER, claim_output_dir, write_output_dir

WEIGHTS = "model.safetensors"


def export_bf16(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False
) -> Path:
    """Write `checkpoint` (a directory, hub id or shipped name) to `out_dir` with its
    floating-point weights in bfloat16, every other file copied. The directory appears
    complete or not at all; it must be new, empty or an earlier export, never the
    checkpoint itself or inside the shipped checkpoints (OutputError, one line);
    `force` writes into a folder of other files, keeping them. Returns out_dir."""
    src = resolve_checkpoint(checkpoint)
    claim_output_dir(out_dir, EXPORT, [src], [shipped_dir()], force)
    model = load_pretrained(src).to(torch.bfloat16)
    _, metadata, _ = read_header(src / WEIGHTS)

    def write(tmp: Path) -> None:
        for item in src.iterdir():
            if item.name in (WEIGHTS, MARKER):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        write_weights(model, tmp / WEIGHTS, metadata.get(TOKENIZER_DIGEST_KEY))

    return write_output_dir(out_dir, write, EXPORT, [src], [shipped_dir()], force)
