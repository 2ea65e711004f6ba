"""The skill registry. Index in SKILLS = skill id (the `skill` column).

To add a skill: write a `Skill` subclass in a module of this package and append
it here (appending keeps the ids of the others). A skill may read an existing
config section through `config_key` (a tool-call variant of addition reads
`data.addition`), and should emit only words that are already in the
vocabulary (the tool tokens and its tag are reserved in training.data.vocab).
"""

from __future__ import annotations

from glassbox.training.data.skills.addition import AdditionSkill
from glassbox.training.data.skills.addition_tool import AdditionToolSkill
from glassbox.training.data.skills.base import Example, Feature, Skill
from glassbox.training.data.skills.dyck import DyckSkill
from glassbox.training.data.skills.facts import FactsSkill
from glassbox.training.data.skills.facts_tool import FactsToolSkill
from glassbox.training.data.skills.ioi import IOISkill
from glassbox.training.data.skills.lists import CopySkill, ReverseSkill, SortSkill
from glassbox.training.data.skills.modadd import ModAddSkill

SKILLS: dict[str, type[Skill]] = {
    s.name: s
    for s in (
        CopySkill,
        ReverseSkill,
        SortSkill,
        ModAddSkill,
        AdditionSkill,
        DyckSkill,
        FactsSkill,
        IOISkill,
        # tool-call variants (weight 0 in the default mix): training/data/skills/tool_call.py
        AdditionToolSkill,
        FactsToolSkill,
    )
}

__all__ = ["SKILLS", "Example", "Feature", "Skill"]
