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

from glassbox.analysis.circuits import (
    ExpertUnits,
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
from glassbox.archs.hooks import HookPoint
from glassbox.archs.moe import ablate_experts, expert_means
from glassbox.training.data import DataConfig, build_datasets, collate
from glassbox.training.metrics import shifted_token_loss

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
    assert flat["circuit_size.two"] == 2 and flat["circuit_size.one"] == 1
    assert flat["circuit_fraction.one"] == pytest.approx(0.1)
    assert 0 < flat["circuit_auc.two"] <= 1 and flat["circuit_auc"] is not None


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
    groups = unit_groups(model, include_heads=False)
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
        assert {f"circuit_{k}.copy" for k in ("size", "fraction", "auc")} <= set(flat)
        assert flat["circuit_reached.copy"] == report["copy"].reached
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


class ToyFFN(torch.nn.Module):
    """A kind this module does not know, with one unit hook (the FFN contract)."""

    unit_name = "unit"
    unit_hooks = ("hook_h",)

    def __init__(self):
        super().__init__()
        self.W_in, self.W_out = torch.nn.Linear(D, 5), torch.nn.Linear(5, D)
        self.hook_h = HookPoint()

    def forward(self, x):
        return self.W_out(self.hook_h(torch.relu(self.W_in(x))))


def test_an_unknown_ffn_kind_gets_units_from_its_contract():
    model = neuron_model({N1: (A1, T1), N2: (A2, T2)})
    model.blocks[0].mlp = ToyFFN()
    model.setup_hooks()
    with pytest.warns(UserWarning, match="parameters per unit unknown"):
        groups = unit_groups(model)
    assert (groups[1].kind, groups[1].n_units, groups[1].hook) == ("unit", 5, "blocks.0.mlp.hook_h")
    batches = skill0_batches()
    res = circuit_for_skill(model, batches, 0, groups, unit_means(model, batches, groups))
    assert 1 <= res.size <= 7 and res.total == 7
