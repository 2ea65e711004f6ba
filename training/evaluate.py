"""Capability evaluation of a model on the held-out splits of its data."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from glassbox.archs.checkpoint import read_config
from glassbox.archs.config import ConfigError
from glassbox.training.data import (
    DataConfig,
    SuiteData,
    build_datasets,
    collate,
    data_config_from_dict,
)
from glassbox.training.skill_scores import SkillMetrics

# Feature names of the IOI token ids that the logit difference compares.
IOI_FEATURES = ("ioi.io_token", "ioi.s_token")


def ioi_spec(suite: SuiteData) -> tuple[int, int, int] | None:
    """(IOI skill id, indirect-object feature index, subject feature index) or None."""
    if "ioi" not in suite.skill_names or not all(f in suite.feature_names for f in IOI_FEATURES):
        return None
    return (
        suite.skill_names.index("ioi"),
        suite.feature_names.index(IOI_FEATURES[0]),
        suite.feature_names.index(IOI_FEATURES[1]),
    )


@torch.no_grad()
def evaluate_split(
    model, suite: SuiteData, split: str, batch_size: int = 64, max_batches: int = 0
) -> dict:
    """Metrics of SkillMetrics.compute() on one split (max_batches 0 = all)."""
    loader = DataLoader(
        suite.splits[split], batch_size=batch_size, collate_fn=partial(collate, pad_id=suite.pad_id)
    )
    metric = SkillMetrics(suite.skill_names, ioi_spec(suite))
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(loader):
            if max_batches and i >= max_batches:
                break
            metric.update(model(batch["input_ids"].to(model.device)).cpu(), batch)
    finally:
        model.train(was_training)
    return metric.compute()


def evaluate_model(
    model, suite: SuiteData, batch_size: int = 64, max_batches: int = 0
) -> dict[str, Any]:
    """val_loss, perplexity and skills.<name>.{accuracy, exact_match, loss, logit_diff}
    on the test split; skills.<name>.{ood_accuracy, ood_exact_match} on the ood split."""
    out = evaluate_split(model, suite, "test", batch_size, max_batches)
    out["split"] = "test"
    if "ood" in suite.splits:
        ood = evaluate_split(model, suite, "ood", batch_size, max_batches)
        for name, vals in ood.get("skills", {}).items():
            entry = out.setdefault("skills", {}).setdefault(name, {})
            entry["ood_accuracy"] = vals["accuracy"]
            entry["ood_exact_match"] = vals["exact_match"]
    return out


def load_suite_for(path: str | Path, model) -> tuple[SuiteData, DataConfig]:
    """Rebuild the data a checkpoint was trained on (from config.yaml's data section),
    checking that it gives the checkpoint's own vocabulary."""
    config = read_config(path)
    if "data" not in config:
        raise ConfigError("data", None, f"{path}/config.yaml has no data section to evaluate on")
    data_cfg = data_config_from_dict(config["data"])
    suite = build_datasets(data_cfg)
    if model.tokenizer is not None and model.tokenizer.get_vocab() != suite.tokenizer.get_vocab():
        raise ValueError(
            f"the data config in {path}/config.yaml builds a vocabulary that differs from {path}/tokenizer.json"
        )
    return suite, data_cfg
