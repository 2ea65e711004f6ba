"""Expert specialisation metrics on constructed routings with known answers, and the
report runner on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.moe import (
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
