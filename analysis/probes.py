"""Linear probes: is a ground-truth variable linearly readable at a hook point?

A multinomial logistic regression is trained on the activations of some tokens
and tested on others (a random split of tokens, or of groups such as examples).
Beside it, a control probe: the same probe, the same split, trained and tested on
the labels shuffled across tokens. The control measures what a probe of this
capacity scores when the activations carry nothing about the labels (chance, plus
what it can memorise); `selectivity = accuracy - control_accuracy` (after
Hewitt & Liang 2019, with shuffled labels as the control task).

Accuracy and AUROC come from torchmetrics. AUROC is binary for two classes and,
for more, the one-vs-rest AUROC averaged over the classes that occur in the test
split (a class absent there has no defined AUROC).

Training: full-batch L-BFGS (default) or Adam on the mean cross-entropy plus
`weight_decay * ||W||^2` (biases not decayed), on features standardised with the
train split's mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, multiclass_accuracy


@dataclass
class ProbeResult:
    accuracy: float  # test accuracy of the probe
    auroc: float  # test AUROC (one-vs-rest mean over classes present for > 2 classes)
    control_accuracy: float  # the same probe on shuffled labels
    control_auroc: float
    selectivity: float  # accuracy - control_accuracy
    majority: float  # share of the most frequent class in the test split (chance level)
    n_train: int
    n_test: int
    n_classes: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LogisticRegression:
    """A fitted probe: logits = ((x - mean) / std) @ W.T + b."""

    W: Tensor  # (n_classes, d)
    b: Tensor  # (n_classes,)
    mean: Tensor  # (d,)
    std: Tensor  # (d,)

    def logits(self, X: Tensor) -> Tensor:  # (N, d) -> (N, n_classes)
        return ((X.float() - self.mean) / self.std) @ self.W.T + self.b

    def predict_proba(self, X: Tensor) -> Tensor:
        return self.logits(X).softmax(-1)


def fit_logistic(
    X: Tensor,  # (N, d)
    y: Tensor,  # (N,) int in 0 .. n_classes-1
    n_classes: int,
    weight_decay: float = 1e-3,
    optimizer: str = "lbfgs",
    max_iter: int = 200,
    lr: float = 0.05,
    standardize: bool = True,
) -> LogisticRegression:
    """Multinomial logistic regression minimising mean CE + weight_decay * ||W||^2.

    optimizer: lbfgs (full batch, strong-Wolfe line search, up to max_iter steps)
    | adam (full batch, max_iter steps at learning rate lr). Deterministic: the
    weights start at zero (the problem is convex)."""
    X = X.float()
    d = X.shape[1]
    if standardize:
        mean, std = X.mean(0), X.std(0, unbiased=False).clamp(min=1e-6)
    else:
        mean, std = torch.zeros(d), torch.ones(d)
    Z = (X - mean) / std
    W = torch.zeros(n_classes, d, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)

    def objective() -> Tensor:
        return F.cross_entropy(Z @ W.T + b, y) + weight_decay * W.pow(2).sum()

    with torch.enable_grad():
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(
                [W, b],
                lr=1.0,
                max_iter=max_iter,
                tolerance_grad=1e-9,
                tolerance_change=1e-12,
                history_size=20,
                line_search_fn="strong_wolfe",
            )

            def closure() -> Tensor:
                opt.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            opt.step(closure)
        elif optimizer == "adam":
            opt = torch.optim.Adam([W, b], lr=lr)
            for _ in range(max_iter):
                opt.zero_grad()
                objective().backward()
                opt.step()
        else:
            raise ValueError(f"optimizer={optimizer!r}: one of lbfgs, adam")
    return LogisticRegression(W.detach(), b.detach(), mean, std)


def auroc(probs: Tensor, y: Tensor) -> float:
    """Binary AUROC for two classes; for more, the mean one-vs-rest AUROC over the
    classes that have both positives and negatives in `y`. probs (N, C), y (N,)."""
    C = probs.shape[1]
    if C == 2:
        if y.min() == y.max():
            return float("nan")
        return float(binary_auroc(probs[:, 1], y))
    scores = [
        float(binary_auroc(probs[:, c], (y == c).long()))
        for c in range(C)
        if 0 < int((y == c).sum()) < len(y)
    ]
    return sum(scores) / len(scores) if scores else float("nan")


def split_indices(
    n: int, test_fraction: float, generator: torch.Generator, groups: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """A random train/test split of n rows; with `groups` (N,), whole groups go to
    one side (e.g. all tokens of one example)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1)")
    if groups is None:
        perm = torch.randperm(n, generator=generator)
        n_test = min(max(1, round(n * test_fraction)), n - 1)
        return perm[n_test:], perm[:n_test]
    ids = groups.unique()
    perm = ids[torch.randperm(len(ids), generator=generator)]
    n_test = min(max(1, round(len(ids) * test_fraction)), len(ids) - 1)
    test = torch.isin(groups, perm[:n_test])
    return (~test).nonzero().flatten(), test.nonzero().flatten()


