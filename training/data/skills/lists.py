"""copy, reverse, sort: a list of distinct number tokens, a marker, then the list transformed.

    copy 12 5 40 7 = 12 5 40 7         (induction: the second half repeats the first)
    rev  12 5 40 7 = 7 40 5 12
    sort 12 5 40 7 = 5 7 12 40

The leading marker (`copy`, `rev`, `sort`) is the content cue: without it the three
look alike. Items are distinct, so each answer token has exactly one source and
a sort rank is never tied. Answer: the items after `=`.

Ground truth (word positions are positions in input_ids; -1 elsewhere):

| variable | tokens | value |
|---|---|---|
| copy.is_repeat | list and answer items | 1 if the token repeats an earlier token of the example (the answer items), else 0 |
| copy.source_pos | answer items | position of the list item it copies |
| copy.item_index | list and answer items | index of the item in its half (0-based) |
| reverse.source_pos | answer items | position of the list item it reproduces |
| reverse.item_index | list and answer items | index of the item in its half |
| sort.rank | list and answer items | rank of the value in the list (0 = smallest) |
| sort.source_pos | answer items | position of the list item it reproduces |

Splits: train/val/test draw lists of min_len..max_len items; ood draws
max_len+1..ood_max_len items.
"""

from __future__ import annotations

import random
from abc import abstractmethod
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

FIRST = 1  # word index of the first list item (after the marker)


@dataclass
class ListTaskConfig:
    """copy, reverse, sort (`data.copy`, ...): a list of distinct number tokens, then the
    list transformed."""

    min_len: int = 4  # shortest list in train/val/test
    max_len: int = 8  # longest list in train/val/test
    ood_max_len: int = 12  # ood split: lists of max_len+1 .. ood_max_len items
    n_values: int = 64  # items are the number tokens 0 .. n_values-1, distinct within a list


class ListSkill(Skill):
    marker: str
    has_ood = True

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        c: ListTaskConfig = section
        check_positive_ints(prefix, c, "min_len", "max_len")
        if c.min_len > c.max_len:
            raise ConfigError(f"{prefix}.min_len", c.min_len, f"must be <= max_len={c.max_len}")
        if c.ood_max_len <= c.max_len:
            raise ConfigError(
                f"{prefix}.ood_max_len",
                c.ood_max_len,
                f"must be > max_len={c.max_len} (ood is longer)",
            )
        if c.n_values < c.ood_max_len:
            raise ConfigError(
                f"{prefix}.n_values",
                c.n_values,
                f"must be >= ood_max_len={c.ood_max_len} (items in a list are distinct)",
            )

    def words(self) -> list[str]:
        return [self.marker, "=", *(str(v) for v in range(self.cfg.n_values))]

    @abstractmethod
    def order(self, items: list[int]) -> list[int]:
        """The list index of each answer item, in answer order."""

    @abstractmethod
    def item_features(self, f: dict[str, list[int]], order: list[int], ans: int) -> None:
        """Fill the skill's own variables (besides source_pos) into f."""

    def sample(self, rng: random.Random, split: str) -> Example:
        c = self.cfg
        lo, hi = (c.max_len + 1, c.ood_max_len) if split == "ood" else (c.min_len, c.max_len)
        items = rng.sample(range(c.n_values), rng.randint(lo, hi))
        order = self.order(items)
        words = [self.marker, *map(str, items), "=", *(str(items[i]) for i in order)]
        ans = FIRST + len(items) + 1  # first answer word
        f = {feature.name: na(len(words)) for feature in self.features}
        for k, i in enumerate(order):
            f["source_pos"][ans + k] = FIRST + i
        self.item_features(f, order, ans)
        return self.example(words, ans, **f)


def item_index(f: dict[str, list[int]], n: int, ans: int) -> None:
    """item_index: i on the i-th list item and on the i-th answer item."""
    for i in range(n):
        f["item_index"][FIRST + i] = f["item_index"][ans + i] = i


@register_skill("copy", config=ListTaskConfig)
class CopySkill(ListSkill):
    marker = "copy"
    features = (
        Feature("is_repeat", "bool", "the token repeats an earlier token of the example"),
        Feature("source_pos", "pos", "answer item: position of the list item it copies"),
        Feature("item_index", "int", "index of the item within its half"),
    )

    def order(self, items: list[int]) -> list[int]:
        return list(range(len(items)))

    def item_features(self, f: dict[str, list[int]], order: list[int], ans: int) -> None:
        n = len(order)
        f["is_repeat"][FIRST : FIRST + n] = [0] * n
        f["is_repeat"][ans : ans + n] = [1] * n
        item_index(f, n, ans)


@register_skill("reverse", config=ListTaskConfig)
class ReverseSkill(ListSkill):
    marker = "rev"
    features = (
        Feature("source_pos", "pos", "answer item: position of the list item it reproduces"),
        Feature("item_index", "int", "index of the item within its half"),
    )

    def order(self, items: list[int]) -> list[int]:
        return list(range(len(items)))[::-1]

    def item_features(self, f: dict[str, list[int]], order: list[int], ans: int) -> None:
        item_index(f, len(order), ans)


@register_skill("sort", config=ListTaskConfig)
class SortSkill(ListSkill):
    marker = "sort"
    features = (
        Feature("rank", "int", "rank of the value within the list (0 = smallest)"),
        Feature("source_pos", "pos", "answer item: position of the list item it reproduces"),
    )

    def order(self, items: list[int]) -> list[int]:
        return sorted(range(len(items)), key=items.__getitem__)

    def item_features(self, f: dict[str, list[int]], order: list[int], ans: int) -> None:
        for r, i in enumerate(order):  # the item at list index i has rank r
            f["rank"][FIRST + i] = f["rank"][ans + r] = r
