"""Transcoder metrics (analysis/sae_metrics.py, coverage.py, splicing.py,
feature_cost.py) and feature pages, on constructed data
with known answers."""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch

from glassbox.analysis.activations import Collected, collect_activations
from glassbox.analysis.coverage import coverage, ground_truth_labels, unit_thresholds
from glassbox.analysis.feature_cost import compute_cost
from glassbox.analysis.feature_pages import (
    feature_contexts,
    render_text,
    top_activations,
    write_feature_pages,
)
from glassbox.analysis.sae_metrics import (
    ce_loss_recovered,
    dead_fraction,
    dense_fraction,
    fvu,
    kl_to_clean,
    l0,
)
from glassbox.analysis.splicing import splice_fidelity
from glassbox.archs import FFNConfig, ModelConfig, TranscoderConfig, Transformer


# ------------------------------------------------------------ sparsity, fvu
def test_sparsity_metrics_on_constructed_latents():
    lat = torch.zeros(10, 6)
    lat[:, 0] = 1.0  # fires on every token: dense
    lat[:6, 1] = 2.0  # 60%: dense (more than half)
    lat[:5, 2] = 0.5  # exactly half: not dense
    lat[0, 3] = 0.1  # rare
    # latents 4, 5 never fire: dead
    assert l0(lat) == pytest.approx((10 + 6 + 5 + 1) / 10)
    assert dead_fraction(lat) == pytest.approx(2 / 6)
    assert dense_fraction(lat) == pytest.approx(2 / 6)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[5:] = True  # tokens 5..9: only latents 0, 1 fire
    assert l0(lat, mask) == pytest.approx((5 + 1) / 5)
    assert dead_fraction(lat, mask) == pytest.approx(4 / 6)


def test_fvu_known_answers():
    torch.manual_seed(0)
    y = torch.randn(2, 50, 8) + 3.0
    mean = y.reshape(-1, 8).mean(0)
    assert fvu(y, y) == pytest.approx(0.0, abs=1e-12)
    assert fvu(mean.expand_as(y), y) == pytest.approx(1.0)
    # Half of every deviation from the mean explained: a quarter of the variance left.
    assert fvu(mean + 0.5 * (y - mean), y) == pytest.approx(0.25)


def test_ce_loss_recovered_and_kl_closed_forms():
    assert ce_loss_recovered(2.0, 2.5, 3.0) == pytest.approx(0.5)
    assert ce_loss_recovered(2.0, 2.0, 3.0) == 1.0
    assert ce_loss_recovered(2.0, 3.0, 3.0) == 0.0
    a = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2)
    b = torch.tensor([[math.log(3.0), 0.0]])  # q = (3/4, 1/4)
    expect = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_to_clean(a, b) == pytest.approx(expect)
    assert kl_to_clean(b, b) == pytest.approx(0.0, abs=1e-7)


# -------------------------------------------------------- splice fidelity
def tc_model() -> Transformer:
    torch.manual_seed(0)
    ffn = FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=48, k=4))
    cfg = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, max_seq_len=32, ffn=ffn)
    return Transformer(cfg).eval()


def batches():
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(2):
        ids = torch.randint(1, 40, (3, 10), generator=g)
        att = torch.ones_like(ids)
        att[0, 7:] = 0  # right padding
        out.append({"input_ids": ids, "attention_mask": att, "loss_mask": att.clone()})
    return out


