"""Data: the skill suite (synthetic tasks with ground truth on every token) and text corpora.

    from glassbox.training.data import DataConfig, build_datasets, collate

    data = build_datasets(DataConfig())          # SuiteData
    data.splits["train"][0]                      # input_ids, loss_mask, answer_mask, skill, features, ...
    batch = collate(rows, data.pad_id)           # dict of padded tensors

The skills, their formats and every ground-truth variable: training/data/SKILLS.md.
"""

from glassbox.training.data.build import build_datasets
from glassbox.training.data.collate import collate
from glassbox.training.data.config import DataConfig
from glassbox.training.data.knowledge import KnowledgeGraph, knowledge_graph
from glassbox.training.data.skills import SKILLS
from glassbox.training.data.suite import SuiteData, suite_tokenizer
from glassbox.training.data.validate import data_config_from_dict, validate_data_config

__all__ = [
    "SKILLS",
    "DataConfig",
    "KnowledgeGraph",
    "SuiteData",
    "build_datasets",
    "collate",
    "data_config_from_dict",
    "knowledge_graph",
    "suite_tokenizer",
    "validate_data_config",
]
