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
from typing import Any, ClassVar

from glassbox.archs.errors import ConfigError
from glassbox.archs.registry import Registry
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
    """Base class. A new skill is a subclass in its own module, decorated
    `@register_skill(name, config=ItsConfig)`; `name` and `config_key` are set there."""

    name: ClassVar[str] = ""
    config_key: ClassVar[str] = ""  # the DataConfig section that sizes it (tool variants share one)
    features: ClassVar[tuple[Feature, ...]]
    has_ood: ClassVar[bool] = False  # whether the skill has an ood split

    def __init__(self, cfg: DataConfig):
        self.cfg = getattr(cfg, self.config_key)  # its own section
        self.vocab: dict[str, int] = {}

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        """Raise ConfigError (one line) for an impossible value of the skill's own
        section (`data.<skill>`, whose key is `prefix`). Default nothing."""
        return None

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


def _check_skill(name: str, cls: type, config: type | None) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Skill)):
        raise TypeError(f"register_skill({name!r}): {cls!r} is not a subclass of Skill")
    key = name if config is not None else cls.config_key
    if config is None and key not in SKILLS.sections():
        known = ", ".join(SKILLS.sections()) or "(none)"
        raise ValueError(
            f"skill {name!r} brings no config section, so its config_key ({key!r}) must "
            f"name a registered skill's section: one of {known}"
        )


# The skill registry: index in registration order = skill id (the `skill` column), so
# the package imports the skills' modules in id order and a new skill goes last. Each
# skill's section is a field of DataConfig (`data.<skill>`), before `text`.
SKILLS: Registry[type[Skill]] = Registry("skill", check=_check_skill)
SKILLS.hold_sections(DataConfig, before="text")


def register_skill(name: str, config: type | None = None):
    """Class decorator: make the Skill subclass the skill `name` (its id: the number of
    skills registered before it). config: the dataclass of its own section
    (`data.<name>`, read as `self.cfg`, checked by the class's `check_config`); None
    for a skill that reads another's section (set `config_key` to that skill's name)."""

    def deco(cls: type[Skill]) -> type[Skill]:
        SKILLS.register(name, cls, config=config)
        cls.name = name
        if config is not None:
            cls.config_key = name
        return cls

    return deco


def check_positive_ints(prefix: str, section: Any, *keys: str) -> None:
    """ConfigError unless each of `keys` of `section` is a positive integer."""
    for key in keys:
        v = getattr(section, key)
        if v <= 0:
            raise ConfigError(f"{prefix}.{key}", v, "must be a positive integer")


def check_open_fraction(key: str, v: float, low_open: bool = True) -> None:
    """ConfigError unless v is in (0, 1) (or [0, 1) when not low_open)."""
    ok = (0 < v < 1) if low_open else (0 <= v < 1)
    if not ok:
        raise ConfigError(key, v, "must be in (0, 1)" if low_open else "must be in [0, 1)")
