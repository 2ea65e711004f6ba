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


TOKEN_COLUMNS = ("input_ids", "loss_mask", "answer_mask", "skill")


def pack_tokens(
    columns: dict[str, np.ndarray],
    lengths: np.ndarray,
    example_skill: np.ndarray,
    counts: Sequence[int],
    pack_length: int,
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """The packed batch (module docstring) from examples laid end to end: columns
    holds input_ids, loss_mask, answer_mask, skill (N,) and features (N, F) over all
    N tokens; lengths (n,) and example_skill (n,) per example; row i takes the next
    counts[i] examples."""
    B, L, K = len(counts), pack_length, max(counts)
    counts = np.asarray(counts)
    ex_row = np.repeat(np.arange(B), counts)  # (n,) the row of each example
    ex_seg = np.arange(len(lengths)) - np.repeat(np.cumsum(counts) - counts, counts)
    row_tokens = np.bincount(ex_row, weights=lengths, minlength=B).astype(np.int64)
    if row_tokens.max() > L:
        raise ValueError(f"a pack of {row_tokens.max()} tokens does not fit data.pack_length={L}")
    ex_start = np.cumsum(lengths) - lengths  # first token of each example in the stream
    tok_row = np.repeat(ex_row, lengths)  # (N,)
    tok_col = np.arange(len(tok_row)) - np.repeat(np.cumsum(row_tokens) - row_tokens, row_tokens)
    where = (torch.from_numpy(tok_row), torch.from_numpy(tok_col))

    def laid(values: np.ndarray, fill: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
        out = torch.full((B, L, *shape), fill, dtype=torch.long)
        out[where] = torch.from_numpy(np.asarray(values, dtype=np.int64))
        return out

    out = {
        key: laid(columns[key], pad_id if key == "input_ids" else -1 if key == "skill" else 0)
        for key in TOKEN_COLUMNS
    }
    out["attention_mask"] = laid(np.ones(len(tok_row)), 0)
    out["features"] = laid(columns["features"], -1, columns["features"].shape[1:])
    out["segment_ids"] = laid(np.repeat(ex_seg, lengths), 0)
    pad = out["attention_mask"] == 0
    out["segment_ids"][pad] = torch.from_numpy(counts).expand(L, B).T[pad]  # padding: its own
    out["position_ids"] = laid(np.arange(len(tok_row)) - np.repeat(ex_start, lengths), 0)
    out["example_skill"] = torch.full((B, K), -1, dtype=torch.long)
    out["example_skill"][torch.from_numpy(ex_row), torch.from_numpy(ex_seg)] = torch.from_numpy(
        np.asarray(example_skill, dtype=np.int64)
    )
    return out


def collate_packed(
    packs: Sequence[Sequence[dict]], pack_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Lay each pack's rows (suite rows, as `collate` takes them) end to end in a row
    of pack_length tokens, padded at the end; see the module docstring for the layout."""
    rows = [r for pack in packs for r in pack]
    F = len(rows[0]["features"][0])
    columns = {k: np.concatenate([np.asarray(r[k]) for r in rows]) for k in TOKEN_COLUMNS}
    columns["features"] = np.concatenate([np.asarray(r["features"]).reshape(-1, F) for r in rows])
    return pack_tokens(
        columns,
        np.array([len(r["input_ids"]) for r in rows]),
        np.array([int(r["example_skill"]) for r in rows]),
        [len(p) for p in packs],
        pack_length,
        pad_id,
    )


class PackedBatches(Dataset):
    """A map-style dataset whose items are whole packed batches: index it with what
    PackedBatchSampler yields (a list of arrays of example indices); one arrow read
    fetches every example of the batch, and numpy lays them out (no Python lists).
    Use with DataLoader(batch_size=None)."""

    def __init__(self, ds, pack_length: int, pad_id: int):
        self.ds, self.pack_length, self.pad_id = ds, pack_length, pad_id

    def __getitem__(self, packs: list[np.ndarray]) -> dict[str, torch.Tensor]:
        table = self.ds.with_format("arrow")[[int(i) for i in np.concatenate(packs)]]
        columns = {k: pc.list_flatten(table[k]).to_numpy() for k in TOKEN_COLUMNS}
        n_tokens = len(columns["input_ids"])
        features = pc.list_flatten(pc.list_flatten(table["features"])).to_numpy()
        columns["features"] = features.reshape(n_tokens, -1)
        return pack_tokens(
            columns,
            pc.list_value_length(table["input_ids"]).to_numpy().astype(np.int64),
            table["example_skill"].to_numpy(),
            [len(p) for p in packs],
            self.pack_length,
            self.pad_id,
        )
