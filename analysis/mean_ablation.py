"""The answer loss of one skill with readable units mean-ablated, the measurement
every circuit search of analysis.circuits and analysis.microcircuits is made of: the
units (each layer's heads and the groups its FFN kind lists, `FFN.unit_groups` in
archs/units.py), their means, a skill's examples (`SkillData`), the loss under
stacked keep-masks (`keep_losses`) and every unit's attribution to it
(`attribution_scores`, the ranking of analysis.circuits).

    groups = unit_groups(model)                      # heads, then each FFN's units
    means = unit_means(model, batches, groups)       # {group name: its means}
    sd = skill_data(batches, skill_id)               # the skill's answer tokens
    keep_losses(model, sd, groups, means, keep)      # (R,) loss per keep-mask (R, total)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from glassbox.analysis.activations import collect_activations
from glassbox.archs.units import HookUnits, UnitGroup, eval_mode, head_units

Hook = tuple[str, Callable[[Tensor, Any], Tensor | None]]


# --------------------------------------------------------------------- unit groups


def unit_groups(
    model, include_heads: bool = True, include_ffn: bool = True, level: int = 0
) -> list[UnitGroup]:
    """The readable units of every layer, in forward order: its heads
    (archs.units.head_units), then the group its FFN kind lists at `level` of
    `FFN.unit_groups` (0: its finest units, neurons, latents, a MoE's experts' hidden
    units; 1: the next coarser where a kind has one, a MoE's whole experts; a kind
    with fewer levels gives its coarsest)."""
    if level < 0:
        raise ValueError(f"unit_groups: level={level}: 0 (the finest units) or more")
    groups: list[UnitGroup] = []
    for i, block in enumerate(model.blocks):
        if include_heads:
            groups.append(head_units(model, i))
        if include_ffn:
            own = block.mlp.unit_groups(i)
            groups.append(own[min(level, len(own) - 1)])
    return groups


def unit_means(model, batches, groups: Sequence[UnitGroup]) -> dict[str, Tensor]:
    """{group name: its means}: (n_units,) for neurons and latents, (H, d_head) for
    heads, (E, d_model) for experts, (E * d_expert,) for experts' hidden units.
    Hook-point groups read their means off one activation pass (analysis.activations,
    shared with every other reader of a Sample); the others compute their own."""
    batches = batches if isinstance(batches, Sequence) else list(batches)
    with eval_mode(model):
        hooked = [g for g in groups if isinstance(g, HookUnits) and type(g).mean is HookUnits.mean]
        out: dict[str, Tensor] = {}
        if hooked:
            col = collect_activations(model, batches, [g.hook for g in hooked])
            out.update({g.name: col.acts[g.hook].mean(0).to(model.device) for g in hooked})
        for g in groups:
            if g.name not in out:
                out[g.name] = g.mean(model, batches)
    return out


# --------------------------------------------------------------------- skill data


@dataclass
class SkillData:
    """The examples of one skill: input_ids (N, T) right-padded, cut after the last
    answer token; targets (N, T - 1) bool, True where input_ids[:, t + 1] is an
    answer token of the skill (predicted from position t)."""

    input_ids: Tensor
    targets: Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.targets.sum())


def answer_tokens(batch: Mapping[str, Tensor], mask_key: str) -> Tensor:
    """(B, T) bool: the answer tokens (mask_key, else loss_mask)."""
    return (batch[mask_key] if mask_key in batch else batch["loss_mask"]).bool()


def skill_data(
    batches: Iterable[Mapping[str, Tensor]],
    skill_id: int,
    mask_key: str = "answer_mask",
    pad_id: int = 0,
    device=None,
    label_key: str = "skill",
) -> SkillData | None:
    """The rows of `batches` (training.data.collate's format) with at least one
    answer token of skill `skill_id` (mask_key and skill == skill_id), padded to one
    length. None when there is none. label_key: the per-token label column read in
    place of `skill` (a text corpus's `domain`; with mask_key="loss_mask" the
    behaviour is the next-token loss on that domain's tokens)."""
    ids_list, tgt_list = [], []
    for b in batches:
        tgt = answer_tokens(b, mask_key)[:, 1:] & (b[label_key][:, 1:] == skill_id)
        rows = tgt.any(1)
        if bool(rows.any()):
            ids_list.append(b["input_ids"][rows])
            tgt_list.append(tgt[rows])
    if not ids_list:
        return None
    T = max(x.shape[1] for x in ids_list)
    N = sum(x.shape[0] for x in ids_list)
    ids = torch.full((N, T), pad_id, dtype=torch.long)
    tgt = torch.zeros(N, T - 1, dtype=torch.bool)
    r = 0
    for x, t in zip(ids_list, tgt_list):
        ids[r : r + len(x), : x.shape[1]] = x
        tgt[r : r + len(x), : t.shape[1]] = t
        r += len(x)
    last = int(tgt.any(0).nonzero().max())  # last target column: token last + 1
    ids, tgt = ids[:, : last + 2], tgt[:, : last + 1]
    if device is not None:
        ids, tgt = ids.to(device), tgt.to(device)
    return SkillData(ids, tgt)


# ------------------------------------------------------------------ evaluation


def split_by_group(flat: Tensor, groups: Sequence[UnitGroup]) -> dict[str, Tensor]:
    """(R, total) -> {group name: (R, n_units)}."""
    parts = flat.split([g.n_units for g in groups], dim=-1)
    return {g.name: p for g, p in zip(groups, parts)}


def _chunk_nll(model, sd: SkillData, rows: slice, hooks: list[Hook], copies: int) -> Tensor:
    """Summed answer NLL of each of `copies` stacked copies of sd's `rows`: (copies,)."""
    ids = sd.input_ids[rows].repeat(copies, 1)
    tgt = sd.targets[rows].repeat(copies, 1)
    with model.hooks(hooks):
        logits = model(ids)  # (copies * n, T, V)
    sel = logits[:, :-1][tgt]  # (M, V)
    nll = F.cross_entropy(sel.float(), ids[:, 1:][tgt], reduction="none")
    n = ids.shape[0] // copies
    copy = torch.arange(copies, device=ids.device).repeat_interleave(n)[:, None].expand_as(tgt)
    return torch.zeros(copies, dtype=torch.float64, device=ids.device).index_add_(
        0, copy[tgt], nll.double()
    )


def _row_chunks(n: int, max_rows: int) -> list[slice]:
    step = max(1, min(n, max_rows))
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]


@torch.no_grad()
def keep_losses(
    model,
    sd: SkillData,
    groups: Sequence[UnitGroup],
    means: Mapping[str, Tensor],
    keep: Tensor,
    max_rows: int = 1024,
) -> Tensor:
    """The skill's answer loss under each keep-mask. keep: (R, total) bool over the
    units of `groups` in order; returns (R,) float64. Copies of the batch are stacked
    into forwards of at most `max_rows` rows (the model treats rows independently)."""
    R = keep.shape[0]
    sums = torch.zeros(R, dtype=torch.float64, device=sd.input_ids.device)
    for rows in _row_chunks(sd.input_ids.shape[0], max_rows):
        n = rows.stop - rows.start
        per = max(1, max_rows // n)
        for r0 in range(0, R, per):
            r1 = min(R, r0 + per)
            parts = split_by_group(keep[r0:r1], groups)
            hooks = []
            for g in groups:
                hooks += g.hooks(means[g.name], parts[g.name].repeat_interleave(n, 0))
            sums[r0:r1] += _chunk_nll(model, sd, rows, hooks, r1 - r0)
    return sums / max(sd.n_tokens, 1)


def attribution_scores(
    model,
    sd: SkillData,
    groups: Sequence[UnitGroup],
    means: Mapping[str, Tensor],
    attribution: str = "both",
    max_rows: int = 1024,
) -> Tensor:
    """(total,) signed attribution of every unit to the skill's answer loss: -dL/dm
    for the unit's keep-mask m (= grad . (clean - mean) summed over positions),
    at m = 1 ("clean"), m = 0 ("ablated"), or their mean ("both"). Positive: keeping
    the unit lowers the loss."""
    points = {"clean": [1.0], "ablated": [0.0], "both": [1.0, 0.0]}
    if attribution not in points:
        raise ValueError(f"attribution={attribution!r}: one of {', '.join(points)}")
    total = sum(g.n_units for g in groups)
    score = torch.zeros(total, dtype=torch.float64, device=sd.input_ids.device)
    for alpha in points[attribution]:
        masks = [
            torch.full((1, g.n_units), alpha, device=sd.input_ids.device, requires_grad=True)
            for g in groups
        ]
        for rows in _row_chunks(sd.input_ids.shape[0], max_rows):
            hooks = []
            for g, m in zip(groups, masks):
                hooks += g.hooks(means[g.name], m)
            with torch.enable_grad():
                loss = _chunk_nll(model, sd, rows, hooks, 1).sum() / max(sd.n_tokens, 1)
                grads = torch.autograd.grad(loss, masks, allow_unused=True)
            flat = torch.cat(
                [
                    (gr if gr is not None else torch.zeros_like(m)).reshape(-1)
                    for gr, m in zip(grads, masks)
                ]
            )
            score -= flat.double() / len(points[attribution])
    return score


__all__ = [
    "SkillData",
    "answer_tokens",
    "attribution_scores",
    "keep_losses",
    "skill_data",
    "split_by_group",
    "unit_groups",
    "unit_means",
]
