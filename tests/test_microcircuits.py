"""Micro-tasks (analysis.microtasks) against ground truth recomputed from the tokens,
and the learned-mask circuits (analysis.microcircuits) on losses and models whose
answer is known before the run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch

from glassbox.analysis.batches import suite_batches
from glassbox.analysis.circuits import unit_groups, unit_means
from glassbox.analysis.microcircuits import (
    LN2,
    Edges,
    MaskConfig,
    _as_batch,
    _same_heads,
    circuit_for_task,
    learn_ranking,
    length_groups,
    mask_diffs,
    microcircuit_report,
    smallest_reaching,
    summarise,
)
from glassbox.analysis.microtasks import (
    MICRO_TASKS,
    TaskData,
    task_data,
    task_logit_diff,
    task_loss,
)
from glassbox.archs import Transformer
from glassbox.archs.units import HookUnits, residual_reads
from glassbox.training.config import load_config
from glassbox.training.data import DataConfig, build_datasets


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cfg = DataConfig(n_train=2400, n_val=400, n_test=64, n_ood=16,
                     cache_dir=str(tmp_path_factory.mktemp("data")))  # fmt: skip
    return build_datasets(cfg)


def test_the_registry_holds_16_tasks_over_8_skills():
    assert len(MICRO_TASKS) >= 16
    assert len({t.skill for t in MICRO_TASKS.values()}) >= 6
    assert all(t.doc for t in MICRO_TASKS.values())


def _words(suite, ids):
    return [suite.tokenizer.id_to_token(int(i)) for i in ids]


def test_task_prompts_agree_with_ground_truth_recomputed_from_the_tokens(suite):
    data = task_data(suite, "val", list(MICRO_TASKS), n=16)
    assert len(data) >= 14  # every task with examples in a small val split
    for name, d in data.items():
        for i in range(len(d)):
            pos = int(d.position[i])
            words = _words(suite, d.input_ids[i, : pos + 1])
            target, alt = _words(suite, [d.target[i], d.alternative[i]])
            assert words[-1] == target and alt != target, name
            prompt = words[:-1]
            if name == "ioi_io":  # the subject is named twice in the prompt, the IO once
                assert prompt.count(alt) == 2 and prompt.count(target) == 1
            if name == "dyck_first_closer":  # the innermost bracket open at "="
                stack = []
                for w in prompt[1 : prompt.index("=")]:
                    stack.append(w) if w in "([{<" else stack.pop()
                assert target == {"(": ")", "[": "]", "{": "}", "<": ">"}[stack[-1]]
            if name == "copy_next":  # the item written just before the target
                assert alt == prompt[-1]
            if name == "addition_carry":
                assert int(target) == (int(alt) + 1) % 10
            if name == "sort_min":
                items = [int(w) for w in prompt[2 : prompt.index("=")]]
                assert int(target) == min(items) and int(alt) == sorted(items)[1]


def test_learned_masks_find_a_planted_and_circuit_and_refuse_a_nonsense_task():
    total, planted = 60, (3, 7, 41)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(total, generator=g) * 0.01  # distractors that matter a little

    def loss(m):  # chance unless all three planted units are kept (they act only together)
        return LN2 * (1 - m[list(planted)].prod()) + (noise * (1 - m)).sum() * 0.01

    cfg = MaskConfig(steps=150)
    theta = learn_ranking(loss, total, cfg)
    assert set(theta.argsort(descending=True)[:3].tolist()) == set(planted)

    def losses_of(keep):
        return torch.stack([loss(k.float()) for k in keep])

    k, seen = smallest_reaching(losses_of, theta, target=0.1 * LN2)
    assert k == 3 and seen[2] > 0.1 * LN2
    # a task no set of units performs: the target is never reached, nothing is claimed
    k, _ = smallest_reaching(lambda keep: torch.full((len(keep),), LN2), theta, 0.1)
    assert k is None


def test_smallest_reaching_reads_evaluated_points_not_a_monotone_curve():
    ranking = torch.arange(100, 0, -1).float()  # unit i ranked i-th

    def losses_of(keep):  # low at exactly 5 units, high at 4 and from 6 to 40
        n = keep.sum(1)
        return torch.where((n == 5) | (n > 40), 0.0, 1.0)

    k, seen = smallest_reaching(losses_of, ranking, target=0.5)
    assert k == 5 and seen[5] == 0.0


@pytest.fixture(scope="module")
def tiny(suite):
    cfg = load_config("configs/dense.yaml", ["model.d_model=32", "model.n_heads=2",
                                             "model.max_seq_len=64", "model.ffn.d_ff=64"])  # fmt: skip
    mc = dataclasses.replace(cfg.model, vocab_size=suite.tokenizer.get_vocab_size(), pad_token_id=0)
    torch.manual_seed(0)
    return Transformer(mc).eval()


def test_masks_are_transparent_at_one_and_put_every_mean_at_zero(suite, tiny):
    d = task_data(suite, "val", ["dyck_first_closer"], n=8)["dyck_first_closer"]
    groups = unit_groups(tiny)
    means = unit_means(tiny, suite_batches(suite, "val", 32), groups)
    total = sum(g.n_units for g in groups)
    with torch.no_grad():
        clean = task_logit_diff(tiny(d.input_ids), d)
        keep = torch.stack([torch.ones(total), torch.zeros(total)]).bool()
        diffs = mask_diffs(tiny, d, groups, means, keep)
        soft = mask_diffs(tiny, d, groups, means, torch.ones(1, total))
    assert torch.allclose(diffs[0], clean, atol=1e-5) and torch.allclose(soft[0], clean, atol=1e-5)
    # every unit at its mean: the same as hooking every unit's hook point to its mean
    hooks = []
    for gr in groups:
        m = means[gr.name]
        hooks.append((gr.hook, lambda act, _h, m=m: m.to(act.dtype).expand_as(act).clone()))
    with torch.no_grad(), tiny.hooks(hooks):
        ablated = task_logit_diff(tiny(d.input_ids), d)
    assert torch.allclose(diffs[1], ablated, atol=1e-5)
    assert task_loss(torch.zeros(3)).allclose(torch.full((3,), LN2))


def test_prompts_are_grouped_by_length_into_the_fewest_tokens():
    # two clusters of lengths: two groups cost 3 x 7 + 3 x 102 = 327 tokens; four
    # split each cluster once more, 5 + 2 x 7 + 100 + 2 x 102 = 323
    pos = torch.tensor([5, 100, 6, 101, 7, 102])
    assert [g.tolist() for g in length_groups(pos, 2)] == [[0, 2, 4], [1, 3, 5]]
    assert [g.tolist() for g in length_groups(pos, 4)] == [[0], [2, 4], [1], [3, 5]]
    assert [g.tolist() for g in length_groups(torch.full((5,), 9), 4)] == [[0, 1, 2, 3, 4]]
    # the fewest tokens against every split of the sorted lengths into <= 3 groups
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        pos = torch.randint(1, 50, (7,), generator=g)
        got = sum(int(pos[i].max()) * len(i) for i in length_groups(pos, 3))
        s = sorted(pos.tolist())
        best = min(
            sum(max(s[a:b]) * (b - a) for a, b in zip((0, *cuts), (*cuts, 7)))
            for n in range(3) for cuts in itertools.combinations(range(1, 7), n)
        )  # fmt: skip
        assert got == best


def test_grouping_by_length_reads_what_the_padded_forward_reads(suite, tiny):
    d = task_data(suite, "val", ["dyck_first_closer"], n=24)["dyck_first_closer"]
    assert len(length_groups(d.position, 4)) > 1  # ragged prompts: the groups are cut
    groups = unit_groups(tiny)
    means = unit_means(tiny, suite_batches(suite, "val", 32), groups)
    total = sum(g.n_units for g in groups)
    m = torch.rand(3, total, generator=torch.Generator().manual_seed(1)).requires_grad_()
    grads = []
    for n in (1, 4):  # one group (every prompt padded to the longest), four
        diffs = mask_diffs(tiny, d, groups, means, m, max_rows=40, max_groups=n)
        (grad,) = torch.autograd.grad(task_loss(diffs).sum(), m)
        grads.append((diffs.detach(), grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_an_untrained_model_has_no_micro_circuit(suite, tiny):
    r = microcircuit_report(tiny, suite, tasks=["dyck_first_closer", "copy_next"], n_prompts=16)
    assert r["tasks"] and all(t["learned"] is False for t in r["tasks"].values())
    assert r["summary"] == {"interp.microcircuit_tasks": 0}


def test_summary_geometric_means_and_the_nonsense_lower_bound():
    def task(nodes, nonsense):
        return {"learned": True, "nodes": nodes, "fraction": nodes / 100, "total_units": 100,
                "faithfulness_heldout": 0.9, "accuracy_heldout": 1.0, "accuracy_clean": 1.0,
                "random_faithfulness": 0.0, "random_faithfulness_max": 0.1, "cpr": 0.9,
                "cmd": 0.1, "nonsense_nodes": nonsense, "zero_ablation_nodes": nodes,
                "edges": 10 * nodes, "same_heads_faithfulness": 0.5,
                "same_heads_faithfulness_max": 0.95 if nodes == 4 else 0.6,
                "task_means_nodes": 2 * nodes}  # fmt: skip

    s = summarise({"a": task(4, None), "b": task(16, 32), "c": {"learned": False}})
    assert s["interp.microcircuit_tasks"] == 2
    assert s["interp.microcircuit_nodes_gmean"] == pytest.approx(8.0)
    assert s["interp.microcircuit_fraction_median"] == pytest.approx(0.10)
    # nonsense never reached counts as every unit: ratios 100/4 and 32/16
    assert s["interp.nonsense_ratio"] == pytest.approx(math.sqrt(25 * 2))
    assert s["interp.microcircuit_beats_random"] == 1.0
    assert s["interp.microcircuit_edges_gmean"] == pytest.approx(80.0)
    assert s["interp.microcircuit_beats_same_heads"] == 0.5  # a: 0.9 < 0.95; b: 0.9 > 0.6
    assert s["interp.task_means_ratio"] == pytest.approx(2.0)
    assert s["interp.microcircuit_accuracy_gap"] == 0.0


def test_same_heads_control_keeps_the_circuits_heads_and_as_many_random_others():
    groups = [
        HookUnits("h", 0, "head", 4, 1, hook="a"),
        HookUnits("n", 0, "neuron", 10, 1, hook="b"),
    ]
    keep = torch.zeros(14, dtype=torch.bool)
    keep[[1, 4 + 2, 4 + 5]] = True  # head 1, neurons 2 and 5
    masks = _same_heads(groups, keep, 50, torch.Generator().manual_seed(0))
    assert masks.shape == (50, 14)
    assert (masks[:, :4] == keep[:4]).all()  # exactly the circuit's heads
    assert (masks[:, 4:].sum(1) == 2).all()  # as many other units, drawn at random
    assert masks[:, 4:].float().mean(0).min() > 0  # every other unit drawn some time


def test_task_prompts_as_a_batch_end_before_each_target():
    data = TaskData("t", torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8]]), torch.tensor([2, 3]),
                    torch.tensor([7, 8]), torch.tensor([1, 1]))  # fmt: skip
    batch = _as_batch(data)
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]


def _blank(vocab: int = 16):
    """A 2-layer model whose heads and neurons write nothing (W_O = W_out = 0): the
    unembedding reads the embedding through the residual stream alone."""
    cfg = load_config("configs/dense.yaml", ["model.d_model=8", "model.n_heads=2",
                                             "model.max_seq_len=16", "model.ffn.d_ff=8"])  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(cfg.model, vocab_size=vocab, pad_token_id=0)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_O.weight.zero_()
            block.mlp.W_out.weight.zero_()
    return model


def test_edges_join_kept_units_to_kept_residual_channels():
    """A head reading only channel 3 and writing only channel 5: its read weights count
    while channel 3 of its read is kept, its writes while a later read keeps channel 5;
    with every channel kept a unit's edges are all its non-zero weights."""
    model = _blank()
    attn = model.blocks[0].attn
    dh = attn.d_head
    with torch.no_grad():
        for w in (attn.W_Q, attn.W_K, attn.W_V):
            w.weight.zero_()
            w.weight[:dh, 3] = 1.0  # head 0 reads channel 3
        attn.W_O.weight[5, :dh] = 1.0  # head 0 writes channel 5
    channels = residual_reads(model)
    groups = unit_groups(model) + channels
    edges = Edges(model, groups)
    total = sum(g.n_units for g in groups)
    offset = {g.name: sum(h.n_units for h in groups[:i]) for i, g in enumerate(groups)}

    def keep(*units):  # (group name, index) pairs kept
        k = torch.zeros(total, dtype=torch.bool)
        for name, i in units:
            k[offset[name] + i] = True
        return k

    head = ("blocks.0.attn.heads", 0)
    assert edges.total == sum(int(g.nonzero_params(model).sum()) for g in groups)
    every = torch.ones(total, dtype=torch.bool)
    assert edges.count(every) == edges.total
    read3, mlp5 = ("blocks.0.resid_read.attn", 3), ("blocks.0.resid_read.mlp", 5)
    assert edges.count(keep(head, read3, mlp5)) == 4 * dh  # 3 d_head reads, d_head writes
    assert edges.count(keep(head, read3, ("ln_final.resid_read", 5))) == 4 * dh
    assert edges.count(keep(head, read3, ("blocks.1.resid_read.attn", 4))) == 3 * dh
    assert edges.count(keep(head, mlp5)) == dh  # its read channel left out
    assert edges.count(keep(read3, mlp5)) == 0  # channels own no weights
    # without channel units every channel is kept: a unit's edges are its weights
    plain = Edges(model, unit_groups(model))
    assert plain.count(keep(head)[: plain.own.numel()]) == 4 * dh


