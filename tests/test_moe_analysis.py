"""Expert specialisation metrics on constructed routings with known answers, and the
report runner on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from glassbox.analysis.routing_metrics import (
    coactivation,
    contingency,
    domain_specialization,
    expert_label_nmi,
    expert_load,
    kmeans,
    load_cv,
    mean_purity,
    mutual_information,
    nmi,
    purity,
    router_saturation,
    router_token_entropy,
    routing_entropy,
    selectivity,
    skill_experts,
    specialization_score,
    vocab_specialization,
)


def perfect_routing(n_tokens=600, n_labels=4, k=1, seed=0):
    """Label l always goes to experts l*k .. l*k+k-1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_labels, (n_tokens,), generator=g)
    indices = labels[:, None] * k + torch.arange(k)
    return indices, labels


def random_routing(n_tokens, n_experts, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_tokens, n_experts, generator=g).topk(k, -1).indices


def test_nmi_is_one_on_perfect_routing():
    indices, labels = perfect_routing(k=1)
    assert expert_label_nmi(indices, labels, n_experts=4) == pytest.approx(1.0, abs=1e-12)
    # more experts than labels, each label on its own expert: still 1 for k=1
    assert expert_label_nmi(indices, labels, n_experts=16) == pytest.approx(1.0, abs=1e-12)


def test_nmi_with_k_experts_per_token_closed_form():
    # Each of L equiprobable labels owns k experts: I = H(label) = log L,
    # H(expert) = log L + log k, so arithmetic NMI = 2 log L / (2 log L + log k).
    L, k = 4, 2
    labels = torch.arange(L).repeat(100)
    indices = labels[:, None] * k + torch.arange(k)
    want = 2 * math.log(L) / (2 * math.log(L) + math.log(k))
    assert expert_label_nmi(indices, labels, 8) == pytest.approx(want, rel=1e-9)
    assert expert_label_nmi(indices, labels, 8, normalization="label") == pytest.approx(1.0)


def test_nmi_near_zero_on_random_routing():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (20000,), generator=g)
    indices = random_routing(20000, 16, 4, seed=2)
    assert expert_label_nmi(indices, labels, 16) < 0.005


def _nmi_by_hand(xs: list[int], ys: list[int]) -> tuple[float, float]:
    """Mutual information and arithmetic NMI from the definitions, with dicts."""
    from collections import Counter

    n = len(xs)
    pxy, px, py = Counter(zip(xs, ys)), Counter(xs), Counter(ys)
    mi = sum(c / n * math.log((c / n) / (px[x] / n * py[y] / n)) for (x, y), c in pxy.items())
    hx = -sum(c / n * math.log(c / n) for c in px.values())
    hy = -sum(c / n * math.log(c / n) for c in py.values())
    return mi, 2 * mi / (hx + hy)


def test_nmi_matches_definition_for_k1():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 6, (500,), generator=g)
    experts = (labels * 3 + torch.randint(0, 4, (500,), generator=g)) % 10  # partly informative
    mi, want = _nmi_by_hand(experts.tolist(), labels.tolist())
    assert 0.2 < want < 0.9
    assert expert_label_nmi(experts[:, None], labels, 10) == pytest.approx(want, rel=1e-9)
    assert mutual_information(contingency(experts[:, None], labels, 10, 6)) == pytest.approx(
        mi, rel=1e-9
    )


def test_contingency_skips_unlabelled_and_counts_slots():
    indices = torch.tensor([[0, 1], [1, 2], [2, 0]])
    labels = torch.tensor([0, -1, 1])
    c = contingency(indices, labels, 3, 2)
    assert c.tolist() == [[1, 1], [1, 0], [0, 1]]


