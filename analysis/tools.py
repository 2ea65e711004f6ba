"""Tool-use analysis: does a tool-calling model call when a call is needed, with the
right arguments, and does its answer come from the tool or from its own weights?

    from glassbox.analysis.tools import tool_report
    report = tool_report(model, data_cfg)          # a DataConfig, its dict, or a SuiteData
    report["summary"]["interp.tool_reliance"]      # share of answers that follow an injected result

Every score is measured by generation (greedy), from prompts cut out of a suite split:
the tokens before the first token the model must write (a `<call>`, or the first
answer token), so `1 2 + 3 4 =` and `city of Dubo =`. The expected answer is the
row's answer tokens; the expected call is the text between its `<call>` and
`</call>`. A call is needed on the tool-call skills (addition_tool, facts_tool)
and on no other.

Summary keys (None where a score does not apply, e.g. call precision of a model
that never calls):

| key | what |
|---|---|
| interp.call_precision | share of the examples the model called on that needed a call |
| interp.call_recall | share of the examples that needed a call that got one |
| interp.argument_accuracy | share of the calls made where needed whose text is the expected call exactly |
| interp.tool_reliance | counterfactual: the result of the call is replaced by another value (an addition: the true sum plus a random nonzero offset, as many digits; a fact: another value of the same relation; see Injector); share of answers equal to the injected value |
| tools.counterfactual_follows_true | ... share of answers equal to the true one (the model computed it itself) |
| tools.exact_match | answer exact match on the addition and facts prompts (through the tools for a tool model; plain greedy decoding for a model without them) |
| tools.exact_match_withheld | the same with the tool's result withheld (`<result> </result>` forced empty) |
| tools.addition_exact_match | addition prompts of the split (operands up to N digits) |
| tools.addition_{k}x | additions with both operands k*N digits long (N = data.addition.max_digits; k in tools.length_factors); `lengths` also says, for a tool model, how often it called, its argument accuracy, and both once `<call> calculator` is given (`forced_call`: a wrong decision to call told from a wrong copy) |
| tools.facts_accuracy | facts prompts of the split (held out: phrasing 1 about entities whose phrasing-1 queries train never asked) |
| tools.facts_accuracy_train | facts prompts of the train split (every fact the model saw) |

A model "uses tools" when `tools.enabled` says so, or (default) when its data
mixes a tool-call skill. A model that does not is scored on the plain addition
and facts skills with plain greedy generation: the dense baseline's numbers under
the same keys.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glassbox.analysis.jsonable import mean_defined
from glassbox.archs.generation import generate
from glassbox.archs.tools import (
    Calculator,
    Lookup,
    ToolCall,
    ToolRegistry,
    ToolResult,
    format_trace,
)
from glassbox.archs.tools.config import ToolsConfig, validate_tools_config
from glassbox.archs.tools.runtime import generate_with_tools
from glassbox.training.data import DataConfig, SuiteData, build_datasets, data_config_from_dict
from glassbox.training.data.knowledge import KnowledgeGraph, knowledge_graph
from glassbox.training.data.skills.addition_tool import AdditionToolSkill
from glassbox.training.data.skills.tool_call import PLAIN_OF_SKILL, suite_registry, uses_tools
from glassbox.training.data.vocab import CALL, CALL_END, EOS

MODES = ("execute", "withhold", "counterfactual", "plain")
COUNTERFACTUAL_NUMBERS = ("offset", "uniform")  # see Injector


@dataclass
class Case:
    """One prompt to generate from, with what the model should write."""

    skill: str  # the skill the prompt comes from
    prompt: list[int]  # token ids: <bos> .. the end of the prompt ('=')
    answer: list[int]  # token ids of the expected final answer
    call: str | None = None  # the expected call text ('calculator 1 2 + 3 4'); None: no call needed

    @property
    def needs_call(self) -> bool:
        return self.call is not None

    @property
    def task(self) -> str:
        """The plain skill asked ('addition' for addition_tool too)."""
        return PLAIN_OF_SKILL.get(self.skill, self.skill)


@dataclass
class Outcome:
    """What the model did with one case."""

    called: bool  # it wrote a <call> (sampled, not forced)
    call_text: str | None  # the text of its first completed call, None without one
    answer: list[int]  # what it wrote after the last result (or after the prompt), <eos> excluded
    finished: bool  # it stopped with <eos> within the token budget
    calls: list[ToolCall]  # the trace of its calls, in order

    def correct(self, expected: Sequence[int]) -> bool:
        return self.finished and self.answer == list(expected)


def _token_id(tokenizer, token: str) -> int:
    i = tokenizer.token_to_id(token)
    if i is None:
        raise ValueError(f"the tokenizer has no {token!r}: not a skill-suite tokenizer")
    return i


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False)


def cases_from_split(
    suite: SuiteData,
    split: str = "test",
    *,
    per_skill: int = 128,
    skills: Sequence[str] | None = None,
) -> list[Case]:
    """Up to `per_skill` cases of every skill in `split` (of those in `skills`, if
    given), in split order."""
    tok = suite.tokenizer
    call_id, end_id = _token_id(tok, CALL), _token_id(tok, CALL_END)
    ds = suite.splits[split].select_columns(["input_ids", "answer_mask", "example_skill"])
    counts: dict[str, int] = {}
    out: list[Case] = []
    for row in ds:
        skill = suite.skill_names[row["example_skill"]]
        if (skills is not None and skill not in skills) or counts.get(skill, 0) >= per_skill:
            continue
        ids, ans = row["input_ids"], row["answer_mask"]
        first = next((i for i, (t, a) in enumerate(zip(ids, ans)) if a or t == call_id), None)
        if first is None:
            continue  # no answer to score
        call = None
        if call_id in ids[first:]:
            c0 = ids.index(call_id, first)
            call = _decode(tok, ids[c0 + 1 : ids.index(end_id, c0)])
        out.append(Case(skill, ids[:first], [t for t, a in zip(ids, ans) if a], call))
        counts[skill] = counts.get(skill, 0) + 1
    return out


def addition_cases(
    cfg: DataConfig, tokenizer, digits: int, n: int, *, seed: int = 0, tool: bool = True
) -> list[Case]:
    """n additions whose operands both have exactly `digits` digits, spelt as the
    suite spells them (`cfg.addition.reversed`); with the expected calculator call
    when `tool`, as plain addition prompts otherwise (the same prompts either way)."""
    skill = AdditionToolSkill(cfg)
    bos = _token_id(tokenizer, "<bos>")
    rng = random.Random(f"{seed}:tools:addition:{digits}")
    low = 0 if digits == 1 else 10 ** (digits - 1)
    out = []
    for _ in range(n):
        ex = skill.call(rng.randint(low, 10**digits - 1), rng.randint(low, 10**digits - 1))
        c0, c1 = ex.words.index(CALL), ex.words.index(CALL_END)
        ids = [tokenizer.token_to_id(w) for w in ex.words]
        if None in ids:
            raise ValueError(f"the tokenizer cannot spell {' '.join(ex.words)!r}")
        answer = [t for t, a in zip(ids, ex.answer) if a]
        call = " ".join(ex.words[c0 + 1 : c1]) if tool else None
        out.append(Case("addition_tool" if tool else "addition", [bos, *ids[:c0]], answer, call))
    return out


class Injector:
    """The counterfactual callback: replaces the result of each case's first
    successful call by a value that is not the true one.

    calculator, numbers="offset": the true result plus a random nonzero offset of
    at most 10^(d-1) in size, keeping its d digits and its sign (another digit when
    d = 1): a value an addition of the same sizes could give. numbers="uniform":
    any other integer of d digits (a 4-digit sum of two 3-digit numbers may then
    start with 9, which no such addition gives). lookup: another value of the
    call's relation in `kg`. `injected[case]` keeps the forced text; calls it
    cannot replace keep their result.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        kg: KnowledgeGraph | None,
        seed: int = 0,
        numbers: str = "offset",
    ):
        if numbers not in COUNTERFACTUAL_NUMBERS:
            raise ValueError(f"numbers={numbers!r}: one of {', '.join(COUNTERFACTUAL_NUMBERS)}")
        self.registry = registry
        self.kg = kg
        self.numbers = numbers
        self.rng = random.Random(f"{seed}:tools:counterfactual")
        self.injected: dict[int, str] = {}

    def _number(self, true: int) -> int:
        sign, size = (-1 if true < 0 else 1), abs(true)
        d = len(str(size))
        if d == 1:
            return sign * self.rng.choice([v for v in range(10) if v != size])
        while True:
            if self.numbers == "uniform":
                value = self.rng.randint(10 ** (d - 1), 10**d - 1)
            else:
                value = size + self.rng.choice((-1, 1)) * self.rng.randint(1, 10 ** (d - 1))
            if value != size and len(str(value)) == d:
                return sign * value

    def __call__(self, case: int, result: ToolResult) -> Any:
        if case in self.injected or not result.ok or result.tool not in self.registry:
            return None
        tool = self.registry.get(result.tool)
        value = None
        if isinstance(tool, Calculator):
            value = self._number(result.value)
        elif isinstance(tool, Lookup) and self.kg is not None:
            _, relation = tool.parse(result.arguments)
            if relation in self.kg.relations:
                others = [v for v in self.kg.values(relation) if v != result.value]
                value = self.rng.choice(others) if others else None
        if value is not None:
            self.injected[case] = tool.format(value)
        return value