def _sign_task(model, vocab: int = 16):
    """The answer is the sign of the last token's embedding at channel 0, read by the
    unembedding through the residual stream; prompts split in three (fit, select,
    score) and the units' means over random tokens."""
    a, b = 1, 2
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sign = torch.where(torch.arange(vocab) % 2 == 0, 1.0, -1.0)
        model.W_E.weight[:, 0] = 2 * sign
        model.W_U.weight.zero_()
        model.W_U.weight[a, 0], model.W_U.weight[b, 0] = 4.0, -4.0
    ids = torch.randint(3, vocab, (72, 4), generator=g)
    target = torch.where(sign[ids[:, 2]] > 0, a, b)
    ids[:, 3] = target
    data = TaskData("sign", ids, torch.full((72,), 3), target, a + b - target)
    batches = [{"input_ids": torch.randint(3, vocab, (64, 4), generator=g)}]
    return data, batches, [data.subset(torch.arange(i, i + 24)) for i in (0, 24, 48)]


def test_learned_masks_find_the_one_residual_channel_that_carries_the_answer():
    """The answer is the sign of the last token's embedding at channel 0, read by the
    unembedding; heads and neurons write nothing: the circuit is that one channel at
    the unembedding's read, and its nonsense twin has none."""
    model = _blank()
    _, batches, (fit, select, score) = _sign_task(model)
    groups = unit_groups(model) + residual_reads(model)
    means = unit_means(model, batches, groups)
    cfg = MaskConfig(steps=60, residual=True)
    c = circuit_for_task(model, fit, score, groups, means, cfg, 0, select)
    assert c["learned"] and c["nodes"] == 1 and c["residual_nodes"] == 1
    assert c["faithfulness_heldout"] > 0.99 and c["edges"] == 0  # a channel owns no weight
    assert c["nonsense_nodes"] is None
    # the masks were learned with the weights held fixed: no gradient reached them,
    # and each weight requires one again afterwards
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_a_circuit_cut_short_resumes_at_its_last_finished_step(tmp_path, monkeypatch):
    """A task's circuit saves its steps as parts (analysis.resume): stopped while
    choosing its size, the resumed call reads the learned ranking and the sizes already
    found back, learns nothing again, and returns the uninterrupted circuit."""
    import glassbox.analysis.microcircuits as mc
    from glassbox.analysis.resume import part, saved_parts

    model = _blank()
    _, batches, (fit, select, score) = _sign_task(model)
    groups = unit_groups(model) + residual_reads(model)
    means = unit_means(model, batches, groups)
    cfg = MaskConfig(steps=60, residual=True)

    def circuit():
        return part("sign", lambda: circuit_for_task(model, fit, score, groups, means, cfg, 0,
                                                     select))  # fmt: skip

    with saved_parts(tmp_path / "whole.json", "k"):
        whole = circuit()
    assert whole["learned"] and whole["nodes"] == 1  # a circuit whose size was searched for
    calls, reach = [], mc.smallest_reaching

    def stop_at_the_third(*args, **kw):  # the fit and select sizes found, then stopped
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return reach(*args, **kw)

    path = tmp_path / "cut.json"
    monkeypatch.setattr(mc, "smallest_reaching", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt), saved_parts(path, "k"):
        circuit()
    saved = json.loads(path.read_text())["parts"]
    assert set(saved) == {"sign/ranking", "sign/size_fit", "sign/size_select", "sign/held_out"}
    total = sum(g.n_units for g in groups)
    assert torch.tensor(saved["sign/ranking"]["value"]).shape == (2, total)  # task, nonsense
    monkeypatch.setattr(mc, "smallest_reaching", reach)
    monkeypatch.setattr(mc, "learn_ranking", lambda *a, **k: pytest.fail("learned again"))
    with saved_parts(path, "k"):
        assert circuit() == whole
    assert set(json.loads(path.read_text())["parts"]) == {"sign"}  # saved whole


