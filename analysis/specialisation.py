"""Specialisation report: how a model's FFN units divide the skills among them.
MoE layers are grouped by the router (each token-slot to its expert); dense layers
by k-means over their hidden activations. Routing collected from a model on
skill-suite batches, the metrics of analysis.routing_metrics per layer, causal
selectivity, plots.

    from glassbox.analysis.specialisation import specialisation_report
    report = specialisation_report(model, val_batches, data.skill_names,
                                   data.feature_names, causal_batches=test_batches,
                                   plot_dir="out/")
    report["summary"]          # {"interp.nmi_expert_skill": ..., "interp.selectivity": ...}

Batches are the dicts of training.data.collate: input_ids, attention_mask,
answer_mask, skill (B, T; -1 on padding), features (B, T, F; -1 where not
applicable). A token enters the routing statistics when its skill is >= 0.

Dense layers are the comparison point: their hidden activations
(`blocks.i.mlp.hook_post`) clustered by k-means into as many clusters as the MoE
has experts, the same metrics computed on the clusters; so "specialised" means more
than what a dense model's neurons already separate.

Every layer's grouping (experts or clusters) also gets its token-identity baseline
(analysis.baselines.token_routing: each token id sent to the groups it is sent to
most often), scored by the same NMI and purity code: `token_baseline` per layer, and
`baselines.token.interp.{nmi_expert_skill, nmi_expert_skill_label, purity}` in the
summary. interp.nmi_lift = interp.nmi_expert_skill_label minus its token baseline
(the label-normalised NMI, the report's column): what the routing says about the
skill beyond what the current token already says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from glassbox.analysis.activations import collect_activations
from glassbox.analysis.baselines import routing_scores, token_routing
from glassbox.analysis.batches import token_batch
from glassbox.analysis.jsonable import jsonable, mean_defined
from glassbox.analysis.routing_metrics import (
    coactivation,
    contingency,
    domain_specialization,
    expert_load,
    kmeans,
    load_cv,
    mean_purity,
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
from glassbox.analysis.specialisation_plots import plot_expert_skill, plot_selectivity
from glassbox.archs.moe_interventions import ablate_experts
from glassbox.archs.moe_units import expert_means


@dataclass
class Routing:
    """What one pass over the batches leaves, for the N tokens with a label (a
    skill, or the batches' `label_key` column: a text corpus's domain)."""

    indices: dict[int, Tensor] = field(default_factory=dict)  # layer -> (N, k) experts
    logits: dict[int, Tensor] = field(default_factory=dict)  # layer -> (N, E) router logits
    hidden: dict[int, Tensor] = field(default_factory=dict)  # dense layer -> (N, d_ff)
    skill: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))  # (N,) label
    features: Tensor = field(default_factory=lambda: torch.empty(0, 0, dtype=torch.long))
    tokens: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))  # (N,)


def routed_and_clustered(model) -> tuple[list[int], list[int]]:
    """The layers whose FFN kind routes tokens (`FFN.routes`: a MoE's experts) and
    those read through k-means clusters of their units (`FFN.cluster_units`)."""
    routed = [i for i, b in enumerate(model.blocks) if b.mlp.routes]
    clustered = [i for i, b in enumerate(model.blocks) if b.mlp.cluster_units]
    return routed, clustered


@torch.no_grad()
def collect_routing(
    model,
    batches: Iterable[Mapping[str, Tensor]],
    max_tokens: int | None = None,
    label_key: str = "skill",
) -> Routing:
    """The router hooks (routed layers) and the units (clustered layers) at the tokens
    whose label (the batch's `label_key` column: skill, or domain) is >= 0, read
    through analysis.activations (one pass shared with the other sections of a
    Sample); `Routing.skill` holds the label."""
    moe_layers, dense_layers = routed_and_clustered(model)
    names = [
        f"blocks.{i}.mlp.hook_{h}" for i in moe_layers for h in ("router_logits", "expert_indices")
    ]
    names += [f"blocks.{i}.mlp.{h}" for i in dense_layers for h in model.blocks[i].mlp.unit_hooks]
    batches = batches if isinstance(batches, Sequence) else list(batches)
    if not batches:
        raise ValueError("collect_routing: no batches")
    col = collect_activations(model, batches, names)
    keep = col.columns[label_key] >= 0
    cut = slice(0, max_tokens)
    features = col.features if col.features is not None else torch.empty(col.n_tokens, 0)
    r = Routing(
        skill=col.columns[label_key][keep][cut],
        features=features[keep][cut].long(),
        tokens=col.token_ids[keep][cut],
    )
    acts = {n: a[keep][cut] for n, a in col.acts.items()}
    for i in moe_layers:
        r.indices[i] = acts[f"blocks.{i}.mlp.hook_expert_indices"].long()
        r.logits[i] = acts[f"blocks.{i}.mlp.hook_router_logits"]
    for i in dense_layers:
        mlp = model.blocks[i].mlp
        r.hidden[i] = mlp.read_units({h: acts[f"blocks.{i}.mlp.{h}"] for h in mlp.unit_hooks})
    return r


def layer_metrics(
    indices: Tensor,
    n_groups: int,
    skill: Tensor,
    n_skills: int,
    features: Tensor | None = None,
    feature_names: Sequence[str] = (),
    tokens: Tensor | None = None,
    vocab_size: int | None = None,
    logits: Tensor | None = None,
    min_token_count: int = 10,
) -> dict:
    """Every routing metric of one layer from its (N, k) groups (experts or clusters)."""
    counts = contingency(indices, skill, n_groups, n_skills)  # (E, S)
    load = expert_load(indices, n_groups)
    share = counts / counts.sum(1, keepdim=True).clamp_min(1)  # P(skill | expert)
    spec = domain_specialization(indices, skill, n_groups, n_skills)
    out = {
        "n_groups": n_groups,
        "load": load.tolist(),
        "load_cv": load_cv(load),
        "routing_entropy": routing_entropy(load),
        "nmi_skill": nmi(counts),
        "nmi_skill_label_norm": nmi(counts, normalization="label"),
        "purity": purity(counts).tolist(),
        "mean_purity": mean_purity(counts),
        "expert_skill_share": share.tolist(),
        "domain_specialization": spec.tolist(),
        "domain_specialization_score": specialization_score(spec),
        "coactivation": coactivation(indices, n_groups).tolist() if indices.shape[1] > 1 else None,
    }
    if logits is not None:
        out["router_entropy"] = router_token_entropy(logits)
    if tokens is not None and vocab_size:
        vspec, occ = vocab_specialization(indices, tokens, n_groups, vocab_size)
        out["vocab_specialization_score"] = specialization_score(vspec, occ >= min_token_count)
    out["nmi_features"] = {}
    if features is not None:
        for f, name in enumerate(feature_names):
            values = features[:, f]
            if (values >= 0).sum() < 2:
                continue
            c = contingency(indices, values, n_groups, int(values.max()) + 1)
            out["nmi_features"][name] = nmi(c)
    return out


@torch.no_grad()
def skill_accuracy(model, batches: Iterable[Mapping[str, Tensor]], n_skills: int) -> Tensor:
    """(n_skills,) share of answer tokens predicted right under teacher forcing:
    logits[:, :-1].argmax(-1) == input_ids[:, 1:] where answer_mask[:, 1:] is 1,
    grouped by the answer token's skill. nan for a skill with no answer token."""
    right = torch.zeros(n_skills, dtype=torch.float64)
    total = torch.zeros(n_skills, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids, mask = token_batch(batch, model.device)
            logits = model(ids, attention_mask=mask)
            ok = (logits[:, :-1].argmax(-1) == ids[:, 1:]).cpu()
            ans = batch["answer_mask"][:, 1:].bool() & (batch["skill"][:, 1:] >= 0)
            sk = batch["skill"][:, 1:][ans]
            right += torch.bincount(sk, weights=ok[ans].double(), minlength=n_skills)[:n_skills]
            total += torch.bincount(sk, minlength=n_skills)[:n_skills].double()
    finally:
        model.train(was_training)
    return torch.where(total > 0, right / total.clamp_min(1), float("nan"))


@torch.no_grad()
def label_loss(
    model, batches: Iterable[Mapping[str, Tensor]], n_labels: int, label_key: str = "skill"
) -> Tensor:
    """(n_labels,) mean next-token cross-entropy on the loss-masked tokens, grouped
    by the predicted token's label (the batches' `label_key` column: a text
    corpus's domain). nan for a label with no such token."""
    nll = torch.zeros(n_labels, dtype=torch.float64)
    total = torch.zeros(n_labels, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids, mask = token_batch(batch, model.device)
            logits = model(ids, attention_mask=mask)[:, :-1]
            loss = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), ids[:, 1:], reduction="none"
            ).cpu()
            lab = batch[label_key][:, 1:]
            use = batch["loss_mask"][:, 1:].bool() & (lab >= 0)
            nll += torch.bincount(lab[use], weights=loss[use].double(), minlength=n_labels)
            total += torch.bincount(lab[use], minlength=n_labels).double()
    finally:
        model.train(was_training)
    return torch.where(total > 0, nll / total.clamp_min(1), float("nan"))


def causal_specialization(
    model,
    selection: Routing,
    causal_batches: Sequence[Mapping[str, Tensor]],
    skill_names: Sequence[str],
    n_per_skill: int | None = None,
    mode: str = "zero",
    means: Mapping[int, Tensor] | None = None,
    label_key: str = "skill",
    measure: str = "accuracy",
) -> dict:
    """For each skill (or label of `label_key`, named by skill_names): choose, in
    every MoE layer, the `n_per_skill` experts it uses more than the other labels
    do (on the selection routing), ablate them, and measure on `causal_batches` the
    harm on every label: the drop in answer accuracy (measure "accuracy"), or the
    rise in next-token loss (measure "loss", nats: `label_loss`).

    Returns experts {skill: {layer: [e, ...]}}, base (S,) (accuracy or loss),
    drop (S, S) (row: whose experts were ablated; column: label measured; > 0 =
    harm), delta_target, delta_others and selectivity
    (analysis.routing_metrics.selectivity)."""
    if measure not in ("accuracy", "loss"):
        raise ValueError(f"causal_specialization: measure={measure!r}: 'accuracy' or 'loss'")
    S = len(skill_names)
    moes = {i: model.blocks[i].mlp for i in routed_and_clustered(model)[0]}
    chosen = {
        i: skill_experts(selection.indices[i], selection.skill, m.n_experts, S, n_per_skill or m.k)
        for i, m in moes.items()
    }

    def score() -> Tensor:  # harm is base - score for accuracy, score - base for loss
        if measure == "loss":
            return -label_loss(model, causal_batches, S, label_key)
        return skill_accuracy(model, causal_batches, S)

    base = score()
    drop = torch.full((S, S), float("nan"), dtype=torch.float64)
    experts: dict[str, dict[int, list[int]]] = {}
    for s, name in enumerate(skill_names):
        if not (selection.skill == s).any():
            continue  # no routing seen for this skill: nothing to choose
        ablate = {i: chosen[i][s].tolist() for i in moes}
        experts[name] = ablate
        with ablate_experts(model, ablate, mode=mode, means=means):
            drop[s] = base - score()
    sel = selectivity(drop)
    return {
        "mode": mode,
        "measure": measure,
        "experts": experts,
        f"base_{measure}": (base if measure == "accuracy" else -base).tolist(),
        "drop": drop.tolist(),
        "delta_target": sel["delta_target"].tolist(),
        "delta_others": sel["delta_others"].tolist(),
        "selectivity": sel["score"],
    }


def layer_table(
    model,
    routing: Routing,
    n_skills: int,
    feature_names: Sequence[str] = (),
    n_clusters: int = 16,
    seed: int = 0,
) -> dict[int, dict]:
    """layer_metrics of every analysed layer: its router's experts (MoE layers,
    grouping "router") or `n_clusters` k-means clusters of its `mlp.hook_post`
    (dense layers, grouping "kmeans"); each with `token_baseline`, the skill NMI and
    purity of the same grouping made a function of the token alone."""
    moe_layers, dense_layers = routed_and_clustered(model)
    vocab = model.cfg.vocab_size
    layers: dict[int, dict] = {}
    for i in moe_layers:
        m = layer_metrics(
            routing.indices[i], model.blocks[i].mlp.n_experts, routing.skill, n_skills,
            routing.features, feature_names, routing.tokens, vocab, routing.logits[i],
        )  # fmt: skip
        tok = token_routing(routing.indices[i], routing.tokens, model.blocks[i].mlp.n_experts)
        m["token_baseline"] = routing_scores(
            tok, routing.skill, model.blocks[i].mlp.n_experts, n_skills
        )
        layers[i] = {"grouping": "router", **m}
    for i in dense_layers:
        clusters = kmeans(routing.hidden[i], n_clusters, seed=seed)[:, None]
        m = layer_metrics(
            clusters, n_clusters, routing.skill, n_skills,
            routing.features, feature_names, routing.tokens, vocab,
        )  # fmt: skip
        tok = token_routing(clusters, routing.tokens, n_clusters)
        m["token_baseline"] = routing_scores(tok, routing.skill, n_clusters, n_skills)
        layers[i] = {"grouping": "kmeans", **m}
    return layers


def specialisation_summary(
    layers: Mapping[int, dict], moe_layers: Sequence[int], causal: dict | None
) -> dict[str, float | None]:
    """The headline numbers: means over the analysed layers (None where undefined),
    the token-identity baselines (baselines.token.interp.*) and interp.nmi_lift."""
    ls = [layers[i] for i in sorted(layers)]
    summary = {
        "interp.nmi_expert_skill": mean_defined(x["nmi_skill"] for x in ls),
        "interp.nmi_expert_skill_label": mean_defined(x["nmi_skill_label_norm"] for x in ls),
        "interp.nmi_expert_features": mean_defined(
            mean_defined(x["nmi_features"].values()) for x in ls
        ),
        "interp.purity": mean_defined(x["mean_purity"] for x in ls),
        "interp.load_cv": mean_defined(x["load_cv"] for x in ls),
        "interp.routing_entropy": mean_defined(x["routing_entropy"] for x in ls),
        "interp.domain_specialization": mean_defined(x["domain_specialization_score"] for x in ls),
        "interp.vocab_specialization": mean_defined(
            x.get("vocab_specialization_score") for x in ls
        ),
    }
    tok = [x["token_baseline"] for x in ls if "token_baseline" in x]
    if tok:
        base = {
            "nmi_expert_skill": mean_defined(t["nmi_skill"] for t in tok),
            "nmi_expert_skill_label": mean_defined(t["nmi_skill_label_norm"] for t in tok),
            "purity": mean_defined(t["mean_purity"] for t in tok),
        }
        summary.update({f"baselines.token.interp.{k}": v for k, v in base.items()})
        label, tok_label = summary["interp.nmi_expert_skill_label"], base["nmi_expert_skill_label"]
        summary["interp.nmi_lift"] = (
            label - tok_label if label is not None and tok_label is not None else None
        )
    if moe_layers:
        summary["interp.router_entropy"] = mean_defined(
            layers[i]["router_entropy"] for i in moe_layers
        )
    if any("router_saturation" in x for x in ls):
        summary["interp.router_saturation"] = mean_defined(x.get("router_saturation") for x in ls)
    if causal is not None:
        summary["interp.selectivity"] = causal["selectivity"]
        summary["interp.delta_target"] = mean_defined(causal["delta_target"])
        summary["interp.delta_others"] = mean_defined(causal["delta_others"])
    return summary


def _plots(
    routing: Routing,
    layers: Mapping[int, dict],
    causal: dict | None,
    skill_names: Sequence[str],
    plot_dir: Path,
    ylabel: str,
) -> list[str]:
    """expert_skill.png, and selectivity.png with a causal part; their paths."""
    S = len(skill_names)
    # skills absent from the data (weight 0 in the mix) would be empty columns
    present = torch.bincount(routing.skill, minlength=S)[:S].nonzero().flatten()
    names = [skill_names[s] for s in present.tolist()]
    shares = {i: torch.tensor(layers[i]["expert_skill_share"])[:, present] for i in layers}
    plot_expert_skill(shares, names, plot_dir / "expert_skill.png", ylabel=ylabel)
    plots = [str(plot_dir / "expert_skill.png")]
    if causal is not None:
        drop = torch.tensor(causal["drop"], dtype=torch.float64)[present][:, present]
        plot_selectivity(drop, names, plot_dir / "selectivity.png")
        plots.append(str(plot_dir / "selectivity.png"))
    return plots


def specialisation_report(
    model,
    batches: Iterable[Mapping[str, Tensor]],
    skill_names: Sequence[str],
    feature_names: Sequence[str] = (),
    *,
    causal_batches: Iterable[Mapping[str, Tensor]] | None = None,
    n_per_skill: int | None = None,
    ablation: str = "zero",
    reference_model=None,
    n_clusters: int | None = None,
    max_tokens: int | None = 50_000,
    plot_dir: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Expert specialisation of `model` on held-out skill-suite batches.

    batches: the split the routing statistics (and the choice of each skill's
    experts) come from; causal_batches: another split, where ablating those experts
    is scored (omit to skip the causal part). n_per_skill: experts ablated per skill
    and layer (default k). ablation: "zero" or "mean" (means over `batches`).
    reference_model: another checkpoint of the same model, for router saturation.
    n_clusters: k-means clusters for dense layers (default: the experts of the
    model's first MoE layer, else 16). plot_dir: write expert_skill.png and
    selectivity.png there.

    Returns {"summary": {"interp.<metric>": float}, "layers": {layer: metrics},
    "causal": {...} or None, "plots": [paths]}; JSON-safe (nan as None).
    Summary numbers are means over the analysed layers. nmi_expert_skill is the
    arithmetic-normalised NMI over token-slots (k > 1 caps it below 1);
    nmi_expert_skill_label = I / H(skill) is not capped by k, the fairer one
    against the dense baseline's one-cluster-per-token k-means.
    """
    batches = list(batches)
    routing = collect_routing(model, batches, max_tokens)
    moe_layers, dense_layers = routed_and_clustered(model)
    if not moe_layers and not dense_layers:
        raise ValueError("specialisation_report: the model has neither MoE nor dense MLP layers")
    if n_clusters is None:
        n_clusters = model.blocks[moe_layers[0]].mlp.n_experts if moe_layers else 16
    layers = layer_table(model, routing, len(skill_names), feature_names, n_clusters, seed)
    if reference_model is not None and moe_layers:
        ref = collect_routing(reference_model, batches, max_tokens)
        for i in moe_layers:
            if i in ref.indices:
                layers[i]["router_saturation"] = router_saturation(
                    ref.indices[i], routing.indices[i]
                )
    causal = None
    if causal_batches is not None and moe_layers:
        means = expert_means(model, batches, moe_layers) if ablation == "mean" else None
        causal = causal_specialization(
            model, routing, list(causal_batches), skill_names, n_per_skill, ablation, means
        )
    summary = specialisation_summary(layers, moe_layers, causal)
    plots = []
    if plot_dir is not None:
        ylabel = "expert" if moe_layers else "k-means cluster of mlp.hook_post"
        plots = _plots(routing, layers, causal, skill_names, Path(plot_dir), ylabel)
    return jsonable({"summary": summary, "layers": layers, "causal": causal, "plots": plots})