def run_cases(
    model,
    tokenizer,
    cases: Sequence[Case],
    registry: ToolRegistry | None = None,
    *,
    mode: str = "execute",
    counterfactual: Callable[[int, ToolResult], Any] | None = None,
    error_text: str = "error",
    batch_size: int = 64,
) -> list[Outcome]:
    """Greedy generation from every case's prompt; one Outcome per case, in order.

    mode: execute | withhold | counterfactual (archs.tools.runtime modes, with
    `registry`) or plain (no tools: archs.generation.generate). counterfactual is
    called as counterfactual(case index, result)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: one of {', '.join(MODES)}")
    if mode != "plain" and registry is None:
        raise ValueError(f"mode={mode!r} needs a ToolRegistry (mode='plain' runs without tools)")
    eos, call_id = _token_id(tokenizer, EOS), _token_id(tokenizer, CALL)
    order = sorted(range(len(cases)), key=lambda i: len(cases[i].prompt))
    out: list[Outcome | None] = [None] * len(cases)
    for b0 in range(0, len(order), batch_size):
        idx = order[b0 : b0 + batch_size]
        prompts = [cases[i].prompt for i in idx]
        room = model.cfg.max_seq_len - max(map(len, prompts))
        budget = max(_budget(cases[i], tools=mode != "plain") for i in idx)
        if room <= 0:
            raise ValueError(f"a prompt fills model.max_seq_len={model.cfg.max_seq_len}")
        max_new = min(budget, room)
        if mode == "plain":
            gen = generate(model, prompts, max_new_tokens=max_new, stop_tokens=[eos])
            traces: list[list[ToolCall]] = [[] for _ in idx]
        else:
            cf = None
            if counterfactual is not None:
                cf = lambda seq, result, idx=idx: counterfactual(idx[seq], result)  # noqa: E731
            gen = generate_with_tools(
                model,
                prompts,
                tokenizer,
                registry,
                max_new_tokens=max_new,
                stop_tokens=[eos],
                mode=mode,
                counterfactual=cf,
                error_text=error_text,
            )
            traces = [sorted(gen.calls(b), key=lambda c: c.call_end) for b in range(len(idx))]
        for b, i in enumerate(idx):
            out[i] = _outcome(gen, b, traces[b], call_id)
    return out  # type: ignore[return-value]


def _outcome(gen, b: int, trace: list[ToolCall], call_id: int) -> Outcome:
    """Sequence b of a generation as an Outcome: whether the model itself wrote
    <call>, its first call, the answer after the last call's result, and the trace."""
    cont = gen.continuations[b]
    forced = gen.forced[b] if gen.forced else [False] * len(cont)
    finished = gen.finished[b]
    body = cont[:-1] if finished else cont  # the stop token is the last one
    calls = [c for c in trace if c.complete]
    start = calls[-1].result_end + 1 if calls else 0
    return Outcome(
        called=any(t == call_id and not f for t, f in zip(cont, forced)),
        call_text=calls[0].text if calls else None,
        answer=list(body[start:]),
        finished=finished,
        calls=trace,
    )


