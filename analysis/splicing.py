"""Splice fidelity: how well transcoders spliced into a model stand in for the MLPs
they replace (analysis.sae_metrics names the numbers).

    spliced = training.transcoder_fit.splice(model, transcoders)
    fid = splice_fidelity(model, spliced, val_batches)
    fid["ce_loss_recovered"], fid["kl_to_clean"], fid["fvu"], fid["layers"][0]["l0"]

The spliced model's loss is placed between the clean model's and that of the model
with the MLP outputs ablated (zeroed, or replaced by their mean over the data:
`ablation=` says which); each transcoder is also scored on the clean model's MLP
input (the post-hoc view: every transcoder sees the input the MLP saw).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.batches import real_tokens, scoring_mask, token_batch
from glassbox.analysis.sae_metrics import ce_loss_recovered, dead_fraction, dense_fraction, l0
from glassbox.archs.transcoder import Transcoder

ABLATIONS = ("zero", "mean")


def _next_token_terms(logits: Tensor, ids: Tensor, score: Tensor | None):
    """Per-position log-probs (B, T-1, V), the targets (B, T-1) and weights (B, T-1)
    of next-token prediction; weight = score mask of the target token."""
    logp = logits[:, :-1].float().log_softmax(-1)
    w = torch.ones_like(ids[:, 1:], dtype=torch.float32) if score is None else score[:, 1:].float()
    return logp, ids[:, 1:], w


@dataclass
class _LossSums:
    """Weighted next-token sums over batches: the NLL of the clean, spliced and
    ablated models, KL(clean || spliced), and the total weight."""

    nll: dict[str, float] = field(default_factory=lambda: dict(clean=0.0, spliced=0.0, ablated=0.0))
    kl: float = 0.0
    w: float = 0.0

    def add(self, logits: dict[str, Tensor], ids: Tensor, score: Tensor | None) -> None:
        """logits: clean, spliced, ablated, each (B, T, V); score (B, T) or None."""
        lp, tgt, w = _next_token_terms(logits["clean"], ids, score)
        lps = _next_token_terms(logits["spliced"], ids, score)[0]
        lpa = _next_token_terms(logits["ablated"], ids, score)[0]
        for key, lpx in (("clean", lp), ("spliced", lps), ("ablated", lpa)):
            nll = -lpx.gather(-1, tgt[..., None])[..., 0]
            self.nll[key] += float((nll * w).sum())
        kl = (lp.exp() * (lp - lps)).sum(-1)
        self.kl += float((kl * w).sum())
        self.w += float(w.sum())

    def scores(self) -> dict[str, float]:
        ce = {k: v / self.w for k, v in self.nll.items()}
        return {
            "ce_clean": ce["clean"],
            "ce_spliced": ce["spliced"],
            "ce_ablated": ce["ablated"],
            "ce_loss_recovered": ce_loss_recovered(ce["clean"], ce["spliced"], ce["ablated"]),
            "kl_to_clean": self.kl / self.w,
        }


@dataclass
class _LayerSums:
    """One layer's transcoder against its MLP, summed over batches."""

    sse: float = 0.0
    ysum: Tensor | float = 0.0
    ysq: float = 0.0
    n: int = 0
    active: list[Tensor] = field(default_factory=list)

    def add(self, tc: Transcoder, x: Tensor, y: Tensor) -> None:
        """x, y (N, d_model): the MLP's input and output at N real tokens."""
        y = y.double()
        lat = tc.encode(x)
        pred = tc.decode(lat, x).double()
        self.sse += float((y - pred).pow(2).sum())
        self.ysum = self.ysum + y.sum(0)
        self.ysq += float(y.pow(2).sum())
        self.n += y.shape[0]
        self.active.append((lat != 0).to(torch.int32))

    def scores(self) -> dict[str, float]:
        var = self.ysq - float(self.ysum.pow(2).sum()) / self.n
        active = torch.cat(self.active)
        return {
            "fvu": self.sse / var,
            "l0": l0(active),
            "dead_fraction": dead_fraction(active),
            "dense_fraction": dense_fraction(active),
        }


