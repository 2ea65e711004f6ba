"""Attention-head scores (TransformerLens / Anthropic definitions), (n_layers, n_heads).

previous-token score: mean attention from position t to t-1 (over t >= 1).

induction score: on sequences [bos, r, r] (r: seq_len random tokens, repeated),
    mean attention from each token of the second copy of r to the token right
    after that token's earlier occurrence, i.e. from position q to q - seq_len + 1,
    over the seq_len queries of the second copy (Olsson et al. 2022; the
    TransformerLens / ARENA "induction stripe", restricted to the second half).

copying score: read off the head's full OV circuit, token to logit,
    OV_h = W_U diag(ln_final.w) W_O^h W_V^h diag(ln1.w) rmsnorm(W_E)
    (rows: the attended token, columns: the output logit; the RMSNorms are
    folded in as their weights, the input's norm exactly, the output's 1/rms
    dropped since a positive scale per position changes no ranking).
    method="eigen" (default): sum(lambda) / sum(|lambda|) over the eigenvalues
        of OV_h (Elhage et al. 2021, "positive eigenvalue" copying score): 1
        for a head that raises the logit of whatever it attends to, -1 for one
        that suppresses it, ~0 for neither. Computed exactly from the
        d_head x d_head matrix that shares OV_h's non-zero eigenvalues.
    method="direct": the share of tokens whose own logit is the largest in
        their row of OV_h (ARENA's "full OV circuit" test).

All three only need `attn.hook_pattern` and the attention weights, so they work
for every FFN kind.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from glassbox.analysis.plots import heatmap


def previous_token_score_from_pattern(
    pattern: Tensor,  # (B, H, T, T)
    query_mask: Tensor | None = None,  # (B, T) bool: queries t that count (t >= 1 always)
) -> Tensor:
    """Mean attention from t to t-1 over examples and positions t >= 1: (H,)."""
    B, H, T, _ = pattern.shape
    stripe = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # (B, H, T-1): [t, t-1], t = 1..T-1
    keep = torch.ones(B, T - 1, dtype=torch.bool, device=pattern.device)
    if query_mask is not None:
        keep = query_mask[:, 1:].bool() & query_mask[:, :-1].bool()
    w = keep[:, None].to(stripe.dtype)
    return (stripe * w).sum((0, 2)) / (w.sum((0, 2)) * 1.0).clamp(min=1)


def induction_score_from_pattern(pattern: Tensor, seq_len: int, prefix: int = 1) -> Tensor:
    """Induction score of each head from patterns on [prefix tokens, r, r]: (H,).

    pattern (B, H, T, T) with T = prefix + 2 * seq_len. The query at position
    q = prefix + seq_len + i (the i-th token of the second copy) should attend
    to q - seq_len + 1 (the token after the first copy's i-th token)."""
    T = pattern.shape[-1]
    if T != prefix + 2 * seq_len:
        raise ValueError(
            f"pattern has {T} positions, expected prefix + 2 * seq_len = {prefix + 2 * seq_len}"
        )
    stripe = pattern.diagonal(offset=1 - seq_len, dim1=-2, dim2=-1)  # [q, q - seq_len + 1]
    # stripe index j holds query q = seq_len - 1 + j; keep q >= prefix + seq_len
    first = prefix + 1
    return stripe[..., first : first + seq_len].mean(dim=(0, 2))


def _patterns(model, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Attention patterns of every layer: (n_layers, B, H, T, T)."""
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=attention_mask, names_filter=names)
    return torch.stack([cache[n].float() for n in names])


def previous_token_scores(
    model, tokens: Tensor, attention_mask: Tensor | None = None
) -> Tensor:  # (n_layers, n_heads)
    """Previous-token score of every head on `tokens` (B, T)."""
    pats = _patterns(model, tokens, attention_mask)
    return torch.stack([previous_token_score_from_pattern(p, attention_mask) for p in pats])


def repeated_random_tokens(
    n_seqs: int,
    seq_len: int,
    vocab_range: tuple[int, int],
    bos_token_id: int | None = 1,
    seed: int = 0,
) -> Tensor:
    """[bos, r, r] with r uniform over vocab_range [lo, hi): (n_seqs, 1 + 2 seq_len),
    or [r, r] when bos_token_id is None."""
    lo, hi = vocab_range
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(lo, hi, (n_seqs, seq_len), generator=g)
    parts = [r, r]
    if bos_token_id is not None:
        parts.insert(0, torch.full((n_seqs, 1), bos_token_id, dtype=torch.long))
    return torch.cat(parts, dim=1)


def _default_vocab_range(model, vocab_range) -> tuple[int, int]:
    V = model.cfg.vocab_size
    if vocab_range is not None:
        return vocab_range
    # glassbox tokenizers keep ids 0..7 for special tokens; skip them when there is room
    return (8, V) if V > 16 else (0, V)


def induction_scores(
    model,
    seq_len: int | None = None,
    n_seqs: int = 16,
    bos_token_id: int | None = 1,
    vocab_range: tuple[int, int] | None = None,
    seed: int = 0,
) -> Tensor:  # (n_layers, n_heads)
    """Induction score of every head on n_seqs random repeated sequences.

    seq_len defaults to the most that fits model.max_seq_len, at most 50;
    vocab_range [lo, hi) defaults to every id past the 8 special tokens."""
    prefix = 0 if bos_token_id is None else 1
    if seq_len is None:
        seq_len = min(50, (model.cfg.max_seq_len - prefix) // 2)
    if prefix + 2 * seq_len > model.cfg.max_seq_len:
        raise ValueError(
            f"seq_len={seq_len}: 2 * seq_len + {prefix} exceeds model.max_seq_len={model.cfg.max_seq_len}"
        )
    tokens = repeated_random_tokens(
        n_seqs, seq_len, _default_vocab_range(model, vocab_range), bos_token_id, seed
    ).to(model.device)
    pats = _patterns(model, tokens)
    return torch.stack([induction_score_from_pattern(p, seq_len, prefix) for p in pats])


def ov_factors(model, layer: int, head: int, tokens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The OV circuit of one head as a product A @ B = OV_h restricted to `tokens`
    (default: the whole vocabulary): A (V', d_head), B (d_head, V')."""
    cfg = model.cfg
    block = model.blocks[layer]
    D = cfg.d_head
    kv = head // (cfg.n_heads // cfg.kv_heads)
    W_E = model.W_E.weight.detach().float()
    W_U = model.W_U.weight.detach().float()
    if tokens is not None:
        W_E, W_U = W_E[tokens], W_U[tokens]
    E = F.rms_norm(W_E, (W_E.shape[-1],), eps=cfg.norm_eps) * block.ln1.w.detach().float()
    W_V = block.attn.W_V.weight.detach().float()[kv * D : (kv + 1) * D]  # (D, d_model)
    W_O = block.attn.W_O.weight.detach().float()[:, head * D : (head + 1) * D]  # (d_model, D)
    A = E @ W_V.T  # (V', D)
    B = (W_O * model.ln_final.w.detach().float()[:, None]).T @ W_U.T  # (D, V')
    return A, B


def full_ov_circuit(model, layer: int, head: int, tokens: Tensor | None = None) -> Tensor:
    """OV_h: the logits a head adds, row = attended token, column = output (V', V')."""
    A, B = ov_factors(model, layer, head, tokens)
    return A @ B


def copying_scores(
    model,
    method: str = "eigen",
    vocab_range: tuple[int, int] | None = None,
) -> Tensor:  # (n_layers, n_heads)
    """Copying score of every head (see the module docstring for the definitions).

    vocab_range [lo, hi): the tokens the OV circuit is restricted to (rows and
    columns); default every id past the 8 special tokens."""
    lo, hi = _default_vocab_range(model, vocab_range)
    tokens = torch.arange(lo, hi, device=model.device)
    cfg = model.cfg
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            A, B = ov_factors(model, layer, head, tokens)
            if method == "eigen":
                # non-zero eigenvalues of A @ B (V' x V') are those of B @ A (D x D)
                lam = torch.linalg.eigvals((B @ A).double())
                denom = lam.abs().sum()
                out[layer, head] = float(lam.real.sum() / denom) if denom > 0 else 0.0
            elif method == "direct":
                ov = A @ B
                hits = ov.argmax(-1) == torch.arange(len(tokens), device=ov.device)
                out[layer, head] = hits.float().mean()
            else:
                raise ValueError(f"method={method!r}: one of eigen, direct")
    return out


def head_scores(
    model,
    tokens: Tensor | None = None,
    attention_mask: Tensor | None = None,
    induction_seq_len: int | None = None,
    bos_token_id: int | None = 1,
    vocab_range: tuple[int, int] | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """All head scores: {'previous_token', 'induction', 'copying'}, each (n_layers, n_heads).

    The previous-token score is measured on `tokens` if given, otherwise on the
    induction score's random repeated sequences."""
    rng = _default_vocab_range(model, vocab_range)
    if tokens is None:
        prefix = 0 if bos_token_id is None else 1
        L = induction_seq_len or min(50, (model.cfg.max_seq_len - prefix) // 2)
        tokens = repeated_random_tokens(16, L, rng, bos_token_id, seed).to(model.device)
    return {
        "previous_token": previous_token_scores(model, tokens, attention_mask),
        "induction": induction_scores(
            model, induction_seq_len, bos_token_id=bos_token_id, vocab_range=rng, seed=seed
        ),
        "copying": copying_scores(model, vocab_range=rng),
    }


def plot_head_scores(
    scores: Tensor,  # (n_layers, n_heads)
    title: str = "Head scores",
    signed: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """Heat map, layers as rows and heads as columns; signed=True for scores in
    [-1, 1] (copying), otherwise a 0..1 sequential scale."""
    return heatmap(
        scores,
        title=title,
        xlabel="head",
        ylabel="layer",
        diverging=signed,
        vmin=None if signed else 0.0,
        vmax=None if signed else 1.0,
        path=path,
    )