def _budget(case: Case, tools: bool) -> int:
    """Tokens a right continuation needs, plus slack: the call, the result (about
    as long as the answer), the answer and <eos>."""
    n = len(case.answer)
    if not tools:
        return n + 9
    call = len(case.call.split()) if case.call else 8
    return (call + 2) + (n + 4) + n + 9


def _exact(cases: Sequence[Case], outs: Sequence[Outcome], keep=lambda c: True) -> float | None:
    return mean_defined([o.correct(c.answer) for c, o in zip(cases, outs) if keep(c)])


def call_scores(cases: Sequence[Case], outs: Sequence[Outcome]) -> dict[str, float | None]:
    """Call precision / recall (over examples: a call made vs a call needed) and
    argument accuracy (calls made where needed whose text is the expected one)."""
    needed = [c.needs_call for c in cases]
    called = [o.called for o in outs]
    hits = [n and k for n, k in zip(needed, called)]
    made_where_needed = [(c, o) for c, o in zip(cases, outs) if c.needs_call and o.called]
    return {
        "call_precision": sum(hits) / sum(called) if any(called) else None,
        "call_recall": sum(hits) / sum(needed) if any(needed) else None,
        "argument_accuracy": mean_defined([o.call_text == c.call for c, o in made_where_needed]),
        "n_needed": sum(needed),
        "n_called": sum(called),
    }


