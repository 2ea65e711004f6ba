"""Linear probes: a linearly encoded variable is read at ~1 and its shuffled
control at chance; the logistic regression and the AUROC agree with
closed forms (the optimum's gradient is zero; AUROC is the Mann-Whitney
statistic); a probe on a model's hook point finds a planted direction."""

from __future__ import annotations

import pytest
import torch

from glassbox.analysis.probes import (
    ProbeResult,
    auroc,
    fit_logistic,
    fit_probe,
    probe_hook,
    split_indices,
)
from glassbox.archs import ModelConfig, Transformer


def encoded(n: int, d: int, n_classes: int, strength: float, seed: int = 0):
    """activations = noise + a class-specific direction * strength."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    dirs = torch.randn(n_classes, d, generator=g)
    X = torch.randn(n, d, generator=g) + strength * dirs[y]
    return X, y


def test_binary_linear_variable_is_read_and_control_is_chance():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (1200,), generator=g)
    direction = torch.randn(32, generator=g)
    X = torch.randn(1200, 32, generator=g) + 2.0 * y[:, None] * direction
    r = fit_probe(X, y)
    assert isinstance(r, ProbeResult) and r.n_classes == 2 and r.n_test == 300
    assert r.accuracy > 0.97 and r.auroc > 0.99
    assert abs(r.control_accuracy - 0.5) < 0.08 and abs(r.control_auroc - 0.5) < 0.08
    assert r.selectivity == pytest.approx(r.accuracy - r.control_accuracy)
    assert r.selectivity > 0.35


def test_multiclass_linear_variable_with_arbitrary_label_values():
    X, y = encoded(1600, 24, 4, 1.5)
    labels = torch.tensor([3, 10, 11, 40])[y]  # label values need not be 0..C-1
    r = fit_probe(X, labels)
    assert r.n_classes == 4
    assert r.accuracy > 0.95 and r.auroc > 0.98
    assert abs(r.control_accuracy - 0.25) < 0.07 and abs(r.control_auroc - 0.5) < 0.07


def test_adam_reaches_what_lbfgs_reaches():
    X, y = encoded(300, 8, 2, 1.0, seed=5)
    a = fit_logistic(X, y, 2, optimizer="adam", max_iter=150, lr=0.1)
    b = fit_logistic(X, y, 2)
    torch.testing.assert_close(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=0.02)
    with pytest.raises(ValueError, match="optimizer"):
        fit_logistic(X, y, 2, optimizer="sgd")


def test_unrelated_variable_scores_chance():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1000, 16, generator=g)
    y = torch.randint(0, 2, (1000,), generator=g)
    r = fit_probe(X, y)
    assert abs(r.accuracy - 0.5) < 0.08 and abs(r.auroc - 0.5) < 0.08
    assert abs(r.selectivity) < 0.1


def test_logistic_regression_reaches_the_optimum():
    """The objective is strictly convex: the fit is the optimum iff its gradient
    is zero; its loss must also beat a perturbed solution."""
    X, y = encoded(400, 6, 3, 0.7, seed=3)
    wd = 1e-2
    probe = fit_logistic(X, y, 3, weight_decay=wd, standardize=False, max_iter=500)
    W = probe.W.clone().requires_grad_(True)
    b = probe.b.clone().requires_grad_(True)

    def objective(W, b):
        return torch.nn.functional.cross_entropy(X @ W.T + b, y) + wd * W.pow(2).sum()

    objective(W, b).backward()
    assert W.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4
    with torch.no_grad():
        best = objective(probe.W, probe.b)
        for _ in range(5):
            assert objective(probe.W + 0.01 * torch.randn_like(probe.W), probe.b) > best
    # standardised fit predicts what the raw fit would (up to regularisation): same argmax mostly
    std = fit_logistic(X, y, 3, weight_decay=1e-6)
    raw = fit_logistic(X, y, 3, weight_decay=1e-6, standardize=False)
    agree = (std.predict_proba(X).argmax(-1) == raw.predict_proba(X).argmax(-1)).float().mean()
    assert agree > 0.97


def mann_whitney_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2, over all pairs."""
    pos, neg = scores[positive.bool()], scores[~positive.bool()]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def test_auroc_is_the_mann_whitney_statistic():
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 4, (300,), generator=g)
    probs = (torch.randn(300, 4, generator=g) + 0.8 * torch.nn.functional.one_hot(y, 4)).softmax(-1)
    want = sum(mann_whitney_auroc(probs[:, c], y == c) for c in range(4)) / 4
    assert auroc(probs, y) == pytest.approx(want, abs=1e-5)
    # a class absent from y is left out of the mean
    y3 = y.clone()
    y3[y3 == 3] = 0
    want3 = sum(mann_whitney_auroc(probs[:, c], y3 == c) for c in range(3)) / 3
    assert auroc(probs, y3) == pytest.approx(want3, abs=1e-5)
    y2 = torch.randint(0, 2, (200,), generator=g)
    p2 = torch.rand(200, generator=g)
    probs2 = torch.stack([1 - p2, p2], -1)
    assert auroc(probs2, y2) == pytest.approx(mann_whitney_auroc(p2, y2), abs=1e-5)


def test_split_keeps_groups_together():
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(20).repeat_interleave(5)
    train, test = split_indices(100, 0.25, g, groups)
    assert len(train) + len(test) == 100
    assert not set(groups[train].tolist()) & set(groups[test].tolist())
    assert len(set(groups[test].tolist())) == 5
    with pytest.raises(ValueError):
        fit_probe(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))


def test_probe_hook_finds_a_planted_direction():
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)
    ).eval()
    marked = torch.arange(40) % 3 == 0  # the variable: is the token a multiple of 3
    with torch.no_grad():
        u = torch.randn(32)
        model.W_E.weight[marked] += 0.3 * u / u.norm()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 40, (40, 12), generator=g)
    labels = marked[tokens].long()
    labels[:, 0] = -1  # does not apply: left out
    r = probe_hook(model, tokens, "hook_embed", labels, split_by_example=True)
    assert r.n_train + r.n_test == 40 * 11
    assert r.accuracy > 0.97 and abs(r.control_accuracy - r.majority) < 0.1
    # a head's slice of hook_z through `transform`
    r2 = probe_hook(model, tokens, "blocks.0.attn.hook_z", labels, transform=lambda z: z[:, :, 0])
    assert r2.n_train + r2.n_test == 40 * 11 and 0 <= r2.accuracy <= 1
