"""The mechanistic analysis of one model on its data: every tool that applies,
with its plots, in one call (what `glassbox analyze` runs).

    from glassbox.analysis.mechanistic import run_mechanistic
    report = run_mechanistic(model, suite, "runs/x/analysis")
    report["summary"]          # headline numbers, flat {name: float}

What runs, on `suite` (a training.data.SuiteData: the skill suite, or a text
corpus, which has no ground truth):

- logit lens: answer-token loss and accuracy of the lens after each layer,
  overall and per skill (`logit_lens_loss.png`, `logit_lens_accuracy.png`);
- head scores: previous-token (on the data), induction (random repeated
  tokens), copying (OV eigenvalues) (`heads_*.png`);
- probes (skills only): every ground-truth variable of `suite.feature_names`,
  probed at the embedding and after each layer (`hook_embed`,
  `blocks.{i}.hook_resid_post`) at the tokens it describes, on examples of its
  own skill, with a shuffled-label control; split by example
  (`probes_selectivity.png`, `probes_accuracy.png`); a variable with too few
  tokens or label values is listed under `skipped` with the reason;
- causal tracing (skill `facts`): ROME traces of the hidden state, MLP and
  attention outputs, one per prompt layout, on facts of the train split the
  model answers right (ROME traces known facts), with the (layer, token) whose
  MLP output restores the most (`trace_facts_*.png`);
- IOI (skill `ioi`): logit difference, and activation patching from clean into
  ABC-corrupted prompts of every head, of the residual stream, attention and
  MLP outputs by position, of every expert (MoE layers) and of the latents that
  change most (transcoder layers) (`ioi_*.png`).

The logit lens and the head scores are here; the probes, causal tracing and IOI,
which read the skill suite's ground truth, are analysis.mechanistic_skills'.

The result is a JSON-ready dict (undefined numbers are None), also written to
`out_dir/mechanistic.json`.
Everything is seeded; sizes are in `MechanisticConfig` (analysis.mechanistic_config).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from glassbox.analysis.batches import to_device, token_batch
from glassbox.analysis.heads import (
    copying_scores,
    induction_scores,
    plot_head_scores,
    previous_token_score_from_pattern,
)
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.logit_lens import lens_labels, next_token_targets, residual_stack, unembed
from glassbox.analysis.mechanistic_config import MechanisticConfig, record_plot, sample_rows
from glassbox.analysis.mechanistic_skills import facts_section, ioi_section, probes_section
from glassbox.analysis.plots import line_plot
from glassbox.training.data import collate


@torch.no_grad()
def run_mechanistic(
    model, suite, out_dir: str | Path, cfg: MechanisticConfig | None = None
) -> dict:
    """Run every applicable tool on `model` over `suite`; write plots and
    mechanistic.json into `out_dir`; return the results (see module docstring)."""
    cfg = cfg or MechanisticConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        # NaN and infinities (an AUROC with one class in the test split) become
        # None, so the JSON is standard.
        report = jsonable(_run(model, suite, out, cfg))
    finally:
        model.train(was_training)
    (out / "mechanistic.json").write_text(
        json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    )
    return report


def _run(model, suite, out: Path, cfg: MechanisticConfig) -> dict:
    rows = sample_rows(suite, cfg.split, cfg.n_examples, cfg.seed)
    batches = [
        to_device(collate(rows[i : i + cfg.batch_size], suite.pad_id), model.device)
        for i in range(0, len(rows), cfg.batch_size)
    ]
    plots: list[str] = []
    report: dict = {"config": asdict(cfg), "plots": plots}
    report["logit_lens"] = logit_lens_section(model, batches, suite.skill_names, out, plots)
    report["heads"] = heads_section(model, batches, suite.tokenizer, cfg, out, plots)
    if suite.feature_names and batches and batches[0]["features"].shape[-1]:
        report["probes"] = probes_section(model, suite, cfg, out, plots)
    if "facts" in suite.skill_names and cfg.facts_split in suite.splits:
        report["causal_tracing"] = facts_section(model, suite, cfg, out, plots)
    if "ioi" in suite.skill_names:
        report["ioi"] = ioi_section(model, suite, cfg, out, plots)
    report["summary"] = _summary(report)
    return report


# --- logit lens -----------------------------------------------------------------------


def logit_lens_section(model, batches, skill_names: list[str], out: Path, plots: list[str]) -> dict:
    """Loss and accuracy of the lens on answer tokens, after each layer, over all
    answer tokens and per skill (the skill of the predicted token)."""
    labels = lens_labels(model.cfg.n_layers, include_embed=True)
    S = len(skill_names)
    nll = torch.zeros(len(labels), S + 1, dtype=torch.float64)  # column S: every token
    hits = torch.zeros_like(nll)
    count = torch.zeros(S + 1, dtype=torch.float64)
    for batch in batches:
        ids, att = token_batch(batch)
        targets, mask = next_token_targets(ids, batch["answer_mask"])
        skill = torch.full_like(ids, -1)
        skill[:, :-1] = batch["skill"][:, 1:]  # the skill of the token each position predicts
        group = skill[mask].cpu()
        group = torch.where(group >= 0, group, S)
        ones = torch.ones(len(group), dtype=torch.float64)
        count.index_add_(0, group, ones)
        count[S] += float((group < S).sum())
        resid = residual_stack(model, ids, att, include_embed=True)
        for layer, r in enumerate(resid):
            logits = unembed(model, r).float()[mask]  # (N, V)
            t = targets[mask]
            loss = F.cross_entropy(logits, t, reduction="none").double().cpu()
            ok = (logits.argmax(-1) == t).double().cpu()
            nll[layer].index_add_(0, group, loss)
            hits[layer].index_add_(0, group, ok)
            nll[layer, S] += loss[group < S].sum()
            hits[layer, S] += ok[group < S].sum()
    loss, acc = nll / count.clamp(min=1), hits / count.clamp(min=1)
    present = [i for i in range(S) if count[i] > 0]
    result: dict = {
        "layers": labels,
        "answer_loss": loss[:, S].tolist(),
        "answer_accuracy": acc[:, S].tolist(),
        "by_skill": {
            skill_names[i]: {
                "answer_loss": loss[:, i].tolist(),
                "answer_accuracy": acc[:, i].tolist(),
            }
            for i in present
        },
    }
    for key, values in (("loss", loss), ("accuracy", acc)):
        series = {"all": values[:, S]} | {skill_names[i]: values[:, i] for i in present}
        record_plot(
            line_plot,
            out / f"logit_lens_{key}.png",
            plots,
            series=series,
            x=labels,
            title=f"Logit lens: answer {key} after each layer",
            xlabel="layer",
            ylabel=key,
        )
    return result


# --- heads ------------------------------------------------------------------------------


def heads_section(model, batches, tokenizer, cfg: MechanisticConfig, out: Path, plots) -> dict:
    L = model.cfg.n_layers
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(L)]
    prev = torch.zeros(L, model.cfg.n_heads)
    weight = 0.0
    for batch in batches:
        ids, att = token_batch(batch)
        _, cache = model.run_with_cache(ids, attention_mask=att, names_filter=names)
        w = float(att[:, 1:].sum())
        for i, n in enumerate(names):
            prev[i] += w * previous_token_score_from_pattern(cache[n].float(), att).cpu()
        weight += w
    prev /= max(weight, 1.0)
    lo = tokenizer.token_to_id("0") if tokenizer is not None else None
    vocab_range = (lo if lo is not None else 8, model.cfg.vocab_size)
    seq_len = max(2, min(cfg.induction_seq_len, (model.cfg.max_seq_len - 1) // 2))
    ind = induction_scores(model, seq_len, vocab_range=vocab_range, seed=cfg.seed).cpu()
    cop = copying_scores(model, vocab_range=vocab_range).cpu()
    record_plot(
        plot_head_scores,
        out / "heads_previous_token.png",
        plots,
        scores=prev,
        title="Previous-token score",
    )
    record_plot(
        plot_head_scores,
        out / "heads_induction.png",
        plots,
        scores=ind,
        title=f"Induction score (repeated random tokens, length {seq_len})",
    )
    record_plot(
        plot_head_scores,
        out / "heads_copying.png",
        plots,
        scores=cop,
        title="Copying score (OV eigenvalues)",
        signed=True,
    )
    return {
        "previous_token": prev.tolist(),
        "induction": ind.tolist(),
        "copying": cop.tolist(),
        "induction_seq_len": seq_len,
        "vocab_range": list(vocab_range),
    }


# --- summary -----------------------------------------------------------------------------


def _summary(report: dict) -> dict[str, float]:
    """Headline numbers, flat: what a report table shows. Per probed variable the
    best layer counts (`probes.selectivity_mean` averages those maxima over layers,
    so it leans optimistic by the probes' noise)."""
    out: dict[str, float] = {}
    lens = report["logit_lens"]
    out["logit_lens.answer_loss_last"] = lens["answer_loss"][-1]
    h = report["heads"]
    for key in ("previous_token", "induction", "copying"):
        out[f"heads.{key}_max"] = float(torch.tensor(h[key]).max())
    probes = report.get("probes", {}).get("variables", {})
    if probes:
        sel = torch.tensor([v["selectivity"] for v in probes.values()])
        acc = torch.tensor([v["accuracy"] for v in probes.values()])
        out["probes.selectivity_mean"] = float(sel.mean())
        out["probes.accuracy_mean"] = float(acc.mean())
    for key, entry in report.get("causal_tracing", {}).items():
        out[f"facts.{key}.total_effect"] = entry["total_effect"]
        out[f"facts.{key}.mlp_peak_layer"] = float(entry["mlp_peak"]["layer"])
        out[f"facts.{key}.mlp_peak_effect"] = entry["mlp_peak"]["effect"]
    ioi = report.get("ioi", {})
    if "logit_diff" in ioi:
        out["ioi.logit_diff"] = ioi["logit_diff"]
    if "top_head_score" in ioi:
        out["ioi.top_head_score"] = ioi["top_head_score"]
    return out


__all__ = [
    "MechanisticConfig",
    "heads_section",
    "logit_lens_section",
    "run_mechanistic",
]
