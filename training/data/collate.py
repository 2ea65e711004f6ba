"""Batching: right-pad rows of the suite or of a text corpus into tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def collate(rows: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `rows` to the longest one.

    Returns input_ids (B, T) long (pad_id on padding), attention_mask (B, T) 1 on
    real tokens, loss_mask and answer_mask (B, T) 0 on padding, skill (B, T) -1 on
    padding, features (B, T, F) -1 on padding, example_skill (B,); domain (B, T) -1
    on padding when the rows have one (text corpora)."""
    lengths = [len(r["input_ids"]) for r in rows]
    B, T = len(rows), max(lengths)
    F = len(rows[0]["features"][0]) if lengths[0] else 0
    out = {
        "input_ids": torch.full((B, T), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(B, T, dtype=torch.long),
        "loss_mask": torch.zeros(B, T, dtype=torch.long),
        "answer_mask": torch.zeros(B, T, dtype=torch.long),
        "skill": torch.full((B, T), -1, dtype=torch.long),
        "features": torch.full((B, T, F), -1, dtype=torch.long),
    }
    keys = ["input_ids", "loss_mask", "answer_mask", "skill"]
    if "domain" in rows[0]:
        out["domain"] = torch.full((B, T), -1, dtype=torch.long)
        keys.append("domain")
    for i, (r, n) in enumerate(zip(rows, lengths)):
        for key in keys:
            out[key][i, :n] = torch.as_tensor(r[key])
        out["attention_mask"][i, :n] = 1
        if F:
            out["features"][i, :n] = torch.as_tensor(r["features"])
    out["example_skill"] = torch.as_tensor(
        [int(r["example_skill"]) for r in rows], dtype=torch.long
    )
    return out
