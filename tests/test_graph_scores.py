"""Attribution-graph statistics as scores (analysis.graphs.scores): the prompt set, the
section's keys beside the untrained twin's in interp_with_baselines, error share 0 for
glassbox's own kinds and > 0 for post-hoc transcoders on a dense model, and a graph
capped below its active units staying complete."""

from __future__ import annotations

import pytest
import torch

from glassbox.analysis.batches import sample_indices
from glassbox.analysis.graphs import trace
from glassbox.analysis.graphs.scores import SCORES, graph_prompts, graph_scores
from glassbox.analysis.interp import interp_with_baselines
from glassbox.analysis.posthoc import posthoc_route
from glassbox.archs import FFNConfig, load_pretrained
from glassbox.training.config import load_config
from glassbox.training.data import build_datasets
from tests.test_graphs import PROMPT, random_model
from tests.tiny_checkpoints import tiny_checkpoint

KEYS = [f"interp.{k}" for k in SCORES]


def tiny(kind: str):
    path = tiny_checkpoint(kind)
    return load_pretrained(path).eval(), build_datasets(load_config(path / "config.yaml").data)


def test_prompts_are_val_examples_cut_before_their_answer():
    _, suite = tiny("transcoder")
    prompts = graph_prompts(suite, per_skill=3, seed=0)
    ds = suite.splits["val"]
    skill = suite.skill_names.index("copy")
    drawn = sample_indices(suite, "val", 12, 0, keep=lambda s: s == skill)
    rows = [ds[i] for i in drawn]
    assert [p.skill for p in prompts] == ["copy"] * 3  # FAST: copy is the one skill
    for p, row in zip(prompts, rows, strict=False):  # the sampler's first rows, in its order
        a = row["answer_mask"].index(1)
        assert p.ids == row["input_ids"][:a] and p.target == row["input_ids"][a]
    assert graph_prompts(suite, per_skill=3, seed=0) == prompts
    assert graph_prompts(suite, per_skill=3, seed=1) != prompts


def test_scores_sit_beside_the_twins_and_error_share_is_zero_by_construction():
    model, suite = tiny("transcoder")
    kw = dict(n_examples=16, causal=False, circuits=False, microcircuits=False)
    summary = interp_with_baselines(model, suite, **kw)["summary"]
    for key in KEYS + ["interp.graph_nodes80.copy"]:
        assert key in summary and f"baselines.init.{key}" in summary
    for prefix in ("", "baselines.init."):
        assert summary[f"{prefix}interp.graph_error_share"] == 0.0
        assert summary[f"{prefix}interp.graph_top1_agreement"] == 1.0
        assert summary[f"{prefix}interp.graph_nodes80"] > 0
    without = interp_with_baselines(model, suite, graphs=False, **kw)["summary"]
    assert not any("graph_" in k for k in without)


def test_moe_graphs_have_no_error_nodes():
    model, suite = tiny("moe")
    out = graph_scores(model, suite, per_skill=2)
    assert out["prompts"] == 2 and out["completeness"] < 1e-4
    assert out["summary"]["interp.graph_error_share"] == 0.0
    assert out["summary"]["interp.graph_edges80"] > 0


def test_posthoc_transcoders_on_a_dense_model_have_an_error_share():
    model, suite = tiny("dense")
    settings = dict(steps=3, d_latent=64, k=4, n_examples=16, batch_size=8, seed=0)
    scores = posthoc_route(model, suite, **settings).scores
    assert 0 < scores["interp.graph_error_share"] < 1  # 3 steps: a poor fit, measured
    assert 0 <= scores["interp.graph_top1_agreement"] <= 1
    assert scores["interp.graph_nodes80"] >= 0  # 0 when the embeddings carry 80%


def test_a_capped_graph_keeps_its_units_rows_and_stays_complete():
    """Fewer unit nodes than active units: the others' writes are summed per (layer,
    position), so the kept rows equal the full graph's on the kept columns and the
    rest is what the full graph's other columns add up to."""
    model = random_model(ffn=FFNConfig(kind="dense", d_ff=24))
    full = trace(model, PROMPT)
    capped = trace(model, PROMPT, max_nodes=20)
    assert capped.n_units == 20 < full.n_units
    assert capped.completeness["logit_rel_error"] < 1e-5
    assert capped.completeness["units_rel_error"] < 1e-5
    key = lambda g: list(zip(g.layers.tolist(), g.positions.tolist(), g.units.tolist()))  # noqa: E731
    where = {k: i for i, k in enumerate(key(full))}
    pick = torch.tensor([where[k] for k in key(capped)] + list(range(full.n_units, full.n_nodes)))
    sub = full.adjacency[pick][:, pick]
    torch.testing.assert_close(capped.adjacency, sub, rtol=1e-9, atol=1e-12)
    others = full.adjacency[pick].sum(1) - sub.sum(1) + full.rest[pick]
    torch.testing.assert_close(capped.rest, others, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["transcoder"])
def test_shipped_scores_are_complete(name):
    model = load_pretrained(f"glassbox/{name}").eval()
    from glassbox.training.evaluate import load_suite_for

    suite, _ = load_suite_for(f"checkpoints/{name}", model)
    out = graph_scores(model, suite, per_skill=1)
    assert out["prompts"] == len(out["skills"]) >= 8
    assert out["completeness"] < 1e-4
    assert out["summary"]["interp.graph_error_share"] == 0.0
