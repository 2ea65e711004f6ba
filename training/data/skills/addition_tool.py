"""addition_tool: the addition skill answered through a calculator call.

    1 2 3 + 4 5 = <call> calculator 1 2 3 + 4 5 </call> <result> 1 6 8 </result> 1 6 8

The prompt is addition's (`a + b =`, same sizes, same `reversed` spelling: the
calculator of `suite_registry` reads and writes numbers the same way). The model
writes the call, copying the operands from the prompt; the calculator writes the
result; the model copies it as the answer. Layout, masks and the shared
features (`role`, `needs_call`, `source_pos`): training/data/skills/tool_call.py.

Ground truth (besides the shared features; -1 elsewhere):

| variable | tokens | value |
|---|---|---|
| addition_tool.digit_pos | every digit (prompt, arguments, result, answer) | column, 0 = units |
| addition_tool.operand | every digit | 0 a, 1 b, 2 c |

Splits as addition: operands of min_digits..max_digits digits in train/val/test,
max_digits+1..ood_max_digits in ood (`data.addition`).
"""

from __future__ import annotations

import random

from glassbox.training.data.skills.addition import AdditionSkill
from glassbox.training.data.skills.base import Feature, register_skill
from glassbox.training.data.skills.tool_call import (
    TOOL_FEATURES,
    TOOL_OF_SKILL,
    ToolCallExample,
    call_layout,
    tool_call_example,
)


@register_skill("addition_tool")
class AdditionToolSkill(AdditionSkill):
    config_key = "addition"  # the section of addition, whose numbers it writes
    has_ood = True
    features = (
        *TOOL_FEATURES,
        Feature("digit_pos", "int", "column of a digit token, 0 = units"),
        Feature("operand", "cat", "0: digit of a, 1: digit of b, 2: digit of c = a + b"),
    )

    def sample(self, rng: random.Random, split: str) -> ToolCallExample:
        a, b = self._number(rng, split), self._number(rng, split)
        return self.call(a, b)

    def call(self, a: int, b: int) -> ToolCallExample:
        """The example for a + b."""
        da, db, dc = self._digits(a), self._digits(b), self._digits(a + b)
        prompt = [*da, "+", *db, "="]
        layout = call_layout(
            prompt, TOOL_OF_SKILL[self.name], list(range(len(prompt) - 1)), result=dc
        )
        n = len(layout.words)
        digit_pos, operand = [-1] * n, [-1] * n

        def mark(start: int, digits: list[str], which: int) -> None:
            for j in range(len(digits)):
                digit_pos[start + j] = j if self.cfg.reversed else len(digits) - 1 - j
                operand[start + j] = which

        for offset in (0, layout.arguments.start):  # the prompt and the call's copy of it
            mark(offset, da, 0)
            mark(offset + len(da) + 1, db, 1)
        mark(layout.result.start, dc, 2)
        mark(layout.answer.start, dc, 2)
        return tool_call_example(layout, {"digit_pos": digit_pos, "operand": operand})
