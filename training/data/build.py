"""build_datasets: the one entry point from a DataConfig to splits and a tokenizer."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from glassbox.training.data.cache import config_hash, load_entry, save_entry
from glassbox.training.data.code import build_code_datasets
from glassbox.training.data.config import DataConfig
from glassbox.training.data.suite import (
    SuiteData,
    build_skill_datasets,
    make_skills,
    suite_tokenizer,
)
from glassbox.training.data.text import build_text_datasets
from glassbox.training.data.validate import data_config_from_dict, validate_data_config


def build_datasets(cfg: DataConfig | DictConfig | dict) -> SuiteData:
    """Splits and tokenizer for `cfg`, from the cache under cfg.cache_dir when a
    build of the same config is there, else built (and cached).

    skills: DatasetDict train / val / test / ood of one example per row.
    text: train / val / test of packed blocks (IterableDatasets when streaming).
    code: train / val / test of packed blocks of Python with ground truth (val, test)."""
    if not isinstance(cfg, DataConfig):
        cfg = data_config_from_dict(cfg)
    validate_data_config(cfg)
    if cfg.source == "text":
        return build_text_datasets(cfg)
    if cfg.source == "code":
        return build_code_datasets(cfg)
    # The key also covers what the code derives from the config: the vocabulary and
    # the registry's feature columns (a skill added to the registry changes both).
    skills = make_skills(cfg)
    layout = {
        "vocab": suite_tokenizer(cfg, skills).to_str(),
        "features": [f"{s.name}.{f.name}" for s in skills for f in s.features],
    }
    path = Path(cfg.cache_dir) / f"skills-{config_hash(cfg, extra=layout)}"
    hit = load_entry(path)
    if hit is not None:
        splits, tokenizer, meta = hit
        return SuiteData(
            splits,
            tokenizer,
            meta["skill_names"],
            meta["feature_names"],
            meta["pad_id"],
            meta["feature_kinds"],
        )
    data = build_skill_datasets(cfg)
    meta = {
        "skill_names": data.skill_names,
        "feature_names": data.feature_names,
        "feature_kinds": data.feature_kinds,
        "pad_id": data.pad_id,
        "config": asdict(cfg),
    }
    save_entry(path, data.splits, data.tokenizer, meta)
    return data
