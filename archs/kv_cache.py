"""The KV cache of incremental decoding: keys and values of every layer, filled as
the sequence grows. Written by `Transformer.forward(cache=...)`, made by
`archs.generation.generate`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from glassbox.archs.config import ModelConfig


@dataclass
class KVCache:
    """Pre-allocated keys and values of every layer: (B, G, S_max, D) each."""

    k: list[Tensor]
    v: list[Tensor]
    length: int = 0  # positions filled so far (the same for every sequence)

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device, dtype) -> KVCache:
        shape = (batch, cfg.kv_heads, max_len, cfg.d_head)
        return cls(
            k=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            v=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
        )
