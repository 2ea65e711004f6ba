"""A traced prompt and its target: encoded and checked, each bad input one line
(archs.errors.ArgumentError)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from glassbox.archs.errors import ArgumentError


@dataclass(frozen=True)
class Target:
    """The traced logit: `id`'s, minus `alt_id`'s if given, at the last position."""

    id: int
    token: str
    alt_id: int | None
    alt_token: str | None
    logit: float  # the model's logit (difference)
    prob: float  # the model's probability of `id`

    @property
    def label(self) -> str:
        alt = f' - "{self.alt_token}"' if self.alt_token is not None else ""
        return f'"{self.token}"{alt}'


def _token_str(tok, i: int) -> str:
    return tok.id_to_token(i) if tok is not None else str(i)


def encode_prompt(model, prompt: str | Sequence[int]) -> tuple[Tensor, list[str]]:
    """(ids (T,) on the model's device, their tokens): text is encoded with the model's
    tokenizer with <bos> in front, as `glassbox generate` does; ids are taken as they
    are. ArgumentError for an empty prompt, words outside the vocabulary, or more
    tokens than the model's context."""
    tok = model.tokenizer
    if isinstance(prompt, str):
        if tok is None:
            raise ArgumentError("prompt", prompt, "the model has no tokenizer: pass token ids")
        ids = tok.encode(prompt).ids
        bos = tok.token_to_id("<bos>")
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        unk = tok.token_to_id("<unk>")
        if unk is not None and unk in ids:
            unknown = dict.fromkeys(w for w in prompt.split() if tok.token_to_id(w) is None)
            raise ArgumentError(
                "prompt", prompt, f"not in the vocabulary: {' '.join(unknown) or '<unk>'}"
            )
    else:
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < model.cfg.vocab_size]
        if bad:
            raise ArgumentError(
                "prompt", bad[:5], f"token ids must be in [0, {model.cfg.vocab_size})"
            )
    if not ids:
        raise ArgumentError("prompt", prompt, "is empty")
    if len(ids) > model.cfg.max_seq_len:
        raise ArgumentError(
            "prompt",
            f"{len(ids)} tokens",
            f"longer than the model's context (model.max_seq_len={model.cfg.max_seq_len})",
        )
    return torch.tensor(ids, device=model.device), [_token_str(tok, i) for i in ids]


def _token_id(model, token: str | int, name: str) -> int:
    """A target token's id; ArgumentError if it is not in the vocabulary."""
    tok = model.tokenizer
    if isinstance(token, int) or (isinstance(token, str) and token.isdigit() and tok is None):
        i = int(token)
        if not 0 <= i < model.cfg.vocab_size:
            raise ArgumentError(name, token, f"token ids are in [0, {model.cfg.vocab_size})")
        return i
    i = tok.token_to_id(token) if tok is not None else None
    if i is None:
        raise ArgumentError(name, token, "not a token of the model's vocabulary")
    return i


def resolve_target(
    model, logits: Tensor, target: str | int | None, alternative: str | int | None
) -> Target:
    """The Target from the last position's logits (vocab,): `target` (default: the top
    prediction), minus `alternative`'s logit if given."""
    tid = int(logits.argmax()) if target is None else _token_id(model, target, "target")
    alt = None if alternative is None else _token_id(model, alternative, "alternative")
    if alt == tid:
        raise ArgumentError("alternative", alternative, "must differ from the target")
    value = logits[tid] - (logits[alt] if alt is not None else 0)
    prob = logits.float().softmax(-1)[tid]
    tok = model.tokenizer
    return Target(
        id=tid,
        token=_token_str(tok, tid),
        alt_id=alt,
        alt_token=None if alt is None else _token_str(tok, alt),
        logit=float(value),
        prob=float(prob),
    )
