"""Interpretability of a model trained on Python code (training.data.code): the scores
of the skill suite that read ground-truth features, on code's own features, beside the
text analysis's scores by domain (a package is a domain), and micro-task circuits on
the code micro-tasks.

    from glassbox.analysis.code_analysis import code_report, is_code
    report = code_report(model, suite, "runs/x/analysis")
    report["summary"]          # interp.lift_pooled, interp.domain_selectivity, ...
    report["not_applicable"]   # {"interp.info_beyond_token": "why", ...}

What runs, on held-out rows (val fits, test scores), with the same sampler:

- the features (training.data.code_labels: token type, inside a string, bracket and
  indent depth, def signature, class body, parameter...): coverage in sample
  (analysis.interp.coverage_scores, with the token-identity baseline) and the audited
  scores (analysis.audit: held-out pooled lift over the token at matched candidates,
  its random-direction control, intervals), which read `feature_names` as on the skill
  suite;
- the domains (analysis.text_analysis.text_report): routing and its specialisation by
  package, units' health and feature pages, causal selectivity by package, circuits
  of each package's next-token loss, and information beyond the token about the
  package (`interp.domain_info_beyond_token`, held out, beside its shuffle). The
  corpus holds whole packages out, so these fit on one half of the val rows and score
  on the other (`domain_view`): test has no package of val;
- micro-task circuits (analysis.microcircuits on analysis.code_tasks: close_quote,
  close_bracket, self_attr, def_colon, indent_after_colon, for_in, param_use).

What needs skills does not apply and is listed with the reason in `not_applicable`
(`NOT_APPLICABLE`): information beyond the token about the skill (the audit's
specialisation is not run: there is no skill), per-skill circuits and modularity,
specialisation by skill, answer accuracy. `code_with_baselines` adds the untrained
twin's scores on the same tokens (`baselines.init.<key>`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from glassbox.analysis.activations import prefetch
from glassbox.analysis.audit import audit_samples, audited_scores
from glassbox.analysis.interp import coverage_scores, reading_hooks
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.microcircuits import microcircuit_report
from glassbox.analysis.resume import part
from glassbox.analysis.text_analysis import by_domain_with_twin, text_report
from glassbox.training.data import SuiteData

# Scores of the skill suite that code, with features and packages but no skills,
# cannot give, and why (the text analysis's keys where they are the same).
NOT_APPLICABLE = {
    "interp.info_beyond_token": "needs skills (see interp.domain_info_beyond_token)",
    "interp.info_beyond_token_routed": "needs skills (see interp.domain_info_beyond_token_routed)",
    "interp.nmi_expert_skill_label": "needs skills (see interp.nmi_expert_domain)",
    "interp.purity": "needs skills (see interp.domain_purity)",
    "interp.selectivity": "needs skill answers (see interp.domain_selectivity)",
    "interp.keep25_cost": "needs skill answers (see interp.domain_selectivity)",
    "interp.skill_circuit_fraction": "needs skill answers (see interp.domain_circuit_fraction and "
    "the micro-task circuits, interp.microcircuit_*)",
    "interp.tool_reliance": "needs tool calls",
    "mean_accuracy": "needs skill answers",
    "mean_exact_match": "needs skill answers",
    "ood_accuracy": "needs an out-of-distribution split",
    "probes": "the mechanistic probes read skill examples",
    "causal_tracing": "needs the facts skill",
    "ioi": "needs the ioi skill",
}


def is_code(suite: SuiteData) -> bool:
    """Whether the data is the code corpus: code ground truth and no skills."""
    return not suite.skill_names and any(n.startswith("code.") for n in suite.feature_names)


def domain_view(suite: SuiteData, chunk: int = 8) -> SuiteData:
    """The suite with its val rows as both held-out sides of the scores by package: val
    from chunks of `chunk` consecutive rows taken in turn, test the chunks between.
    The corpus holds whole packages out, so val and test share none (a package's score
    fitted on val could never be scored on test); consecutive rows of one file mostly
    stay on one side."""
    val = suite.splits["val"]
    sides = [[i for i in range(len(val)) if (i // chunk) % 2 == k] for k in (0, 1)]
    splits = DatasetDict({"val": val.select(sides[0]), "test": val.select(sides[1])})
    return dataclasses.replace(suite, splits=splits)


def not_applicable_line() -> str:
    """One line saying which scores do not apply on code and why."""
    keys = ", ".join(k.removeprefix("interp.") for k in NOT_APPLICABLE)
    return f"not applicable on code (features and packages, no skills): {keys}"


def code_report(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 128,
    seed: int = 0,
    *,
    microcircuits: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """Every score of the module docstring for `model` on the code corpus `suite`.
    n_examples: held-out rows of val and of test; kw: text_report's (reference_model,
    causal, circuits, ...). Returns text_report's dict with the feature scores' keys
    in "summary", "coverage" and "audit" (their details, as interp_report has them),
    "microcircuits" ({task: ...}) and NOT_APPLICABLE as "not_applicable"; JSON-safe."""
    # three parts, each saved on its own where scoring saves parts (analysis.resume)
    text = domain_view(suite)
    report = part("text", lambda: text_report(model, text, out_dir, n_examples, seed, **kw))
    summary = report["summary"]

    def features() -> dict[str, Any]:
        val, test = audit_samples(suite, n_examples, seed, model.device)
        prefetch(model, val, reading_hooks(model))
        return {"coverage": coverage_scores(model, val, suite),
                "audit": audited_scores(model, suite, val, test, seed=seed)}  # fmt: skip

    feats = part("features", features)
    cov, audit = feats["coverage"], feats["audit"]
    summary.update({k: v for k, v in cov.items() if k.startswith(("interp.", "baselines."))})
    report["coverage"] = cov
    summary.update(audit["summary"])  # no skill: its specialisation is not run
    report["audit"] = {k: v for k, v in audit.items() if k != "summary"}
    if microcircuits:
        micro = part("microcircuits", lambda: microcircuit_report(model, suite, seed=seed))
        summary.update(micro["summary"])
        report["microcircuits"] = micro["tasks"]
    report["not_applicable"] = dict(NOT_APPLICABLE)
    return jsonable(report)


def code_with_baselines(
    model,
    suite: SuiteData,
    out_dir: str | Path | None = None,
    n_examples: int = 128,
    seed: int = 0,
    init_seed: int = 0,
    **kw: Any,
) -> dict[str, Any]:
    """code_report of `model`, and of its untrained twin (the same config at
    init_seed, at initialisation) on the same tokens; the twin's interp.* and
    domains.* scores join the summary as baselines.init.<key>, its whole report is
    under "untrained_twin". kw: code_report's."""
    return by_domain_with_twin(code_report, model, suite, out_dir, n_examples, seed, init_seed, kw)


__all__ = [
    "NOT_APPLICABLE",
    "code_report",
    "code_with_baselines",
    "is_code",
    "not_applicable_line",
]
