"""The KV cache of incremental decoding: keys and values of every layer, filled as
the sequence grows. Written by `Transformer.forward(cache=...)`, made by
`archs.generation.generate`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from glassbox.archs.config import ModelConfig


@dataclass
class KVCache:
    """Pre-allocated keys and values of every layer: (B, G, S_max, D) each; and per
    layer, what a router that reads the sequence's prefix carries to the next pass
    (the pooled router's prefix sums: archs.routing.Sequences.state)."""

    k: list[Tensor]
    v: list[Tensor]
    length: int = 0  # positions filled so far (the same for every sequence)
    routing: list[dict[str, Tensor]] = field(default_factory=list)  # one dict per layer

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device, dtype) -> KVCache:
        shape = (batch, cfg.kv_heads, max_len, cfg.d_head)
        return cls(
            k=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            v=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            routing=[{} for _ in range(cfg.n_layers)],
        )