def spliced_layers(model, spliced, layers: Sequence[int] | None = None) -> list[int]:
    """`layers`, or by default every layer whose FFN in `spliced` is another kind
    than in `model` (a post-hoc transcoder in place of a dense MLP); an error when
    there is none."""
    if layers is None:
        layers = [
            i
            for i, (b, s) in enumerate(zip(model.blocks, spliced.blocks))
            if s.mlp.kind != b.mlp.kind
        ]
    layers = list(layers)
    if not layers:
        raise ValueError("splice_fidelity: no spliced layers (no FFN of another kind in `spliced`)")
    return layers


@torch.no_grad()
def mlp_out_means(model, batches: Iterable, names: Sequence[str]) -> dict[str, Tensor]:
    """{hook name: (d_model,)} mean of each MLP output over the real tokens of the
    batches, in the model's dtype."""
    sums: dict[str, Tensor] = {}
    n = 0
    for batch in batches:
        ids, att = token_batch(batch)
        _, cache = model.run_with_cache(ids, attention_mask=att, names_filter=list(names))
        m = real_tokens(ids, att)
        for name in names:
            sums[name] = sums.get(name, 0) + cache[name][m].double().sum(0)
        n += int(m.sum())
    dtype = next(model.parameters()).dtype
    return {k: (v / n).to(dtype) for k, v in sums.items()}


@torch.no_grad()
def splice_fidelity(
    model,
    spliced,
    batches: Iterable,
    layers: Sequence[int] | None = None,
    ablation: str = "zero",
) -> dict[str, Any]:
    """Fidelity of the transcoders spliced into `spliced` against the clean `model`.

    batches: dicts with input_ids (B, T) (+ attention_mask, loss_mask: the loss is
    scored on the tokens loss_mask marks, else on every real token) or id tensors;
    iterated once, or twice for ablation="mean" (the MLP outputs' mean over the
    real tokens is taken in a first pass). layers: the spliced layers (default:
    every layer whose FFN is a transcoder in `spliced` and not in `model`).

    Returns ce_clean, ce_spliced, ce_ablated, ce_loss_recovered, kl_to_clean,
    ablation, fvu (mean over layers), and per layer `layers[i]`: fvu, l0,
    dead_fraction, dense_fraction of the transcoder on the clean model's MLP input
    (the post-hoc view: every transcoder sees the input the MLP saw).
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"splice_fidelity: ablation={ablation!r}: one of zero, mean")
    layers = spliced_layers(model, spliced, layers)
    model.eval(), spliced.eval()
    outs = [f"blocks.{i}.hook_mlp_out" for i in layers]
    ins = [f"blocks.{i}.hook_mlp_in" for i in layers]
    means = mlp_out_means(model, batches, outs) if ablation == "mean" else {}

    def ablate(act: Tensor, hook) -> Tensor:
        return torch.zeros_like(act) if ablation == "zero" else means[hook.name].expand_as(act)

    losses = _LossSums()
    per = {i: _LayerSums() for i in layers}
    for batch in batches:
        ids, att = token_batch(batch)
        logits, cache = model.run_with_cache(ids, attention_mask=att, names_filter=ins + outs)
        logits_s = spliced(ids, attention_mask=att)
        with model.hooks([(outs, ablate)]):
            logits_a = model(ids, attention_mask=att)
        losses.add(
            {"clean": logits, "spliced": logits_s, "ablated": logits_a}, ids, scoring_mask(batch)
        )
        m = real_tokens(ids, att)
        for i, ni, no in zip(layers, ins, outs):
            per[i].add(spliced.blocks[i].mlp, cache[ni][m], cache[no][m])
    out: dict[str, Any] = {
        **losses.scores(),
        "ablation": ablation,
        "layers": {i: per[i].scores() for i in layers},
    }
    out["fvu"] = sum(v["fvu"] for v in out["layers"].values()) / len(layers)
    return out


__all__ = ["mlp_out_means", "splice_fidelity", "spliced_layers"]
