"""modadd: addition modulo p, every number a single token.

    mod 17 + 9 = 3          (p = 23)

The leading `mod` is the content cue (it tells modadd from multi-digit addition,
which writes its numbers digit by digit). Answer: c.

Ground truth (from the token where the prefix determines it to the answer; -1 elsewhere):

| variable | tokens | value |
|---|---|---|
| modadd.a | a .. c | a |
| modadd.b | b .. c | b |
| modadd.c | b .. c | c = (a + b) mod p |

Splits: the p*p (a, b) pairs are shuffled from the seed and divided: a
`train_fraction` share for train, the rest halved between val and test, so no
held-out pair is ever trained on; train draws its pairs in shuffled passes (each
pair once before any twice). No ood split.
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
    register_skill,
    shuffled_passes,
)

A, B, ANSWER = 1, 3, 5  # word positions in: mod a + b = c


@dataclass
class ModAddConfig:
    """`data.modadd`."""

    p: int = 23  # modulus; a, b, c are the single tokens 0 .. p-1
    train_fraction: float = 0.8  # share of the p*p (a, b) pairs in train; val/test halve the rest


@register_skill("modadd", config=ModAddConfig)
class ModAddSkill(Skill):
    features = (
        Feature("a", "int", "first operand, from its token on"),
        Feature("b", "int", "second operand, from its token on"),
        Feature("c", "int", "(a + b) mod p, from the token of b on"),
    )

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        m: ModAddConfig = section
        if m.p < 2:
            raise ConfigError(f"{prefix}.p", m.p, "must be >= 2")
        check_open_fraction(f"{prefix}.train_fraction", m.train_fraction)
        if round(m.p * m.p * (1 - m.train_fraction)) < 2:
            raise ConfigError(
                f"{prefix}.train_fraction", m.train_fraction, "leaves no (a, b) pair for val/test"
            )

    def __init__(self, cfg):
        super().__init__(cfg)
        self.pairs = split_pairs(self.cfg.p, self.cfg.train_fraction, cfg.seed)

    def words(self) -> list[str]:
        return ["mod", "+", "=", *(str(v) for v in range(self.cfg.p))]

    def sample_train(self, rng: random.Random, n: int) -> list[Example]:
        # Shuffled passes over the train pairs: every pair once before any twice.
        return [self.pair(a, b) for a, b in shuffled_passes(rng, self.pairs["train"], n)]

    def sample(self, rng: random.Random, split: str) -> Example:
        return self.pair(*rng.choice(self.pairs[split]))

    def pair(self, a: int, b: int) -> Example:
        c = (a + b) % self.cfg.p
        words = ["mod", str(a), "+", str(b), "=", str(c)]
        n = len(words)
        return self.example(
            words,
            ANSWER,
            a=[-1] * A + [a] * (n - A),
            b=[-1] * B + [b] * (n - B),
            c=[-1] * B + [c] * (n - B),
        )


def split_pairs(p: int, train_fraction: float, seed: int) -> dict[str, list[tuple[int, int]]]:
    """The (a, b) pairs of each split: disjoint, together all p*p pairs."""
    pairs = [(a, b) for a in range(p) for b in range(p)]
    random.Random(f"{seed}:modadd:pairs").shuffle(pairs)
    n_train = round(len(pairs) * train_fraction)
    n_val = (len(pairs) - n_train + 1) // 2
    return {
        "train": pairs[:n_train],
        "val": pairs[n_train : n_train + n_val],
        "test": pairs[n_train + n_val :],
    }
