"""Circuit size per skill (analysis.circuits) against circuits built by hand.

The hand-built models are one layer, d_model = vocab = 16, one-hot embeddings and
unembedding, attention output zero unless a test wires a head. Skill 0's examples
are `<bos> [filler] A1 T1` and `<bos> [filler] A2 T2`: the answer T1 (T2) is written
by one unit that fires on A1 (A2) only, so each of the two units carries half of the
answer tokens and the skill's circuit is exactly those two units.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import glassbox.archs.experts as experts_mod
from glassbox.analysis.circuits import (
    circuit_for_skill,
    circuit_report,
    faithfulness,
    keep_losses,
    log_grid,
    skill_data,
    unit_groups,
    unit_means,
)
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, TranscoderConfig, Transformer
from glassbox.archs.moe_interventions import ablate_experts
from glassbox.archs.moe_units import ExpertHiddenUnits, ExpertUnits, expert_means
from glassbox.training.data import DataConfig, build_datasets, collate
from glassbox.training.skill_scores import shifted_token_loss

V = D = 16
BOS, FILL, A1, A2, A3, T1, T2, T3 = 1, 9, 2, 3, 4, 5, 6, 7
N1, N2, N3 = 3, 6, 1  # the wired units


def batch(examples: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
    """Collated like the suite: the last token of each example is its answer."""
    rows = []
    for ids, skill in examples:
        n = len(ids)
        ans = [0] * (n - 1) + [1]
        rows.append(
            dict(
                input_ids=ids,
                loss_mask=ans,
                answer_mask=ans,
                skill=[skill] * n,
                features=[[] for _ in ids],
                example_skill=skill,
            )
        )
    return collate(rows, pad_id=0)


def skill0_batches(with_skill1: bool = False) -> list[dict[str, torch.Tensor]]:
    ex = [
        ([BOS, A1, T1], 0),
        ([BOS, FILL, A2, T2], 0),
        ([BOS, FILL, A1, T1], 0),
        ([BOS, A2, T2], 0),
    ]
    if with_skill1:
        ex += [([BOS, A3, T3], 1), ([BOS, FILL, A3, T3], 1)]
    return [batch(ex[:3]), batch(ex[3:])]


def hand_model(ffn: FFNConfig, n_heads: int = 2) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=D, n_layers=1, n_heads=n_heads, max_seq_len=8, ffn=ffn)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.W_E.weight.copy_(torch.eye(V, D))
        model.W_U.weight.copy_(2 * torch.eye(V, D))
        model.blocks[0].attn.W_O.weight.zero_()  # attention writes nothing
    return model


def neuron_model(wired: dict[int, tuple[int, int]]) -> Transformer:
    """GELU MLP of 8 neurons; neuron n reads token a and writes token t for
    wired[n] = (a, t); the other neurons read at random and write nothing."""
    model = hand_model(FFNConfig(kind="dense", activation="gelu", d_ff=8))
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.W_in.weight.normal_(0, 0.3)
        mlp.W_out.weight.zero_()
        for n, (a, t) in wired.items():
            mlp.W_in.weight[n] = torch.eye(D)[a]
            mlp.W_out.weight[:, n] = torch.eye(D)[t]
    return model


def test_two_neuron_circuit_is_found_with_its_size_and_auc():
    model = neuron_model({N1: (A1, T1), N2: (A2, T2)})
    batches = skill0_batches()
    groups = unit_groups(model)
    assert [(g.kind, g.n_units) for g in groups] == [("head", 2), ("neuron", 8)]
    means = unit_means(model, batches, groups)
    res = circuit_for_skill(model, batches, 0, groups, means, target=0.9)
    neurons = "blocks.0.mlp.neurons"
    assert res.reached and res.size == 2 and res.total == 10
    assert set(res.units) == {(neurons, N1), (neurons, N2)}
    assert res.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert res.fraction == pytest.approx(0.2)
    assert res.params_read_written == 2 * 2 * D  # a GELU neuron: its W_in row, W_out column
    assert res.loss_ablated > res.loss_clean + 1.0
    # each neuron alone carries about half of the answer tokens: clearly below 0.9
    one = faithfulness(model, batches, 0, groups, means, [[(neurons, N1)], [(neurons, N2)]])
    assert (one.values < 0.75).all() and (one.values > 0.25).all(), one.values
    # curve: 0 -> 0, about 0.5 at one unit, 1 from two on; area 0.05*0.5 + 0.1*0.75 + 0.8
    assert res.curve_sizes[:3] == [0, 1, 2] and res.curve_faithfulness[0] == 0.0
    assert all(f == pytest.approx(1.0, abs=1e-5) for f in res.curve_faithfulness[2:])
    f1 = res.curve_faithfulness[1]
    assert res.auc == pytest.approx(0.1 * f1 / 2 + 0.1 * (f1 + 1) / 2 + 0.8, abs=1e-6)
    assert res.auc == pytest.approx(0.9, abs=0.03)
    # a target no set can reach is reported, not hidden
    never = circuit_for_skill(model, batches, 0, groups, means, target=1.5)
    assert not never.reached and never.size == 10 and "not reached" in never.note


def test_each_skill_gets_its_own_circuit():
    model = neuron_model({N1: (A1, T1), N2: (A2, T2), N3: (A3, T3)})
    report = circuit_report(model, skill0_batches(with_skill1=True), skill_names=["two", "one"])
    neurons = "blocks.0.mlp.neurons"
    assert set(report) == {"two", "one"}
    assert set(report["two"].units) == {(neurons, N1), (neurons, N2)}
    assert report["one"].units == [(neurons, N3)]
    # the other skill's neuron, at its mean, costs a little: faithful, not exactly 1
    assert report["two"].faithfulness > 0.99
    flat = report.to_dict()
    assert flat["skill_circuit_size.two"] == 2 and flat["skill_circuit_size.one"] == 1
    assert flat["skill_circuit_fraction.one"] == pytest.approx(0.1)
    assert 0 < flat["skill_circuit_auc.two"] <= 1 and flat["skill_circuit_auc"] is not None


def test_two_latent_transcoder_circuit():
    tc = TranscoderConfig(d_latent=12, activation="topk", k=2, aux_k=0)
    model = hand_model(FFNConfig(kind="transcoder", transcoder=tc))
    t = model.blocks[0].mlp
    with torch.no_grad():
        t.W_enc.normal_(0, 0.05)
        t.W_dec.zero_()
        for latent, (a, out) in {2: (A1, T1), 9: (A2, T2)}.items():
            t.W_enc[:, latent] = torch.eye(D)[a]
            t.W_dec[latent] = torch.eye(D)[out]
    batches = skill0_batches()
    groups = unit_groups(model)
    assert groups[1].kind == "latent" and groups[1].hook == "blocks.0.mlp.hook_latents"
    means = unit_means(model, batches, groups)
    res = circuit_for_skill(model, batches, 0, groups, means)
    latents = "blocks.0.mlp.latents"
    assert res.size == 2 and set(res.units) == {(latents, 2), (latents, 9)}
    assert res.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert res.params_read_written == 2 * (2 * D + 1)
    one = faithfulness(model, batches, 0, groups, means, [[(latents, 2)], [(latents, 9)]])
    assert (one.values < 0.75).all(), one.values


def test_head_and_neuron_circuit():
    """A1 -> T1 through neuron N1; A2 -> T2 through head 0 (uniform attention, its
    value reads A2, its output writes T2); every other head and neuron writes zero."""
    model = neuron_model({N1: (A1, T1)})
    attn = model.blocks[0].attn
    d_head = attn.d_head
    with torch.no_grad():
        attn.W_Q.weight.zero_()  # uniform attention over the prefix
        attn.W_V.weight.zero_()
        attn.W_V.weight[0] = 2 * torch.eye(D)[A2]  # head 0, its first dim
        attn.W_O.weight[:, 0] = torch.eye(D)[T2]
    batches = skill0_batches()
    groups = unit_groups(model)
    means = unit_means(model, batches, groups)
    assert means["blocks.0.attn.heads"].shape == (2, d_head)
    res = circuit_for_skill(model, batches, 0, groups, means)
    assert res.size == 2
    assert set(res.units) == {("blocks.0.attn.heads", 0), ("blocks.0.mlp.neurons", N1)}
    assert res.by_group == {"blocks.0.attn.heads": 1, "blocks.0.mlp.neurons": 1}
    assert res.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert res.params_read_written == 4 * d_head * D + 2 * D
    one = faithfulness(model, batches, 0, groups, means, [[("blocks.0.attn.heads", 0)]])
    assert one.values[0] < 0.75


def random_batches(vocab: int, n: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ex = []
    for i in range(n):
        length = int(torch.randint(4, 9, (1,), generator=g))
        ex.append((torch.randint(1, vocab, (length,), generator=g).tolist(), i % 2))
    return [batch(ex[: n // 2]), batch(ex[n // 2 :])]


def test_ends_are_the_clean_and_the_all_ablated_loss():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
    model = Transformer(cfg).eval()
    batches = random_batches(40)
    with torch.no_grad():  # skill 0 answers what the clean model predicts: a positive gap
        for b in batches:
            last = b["attention_mask"].sum(1) - 1
            pred = model(b["input_ids"]).argmax(-1)
            rows = (b["skill"][:, 0] == 0).nonzero()[:, 0]
            b["input_ids"][rows, last[rows]] = pred[rows, last[rows] - 1]
    groups = unit_groups(model)
    means = unit_means(model, batches, groups)
    # the means, computed by hand over the real tokens
    for g in groups:
        acts = []
        for b in batches:
            _, cache = model.run_with_cache(b["input_ids"], names_filter=g.hook)
            acts.append(cache[g.hook][b["attention_mask"].bool()])
        torch.testing.assert_close(means[g.name], torch.cat(acts).mean(0))
    # clean and all-ablated answer losses, by hand, on each skill's answer tokens
    hooks = [(g.hook, lambda act, _h, m=means[g.name]: m.expand_as(act)) for g in groups]

    @torch.no_grad()
    def answer_loss(hooks, skill: int) -> float:
        nll, n = 0.0, 0
        for b in batches:
            mask = (b["answer_mask"].bool() & (b["skill"] == skill))[:, 1:]
            with model.hooks(hooks):
                nll += float(shifted_token_loss(model(b["input_ids"]), b["input_ids"])[mask].sum())
            n += int(mask.sum())
        return nll / n

    every = [(g.name, u) for g in groups for u in range(g.n_units)]
    gaps = []
    for skill in (0, 1):
        res = faithfulness(model, batches, skill, groups, means, [[], every])
        assert res.loss_clean == pytest.approx(answer_loss([], skill), rel=1e-5)
        assert res.loss_ablated == pytest.approx(answer_loss(hooks, skill), rel=1e-5)
        assert float(res.values[0]) == 0.0
        assert float(res.values[1]) == pytest.approx(1.0, abs=1e-6)
        circ = circuit_for_skill(model, batches, skill, groups, means)
        assert circ.loss_clean == pytest.approx(res.loss_clean, rel=1e-6)
        assert circ.loss_ablated == pytest.approx(res.loss_ablated, rel=1e-6)
        gaps.append(res.loss_ablated - res.loss_clean)
        if gaps[-1] >= 1e-3:
            assert circ.curve_faithfulness[0] == 0.0 and circ.curve_faithfulness[-1] == 1.0
        else:  # ablating everything does not hurt this skill: undefined, flagged
            assert math.isnan(circ.faithfulness) and not circ.reached and circ.size == circ.total
    assert max(gaps) > 1e-3 > min(gaps), gaps  # both branches ran


def moe_model(vocab: int = 40) -> Transformer:
    torch.manual_seed(1)
    moe = MoEConfig(n_experts=6, k=2, d_expert=16, n_shared_experts=1)
    cfg = ModelConfig(
        vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, max_seq_len=16,
        ffn=FFNConfig(kind="moe", moe=moe),
    )  # fmt: skip
    return Transformer(cfg).eval()


def test_expert_units_equal_ablate_experts():
    model = moe_model()
    batches = random_batches(40)
    groups = unit_groups(model, include_heads=False, level=1)
    assert [type(g) for g in groups] == [ExpertUnits, ExpertUnits]
    assert groups[0].params_per_unit == model.blocks[0].mlp.expert_params()
    means = unit_means(model, batches, groups)
    ref = expert_means(model, batches)
    torch.testing.assert_close(means[groups[1].name], ref[1])
    keep0, keep1 = torch.tensor([1, 0, 0, 1, 1, 0]), torch.tensor([0, 1, 1, 0, 1, 1])
    keep = torch.cat([keep0, keep1]).bool()[None]
    sd = skill_data(batches, 0)
    ours = keep_losses(model, sd, groups, means, keep)
    with torch.no_grad():
        with ablate_experts(model, {0: [1, 2, 5], 1: [0, 3]}, mode="mean", means=ref):
            logits = model(sd.input_ids)
        want = shifted_token_loss(logits, sd.input_ids)[sd.targets].mean()
        clean = shifted_token_loss(model(sd.input_ids), sd.input_ids)[sd.targets].mean()
    assert float(ours[0]) == pytest.approx(float(want), rel=1e-5)
    assert abs(float(want) - float(clean)) > 1e-4  # the ablation did something


def test_log_grid():
    assert log_grid(10) == [0, 1, 2, 3, 4, 5, 7, 8, 10]
    grid = log_grid(1032)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 1032 and len(grid) <= 14


def small_suite(tmp_path):
    cfg = DataConfig(
        mix={"copy": 1.0, "reverse": 1.0, "modadd": 0, "sort": 0, "addition": 0, "dyck": 0,
             "facts": 0, "ioi": 0},
        n_train=600, n_val=64, n_test=64, n_ood=16, cache_dir=str(tmp_path / "data"),
    )  # fmt: skip
    for task in (cfg.copy, cfg.reverse):  # lists of up to 4 of 8 values: learnable in 100 steps
        task.max_len, task.ood_max_len, task.n_values = 4, 6, 8
    return build_datasets(cfg)


@pytest.mark.parametrize(
    "ffn",
    [
        FFNConfig(kind="dense", d_ff=64),
        FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=64, k=4)),
        FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=1, d_expert=16)),
    ],
    ids=["dense", "transcoder", "moe"],
)
def test_untrained_and_briefly_trained_models_run_end_to_end(tmp_path, ffn):
    suite = small_suite(tmp_path)
    cfg = ModelConfig(
        vocab_size=suite.tokenizer.get_vocab_size(), d_model=32, n_layers=2, n_heads=4,
        max_seq_len=64, ffn=ffn,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    total = sum(g.n_units for g in unit_groups(model))
    for trained in (False, True):
        if trained:  # 100 steps of AdamW on the answer loss: enough to open a loss gap
            opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
            rows = suite.splits["train"]
            model.train()
            for step in range(100):
                b = collate([rows[(step * 16 + i) % len(rows)] for i in range(16)], suite.pad_id)
                nll = shifted_token_loss(model(b["input_ids"]), b["input_ids"])
                m = b["loss_mask"][:, 1:].float()
                loss = (nll * m).sum() / m.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        report = circuit_report(model, suite, n_examples=64)
        assert set(report) == {"copy", "reverse"}
        for r in report.values():
            assert 1 <= r.size <= total and r.total == total
            if r.loss_ablated - r.loss_clean < 1e-3:  # nothing to recover: said, not hidden
                assert not r.reached and r.size == total and math.isnan(r.auc)
                assert r.note.startswith("no loss gap")
                continue
            assert r.curve_faithfulness[0] == 0.0 and r.curve_faithfulness[-1] == 1.0
            assert 0.0 <= r.auc <= 1.0 and r.reached and r.faithfulness >= 0.9
        if trained and ffn.kind != "moe":  # (4 experts at k=1 learn less in 100 steps)
            assert any(r.loss_ablated > r.loss_clean + 0.2 for r in report.values()), report
        flat = report.to_dict()
        assert {f"skill_circuit_{k}.copy" for k in ("size", "fraction", "auc")} <= set(flat)
        assert flat["skill_circuit_reached.copy"] == report["copy"].reached
        assert model.training is trained  # the mode is restored


def test_chunked_forwards_give_the_same_numbers():
    model = neuron_model({N1: (A1, T1), N2: (A2, T2)})
    batches = skill0_batches()
    groups = unit_groups(model)
    means = unit_means(model, batches, groups)
    big = circuit_for_skill(model, batches, 0, groups, means)
    small = circuit_for_skill(model, batches, 0, groups, means, max_rows=3)  # 4 rows, 2 chunks
    assert small.units == big.units
    assert small.curve_faithfulness == pytest.approx(big.curve_faithfulness, abs=1e-6)
    sd = skill_data(batches, 0)
    assert sd.input_ids.shape == (4, 4) and sd.n_tokens == 4  # cut after the last answer


# ------------------------------------------------------------ expert hidden units


@pytest.mark.parametrize("padded", [False, True], ids=["grouped", "padded"])
def test_expert_hidden_hook_that_changes_nothing_changes_nothing(monkeypatch, padded):
    if padded:  # the padded-bmm dispatch in place of grouped_mm
        monkeypatch.setattr(experts_mod, "_grouped_mm_applies", lambda x, w: False)
    model = moe_model()
    tokens = torch.randint(1, 40, (3, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = model(tokens)
        for fn in (lambda a, _h: None, lambda a, _h: a, lambda a, _h: a.clone()):
            assert torch.equal(model.run_with_hooks(tokens, fwd_hooks=[(HIDDEN, fn)]), base)
        # a replacement is read back: zeroing every hidden unit leaves the shared expert
        zero = [("blocks.0.mlp.hook_expert_hidden", lambda a, _h: torch.zeros_like(a))]
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_in")
        with model.hooks(zero):
            _, zc = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_out")
    torch.testing.assert_close(zc["mlp_out", 0], model.blocks[0].mlp.shared(cache["mlp_in", 0]))


HIDDEN = "blocks.*.mlp.hook_expert_hidden"


def test_expert_hidden_view_holds_the_routed_experts_hidden_units():
    model = moe_model()
    moe = model.blocks[1].mlp
    E, k, d = moe.n_experts, moe.k, moe.d_expert
    tokens = torch.randint(1, 40, (2, 7), generator=torch.Generator().manual_seed(3))
    names = ["blocks.1.hook_mlp_in", "blocks.1.mlp.hook_expert_indices", HIDDEN]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    hidden = cache["blocks.1.mlp.hook_expert_hidden"]
    idx = cache["expert_indices", 1]
    assert hidden.shape == (2, 7, E * d)
    routed = torch.zeros(2, 7, E, dtype=torch.bool).scatter_(-1, idx, True)
    per_expert = hidden.view(2, 7, E, d)
    assert (per_expert[~routed] == 0).all()  # only the k routed experts' units
    assert ((per_expert != 0).sum((-2, -1)) == k * d).all()  # ... and all of them
    b, t = 1, 4
    x = cache["mlp_in", 1][b, t]
    for e in idx[b, t].tolist():
        gate, inp = x @ moe.W_gate.weight[e], x @ moe.W_in.weight[e]
        torch.testing.assert_close(per_expert[b, t, e], F.silu(gate) * inp)


def test_mean_ablating_an_experts_hidden_units_is_mean_ablating_the_expert():
    """W_out is linear without bias: W_out(mean h) = mean(W_out h), and both are scaled
    by the slot's gate weight after, so the two ablations give the same layer output."""
    model = moe_model()
    batches = random_batches(40)
    groups = unit_groups(model, include_heads=False)
    assert [type(g) for g in groups] == [ExpertHiddenUnits, ExpertHiddenUnits]
    means = unit_means(model, batches, groups)
    g = groups[0]
    E, d = model.blocks[0].mlp.n_experts, g.d_expert
    # the conditional mean, by hand: over the real tokens routed to each expert
    acts, idxs = [], []
    for b in batches:
        names = [g.hook, "blocks.0.mlp.hook_expert_indices"]
        _, c = model.run_with_cache(b["input_ids"], names_filter=names)
        acts.append(c[g.hook][b["attention_mask"].bool()].view(-1, E, d))
        idxs.append(c["expert_indices", 0][b["attention_mask"].bool()])
    acts, idxs = torch.cat(acts), torch.cat(idxs)
    for e in range(E):
        rows = (idxs == e).any(-1)
        want = acts[rows, e].mean(0) if rows.any() else torch.zeros(d)
        torch.testing.assert_close(means[g.name].view(E, d)[e], want)
    tokens = torch.cat([b["input_ids"] for b in batches[:1]])
    e = int(idxs[0, 0])  # an expert that some token uses
    keep = torch.ones(1, g.n_units, dtype=torch.bool)
    keep[0, e * d : (e + 1) * d] = False
    out = "blocks.0.hook_mlp_out"
    with torch.no_grad():
        with model.hooks(g.hooks(means[g.name], keep)):
            _, ours = model.run_with_cache(tokens, names_filter=out)
        ref = expert_means(model, batches)
        with ablate_experts(model, {0: [e]}, mode="mean", means=ref):
            _, theirs = model.run_with_cache(tokens, names_filter=out)
        _, clean = model.run_with_cache(tokens, names_filter=out)
    torch.testing.assert_close(ours[out], theirs[out], atol=1e-5, rtol=0)
    assert (ours[out] - clean[out]).abs().max() > 1e-4  # the ablation did something
    # a float keep-mask of 1 is the clean model, 0 the bool ablation
    for m, want in ((1.0, clean), (0.0, ours)):
        mask = torch.where(keep, torch.ones(()), torch.full((), m))
        with torch.no_grad(), model.hooks(g.hooks(means[g.name], mask)):
            _, got = model.run_with_cache(tokens, names_filter=out)
        torch.testing.assert_close(got[out], want[out], atol=1e-6, rtol=0)


