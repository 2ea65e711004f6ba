"""Checks of a data config: every impossible value is a `ConfigError` naming the key,
the value and what is allowed. Apart from the schema (training.data.config) because
the checks read the skill registry, the suite's allocation and the vocabulary, which
themselves read the schema.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from glassbox.archs.config import ConfigError
from glassbox.training.data.config import (
    DataConfig,
    DyckConfig,
    FactsConfig,
    ListTaskConfig,
    TextConfig,
)
from glassbox.training.data.knowledge import RELATION_VALUES
from glassbox.training.data.names import MAX_NAMES
from glassbox.training.data.skills import SKILLS
from glassbox.training.data.skills.ioi import OBJECTS, PLACES
from glassbox.training.data.suite import active_mix, allocate
from glassbox.training.data.vocab import SPECIAL_TOKENS


def _positive(prefix: str, obj, *keys: str) -> None:
    for key in keys:
        v = getattr(obj, key)
        if v <= 0:
            raise ConfigError(f"{prefix}.{key}", v, "must be a positive integer")


def _fraction(key: str, v: float, low_open: bool = True) -> None:
    ok = (0 < v < 1) if low_open else (0 <= v < 1)
    if not ok:
        raise ConfigError(key, v, "must be in (0, 1)" if low_open else "must be in [0, 1)")


def validate_data_config(cfg: DataConfig, prefix: str = "data") -> None:
    """Raise ConfigError (one line: key, value, what is allowed) for any impossible value."""
    if cfg.source not in ("skills", "text"):
        raise ConfigError(f"{prefix}.source", cfg.source, "one of skills, text")
    if cfg.loss_on not in ("answer", "all"):
        raise ConfigError(f"{prefix}.loss_on", cfg.loss_on, "one of answer, all")
    _positive(prefix, cfg, "batch_size")
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

    for name, w in cfg.mix.items():
        if name not in SKILLS:
            raise ConfigError(f"{prefix}.mix.{name}", w, f"skills are {', '.join(SKILLS)}")
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"{prefix}.mix.{name}", w, "a weight must be a finite number >= 0")
    if sum(cfg.mix.values()) <= 0:
        raise ConfigError(f"{prefix}.mix", dict(cfg.mix), "at least one weight must be > 0")
    _positive(prefix, cfg, "n_train")
    for key in ("n_val", "n_test", "n_ood"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{prefix}.{key}", getattr(cfg, key), "must be >= 0")

    for name in ("copy", "reverse", "sort"):
        _validate_list_task(getattr(cfg, name), f"{prefix}.{name}")
    m = cfg.modadd
    if m.p < 2:
        raise ConfigError(f"{prefix}.modadd.p", m.p, "must be >= 2")
    _fraction(f"{prefix}.modadd.train_fraction", m.train_fraction)
    if round(m.p * m.p * (1 - m.train_fraction)) < 2:
        raise ConfigError(
            f"{prefix}.modadd.train_fraction",
            m.train_fraction,
            "leaves no (a, b) pair for val/test",
        )
    a = cfg.addition
    _positive(f"{prefix}.addition", a, "min_digits", "max_digits")
    if a.min_digits > a.max_digits:
        raise ConfigError(
            f"{prefix}.addition.min_digits", a.min_digits, f"must be <= max_digits={a.max_digits}"
        )
    if a.ood_max_digits <= a.max_digits:
        raise ConfigError(
            f"{prefix}.addition.ood_max_digits",
            a.ood_max_digits,
            f"must be > max_digits={a.max_digits} (ood numbers are longer)",
        )
    _validate_dyck(cfg.dyck, f"{prefix}.dyck")
    _validate_facts(cfg.facts, f"{prefix}.facts")
    i = cfg.ioi
    if i.n_names < 2:
        raise ConfigError(f"{prefix}.ioi.n_names", i.n_names, "must be >= 2 (two people)")
    if not 1 <= i.n_places <= len(PLACES):
        raise ConfigError(f"{prefix}.ioi.n_places", i.n_places, f"must be in 1..{len(PLACES)}")
    if not 1 <= i.n_objects <= len(OBJECTS):
        raise ConfigError(f"{prefix}.ioi.n_objects", i.n_objects, f"must be in 1..{len(OBJECTS)}")
    if cfg.facts.n_entities + i.n_names > MAX_NAMES:
        raise ConfigError(
            f"{prefix}.ioi.n_names",
            i.n_names,
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


def _validate_list_task(c: ListTaskConfig, prefix: str) -> None:
    _positive(prefix, c, "min_len", "max_len")
    if c.min_len > c.max_len:
        raise ConfigError(f"{prefix}.min_len", c.min_len, f"must be <= max_len={c.max_len}")
    if c.ood_max_len <= c.max_len:
        raise ConfigError(
            f"{prefix}.ood_max_len", c.ood_max_len, f"must be > max_len={c.max_len} (ood is longer)"
        )
    if c.n_values < c.ood_max_len:
        raise ConfigError(
            f"{prefix}.n_values",
            c.n_values,
            f"must be >= ood_max_len={c.ood_max_len} (items in a list are distinct)",
        )


def _validate_dyck(d: DyckConfig, prefix: str) -> None:
    if not 1 <= d.n_types <= 4:
        raise ConfigError(f"{prefix}.n_types", d.n_types, "must be in 1..4")
    _positive(prefix, d, "min_len", "max_len", "max_depth")
    if d.min_len > d.max_len:
        raise ConfigError(f"{prefix}.min_len", d.min_len, f"must be <= max_len={d.max_len}")
    if d.ood_max_depth <= d.max_depth:
        raise ConfigError(
            f"{prefix}.ood_max_depth",
            d.ood_max_depth,
            f"must be > max_depth={d.max_depth} (ood nests deeper)",
        )
    if d.ood_max_len < max(d.max_len, d.max_depth + 1):
        raise ConfigError(
            f"{prefix}.ood_max_len",
            d.ood_max_len,
            f"must be >= max_len={d.max_len} and > max_depth={d.max_depth}",
        )
    _fraction(f"{prefix}.p_open", d.p_open)


def _validate_facts(f: FactsConfig, prefix: str) -> None:
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
        _fraction(f"{prefix}.phrasing_train_fraction", f.phrasing_train_fraction, low_open=False)
        held = f.n_entities - round(f.n_entities * f.phrasing_train_fraction)
        if held < 2:
            raise ConfigError(
                f"{prefix}.phrasing_train_fraction",
                f.phrasing_train_fraction,
                f"must leave >= 2 of n_entities={f.n_entities} for val and test",
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
    _positive(prefix, t, "tokenizer_train_docs")
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
