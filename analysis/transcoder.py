"""Transcoder metrics, named as SAELens names them.

Sparsity and health (on a latent matrix, (N, d_latent) or (..., d_latent)):
    l0              mean number of nonzero latents per token
    dead_fraction   share of latents that never fire on the given tokens
    dense_fraction  share of latents that fire on more than half of the tokens

Fidelity (a transcoder against the MLP it replaces):
    fvu               sum ||y - y_hat||^2 / sum ||y - mean(y)||^2
    ce_loss_recovered (CE_ablated - CE_spliced) / (CE_ablated - CE_clean): 1 when the
                      spliced model is as good as the clean one, 0 when it is no
                      better than the MLP output ablated (zeroed, or replaced by its
                      mean over the data: `splice_fidelity(..., ablation=)` says which)
    kl_to_clean       mean over tokens of KL(p_clean || p_spliced)

Ground truth (Karvonen et al.'s board-state coverage, as used by MoE-X):
    coverage          for every binary ground-truth feature, the best F1 of any single
                      unit (latent or neuron) thresholded at any of its quantile
                      thresholds; the mean over features. It works on any (N, units)
                      activation matrix, so a dense model's neurons
                      (`blocks.i.mlp.hook_post`) are scored the same way.

Compute: `compute_cost` times the two routes to features in one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# ------------------------------------------------------------- sparsity, health


def _flat(latents: Tensor, mask: Tensor | None = None) -> Tensor:
    """(..., U) -> (N, U), keeping the tokens where mask (...) is nonzero."""
    flat = latents.reshape(-1, latents.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1).bool()]
    return flat


def firing_rate(latents: Tensor, mask: Tensor | None = None) -> Tensor:
    """(U,) share of tokens on which each latent is nonzero."""
    flat = _flat(latents, mask)
    return (flat != 0).float().mean(0)


def l0(latents: Tensor, mask: Tensor | None = None) -> float:
    """Mean number of nonzero latents per token. latents (..., U); mask (...) optional."""
    return float((_flat(latents, mask) != 0).sum(-1).float().mean())


def dead_fraction(latents: Tensor, mask: Tensor | None = None) -> float:
    """Share of latents that are zero on every token given."""
    return float((firing_rate(latents, mask) == 0).float().mean())


def dense_fraction(latents: Tensor, mask: Tensor | None = None, threshold: float = 0.5) -> float:
    """Share of latents firing on more than `threshold` of the tokens (default: most)."""
    return float((firing_rate(latents, mask) > threshold).float().mean())


# --------------------------------------------------------------------- fidelity


def fvu(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of variance unexplained: sum ||target - pred||^2 over the variance of
    target around its mean over tokens. pred, target (..., d); mask (...) optional.
    0 for a perfect fit, 1 for predicting the mean."""
    p, t = _flat(pred, mask).double(), _flat(target, mask).double()
    return float((t - p).pow(2).sum() / (t - t.mean(0)).pow(2).sum())


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)."""
    return (ce_ablated - ce_spliced) / (ce_ablated - ce_clean)


def _batch_tokens(batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(input_ids, attention_mask, scoring mask) of a dict batch or an ids tensor."""
    if isinstance(batch, Tensor):
        return batch, None, None
    ids = batch["input_ids"]
    att = batch.get("attention_mask")
    return ids, att, batch.get("loss_mask", att)


def _next_token_terms(logits: Tensor, ids: Tensor, score: Tensor | None):
    """Per-position log-probs (B, T-1, V), the targets (B, T-1) and weights (B, T-1)
    of next-token prediction; weight = score mask of the target token."""
    logp = logits[:, :-1].float().log_softmax(-1)
    w = torch.ones_like(ids[:, 1:], dtype=torch.float32) if score is None else score[:, 1:].float()
    return logp, ids[:, 1:], w


