"""The LightningDataModule over the skill suite (or a text corpus).

Training order is a pure function of (seed, sample position): every epoch is a fresh
permutation seeded by (seed, epoch), and the sampler starts wherever the restored
global step says. Resuming from a Lightning checkpoint therefore sees exactly the
batches the uninterrupted run would have seen, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from glassbox.training.data import DataConfig, SuiteData, build_datasets, collate
from glassbox.training.data.packing import (
    PackedBatches,
    PackedBatchSampler,
    epoch_order,
    example_lengths,
)


class ResumableSampler(Sampler[int]):
    """Endless, seeded, rank-sharded order over a dataset of n examples.

    The global stream position p = (micro_batch * world + rank) * batch_size + j maps
    to example perm_{p // n}[p % n] with perm_e a permutation seeded by seed + e.
    `start_batch` micro-batches (per rank) are skipped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start_batch: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        if n <= 0:
            raise ValueError("the training split is empty")
        self.n, self.bs, self.seed = n, batch_size, seed
        self.start_batch, self.rank, self.world = start_batch, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: epoch_order(self.n, self.seed, epoch)}
        return self._perms[epoch]

    def __iter__(self) -> Iterator[int]:
        m = self.start_batch
        while True:
            base = (m * self.world + self.rank) * self.bs
            for p in range(base, base + self.bs):
                yield int(self._perm(p // self.n)[p % self.n])
            m += 1


class SuiteDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, seed: int = 0, accumulate_grad_batches: int = 1):
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.accumulate = accumulate_grad_batches
        self.suite: SuiteData | None = None

    def prepare_data(self) -> None:
        build_datasets(self.cfg)  # generates and caches on disk once (rank 0)

    def setup(self, stage: str | None = None) -> None:
        if self.suite is None:
            self.suite = build_datasets(self.cfg)

    @property
    def val_split_names(self) -> list[str]:
        assert self.suite is not None
        return [s for s in ("val", "ood") if s in self.suite.splits]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the batch's tokens while it is still on the host ("n_tokens", an int
        the transfer leaves alone; training.callbacks.batch_tokens): counted on a GPU,
        each step would wait for the count."""
        if isinstance(batch, dict) and "attention_mask" in batch:
            batch["n_tokens"] = int(batch["attention_mask"].sum())
        return batch

    def _loader(self, ds, sampler=None) -> DataLoader:
        assert self.suite is not None
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=partial(collate, pad_id=self.suite.pad_id),
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.suite is not None
        ds = self.suite.splits["train"]
        if isinstance(ds, IterableDataset):
            return self._loader(ds)
        trainer = self.trainer
        step = trainer.global_step if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        if self.cfg.pack_length:
            return self._packed_loader(ds, step * self.accumulate, rank, world)
        sampler = ResumableSampler(
            len(ds),
            self.cfg.batch_size,
            self.seed,
            start_batch=step * self.accumulate,
            rank=rank,
            world=world,
        )
        return self._loader(ds, sampler)

    def _packed_loader(self, ds, start_batch: int, rank: int, world: int) -> DataLoader:
        """Batches of data.batch_size rows of data.pack_length tokens (packing.py); the
        sampler yields whole batches, so the loader does no batching of its own."""
        assert self.suite is not None
        sampler = PackedBatchSampler(
            example_lengths(ds),
            self.cfg.pack_length,
            self.cfg.batch_size,
            self.seed,
            start_batch=start_batch,
            rank=rank,
            world=world,
        )
        return DataLoader(
            PackedBatches(ds, self.cfg.pack_length, self.suite.pad_id),
            batch_size=None,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader]:
        assert self.suite is not None
        return [self._loader(self.suite.splits[s]) for s in self.val_split_names]

    def test_dataloader(self) -> DataLoader:
        assert self.suite is not None
        return self._loader(self.suite.splits["test"])
