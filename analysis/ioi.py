"""Indirect object identification (Wang et al. 2022): the logit difference and
the heads that carry it.

    When Bako and Tezun went to the park , Tezun gave a book to  -> Bako

logit difference = logit[IO] - logit[S] at the position that predicts the
answer (the final "to"). Which heads matter is measured by activation patching
of each head's output (`attn.hook_z`, path-free: the head's output at every
position, with everything downstream recomputed) from the clean prompt into a
corrupted one, scored by the clean prompt's logit difference and normalised
(patched - corrupted) / (clean - corrupted).

Corruptions (`corrupt_ioi`):
- "abc": both names (every mention) replaced by two other names, the same new
  name for the same old one (Wang et al.'s ABC distribution): the sentence
  keeps its structure but says nothing about IO and S.
- "s2_io": the second subject mention replaced by the IO's name, so the other
  name becomes the answer: the logit difference flips sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from glassbox.analysis.patching import Metric, PatchingResult, patch_heads, plot_patching


def logit_diff(
    logits: Tensor,  # (B, T, V)
    io_ids: Tensor,  # (B,) indirect object token
    s_ids: Tensor,  # (B,) subject token
    pos: Tensor | int = -1,  # (B,) or one position predicting the answer
) -> Tensor:  # (B,)
    """logit[IO] - logit[S] at `pos` for every example."""
    B = logits.shape[0]
    rows = torch.arange(B, device=logits.device)
    pos = torch.as_tensor(pos, device=logits.device).expand(B)
    at = logits[rows, pos].float()  # (B, V)
    return at[rows, io_ids.to(logits.device)] - at[rows, s_ids.to(logits.device)]


def logit_diff_metric(io_ids: Tensor, s_ids: Tensor, pos: Tensor | int = -1) -> Metric:
    """metric(logits) = mean logit difference over the batch (for patching)."""
    return lambda logits: logit_diff(logits, io_ids, s_ids, pos).mean()


@torch.no_grad()
def ioi_logit_diff(
    model,
    tokens: Tensor,  # (B, T)
    io_ids: Tensor,
    s_ids: Tensor,
    pos: Tensor | int = -1,
    attention_mask: Tensor | None = None,
) -> Tensor:  # (B,)
    """The model's logit difference on each prompt."""
    return logit_diff(model(tokens, attention_mask=attention_mask), io_ids, s_ids, pos)


def corrupt_ioi(
    tokens: Tensor,  # (B, T)
    io_ids: Tensor,  # (B,)
    s_ids: Tensor,  # (B,)
    mode: str = "abc",
    name_ids: Sequence[int] | Tensor | None = None,  # pool of name tokens ("abc")
    s2_pos: Tensor | None = None,  # (B,) second subject mention ("s2_io")
    seed: int = 0,
) -> Tensor:
    """A corrupted copy of IOI prompts (see the module docstring). Only tokens
    equal to the IO or S token of their row change."""
    out = tokens.clone()
    rows = torch.arange(len(tokens))
    if mode == "s2_io":
        if s2_pos is None:
            raise ValueError("corrupt_ioi(mode='s2_io') needs s2_pos")
        if not (tokens[rows, s2_pos] == s_ids).all():
            raise ValueError("s2_pos does not point at the subject token in every row")
        out[rows, s2_pos] = io_ids.to(out.dtype)
        return out
    if mode != "abc":
        raise ValueError(f"mode={mode!r}: one of abc, s2_io")
    if name_ids is None:
        raise ValueError("corrupt_ioi(mode='abc') needs name_ids, the pool of name tokens")
    pool = torch.as_tensor(name_ids, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for b in range(len(tokens)):
        others = pool[(pool != io_ids[b]) & (pool != s_ids[b])]
        if len(others) < 2:
            raise ValueError("the name pool needs two names besides IO and S")
        c, d = others[torch.randperm(len(others), generator=g)[:2]]
        out[b][tokens[b] == io_ids[b]] = c
        out[b][tokens[b] == s_ids[b]] = d
    return out


def ioi_head_patching(
    model,
    clean_tokens: Tensor,  # (B, T)
    corrupted_tokens: Tensor,  # (B, T)
    io_ids: Tensor,  # (B,) of the clean prompts
    s_ids: Tensor,  # (B,)
    pos: Tensor | int = -1,  # (B,) position predicting the answer
    by_position: bool = False,
    attention_mask: Tensor | None = None,
) -> PatchingResult:
    """Patch each head's hook_z from clean into corrupted, scored by the clean
    prompt's logit difference: scores (n_layers, n_heads), or (n_layers, n_heads,
    n_pos) with by_position. result.clean / .corrupted are the mean logit
    differences of the two runs."""
    metric = logit_diff_metric(io_ids, s_ids, pos)
    return patch_heads(
        model,
        clean_tokens,
        corrupted_tokens,
        metric,
        by_position=by_position,
        attention_mask=attention_mask,
    )


def plot_ioi_heads(
    result: PatchingResult, path: str | Path | None = None, title: str | None = None
) -> Figure:
    """Heat map of the per-head patching result (layers x heads)."""
    title = title or (
        f"IOI: head patching (logit diff clean {result.clean:.2f}, corrupted {result.corrupted:.2f})"
    )
    return plot_patching(result, title=title, path=path)
