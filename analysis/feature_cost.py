"""The cost of features: read off a model built with transcoders (by construction)
against fitted to a dense model afterwards (post hoc), measured in one run.

    cost = measure_feature_cost(tc_model, dense_model, val_batches, layers=[0, 1],
                                max_steps=2000)
    cost["ratio"], cost["flops_ratio"]       # post-hoc / by construction

`compute_cost` is the timing part, for any three callables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from glassbox.analysis.batches import count_real_tokens, token_batch
from glassbox.archs.config import TranscoderConfig
from glassbox.archs.transcoder import Transcoder
from glassbox.archs.transformer import Transformer
from glassbox.training.transcoder_fit import fit_transcoders


def compute_cost(
    by_construction: Callable[[], Any],
    post_hoc_fit: Callable[[], Any],
    post_hoc_run: Callable[[], Any],
    repeats: int = 1,
) -> dict[str, float]:
    """Wall-clock cost of the two routes to features, measured in one run.

    by_construction(): the features of a model built with transcoders (a forward
    pass with the latents cached). post_hoc_fit(): fitting transcoders to a dense
    model; post_hoc_run(): reading the features with them (the dense forward pass
    with the MLP inputs cached, then the encoders). The run callables are timed
    `repeats` times (best of), the fit once. Returns seconds and
    ratio = (fit + run) / by_construction."""

    def best(fn: Callable[[], Any], n: int) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    bc = best(by_construction, repeats)
    fit = best(post_hoc_fit, 1)
    run = best(post_hoc_run, repeats)
    return {
        "by_construction_s": bc,
        "post_hoc_fit_s": fit,
        "post_hoc_run_s": run,
        "post_hoc_s": fit + run,
        "ratio": (fit + run) / bc,
        "ratio_run_only": run / bc,
    }


def _flop_estimates(
    tc_model: Transformer,
    dense_model: Transformer,
    transcoders: Iterable[Transcoder],
    batches: Sequence,
    fit_tokens: int,
) -> dict[str, float]:
    """FLOPs of both routes: forward = 2 x active parameters per token (the model's
    training estimate / 3), the transcoders' encoder and decoder as dense matmuls,
    training = 3 x forward; reading post-hoc features runs the encoders only."""
    n_tokens = count_real_tokens(batches)
    T = max(token_batch(b)[0].shape[1] for b in batches)

    def forward_flops(model: Transformer) -> float:
        return model.flops_per_token(T) / 3

    tc_fwd = sum(2 * 2 * tc.d_model * tc.d_latent for tc in transcoders)
    flops_bc = forward_flops(tc_model) * n_tokens
    flops_fit = forward_flops(dense_model) * fit_tokens + 3 * tc_fwd * fit_tokens
    flops_run = (forward_flops(dense_model) + tc_fwd / 2) * n_tokens  # encoders only
    return {
        "tokens": float(n_tokens),
        "fit_tokens": float(fit_tokens),
        "flops_by_construction": flops_bc,
        "flops_post_hoc": flops_fit + flops_run,
        "flops_ratio": (flops_fit + flops_run) / flops_bc,
    }


def measure_feature_cost(
    tc_model: Transformer,
    dense_model: Transformer,
    batches: Sequence,
    layers: Sequence[int],
    fit_batches: Iterable | None = None,
    cfg: TranscoderConfig | None = None,
    repeats: int = 1,
    return_transcoders: bool = False,
    **fit_kwargs,
):
    """The cost of features by construction against post-hoc, measured in one run.

    By construction: `tc_model` over `batches` with its latents cached
    (`blocks.{i}.mlp.hook_latents`). Post-hoc: fitting transcoders to
    `dense_model`'s MLPs (training.transcoder_fit.fit_transcoders on `fit_batches`,
    default `batches`, with fit_kwargs: max_steps, batch_tokens, ...), then reading
    features from them: the dense model over `batches` with the MLP inputs cached,
    through the encoders.

    Returns compute_cost's seconds and `ratio` (post-hoc / by construction), plus
    the same as FLOP estimates (forward = 2 x active parameters per token; the
    transcoder's encoder and decoder as dense matmuls, training = 3 x forward) in
    `flops_*` and `flops_ratio`, and the token counts. With
    return_transcoders=True, returns (that dict, the fitted {layer: Transcoder}).
    """
    fitted: dict[str, Any] = {}

    def post_hoc_fit() -> None:
        fitted["tcs"], fitted["module"] = fit_transcoders(
            dense_model,
            fit_batches if fit_batches is not None else batches,
            layers,
            cfg,
            return_module=True,
            **fit_kwargs,
        )

    out = compute_cost(
        lambda: _read_latents(tc_model, batches, layers),
        post_hoc_fit,
        lambda: _read_post_hoc(dense_model, fitted["tcs"], batches, layers),
        repeats=repeats,
    )
    out.update(
        _flop_estimates(
            tc_model,
            dense_model,
            fitted["tcs"].values(),
            batches,
            fitted["module"].tokens_seen,
        )
    )
    if not math.isfinite(out["ratio"]):
        raise RuntimeError("measure_feature_cost: the by-construction pass took no time")
    return (out, fitted["tcs"]) if return_transcoders else out


@torch.no_grad()
def _read_latents(tc_model: Transformer, batches: Sequence, layers: Sequence[int]) -> None:
    """Features by construction: `tc_model` over `batches` with its latents cached."""
    latents = [f"blocks.{i}.mlp.hook_latents" for i in layers]
    tc_model.eval()
    for batch in batches:
        ids, att = token_batch(batch)
        tc_model.run_with_cache(ids, attention_mask=att, names_filter=latents)


@torch.no_grad()
def _read_post_hoc(
    dense_model: Transformer, tcs: Mapping[int, Any], batches: Sequence, layers: Sequence[int]
) -> None:
    """Features post hoc: `dense_model` over `batches` with the MLP inputs cached,
    through the fitted transcoders' encoders ({layer: Transcoder})."""
    ins = [f"blocks.{i}.hook_mlp_in" for i in layers]
    dense_model.eval()
    for batch in batches:
        ids, att = token_batch(batch)
        _, cache = dense_model.run_with_cache(ids, attention_mask=att, names_filter=ins)
        for i, name in zip(layers, ins):
            tcs[i].encode(cache[name])


__all__ = ["compute_cost", "measure_feature_cost"]
