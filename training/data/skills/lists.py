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

from training.data.skills.base import Example, Feature, Skill, na

FIRST = 1  # word index of the first list item (after the marker)


class ListSkill(Skill):
    marker: str
    has_ood = True

    def words(self) -> list[str]:
        return [self.marker, "=", *(str(v) for v in range(self.cfg.n_values))]

    def _items(self, rng: random.Random, split: str) -> list[int]:
        c = self.cfg
        lo, hi = (c.max_len + 1, c.ood_max_len) if split == "ood" else (c.min_len, c.max_len)
        return rng.sample(range(c.n_values), rng.randint(lo, hi))

    def _layout(self, items: list[int], out: list[int]) -> list[str]:
        """Words `marker items = out`: the list starts at FIRST, the answer at FIRST + n + 1."""
        return [self.marker, *map(str, items), "=", *map(str, out)]


class CopySkill(ListSkill):
    name = "copy"
    config_key = "copy"
    marker = "copy"
    features = (
        Feature("is_repeat", "bool", "the token repeats an earlier token of the example"),
        Feature("source_pos", "pos", "answer item: position of the list item it copies"),
        Feature("item_index", "int", "index of the item within its half"),
    )

    def sample(self, rng: random.Random, split: str) -> Example:
        items = self._items(rng, split)
        n = len(items)
        words = self._layout(items, items)
        ans = FIRST + n + 1  # first answer word
        is_repeat, source, index = na(len(words)), na(len(words)), na(len(words))
        for i in range(n):
            is_repeat[FIRST + i], is_repeat[ans + i] = 0, 1
            source[ans + i] = FIRST + i
            index[FIRST + i] = index[ans + i] = i
        return self.example(words, ans, is_repeat=is_repeat, source_pos=source, item_index=index)


class ReverseSkill(ListSkill):
    name = "reverse"
    config_key = "reverse"
    marker = "rev"
    features = (
        Feature("source_pos", "pos", "answer item: position of the list item it reproduces"),
        Feature("item_index", "int", "index of the item within its half"),
    )

    def sample(self, rng: random.Random, split: str) -> Example:
        items = self._items(rng, split)
        n = len(items)
        words = self._layout(items, items[::-1])
        ans = FIRST + n + 1
        source, index = na(len(words)), na(len(words))
        for i in range(n):
            source[ans + i] = FIRST + n - 1 - i
            index[FIRST + i] = index[ans + i] = i
        return self.example(words, ans, source_pos=source, item_index=index)


class SortSkill(ListSkill):
    name = "sort"
    config_key = "sort"
    marker = "sort"
    features = (
        Feature("rank", "int", "rank of the value within the list (0 = smallest)"),
        Feature("source_pos", "pos", "answer item: position of the list item it reproduces"),
    )

    def sample(self, rng: random.Random, split: str) -> Example:
        items = self._items(rng, split)
        n = len(items)
        order = sorted(range(n), key=items.__getitem__)  # order[r] = list index of rank r
        words = self._layout(items, [items[i] for i in order])
        ans = FIRST + n + 1
        rank, source = na(len(words)), na(len(words))
        for r, i in enumerate(order):
            rank[FIRST + i] = rank[ans + r] = r
            source[ans + r] = FIRST + i
        return self.example(words, ans, rank=rank, source_pos=source)