def _forced_call_scores(model, tok, cases: Sequence[Case], run: dict) -> dict[str, float | None]:
    """The cases with `<call> TOOL` appended to the prompt: whether the model copies
    the arguments and the answer right once the call is opened for it (this tells
    a wrong decision to call from a wrong copy)."""
    call_id = _token_id(tok, CALL)
    opened = [
        Case(c.skill, [*c.prompt, call_id, _token_id(tok, c.call.split()[0])], c.answer, c.call)
        for c in cases
        if c.call
    ]
    outs = run_cases(model, tok, opened, mode="execute", **run)
    return {
        "argument_accuracy": mean_defined([o.call_text == c.call for c, o in zip(opened, outs)]),
        "exact_match": _exact(opened, outs),
    }


def _data(suite_or_cfg, data_cfg) -> tuple[SuiteData, DataConfig]:
    if isinstance(suite_or_cfg, SuiteData):
        if data_cfg is None:
            raise ValueError(
                "tool_report(model, suite): pass data_cfg= too (the DataConfig the suite was "
                "built from: the tools and the length prompts are built from it)"
            )
        cfg = data_cfg if isinstance(data_cfg, DataConfig) else data_config_from_dict(data_cfg)
        return suite_or_cfg, cfg
    cfg = suite_or_cfg
    if not isinstance(cfg, DataConfig):
        cfg = data_config_from_dict(cfg)
    return build_datasets(cfg), cfg


TOOL_SKILLS = ("addition", "facts", "addition_tool", "facts_tool")


def uses_tool_skills(data_cfg) -> bool:
    """Whether the tool analysis applies to a run's data (a DataConfig or its dict):
    the skill suite with addition or facts, plain (a model without tools answers from
    its weights) or through tools."""
    cfg = data_cfg if isinstance(data_cfg, DataConfig) else data_config_from_dict(data_cfg)
    return cfg.source == "skills" and any(cfg.mix.get(n, 0) > 0 for n in TOOL_SKILLS)


