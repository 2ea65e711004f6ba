"""The skill registry, `SKILLS` (training/data/skills/base.py): skill name -> its
`Skill` class, in registration order, which is the skill id (the `skill` column).

Each skill registers itself in its own module with `@register_skill(name,
config=ItsConfig)`, which also makes its section `data.<name>` a field of DataConfig.
The modules are imported below in skill-id order: a new skill's module goes last in
`MODULES`, so that the other skills keep their ids. A skill may read another's
section instead of bringing one (`config_key`: a tool-call variant of addition reads
`data.addition`), and should emit only words that are already in the vocabulary (the
tool tokens and its tag are reserved in training.data.vocab).
"""

from __future__ import annotations

import importlib

from glassbox.training.data.skills.base import SKILLS, Example, Feature, Skill, register_skill

# The skills' modules in skill-id order (a list, not import lines, which a linter sorts):
# copy 0, reverse 1, sort 2 (lists), modadd 3, addition 4, dyck 5, facts 6, ioi 7, then
# the tool-call variants (weight 0 in the default mix) addition_tool 8, facts_tool 9.
MODULES = ("lists", "modadd", "addition", "dyck", "facts", "ioi", "addition_tool", "facts_tool")
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODULES", "SKILLS", "Example", "Feature", "Skill", "register_skill"]