def test_load_cv_and_entropy():
    even = expert_load(torch.arange(8).repeat(10)[:, None], 8)
    assert torch.allclose(even, torch.full((8,), 1 / 8, dtype=torch.float64))
    assert load_cv(even) == pytest.approx(0.0, abs=1e-12)
    assert routing_entropy(even) == pytest.approx(1.0)
    collapsed = expert_load(torch.zeros(10, 1, dtype=torch.long), 8)
    assert routing_entropy(collapsed) == pytest.approx(0.0, abs=1e-9)
    # one expert has everything: std/mean of (1, 0, ..., 0) is sqrt(E - 1)
    assert load_cv(collapsed) == pytest.approx(math.sqrt(7))
    assert router_token_entropy(torch.zeros(5, 8)) == pytest.approx(1.0)
    assert router_token_entropy(torch.tensor([[100.0, 0, 0, 0]])) < 1e-6


def test_purity():
    counts = torch.tensor([[9.0, 1.0], [5.0, 5.0], [0.0, 0.0]])
    p = purity(counts)
    assert p[0] == pytest.approx(0.9) and p[1] == pytest.approx(0.5) and p[2].isnan()
    assert mean_purity(counts) == pytest.approx(14 / 20)


def test_domain_specialization_perfect_and_uniform():
    indices, labels = perfect_routing(n_labels=4, k=2)
    spec = domain_specialization(indices, labels, 8, 4)
    want = torch.zeros(8, 4, dtype=torch.float64)
    for label in range(4):
        want[2 * label : 2 * label + 2, label] = 1.0
    assert torch.equal(spec, want)
    assert specialization_score(spec) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (40000,), generator=g)
    spec = domain_specialization(random_routing(40000, 16, 4, seed=5), labels, 16, 4)
    assert torch.allclose(spec, torch.full_like(spec, 4 / 16), atol=0.02)  # k/E
    assert torch.allclose(spec.sum(0), torch.full((4,), 4.0, dtype=torch.float64))


def test_vocab_specialization():
    tokens = torch.tensor([5, 5, 5, 5, 7, 7])
    indices = torch.tensor([[0], [0], [0], [1], [2], [3]])
    spec, n = vocab_specialization(indices, tokens, 4, 10)
    assert spec[0, 5] == pytest.approx(0.75) and spec[1, 5] == pytest.approx(0.25)
    assert spec[2, 7] == pytest.approx(0.5) and n[5] == 4 and n[7] == 2
    assert specialization_score(spec) == pytest.approx((0.75 + 0.5) / 2)
    assert specialization_score(spec, min_count=n >= 3) == pytest.approx(0.75)


def test_coactivation_all_pairs():
    # k=3: every pair in a token's set counts, not only adjacent ones.
    indices = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 0]])
    c = coactivation(indices, 4)
    # expert 0 appears 3 times; with 1 twice, 2 twice, 3 twice
    assert c[0].tolist() == pytest.approx([0, 2 / 3, 2 / 3, 2 / 3])
    # expert 2 appears twice: with 0 twice, 1 once, 3 once
    assert c[2].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.5])
    assert torch.all(c.diagonal() == 0)


def test_router_saturation():
    a = torch.tensor([[0, 1], [2, 3]])
    assert router_saturation(a, a.flip(-1)) == 1.0  # order within the k does not matter
    assert router_saturation(a, torch.tensor([[0, 5], [6, 7]])) == 0.25


def test_skill_experts_and_selectivity():
    indices, labels = perfect_routing(n_labels=3, k=2)
    chosen = skill_experts(indices, labels, 8, 3, n_per_label=2)
    assert [sorted(r) for r in chosen.tolist()] == [[0, 1], [2, 3], [4, 5]]
    # ablating s's experts removes exactly skill s, from perfect accuracy
    perfect = selectivity(torch.eye(3))
    assert perfect["score"] == pytest.approx(1.0)
    assert perfect["delta_others"].tolist() == [0.0, 0.0, 0.0]
    uniform = selectivity(torch.full((3, 3), 0.4))
    assert uniform["score"] == pytest.approx(0.0)
    drop = torch.tensor([[0.5, 0.1, 0.3], [0.0, 0.2, 0.0], [0.1, 0.1, 0.1]])
    s = selectivity(drop)
    assert s["delta_target"].tolist() == pytest.approx([0.5, 0.2, 0.1])
    assert s["delta_others"].tolist() == pytest.approx([0.2, 0.0, 0.1])
    assert s["score"] == pytest.approx((0.3 + 0.2 + 0.0) / 3)


