"""Interpretability of a model trained on a text corpus: every score that needs no
ground truth, with the corpus's domains (training.data.text: the source folder or
file of each document, or a named jsonl field) in place of the skill suite's skills.

    from glassbox.analysis.text_analysis import text_report
    report = text_report(model, data, "runs/x/analysis")
    report["summary"]          # {"interp.domain_specialization": ..., "domains.json.loss": ...}
    report["not_applicable"]   # {"interp.coverage": "why", ...}

What it measures, on held-out blocks (val picks, test scores the ablations):

- routing (MoE layers; dense layers through k-means clusters of `mlp.hook_post`, the
  comparison point): load and its spread, routing entropy, router entropy, OLMoE's
  domain and vocabulary specialisation, NMI and purity of unit against domain,
  co-activation, the top tokens and domains of every expert, router saturation
  against a reference checkpoint of the same run (analysis.specialisation);
- units (neurons, latents, expert gates: the FFN contract's readable units;
  analysis.domain_units): L0, dead and dense fraction per layer, and feature pages
  (`features_layer{i}.txt` / `.html`): for the units most selective for each
  domain, their top-activating contexts with the text around them, the domain
  there, and the tokens each unit promotes through the unembedding (its output
  direction through ln_final and W_U);
- causal, selectivity by domain: ablate each domain's most-used experts (the
  experts it is routed to more than other domains are, `n_per_domain` of them per
  layer, mean-ablated) or, without MoE layers, its most-used neurons / latents (the
  `unit_share` of each layer's units with the largest relative rise of mean |act|
  on the domain, mean-ablated), and measure the rise of next-token loss on that
  domain and on the others: selectivity = mean over domains of (rise on it - mean
  rise on the others), in nats;
- circuits: analysis.circuits with a domain's next-token loss as the behaviour
  (`circuit_fraction` per domain: the share of units that keep 90% of it).

Scores against the suite's ground truth do not apply and are listed with the
reason in `not_applicable` (`NOT_APPLICABLE`). `text_with_baselines` adds the
untrained twin's scores on the same tokens (`baselines.init.<key>`, docs/design.md's
"scores that mean something"); the token-identity baseline of NMI and purity by
domain comes from analysis.specialisation (`baselines.token.<key>`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.audit import N_GROUPS, Labelled, read_units, specialisation_section
from glassbox.analysis.baselines import with_untrained_twin
from glassbox.analysis.batches import real_tokens, token_batch
from glassbox.analysis.circuits import circuit_report
from glassbox.analysis.domain_units import (
    LABEL,
    feature_pages,
    promoted_tokens,
    token_text,
    unit_directions,
    unit_selectivity,
    usage_contrast,
)
from glassbox.analysis.interp import ffn_kinds, suite_batches, unit_activations
from glassbox.analysis.intervals import bootstrap_weights
from glassbox.analysis.jsonable import jsonable, mean_defined
from glassbox.analysis.routing_metrics import router_saturation, vocab_specialization
from glassbox.analysis.sae_metrics import dead_fraction, dense_fraction, l0
from glassbox.analysis.specialisation import (
    Routing,
    causal_specialization,
    collect_routing,
    layer_table,
    routed_and_clustered,
    specialisation_summary,
)
from glassbox.analysis.specialisation_plots import plot_expert_skill
from glassbox.archs.moe_units import expert_means
from glassbox.training.data import SuiteData

# Scores of the skill suite that a corpus without ground truth cannot give, and why.
NOT_APPLICABLE = {
    "interp.coverage": "needs ground-truth features",
    "interp.nmi_expert_skill_label": "needs skills (see interp.nmi_expert_domain)",
    "interp.purity": "needs skills (see interp.domain_purity)",
    "interp.selectivity": "needs skill answers (see interp.domain_selectivity)",
    "interp.tool_reliance": "needs tool calls",
    "mean_accuracy": "needs skill answers",
    "mean_exact_match": "needs skill answers",
    "ood_accuracy": "needs an out-of-distribution split",
    "probes": "needs ground-truth features",
    "causal_tracing": "needs the facts skill",
    "ioi": "needs the ioi skill",
}
# specialisation_summary's names -> what they mean with domains for labels (also
# inside a baseline's key, `baselines.<name>.interp.purity`); DROPPED: not applicable
RENAMES = {
    "interp.nmi_expert_skill_label": "interp.nmi_expert_domain",
    "interp.purity": "interp.domain_purity",
    "interp.nmi_lift": "interp.nmi_domain_lift",
}
DROPPED = ("interp.nmi_expert_skill", "interp.nmi_expert_features")


def _domain_key(key: str) -> str | None:
    """A specialisation summary key as the text report names it (None: dropped)."""
    for old, new in RENAMES.items():
        if key == old or key.endswith("." + old):
            return key[: len(key) - len(old)] + new
    return None if any(key == d or key.endswith("." + d) for d in DROPPED) else key


def has_ground_truth(suite: SuiteData) -> bool:
    """Whether the data carries skills (and so the suite's ground truth)."""
    return bool(suite.skill_names)


def not_applicable_line(reasons: Mapping[str, str] = NOT_APPLICABLE) -> str:
    """One line saying which scores do not apply on text and why."""
    by_reason: dict[str, list[str]] = {}
    for key, why in reasons.items():
        by_reason.setdefault(why.split(" (")[0], []).append(key.removeprefix("interp."))
    parts = [f"{', '.join(keys)} ({why})" for why, keys in by_reason.items()]
    return "not applicable on text (no skills, no ground truth): " + "; ".join(parts)


def domain_labels(batches: Sequence[Mapping[str, Tensor]], max_tokens: int | None) -> Tensor:
    """(N,) the domain of every real token, in collect_activations' order."""
    parts = [b[LABEL][real_tokens(*token_batch(b))].cpu() for b in batches]
    return torch.cat(parts)[:max_tokens]


def held_out_domains(
    names: Sequence[str], val: Sequence[Mapping[str, Tensor]], test: Sequence[Mapping[str, Tensor]]
) -> dict[str, Any]:
    """How many held-out blocks of each split hold tokens of each domain, and one line
    saying how many domains (of all) and blocks each domain score stands on."""
    counts: dict[str, dict[str, int]] = {}
    for split, batches in (("val", val), ("test", test)):
        per = [0] * len(names)
        for b in batches:
            m = real_tokens(*token_batch(b))
            for row, keep in zip(b[LABEL].cpu(), m.cpu()):
                for d in row[keep].unique().tolist():
                    if d >= 0:
                        per[d] += 1
        counts[split] = dict(zip(names, per))
    parts = []
    for split, per in counts.items():
        if not per and split == "test":
            continue
        held = [n for n, c in per.items() if c]
        missing = [n for n, c in per.items() if not c]
        blocks = sorted(per[n] for n in held)
        span = f"{blocks[0]}-{blocks[-1]} blocks each" if blocks else "no blocks"
        tail = (
            f"; none of {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            if missing
            else ""
        )
        parts.append(f"{split}: {len(held)} of {len(names)} domains, {span}{tail}")
    return {"blocks": counts, "line": "domain scores stand on held-out blocks: " + "; ".join(parts)}


def domain_information(
    model, val, test, n_domains: int, max_tokens: int | None, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out information about the domain beyond the token (analysis.audit: units
    clustered, and a MoE's routing, fitted on val and scored on test):
    interp.domain_info_beyond_token[_routed] (+ _ci, _shuffled) and
    interp.domain_entropy_given_token."""
    fit, score = read_units(model, val, max_tokens), read_units(model, test, max_tokens)
    if not fit.units:
        return {}, {}
    w = bootstrap_weights(len(score.col.sequences), seed=seed)
    labels = Labelled(
        domain_labels(val, max_tokens)[: fit.col.n_tokens],
        domain_labels(test, max_tokens)[: score.col.n_tokens],
        n_domains,
        w,
    )
    return specialisation_section(
        labels, fit, score, N_GROUPS, seed, prefix="interp.domain_", label="domain"
    )


# ----------------------------------------------------------------- routing


def expert_tokens(
    indices: Tensor,
    tokens: Tensor,
    n_experts: int,
    vocab_size: int,
    tokenizer=None,
    top: int = 10,
    min_count: int = 10,
) -> list[list[dict[str, Any]]]:
    """Per expert, the `top` tokens (seen >= min_count times, routed to it at least once) with the largest share
    of their occurrences routed to it (OLMoE's vocabulary specialisation):
    [{"token", "id", "share", "count"}, ...], best first."""
    spec, occ = vocab_specialization(indices, tokens, n_experts, vocab_size)
    spec = torch.where(occ[None] >= min_count, spec, -1.0)
    out = []
    for e in range(n_experts):
        vals, ids = spec[e].topk(min(top, vocab_size))
        out.append(
            [
                {
                    "token": token_text(tokenizer, int(i)),
                    "id": int(i),
                    "share": float(v),
                    "count": int(occ[i]),
                }
                for v, i in zip(vals.tolist(), ids.tolist())
                if v > 0
            ]
        )
    return out


# ----------------------------------------------------------------- the report


def text_report(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 128,
    seed: int = 0,
    *,
    reference_model=None,
    causal: bool = True,
    circuits: bool = True,
    circuit_examples: int = 32,
    unit_share: float = 1 / 16,
    ablation: str = "zero",
    max_tokens: int | None = 50_000,
) -> dict[str, Any]:
    """Every score of the module docstring for `model` on `suite`, a text corpus
    with a `domain` column (training.data.text). n_examples: held-out blocks of val
    (selection, statistics) and of test (ablations); circuit_examples: val blocks
    the circuits are searched on. reference_model: another checkpoint of the same
    run, for router saturation. out_dir: expert_domain.png and feature pages.
    ablation: "zero" (as analysis.specialisation's default) or "mean".

    Returns {"summary": {"interp.<metric>", "domains.<domain>.<metric>": float},
    "not_applicable": {key: why}, "domains": [names], "layers": routing metrics per
    layer, "experts": top tokens and domains per expert, "units": per-layer health,
    "causal": {...} or None, "circuits": {...} or None, "pages": paths, "plots":
    paths}; JSON-safe (nan as None)."""
    names, val, test = _held_out_blocks(suite, n_examples, seed, causal, model.device)
    out = Path(out_dir) if out_dir is not None else None
    report: dict[str, Any] = {
        "domains": names,
        "not_applicable": dict(NOT_APPLICABLE),
        "plots": [],
        "pages": {},
    }
    summary: dict[str, Any] = {}
    per_domain: dict[str, dict[str, Any]] = {n: {} for n in names}
    _held_out_section(model, val, test, names, causal, max_tokens, seed, report, summary)
    moe_layers, dense_layers = routed_and_clustered(model)
    routing = _routing_section(
        model, val, names, moe_layers, dense_layers, reference_model, out, max_tokens, seed,
        report, summary, per_domain,
    )  # fmt: skip
    units, labels = _units_section(model, val, names, out, max_tokens, report, summary)
    report["causal"] = None
    if causal:
        report["causal"] = _causal_section(
            model, val, test, names, routing, moe_layers, units, labels, unit_share, ablation,
            summary, per_domain,
        )  # fmt: skip
    report["circuits"] = None
    if circuits:
        cb = suite_batches(suite, "val", circuit_examples, seed=seed, device=model.device)
        report["circuits"] = _circuits_section(model, cb, names, summary, per_domain)
    for n, vals in per_domain.items():
        for k, v in vals.items():
            summary[f"domains.{n}.{k}"] = v
    report["summary"] = summary
    return jsonable(report)


def _held_out_blocks(suite, n_examples, seed, causal, device) -> tuple[list[str], list, list]:
    """The domain names, n_examples held-out blocks of val and (with causal) of test;
    a ValueError where the data has no domains."""
    names = list(suite.domain_names or [])
    if not names:
        raise ValueError(
            "text_report: the data has no domains (rebuild it with this version of "
            "training.data.text, or give data.text.domain_field)"
        )
    val = suite_batches(suite, "val", n_examples, seed=seed, device=device)
    if LABEL not in val[0]:
        raise ValueError("text_report: the batches have no `domain` column")
    test = suite_batches(suite, "test", n_examples, seed=seed + 1, device=device) if causal else []
    return names, val, test


def _held_out_section(model, val, test, names, causal, max_tokens, seed, report, summary) -> None:
    """The blocks each domain score stands on (the report's held_out,
    interp.n_domains_held_out) and, with causal, the information about the domain
    beyond the token, fitted on val and scored on test (the report's information)."""
    report["held_out"] = held_out_domains(names, val, test)
    summary["interp.n_domains_held_out"] = sum(
        1 for c in report["held_out"]["blocks"]["val"].values() if c
    )
    if causal:
        info, report["information"] = domain_information(
            model, val, test, len(names), max_tokens, seed
        )
        summary.update(info)


def _routing_section(
    model, val, names, moe_layers, dense_layers, reference_model, out, max_tokens, seed,
    report, summary, per_domain,
) -> Routing | None:  # fmt: skip
    """Routing and its specialisation by domain (MoE layers; dense layers through
    k-means clusters of mlp.hook_post): the report's layers, experts and
    expert_domain.png, their scores into summary and per_domain. Returns the routing
    collected over val (None without MoE or dense layers)."""
    if not (moe_layers or dense_layers):
        return None
    routing = collect_routing(model, val, max_tokens, label_key=LABEL)
    n_clusters = model.blocks[moe_layers[0]].mlp.n_experts if moe_layers else 16
    layers = layer_table(model, routing, len(names), (), n_clusters, seed)
    if reference_model is not None and moe_layers:
        ref = collect_routing(reference_model, val, max_tokens, label_key=LABEL)
        for i in moe_layers:
            layers[i]["router_saturation"] = router_saturation(ref.indices[i], routing.indices[i])
    for k, v in specialisation_summary(layers, moe_layers, None).items():
        if (key := _domain_key(k)) is not None:
            summary[key] = v
    seen = torch.bincount(routing.skill[routing.skill >= 0].long(), minlength=len(names))
    for d, n in enumerate(names):
        # a domain none of whose tokens is in the sample has no favourite expert (on
        # code every package is a domain and the sample holds a few): None, not 0
        per_domain[n]["specialization"] = (
            mean_defined(max(col[d] for col in layers[i]["domain_specialization"]) for i in layers)
            if seen[d]
            else None
        )
    report["layers"] = layers
    report["experts"] = {
        i: {
            "top_tokens": expert_tokens(
                routing.indices[i], routing.tokens, model.blocks[i].mlp.n_experts,
                model.cfg.vocab_size, model.tokenizer,
            ),
            "domain_share": layers[i]["expert_skill_share"],
        }
        for i in moe_layers
    }  # fmt: skip
    if out is not None:
        shares = {i: torch.tensor(layers[i]["expert_skill_share"]) for i in layers}
        ylabel = "expert" if moe_layers else "k-means cluster of mlp.hook_post"
        path = out / "expert_domain.png"
        plot_expert_skill(
            shares, names, path, title="share of each unit's token-slots by domain",
            ylabel=ylabel, label="domain",
        )  # fmt: skip
        report["plots"].append(str(path))
    return routing


def _units_section(
    model, val, names, out, max_tokens, report, summary
) -> tuple[dict[int, Tensor], Tensor]:
    """The readable units' health per layer (the report's units; interp.l0,
    dead_fraction, dense_fraction over the sparse kinds' layers into summary) and
    their feature pages (with out). Returns the units {layer: (N, U)} over val and
    the domain (N,) of each token."""
    units, col = unit_activations(model, val, max_tokens=max_tokens)
    labels = domain_labels(val, max_tokens)[: col.n_tokens]
    health: dict[str, Any] = {}
    kinds = ffn_kinds(model)
    for i, acts in units.items():
        health[str(i)] = {
            "kind": kinds[i], "n_units": acts.shape[1], "l0": l0(acts),
            "dead_fraction": dead_fraction(acts), "dense_fraction": dense_fraction(acts),
        }  # fmt: skip
        if out is not None:
            contrast = usage_contrast(acts, labels, len(names))
            report["pages"][str(i)] = feature_pages(
                model, i, acts, col, labels, names, contrast, val, out
            )
    report["units"] = health
    latent = [health[str(i)] for i in units if model.blocks[i].mlp.sparse_units]
    for key in ("l0", "dead_fraction", "dense_fraction"):
        if latent:
            summary[f"interp.{key}"] = mean_defined(h[key] for h in latent)
    return units, labels


def _causal_section(
    model, val, test, names, routing, moe_layers, units, labels, unit_share, ablation,
    summary, per_domain,
) -> dict[str, Any]:  # fmt: skip
    """Ablate each domain's most-used experts (MoE layers) or units (the others) and
    measure the rise of next-token loss on every domain (test): the scores into
    summary and per_domain; returns the ablation's report."""
    if moe_layers:
        assert routing is not None
        means = expert_means(model, val, moe_layers) if ablation == "mean" else None
        res = causal_specialization(
            model, routing, test, names, mode=ablation, means=means,
            label_key=LABEL, measure="loss",
        )  # fmt: skip
    else:
        ablatable = {i: a for i, a in units.items() if not model.blocks[i].mlp.routes}
        res = unit_selectivity(model, ablatable, labels, val, test, names, unit_share, ablation)
    base = res["base_loss"]
    summary["interp.domain_selectivity"] = res["selectivity"]
    summary["interp.domain_delta_target"] = mean_defined(res["delta_target"])
    summary["interp.domain_delta_others"] = mean_defined(res["delta_others"])
    for d, n in enumerate(names):
        t, o = res["delta_target"][d], res["delta_others"][d]
        per_domain[n]["selectivity"] = t - o if t is not None and o is not None else None
        per_domain[n]["loss"] = base[d]
    return res


def _circuits_section(model, batches, names, summary, per_domain) -> dict[str, Any]:
    """The circuits of every domain over `batches`, a domain's next-token loss the
    behaviour (analysis.circuits): their fraction and auc into summary and
    per_domain; returns {"summary", "details"}."""
    circ = circuit_report(model, batches, skill_names=names, label_key=LABEL, mask_key="loss_mask")
    flat = circ.to_dict()
    summary["interp.domain_circuit_fraction"] = flat.get("skill_circuit_fraction")
    summary["interp.domain_circuit_auc"] = flat.get("skill_circuit_auc")
    for n in names:
        if n in circ:
            r = circ[n]
            per_domain[n]["circuit_fraction"] = r.fraction if math.isfinite(r.auc) else None
    return {"summary": flat, "details": circ.details()}


def text_with_baselines(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 128,
    seed: int = 0,
    init_seed: int = 0,
    **kw: Any,
) -> dict[str, Any]:
    """text_report of `model`, and of its untrained twin (analysis.baselines: the same
    config at init_seed, the run's training seed, at initialisation) on the same
    tokens; the twin's interp.* and domains.* scores join the summary as
    baselines.init.<key>, its whole report is under "untrained_twin". kw: text_report's."""
    return by_domain_with_twin(text_report, model, suite, out_dir, n_examples, seed, init_seed, kw)


def by_domain_with_twin(
    report, model, suite, out_dir, n_examples: int, seed: int, init_seed: int, kw
) -> dict[str, Any]:
    """`report` (text_report, or a report by domain with its signature) of `model` and
    of its untrained twin (analysis.baselines.with_untrained_twin), the twin compared
    with no reference model; interp.* and domains.* join as baselines.init.<key>."""

    def report_of(m, out):
        ref = kw.get("reference_model") if m is model else None
        return report(m, suite, out, n_examples, seed, **{**kw, "reference_model": ref})

    return with_untrained_twin(report_of, model, out_dir, init_seed, ("interp.", "domains."))


__all__ = [
    "NOT_APPLICABLE",
    "by_domain_with_twin",
    "domain_labels",
    "expert_tokens",
    "feature_pages",
    "has_ground_truth",
    "not_applicable_line",
    "promoted_tokens",
    "text_report",
    "text_with_baselines",
    "unit_directions",
    "unit_selectivity",
    "usage_contrast",
]
