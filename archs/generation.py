"""Batched generation with a KV cache: greedy, temperature and top-k sampling, stop
tokens, and forced tokens.

Every sequence in the batch advances one token per step, so a batch stays in lock
step even when a sequence must take tokens it did not sample: a `TokenForcer` (the
tool-calling runtime is one) looks at each sequence after each token and may queue
tokens that are written next instead of sampled ones, one per step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from glassbox.archs.errors import ArgumentError
from glassbox.archs.kv_cache import KVCache


class TokenForcer(Protocol):
    def after_token(self, seq: int, tokens: list[int]) -> list[int]:
        """Called after sequence `seq` got a new token; `tokens` is its whole
        continuation so far (prompt excluded). Returns tokens to force next."""
        ...


@dataclass
class GenerationOutput:
    tokens: Tensor  # (B, T_prompt + n_steps): left-padded prompts, then continuations
    continuations: list[list[int]]  # new tokens of each sequence, up to and with its stop token
    finished: list[bool]  # whether each sequence hit a stop token
    forced: list[list[bool]] = field(default_factory=list)  # per new token: forced, not sampled


def _pad_prompts(prompts, pad_id: int, device) -> tuple[Tensor, Tensor]:
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        return prompts.to(device), torch.ones_like(prompts, device=device)
    prompts = [list(p) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ArgumentError("prompts", prompts[:4], "every prompt needs at least one token")
    T = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, T - len(p) :] = torch.tensor(p)
        mask[i, T - len(p) :] = 1
    return tokens.to(device), mask.to(device)


def check_sampling_args(max_new_tokens, temperature, top_k) -> None:
    """ArgumentError (one line) unless max_new_tokens is a positive integer,
    temperature a finite number >= 0 and top_k None or an integer >= 1."""
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ArgumentError("max_new_tokens", max_new_tokens, "must be an integer >= 1")
    if (
        not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ArgumentError("temperature", temperature, "must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ArgumentError("top_k", top_k, "must be an integer >= 1 (or None: all tokens)")


def check_prompt_fits(prompt_len: int, max_new_tokens: int, max_seq_len: int) -> None:
    """ArgumentError saying by how much a prompt of prompt_len tokens plus
    max_new_tokens overruns the model's context of max_seq_len positions."""
    if prompt_len >= max_seq_len:
        over = prompt_len - max_seq_len + 1
        raise ArgumentError(
            "prompt",
            f"{prompt_len} tokens",
            f"{over} token{'s' * (over > 1)} too long: the model's context "
            f"(model.max_seq_len={max_seq_len}) must leave room for one new token",
        )
    total = prompt_len + max_new_tokens
    if total > max_seq_len:
        raise ArgumentError(
            "max_new_tokens",
            max_new_tokens,
            f"prompt ({prompt_len}) + max_new_tokens = {total} is {total - max_seq_len} over "
            f"the model's context (model.max_seq_len={max_seq_len}); at most "
            f"{max_seq_len - prompt_len} fit",
        )


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def sample_next(logits: Tensor, temperature: float, top_k: int | None, generator) -> Tensor:
    """logits (B, vocab) -> token ids (B,). temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_token_ids(tokens: Tensor, vocab_size: int) -> None:
    """ArgumentError naming a prompt token id outside 0..vocab_size - 1."""
    if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < vocab_size:
        bad = int(tokens.max()) if int(tokens.max()) >= vocab_size else int(tokens.min())
        raise ArgumentError(
            "prompt token id", bad, f"must be in 0..{vocab_size - 1} (model.vocab_size)"
        )


def _take_step(
    nxt: Tensor,
    pad_id: int,
    stop: set[int],
    forcer: TokenForcer | None,
    conts: list[list[int]],
    forced_flags: list[list[bool]],
    queues: list[list[int]],
    done: list[bool],
) -> None:
    """One step's token per sequence, in place: nxt (B,) becomes the pad id where a
    sequence has stopped and the forcer's queued token where it has one; each token
    is appended to its continuation, a sampled stop token ends its sequence, and the
    forcer's tokens after it are queued."""
    for b in range(len(done)):
        if done[b]:
            nxt[b] = pad_id
            continue
        was_forced = bool(queues[b])
        if was_forced:
            nxt[b] = queues[b].pop(0)
        tok = int(nxt[b])
        conts[b].append(tok)
        forced_flags[b].append(was_forced)
        if tok in stop and not was_forced:
            done[b] = True
        elif forcer is not None:
            queues[b].extend(forcer.after_token(b, conts[b]))


@torch.no_grad()
def generate(
    model,
    prompts: Tensor | list[list[int]],
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    stop_tokens: tuple[int, ...] | list[int] = (),
    forcer: TokenForcer | None = None,
    seed: int | None = None,
) -> GenerationOutput:
    """Continue each prompt by up to max_new_tokens tokens.

    prompts: a (B, T) tensor of equal-length prompts, or a list of token lists
    (left-padded here with model.cfg.pad_token_id). A sequence stops at its first
    stop token; the loop ends when all have stopped or max_new_tokens is reached.
    Arguments are checked first: max_new_tokens >= 1, temperature finite and >= 0,
    top_k None or >= 1, token ids in the vocabulary, prompt + max_new_tokens within
    model.max_seq_len (ArgumentError, one line, saying by how much).
    """
    check_sampling_args(max_new_tokens, temperature, top_k)
    device = model.device
    tokens, mask = _pad_prompts(prompts, model.cfg.pad_token_id, device)
    B, T0 = tokens.shape
    check_prompt_fits(T0, max_new_tokens, model.cfg.max_seq_len)
    _check_token_ids(tokens, model.cfg.vocab_size)
    total = T0 + max_new_tokens
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    cache = KVCache.empty(model.cfg, B, total, device, dtype)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stop = set(stop_tokens)
    conts: list[list[int]] = [[] for _ in range(B)]
    forced_flags: list[list[bool]] = [[] for _ in range(B)]
    queues: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    full_mask = torch.cat([mask, torch.ones(B, max_new_tokens, dtype=mask.dtype, device=device)], 1)
    out = [tokens]
    step_input = tokens
    try:
        for step in range(max_new_tokens):
            S = T0 + step
            logits = model(step_input, attention_mask=full_mask[:, :S], cache=cache)[:, -1]
            nxt = sample_next(logits, temperature, top_k, generator)
            _take_step(nxt, model.cfg.pad_token_id, stop, forcer, conts, forced_flags, queues, done)
            out.append(nxt[:, None])
            step_input = nxt[:, None]
            if all(done):
                break
    finally:
        model.train(was_training)
    return GenerationOutput(torch.cat(out, dim=1), conts, done, forced_flags)
