"""facts_tool: the facts skill answered through a knowledge-base lookup.

    Dubo city = <call> lookup Dubo city </call> <result> paris </result> paris
    city of Dubo = <call> lookup Dubo city </call> <result> paris </result> paris

The prompts are facts' (both phrasings); the call always reads `lookup ENTITY
RELATION`, answered from the suite's own knowledge graph (`suite_registry`,
`knowledge_graph(cfg)`: same seed, same facts). Layout, masks and the shared
features (`role`, `needs_call`, `source_pos`): training/data/skills/tool_call.py.

Ground truth (besides the shared features; as in facts, from the token where the
prefix determines it to the end; -1 before):

| variable | tokens | value |
|---|---|---|
| facts_tool.entity | entity .. end | entity id (index in KnowledgeGraph.entities) |
| facts_tool.relation | relation .. end | relation id |
| facts_tool.attribute | later of entity/relation .. end | attribute id (index in KnowledgeGraph.attributes) |
| facts_tool.phrasing | every token | 0: "E r =", 1: "r of E =" |

Splits as facts (`data.facts.holdout`, the same entities held out): with
`phrasing`, val/test ask "r of E =" about entities whose phrasing-1 queries train
never asks.
"""

from __future__ import annotations

from glassbox.training.data.skills.base import register_skill
from glassbox.training.data.skills.facts import FactsSkill
from glassbox.training.data.skills.tool_call import (
    TOOL_FEATURES,
    TOOL_OF_SKILL,
    ToolCallExample,
    call_layout,
    tool_call_example,
)


@register_skill("facts_tool")
class FactsToolSkill(FactsSkill):
    config_key = "facts"  # the section of facts, whose knowledge graph it asks
    features = (*TOOL_FEATURES, *FactsSkill.features)

    def query(self, e: int, r: int, phrasing: int) -> ToolCallExample:
        """The example asking about entity e, relation r in a phrasing (0 or 1)."""
        entity, relation = self.kg.entities[e], self.kg.relations[r]
        value = self.kg.attribute(entity, relation)
        if phrasing == 0:
            prompt, pe, pr = [entity, relation, "="], 0, 1
        else:
            prompt, pe, pr = [relation, "of", entity, "="], 2, 0
        layout = call_layout(prompt, TOOL_OF_SKILL[self.name], [pe, pr], result=[value])
        n = len(layout.words)
        both = max(pe, pr)
        return tool_call_example(
            layout,
            {
                "entity": [-1] * pe + [e] * (n - pe),
                "relation": [-1] * pr + [r] * (n - pr),
                "attribute": [-1] * both + [self.kg.attributes.index(value)] * (n - both),
                "phrasing": [phrasing] * n,
            },
        )
