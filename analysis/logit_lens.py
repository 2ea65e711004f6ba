"""Logit lens (nostalgebraist 2020): read a prediction off the residual stream
after every layer by applying the model's own final norm and unembedding,
`W_U(ln_final(blocks.{i}.hook_resid_post))`.

At the last layer this is exactly the model's logits; at earlier layers it shows
when the answer becomes linearly readable. Works for every FFN kind: it only
reads hook points of the backbone.

Shapes: L' lens layers (n_layers, or n_layers + 1 with the embedding first),
batch B, positions T, vocabulary V, d_model d.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from glassbox.analysis.plots import heatmap, line_plot


def lens_labels(n_layers: int, include_embed: bool = False) -> list[str]:
    """Names of the lens layers: 'embed' (if included), then '0' .. 'n_layers-1'
    for the residual stream after that block."""
    return (["embed"] if include_embed else []) + [str(i) for i in range(n_layers)]


@torch.no_grad()
def residual_stack(
    model,
    tokens: Tensor,  # (B, T)
    attention_mask: Tensor | None = None,  # (B, T) 1 = real token
    include_embed: bool = False,
) -> Tensor:
    """The residual stream after each block (the embedding first if asked):
    (L', B, T, d_model), from `blocks.{i}.hook_resid_post` (and `hook_embed`)."""
    n = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_post" for i in range(n)]
    if include_embed:
        names = ["hook_embed", *names]
    _, cache = model.run_with_cache(tokens, attention_mask=attention_mask, names_filter=names)
    return torch.stack([cache[name] for name in names])


def unembed(model, resid: Tensor) -> Tensor:
    """Logits the model would output from this residual stream: W_U(ln_final(resid)).
    (..., d_model) -> (..., vocab)."""
    return model.W_U(model.ln_final(resid))


@torch.no_grad()
def logit_lens(
    model,
    tokens: Tensor,  # (B, T)
    attention_mask: Tensor | None = None,
    include_embed: bool = False,
) -> Tensor:
    """Logit-lens logits at every layer and position: (L', B, T, V).

    Holds L' x B x T x V floats; for a large vocabulary prefer `logit_lens_loss`
    or `logit_lens_top_k`, which unembed one layer at a time.
    """
    return unembed(model, residual_stack(model, tokens, attention_mask, include_embed))


@torch.no_grad()
def logit_lens_top_k(
    model,
    tokens: Tensor,  # (B, T)
    k: int = 5,
    attention_mask: Tensor | None = None,
    include_embed: bool = False,
) -> tuple[Tensor, Tensor]:
    """The k most probable next tokens read at each layer and position.

    Returns (probs, ids), each (L', B, T, k), most probable first; ids[..., 0] is
    the lens' prediction (argmax)."""
    resid = residual_stack(model, tokens, attention_mask, include_embed)
    probs, ids = [], []
    for r in resid:
        p = unembed(model, r).float().softmax(-1)
        top = p.topk(k, dim=-1)
        probs.append(top.values)
        ids.append(top.indices)
    return torch.stack(probs), torch.stack(ids)


def next_token_targets(
    input_ids: Tensor,  # (B, T)
    loss_mask: Tensor | None = None,  # (B, T) 1 on tokens that count (the training loss's mask)
) -> tuple[Tensor, Tensor]:
    """Targets and mask aligned with the positions that predict them.

    Position t predicts input_ids[t + 1]; it counts where loss_mask[t + 1] is set
    (every position but the last when loss_mask is None). Returns (targets (B, T),
    mask (B, T) bool); the last position's target is a placeholder, masked off.
    """
    targets = torch.zeros_like(input_ids)
    targets[:, :-1] = input_ids[:, 1:]
    mask = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    mask[:, :-1] = True if loss_mask is None else loss_mask[:, 1:].bool()
    return targets, mask


@torch.no_grad()
def logit_lens_nll(
    model,
    tokens: Tensor,  # (B, T)
    targets: Tensor,  # (B, T) token each position should predict
    attention_mask: Tensor | None = None,
    include_embed: bool = False,
) -> Tensor:
    """Cross-entropy of `targets` under the lens at every layer and position:
    (L', B, T). Unembeds one layer at a time."""
    resid = residual_stack(model, tokens, attention_mask, include_embed)
    out = []
    for r in resid:
        logits = unembed(model, r).float()
        out.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"))
    return torch.stack(out)


@torch.no_grad()
def logit_lens_loss(
    model,
    tokens: Tensor,  # (B, T)
    targets: Tensor,  # (B, T)
    mask: Tensor | None = None,  # (B, T) bool, positions that count; None = all
    attention_mask: Tensor | None = None,
    include_embed: bool = False,
) -> Tensor:
    """Mean cross-entropy over the masked positions, per lens layer: (L',).

    With `targets, mask = next_token_targets(input_ids, loss_mask)` the last
    entry equals the model's own masked next-token loss."""
    nll = logit_lens_nll(model, tokens, targets, attention_mask, include_embed)
    if mask is None:
        return nll.mean(dim=(1, 2))
    w = mask.to(nll.dtype)
    if w.sum() == 0:
        raise ValueError("logit_lens_loss: the mask selects no position")
    return (nll * w).sum(dim=(1, 2)) / w.sum()


@torch.no_grad()
def logit_lens_target_prob(
    model,
    tokens: Tensor,  # (B, T)
    targets: Tensor,  # (B, T)
    attention_mask: Tensor | None = None,
    include_embed: bool = False,
) -> Tensor:
    """Probability the lens gives the target at every layer and position: (L', B, T)."""
    return (-logit_lens_nll(model, tokens, targets, attention_mask, include_embed)).exp()


def plot_logit_lens_loss(
    losses: Tensor,  # (L',) or dict of label -> (L',)
    labels: list[str] | None = None,
    title: str = "Logit lens: loss by layer",
    path: str | Path | None = None,
) -> Figure:
    """Loss of the lens prediction against the layer it is read after."""
    series = losses if isinstance(losses, dict) else {"loss": losses}
    return line_plot(series, x=labels, title=title, xlabel="layer", ylabel="loss", path=path)


def plot_logit_lens_probs(
    probs: Tensor,  # (L', T) probability of the target, one example (or averaged)
    labels: list[str] | None = None,
    token_labels: list[str] | None = None,
    title: str = "Logit lens: probability of the next token",
    path: str | Path | None = None,
) -> Figure:
    """Heat map of the target's probability by layer (rows) and position (columns)."""
    return heatmap(
        probs,
        title=title,
        xlabel="position",
        ylabel="layer",
        xticklabels=token_labels,
        yticklabels=labels,
        cbar_label="p(target)",
        diverging=False,
        vmin=0.0,
        vmax=1.0,
        path=path,
    )