def test_kmeans_recovers_separated_blobs():
    g = torch.Generator().manual_seed(6)
    centers = torch.randn(5, 12, generator=g) * 10
    truth = torch.randint(0, 5, (1000,), generator=g)
    x = centers[truth] + torch.randn(1000, 12, generator=g) * 0.3
    found = kmeans(x, 5, seed=0)
    assert expert_label_nmi(found[:, None], truth, 5) == pytest.approx(1.0, abs=1e-9)
    # subsampled fit, all rows assigned
    found = kmeans(x, 5, seed=1, max_fit=200)
    assert found.shape == (1000,)
    assert expert_label_nmi(found[:, None], truth, 5) == pytest.approx(1.0, abs=1e-9)


def test_nmi_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="normalization"):
        nmi(torch.ones(2, 2), normalization="max")


# --- the runner on hand-built models -------------------------------------------------

N_SKILLS, D = 4, 16  # skill s uses tokens 2s, 2s+1; residual dims 0..3 skill, 4..11 token


def built_model(kind: str = "moe"):
    """One block whose attention writes nothing. Token t of skill s embeds as
    10 e_s + e_{4+t}. moe: the router sends skill s to expert s (k=1), and expert s
    (ReLU) writes 10 x 10 x (token one-hot) into the dims of the *other* token of
    its pair, so the model predicts the alternation 2s, 2s+1, 2s, ... only through
    expert s. dense: hidden unit s fires on skill s (a one-hot of the skill)."""
    from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, Transformer

    moe = MoEConfig(n_experts=N_SKILLS, k=1, d_expert=8, expert_activation="relu")
    ffn = FFNConfig(kind=kind, activation="gelu", d_ff=N_SKILLS, moe=moe)
    cfg = ModelConfig(vocab_size=8, d_model=D, n_layers=1, n_heads=2, max_seq_len=16, ffn=ffn)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.zero_()
        for t in range(8):
            model.W_E.weight[t, t // 2] = 10.0
            model.W_E.weight[t, 4 + t] = 1.0
            model.W_U.weight[t, 4 + t] = 1.0
        mlp = model.blocks[0].mlp
        if kind == "moe":
            for s in range(N_SKILLS):
                mlp.W_router.weight[s, s] = 1.0
                for t in (2 * s, 2 * s + 1):
                    mlp.W_in.weight[s, 4 + t, t] = 10.0
                    mlp.W_out.weight[s, t, 4 + (t ^ 1)] = 10.0
        else:
            for s in range(N_SKILLS):
                mlp.W_in.weight[s, s] = 10.0
    return model


def built_batches(n_per_skill: int, seed: int):
    """Alternating sequences of length 8, one skill per sequence; features:
    'skill_copy' (= the skill), 'parity' (token % 2, balanced within each skill)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for s in range(N_SKILLS):
        for _ in range(n_per_skill):
            first = 2 * s + int(torch.randint(0, 2, (1,), generator=g))
            rows.append(torch.tensor([first, first ^ 1] * 4))
    ids = torch.stack(rows)
    skill = (ids // 2).clone()
    features = torch.stack([skill, ids % 2], dim=-1)
    answer = torch.ones_like(ids)
    answer[:, 0] = 0
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "answer_mask": answer,
        "skill": skill,
        "features": features,
        "example_skill": skill[:, 0],
    }
    half = ids.shape[0] // 2
    return [{k: v[:half] for k, v in batch.items()}, {k: v[half:] for k, v in batch.items()}]


SKILLS = [f"skill{s}" for s in range(N_SKILLS)]


def test_report_on_model_with_known_specialisation(tmp_path):
    from glassbox.analysis.specialisation import skill_accuracy, specialisation_report

    model = built_model("moe")
    val, test = built_batches(6, seed=0), built_batches(6, seed=1)
    assert skill_accuracy(model, test, N_SKILLS).tolist() == [1.0] * N_SKILLS
    report = specialisation_report(
        model, val, SKILLS, ["skill_copy", "parity"], causal_batches=test, plot_dir=tmp_path
    )
    s, layer = report["summary"], report["layers"]["0"]
    assert layer["grouping"] == "router"
    assert s["interp.nmi_expert_skill"] == pytest.approx(1.0)
    assert s["interp.nmi_expert_skill_label"] == pytest.approx(1.0)
    assert s["interp.purity"] == pytest.approx(1.0)
    assert s["interp.load_cv"] == pytest.approx(0.0, abs=1e-12)  # equal examples per skill
    assert s["interp.routing_entropy"] == pytest.approx(1.0)
    assert s["interp.domain_specialization"] == pytest.approx(1.0)
    assert layer["nmi_features"]["skill_copy"] == pytest.approx(1.0)
    assert layer["nmi_features"]["parity"] == pytest.approx(0.0, abs=1e-12)
    # tokens 2s, 2s+1 always go to expert s
    assert s["interp.vocab_specialization"] == pytest.approx(1.0)
    # causal: each skill's expert is found and ablating it removes that skill only
    causal = report["causal"]
    assert causal["experts"] == {f"skill{i}": {"0": [i]} for i in range(N_SKILLS)}
    assert causal["drop"] == [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    assert s["interp.selectivity"] == pytest.approx(1.0)
    assert s["interp.delta_target"] == 1.0 and s["interp.delta_others"] == 0.0
    assert all(Path(p).stat().st_size > 0 for p in report["plots"])
    # mean ablation: the ablated expert's output is its mean over both tokens of
    # its skill, which favours neither, so the prediction is back to the input token
    mean_report = specialisation_report(model, val, SKILLS, causal_batches=test, ablation="mean")
    assert mean_report["causal"]["drop"] == causal["drop"]
    # router saturation against itself is 1; against another routing lower
    same = specialisation_report(model, val, SKILLS, reference_model=model)
    assert same["summary"]["interp.router_saturation"] == 1.0


def test_report_with_a_skill_absent_from_the_data(tmp_path):
    # The suite keeps ids for skills of weight 0: they have no tokens and no answers.
    from glassbox.analysis.specialisation import specialisation_report

    model = built_model("moe")
    val, test = built_batches(6, seed=0), built_batches(6, seed=1)
    report = specialisation_report(
        model, val, SKILLS + ["absent"], causal_batches=test, plot_dir=tmp_path
    )
    causal = report["causal"]
    assert "absent" not in causal["experts"]
    assert causal["base_accuracy"][4] is None and causal["delta_target"][4] is None
    assert causal["drop"][4] == [None] * 5 and [r[4] for r in causal["drop"]] == [None] * 5
    assert report["summary"]["interp.selectivity"] == pytest.approx(1.0)
    assert report["summary"]["interp.domain_specialization"] == pytest.approx(1.0)
    assert all(Path(p).stat().st_size > 0 for p in report["plots"])


def test_report_dense_baseline_uses_kmeans_clusters():
    from glassbox.analysis.specialisation import specialisation_report

    model = built_model("dense")
    report = specialisation_report(
        model, built_batches(6, seed=0), SKILLS, ["skill_copy", "parity"], n_clusters=4
    )
    layer = report["layers"]["0"]
    assert layer["grouping"] == "kmeans" and layer["n_groups"] == 4
    # hook_post is a one-hot of the skill: k-means recovers the skills exactly
    assert report["summary"]["interp.nmi_expert_skill"] == pytest.approx(1.0)
    assert layer["nmi_features"]["parity"] == pytest.approx(0.0, abs=1e-12)
    assert report["causal"] is None and "interp.selectivity" not in report["summary"]


def test_report_end_to_end_on_skill_suite(tmp_path):
    from glassbox.analysis.routing_metrics import contingency, nmi
    from glassbox.analysis.specialisation import specialisation_report
    from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, Transformer
    from glassbox.training.data import DataConfig, build_datasets, collate

    data = build_datasets(
        DataConfig(n_train=3000, n_val=96, n_test=96, n_ood=8, cache_dir=str(tmp_path / "data"))
    )

    def batches(split):
        rows = data.splits[split]
        return [collate([rows[i] for i in range(j, j + 32)], data.pad_id) for j in (0, 32, 64)]

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=data.tokenizer.get_vocab_size(),
        d_model=32,
        n_layers=2,
        n_heads=4,
        max_seq_len=128,
        ffn=FFNConfig(kind="moe", moe=MoEConfig(n_experts=8, k=2, d_expert=16)),
    )
    model = Transformer(cfg)
    val, test = batches("val"), batches("test")
    report = specialisation_report(
        model, val, data.skill_names, data.feature_names, causal_batches=test, plot_dir=tmp_path
    )
    S = len(data.skill_names)
    summary = report["summary"]
    for key in (
        "nmi_expert_skill",
        "nmi_expert_skill_label",
        "nmi_expert_features",
        "purity",
        "load_cv",
        "routing_entropy",
        "router_entropy",
        "domain_specialization",
        "vocab_specialization",
        "selectivity",
        "delta_target",
        "delta_others",
    ):
        assert isinstance(summary[f"interp.{key}"], float), key
    # the same NMI recomputed straight from the hooks, on the tokens that have a skill
    nmis = []
    for i in (0, 1):
        layer = report["layers"][str(i)]
        assert sum(layer["load"]) == pytest.approx(1.0) and len(layer["load"]) == 8
        idx, skill = [], []
        for b in val:
            _, cache = model.run_with_cache(
                b["input_ids"], attention_mask=b["attention_mask"], names_filter="*expert_indices"
            )
            keep = b["skill"] >= 0
            idx.append(cache["expert_indices", i][keep])
            skill.append(b["skill"][keep])
        want = nmi(contingency(torch.cat(idx), torch.cat(skill), 8, S))
        assert layer["nmi_skill"] == pytest.approx(want, rel=1e-9)
        nmis.append(want)
        assert set(layer["nmi_features"]) <= set(data.feature_names)
    assert summary["interp.nmi_expert_skill"] == pytest.approx(sum(nmis) / 2)
    causal = report["causal"]
    assert len(causal["drop"]) == S and all(len(r) == S for r in causal["drop"])
    for per_layer in causal["experts"].values():
        assert all(len(es) == 2 for es in per_layer.values())  # k experts per layer
    gaps = [t - o for t, o in zip(causal["delta_target"], causal["delta_others"]) if t is not None]
    assert summary["interp.selectivity"] == pytest.approx(sum(gaps) / len(gaps))
    assert len(report["plots"]) == 2


def test_the_expert_plot_leaves_out_a_label_no_unit_saw():
    """On code every package is a domain and a sample holds a few: a column of zeros in
    every layer (a domain absent from the sample) gets no column in the heat map; the
    seen domains keep their order and their shares."""
    from glassbox.analysis.specialisation_plots import plot_expert_skill

    names = ["absent", "a", "also_absent", "b"]
    layer = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.25, 0.0, 0.75]])
    fig = plot_expert_skill({0: layer, 1: layer.flip(0)}, names, label="domain")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert ax.images[0].get_array().tolist() == [[1.0, 0.0], [0.25, 0.75]]
    assert fig.axes[-1].get_ylabel() == "P(domain | expert)"
    # nothing absent (the skill suite): every column, as before
    whole = plot_expert_skill({0: layer + 0.1}, names)
    assert len(whole.axes[0].get_xticklabels()) == 4
