"""What the tool-call variants of the skills share: the layout of an example with
a call, its masks, and the tools the calls name.

    <prompt> = <call> TOOL ARGUMENTS </call> <result> RESULT </result> ANSWER
    |-role 0-| |-- 1 ---|-- 2 --|-- 1 -| |------- 3 (tool) -------| |- 4 -|

The model writes the call (role 1: `<call>`, the tool's name, `</call>`; role 2:
the arguments, copied from the prompt) and the final answer (role 4). The tool
writes the result (role 3, `<result>` and `</result>` included): at generation
time the runtime forces it (archs.tools.runtime), so it is never a training
target. Hence, per word:

    answer        1 on the final answer only (what accuracy and exact match score)
    loss          1 on the call (roles 1, 2) and the final answer
    tool_written  1 on the result (role 3)

`ToolCallExample` carries `loss` and `tool_written` beside the fields of
`Example`; the suite's encoder turns them into the row's `loss_mask` (with
`loss_on: all`, every word but the tool-written ones).

`suite_registry(cfg)` is the `ToolRegistry` the calls of a data config are
answered by: a `Calculator` that spells numbers as the suite does and a `Lookup`
on the suite's own knowledge graph (same seed, same facts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from glassbox.archs.tools import Calculator, CalculatorLimits, Lookup, ToolRegistry
from glassbox.training.data.config import DataConfig
from glassbox.training.data.knowledge import knowledge_graph
from glassbox.training.data.skills.base import Example, Feature
from glassbox.training.data.vocab import CALL, CALL_END, RESULT, RESULT_END

# Values of the `role` feature.
ROLES = ("prompt", "call", "argument", "result", "answer")
PROMPT, CALL_SYNTAX, ARGUMENT, RESULT_ROLE, ANSWER = range(len(ROLES))

# tool-call skill -> the tool its calls name (the word after <call>)
TOOL_OF_SKILL: dict[str, str] = {"addition_tool": "calculator", "facts_tool": "lookup"}
# tool-call skill -> the plain skill it is the variant of (same prompts, same answers)
PLAIN_OF_SKILL: dict[str, str] = {"addition_tool": "addition", "facts_tool": "facts"}

# The features every tool-call skill has first (its own follow).
TOOL_FEATURES = (
    Feature(
        "role",
        "cat",
        "0 prompt, 1 call syntax (<call> tool </call>), 2 argument, "
        "3 result (tool-written, <result> .. </result>), 4 final answer",
    ),  # fmt: skip
    Feature("needs_call", "bool", "1 on every token: the example needs a tool call"),
    Feature(
        "source_pos",
        "pos",
        "argument: the prompt token it copies; answer: the result token it copies",
    ),  # fmt: skip
)


@dataclass
class ToolCallExample(Example):
    """An Example whose training targets differ from its answer (see the module
    docstring): `loss` 1 on the call and the answer, `tool_written` 1 on the result."""

    loss: list[int] = field(default_factory=list)
    tool_written: list[int] = field(default_factory=list)


@dataclass
class CallLayout:
    """Where the parts of a tool-call example sit in its words (index ranges are
    half-open): what the skills fill their features from."""

    words: list[str]
    role: list[int]
    source_pos: list[int]
    arguments: range  # the argument words
    result: range  # the result words, between <result> and </result>
    answer: range  # the final answer words


def call_layout(
    prompt: list[str], tool: str, argument_sources: list[int], result: list[str]
) -> CallLayout:
    """`prompt` = <call> `tool` ARGS </call> <result> `result` </result> `result`.

    argument_sources: for each argument word, the index in `prompt` it copies (the
    arguments are those prompt words, in that order). The final answer copies the
    result word for word."""
    args = [prompt[i] for i in argument_sources]
    a0 = len(prompt) + 2  # after <call> tool
    r0 = a0 + len(args) + 2  # after </call> <result>
    n0 = r0 + len(result) + 1  # after </result>
    words = [*prompt, CALL, tool, *args, CALL_END, RESULT, *result, RESULT_END, *result]
    role = (
        [PROMPT] * len(prompt)
        + [CALL_SYNTAX] * 2
        + [ARGUMENT] * len(args)
        + [CALL_SYNTAX]
        + [RESULT_ROLE] * (len(result) + 2)
        + [ANSWER] * len(result)
    )
    source = [-1] * len(words)
    for j, i in enumerate(argument_sources):
        source[a0 + j] = i
    for j in range(len(result)):
        source[n0 + j] = r0 + j
    return CallLayout(
        words,
        role,
        source,
        range(a0, a0 + len(args)),
        range(r0, r0 + len(result)),
        range(n0, len(words)),
    )


def tool_call_example(layout: CallLayout, features: Mapping[str, list[int]]) -> ToolCallExample:
    """The example of `layout` with the shared features and the skill's own ones."""
    n = len(layout.words)
    feats = {
        "role": list(layout.role),
        "needs_call": [1] * n,
        "source_pos": list(layout.source_pos),
        **features,
    }
    for k, v in feats.items():
        if len(v) != n:
            raise AssertionError(f"tool-call feature {k}: {len(v)} values for {n} words")
    return ToolCallExample(
        words=list(layout.words),
        answer=[int(r == ANSWER) for r in layout.role],
        features=feats,
        loss=[int(r in (CALL_SYNTAX, ARGUMENT, ANSWER)) for r in layout.role],
        tool_written=[int(r == RESULT_ROLE) for r in layout.role],
    )


def suite_registry(cfg: DataConfig, *, max_digits: int = 1000) -> ToolRegistry:
    """The tools the tool-call skills of `cfg` call: `calculator` (numbers spelt as
    `cfg.addition` spells them; results of at most max_digits digits) and `lookup`
    on `knowledge_graph(cfg)`."""
    calculator = Calculator(
        CalculatorLimits(max_digits=max_digits), reversed_digits=cfg.addition.reversed
    )
    return ToolRegistry([calculator, Lookup(knowledge_graph(cfg))])


def uses_tools(cfg: DataConfig, enabled: bool | None = None) -> bool:
    """Whether a model trained on `cfg` calls tools: `enabled` (ToolsConfig.enabled)
    when set, else whether `cfg.mix` weighs a tool-call skill above 0."""
    if enabled is not None:
        return bool(enabled)
    return any(cfg.mix.get(name, 0) > 0 for name in TOOL_OF_SKILL)
