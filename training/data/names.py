"""Synthetic first names: consonant-vowel-consonant-vowel words such as `Bako`.

One fixed list, the same for every seed (the vocabulary depends on sizes only).
The facts entities are taken from its front and the IOI people from its back, so
the two never share a name.
"""

from __future__ import annotations

import random
from functools import lru_cache

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
MAX_NAMES = 1000


@lru_cache(maxsize=1)
def name_pool() -> tuple[str, ...]:
    """MAX_NAMES distinct capitalised names, in a fixed shuffled order."""
    all_names = [
        (c1 + v1 + c2 + v2).capitalize()
        for c1 in CONSONANTS
        for v1 in VOWELS
        for c2 in CONSONANTS
        for v2 in VOWELS
    ]
    random.Random("glassbox-names").shuffle(all_names)
    return tuple(all_names[:MAX_NAMES])


def entity_names(n: int) -> list[str]:
    """The facts entities: the first n names of the pool."""
    return list(name_pool()[:n])


def people_names(n: int) -> list[str]:
    """The IOI people: the last n names of the pool."""
    return list(name_pool()[MAX_NAMES - n :])
