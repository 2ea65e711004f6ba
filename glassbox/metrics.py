"""The metric registry: every number the gap report prints, said once.

An entry names a value by its dotted key (as a run's metrics.json and report.json
spell it: `val_loss`, `interp.coverage`, `skills.{skill}.accuracy`), and says how
the report shows it: the column header, a one-line doc (the report's "Columns"
section), the format, which table it belongs to, and whether higher is better
(the frontier). The aggregation over seeds, every table of report.md and the
aggregates in report.json read this registry, so a new metric is one new entry.

The entries live in `METRICS`, a registry (archs/registry.py: the idiom of the FFN
kinds, routers and skills) named `<section>:<key>` (a key may be a column of two
tables: `interpretability:interp.coverage`, `posthoc:interp.coverage`), in the order
the report prints them. `register_metric(Metric(...))` adds one after the built-in
ones and checks it where it is registered: its table is one of `SECTIONS`, its key
holds at most one placeholder, and its header no other.

A key may hold a `{name}` placeholder (`skills.{skill}.accuracy`): the entry stands
for one column per name found in the runs, in sorted order (`expand`). An entry can
show baselines beside it: `baselines=("init",)` adds a column read from
`baselines.init.<key>` after the metric's own.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NotRequired, TypedDict

from glassbox.archs.registry import Registry

# Tables of report.md, in the order the report prints them.
CAPABILITY = "capability"
INTERPRETABILITY = "interpretability"
SKILLS = "skills"
CIRCUITS = "circuits"  # per skill: circuit size, fraction of units, area under faithfulness
TOOLS = "tools"
POSTHOC = "posthoc"  # per seed: the transcoders fitted post hoc to the dense baseline
BUDGET = "budget"  # what was held equal: aggregated, written to report.json, said in prose
DOMAINS = "domains"  # text corpora: scores by domain (analysis.text_analysis), no ground truth
PER_DOMAIN = "per_domain"  # text corpora: one table per score, a column per domain
# every table an entry may name (checked where it is registered)
SECTIONS = (
    CAPABILITY,
    INTERPRETABILITY,
    SKILLS,
    CIRCUITS,
    TOOLS,
    POSTHOC,
    BUDGET,
    DOMAINS,
    PER_DOMAIN,
)


class Stat(TypedDict):
    """A number over seeds: mean, sample standard deviation (0 for one seed), count,
    and where the runs carry intervals, `ci`: the 95% interval (one seed: the
    bootstrap over examples; several: the t interval of the mean over seeds, at least
    as wide as the seeds' own intervals allow)."""

    mean: float
    std: float
    n: int
    ci: NotRequired[list[float]]


@dataclass(frozen=True)
class Metric:
    key: str  # dotted key in a run's values; may hold one `{name}` placeholder
    header: str  # column header (may use the same placeholder)
    doc: str = ""  # one line for the report's Columns section ("" = not listed)
    section: str = CAPABILITY  # the table it is a column of
    digits: int = 3  # decimals (of the percentage when percent)
    percent: bool = False  # a share in [0, 1], printed x100
    higher_is_better: bool | None = True  # None: neither (L0, dead fraction)
    gap: bool = False  # followed by a "gap" column: percent change to the dense baseline
    count: bool = False  # an integer count, printed with thousands separators, no spread
    constant: bool = False  # the same at every seed (parameter counts): one value in report.json
    baselines: tuple[str, ...] = ()  # shown beside it, read from baselines.<name>.<key>
    # kinds may be told apart on it: every kind read at the same number of candidate
    # units (a score over every unit gives a kind with more units more chances), so a
    # ladder marks "above / below dense" on it only when True
    matched: bool = True
    # a column of report.md's headline table (at most 8 columns in all: keep it to the
    # capability gap and the two or three scores that are informative, each with its twin)
    headline: bool = False

    @property
    def name(self) -> str:
        """Its name in the registry: `<section>:<key>`."""
        return f"{self.section}:{self.key}"

    @property
    def placeholder(self) -> str | None:
        """The `{name}` in the key, if the entry is expanded per name."""
        names = _placeholders(self.key)
        return names[0] if names else None

    def baseline(self, name: str) -> Metric:
        """The entry for the `name` baseline of this metric (its column beside it)."""
        return replace(
            self, key=f"baselines.{name}.{self.key}", header=f"{self.header} ({name})",
            doc="", gap=False, baselines=(), headline=False,
        )  # fmt: skip

    def format(self, stat: Stat | None) -> str:
        """A cell: mean ± std over seeds; the mean alone for one seed (no spread was
        measured, and "± 0.0" would say it was measured to be zero); then the 95%
        interval in brackets where the stat has one."""
        if not stat:
            return "–"
        m, s = stat["mean"], stat["std"]
        if self.count or stat["n"] <= 1:
            cell = self.format_value(m)
        elif self.percent:
            cell = f"{100 * m:.{self.digits}f} ± {100 * s:.{self.digits}f}"
        else:
            cell = f"{m:.{self.digits}f} ± {s:.{self.digits}f}"
        ci = stat.get("ci")
        if ci and not self.count:  # its 95% interval (glassbox.results.stat)
            cell += f" [{self.format_value(ci[0])}, {self.format_value(ci[1])}]"
        return cell

    def format_diff(self, d: float, ci: Sequence[float]) -> str:
        """A difference between two values of this metric and its interval, signed:
        "+0.042 [0.016, 0.068]"."""
        lo, hi = (self.format_value(x) for x in ci)
        return f"{'+' if d >= 0 else ''}{self.format_value(d)} [{lo}, {hi}]"

    def format_value(self, x: float | None) -> str:
        """A cell of one number (a single run)."""
        if x is None:
            return "–"
        if self.count:
            return f"{x:,.0f}"
        return f"{100 * x:.{self.digits}f}" if self.percent else f"{x:.{self.digits}f}"


def _placeholders(text: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]


def _check_metric(name: str, m: Any, config: type | None) -> None:
    if not isinstance(m, Metric):
        raise TypeError(f"metric {name!r}: {m!r} is not a glassbox.metrics.Metric")
    if m.section not in SECTIONS:
        raise ValueError(
            f"metric {m.key!r}: section {m.section!r} is not one of {', '.join(SECTIONS)}"
        )
    held = _placeholders(m.key)
    if len(held) > 1 or "" in held:
        raise ValueError(f"metric {m.key!r}: a key holds at most one named placeholder")
    if not set(_placeholders(m.header)) <= set(held):
        raise ValueError(f"metric {m.key!r}: header {m.header!r} uses a placeholder the key lacks")


# `<section>:<key>` -> Metric, in the order the report prints them
METRICS: Registry[Metric] = Registry("metric", check=_check_metric)


def register_metric(metric: Metric) -> Metric:
    """Put `metric` in its table of the report (after the entries registered before it)."""
    return METRICS.register(metric.name, metric)


_BUILT_IN: tuple[Metric, ...] = (
    # capability
    Metric("val_loss", "val loss", "mean cross-entropy of the loss-masked (answer) tokens, test split",
           higher_is_better=False, gap=True),
    Metric("mean_accuracy", "answer accuracy", "answer tokens predicted right, mean over skills",
           digits=1, percent=True, gap=True, headline=True),
    Metric("mean_exact_match", "exact match", "whole answers right, mean over skills",
           digits=1, percent=True),
    Metric("ood_accuracy", "OOD accuracy",
           "answer accuracy on the longer / deeper out-of-distribution split", digits=1, percent=True),
    Metric("params.active", "active params",
           "non-zero parameters that touch each token (a weight-sparse model's pruned weights "
           "are zeros)",
           higher_is_better=None, count=True, constant=True),
    # interpretability; (init): the untrained twin, (token): what the current token alone gives,
    # (random): random directions in the units' span, (shuffled): the groups shuffled within
    # each token. The audited scores (analysis.audit) first: held out, both signs, matched.
    Metric("interp.lift_pooled", "pooled lift",
           "contextual features, each unit and threshold chosen on the val sample and scored on "
           "the test sample, units read with both signs, 512 candidates per layer: "
           "sum(F1 unit - F1 token) / sum(1 - F1 token); 0 = the token id; [95% interval]",
           section=INTERPRETABILITY, baselines=("init", "random"), headline=True),
    Metric("interp.coverage_heldout", "held-out coverage",
           "mean held-out F1 of the best unit (every unit a candidate) over contextual features; "
           "a kind with more units has more chances: kinds compare by matched coverage",
           section=INTERPRETABILITY, baselines=("init", "token"), matched=False),
    Metric("interp.coverage_matched", "matched coverage",
           "the same with 512 candidate units per layer drawn at random, as the pooled lift, "
           "so every kind has as many chances; (random): as many random directions in the "
           "units' span", section=INTERPRETABILITY, baselines=("init", "random")),
    Metric("interp.info_beyond_token", "info beyond token",
           "bits per token the unit clusters (k-means, 32 per layer, fitted on the val sample) add "
           "about the skill to the token id, held out; (shuffled): clusters shuffled within each "
           "token", section=INTERPRETABILITY, baselines=("init", "shuffled"), headline=True),
    Metric("interp.info_beyond_token_routed", "routed info beyond token",
           "the same for the kind's own routing (a MoE's top-1 expert)",
           section=INTERPRETABILITY, baselines=("init", "shuffled")),
    # the scores of the old protocol (in sample, one sign, every unit), kept for one release
    Metric("interp.coverage_lift", "contextual lift",
           "contextual features: mean of (F1 best unit - F1 token) / (1 - F1 token); 0 = no better "
           "than the token id (an untrained network's single units score below it: compare with "
           "(init))", section=INTERPRETABILITY, baselines=("init",), matched=False),
    Metric("interp.coverage_contextual", "contextual coverage",
           "mean best-unit F1 over contextual features (token-identity F1 < 0.9)",
           section=INTERPRETABILITY, baselines=("init", "token"), matched=False),
    Metric("interp.coverage_lexical", "lexical coverage",
           "mean best-unit F1 over lexical features (token-identity F1 >= 0.9)",
           section=INTERPRETABILITY, baselines=("init", "token"), matched=False),
    Metric("interp.coverage", "coverage", "ground-truth coverage of the readable units (mean best F1)",
           section=INTERPRETABILITY, baselines=("init", "token"), matched=False),
    Metric("interp.nmi_expert_skill_label", "NMI(unit;skill)",
           "I(expert; skill)/H(skill); dense: k-means clusters of neurons; token: each token id "
           "sent to its most frequent experts", section=INTERPRETABILITY, baselines=("init", "token")),
    Metric("interp.nmi_lift", "NMI lift", "NMI(unit;skill) minus its token-identity baseline",
           section=INTERPRETABILITY, baselines=("init",)),
    Metric("interp.purity", "purity", "share of an expert's tokens from its top skill",
           section=INTERPRETABILITY, baselines=("init", "token")),
    Metric("interp.selectivity", "selectivity",
           "ablating a skill's experts: drop on it minus drop on the others", section=INTERPRETABILITY,
           baselines=("init",)),
    Metric("interp.keep25_cost", "keep-25% cost",
           "a skill's answer accuracy lost when only its most used 25% of each layer's experts "
           "(dense: of 32 equal neuron clusters) are kept, the rest never chosen (dense: zero); "
           "mean over skills (EMO)", section=INTERPRETABILITY, digits=1, percent=True,
           higher_is_better=False, baselines=("init",)),
    Metric("interp.delta_target", "Δ target",
           "a skill's answer accuracy lost when those experts are removed, mean over skills "
           "(Monet)", section=INTERPRETABILITY, digits=1, percent=True, baselines=("init",)),
    Metric("interp.delta_others", "Δ others",
           "the other skills' answer accuracy lost when they are removed, mean over skills",
           section=INTERPRETABILITY, digits=1, percent=True, higher_is_better=False,
           baselines=("init",)),
    Metric("interp.microcircuit_fraction_median", "micro-circuit fraction",
           "binary micro-tasks (target against one alternative): the fewest units (heads + the "
           "kind's units) a learned mask keeps, every other unit mean-ablated, for 90% of the "
           "way from a uniform guess to the model on half the prompts; share of all units, "
           "median over the tasks the model has learned", section=INTERPRETABILITY,
           higher_is_better=False, baselines=("init",), headline=True),
    Metric("interp.microcircuit_nodes_gmean", "micro-circuit nodes",
           "the same in units, geometric mean over tasks (Gao et al.)", section=INTERPRETABILITY,
           higher_is_better=False, baselines=("init",)),
    Metric("interp.microcircuit_faithfulness_heldout", "micro-circuit held-out faithfulness",
           "(ln 2 - loss) / (ln 2 - clean loss) of each circuit on the other half of its "
           "prompts, mean over tasks", section=INTERPRETABILITY),
    Metric("interp.microcircuit_beats_random", "beats random units",
           "share of tasks whose circuit, held out, beats every one of 5 random unit sets of "
           "its size", section=INTERPRETABILITY),
    Metric("interp.microcircuit_beats_same_heads", "beats its heads + random units",
           "share of tasks whose circuit, held out, beats every one of 5 sets of its own heads "
           "with random other units in the same count (a ranking that finds only heads does "
           "not)", section=INTERPRETABILITY),
    Metric("interp.microcircuit_edges_gmean", "micro-circuit edges",
           "non-zero weights the circuit's units read and write (what a weight-sparse model "
           "saves), geometric mean over tasks", section=INTERPRETABILITY, digits=0,
           higher_is_better=False),
    Metric("interp.microcircuit_accuracy_gap", "circuit accuracy gap",
           "the model's held-out accuracy on a task minus its circuit's, mean over tasks",
           section=INTERPRETABILITY, digits=1, percent=True, higher_is_better=False),
    Metric("interp.task_means_ratio", "task-means / global size",
           "circuit size with each unit ablated to its mean over the task's own prompts, "
           "over the size with global means (geometric mean)", section=INTERPRETABILITY),
    Metric("interp.nonsense_ratio", "nonsense / real size",
           "the same prompts with target and alternative swapped on a random half: circuit "
           "size at the real task's target loss over the real one (geometric mean; a nonsense "
           "task never reached counts as all units, so a lower bound)", section=INTERPRETABILITY),
    Metric("interp.microcircuit_tasks", "micro-tasks learned",
           "micro-tasks whose clean loss is under half a uniform guess's (the others get no "
           "circuit)", section=INTERPRETABILITY, digits=0),
    Metric("interp.microcircuit_empty", "micro-tasks with an empty circuit",
           "learned micro-tasks that every unit mean-ablated still performs (the token's "
           "direct path and the units' means): their circuit has 0 units, and the sizes, "
           "their ratios and the random-units controls are over the other tasks",
           section=INTERPRETABILITY, digits=0),
    Metric("interp.skill_circuit_fraction", "whole-skill circuit fraction",
           "(the older instrument: a whole skill, attribution-ranked, not held out) fewest units (heads + the kind's units) keeping 90% of a skill's loss gap, as a share "
           "of all, mean over skills", section=INTERPRETABILITY, higher_is_better=False,
           baselines=("init",)),
    Metric("interp.skill_circuit_auc", "whole-skill circuit AUC",
           "(the older instrument) area under faithfulness against fraction of units kept, mean over skills",
           section=INTERPRETABILITY, baselines=("init",)),
    # graphs: exact attribution graphs of a fixed prompt set, 2 val prompts per skill traced
    # to their answer's first token (analysis.graphs.scores)
    Metric("interp.graph_nodes80", "graph nodes (80%)",
           "attribution graph of the answer's first token (attention and norms frozen at the "
           "prompt, at most 2048 unit nodes): the units (and error nodes) that carry 80% of its "
           "influence, circuit-tracer's pruning; median over 2 val prompts per skill",
           section=INTERPRETABILITY, digits=1, higher_is_better=False, baselines=("init",)),
    Metric("interp.graph_edges80", "graph edges (80%)", "the edges that carry 80% of it",
           section=INTERPRETABILITY, digits=0, higher_is_better=False, baselines=("init",)),
    Metric("interp.graph_error_share", "graph error share",
           "share of the logit's absolute direct attribution on error nodes (what a post-hoc "
           "transcoder misses); 0 by construction for every kind of glassbox's own",
           section=INTERPRETABILITY, digits=1, percent=True, higher_is_better=False,
           baselines=("init",)),
    Metric("interp.graph_top1_agreement", "graph top-1 agreement",
           "prompts on which the graph's model (post-hoc transcoders spliced in, no errors) "
           "predicts the model's top token; 1 by construction for glassbox's own kinds",
           section=INTERPRETABILITY, digits=1, percent=True, baselines=("init",)),
    Metric("interp.l0", "L0", "active latents per token", section=INTERPRETABILITY,
           higher_is_better=None),
    Metric("interp.dead_fraction", "dead", "share of latents that never fire",
           section=INTERPRETABILITY, higher_is_better=False),
    Metric("interp.tool_reliance", "tool reliance", "answers that follow an injected tool result",
           section=INTERPRETABILITY),
    # per skill
    Metric("skills.{skill}.accuracy", "{skill}", section=SKILLS, digits=1, percent=True),
    Metric("interp.skill_circuit_size.{skill}", "{skill} whole-skill size", section=CIRCUITS, digits=0,
           higher_is_better=False),
    Metric("interp.skill_circuit_fraction.{skill}", "{skill} whole-skill fraction", section=CIRCUITS,
           higher_is_better=False),
    Metric("interp.skill_circuit_auc.{skill}", "{skill} whole-skill AUC", section=CIRCUITS),
    Metric("interp.microcircuit.{task}.nodes", "{task} nodes", section=CIRCUITS, digits=0,
           higher_is_better=False),
    Metric("interp.microcircuit.{task}.faithfulness_heldout", "{task} held-out faithfulness",
           section=CIRCUITS),
    Metric("interp.skill_circuit_size_expert.{skill}", "{skill} whole-skill size in experts", section=CIRCUITS,
           digits=0, higher_is_better=False),  # moe: whole experts in place of hidden units
    Metric("interp.graph_nodes80.{skill}", "{skill} graph nodes (80%)", section=CIRCUITS,
           digits=1, higher_is_better=False),  # attribution-graph nodes, median of the prompts
    # tool calling against answering from the weights
    Metric("tools.exact_match", "addition + facts exact match", section=TOOLS, digits=1, percent=True),
    Metric("tools.exact_match_withheld", "result withheld", section=TOOLS, digits=1, percent=True),
    Metric("tools.addition_2x", "addition 2x digits", section=TOOLS, digits=1, percent=True),
    Metric("tools.addition_4x", "addition 4x digits", section=TOOLS, digits=1, percent=True),
    Metric("tools.facts_accuracy", "facts (held-out phrasing)", section=TOOLS, digits=1, percent=True),
    Metric("interp.call_precision", "call precision", section=TOOLS, digits=1, percent=True),
    Metric("interp.call_recall", "call recall", section=TOOLS, digits=1, percent=True),
    Metric("interp.tool_reliance", "reliance", section=TOOLS, digits=1, percent=True),
    # the post-hoc route, per seed (its older in-sample coverage stays in report.json)
    Metric("interp.lift_pooled", "pooled lift", section=POSTHOC),
    Metric("interp.coverage_matched", "matched coverage", section=POSTHOC),
    Metric("interp.info_beyond_token", "info beyond token", section=POSTHOC),
    Metric("interp.fvu", "FVU", section=POSTHOC, higher_is_better=False),
    Metric("interp.ce_loss_recovered", "CE loss recovered", section=POSTHOC),
    Metric("interp.kl_to_clean", "KL to clean", section=POSTHOC, higher_is_better=False),
    # the dense model traced with its transcoders and error nodes (its nodes for 80% are in
    # report.json; the table keeps to what the post-hoc route is read by: errors, agreement)
    Metric("interp.graph_error_share", "graph error share", section=POSTHOC, digits=1,
           percent=True, higher_is_better=False),
    Metric("interp.graph_top1_agreement", "graph top-1 agreement", section=POSTHOC, digits=1,
           percent=True),
    Metric("cost_ratio", "cost ratio (post-hoc / by construction)", section=POSTHOC, digits=1,
           higher_is_better=False),
    # text corpora: the domain (source folder / file) in place of the skill
    Metric("interp.nmi_expert_domain", "NMI(unit;domain)",
           "I(expert; domain)/H(domain); dense: k-means clusters of neurons; token: each token id "
           "sent to its most frequent experts", section=DOMAINS, baselines=("init", "token")),
    Metric("interp.domain_purity", "domain purity", "share of an expert's tokens from its top domain",
           section=DOMAINS, baselines=("init", "token")),
    Metric("interp.domain_info_beyond_token", "domain info beyond token",
           "bits per token the unit clusters (k-means, 32 per layer, fitted on val blocks) add "
           "about the domain to the token id, on test blocks; (shuffled): within each token",
           section=DOMAINS, baselines=("init", "shuffled")),
    Metric("interp.domain_specialization", "domain spec.",
           "OLMoE: share of a domain's tokens its favourite expert sees, mean over domains",
           section=DOMAINS, baselines=("init",)),
    Metric("interp.vocab_specialization", "vocab spec.",
           "OLMoE: share of a token id's occurrences its favourite expert sees", section=DOMAINS,
           baselines=("init",)),
    Metric("interp.domain_selectivity", "domain selectivity",
           "ablating a domain's most-used experts (or units): next-token loss rise on it minus on "
           "the others, nats", section=DOMAINS, baselines=("init",)),
    Metric("interp.domain_circuit_fraction", "circuit fraction",
           "fewest units keeping 90% of a domain's next-token loss gap, share of all, mean over "
           "domains", section=DOMAINS, higher_is_better=False, baselines=("init",)),
    Metric("domains.{domain}.loss", "{domain}", "next-token loss (test blocks, nats)",
           section=PER_DOMAIN, higher_is_better=False),
    Metric("domains.{domain}.specialization", "{domain}",
           "domain specialisation: share of the domain's tokens its favourite expert (or k-means "
           "cluster) sees, mean over layers", section=PER_DOMAIN),
    Metric("domains.{domain}.selectivity", "{domain}",
           "selectivity: loss rise on the domain minus on the others when its experts (or units) "
           "are ablated, nats", section=PER_DOMAIN),
    Metric("domains.{domain}.circuit_fraction", "{domain}",
           "circuit fraction: fewest units keeping 90% of the domain's loss gap, share of all",
           section=PER_DOMAIN, higher_is_better=False),
    # what was held equal
    Metric("params.total", "total params", section=BUDGET, higher_is_better=None, count=True,
           constant=True),
    Metric("params.nonzero", "non-zero params", section=BUDGET, higher_is_better=None,
           count=True),  # what a weight-sparse model is matched on
    Metric("train.steps", "optimiser steps", section=BUDGET, higher_is_better=None, count=True),
    Metric("train.tokens", "training tokens", section=BUDGET, higher_is_better=None, count=True),
    Metric("train.flops", "training FLOPs", section=BUDGET, higher_is_better=None, count=True),
)  # fmt: skip
for _metric in _BUILT_IN:
    register_metric(_metric)


def in_section(metrics: Iterable[Metric], section: str) -> list[Metric]:
    return [m for m in metrics if m.section == section]


def expand(metrics: Iterable[Metric], keys: Iterable[str]) -> list[Metric]:
    """Each entry with a `{name}` placeholder becomes one entry per name whose key is
    among `keys` (sorted by name); the others stay as they are. Baselines follow
    their metric."""
    keys = sorted(set(keys))
    out: list[Metric] = []
    for m in metrics:
        field = m.placeholder
        if field is None:
            concrete = [m]
        else:
            # a name may hold dots (code's domains are packages: numpy.polynomial); the
            # key's fixed parts around it keep the match whole
            pattern = re.escape(m.key).replace(re.escape(f"{{{field}}}"), f"(?P<{field}>.+)")
            names = sorted({g[field] for k in keys if (g := re.fullmatch(pattern, k))})
            concrete = [
                replace(m, key=m.key.format(**{field: n}), header=m.header.format(**{field: n}))
                for n in names
            ]
        for c in concrete:
            out += [c, *(c.baseline(b) for b in c.baselines)]
    return out


def unique_keys(metrics: Sequence[Metric]) -> list[str]:
    """The keys of `metrics` in order, each once (an entry may show a key another shows)."""
    return list(dict.fromkeys(m.key for m in metrics))
