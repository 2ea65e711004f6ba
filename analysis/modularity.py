"""Modularity: does a skill live in few of a layer's units, and does removing them
spare the other skills? EMO's expert subsets (keep 25% of the experts, Ai2 2026)
and Monet's removal of a domain's experts (delta target / delta others, ICLR 2025).

Groups of units, per layer:
    moe     its experts
    dense   its MLP neurons in `n_groups` clusters of equal size (balanced k-means of
            the neurons' activation profiles over validation tokens), as many as the
            MoE has experts, so that dense is cut at the same grain

A skill's use of group g: over the real tokens of the skill's validation examples,
the gate weight the router gives expert g (moe), or the |activation| of the cluster's
neurons (dense), as a share of the skill's total. The skill's groups are its top
`keep` share of each layer's groups (25%: 8 of 32; never fewer than a MoE's k).

Interventions, on the test examples:
    moe     a removed expert is never chosen (archs.moe_interventions.remove_experts): every token
            takes its k among the rest, as in a model pruned to them
    dense   a removed cluster's neurons are zero (blocks.{i}.mlp.hook_post)

Scores, from answer accuracy under teacher forcing (analysis.specialisation.
skill_accuracy), per skill s and their mean over the skills:
    keep{p}_cost    acc_s(intact) - acc_s(only s's groups kept)                lower better
    delta_target    acc_s(intact) - acc_s(s's groups removed)                  higher better
    delta_others    mean over t != s of acc_t(intact) - acc_t(s's groups removed)  lower better

    from glassbox.analysis.modularity import modularity
    mod = modularity(model, val_batches, test_batches, suite.skill_names)
    mod.summary()   # {"interp.keep25_cost": ..., "interp.delta_target": ..., ...}
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.activations import collect_activations
from glassbox.analysis.routing_metrics import kmeans_centres
from glassbox.analysis.specialisation import routed_and_clustered, skill_accuracy
from glassbox.archs.moe_interventions import remove_experts

N_GROUPS = 32  # dense clusters per layer: the shipped MoE's experts
KEEP = 0.25  # share of a layer's groups kept for a skill (EMO's 25%)
MAX_PROFILE_TOKENS = 4000  # validation tokens a dense neuron's profile is read on


@dataclass
class Modularity:
    """What `modularity` measured. Accuracies are shares in [0, 1]."""

    keep: float  # share of each layer's groups kept for a skill
    n_kept: dict[int, int]  # layer -> groups kept for a skill
    n_groups: dict[int, int]  # layer -> groups (experts or clusters)
    skills: list[str]
    groups: dict[str, dict[int, list[int]]]  # skill -> layer -> its groups, most used first
    base: list[float]  # (S,) intact accuracy per skill
    kept: list[float]  # (S,) accuracy on each skill with only its groups kept
    removed: list[list[float]]  # (S, S) row s: accuracy on every skill, s's groups removed
    partition: dict[int, list[int]] = field(default_factory=dict)  # dense layer -> neuron's cluster

    @property
    def prefix(self) -> str:
        return f"keep{round(100 * self.keep)}"

    def per_skill(self) -> dict[str, dict[str, float]]:
        """{score: {skill: value}} for keep cost, delta target and delta others."""
        S = len(self.skills)
        out: dict[str, dict[str, float]] = {f"{self.prefix}_cost": {}, "delta_target": {}}
        out["delta_others"] = {}
        for s, name in enumerate(self.skills):
            if math.isnan(self.base[s]) or math.isnan(self.kept[s]):
                continue
            out[f"{self.prefix}_cost"][name] = self.base[s] - self.kept[s]
            out["delta_target"][name] = self.base[s] - self.removed[s][s]
            drops = [
                self.base[t] - self.removed[s][t]
                for t in range(S)
                if t != s and not math.isnan(self.base[t])
            ]
            out["delta_others"][name] = sum(drops) / len(drops) if drops else 0.0
        return out

    def summary(self) -> dict[str, float]:
        """interp.<score> (mean over skills) and interp.<score>.<skill>."""
        out: dict[str, float] = {}
        for score, by_skill in self.per_skill().items():
            if by_skill:
                out[f"interp.{score}"] = sum(by_skill.values()) / len(by_skill)
            out.update({f"interp.{score}.{name}": v for name, v in by_skill.items()})
        return out

    def details(self) -> dict[str, Any]:
        return {
            "keep": self.keep,
            "n_kept": self.n_kept,
            "n_groups": self.n_groups,
            "groups": self.groups,
            "base_accuracy": dict(zip(self.skills, self.base, strict=True)),
            "kept_accuracy": dict(zip(self.skills, self.kept, strict=True)),
            "removed_accuracy": {
                s: dict(zip(self.skills, row, strict=True))
                for s, row in zip(self.skills, self.removed, strict=True)
            },
            **self.per_skill(),
        }


def balanced_kmeans(x: Tensor, n_groups: int, iters: int = 20, seed: int = 0) -> Tensor:
    """(n,) labels of the rows of x (n, d) in n_groups clusters of equal size (sizes
    differ by at most one): k-means whose assignment fills each cluster to its
    capacity, nearest pairs first (as MoEfication's balanced clustering)."""
    n = x.shape[0]
    if not 1 <= n_groups <= n:
        raise ValueError(f"balanced_kmeans: {n_groups} clusters of {n} rows")
    x = x.double()
    centres = kmeans_centres(x, n_groups, seed=seed)
    cap = torch.full((n_groups,), n // n_groups)
    cap[: n % n_groups] += 1
    labels = torch.full((n,), -1)
    for _ in range(iters):
        new = _fill_by_distance(torch.cdist(x, centres), cap)
        if torch.equal(new, labels):
            break
        labels = new
        centres = torch.stack([x[labels == g].mean(0) for g in range(n_groups)])
    return labels


def _fill_by_distance(dist: Tensor, cap: Tensor) -> Tensor:
    """(n,) the cluster of each row: (row, cluster) pairs taken nearest first, each row
    once, each cluster up to cap[g] rows."""
    n, G = dist.shape
    labels = [-1] * n
    room = cap.tolist()
    left = n
    for flat in dist.flatten().argsort().tolist():
        row, g = divmod(flat, G)
        if labels[row] < 0 and room[g] > 0:
            labels[row], room[g] = g, room[g] - 1
            left -= 1
            if not left:
                break
    return torch.tensor(labels)


def _layers(model) -> tuple[dict[int, Any], dict[int, Any]]:
    """{layer: FFN} of the routed layers (their groups are experts) and of the layers
    read through clusters of their units (analysis.specialisation)."""
    routed, clustered = routed_and_clustered(model)
    return {i: model.blocks[i].mlp for i in routed}, {i: model.blocks[i].mlp for i in clustered}


@torch.no_grad()
def _collect(model, batches, moes, dense) -> tuple[Tensor, dict[int, Tensor]]:
    """(N,) skill of each real token with a skill, and per layer (N, E) gate weights
    (moe) or (N, d_ff) |hidden activations| (dense) at those tokens, read through
    analysis.activations (one pass shared with the other sections of a Sample)."""
    layers = {**moes, **dense}
    names = [f"blocks.{i}.mlp.{h}" for i, mlp in layers.items() for h in mlp.unit_hooks]
    col = collect_activations(model, batches, names)
    keep = col.skill >= 0
    acts = {}
    for i, mlp in layers.items():  # a MoE's gates, (N, E); |units| of the others
        units = mlp.read_units({h: col.acts[f"blocks.{i}.mlp.{h}"][keep] for h in mlp.unit_hooks})
        acts[i] = units.float() if i in moes else units.float().abs()
    return col.skill[keep], acts


def group_use(acts: Tensor, skill: Tensor, n_skills: int, partition: Tensor | None) -> Tensor:
    """(S, G) each skill's share of use of each group: acts (N, U) summed over the
    skill's tokens, units summed into their groups by partition (U,) (None: a unit
    is a group), each row divided by its total."""
    if partition is not None:
        G = int(partition.max()) + 1
        acts = torch.zeros(acts.shape[0], G).index_add_(1, partition, acts)
    use = torch.zeros(n_skills, acts.shape[1], dtype=torch.float64)
    use.index_add_(0, skill.long(), acts.double())
    return use / use.sum(1, keepdim=True).clamp_min(1e-12)


@contextmanager
def remove_groups(
    model, removed: Mapping[int, Sequence[int]], partition: Mapping[int, Tensor]
) -> Iterator[None]:
    """Run the body with the groups removed: {layer: [group, ...]}. A MoE layer's
    groups are its experts (removed: never chosen); a dense layer's are the clusters
    of `partition[layer]` (d_ff,) (removed: their neurons zero)."""
    moes, dense = _layers(model)
    hooks = []
    for i, groups in removed.items():
        if i in dense:  # the units of the removed clusters zero-ablated (archs.units)
            off = torch.isin(partition[i], torch.as_tensor(list(groups), dtype=torch.long))
            units = dense[i].unit_groups(i)[0]
            zero = torch.zeros(units.n_units, device=model.device)
            hooks += units.hooks(zero, (~off).to(model.device)[None])
    with ExitStack() as stack:
        experts = {i: list(g) for i, g in removed.items() if i in moes}
        if experts:
            stack.enter_context(remove_experts(model, experts))
        if hooks:
            stack.enter_context(model.hooks(hooks))
        yield


def modularity(
    model,
    val_batches: Sequence[Mapping[str, Tensor]],
    test_batches: Sequence[Mapping[str, Tensor]],
    skill_names: Sequence[str],
    keep: float = KEEP,
    n_groups: int = N_GROUPS,
    seed: int = 0,
) -> Modularity:
    """Keep-cost, delta target and delta others (module docstring) of `model`: each
    skill's groups chosen by use on `val_batches`, the interventions scored on
    `test_batches` (collated skill-suite batches: input_ids, attention_mask,
    answer_mask, skill). n_groups: clusters per dense layer. Raises ValueError for a
    model with no MoE or dense layer."""
    moes, dense = _layers(model)
    if not moes and not dense:
        raise ValueError("modularity: the model has no MoE or dense MLP layer")
    S = len(skill_names)
    skill, acts = _collect(model, val_batches, moes, dense)
    partition: dict[int, Tensor] = {}
    for i, a in acts.items():
        if i in dense:
            g = torch.Generator().manual_seed(seed)
            rows = torch.randperm(a.shape[0], generator=g)[:MAX_PROFILE_TOKENS]
            profile = torch.nn.functional.normalize(a[rows].T, dim=1)  # (d_ff, N)
            partition[i] = balanced_kmeans(profile, min(n_groups, a.shape[1]), seed=seed)
    n_all = {i: moes[i].n_experts if i in moes else int(partition[i].max()) + 1 for i in acts}
    n_kept = {i: max(moes[i].k if i in moes else 1, round(keep * n)) for i, n in n_all.items()}
    use = {i: group_use(a, skill, S, partition.get(i)) for i, a in acts.items()}  # (S, G)
    groups = {
        name: {i: use[i][s].argsort(descending=True)[: n_kept[i]].tolist() for i in use}
        for s, name in enumerate(skill_names)
    }
    base = skill_accuracy(model, test_batches, S)
    kept = torch.full((S,), float("nan"), dtype=torch.float64)
    removed = torch.full((S, S), float("nan"), dtype=torch.float64)
    seen = torch.bincount(skill.long(), minlength=S)
    for s, name in enumerate(skill_names):
        if not seen[s] or base[s].isnan():
            continue
        mine = groups[name]
        rest = {i: [g for g in range(n_all[i]) if g not in set(mine[i])] for i in mine}
        with remove_groups(model, rest, partition):
            kept[s] = skill_accuracy(model, test_batches, S)[s]
        with remove_groups(model, mine, partition):
            removed[s] = skill_accuracy(model, test_batches, S)
    return Modularity(
        keep=keep,
        n_kept=n_kept,
        n_groups=n_all,
        skills=list(skill_names),
        groups={n: g for n, g in groups.items() if seen[skill_names.index(n)]},
        base=base.tolist(),
        kept=kept.tolist(),
        removed=removed.tolist(),
        partition={i: p.tolist() for i, p in partition.items()},
    )
