"""The post-hoc route: transcoders fitted to a dense model's MLPs after training, spliced
in and scored like any model, beside the by-construction transcoder it competes with.

    result = posthoc_route(dense_model, suite, transcoder_model=tc_model, steps=300,
                           d_latent=1024, k=16, n_examples=512, batch_size=64, seed=0)
    result.scores["interp.coverage"], result.scores["interp.fvu"], result.cost["ratio"]

A model and data in, numbers out: nothing is read from or written to disk here
(`glassbox compare` saves the result under its content key).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glassbox.analysis.audit import audit_samples, audited_scores
from glassbox.analysis.feature_cost import measure_feature_cost
from glassbox.analysis.graphs.scores import graph_scores
from glassbox.analysis.interp import coverage_scores, suite_batches
from glassbox.analysis.splicing import splice_fidelity
from glassbox.archs.config import TranscoderConfig
from glassbox.archs.transformer import Transformer
from glassbox.training.data import SuiteData
from glassbox.training.transcoder_fit import fit_transcoders, splice

__all__ = ["AUDIT_KEYS", "FIT_EXAMPLES", "PostHocScores", "posthoc_route"]

FIT_EXAMPLES = 4096  # train-split examples the transcoders are fitted on

# the scores kept of analysis.interp.coverage_scores and of analysis.audit.audited_scores
COVERAGE_KEYS = (
    "interp.coverage",
    "interp.coverage_contextual",
    "interp.coverage_lift",
    "interp.coverage_lexical",
    "interp.l0",
    "interp.dead_fraction",
)
# (with the replicates of the scores kinds are told apart on: the route reads the same
# held-out examples as the dense run it is fitted to, so the report pairs them)
AUDIT_KEYS = (
    "interp.lift_pooled",
    "interp.lift_pooled_ci",
    "interp.lift_pooled_boot",
    "interp.coverage_heldout",
    "interp.coverage_heldout_ci",
    "interp.coverage_matched",
    "interp.coverage_matched_ci",
    "interp.coverage_matched_boot",
    "interp.info_beyond_token",
    "interp.info_beyond_token_ci",
    "interp.info_beyond_token_boot",
)
# analysis.graphs.scores' statistics kept: the error share and agreement it measures
GRAPH_KEYS = ("interp.graph_nodes80", "interp.graph_error_share", "interp.graph_top1_agreement")


@dataclass(frozen=True)
class PostHocScores:
    """What the post-hoc route measured on one dense model.

    scores: COVERAGE_KEYS, AUDIT_KEYS, GRAPH_KEYS (the dense model's attribution graphs
    with the transcoders in its MLPs' place and their errors as nodes), interp.fvu,
    interp.ce_loss_recovered, interp.kl_to_clean, fit_seconds, cost_ratio (None without
    a transcoder model).
    coverage_by_layer: coverage_scores' per-layer coverage of the spliced model.
    cost: measure_feature_cost's dict (None without a transcoder model)."""

    scores: Mapping[str, Any]
    coverage_by_layer: Mapping[str, Any]
    cost: Mapping[str, Any] | None


def posthoc_route(
    model: Transformer,
    suite: SuiteData,
    *,
    transcoder_model: Transformer | None = None,
    steps: int,
    d_latent: int,
    k: int,
    n_examples: int,
    batch_size: int,
    seed: int,
) -> PostHocScores:
    """Fit TopK transcoders (`d_latent` wide, `k` active, `steps` optimiser steps) to
    every MLP of the dense `model` on FIT_EXAMPLES train examples of `suite` (batches
    of `batch_size`), splice them in, and score the spliced model like any model:
    ground-truth coverage of the post-hoc latents on `n_examples` val examples, FVU,
    CE loss recovered, KL; the audited scores chosen on val and scored on test. With
    `transcoder_model` (a by-construction transcoder of the same seed) the fit is timed
    against reading features off that model, in this process
    (analysis.feature_cost.measure_feature_cost)."""
    layers = list(range(model.cfg.n_layers))
    tc_cfg = TranscoderConfig(d_latent=d_latent, k=k, activation="topk")
    fit_batches = suite_batches(suite, "train", FIT_EXAMPLES, batch_size=batch_size, seed=seed)
    val, test = audit_samples(suite, n_examples, seed)
    cost = None
    t0 = time.perf_counter()
    if transcoder_model is not None:
        cost, transcoders = measure_feature_cost(
            transcoder_model, model, val, layers, fit_batches=fit_batches, cfg=tc_cfg,
            return_transcoders=True, max_steps=steps, seed=seed,
        )  # fmt: skip
    else:
        transcoders = fit_transcoders(
            model, fit_batches, layers, tc_cfg, max_steps=steps, seed=seed
        )
    fit_seconds = time.perf_counter() - t0
    spliced = splice(model, transcoders)
    fid = splice_fidelity(model, spliced, val)
    cov = coverage_scores(spliced, val, suite)
    # the audited coverage too: chosen on val, scored on test, like every run's
    audit = audited_scores(spliced, suite, val, test, seed=seed)["summary"]
    graphs = graph_scores(model, suite, seed=seed, replacements=transcoders)["summary"]
    scores = {
        **{key: cov.get(key) for key in COVERAGE_KEYS},
        **{key: audit.get(key) for key in AUDIT_KEYS},
        **{key: graphs.get(key) for key in GRAPH_KEYS},
        **{f"interp.{key}": fid.get(key) for key in ("fvu", "ce_loss_recovered", "kl_to_clean")},
        "fit_seconds": fit_seconds,
        "cost_ratio": cost["ratio"] if cost else None,
    }
    return PostHocScores(scores=scores, coverage_by_layer=cov["coverage_by_layer"], cost=cost)