def test_expert_hidden_masks_change_the_routed_units_only_as_the_definition_says():
    """A keep-mask per row, bool or float, against the definition written out on the
    whole (B, T, E * d_expert) view: act' = mean + m (act - mean) where the token is
    routed to the unit's expert, act (0) elsewhere. The hooks change only the routed
    slots: the same logits and the same gradients to the mask."""
    model = moe_model()
    g = unit_groups(model, include_heads=False)[0]
    E, d = model.blocks[0].mlp.n_experts, g.d_expert
    tokens = torch.randint(1, 40, (3, 9), generator=torch.Generator().manual_seed(4))
    mean = torch.randn(g.n_units, generator=torch.Generator().manual_seed(5))

    def by_definition(keep):
        state = {}

        def on_idx(idx, _h):
            state["idx"] = idx

        def on_hidden(act, _h):
            routed = torch.zeros(*act.shape[:2], E, dtype=torch.bool)
            routed = routed.scatter_(-1, state.pop("idx"), True).repeat_interleave(d, -1)
            k = keep.view(keep.shape[0], 1, -1)
            new = torch.where(k, act, mean) if k.dtype == torch.bool else mean + k * (act - mean)
            return torch.where(routed, new, act)

        return [("blocks.0.mlp.hook_expert_indices", on_idx), (g.hook, on_hidden)]

    gen = torch.Generator().manual_seed(6)
    bool_keep = torch.rand(3, g.n_units, generator=gen) < 0.5
    with torch.no_grad(), model.hooks(g.hooks(mean, bool_keep)):
        ours = model(tokens)
    with torch.no_grad(), model.hooks(by_definition(bool_keep)):
        theirs = model(tokens)
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        assert (ours - model(tokens)).abs().max() > 1e-3  # the mask did something
    soft = torch.rand(3, g.n_units, generator=gen).requires_grad_()
    got = []
    for hooks in (g.hooks(mean, soft), by_definition(soft)):
        with model.hooks(hooks):
            out = model(tokens)
        got.append((out.detach(), torch.autograd.grad(out.square().sum(), soft)[0]))
    torch.testing.assert_close(got[0][0], got[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[0][1], got[1][1], atol=1e-5, rtol=1e-5)
    assert got[0][1].abs().sum() > 0


def test_moe_unit_groups_and_report_in_hidden_units_and_in_experts():
    model = moe_model()
    moe = model.blocks[0].mlp
    groups = unit_groups(model)
    assert [(g.kind, g.n_units) for g in groups] == [("head", 4), ("expert_hidden", 6 * 16)] * 2
    assert groups[1].params_per_unit == 3 * 32  # W_gate and W_in columns, W_out row
    assert groups[1].n_units * groups[1].params_per_unit == moe.n_experts * moe.expert_params()
    coarse = unit_groups(model, level=1)
    assert [type(g) for g in coarse[1::2]] == [ExpertUnits, ExpertUnits]
    assert unit_groups(model, level=5) == coarse  # a kind's coarsest past its last level
    with pytest.raises(ValueError, match="level"):
        unit_groups(model, level=-1)
    batches = random_batches(40)
    report = circuit_report(model, batches, skill_names=["a", "b"], n_grid=4, min_gap=0.0)
    assert set(report) == set(report.coarse) == {"a", "b"} and report.coarse_kind == "expert"
    assert report["a"].total == 2 * (4 + 96) and report.coarse["a"].total == 2 * (4 + 6)
    flat = report.to_dict()
    assert flat["skill_circuit_size.a"] == report["a"].size
    assert flat["skill_circuit_size_expert.a"] == report.coarse["a"].size
    assert {"skill_circuit_auc_expert", "skill_circuit_fraction_expert"} <= set(flat)
    fine = [u for u in report["a"].units if u[0].endswith("expert_hidden")]
    assert all(0 <= j < 96 for _, j in fine)
    # a dense model has no expert-level report and no _expert keys
    dense = circuit_report(neuron_model({N1: (A1, T1), N2: (A2, T2)}), skill0_batches())
    assert dense.coarse is None and not any("_expert" in key for key in dense.to_dict())


def test_nonzero_params_count_each_units_surviving_weights():
    """A unit's edges to the residual stream: its non-zero read and write weights. With
    every weight non-zero they are its parameters; zeroing weights by hand removes
    exactly those from the units they belong to, for heads, neurons, experts' hidden
    units and whole experts."""
    cfg = ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=4, n_kv_heads=2,
                      ffn=FFNConfig(d_ff=32))  # fmt: skip
    model = Transformer(cfg)
    heads, neurons = unit_groups(model)
    assert heads.nonzero_params(model).tolist() == [4 * 4 * 16] * 4
    assert neurons.nonzero_params(model).tolist() == [3 * 16] * 32
    mlp, attn = model.blocks[0].mlp, model.blocks[0].attn
    with torch.no_grad():
        mlp.W_in.weight[5, :10] = 0  # neuron 5 reads 10 fewer weights
        mlp.W_out.weight[:3, 7] = 0  # neuron 7 writes 3 fewer
        attn.W_K.weight[4:8, :2] = 0  # key head 1 (shared by query heads 2, 3): 8 fewer
        attn.W_O.weight[0, 0:4] = 0  # head 0's output: 4 fewer
    n = neurons.nonzero_params(model)
    assert (n[5], n[7], n[0]) == (48 - 10, 48 - 3, 48)
    assert heads.nonzero_params(model).tolist() == [256 - 4, 256, 256 - 8, 256 - 8]
    moe = Transformer(ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=4,
                                  ffn=FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=8))))  # fmt: skip
    hidden, experts = moe.blocks[0].mlp.unit_groups(0)
    with torch.no_grad():
        moe.blocks[0].mlp.W_out.weight[2, 3, :5] = 0  # expert 2, hidden unit 3 writes 5 fewer
    assert hidden.nonzero_params(moe)[2 * 8 + 3] == 3 * 16 - 5
    assert experts.nonzero_params(moe).tolist() == [384, 384, 384 - 5, 384]
