"""addition: multi-digit a + b = c, one token per digit.

    3 4 5 + 2 7 = 3 7 2        (reversed: true writes every number units first: 5 4 3 + 7 2 = 2 7 3)

The `+` between digit runs is the content cue. Numbers have no leading zeros.
Answer: the digits of c.

Ground truth (columns count from the units, 0 = units; -1 elsewhere):

| variable | tokens | value |
|---|---|---|
| addition.digit_pos | every digit of a, b, c | column of the digit (0 = units) |
| addition.operand | every digit of a, b, c | 0 for a, 1 for b, 2 for c |
| addition.carry_in | answer digits | carry into the column (0/1) |
| addition.carry_out | answer digits | carry out of the column (0/1) |
| addition.column_sum | answer digits | a_i + b_i, the column's digits without the carry (0..18) |
| addition.sum_digit | answer digits | the digit of c (a_i + b_i + carry_in) mod 10 |

When c is one digit longer than both operands, its leading 1 is column n with
a_n = b_n = 0, carry_in 1, carry_out 0.

Splits: each operand has min_digits..max_digits digits in train/val/test and
max_digits+1..ood_max_digits digits in ood.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from glassbox.archs.errors import ConfigError
from glassbox.training.data.skills.base import (
    Example,
    Feature,
    Skill,
    check_positive_ints,
    na,
    register_skill,
)

DIGITS = [str(d) for d in range(10)]


@dataclass
class AdditionConfig:
    """`data.addition` (read by addition_tool too)."""

    min_digits: int = 1  # fewest digits of an operand in train/val/test
    max_digits: int = 3  # most digits of an operand in train/val/test
    ood_max_digits: int = 6  # ood split: both operands have max_digits+1 .. ood_max_digits digits
    reversed: bool = False  # write every number least-significant digit first


@register_skill("addition", config=AdditionConfig)
class AdditionSkill(Skill):
    has_ood = True
    features = (
        Feature("digit_pos", "int", "column of a digit token, 0 = units"),
        Feature("operand", "cat", "0: digit of a, 1: digit of b, 2: digit of the answer c"),
        Feature("carry_in", "bool", "answer digit: carry into its column"),
        Feature("carry_out", "bool", "answer digit: carry out of its column"),
        Feature("column_sum", "int", "answer digit: a_i + b_i without the carry (0..18)"),
        Feature("sum_digit", "int", "answer digit: (a_i + b_i + carry_in) mod 10"),
    )

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        a: AdditionConfig = section
        check_positive_ints(prefix, a, "min_digits", "max_digits")
        if a.min_digits > a.max_digits:
            raise ConfigError(
                f"{prefix}.min_digits", a.min_digits, f"must be <= max_digits={a.max_digits}"
            )
        if a.ood_max_digits <= a.max_digits:
            raise ConfigError(
                f"{prefix}.ood_max_digits",
                a.ood_max_digits,
                f"must be > max_digits={a.max_digits} (ood numbers are longer)",
            )

    def words(self) -> list[str]:
        return ["+", "=", *DIGITS]

    def _number(self, rng: random.Random, split: str) -> int:
        c = self.cfg
        lo, hi = (
            (c.max_digits + 1, c.ood_max_digits) if split == "ood" else (c.min_digits, c.max_digits)
        )
        d = rng.randint(lo, hi)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def _digits(self, x: int) -> list[str]:
        """Digits of x in writing order."""
        s = str(x)
        return list(s[::-1] if self.cfg.reversed else s)

    def sample(self, rng: random.Random, split: str) -> Example:
        a, b = self._number(rng, split), self._number(rng, split)
        da, db, dc = self._digits(a), self._digits(b), self._digits(a + b)
        words = [*da, "+", *db, "=", *dc]
        n = len(words)
        f = {k.name: na(n) for k in self.features}
        starts = (0, len(da) + 1, len(da) + len(db) + 2)
        carry = 0
        for operand, (start, digits) in enumerate(zip(starts, (da, db, dc))):
            for j in range(len(digits)):
                col = j if self.cfg.reversed else len(digits) - 1 - j
                f["digit_pos"][start + j] = col
                f["operand"][start + j] = operand
        # Answer columns from the units up, whatever the writing order.
        for col in range(len(dc)):
            j = col if self.cfg.reversed else len(dc) - 1 - col
            t = starts[2] + j
            column = (a // 10**col) % 10 + (b // 10**col) % 10
            f["carry_in"][t] = carry
            f["column_sum"][t] = column
            f["sum_digit"][t] = (column + carry) % 10
            carry = (column + carry) // 10
            f["carry_out"][t] = carry
        return self.example(words, starts[2], **f)
