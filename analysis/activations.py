"""One activation pass per model and sample: the activations at hook points over the
real tokens of a sample of batches, collected once and shared by every section that
reads them (coverage, the audited scores, routing, modularity, circuit means).

    sample = suite_batches(suite, "val", 512)          # a Sample (a list of batches)
    prefetch(model, sample, names)                     # one forward pass for all of them
    col = collect_activations(model, sample, ["blocks.0.mlp.hook_post"])  # no new pass

A `Sample` remembers, per model (weakly), what was collected over it; a request for
hooks it holds is answered from memory, one for other hooks runs one pass for those
(`prefetch` names every hook an analysis will read up front, so that one pass does). It assumes the model does not change while the sample is alive (an analysis
holds its samples for one model and one call); with hooks active on the model (an
ablation in progress) nothing is remembered. A plain list of batches is read afresh
each time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from glassbox.analysis.batches import Sample, real_tokens, token_batch

# per-token columns of a collated batch kept beside the activations (when present)
COLUMNS = ("skill", "domain", "answer_mask", "loss_mask")


@dataclass
class Collected:
    """Activations at hook points over the real tokens of a set of batches.

    acts[name]: (N, units) float32, one row per real token; where (N, 2): the
    (sequence, position) of each row in `sequences` (each a (T,) id tensor, as in
    its batch, padding included); features (N, F) and skill (N,) when the batches
    carry them (-1: not applicable); columns: the batches' other per-token columns
    (COLUMNS), (N,) each."""

    acts: dict[str, Tensor]
    where: Tensor
    sequences: list[Tensor]
    features: Tensor | None = None
    skill: Tensor | None = None
    columns: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return self.where.shape[0]

    @property
    def token_ids(self) -> Tensor:
        """(N,) the token id of each row."""
        if not self.sequences:
            return torch.empty(0, dtype=torch.long)
        ids = torch.nn.utils.rnn.pad_sequence(self.sequences, batch_first=True)
        return ids[self.where[:, 0], self.where[:, 1]]

    def select(self, names: Sequence[str], max_tokens: int | None = None) -> Collected:
        """The same rows with only the hooks `names`, cut after max_tokens rows."""
        cut = slice(0, max_tokens)
        return replace(
            self,
            acts={n: self.acts[n][cut] for n in names},
            where=self.where[cut],
            features=None if self.features is None else self.features[cut],
            skill=None if self.skill is None else self.skill[cut],
            columns={k: v[cut] for k, v in self.columns.items()},
        )


def _hooked(model) -> bool:
    """Whether any hook point of the model has a hook on it (an intervention)."""
    return any(getattr(hp, "has_hooks", False) for hp in getattr(model, "hook_dict", {}).values())


def prefetch(model, batches, names: Sequence[str]) -> None:
    """Collect `names` (with whatever the sample holds already) in one pass, so that
    the sections that follow read them from memory. A no-op on a plain list."""
    if isinstance(batches, Sample) and not _hooked(model):
        held = batches.collected.get(model)
        missing = [n for n in dict.fromkeys(names) if held is None or n not in held.acts]
        if held is None:
            batches.collected[model] = _collect(model, batches, missing, None)
        elif missing:  # the same batches give the same rows: the new hooks join the held
            held.acts.update(_collect(model, batches, missing, None).acts)


@torch.no_grad()
def collect_activations(
    model, batches: Iterable, names: Sequence[str], max_tokens: int | None = None
) -> Collected:
    """Run `model` over `batches` (dicts with input_ids, attention_mask, features,
    skill, as training.data.collate makes them; or id tensors) and keep the
    activations at hook points `names` (each (B, T, units)) on the real tokens,
    on the CPU, up to `max_tokens` tokens. A `Sample` answers from memory."""
    if isinstance(batches, Sample) and not _hooked(model):
        prefetch(model, batches, names)
        return batches.collected[model].select(names, max_tokens)
    return _collect(model, batches, names, max_tokens)


@torch.no_grad()
def _collect(model, batches: Iterable, names: Sequence[str], max_tokens: int | None) -> Collected:
    was_training = model.training
    model.eval()
    acts: dict[str, list[Tensor]] = {n: [] for n in names}
    where, seqs, feats, cols = [], [], [], {}
    n = 0
    try:
        for batch in batches:
            ids, att = token_batch(batch)
            _, cache = model.run_with_cache(ids, attention_mask=att, names_filter=list(names))
            m = real_tokens(ids, att)
            for name in names:
                acts[name].append(cache[name][m].float().cpu())
            s, p = m.nonzero(as_tuple=True)
            where.append(torch.stack([s.cpu() + len(seqs), p.cpu()], 1))
            seqs.extend(ids.cpu().unbind(0))
            if isinstance(batch, dict):
                if "features" in batch:
                    feats.append(batch["features"][m.to(batch["features"].device)].cpu())
                for k in COLUMNS:
                    if k in batch:
                        cols.setdefault(k, []).append(batch[k][m.to(batch[k].device)].cpu())
            n += int(m.sum())
            if max_tokens is not None and n >= max_tokens:
                break
    finally:
        model.train(was_training)
    cut = slice(0, max_tokens)
    columns = {k: torch.cat(v)[cut] for k, v in cols.items()}
    return Collected(
        acts={k: torch.cat(v)[cut] for k, v in acts.items()},
        where=torch.cat(where)[cut],
        sequences=seqs,
        features=torch.cat(feats)[cut] if feats else None,
        skill=columns.get("skill"),
        columns=columns,
    )
