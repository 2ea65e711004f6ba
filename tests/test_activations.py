"""One activation pass per model and sample (analysis/activations.py): a Sample answers
repeated reads from memory, with the same numbers a fresh pass gives; the sections of
an analysis share one pass; hooks active on the model (an ablation) are never
remembered."""

from __future__ import annotations

import torch

from glassbox.analysis.activations import collect_activations, prefetch
from glassbox.analysis.batches import Sample
from glassbox.analysis.modularity import _collect as modularity_collect
from glassbox.analysis.specialisation import collect_routing
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, Transformer
from glassbox.training.data import collate

HOOKS = ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "blocks.0.attn.hook_z"]


def _model(ffn: FFNConfig | None = None) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=24, d_model=16, n_layers=2, n_heads=2, ffn=ffn or FFNConfig(d_ff=32)
    )
    return Transformer(cfg).eval()


def _batches(n: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(4 * n):
        T = 4 + i % 5
        rows.append({
            "input_ids": torch.randint(1, 24, (T,), generator=g).tolist(),
            "answer_mask": [0] * (T - 1) + [1], "loss_mask": [1] * T, "skill": [i % 2] * T,
            "features": [[i % 3]] * T, "example_skill": i % 2,
        })  # fmt: skip
    return [collate(rows[i : i + 4], 0) for i in range(0, len(rows), 4)]


def _counting(model) -> list[int]:
    """A list that grows by one per forward pass of `model`."""
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_a_sample_reads_each_hook_once_and_gives_a_fresh_pass_numbers():
    model = _model()
    calls = _counting(model)
    sample = Sample(_batches())
    first = collect_activations(model, sample, HOOKS[:1])
    assert len(calls) == 3  # one forward per batch
    again = collect_activations(model, sample, HOOKS[:1], max_tokens=10)
    assert len(calls) == 3 and again.n_tokens == 10
    torch.testing.assert_close(again.acts[HOOKS[0]], first.acts[HOOKS[0]][:10])
    both = collect_activations(model, sample, HOOKS)  # the new hooks: one more pass
    assert len(calls) == 6
    fresh = collect_activations(model, list(sample), HOOKS)  # a plain list: read afresh
    assert len(calls) == 9
    for name in HOOKS:
        torch.testing.assert_close(both.acts[name], fresh.acts[name])
    torch.testing.assert_close(both.where, fresh.where)
    torch.testing.assert_close(both.columns["skill"], fresh.skill)


def test_hooks_on_the_model_are_never_remembered():
    model = _model()
    sample = Sample(_batches())
    clean = collect_activations(model, sample, HOOKS[:1]).acts[HOOKS[0]]

    def zero(act, _hook):
        return torch.zeros_like(act)

    with model.hooks([(HOOKS[0], zero)]):
        ablated = collect_activations(model, sample, HOOKS[:1]).acts[HOOKS[0]]
    assert ablated.abs().sum() == 0 and clean.abs().sum() > 0
    torch.testing.assert_close(collect_activations(model, sample, HOOKS[:1]).acts[HOOKS[0]], clean)


def test_routing_and_modularity_share_one_pass_with_the_same_numbers():
    model = _model(FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=8)))
    batches = _batches()
    names = [f"blocks.{i}.mlp.hook_{h}" for i in (0, 1)
             for h in ("router_logits", "expert_indices", "expert_weights")]  # fmt: skip
    sample = Sample(batches)
    calls = _counting(model)
    prefetch(model, sample, names)
    shared = collect_routing(model, sample)
    skill, gates = modularity_collect(model, sample, {i: model.blocks[i].mlp for i in (0, 1)}, {})
    assert len(calls) == 3  # the prefetch's pass, nothing after it
    fresh = collect_routing(model, batches)
    assert len(calls) == 6
    for i in (0, 1):
        assert torch.equal(shared.indices[i], fresh.indices[i])
        torch.testing.assert_close(shared.logits[i], fresh.logits[i])
        assert gates[i].shape == (skill.shape[0], 4)
        torch.testing.assert_close(
            gates[i].sum(1), torch.ones(skill.shape[0])
        )  # k gates, normalised
    assert torch.equal(shared.skill, fresh.skill) and torch.equal(shared.tokens, fresh.tokens)
