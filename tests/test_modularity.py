"""Modularity scores (analysis/modularity.py) on models whose answer is known: a
hand-built pooled router that sends each skill to its own pool (removing a pool
spares the other skills exactly; keeping it costs nothing), the same weights routed
token by token (which does not spare them), balanced clusters of dense neurons."""

from __future__ import annotations

import pytest
import torch

from glassbox.analysis.modularity import balanced_kmeans, group_use, modularity
from glassbox.analysis.specialisation import skill_accuracy
from glassbox.archs import ModelConfig, Transformer
from tests.skill_pools import pool_of, self_consistent_batches, skill_pool_model

SKILLS = ["a", "b", "c", "d"]


def test_own_pool_per_skill_removal_spares_the_others_and_keep25_costs_nothing():
    model = skill_pool_model(n_skills=4, pool=2)
    val = self_consistent_batches(model, seed=0)
    test = self_consistent_batches(model, seed=1)
    assert skill_accuracy(model, test, 4).tolist() == [1.0] * 4  # the model's own answers
    mod = modularity(model, val, test, SKILLS)
    assert mod.n_kept == {0: 2} and mod.n_groups == {0: 8}
    for s, name in enumerate(SKILLS):  # each skill's most used 25% is its pool
        assert sorted(mod.groups[name][0]) == pool_of(s)
    summary = mod.summary()
    assert summary["interp.keep25_cost"] == 0.0
    assert summary["interp.delta_others"] == 0.0
    for name in SKILLS:
        assert summary[f"interp.delta_others.{name}"] == 0.0
        # removing its pool re-routes the skill's tokens: its answers break
        assert summary[f"interp.delta_target.{name}"] > 0.5


def test_routing_by_the_token_alone_does_not_spare_the_others():
    # the same weights, each token routed by itself: the content tokens of every skill
    # share experts, so removing one skill's experts harms the others (the test above
    # could fail)
    model = skill_pool_model(n_skills=4, pool=2, router="softmax")
    val = self_consistent_batches(model, seed=0)
    test = self_consistent_batches(model, seed=1)
    summary = modularity(model, val, test, SKILLS).summary()
    assert summary["interp.delta_others"] > 0.05


def test_balanced_kmeans_recovers_equal_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=g) * 10
    x = centres.repeat_interleave(5, 0) + 0.1 * torch.randn(20, 6, generator=g)
    labels = balanced_kmeans(x, 4)
    assert torch.bincount(labels).tolist() == [5, 5, 5, 5]
    for b in range(4):  # each blob is one cluster
        assert labels[5 * b : 5 * b + 5].unique().numel() == 1
    # unequal blobs are still cut into equal clusters
    assert torch.bincount(balanced_kmeans(x[:18], 4)).tolist() == [5, 5, 4, 4]


def test_group_use_closed_form():
    acts = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, 2.0], [4.0, 0.0, 0.0]])
    skill = torch.tensor([0, 0, 1])
    use = group_use(acts, skill, 2, partition=torch.tensor([0, 0, 1]))
    torch.testing.assert_close(use, torch.tensor([[3 / 8, 5 / 8], [1.0, 0.0]], dtype=torch.float64))


def test_dense_clusters_keep_everything_costs_nothing_and_remove_everything_costs_all():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.blocks[0].mlp.W_out.weight.mul_(100.0)  # the MLP decides the prediction
    helper = skill_pool_model(n_skills=4, pool=2)  # only for its token layout
    batches = self_consistent_batches(helper, seed=0)
    for b in batches:  # relabel the answers with this model's own greedy predictions
        prompt = b["input_ids"][:, :3]
        b["input_ids"] = model.generate(prompt, max_new_tokens=6).tokens
    mod = modularity(model, batches, batches, SKILLS, keep=1.0, n_groups=8)
    assert sorted(torch.bincount(torch.tensor(mod.partition[0])).tolist()) == [64] * 8
    summary = mod.summary()
    assert summary["interp.keep100_cost"] == 0.0
    assert summary["interp.delta_target"] == pytest.approx(1.0, abs=0.2)