@torch.no_grad()
def splice_fidelity(
    model,
    spliced,
    batches: Iterable,
    layers: Sequence[int] | None = None,
    ablation: str = "zero",
) -> dict[str, Any]:
    """Fidelity of the transcoders spliced into `spliced` against the clean `model`.

    batches: dicts with input_ids (B, T) (+ attention_mask, loss_mask: the loss is
    scored on the tokens loss_mask marks, else on every real token) or id tensors;
    iterated once, or twice for ablation="mean" (the MLP outputs' mean over the
    real tokens is taken in a first pass). layers: the spliced layers (default:
    every layer whose FFN is a transcoder in `spliced` and not in `model`).

    Returns ce_clean, ce_spliced, ce_ablated, ce_loss_recovered, kl_to_clean,
    ablation, fvu (mean over layers), and per layer `layers[i]`: fvu, l0,
    dead_fraction, dense_fraction of the transcoder on the clean model's MLP input
    (the post-hoc view: every transcoder sees the input the MLP saw).
    """
    from glassbox.archs.transcoder import Transcoder

    if ablation not in ("zero", "mean"):
        raise ValueError(f"splice_fidelity: ablation={ablation!r}: one of zero, mean")
    if layers is None:
        layers = [
            i
            for i, (b, s) in enumerate(zip(model.blocks, spliced.blocks))
            if isinstance(s.mlp, Transcoder) and not isinstance(b.mlp, Transcoder)
        ]
    layers = list(layers)
    if not layers:
        raise ValueError("splice_fidelity: no spliced layers (no transcoder in `spliced`)")
    model.eval(), spliced.eval()
    outs = [f"blocks.{i}.hook_mlp_out" for i in layers]
    ins = [f"blocks.{i}.hook_mlp_in" for i in layers]

    means: dict[str, Tensor] = {}
    if ablation == "mean":
        sums, n = {}, 0
        for batch in batches:
            ids, att, _ = _batch_tokens(batch)
            _, cache = model.run_with_cache(ids, attention_mask=att, names_filter=outs)
            m = att.bool() if att is not None else torch.ones_like(ids, dtype=torch.bool)
            for name in outs:
                sums[name] = sums.get(name, 0) + cache[name][m].double().sum(0)
            n += int(m.sum())
        means = {k: (v / n).to(next(model.parameters()).dtype) for k, v in sums.items()}

    def ablate(act: Tensor, hook) -> Tensor:
        return torch.zeros_like(act) if ablation == "zero" else means[hook.name].expand_as(act)

    tot = dict(clean=0.0, spliced=0.0, ablated=0.0, kl=0.0, w=0.0)
    per = {i: dict(sse=0.0, ysum=0.0, ysq=0.0, n=0, lat=[]) for i in layers}
    for batch in batches:
        ids, att, score = _batch_tokens(batch)
        logits, cache = model.run_with_cache(ids, attention_mask=att, names_filter=ins + outs)
        logits_s = spliced(ids, attention_mask=att)
        with model.hooks([(outs, ablate)]):
            logits_a = model(ids, attention_mask=att)
        lp, tgt, w = _next_token_terms(logits, ids, score)
        for key, lg in (("clean", logits), ("spliced", logits_s), ("ablated", logits_a)):
            lpx = lp if key == "clean" else _next_token_terms(lg, ids, score)[0]
            nll = -lpx.gather(-1, tgt[..., None])[..., 0]
            tot[key] += float((nll * w).sum())
        lps = _next_token_terms(logits_s, ids, score)[0]
        kl = (lp.exp() * (lp - lps)).sum(-1)
        tot["kl"] += float((kl * w).sum())
        tot["w"] += float(w.sum())
        m = att.bool() if att is not None else torch.ones_like(ids, dtype=torch.bool)
        for i, ni, no in zip(layers, ins, outs):
            tc = spliced.blocks[i].mlp
            x, y = cache[ni][m], cache[no][m].double()
            lat = tc.encode(x)
            pred = tc.decode(lat, x).double()
            p = per[i]
            p["sse"] += float((y - pred).pow(2).sum())
            p["ysum"] = p["ysum"] + y.sum(0)
            p["ysq"] += float(y.pow(2).sum())
            p["n"] += y.shape[0]
            p["lat"].append((lat != 0).to(torch.int32))
    n_w = tot["w"]
    ce = {k: tot[k] / n_w for k in ("clean", "spliced", "ablated")}
    out: dict[str, Any] = {
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_ablated": ce["ablated"],
        "ce_loss_recovered": ce_loss_recovered(ce["clean"], ce["spliced"], ce["ablated"]),
        "kl_to_clean": tot["kl"] / n_w,
        "ablation": ablation,
        "layers": {},
    }
    for i in layers:
        p = per[i]
        var = p["ysq"] - float(p["ysum"].pow(2).sum()) / p["n"]
        active = torch.cat(p["lat"])
        out["layers"][i] = {
            "fvu": p["sse"] / var,
            "l0": l0(active),
            "dead_fraction": dead_fraction(active),
            "dense_fraction": dense_fraction(active),
        }
    out["fvu"] = sum(v["fvu"] for v in out["layers"].values()) / len(layers)
    return out


