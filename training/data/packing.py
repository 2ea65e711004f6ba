"""Packed rows: several examples of the skill suite in one fixed-length row.

A skill example is short (13 tokens on average in the default suite) and, one per
row, a batch is mostly padding or tiny matrix multiplies. Packing lays examples end
to end in rows of `pack_length` tokens; the model keeps attention inside each
example and restarts rotary positions at each example's first token (the batch's
`segment_ids`, read by `archs.Transformer.forward`), so every example's logits, loss
and metrics are exactly those it has alone in a row.

    packs = next_fit(lengths[order], pack_length)    # boundaries into `order`
    batch = collate_packed([[row, row], [row]], pack_length, pad_id)

Batch layout (B rows of L = pack_length tokens, K = most examples in a row):
    input_ids, attention_mask, loss_mask, answer_mask, skill   (B, L), as `collate`
    features                                                   (B, L, F)
    segment_ids    (B, L) index of the example in its row; the padding after the
                   last example is one more segment of its own
    position_ids   (B, L) position inside the example (0 at its <bos>; 0 on padding)
    example_skill  (B, K) skill of each example, -1 where a row has fewer than K
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset, Sampler

from glassbox.archs.config import ConfigError


def example_lengths(ds) -> np.ndarray:
    """Tokens of every row of a datasets.Dataset, read from its arrow column."""
    return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy().astype(np.int64)


def next_fit(lengths: np.ndarray, pack_length: int) -> np.ndarray:
    """Boundaries b of next-fit packing: row r holds examples b[r] .. b[r+1]-1 in the
    given order, each row filled until the next example does not fit. Every length
    must be <= pack_length."""
    ends = np.concatenate([[0], np.cumsum(lengths)])
    bounds = [0]
    while bounds[-1] < len(lengths):
        start = bounds[-1]
        bounds.append(int(np.searchsorted(ends, ends[start] + pack_length, side="right")) - 1)
    return np.asarray(bounds)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of n examples for one epoch (the same for every sampler)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class PackedBatchSampler(Sampler[list[np.ndarray]]):
    """Endless, seeded, rank-sharded stream of packed batches.

    Epoch e permutes the examples (`epoch_order`) and packs them next-fit into rows;
    the rows of all epochs, end to end, are the stream. Micro-batch m of rank r is the
    rows at stream positions (m * world + r) * rows .. + rows - 1, so a run on
    `world` processes sees the rows one process sees with rows * world per batch,
    and `start_batch` (per rank) resumes exactly where a run stopped.
    Yields a list of `rows` arrays of example indices.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        pack_length: int,
        rows: int,
        seed: int,
        start_batch: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        if len(lengths) == 0:
            raise ValueError("the training split is empty")
        longest = int(lengths.max())
        if longest > pack_length:
            raise ConfigError(
                "data.pack_length", pack_length, f"must be >= {longest}, the longest train example"
            )
        self.lengths, self.pack_length, self.rows, self.seed = lengths, pack_length, rows, seed
        self.start_batch, self.rank, self.world = start_batch, rank, world

    def packs(self, epoch: int) -> list[np.ndarray]:
        """The rows of one epoch, each an array of example indices."""
        order = epoch_order(len(self.lengths), self.seed, epoch).numpy()
        bounds = next_fit(self.lengths[order], self.pack_length)
        return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        epoch, first = 0, 0  # the rows of `epoch` sit at stream positions first, first + 1, ...
        packs = self.packs(0)
        m = self.start_batch
        while True:
            batch = []
            base = (m * self.world + self.rank) * self.rows
            for p in range(base, base + self.rows):
                while p >= first + len(packs):
                    first += len(packs)
                    epoch += 1
                    packs = self.packs(epoch)
                batch.append(packs[p - first])
            yield batch
            m += 1


def collate_packed(
    packs: Sequence[Sequence[dict]], pack_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Lay each pack's rows (suite rows, as `collate` takes them) end to end in a row
    of pack_length tokens, padded at the end; see the module docstring for the layout."""
    B, L = len(packs), pack_length
    K = max(len(p) for p in packs)
    first = packs[0][0]
    F = len(first["features"][0]) if len(first["input_ids"]) else 0
    out = {
        "input_ids": torch.full((B, L), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(B, L, dtype=torch.long),
        "loss_mask": torch.zeros(B, L, dtype=torch.long),
        "answer_mask": torch.zeros(B, L, dtype=torch.long),
        "skill": torch.full((B, L), -1, dtype=torch.long),
        "features": torch.full((B, L, F), -1, dtype=torch.long),
        "segment_ids": torch.zeros(B, L, dtype=torch.long),
        "position_ids": torch.zeros(B, L, dtype=torch.long),
        "example_skill": torch.full((B, K), -1, dtype=torch.long),
    }
    for i, pack in enumerate(packs):
        lengths = [len(r["input_ids"]) for r in pack]
        n = sum(lengths)
        if n > L:
            raise ValueError(f"a pack of {n} tokens does not fit data.pack_length={L}")
        for key in ("input_ids", "loss_mask", "answer_mask", "skill"):
            out[key][i, :n] = torch.as_tensor(list(chain.from_iterable(r[key] for r in pack)))
        if F:
            out["features"][i, :n] = torch.as_tensor(
                list(chain.from_iterable(r["features"] for r in pack))
            )
        out["attention_mask"][i, :n] = 1
        seg = torch.repeat_interleave(torch.arange(len(pack)), torch.as_tensor(lengths))
        out["segment_ids"][i, :n] = seg
        out["segment_ids"][i, n:] = len(pack)
        out["position_ids"][i, :n] = torch.cat([torch.arange(k) for k in lengths])
        out["example_skill"][i, : len(pack)] = torch.as_tensor(
            [int(r["example_skill"]) for r in pack]
        )
    return out


class PackedBatches(Dataset):
    """A map-style dataset whose items are whole packed batches: index it with what
    PackedBatchSampler yields (a list of arrays of example indices); one arrow read
    fetches every example of the batch. Use with DataLoader(batch_size=None)."""

    def __init__(self, ds, pack_length: int, pad_id: int):
        self.ds, self.pack_length, self.pad_id = ds, pack_length, pad_id

    def __getitem__(self, packs: list[np.ndarray]) -> dict[str, torch.Tensor]:
        flat = [int(i) for i in np.concatenate(packs)]
        columns = self.ds[flat]  # one read: {column: [value per example]}
        rows = [{k: v[j] for k, v in columns.items()} for j in range(len(flat))]
        cuts = np.cumsum([0, *map(len, packs)])
        grouped = [rows[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        return collate_packed(grouped, self.pack_length, self.pad_id)
