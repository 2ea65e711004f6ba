"""Token batches as the analysis reads them.

A batch is either a dict as training.data.collate makes it (input_ids,
attention_mask, loss_mask, answer_mask: (B, T); skill (B, T); features (B, T, F))
or a plain id tensor, (B, T) or (T,). These helpers give every analysis the same
answer to "which ids, which tokens are real, which are scored".
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from glassbox.training.data import SuiteData, collate


def token_batch(batch, device=None) -> tuple[Tensor, Tensor | None]:
    """(input_ids (B, T), attention_mask (B, T) or None) of a dict batch or an id
    tensor (a (T,) tensor becomes (1, T)); moved to `device` when given."""
    if isinstance(batch, Tensor):
        ids, att = (batch if batch.dim() == 2 else batch[None]), None
    else:
        ids, att = batch["input_ids"], batch.get("attention_mask")
    if device is not None:
        ids = ids.to(device)
        att = None if att is None else att.to(device)
    return ids, att


def scoring_mask(batch) -> Tensor | None:
    """(B, T) the tokens a loss is scored on: loss_mask, else attention_mask, else
    None (every token; an id tensor)."""
    if isinstance(batch, Tensor):
        return None
    return batch.get("loss_mask", batch.get("attention_mask"))


def real_tokens(ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, T) bool: the tokens that are not padding (all of them without a mask)."""
    if attention_mask is None:
        return torch.ones_like(ids, dtype=torch.bool)
    return attention_mask.bool()


def count_real_tokens(batches: Iterable) -> int:
    """Number of real (non-padding) tokens over the batches."""
    total = 0
    for batch in batches:
        ids, att = token_batch(batch)
        total += int(att.sum()) if att is not None else ids.numel()
    return total


def to_device(batch: Mapping[str, Tensor], device) -> dict[str, Tensor]:
    """A dict batch with every tensor moved to `device`."""
    return {k: v.to(device) for k, v in batch.items()}


class Sample(list):
    """A list of collated batches that remembers, per model (weakly), the activations
    collected over it (analysis.activations: one pass per model and sample)."""

    def __init__(self, batches: Iterable = ()) -> None:
        super().__init__(batches)
        self.collected: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sample_indices(
    suite: SuiteData, split: str, n_examples: int, seed: int = 0, keep=None
) -> list[int]:
    """The one sampler of the analysis: n_examples row indices of a split, sorted, drawn
    by one seeded shuffle of the whole split, so that every section of one analysis
    (coverage, circuits, mechanistic...) with the same seed reads the same examples
    (a smaller sample is the start of a larger one). keep(example_skill) filters rows
    by skill after the shuffle.

    On a text corpus (rows with a `domain` column) the sample is stratified: rows are
    drawn from the domains in turn (each row counted for the domain most of its tokens
    belong to), so that every domain with held-out rows is in a sample of at least as
    many rows as there are domains."""
    ds = suite.splits[split]
    idx = list(range(len(ds)))
    random.Random(seed).shuffle(idx)
    if keep is not None:
        skills = ds["example_skill"][:]  # a list: datasets 5's lazy Column reads a row per index
        idx = [i for i in idx if keep(int(skills[i]))]
    if suite.domain_names and "domain" in ds.column_names and n_examples < len(idx):
        idx = _round_robin(idx, ds["domain"])
    return sorted(idx[:n_examples])


def suite_batches(
    suite: SuiteData, split: str, n_examples: int, batch_size: int = 64, seed: int = 0, device=None
) -> list[dict[str, Tensor]]:
    """The rows of `sample_indices`, collated into batches (on `device` if given): a
    `Sample`, so that the sections reading it share one activation pass per model."""
    ds = suite.splits[split]
    rows = [ds[i] for i in sample_indices(suite, split, n_examples, seed)]
    batches = [
        collate(rows[i : i + batch_size], suite.pad_id) for i in range(0, len(rows), batch_size)
    ]
    if device is not None:
        batches = [to_device(b, device) for b in batches]
    return Sample(batches)


def _round_robin(order: list[int], domains: list[list[int]]) -> list[int]:
    """order, re-ordered to take one row of each domain in turn (a row's domain: the
    most common id of its tokens, -1 ignored); the order within a domain is kept."""
    by_domain: dict[int, list[int]] = {}
    for i in order:
        ids = [d for d in domains[i] if d >= 0]
        by_domain.setdefault(max(set(ids), key=ids.count) if ids else -1, []).append(i)
    queues = [by_domain[d] for d in sorted(by_domain)]
    out: list[int] = []
    for k in range(max(len(q) for q in queues)):
        out += [q[k] for q in queues if k < len(q)]
    return out


__all__ = [
    "count_real_tokens",
    "real_tokens",
    "scoring_mask",
    "Sample",
    "sample_indices",
    "suite_batches",
    "to_device",
    "token_batch",
]
