"""A synthetic knowledge graph: entities with one attribute per relation.

The facts skill asks it questions, and the `lookup` tool (archs/tools/lookup.py,
built by training.data.skills.tool_call.suite_registry) answers from it:
`knowledge_graph(cfg)` rebuilds the same graph from a data config,
so a checkpoint's data section is enough to recover every fact.

    kg = knowledge_graph(cfg)
    kg.entities            # ("Bako", "Tezun", ...)
    kg.relations           # ("city", "colour", ...)
    kg.attribute("Bako", "city")   # "lima"
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from glassbox.training.data.config import DataConfig
from glassbox.training.data.names import entity_names

# Relation -> the values an attribute can take. Every value is one lowercase word,
# and no value belongs to two relations.
RELATION_VALUES: dict[str, tuple[str, ...]] = {
    "city": ("paris", "tokyo", "lima", "oslo", "cairo", "delhi", "rome", "berlin", "madrid", "seoul", "dublin", "vienna"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"),
    "profession": ("baker", "doctor", "farmer", "pilot", "teacher", "lawyer", "painter", "singer", "nurse", "chef"),
    "pet": ("cat", "dog", "rabbit", "parrot", "hamster", "turtle", "goldfish", "horse"),
    "sport": ("tennis", "football", "chess", "golf", "rugby", "hockey", "cricket", "boxing"),
    "food": ("pizza", "sushi", "pasta", "curry", "salad", "soup", "bread", "cheese"),
    "instrument": ("piano", "guitar", "violin", "drum", "flute", "harp", "cello", "trumpet"),
}  # fmt: skip


@dataclass(frozen=True)
class KnowledgeGraph:
    entities: tuple[str, ...]
    relations: tuple[str, ...]
    table: dict[tuple[str, str], str]  # (entity, relation) -> attribute

    @classmethod
    def generate(
        cls, entities: Sequence[str], relations: Sequence[str], seed: int
    ) -> KnowledgeGraph:
        """Each entity gets, per relation, a value drawn uniformly from the seed."""
        rng = random.Random(f"{seed}:facts:graph")
        table = {(e, r): rng.choice(RELATION_VALUES[r]) for e in entities for r in relations}
        return cls(tuple(entities), tuple(relations), table)

    def attribute(self, entity: str, relation: str) -> str:
        """The value of `relation` for `entity`; KeyError naming what is known otherwise."""
        try:
            return self.table[(entity, relation)]
        except KeyError:
            what = "entity" if entity not in self.entities else "relation"
            raise KeyError(
                f"unknown {what} in ({entity!r}, {relation!r}); relations: {', '.join(self.relations)}"
            ) from None

    def values(self, relation: str) -> tuple[str, ...]:
        """The values `relation` can take."""
        return RELATION_VALUES[relation]

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every possible value of every relation: the index is the attribute id."""
        return tuple(v for r in self.relations for v in RELATION_VALUES[r])

    def facts(self) -> list[tuple[str, str, str]]:
        """Every (entity, relation, attribute) triple."""
        return [(e, r, self.table[(e, r)]) for e in self.entities for r in self.relations]

    def to_dict(self) -> dict:
        return {
            "entities": list(self.entities),
            "relations": list(self.relations),
            "facts": [list(f) for f in self.facts()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> KnowledgeGraph:
        table = {(e, r): a for e, r, a in d["facts"]}
        return cls(tuple(d["entities"]), tuple(d["relations"]), table)


def knowledge_graph(cfg: DataConfig) -> KnowledgeGraph:
    """The graph the facts skill of `cfg` is generated from."""
    return KnowledgeGraph.generate(
        entity_names(cfg.facts.n_entities), list(cfg.facts.relations), cfg.seed
    )