def test_exact_transcoder_recovers_all_of_the_loss():
    model = tc_model()
    exact = copy.deepcopy(model)  # the same transcoder: a perfect fit of layer 0's "MLP"
    res = splice_fidelity(model, exact, batches(), layers=[0])
    assert res["ce_loss_recovered"] == pytest.approx(1.0)
    assert res["kl_to_clean"] == pytest.approx(0.0, abs=1e-6)
    assert res["layers"][0]["fvu"] == pytest.approx(0.0, abs=1e-10)
    assert res["layers"][0]["l0"] == pytest.approx(4.0)
    assert res["ce_ablated"] > res["ce_clean"]


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_transcoder_that_outputs_the_ablation_recovers_nothing(ablation):
    model = tc_model()
    bad = copy.deepcopy(model)
    tc = bad.blocks[0].mlp
    with torch.no_grad():
        tc.W_dec.zero_()  # output = b_dec: zero, or the mean MLP output
        if ablation == "mean":
            cache = [
                model.run_with_cache(b["input_ids"], attention_mask=b["attention_mask"])[1]
                for b in batches()
            ]
            outs = [
                c["blocks.0.hook_mlp_out"][b["attention_mask"].bool()]
                for c, b in zip(cache, batches())
            ]
            tc.b_dec.copy_(torch.cat(outs).mean(0))
    res = splice_fidelity(model, bad, batches(), layers=[0], ablation=ablation)
    assert res["ablation"] == ablation
    assert res["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
    assert res["ce_spliced"] == pytest.approx(res["ce_ablated"], rel=1e-6)


def test_collect_activations_keeps_real_tokens_and_their_places():
    model = tc_model()
    bs = batches()
    for b in bs:
        b["features"] = torch.randint(-1, 3, (*b["input_ids"].shape, 2))
        b["skill"] = torch.randint(0, 2, b["input_ids"].shape)
    col = collect_activations(model, bs, ["blocks.1.mlp.hook_latents"])
    assert col.n_tokens == 2 * (30 - 3)  # 3 padding tokens per batch
    _, cache = model.run_with_cache(bs[1]["input_ids"], attention_mask=bs[1]["attention_mask"])
    rows = (col.where[:, 0] == 4) & (col.where[:, 1] == 5)  # sequence 1 of batch 1, pos 5
    torch.testing.assert_close(
        col.acts["blocks.1.mlp.hook_latents"][rows][0], cache["latents", 1][1, 5]
    )
    assert torch.equal(col.features[rows][0], bs[1]["features"][1, 5])
    assert torch.equal(col.sequences[4], bs[1]["input_ids"][1])


# ---------------------------------------------------------------- coverage
def reference_f1(acts, labels, thr, exclude):
    """Loops: F1 of every (threshold, unit, feature)."""
    Q, U = thr.shape
    G = labels.shape[1]
    out = torch.zeros(Q, U, G, dtype=torch.float64)
    for q in range(Q):
        for u in range(U):
            pred = acts[:, u] > thr[q, u]
            for g in range(G):
                valid = labels[:, g] >= 0 if exclude else torch.ones_like(pred)
                pos = labels[:, g] == 1
                tp = (pred & pos & valid).sum().item()
                fp = (pred & ~pos & valid).sum().item()
                fn = (~pred & pos & valid).sum().item()
                out[q, u, g] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return out


@pytest.mark.parametrize("not_applicable", ["negative", "exclude"])
@pytest.mark.parametrize("sparse_below", [0.0, 0.1, 1.0])  # all dense, mixed, all sparse
def test_coverage_matches_a_loop_reference(not_applicable, sparse_below):
    g = torch.Generator().manual_seed(0)
    N, U, G = 300, 7, 4
    acts = torch.randn(N, U, generator=g)
    acts[:, :4] = acts[:, :4].relu() * (torch.rand(N, 4, generator=g) < 0.2)  # sparse units
    labels = torch.randint(-1, 2, (N, G), generator=g).to(torch.int8)
    labels[:, 0] = (acts[:, 1] > 0.5).to(torch.int8)  # unit 1 predicts feature 0 well
    res = coverage(
        acts, labels, n_thresholds=6, not_applicable=not_applicable, sparse_below=sparse_below
    )
    thr, _ = unit_thresholds(acts, 6)
    ref = reference_f1(acts, labels, thr, not_applicable == "exclude")
    ref_best = ref.reshape(-1, G).max(0).values
    torch.testing.assert_close(res.best_f1.double(), ref_best, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        res.unit_f1.double(), ref.permute(1, 0, 2).reshape(U, -1).max(1).values, atol=1e-6, rtol=0
    )
    assert res.coverage == pytest.approx(float(ref_best.mean()), abs=1e-6)
    assert int(res.best_unit[0]) == 1


def test_a_latent_equal_to_a_feature_has_f1_one():
    g = torch.Generator().manual_seed(0)
    N = 2000
    labels = (torch.rand(N, 3, generator=g) < torch.tensor([0.02, 0.3, 0.6])).to(torch.int8)
    acts = torch.rand(N, 50, generator=g) * (torch.rand(N, 50, generator=g) < 0.05)
    acts[:, 17] = labels[:, 0] * 3.0  # latent 17 is feature 0
    acts[:, 30] = labels[:, 1] * torch.rand(N, generator=g) + labels[:, 1]  # varying, > 0
    acts[:, 42] = labels[:, 2] * 0.5
    res = coverage(acts, labels, ["a", "b", "c"])
    assert res.best_f1.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert res.best_unit.tolist() == [17, 30, 42]
    assert res.coverage == pytest.approx(1.0)
    assert res.unit_feature[17] == 0 and res.unit_precision[17] == pytest.approx(1.0)
    d = res.to_dict()
    assert d["features"]["b"]["unit"] == 30 and d["features"]["b"]["f1"] == pytest.approx(1.0)


def test_coverage_known_precision_and_recall():
    N = 1000
    labels = torch.zeros(N, 1, dtype=torch.int8)
    labels[:100, 0] = 1
    acts = torch.zeros(N, 1)
    acts[20:100, 0] = 1.0  # 80 of the 100 positives ...
    acts[100:120, 0] = 1.0  # ... and 20 negatives
    res = coverage(acts, labels)
    assert res.best_precision[0] == pytest.approx(0.8)
    assert res.best_recall[0] == pytest.approx(0.8)
    assert res.best_f1[0] == pytest.approx(0.8)
    # Tokens where the feature does not apply: negatives by default, or left out.
    labels[100:120, 0] = -1
    assert coverage(acts, labels).best_f1[0] == pytest.approx(0.8)
    ex = coverage(acts, labels, not_applicable="exclude")
    assert ex.best_precision[0] == pytest.approx(1.0)
    assert ex.best_f1[0] == pytest.approx(2 * 0.8 / 1.8)


def test_ground_truth_labels_binarise_by_kind():
    feats = torch.tensor(
        [
            # carry (bool), depth (int), type (cat), match_pos (pos)
            [1, 0, 0, 5],
            [0, 1, 1, 6],
            [1, 2, 0, 7],
            [-1, 1, 2, -1],
            [0, 1, 1, 9],
            [-1, -1, -1, -1],
        ]
    )
    labels, names = ground_truth_labels(
        feats,
        ["add.carry", "dyck.depth", "dyck.type", "dyck.match_pos"],
        ["bool", "int", "cat", "pos"],
        skill=torch.tensor([0, 0, 1, 1, 1, -1]),
        skill_names=["addition", "dyck"],
        max_values=2,
        min_count=1,
    )
    assert names == [
        "add.carry",
        "dyck.depth=1",
        "dyck.depth=0",
        "dyck.type=0",
        "dyck.type=1",
        "skill=addition",
        "skill=dyck",
    ]
    assert labels[:, 0].tolist() == [1, 0, 1, -1, 0, -1]
    assert labels[:, 1].tolist() == [0, 1, 0, 1, 1, -1]
    assert labels[:, 6].tolist() == [0, 0, 1, 1, 1, -1]
    # A value seen fewer than min_count times is left out.
    _, names = ground_truth_labels(
        feats, ["a", "b", "c", "d"], ["bool", "int", "cat", "pos"], min_count=2
    )
    assert names == ["a", "b=1", "c=0", "c=1"]


def test_unit_thresholds_density_is_at_most_the_rate():
    acts = torch.rand(10_000, 3)
    acts[:, 2] = (acts[:, 2] < 0.01).float()  # fires on 1%: every rate above ties at 0
    thr, dens = unit_thresholds(acts, 8)
    assert (thr[1:] >= thr[:-1]).all()  # lowest first
    rates = torch.logspace(math.log10(0.95), -4, 8)
    assert (dens[:, :2] <= rates[:, None] + 1e-4).all()
    assert dens[:, 2].max() == pytest.approx(float(acts[:, 2].mean()))


# ------------------------------------------------------------------- compute
def test_compute_cost_ratio_of_measured_times():
    res = compute_cost(lambda: time.sleep(0.05), lambda: time.sleep(0.1), lambda: time.sleep(0.05))
    assert res["post_hoc_s"] == pytest.approx(res["post_hoc_fit_s"] + res["post_hoc_run_s"])
    assert 2.0 < res["ratio"] < 4.5  # (0.1 + 0.05) / 0.05 = 3, with sleep overshoot


# ------------------------------------------------------------- feature pages
def test_feature_pages_show_the_top_contexts_with_labels(tmp_path):
    seqs = [torch.arange(10) + 10 * s for s in range(3)]
    where = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(10), indexing="ij"), -1)
    where = where.reshape(-1, 2)
    acts = torch.zeros(30, 4)
    acts[13, 2] = 5.0  # unit 2: strongest at sequence 1, position 3 ...
    acts[25, 2] = 2.0  # ... then sequence 2, position 5
    acts[::7, 0] = 1.0
    features = torch.full((30, 2), -1)
    features[13, 0] = 1
    col = Collected({"h": acts}, where, seqs, features, torch.zeros(30, dtype=torch.long))
    vals, rows = top_activations(acts, [2], k=3)
    assert vals[0, :2].tolist() == [5.0, 2.0] and rows[0, :2].tolist() == [13, 25]
    ctx = feature_contexts(
        col,
        "h",
        [2],
        k=3,
        before=2,
        after=1,
        tokenizer=lambda i: f"t{i}",
        feature_names=["carry", "depth"],
        skill_names=["addition"],
    )[2]
    assert len(ctx) == 2  # the third-best activation is 0: not a context
    assert ctx[0].tokens == ["t11", "t12", "t13", "t14"] and ctx[0].focus == 2
    assert ctx[0].acts == [0.0, 0.0, 5.0, 0.0]
    assert ctx[0].labels == {"skill": "addition", "carry": 1}
    text = render_text({2: ctx})
    assert "[[t13]]" in text and "carry=1" in text
    paths = write_feature_pages(tmp_path, col, "h", units=[2, 3], tokenizer=lambda i: f"t{i}")
    page = paths["html"].read_text()
    assert "unit 2" in page and 'title="5.000">t13<' in page and "(never active)" in page
    assert "[[t25]]" in paths["text"].read_text()
    # Padding at the end of a sequence (positions never collected) is left out.
    keep = ~((where[:, 0] == 2) & (where[:, 1] >= 7))
    padded = Collected({"h": acts[keep]}, where[keep], seqs)
    ctx = feature_contexts(padded, "h", [2], k=2, before=2, after=3)[2]
    assert ctx[1].tokens == ["23", "24", "25", "26"] and ctx[1].focus == 2