def _evaluate(probe: LogisticRegression, X: Tensor, y: Tensor, n_classes: int) -> tuple:
    probs = probe.predict_proba(X)
    acc = float(multiclass_accuracy(probs, y, num_classes=n_classes, average="micro"))
    return acc, auroc(probs, y)


def fit_probe(
    X: Tensor,  # (N, d) activations
    labels: Tensor,  # (N,) integer labels (any values; mapped to classes 0 .. C-1)
    test_fraction: float = 0.25,
    seed: int = 0,
    groups: Tensor | None = None,  # (N,) keep each group on one side of the split
    weight_decay: float = 1e-3,
    optimizer: str = "lbfgs",
    max_iter: int = 200,
) -> ProbeResult:
    """Train and test a probe and its shuffled-label control on (X, labels)."""
    X = X.detach().reshape(len(X), -1).float().cpu()
    values, y = labels.detach().cpu().long().unique(return_inverse=True)
    C = len(values)
    if C < 2:
        raise ValueError(f"a probe needs at least two label values, got {values.tolist()}")
    g = torch.Generator().manual_seed(seed)
    train, test = split_indices(len(X), test_fraction, g, None if groups is None else groups.cpu())
    y_control = y[torch.randperm(len(y), generator=g)]

    def run(target: Tensor) -> tuple[float, float]:
        probe = fit_logistic(X[train], target[train], C, weight_decay, optimizer, max_iter)
        return _evaluate(probe, X[test], target[test], C)

    acc, au = run(y)
    c_acc, c_au = run(y_control)
    majority = float(y[test].bincount(minlength=C).max()) / len(test)
    return ProbeResult(acc, au, c_acc, c_au, acc - c_acc, majority, len(train), len(test), C)


@torch.no_grad()
def hook_activations(
    model,
    tokens: Tensor,  # (B, T)
    hook_name: str,
    attention_mask: Tensor | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Activations of one hook point flattened per token: (B, T, d).

    transform maps the cached activation (B, T, ...) first, e.g.
    `lambda z: z[:, :, head]` for one head of `attn.hook_z`."""
    _, cache = model.run_with_cache(tokens, attention_mask=attention_mask, names_filter=[hook_name])
    act = cache[hook_name]
    if transform is not None:
        act = transform(act)
    return act.reshape(*act.shape[:2], -1)


def probe_hook(
    model,
    tokens: Tensor,  # (B, T)
    hook_name: str,
    labels: Tensor,  # (B, T) ground truth per token, -1 where it does not apply
    attention_mask: Tensor | None = None,
    split_by_example: bool = False,
    transform: Callable[[Tensor], Tensor] | None = None,
    **kwargs,
) -> ProbeResult:
    """Probe `hook_name` for `labels` on the tokens where labels >= 0.

    split_by_example keeps all tokens of an example on one side of the split.
    Other keyword arguments go to `fit_probe`."""
    act = hook_activations(model, tokens, hook_name, attention_mask, transform)
    keep = labels >= 0
    if attention_mask is not None:
        keep &= attention_mask.bool()
    groups = None
    if split_by_example:
        groups = torch.arange(len(tokens))[:, None].expand_as(labels)[keep.cpu()]
    return fit_probe(act[keep], labels[keep], groups=groups, **kwargs)
