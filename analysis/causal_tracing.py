"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations
in GPT", ROME): where in the network is a fact recalled?

1. clean run: p(answer) with the prompt as it is;
2. corrupted run: Gaussian noise added to the embeddings of the subject tokens
   (standard deviation `noise_scale` x the standard deviation of the embedding
   weights, 3 as in the paper), p(answer) drops;
3. restored runs: the corrupted run with one hidden state, at one layer and one
   position, set back to its clean value.

indirect effect (l, p) = p(answer | corrupted, state (l, p) restored) - p(answer | corrupted),
averaged over `n_samples` noise draws (seeded) and over the prompts of the
batch; total effect = p(answer | clean) - p(answer | corrupted).

The restored state is `blocks.{l}.hook_{hook}`: resid_post (the paper's hidden
states), resid_pre, mlp_out or attn_out (the paper's MLP and attention traces,
which restore a window of `window` layers centred on l; ROME uses 10).
Averaging over prompts assumes they share a layout (the same template, the
subject at the same positions); otherwise trace one prompt at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from glassbox.analysis.patching import BLOCK_OUTPUTS
from glassbox.analysis.plots import heatmap


@dataclass
class CausalTrace:
    indirect_effect: Tensor  # (n_layers, T): restored - corrupted, mean over samples and prompts
    restored: Tensor  # (n_layers, T): p(answer | restored)
    p_clean: float  # p(answer | clean)
    p_corrupted: float  # p(answer | corrupted)
    hook: str  # which state was restored

    @property
    def total_effect(self) -> float:
        return self.p_clean - self.p_corrupted


def embedding_std(model) -> float:
    """Standard deviation of the token-embedding weights (the noise unit)."""
    return float(model.W_E.weight.detach().float().std())


def _answer_prob(logits: Tensor, answer_pos: Tensor, answer_ids: Tensor) -> Tensor:
    """p(answer) at the answer position of each row: (rows,)."""
    rows = torch.arange(len(logits), device=logits.device)
    return logits[rows, answer_pos].float().softmax(-1)[rows, answer_ids]


def _window(layer: int, window: int, n_layers: int) -> range:
    lo = max(0, layer - window // 2)
    return range(lo, min(n_layers, lo + window))


@torch.no_grad()
def causal_trace(
    model,
    tokens: Tensor,  # (B, T) prompts
    subject_mask: Tensor,  # (B, T) bool: the subject's tokens (noised)
    answer_ids: Tensor,  # (B,) the correct next token
    answer_pos: Tensor | None = None,  # (B,) position predicting it; default the last
    hook: str = "resid_post",
    n_samples: int = 10,
    noise_scale: float = 3.0,
    noise_std: float | None = None,
    window: int = 1,
    seed: int = 0,
    attention_mask: Tensor | None = None,
) -> CausalTrace:
    """Trace every (layer, position) of `tokens`; see the module docstring.

    noise_std: the embedding standard deviation unit (default `embedding_std`);
    the noise added is N(0, (noise_scale * noise_std)^2) per coordinate.
    window: layers restored together, centred on each layer (1 = only it)."""
    if hook not in BLOCK_OUTPUTS:
        raise ValueError(f"hook={hook!r}: one of {', '.join(BLOCK_OUTPUTS)}")
    if not subject_mask.any():
        raise ValueError("subject_mask selects no token: nothing to corrupt")
    B, T = tokens.shape
    L = model.cfg.n_layers
    dev = model.device
    tokens, subject_mask, answer_ids = tokens.to(dev), subject_mask.to(dev), answer_ids.to(dev)
    if answer_pos is None:
        answer_pos = torch.full((B,), T - 1, dtype=torch.long)
    answer_pos = answer_pos.to(dev)
    names = [f"blocks.{i}.hook_{hook}" for i in range(L)]
    clean_logits, cache = model.run_with_cache(
        tokens, attention_mask=attention_mask, names_filter=names
    )
    p_clean = float(_answer_prob(clean_logits, answer_pos, answer_ids).mean())

    # n_samples noisy copies of the batch, stacked: row s * B + b is sample s of prompt b
    rep = lambda x: x.repeat(n_samples, *([1] * (x.dim() - 1)))  # noqa: E731
    tokens_n, ans_n, pos_n = rep(tokens), rep(answer_ids), rep(answer_pos)
    mask_n = None if attention_mask is None else rep(attention_mask.to(dev))
    std = (embedding_std(model) if noise_std is None else noise_std) * noise_scale
    noise = _subject_noise(model, subject_mask, n_samples, std, seed)
    corrupt = ("hook_embed", lambda act, hook: act + noise)

    def p_answer(extra: list) -> float:
        with model.hooks([corrupt, *extra]):
            logits = model(tokens_n, attention_mask=mask_n)
        return float(_answer_prob(logits, pos_n, ans_n).mean())

    p_corrupted = p_answer([])
    clean_n = {n: rep(cache[n]) for n in names}
    restored = torch.zeros(L, T)
    for layer in range(L):
        for pos in range(T):
            hooks = [
                (names[i], _restore(clean_n[names[i]], pos)) for i in _window(layer, window, L)
            ]
            restored[layer, pos] = p_answer(hooks)
    return CausalTrace(restored - p_corrupted, restored, p_clean, p_corrupted, hook)


def _subject_noise(model, subject_mask: Tensor, n_samples: int, std: float, seed: int) -> Tensor:
    """(n_samples * B, T, d_model) Gaussian noise of standard deviation `std` on the
    subject's tokens, 0 elsewhere; row s * B + b is sample s of prompt b."""
    B, T = subject_mask.shape
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_samples * B, T, model.cfg.d_model, generator=g) * std
    mask = subject_mask.repeat(n_samples, 1)
    return (noise.to(model.device) * mask[..., None]).to(model.W_E.weight.dtype)


def _restore(clean: Tensor, pos: int):
    def fn(act: Tensor, hook) -> Tensor:
        out = act.clone()
        out[:, pos] = clean[:, pos].to(out.dtype)
        return out

    return fn


def plot_causal_trace(
    trace: CausalTrace,
    token_labels: list[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """ROME-style heat map: positions as rows (token labels, subject marked by the
    caller, e.g. 'Bako*'), layers as columns, colour = indirect effect."""
    title = title or (
        f"Causal trace ({trace.hook}): p clean {trace.p_clean:.2f}, corrupted {trace.p_corrupted:.2f}"
    )
    return heatmap(
        trace.indirect_effect.T,
        title=title,
        xlabel="layer",
        ylabel="position",
        yticklabels=token_labels,
        cbar_label="indirect effect",
        path=path,
    )
