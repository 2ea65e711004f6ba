"""Attribution-graph statistics as interpretability scores (docs/design.md, "Attribution
graphs"): over a fixed prompt set per skill, how many nodes and edges carry 80% of the
answer's influence, how much of it the graph cannot explain (error share) and whether
the graph's model predicts what the model does (top-1 agreement).

    scores = graph_scores(model, suite, seed=0)
    scores["summary"]["interp.graph_nodes80"], scores["skills"]["addition"]

The prompts are the skill suite's val examples drawn with the one sampler
(analysis.batches.sample_indices), GRAPH_PROMPTS_PER_SKILL per skill, each cut before
its answer, the answer's first token the traced logit. For glassbox's own kinds the
error share is 0 and the agreement 1 by construction; with `replacements` (post-hoc
transcoders standing in for a dense model's MLPs, analysis.posthoc) both are measured.
A graph holds at most GRAPH_MAX_NODES unit nodes (those of largest total effect on the
logit, as circuit-tracer caps its feature nodes): a dense model's SwiGLU neurons are
all active, so its counts are over its 2048 most effective units of the prompt.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glassbox.analysis.batches import sample_indices
from glassbox.analysis.graphs.graph import trace
from glassbox.analysis.graphs.prune import graph_stats
from glassbox.training.data import SuiteData

GRAPH_PROMPTS_PER_SKILL = 2  # val examples traced per skill
GRAPH_MAX_NODES = 2048  # unit nodes per graph (the most effective; a dense model's cap)

# score -> (graph_stats' key, how prompts are pooled): counts by their median (a few
# long prompts make large graphs), shares by their mean
SCORES = {
    "graph_nodes80": ("nodes_80", statistics.median),
    "graph_edges80": ("edges_80", statistics.median),
    "graph_error_share": ("error_share", statistics.fmean),
    "graph_top1_agreement": ("agreement", statistics.fmean),
}


@dataclass(frozen=True)
class GraphPrompt:
    """One traced prompt: its skill, its ids up to the answer, the answer's first token."""

    skill: str
    ids: list[int]
    target: int


def graph_prompts(
    suite: SuiteData, per_skill: int = GRAPH_PROMPTS_PER_SKILL, seed: int = 0, split: str = "val"
) -> list[GraphPrompt]:
    """per_skill examples of each skill (fewer where it has fewer with an answer), drawn
    by sample_indices with `seed`, each cut before its first answer token."""
    ds = suite.splits[split]
    out = []
    for s, skill in enumerate(suite.skill_names):
        rows = sample_indices(suite, split, 4 * per_skill, seed, keep=lambda k, s=s: k == s)
        taken = 0
        for i in rows:
            row = ds[i]
            mask = row["answer_mask"]
            if taken == per_skill or 1 not in mask or mask.index(1) == 0:
                continue
            a = mask.index(1)
            out.append(GraphPrompt(skill, list(row["input_ids"][:a]), int(row["input_ids"][a])))
            taken += 1
    return out


def _pool(stats: list[dict[str, float]]) -> dict[str, float]:
    return {name: pool([s[key] for s in stats]) for name, (key, pool) in SCORES.items()}


def graph_scores(
    model,
    suite: SuiteData,
    seed: int = 0,
    per_skill: int = GRAPH_PROMPTS_PER_SKILL,
    replacements: Mapping[int, Any] | None = None,
    max_nodes: int = GRAPH_MAX_NODES,
) -> dict[str, Any]:
    """The graph statistics of `model` (with `replacements`: post-hoc transcoders traced
    in place of those layers' MLPs, their errors as nodes) over graph_prompts.

    Returns {"summary": {"interp.graph_nodes80", "interp.graph_edges80",
    "interp.graph_error_share", "interp.graph_top1_agreement", and per skill
    "interp.graph_nodes80.<skill>"}, "skills": {skill: the four scores}, "prompts": n,
    "max_nodes": the cap, "completeness": the largest relative error of the logit's
    sum over the graphs}."""
    by_skill: dict[str, list[dict[str, float]]] = {}
    worst = 0.0
    for p in graph_prompts(suite, per_skill, seed):
        g = trace(model, p.ids, target=p.target, replacements=replacements, max_nodes=max_nodes)
        by_skill.setdefault(p.skill, []).append(graph_stats(g))
        worst = max(worst, g.completeness["logit_rel_error"])
    every = [s for stats in by_skill.values() for s in stats]
    if not every:
        return {"summary": {}, "skills": {}, "prompts": 0}
    skills = {skill: _pool(stats) for skill, stats in by_skill.items()}
    summary = {f"interp.{k}": v for k, v in _pool(every).items()}
    summary.update({f"interp.graph_nodes80.{k}": v["graph_nodes80"] for k, v in skills.items()})
    return {
        "summary": summary,
        "skills": skills,
        "prompts": len(every),
        "max_nodes": max_nodes,
        "completeness": worst,
    }