def skill_scores(cases: Sequence[Case], outs: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """Per skill (in the cases' order): n, exact_match, called, argument_accuracy."""
    skills: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(c.skill for c in cases):
        pairs = [(c, o) for c, o in zip(cases, outs) if c.skill == name]
        sc = call_scores([c for c, _ in pairs], [o for _, o in pairs])
        skills[name] = {
            "n": len(pairs),
            "exact_match": mean_defined([o.correct(c.answer) for c, o in pairs]),
            "called": mean_defined([o.called for _, o in pairs]),
            "argument_accuracy": sc["argument_accuracy"],
        }
    return skills


def _counterfactual_scores(
    model, tok, needing: Sequence[Case], cfg: DataConfig, tools: ToolsConfig,
    registry: ToolRegistry, seed: int, run: dict,
) -> dict[str, Any]:  # fmt: skip
    """The cases needing a call, run with the result withheld and with a
    counterfactual result injected (an Injector over the data's knowledge graph):
    the summary keys those give, and the number of cases whose result was replaced."""
    kg = knowledge_graph(cfg) if cfg.source == "skills" else None
    injector = Injector(registry, kg, seed, tools.counterfactual_numbers)
    withheld = run_cases(model, tok, needing, mode="withhold", **run)
    cf = run_cases(model, tok, needing, mode="counterfactual", counterfactual=injector, **run)
    hit = [i for i in range(len(needing)) if i in injector.injected]
    injected = {i: tok.encode(injector.injected[i], add_special_tokens=False).ids for i in hit}
    return {
        "tools.exact_match_withheld": _exact(needing, withheld),
        "interp.tool_reliance": mean_defined([cf[i].correct(injected[i]) for i in hit]),
        "tools.counterfactual_follows_true": mean_defined(
            [cf[i].correct(needing[i].answer) for i in hit]
        ),
        "n_injected": len(hit),
    }


def length_scores(
    model,
    tok,
    cfg: DataConfig,
    tools: ToolsConfig,
    *,
    use: bool,
    seed: int,
    run: dict,
) -> dict[str, dict[str, Any]]:
    """Per factor k of tools.length_factors ("{k}x"): additions with both operands
    k * cfg.addition.max_digits digits long; their exact match, and for a tool
    model how often it called, its argument accuracy and both once the call is
    opened for it (forced_call)."""
    mode = "execute" if use else "plain"
    lengths: dict[str, dict[str, Any]] = {}
    for k in tools.length_factors:
        digits = k * cfg.addition.max_digits
        lc = addition_cases(cfg, tok, digits, tools.eval_examples, seed=seed, tool=use)
        lo = run_cases(model, tok, lc, mode=mode, **run)
        entry = {"digits": digits, "n": len(lc), "exact_match": _exact(lc, lo)}
        if use:
            entry["called"] = mean_defined([o.called for o in lo])
            entry["argument_accuracy"] = call_scores(lc, lo)["argument_accuracy"]
            entry["forced_call"] = _forced_call_scores(model, tok, lc, run)
        lengths[f"{k}x"] = entry
    return lengths


def _traces(tok, cases: Sequence[Case], outs: Sequence[Outcome], n: int) -> list[str]:
    """The first n cases needing a call, as prompt -> answer and their call trace."""
    pairs = [(c, o) for c, o in zip(cases, outs) if c.needs_call][:n]
    return [
        f"{_decode(tok, c.prompt)} -> {_decode(tok, o.answer)}\n{format_trace(o.calls)}"
        for c, o in pairs
    ]


def tool_report(
    model,
    suite_or_cfg: SuiteData | DataConfig | Mapping,
    *,
    data_cfg: DataConfig | Mapping | None = None,
    tools: ToolsConfig | None = None,
    tokenizer=None,
    registry: ToolRegistry | None = None,
    split: str = "test",
    batch_size: int = 64,
    seed: int = 0,
    n_traces: int = 4,
) -> dict[str, Any]:
    """The tool analysis of `model` on the suite (see the module docstring).

    suite_or_cfg: a DataConfig (or its dict), built with build_datasets, or a built
    SuiteData with `data_cfg`. tools: which mode and how many examples
    (ToolsConfig; its defaults otherwise). tokenizer: default model.tokenizer, else
    the suite's. registry: default `suite_registry(data_cfg)`.
    Returns {"summary": {key: value}, "uses_tools", "skills": per-skill scores,
    "lengths": per-factor scores, "counts", "traces": a few call traces as text}.
    """
    suite, cfg = _data(suite_or_cfg, data_cfg)
    tools = tools or ToolsConfig()
    validate_tools_config(tools)
    tok = tokenizer or getattr(model, "tokenizer", None) or suite.tokenizer
    use = uses_tools(cfg, tools.enabled)
    if use and registry is None:
        registry = suite_registry(cfg, max_digits=tools.calculator_max_digits)
    n = tools.eval_examples
    mode = "execute" if use else "plain"
    run = dict(registry=registry, error_text=tools.error_text, batch_size=batch_size)

    cases = cases_from_split(suite, split, per_skill=n)
    outs = run_cases(model, tok, cases, mode=mode, **run)
    skills = skill_scores(cases, outs)
    calls = call_scores(cases, outs) if use else {}
    summary = _headline(cases, outs, calls)
    counts: dict[str, Any] = {"cases": len(cases), **{k: v for k, v in calls.items() if "n_" in k}}

    needing = [c for c in cases if c.needs_call]
    if use and needing:
        scores = _counterfactual_scores(model, tok, needing, cfg, tools, registry, seed, run)
        counts["counterfactual"] = scores.pop("n_injected")
        summary.update(scores)

    lengths: dict[str, dict[str, Any]] = {}
    if "addition" in {c.task for c in cases}:
        lengths = length_scores(model, tok, cfg, tools, use=use, seed=seed, run=run)
        summary.update({f"tools.addition_{k}": v["exact_match"] for k, v in lengths.items()})

    summary.update(_train_facts(model, tok, suite, skills, n, mode, run))
    return {
        "summary": summary,
        "uses_tools": use,
        "skills": skills,
        "lengths": lengths,
        "counts": counts,
        "traces": _traces(tok, cases, outs, n_traces),
    }


def _headline(cases: Sequence[Case], outs: Sequence[Outcome], calls: Mapping) -> dict[str, Any]:
    """The summary's keys from the cases run in their mode: the call scores and
    exact match; those of the counterfactual runs None until they are run."""
    return {
        "interp.call_precision": calls.get("call_precision"),
        "interp.call_recall": calls.get("call_recall"),
        "interp.argument_accuracy": calls.get("argument_accuracy"),
        "interp.tool_reliance": None,
        "tools.counterfactual_follows_true": None,
        "tools.exact_match": _exact(cases, outs, lambda c: c.task in ("addition", "facts")),
        "tools.exact_match_withheld": None,
        "tools.addition_exact_match": _exact(cases, outs, lambda c: c.task == "addition"),
        "tools.facts_accuracy": _exact(cases, outs, lambda c: c.task == "facts"),
    }


def _train_facts(model, tok, suite, skills, n: int, mode: str, run: dict) -> dict[str, Any]:
    """{"tools.facts_accuracy_train": exact match on n train cases of each facts
    skill} ({} when the split has none): whether the facts were learnt at all."""
    facts = [s for s in skills if PLAIN_OF_SKILL.get(s, s) == "facts"]
    train_facts = cases_from_split(suite, "train", per_skill=n, skills=facts)
    if not train_facts:
        return {}
    to = run_cases(model, tok, train_facts, mode=mode, **run)
    return {"tools.facts_accuracy_train": _exact(train_facts, to)}
