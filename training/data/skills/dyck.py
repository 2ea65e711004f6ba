"""dyck: a prefix of a bracket sequence with several bracket types; predict the closers.

    ( [ ] { ( = ) } )

The prompt (before `=`) never closes a bracket that is not open and leaves at
least one open; the answer closes every open bracket, innermost first. The
brackets themselves are the content cue. Answer: the closers after `=`.

Ground truth (-1 elsewhere):

| variable | tokens | value |
|---|---|---|
| dyck.depth | brackets and `=` | brackets still open after this token |
| dyck.is_open | brackets | 1 for an opener, 0 for a closer |
| dyck.type | brackets | bracket type: 0 ( ), 1 [ ], 2 { }, 3 < > |
| dyck.match_pos | brackets | position of the matching bracket (every bracket has one) |
| dyck.top_type | brackets and `=` | type of the innermost bracket open after this token (what the next closer must be) |

Splits: train/val/test prompts have min_len..max_len brackets and never nest
deeper than max_depth; ood prompts have max_depth+1..ood_max_len brackets and
nest deeper than max_depth (up to ood_max_depth).
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
    check_open_fraction,
    check_positive_ints,
    na,
    register_skill,
)

OPENERS = ("(", "[", "{", "<")
CLOSERS = (")", "]", "}", ">")


@dataclass
class DyckConfig:
    """`data.dyck`."""

    n_types: int = 3  # bracket types, 1..4: ( ) [ ] { } < >
    min_len: int = 4  # shortest prompt (brackets before "=")
    max_len: int = 16  # longest prompt in train/val/test
    max_depth: int = 4  # deepest nesting in train/val/test
    ood_max_len: int = 24  # ood split: prompts up to this long ...
    ood_max_depth: int = 8  # ... that nest deeper than max_depth, up to this deep
    p_open: float = 0.5  # chance of opening a bracket where both opening and closing are allowed


@register_skill("dyck", config=DyckConfig)
class DyckSkill(Skill):
    has_ood = True
    features = (
        Feature("depth", "int", "brackets still open after this token"),
        Feature("is_open", "bool", "1 for an opening bracket, 0 for a closing one"),
        Feature("type", "cat", "bracket type: 0 ( ), 1 [ ], 2 { }, 3 < >"),
        Feature("match_pos", "pos", "position of the matching bracket"),
        Feature("top_type", "cat", "type of the innermost bracket open after this token"),
    )

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        d: DyckConfig = section
        if not 1 <= d.n_types <= 4:
            raise ConfigError(f"{prefix}.n_types", d.n_types, "must be in 1..4")
        check_positive_ints(prefix, d, "min_len", "max_len", "max_depth")
        if d.min_len > d.max_len:
            raise ConfigError(f"{prefix}.min_len", d.min_len, f"must be <= max_len={d.max_len}")
        if d.ood_max_depth <= d.max_depth:
            raise ConfigError(
                f"{prefix}.ood_max_depth",
                d.ood_max_depth,
                f"must be > max_depth={d.max_depth} (ood nests deeper)",
            )
        if d.ood_max_len < max(d.max_len, d.max_depth + 1):
            raise ConfigError(
                f"{prefix}.ood_max_len",
                d.ood_max_len,
                f"must be >= max_len={d.max_len} and > max_depth={d.max_depth}",
            )
        check_open_fraction(f"{prefix}.p_open", d.p_open)

    def words(self) -> list[str]:
        n = self.cfg.n_types
        return ["=", *OPENERS[:n], *CLOSERS[:n]]

    def _prompt(self, rng: random.Random, split: str) -> tuple[list[tuple[bool, int]], list[int]]:
        """(is_open, type) per prompt bracket, and the types the prompt leaves open."""
        c = self.cfg
        if split == "ood":
            lo, hi, cap = c.max_depth + 1, c.ood_max_len, c.ood_max_depth
        else:
            lo, hi, cap = c.min_len, c.max_len, c.max_depth
        while True:
            stack: list[int] = []
            out, peak = [], 0
            for _ in range(rng.randint(lo, hi)):
                if stack and (len(stack) == cap or rng.random() >= c.p_open):
                    out.append((False, stack.pop()))
                else:
                    stack.append(rng.randrange(c.n_types))
                    out.append((True, stack[-1]))
                    peak = max(peak, len(stack))
            if stack and (split != "ood" or peak > c.max_depth):
                return out, stack

    def sample(self, rng: random.Random, split: str) -> Example:
        prompt, still_open = self._prompt(rng, split)
        brackets = prompt + [(False, t) for t in reversed(still_open)]
        eq = len(prompt)  # position of "="; the answer follows it
        words = [OPENERS[t] if o else CLOSERS[t] for o, t in prompt]
        words += ["="] + [CLOSERS[t] for t in reversed(still_open)]
        n = len(words)
        depth, is_open, typ, match, top = na(n), na(n), na(n), na(n), na(n)
        stack: list[tuple[int, int]] = []  # (position, type) of open brackets
        for i, (opening, t) in enumerate(brackets):
            pos = i if i < eq else i + 1  # answer brackets sit after "="
            if opening:
                stack.append((pos, t))
            else:
                j, _ = stack.pop()
                match[pos], match[j] = j, pos
            depth[pos], is_open[pos], typ[pos] = len(stack), int(opening), t
            top[pos] = stack[-1][1] if stack else -1
            if i == eq - 1:  # "=" carries the state the prompt leaves
                depth[eq], top[eq] = len(stack), stack[-1][1]
        return self.example(
            words, eq + 1, depth=depth, is_open=is_open, type=typ, match_pos=match, top_type=top
        )
