"""A weight-sparse checkpoint stored by its kept weights: each pruned matrix as the
values its mask keeps and the mask as bits, losslessly.

A weight-sparse model (archs/weight_sparsity.py) holds every pruned matrix dense, its
pruned entries exactly zero, with a boolean buffer `<name>_mask` beside it. Saved as
they are, a matrix at density d costs 4 + 1 bytes an entry in fp32 (5 bytes where only
4d are information): at the ladder's L rung (35.7M weights at density 0.26) that is
178 MB. Packed, `model.safetensors` holds instead, for each matrix `<name>` whose
pruned entries are all zero:

    <name>        (kept,)           the values where the mask is set, row-major order,
                                    the weight's dtype
    <name>_mask   (ceil(n / 8),)    uint8: the n mask bits, 8 to a byte, lowest bit
                                    first (numpy.packbits(..., bitorder="little"))

and the header's metadata lists the packed matrices under `glassbox.packed_masks`
(JSON: {name: shape}). About 4d + 1/8 bytes an entry in fp32 (42 MB at L), so a
weight-sparse checkpoint costs what a dense model of its non-zero count does.
Unpacked on load, the tensors are the saved ones bit for bit. A matrix with a
non-zero entry off its mask (a mask written by hand, say) is saved dense, as is
everything else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from glassbox.archs.errors import CheckpointError
from glassbox.archs.weight_sparsity import MASK_SUFFIX

PACKED_KEY = "glassbox.packed_masks"  # header metadata: {packed weight name: its shape}


def packed_bytes(numel: int) -> int:
    """Bytes of a mask of `numel` entries packed 8 to a byte."""
    return math.ceil(numel / 8)


def pack_masked(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """`state` (a state dict) with each (weight, `<weight>_mask`) pair packed, and the
    metadata that names them ({} when none is packed: the state is returned as it is).
    Only pairs whose weight is zero everywhere off the mask are packed, so unpacking
    gives the same tensors."""
    out, shapes = dict(state), {}
    for mask_name, mask in state.items():
        name = mask_name[: -len(MASK_SUFFIX)]
        if not mask_name.endswith(MASK_SUFFIX) or mask.dtype != torch.bool or name not in state:
            continue
        weight = state[name]
        if weight.shape != mask.shape or torch.count_nonzero(weight[~mask]) > 0:
            continue
        flat = mask.reshape(-1).cpu()
        out[name] = weight.reshape(-1).cpu()[flat].contiguous()
        out[mask_name] = torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
        shapes[name] = list(weight.shape)
    return out, ({PACKED_KEY: json.dumps(shapes, sort_keys=True)} if shapes else {})


def packed_shapes(metadata: dict[str, str], file: Path) -> dict[str, list[int]]:
    """{weight name: its shape} of the matrices a file's header says are packed ({}
    for a file saved dense); CheckpointError when the entry is not such a mapping."""
    raw = metadata.get(PACKED_KEY)
    if raw is None:
        return {}
    try:
        shapes = json.loads(raw)
    except json.JSONDecodeError:
        shapes = None
    ok = isinstance(shapes, dict) and all(
        isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s)
        for s in shapes.values()
    )
    if not ok:
        raise CheckpointError(
            file, f"header metadata {PACKED_KEY} is not a JSON mapping of names to shapes"
        )
    return shapes


def unpack_masked(
    tensors: dict[str, Tensor], shapes: dict[str, list[int]], file: Path
) -> dict[str, Tensor]:
    """`tensors` (as read from `file`) with each packed weight and mask of `shapes`
    back at full shape: the mask bool, the weight zero off it. CheckpointError when a
    weight's values are not one per set bit of its mask."""
    out = dict(tensors)
    for name, shape in shapes.items():
        n = math.prod(shape)
        bits = tensors[name + MASK_SUFFIX].cpu().numpy()
        mask = torch.from_numpy(np.unpackbits(bits, count=n, bitorder="little").astype(bool))
        values = tensors[name]
        kept = int(mask.sum())
        if values.numel() != kept:
            raise CheckpointError(
                file,
                f"tensor {name}: {values.numel()} values for the {kept} set bits of its "
                "mask: the file is corrupted; copy or export it again",
            )
        dense = torch.zeros(n, dtype=values.dtype)
        dense[mask] = values
        out[name] = dense.view(shape)
        out[name + MASK_SUFFIX] = mask.view(shape)
    return out