def kl_to_clean(logits_clean: Tensor, logits_other: Tensor, mask: Tensor | None = None) -> float:
    """Mean over positions of KL(softmax(clean) || softmax(other)). logits (..., V)."""
    lp = logits_clean.float().log_softmax(-1)
    lq = logits_other.float().log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    if mask is None:
        return float(kl.mean())
    w = mask.float()
    return float((kl * w).sum() / w.sum())


# ------------------------------------------------------------ collecting data


@dataclass
class Collected:
    """Activations at hook points over the real tokens of a set of batches.

    acts[name]: (N, units) float32, one row per real token; where (N, 2): the
    (sequence, position) of each row in `sequences` (each a (T,) id tensor, as in
    its batch, padding included); features (N, F) and skill (N,) when the batches
    carry them (-1: not applicable)."""

    acts: dict[str, Tensor]
    where: Tensor
    sequences: list[Tensor]
    features: Tensor | None = None
    skill: Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return self.where.shape[0]


@torch.no_grad()
def collect_activations(
    model, batches: Iterable, names: Sequence[str], max_tokens: int | None = None
) -> Collected:
    """Run `model` over `batches` (dicts with input_ids, attention_mask, features,
    skill, as training.data.collate makes them; or id tensors) and keep the
    activations at hook points `names` (each (B, T, units)) on the real tokens,
    on the CPU, stopping after `max_tokens` tokens."""
    model.eval()
    acts: dict[str, list[Tensor]] = {n: [] for n in names}
    where, seqs, feats, skills = [], [], [], []
    n = 0
    for batch in batches:
        ids, att, _ = _batch_tokens(batch)
        _, cache = model.run_with_cache(ids, attention_mask=att, names_filter=list(names))
        m = att.bool() if att is not None else torch.ones_like(ids, dtype=torch.bool)
        for name in names:
            acts[name].append(cache[name][m].float().cpu())
        s, p = m.nonzero(as_tuple=True)
        where.append(torch.stack([s.cpu() + len(seqs), p.cpu()], 1))
        seqs.extend(ids.cpu().unbind(0))
        if isinstance(batch, dict) and "features" in batch:
            feats.append(batch["features"][m].cpu())
        if isinstance(batch, dict) and "skill" in batch:
            skills.append(batch["skill"][m].cpu())
        n += int(m.sum())
        if max_tokens is not None and n >= max_tokens:
            break
    cut = slice(0, max_tokens)
    return Collected(
        acts={k: torch.cat(v)[cut] for k, v in acts.items()},
        where=torch.cat(where)[cut],
        sequences=seqs,
        features=torch.cat(feats)[cut] if feats else None,
        skill=torch.cat(skills)[cut] if skills else None,
    )


# ------------------------------------------------------------------ ground truth