def test_a_task_the_direct_path_performs_has_an_empty_circuit_the_means_leave_out():
    """Heads and neurons write nothing and the embedding's channel 0 carries the
    answer to the unembedding: with every unit mean-ablated the model still performs
    the task, so its circuit is empty (0 nodes, 0 edges). The summary counts it as
    such and keeps it out of the sizes, their ratios and the random-units control
    (which it cannot beat: random sets of no unit are itself), where a ratio to 0
    would have no value."""
    model = _blank()
    _, batches, (fit, select, score) = _sign_task(model)
    groups = unit_groups(model)
    means = unit_means(model, batches, groups)
    empty = circuit_for_task(model, fit, score, groups, means, MaskConfig(steps=10), 0, select)
    assert empty["learned"] and empty["nodes"] == 0 and empty["nodes_fit"] == 0
    assert empty["edges"] == 0 and empty["faithfulness_heldout"] > 0.99
    total = empty["total_units"]
    sized = {**empty, "nodes": 8, "nodes_fit": 8, "fraction": 8 / total, "edges": 80,
             "nonsense_nodes": 16, "zero_ablation_nodes": 8, "task_means_nodes": 4,
             "random_faithfulness_max": 0.5, "same_heads_faithfulness_max": 0.5}  # fmt: skip
    s = summarise({"empty": empty, "sized": sized})
    assert s["interp.microcircuit_tasks"] == 2 and s["interp.microcircuit_empty"] == 1
    assert s["interp.microcircuit_nodes_gmean"] == pytest.approx(8.0)  # not 0, not sqrt(0 x 8)
    assert s["interp.microcircuit_edges_gmean"] == pytest.approx(80.0)
    assert s["interp.nonsense_ratio"] == pytest.approx(2.0)
    assert s["interp.task_means_ratio"] == pytest.approx(0.5)
    assert s["interp.microcircuit_beats_random"] == 1.0  # the sized one's, alone
    assert s["interp.microcircuit_fraction_median"] == pytest.approx(8 / 2 / total)
    alone = summarise({"empty": empty})
    assert (
        alone["interp.microcircuit_empty"] == 1 and "interp.microcircuit_nodes_gmean" not in alone
    )
