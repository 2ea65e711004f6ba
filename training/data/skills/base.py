"""What a skill is: a seeded generator of examples with per-token ground truth.

A skill draws one `Example` at a time: its content words (the builder adds
`<bos>`, the optional task tag and `<eos>`), which of them are the answer, and
one list per ground-truth variable with an int per word (-1 where the variable
does not apply). Position-valued variables index into `words`; the builder shifts
them to positions in `input_ids`. Token-valued variables are token ids
(`self.token_id(word)`), usable after the builder has bound the vocabulary.

Convention for every skill: the value at token t describes token t. The model
predicts token t at position t-1, so a probe for what is computed to predict an
answer token reads the activations one position earlier.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from glassbox.training.data.config import DataConfig

SPLITS = ("train", "val", "test", "ood")
FEATURE_KINDS = ("bool", "int", "cat", "pos", "token")  # see Feature


@dataclass(frozen=True)
class Feature:
    """A ground-truth variable. Its column is named `<skill>.<name>`.

    kind: bool (0/1) | int (a count or a value) | cat (a category id) |
    pos (a position in input_ids) | token (a token id)."""

    name: str
    kind: str
    doc: str


@dataclass
class Example:
    words: list[str]  # content tokens, without <bos>, tag, <eos>
    answer: list[int]  # 0/1 per word: 1 on the words the model must produce
    features: dict[str, list[int]]  # feature name -> one int per word (-1: does not apply)
    # 0/1 per word: the training targets under loss_on=answer when they are more than
    # the answer (a tool-call variant also trains the call it writes); None: the answer
    loss: list[int] | None = None
    # 0/1 per word: 1 on what a tool writes into the stream (<result> .. </result>),
    # never a training target whatever loss_on says; None: nothing
    tool_written: list[int] | None = None


class Skill(ABC):
    """Base class. A new skill is a subclass in its own module plus an entry in
    `training.data.skills.SKILLS` (appended at the end, so skill ids stay)."""

    name: ClassVar[str]
    config_key: ClassVar[str]  # the DataConfig section that sizes it (tool variants share one)
    features: ClassVar[tuple[Feature, ...]]
    has_ood: ClassVar[bool] = False  # whether the skill has an ood split

    def __init__(self, cfg: DataConfig):
        self.cfg = getattr(cfg, self.config_key)  # its own section
        self.vocab: dict[str, int] = {}

    @property
    def disjoint_splits(self) -> bool:
        """Whether held-out examples must differ from every train example."""
        return True

    @abstractmethod
    def words(self) -> list[str]:
        """Every word this skill can emit (the vocabulary is built from these)."""

    @abstractmethod
    def sample(self, rng: random.Random, split: str) -> Example:
        """One example of `split` (train | val | test | ood)."""

    def sample_train(self, rng: random.Random, n: int) -> list[Example]:
        """The n train examples (a skill that must cover a finite set overrides this)."""
        return [self.sample(rng, "train") for _ in range(n)]

    def min_train_examples(self) -> int:
        """Fewest train examples the skill can work with (facts: one per training query)."""
        return 0

    def token_id(self, word: str) -> int:
        return self.vocab[word]

    def example(self, words: list[str], answer_from: int, **features: list[int]) -> Example:
        """An Example whose answer is words[answer_from:]; checks the lengths."""
        n = len(words)
        for k, v in features.items():
            if len(v) != n:
                raise AssertionError(f"{self.name}.{k}: {len(v)} values for {n} words")
        return Example(words, [0] * answer_from + [1] * (n - answer_from), features)


def shuffled_passes(rng: random.Random, pool: list, n: int) -> list:
    """n draws from `pool` in shuffled passes: every item once before any item twice."""
    out: list = []
    while len(out) < n:
        order = list(pool)
        rng.shuffle(order)
        out += order[: n - len(out)]
    return out


def na(n: int) -> list[int]:
    """n times -1 (does not apply)."""
    return [-1] * n
