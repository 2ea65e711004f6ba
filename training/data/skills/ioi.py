"""ioi: indirect object identification with synthetic names.

    When Bako and Tezun went to the park , Tezun gave a book to Bako     (ABBA)
    When Tezun and Bako went to the park , Tezun gave a book to Bako     (BABA)

The subject S is named twice, the indirect object IO once; the answer is IO.
The sentence frame is the content cue. Answer: the last name.

Ground truth. The role marks name tokens; the rest are example-level reference
values, the same on every token of the example, so that the logit difference
logit[io_token] - logit[s_token] can be read at the answer's position - 1:

| variable | tokens | value |
|---|---|---|
| ioi.role | name tokens | 0: IO, 1: S (first mention), 2: S (second mention), 3: the answer (IO again) |
| ioi.io_token | every token | token id of the indirect object (the right answer) |
| ioi.s_token | every token | token id of the subject (the distractor) |
| ioi.io_pos | every token | position of the IO's mention |
| ioi.s1_pos | every token | position of the subject's first mention |
| ioi.s2_pos | every token | position of the subject's second mention |
| ioi.end_pos | every token | position of the final "to", where the answer is predicted |
| ioi.order | every token | 0: ABBA (IO named first), 1: BABA |

Splits: train/val/test are disjoint sentences. No ood split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from glassbox.archs.errors import ConfigError
from glassbox.training.data.names import people_names
from glassbox.training.data.skills.base import Example, Feature, Skill, na, register_skill

PLACES = ("store", "park", "school", "garden", "office", "beach", "library", "market")
OBJECTS = ("book", "drink", "ball", "gift", "letter", "key", "flower", "pen")
FRAME = ("When", "and", "went", "to", "the", ",", "gave", "a")
N1, N2, S2, END = 1, 3, 9, 13  # word positions of the names and of the final "to"


@dataclass
class IOIConfig:
    """`data.ioi`."""

    n_names: int = 24  # synthetic first names to draw the two people from
    n_places: int = 8  # places P in "went to the P" (at most 8)
    n_objects: int = 8  # objects O in "gave a O to" (at most 8)


@register_skill("ioi", config=IOIConfig)
class IOISkill(Skill):
    features = (
        Feature("role", "cat", "name tokens: 0 IO, 1 S first, 2 S second, 3 answer (IO)"),
        Feature("io_token", "token", "token id of the indirect object (the answer)"),
        Feature("s_token", "token", "token id of the subject (the distractor)"),
        Feature("io_pos", "pos", "position of the indirect object's mention"),
        Feature("s1_pos", "pos", "position of the subject's first mention"),
        Feature("s2_pos", "pos", "position of the subject's second mention"),
        Feature("end_pos", "pos", "position of the final 'to' (the answer is predicted there)"),
        Feature("order", "cat", "0: ABBA (IO named first), 1: BABA"),
    )

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        i: IOIConfig = section
        if i.n_names < 2:
            raise ConfigError(f"{prefix}.n_names", i.n_names, "must be >= 2 (two people)")
        if not 1 <= i.n_places <= len(PLACES):
            raise ConfigError(f"{prefix}.n_places", i.n_places, f"must be in 1..{len(PLACES)}")
        if not 1 <= i.n_objects <= len(OBJECTS):
            raise ConfigError(f"{prefix}.n_objects", i.n_objects, f"must be in 1..{len(OBJECTS)}")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.names = people_names(self.cfg.n_names)

    def words(self) -> list[str]:
        c = self.cfg
        return [*FRAME, *PLACES[: c.n_places], *OBJECTS[: c.n_objects], *self.names]

    def sample(self, rng: random.Random, split: str) -> Example:
        io, s = rng.sample(self.names, 2)
        place = rng.choice(PLACES[: self.cfg.n_places])
        obj = rng.choice(OBJECTS[: self.cfg.n_objects])
        order = rng.randrange(2)
        first, second = (io, s) if order == 0 else (s, io)
        words = ["When", first, "and", second, "went", "to", "the", place, ","]
        words += [s, "gave", "a", obj, "to", io]
        n = len(words)
        io_pos, s1_pos = (N1, N2) if order == 0 else (N2, N1)
        role = na(n)
        role[io_pos], role[s1_pos], role[S2], role[n - 1] = 0, 1, 2, 3
        return self.example(
            words,
            n - 1,
            role=role,
            io_token=[self.token_id(io)] * n,
            s_token=[self.token_id(s)] * n,
            io_pos=[io_pos] * n,
            s1_pos=[s1_pos] * n,
            s2_pos=[S2] * n,
            end_pos=[END] * n,
            order=[order] * n,
        )