def ground_truth_labels(
    features: Tensor,
    feature_names: Sequence[str],
    feature_kinds: Sequence[str] | None = None,
    skill: Tensor | None = None,
    skill_names: Sequence[str] | None = None,
    max_values: int = 8,
    min_count: int = 5,
) -> tuple[Tensor, list[str]]:
    """Binary ground-truth features from the skill suite's variables.

    features (N, F) integer, -1 where a variable does not apply; kinds as in
    `SuiteData.feature_kinds` (bool | int | cat | pos | token; inferred when None:
    values within {-1, 0, 1} are bool, others cat).
    - bool: one feature, named as the variable, positive where it is 1.
    - int, cat: one-vs-rest, "name=v" for each of the `max_values` most frequent
      values v (a depth, a digit, a category...).
    - pos, token: left out; a position or a token id is a pointer to another token,
      not a property a single unit could threshold.
    - skill (N,) with skill_names: one-vs-rest "skill=<name>".
    A feature needs at least `min_count` positives and `min_count` negatives among
    the tokens it applies to. Returns labels (N, G) int8: 1 true, 0 false, -1 not
    applicable; and the G names.
    """
    cols: list[Tensor] = []
    names: list[str] = []

    def add(valid: Tensor, pos: Tensor, name: str) -> None:
        n_pos = int(pos.sum())
        if n_pos >= min_count and int(valid.sum()) - n_pos >= min_count:
            lab = torch.full(valid.shape, -1, dtype=torch.int8)
            lab[valid] = 0
            lab[pos] = 1
            cols.append(lab)
            names.append(name)

    for j, name in enumerate(feature_names):
        v = features[:, j]
        valid = v >= 0
        kind = feature_kinds[j] if feature_kinds is not None else None
        if kind is None:
            kind = "bool" if bool(((v >= -1) & (v <= 1)).all()) else "cat"
        if kind in ("pos", "token") or not bool(valid.any()):
            continue
        if kind == "bool":
            add(valid, v == 1, name)
            continue
        values, counts = v[valid].unique(return_counts=True)
        for val in values[counts.argsort(descending=True)[:max_values]].tolist():
            add(valid, v == val, f"{name}={val}")
    if skill is not None and skill_names is not None:
        for s, sname in enumerate(skill_names):
            add(skill >= 0, skill == s, f"skill={sname}")
    if not cols:
        return torch.zeros(features.shape[0], 0, dtype=torch.int8), []
    return torch.stack(cols, 1), names


