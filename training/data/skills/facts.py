"""facts: queries about a synthetic knowledge graph (training.data.knowledge).

    Bako city = lima            (phrasing 0: entity relation)
    city of Bako = lima         (phrasing 1: relation of entity)

The entity names (synthetic, used by no other skill) and the relation words are
the content cue. Answer: the attribute.

Ground truth (from the token where the prefix determines it to the answer; -1 elsewhere):

| variable | tokens | value |
|---|---|---|
| facts.entity | entity .. answer | entity id (index in KnowledgeGraph.entities) |
| facts.relation | relation .. answer | relation id (index in KnowledgeGraph.relations) |
| facts.attribute | later of entity/relation .. answer | attribute id (index in KnowledgeGraph.attributes) |
| facts.phrasing | every token | 0: "E r =", 1: "r of E =" |

Splits (`facts.holdout`). A query about a fact never seen in training cannot be
answered, so every fact is in train either way:
- phrasing (default): train asks every fact in phrasing 0, and in phrasing 1
  about a `phrasing_train_fraction` share of the entities; val and test ask in
  phrasing 1 about the other entities (half each). Held-out queries are never
  trained on; the skill measures whether a fact learnt in one phrasing can be
  recalled in the other.
- none: a memorisation skill. Every split asks every fact in both phrasings; val
  and test overlap train by design. No ood split.
Train draws its queries in shuffled passes, each once before any twice, and the
config check demands at least one pass (facts' share of n_train >= the number of
training queries), so every fact is in train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from glassbox.archs.errors import ConfigError
from glassbox.training.data.knowledge import RELATION_VALUES, knowledge_graph
from glassbox.training.data.skills.base import (
    Example,
    Feature,
    Skill,
    check_open_fraction,
    register_skill,
    shuffled_passes,
)


@dataclass
class FactsConfig:
    """`data.facts` (read by facts_tool too)."""

    n_entities: int = 48  # entities of the knowledge graph (synthetic names)
    # relations of the knowledge graph, from: city, colour, profession, pet, sport, food, instrument
    relations: list[str] = field(default_factory=lambda: ["city", "colour", "profession", "pet"])
    # phrasing: train asks every fact as "E r =", and "r of E =" for a share of the entities;
    #   val/test ask "r of E =" about the other entities (every fact is in train, no query is);
    # none: a memorisation skill, val/test ask the same queries as train
    holdout: str = "phrasing"
    phrasing_train_fraction: float = 0.5  # share of entities whose "r of E =" queries train sees


@register_skill("facts", config=FactsConfig)
class FactsSkill(Skill):
    features = (
        Feature("entity", "cat", "entity id, from the entity token on"),
        Feature("relation", "cat", "relation id, from the relation token on"),
        Feature("attribute", "cat", "attribute id, from where entity and relation are both known"),
        Feature("phrasing", "cat", "0: 'E r =', 1: 'r of E ='"),
    )

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        f: FactsConfig = section
        if f.n_entities < 1:
            raise ConfigError(f"{prefix}.n_entities", f.n_entities, "must be a positive integer")
        if not f.relations:
            raise ConfigError(f"{prefix}.relations", list(f.relations), "at least one relation")
        for r in f.relations:
            if r not in RELATION_VALUES:
                raise ConfigError(f"{prefix}.relations", r, f"one of {', '.join(RELATION_VALUES)}")
        if len(set(f.relations)) != len(f.relations):
            raise ConfigError(f"{prefix}.relations", list(f.relations), "no relation twice")
        if f.holdout not in ("phrasing", "none"):
            raise ConfigError(f"{prefix}.holdout", f.holdout, "one of phrasing, none")
        if f.holdout == "phrasing":
            key = f"{prefix}.phrasing_train_fraction"
            check_open_fraction(key, f.phrasing_train_fraction, low_open=False)
            held = f.n_entities - round(f.n_entities * f.phrasing_train_fraction)
            if held < 2:
                raise ConfigError(
                    key,
                    f.phrasing_train_fraction,
                    f"must leave >= 2 of n_entities={f.n_entities} for val and test",
                )

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kg = knowledge_graph(cfg)
        self.queries = self._split_queries(cfg.seed)

    @property
    def disjoint_splits(self) -> bool:
        return self.cfg.holdout != "none"

    def words(self) -> list[str]:
        return ["of", "=", *self.kg.relations, *self.kg.entities, *self.kg.attributes]

    def _split_queries(self, seed: int) -> dict[str, list[tuple[int, int, int]]]:
        """(entity id, relation id, phrasing) of the queries each split asks."""
        n_e, n_r = len(self.kg.entities), len(self.kg.relations)
        if self.cfg.holdout == "none":
            every = [(e, r, p) for e in range(n_e) for r in range(n_r) for p in (0, 1)]
            return dict.fromkeys(("train", "val", "test"), every)
        ents = list(range(n_e))
        random.Random(f"{seed}:facts:entities").shuffle(ents)
        n_both = round(n_e * self.cfg.phrasing_train_fraction)
        n_val = (n_e - n_both + 1) // 2
        groups = {"val": ents[n_both : n_both + n_val], "test": ents[n_both + n_val :]}
        out = {k: [(e, r, 1) for e in g for r in range(n_r)] for k, g in groups.items()}
        out["train"] = [(e, r, 0) for e in range(n_e) for r in range(n_r)]
        out["train"] += [(e, r, 1) for e in ents[:n_both] for r in range(n_r)]
        return out

    def min_train_examples(self) -> int:
        return len(self.queries["train"])

    def sample_train(self, rng: random.Random, n: int) -> list[Example]:
        # Shuffled passes over the training queries: with n >= min_train_examples,
        # every fact (and every training query) is in train.
        return [self.query(*q) for q in shuffled_passes(rng, self.queries["train"], n)]

    def sample(self, rng: random.Random, split: str) -> Example:
        return self.query(*rng.choice(self.queries[split]))

    def query(self, e: int, r: int, phrasing: int) -> Example:
        """The example asking about entity e, relation r in a phrasing (0 or 1)."""
        entity, relation = self.kg.entities[e], self.kg.relations[r]
        value = self.kg.attribute(entity, relation)
        if phrasing == 0:
            words, pe, pr = [entity, relation, "=", value], 0, 1
        else:
            words, pe, pr = [relation, "of", entity, "=", value], 2, 0
        n = len(words)
        both = max(pe, pr)
        return self.example(
            words,
            n - 1,
            entity=[-1] * pe + [e] * (n - pe),
            relation=[-1] * pr + [r] * (n - pr),
            attribute=[-1] * both + [self.kg.attributes.index(value)] * (n - both),
            phrasing=[phrasing] * n,
        )
