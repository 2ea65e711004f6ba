"""Checks of a data config: every impossible value is a `ConfigError` naming the key,
the value and what is allowed. Apart from the schema (training.data.config) because
the checks read the skill registry, the suite's allocation and the vocabulary, which
themselves read the schema.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from glassbox.archs.config import ConfigError
from glassbox.training.data.code import check_code_config
from glassbox.training.data.config import DataConfig, TextConfig
from glassbox.training.data.names import MAX_NAMES
from glassbox.training.data.skills import SKILLS
from glassbox.training.data.skills.base import check_positive_ints
from glassbox.training.data.suite import active_mix, allocate
from glassbox.training.data.vocab import SPECIAL_TOKENS


def validate_data_config(cfg: DataConfig, prefix: str = "data") -> None:
    """Raise ConfigError (one line: key, value, what is allowed) for any impossible value."""
    if cfg.source not in ("skills", "text", "code"):
        raise ConfigError(f"{prefix}.source", cfg.source, "one of skills, text, code")
    if cfg.loss_on not in ("answer", "all"):
        raise ConfigError(f"{prefix}.loss_on", cfg.loss_on, "one of answer, all")
    check_positive_ints(prefix, cfg, "batch_size")
    if cfg.seed < 0:
        raise ConfigError(f"{prefix}.seed", cfg.seed, "must be >= 0")
    if cfg.num_workers < 0:
        raise ConfigError(f"{prefix}.num_workers", cfg.num_workers, "must be >= 0")
    if not cfg.cache_dir:
        raise ConfigError(f"{prefix}.cache_dir", cfg.cache_dir, "a directory path")
    if cfg.pack_length < 0:
        raise ConfigError(f"{prefix}.pack_length", cfg.pack_length, "0 (off) or tokens per row")
    if cfg.source == "text":
        if cfg.pack_length:
            raise ConfigError(
                f"{prefix}.pack_length",
                cfg.pack_length,
                f"0: text rows are already packed to {prefix}.text.block_size",
            )
        _validate_text(cfg.text, f"{prefix}.text")
        return
    if cfg.source == "code":
        if cfg.pack_length:
            raise ConfigError(f"{prefix}.pack_length", cfg.pack_length, "0: code rows are packed")
        check_code_config(cfg.code, f"{prefix}.code")
        return

    for name, w in cfg.mix.items():
        if name not in SKILLS:
            raise ConfigError(f"{prefix}.mix.{name}", w, f"skills are {', '.join(SKILLS)}")
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"{prefix}.mix.{name}", w, "a weight must be a finite number >= 0")
    if sum(cfg.mix.values()) <= 0:
        raise ConfigError(f"{prefix}.mix", dict(cfg.mix), "at least one weight must be > 0")
    check_positive_ints(prefix, cfg, "n_train")
    for key in ("n_val", "n_test", "n_ood"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{prefix}.{key}", getattr(cfg, key), "must be >= 0")

    for name in SKILLS.sections():  # each skill checks its own section
        SKILLS[name].check_config(getattr(cfg, name), f"{prefix}.{name}")
    # across sections: facts' entities and ioi's people share one pool of synthetic names
    if cfg.facts.n_entities + cfg.ioi.n_names > MAX_NAMES:
        raise ConfigError(
            f"{prefix}.ioi.n_names",
            cfg.ioi.n_names,
            f"facts.n_entities + ioi.n_names must be <= {MAX_NAMES} (synthetic name pool)",
        )
    _validate_train_share(cfg, prefix)


def _validate_train_share(cfg: DataConfig, prefix: str) -> None:
    """Each skill's share of n_train must cover what it has to teach (facts: every fact)."""
    for name, n in allocate(cfg.n_train, active_mix(cfg)).items():
        need = SKILLS[name](cfg).min_train_examples()
        if n < need:
            raise ConfigError(
                f"{prefix}.n_train",
                cfg.n_train,
                f"{name} gets {n} train examples but needs >= {need} (one per training "
                f"query); raise n_train or {prefix}.mix.{name}, or set it to 0",
            )


def _validate_text(t: TextConfig, prefix: str) -> None:
    if not t.paths and not t.hub_name:
        raise ConfigError(f"{prefix}.paths", list(t.paths), "give files/folders, or text.hub_name")
    if t.sample_by not in ("line", "paragraph", "document"):
        raise ConfigError(f"{prefix}.sample_by", t.sample_by, "one of line, paragraph, document")
    for ext in t.extensions:
        if not ext.startswith(".") or len(ext) < 2:
            raise ConfigError(f"{prefix}.extensions", list(t.extensions), "suffixes like .txt, .py")
    smallest = 256 + len(SPECIAL_TOKENS)
    if not t.tokenizer_path and t.vocab_size < smallest:
        raise ConfigError(
            f"{prefix}.vocab_size",
            t.vocab_size,
            f"must be >= {smallest} (256 bytes + special tokens)",
        )
    if t.block_size < 2:
        raise ConfigError(f"{prefix}.block_size", t.block_size, "must be >= 2")
    check_positive_ints(prefix, t, "tokenizer_train_docs")
    for key in ("val_size", "test_size"):
        v = getattr(t, key)
        if not math.isfinite(v):
            raise ConfigError(f"{prefix}.{key}", v, "a fraction in (0, 1) or a number of documents")
        if t.streaming and (v < 1 or v != int(v)):
            raise ConfigError(
                f"{prefix}.{key}", v, "a whole number of documents >= 1 when streaming"
            )
        if not t.streaming and not (0 < v < 1 or (v >= 1 and v == int(v))):
            raise ConfigError(
                f"{prefix}.{key}", v, "a fraction in (0, 1) or a whole number of documents"
            )


def data_config_from_dict(d: dict | DictConfig | None = None) -> DataConfig:
    """Build a checked DataConfig from a plain dict (e.g. configs/data/skills.yaml)."""
    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), d or {})
    cfg: DataConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate_data_config(cfg)
    return cfg