@dataclass
class CoverageResult:
    """Best single unit per feature, and best feature per unit, by F1.

    Per feature (G,): best_f1, best_unit, best_threshold (the unit predicts the
    feature where its activation > threshold), best_precision, best_recall,
    n_positive. Per unit (U,): unit_feature (its best feature), unit_f1,
    unit_precision (precision for that feature at the F1-best threshold), fires
    (whether the unit is ever above its lowest threshold). coverage: mean of
    best_f1 over the features with positives."""

    coverage: float
    feature_names: list[str]
    best_f1: Tensor
    best_unit: Tensor
    best_threshold: Tensor
    best_precision: Tensor
    best_recall: Tensor
    n_positive: Tensor
    unit_feature: Tensor
    unit_f1: Tensor
    unit_precision: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: coverage, and per feature its best unit and scores."""
        return {
            "coverage": self.coverage,
            "features": {
                n: {
                    "f1": float(self.best_f1[g]),
                    "unit": int(self.best_unit[g]),
                    "threshold": float(self.best_threshold[g]),
                    "precision": float(self.best_precision[g]),
                    "recall": float(self.best_recall[g]),
                }
                for g, n in enumerate(self.feature_names)
            },
            **self.extra,
        }


def unit_thresholds(
    acts: Tensor, n_thresholds: int = 16, max_tokens: int = 16384
) -> tuple[Tensor, Tensor]:
    """Candidate thresholds per unit, lowest first: (thresholds (Q, U), density (Q, U)).

    The thresholds are each unit's activation quantiles at firing rates spaced
    geometrically from 0.95 down to max(1/N, 1e-4), so that common features (half
    the tokens) and rare ones (0.01%) both get candidates; density[q, u] is the share
    of rows with activation > thresholds[q, u] (at most the rate; less where values
    tie, e.g. the zeros of a sparse latent). Computed on at most `max_tokens` evenly
    spaced rows."""
    N, U = acts.shape
    rows = acts if N <= max_tokens else acts[torch.linspace(0, N - 1, max_tokens).long()]
    n = rows.shape[0]
    lo = torch.tensor(max(1.0 / n, 1e-4)).log10()
    rates = torch.logspace(float(torch.tensor(0.95).log10()), float(lo), n_thresholds)
    # Row of the ascending sort at quantile level 1 - rate, rounded up: activation >
    # threshold then holds on at most a `rate` share of the rows.
    idx = ((1 - rates) * (n - 1)).ceil().long().clamp(0, n - 1)
    thr = torch.empty(n_thresholds, U)
    dens = torch.empty(n_thresholds, U)
    step = max(1, (1 << 24) // n)  # units per chunk: a (units, n) float32 copy of <= 64 MiB
    for u in range(0, U, step):
        col = rows[:, u : u + step].T.float().contiguous().sort(-1).values  # (Uc, n) ascending
        t = col[:, idx]  # (Uc, Q)
        thr[:, u : u + step] = t.T
        below = torch.searchsorted(col, t.contiguous(), right=True)
        dens[:, u : u + step] = 1 - below.T.float() / n
    return thr, dens


def _count_dense(a: Tensor, m: Tensor, thr: Tensor, G: int, exclude: bool):
    """Counts for the thresholds thr (Q', U) one matrix product each: (tp, pp) of
    shapes (Q', U, G) and (Q', U, G or 1)."""
    tp, pp = [], []
    for t in thr:
        pred = (a > t).float()  # (C, U)
        counts = pred.T @ m  # (U, G or 2G)
        tp.append(counts[:, :G])
        pp.append(counts[:, G:] if exclude else pred.sum(0)[:, None])
    return torch.stack(tp).double(), torch.stack(pp).double()


def _bin_sparse(a: Tensor, m: Tensor, thr: Tensor, hist: Tensor, max_pairs: int) -> None:
    """Add into hist (U * (Q' + 1), width + 1) the (token, unit) pairs above the
    lowest of thr (Q', U), binned by how many thresholds lie below the activation:
    per bin the pairs' label rows, and in the last column their count."""
    n_bins = thr.shape[0] + 1
    n_idx, u_idx = (a > thr[0]).nonzero(as_tuple=True)
    # float32 counts are exact up to 2^24, far more than one chunk's tokens.
    part = torch.zeros(hist.shape, dtype=torch.float32)
    for s in range(0, n_idx.numel(), max_pairs):
        n_s, u_s = n_idx[s : s + max_pairs], u_idx[s : s + max_pairs]
        b = (a[n_s, u_s][None] > thr[:, u_s]).sum(0)  # 1..Q': thresholds below
        src = torch.cat([m[n_s], torch.ones(n_s.numel(), 1)], 1)
        part.index_add_(0, u_s * n_bins + b, src)
    hist += part


@torch.no_grad()
def coverage(
    acts: Tensor,
    labels: Tensor,
    feature_names: Sequence[str] | None = None,
    n_thresholds: int = 16,
    not_applicable: str = "negative",
    chunk_tokens: int = 4096,
    sparse_below: float = 0.1,
) -> CoverageResult:
    """Ground-truth coverage of a set of units.

    acts (N, U): activations of U units (transcoder latents, MLP neurons, ...) on N
    tokens. labels (N, G): binary features, 1 true, 0 false, -1 not applicable (bool
    also accepted). A unit predicts a feature where its activation > t, for t one of
    `unit_thresholds` (n_thresholds quantiles per unit; a unit reading a feature by
    being low is not credited: pass -acts as more units for that). not_applicable:
    "negative" (default) counts tokens where a feature does not apply as negatives
    (a "carry" latent must not fire outside additions); "exclude" scores each
    feature only on the tokens where it applies.

    Counting: thresholds above which more than `sparse_below` of all (token, unit)
    pairs lie take one matrix product each (O(N U G), in token chunks); the rest,
    where pairs are few (every threshold of a sparse latent), take a histogram over
    the pairs, O(pairs x G). No (N, U, G) tensor is formed.
    """
    if not_applicable not in ("negative", "exclude"):
        raise ValueError(f"coverage: not_applicable={not_applicable!r}: one of negative, exclude")
    N, U = acts.shape
    G = labels.shape[1]
    if labels.shape[0] != N:
        raise ValueError(f"coverage: acts has {N} rows, labels {labels.shape[0]}")
    names = list(feature_names) if feature_names is not None else [str(g) for g in range(G)]
    lab = labels.to(torch.int8)
    pos = lab == 1
    exclude = not_applicable == "exclude"
    thr, dens = unit_thresholds(acts, n_thresholds)  # (Q, U) each, thresholds ascending
    Q = thr.shape[0]
    sparse = dens.mean(1) <= sparse_below  # (Q,): the densest levels come first
    q0 = int(sparse.float().argmax()) if bool(sparse.any()) else Q
    tp = torch.zeros(Q, U, G, dtype=torch.float64)
    pp = torch.zeros(Q, U, G if exclude else 1, dtype=torch.float64)
    width = 2 * G if exclude else G
    hist = torch.zeros(U * (Q - q0 + 1), width + 1, dtype=torch.float64)
    max_pairs = max(1, (1 << 24) // (width + 1))
    for c in range(0, N, chunk_tokens):
        a = acts[c : c + chunk_tokens].float()
        m = pos[c : c + chunk_tokens].float()  # (C, G)
        if exclude:
            m = torch.cat([m, (lab[c : c + chunk_tokens] >= 0).float()], 1)  # (C, 2G)
        if q0 > 0:
            t_, p_ = _count_dense(a, m, thr[:q0], G, exclude)
            tp[:q0] += t_
            pp[:q0] += p_
        if q0 < Q:
            _bin_sparse(a, m, thr[q0:], hist, max_pairs)
    if q0 < Q:
        # Pairs above threshold q = the pairs in the bins past q, summed from the top.
        h = hist.view(U, Q - q0 + 1, width + 1)
        above = h.flip(1).cumsum(1).flip(1)[:, 1:].permute(1, 0, 2)  # (Q - q0, U, width + 1)
        tp[q0:] = above[..., :G]
        pp[q0:] = above[..., G:width] if exclude else above[..., width:]
    P = pos.sum(0).double()  # (G,)
    denom = pp + P  # 2TP + FP + FN = (TP + FP) + (TP + FN)
    zero = torch.zeros((), dtype=torch.float64)
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), zero)
    precision = torch.where(pp > 0, tp / pp.clamp_min(1), zero).expand(Q, U, G)

    best_f1, flat = f1.reshape(Q * U, G).max(0)
    bq, bu = flat // U, flat % U
    g_idx = torch.arange(G)
    uf1, uflat = f1.permute(1, 0, 2).reshape(U, Q * G).max(1)
    uq, ug = uflat // G, uflat % G
    has_pos = P > 0
    cov = float(best_f1[has_pos].mean()) if bool(has_pos.any()) else float("nan")
    return CoverageResult(
        coverage=cov,
        feature_names=names,
        best_f1=best_f1.float(),
        best_unit=bu,
        best_threshold=thr[bq, bu],
        best_precision=precision[bq, bu, g_idx].float(),
        best_recall=(tp[bq, bu, g_idx] / P.clamp_min(1)).float(),
        n_positive=P.long(),
        unit_feature=ug,
        unit_f1=uf1.float(),
        unit_precision=precision[uq, torch.arange(U), ug].float(),
        extra={"not_applicable": not_applicable, "n_features": int(has_pos.sum())},
    )


# ----------------------------------------------------------------------- compute


def compute_cost(
    by_construction: Callable[[], Any],
    post_hoc_fit: Callable[[], Any],
    post_hoc_run: Callable[[], Any],
    repeats: int = 1,
) -> dict[str, float]:
    """Wall-clock cost of the two routes to features, measured in one run.

    by_construction(): the features of a model built with transcoders (a forward
    pass with the latents cached). post_hoc_fit(): fitting transcoders to a dense
    model; post_hoc_run(): reading the features with them (the dense forward pass
    with the MLP inputs cached, then the encoders). The run callables are timed
    `repeats` times (best of), the fit once. Returns seconds and
    ratio = (fit + run) / by_construction."""

    def best(fn: Callable[[], Any], n: int) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    bc = best(by_construction, repeats)
    fit = best(post_hoc_fit, 1)
    run = best(post_hoc_run, repeats)
    return {
        "by_construction_s": bc,
        "post_hoc_fit_s": fit,
        "post_hoc_run_s": run,
        "post_hoc_s": fit + run,
        "ratio": (fit + run) / bc,
        "ratio_run_only": run / bc,
    }


__all__ = [
    "Collected",
    "CoverageResult",
    "ce_loss_recovered",
    "collect_activations",
    "compute_cost",
    "coverage",
    "dead_fraction",
    "dense_fraction",
    "firing_rate",
    "fvu",
    "ground_truth_labels",
    "kl_to_clean",
    "l0",
    "splice_fidelity",
    "unit_thresholds",
]
