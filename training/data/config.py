"""Data configuration: typed dataclass schemas checked by omegaconf.

Every field is a YAML key under `data:` in a run config (configs/data/*.yaml hold
the values of that section only). `source: skills` generates the synthetic skill
suite from `seed`; `source: text` reads a text corpus (see `TextConfig`).

Each skill reads the section named like it (`data.addition.max_digits`, ...);
`mix` says how much of each split every skill gets. omegaconf merges dicts key by
key, so a YAML or command-line `mix` only changes the weights it names: set a
weight to 0 to leave a skill out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from glassbox.archs.config import ConfigError

DEFAULT_SKILLS = ("copy", "reverse", "sort", "modadd", "addition", "dyck", "facts", "ioi")


@dataclass
class ListTaskConfig:
    """copy, reverse, sort: a list of distinct number tokens, then the list transformed."""

    min_len: int = 4  # shortest list in train/val/test
    max_len: int = 8  # longest list in train/val/test
    ood_max_len: int = 12  # ood split: lists of max_len+1 .. ood_max_len items
    n_values: int = 64  # items are the number tokens 0 .. n_values-1, distinct within a list


@dataclass
class ModAddConfig:
    p: int = 23  # modulus; a, b, c are the single tokens 0 .. p-1
    train_fraction: float = 0.8  # share of the p*p (a, b) pairs in train; val/test halve the rest


@dataclass
class AdditionConfig:
    min_digits: int = 1  # fewest digits of an operand in train/val/test
    max_digits: int = 3  # most digits of an operand in train/val/test
    ood_max_digits: int = 6  # ood split: both operands have max_digits+1 .. ood_max_digits digits
    reversed: bool = False  # write every number least-significant digit first


@dataclass
class DyckConfig:
    n_types: int = 3  # bracket types, 1..4: ( ) [ ] { } < >
    min_len: int = 4  # shortest prompt (brackets before "=")
    max_len: int = 16  # longest prompt in train/val/test
    max_depth: int = 4  # deepest nesting in train/val/test
    ood_max_len: int = 24  # ood split: prompts up to this long ...
    ood_max_depth: int = 8  # ... that nest deeper than max_depth, up to this deep
    p_open: float = 0.5  # chance of opening a bracket where both opening and closing are allowed


@dataclass
class FactsConfig:
    n_entities: int = 48  # entities of the knowledge graph (synthetic names)
    # relations of the knowledge graph, from: city, colour, profession, pet, sport, food, instrument
    relations: list[str] = field(default_factory=lambda: ["city", "colour", "profession", "pet"])
    # phrasing: train asks every fact as "E r =", and "r of E =" for a share of the entities;
    #   val/test ask "r of E =" about the other entities (every fact is in train, no query is);
    # none: a memorisation skill, val/test ask the same queries as train
    holdout: str = "phrasing"
    phrasing_train_fraction: float = 0.5  # share of entities whose "r of E =" queries train sees


@dataclass
class IOIConfig:
    n_names: int = 24  # synthetic first names to draw the two people from
    n_places: int = 8  # places P in "went to the P" (at most 8)
    n_objects: int = 8  # objects O in "gave a O to" (at most 8)


@dataclass
class TextConfig:
    # Files or folders (searched recursively) of .txt / .jsonl / .json / .parquet files.
    paths: list[str] = field(default_factory=list)
    hub_name: str = ""  # a datasets hub name (or a local dataset folder); used when paths is empty
    hub_config: str = ""  # the hub dataset's configuration name, if it has several
    hub_split: str = "train"  # the hub split to read
    text_field: str = "text"  # column holding the text in .jsonl / .parquet / hub rows
    sample_by: str = "paragraph"  # .txt files: one document per line | paragraph | document (file)
    tokenizer_path: str = ""  # a tokenizer.json to use instead of training one
    vocab_size: int = 4096  # byte-level BPE vocabulary size, special tokens included
    tokenizer_train_docs: int = 100_000  # documents (from train) the BPE is trained on
    block_size: int = 256  # tokens per packed row, <bos> included
    streaming: bool = False  # read the corpus lazily (splits are IterableDatasets)
    val_size: float = 0.05  # documents carved off for val: a fraction, or a count if >= 1
    test_size: float = 0.05  # documents carved off for test: a fraction, or a count if >= 1
    # (streaming: counts only, the first val_size documents are val, the next test_size test)


@dataclass
class DataConfig:
    source: str = "skills"  # skills (the synthetic suite) | text (a corpus, see `text`)
    seed: int = 0  # everything generated (examples, knowledge graph, splits) follows this seed
    batch_size: int = 32  # examples (skills) or blocks (text) per batch
    num_workers: int = 0  # DataLoader worker processes
    # skill -> weight: the share of each split a skill gets (0 leaves it out)
    mix: dict[str, float] = field(default_factory=lambda: {s: 1.0 for s in DEFAULT_SKILLS})
    task_tags: bool = False  # open each example with a <tag:skill> token (off: content tells)
    loss_on: str = "answer"  # answer: train on the answer tokens | all: on every token but <bos>
    cache_dir: str = ".cache/glassbox/data"  # generated splits are saved under cache_dir/<hash>
    n_train: int = 20_000  # train examples, all skills together
    n_val: int = 2_000  # val examples (a skill with few distinct held-out examples gives fewer)
    n_test: int = 2_000  # test examples (ditto)
    n_ood: int = 2_000  # ood examples, over the skills that have an ood split
    copy: ListTaskConfig = field(default_factory=ListTaskConfig)
    reverse: ListTaskConfig = field(default_factory=ListTaskConfig)
    sort: ListTaskConfig = field(default_factory=ListTaskConfig)
    modadd: ModAddConfig = field(default_factory=ModAddConfig)
    addition: AdditionConfig = field(default_factory=AdditionConfig)
    dyck: DyckConfig = field(default_factory=DyckConfig)
    facts: FactsConfig = field(default_factory=FactsConfig)
    ioi: IOIConfig = field(default_factory=IOIConfig)
    text: TextConfig = field(default_factory=TextConfig)


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
    # Imported here: the registry imports this module.
    from glassbox.training.data.skills import SKILLS

    if cfg.source not in ("skills", "text"):
        raise ConfigError(f"{prefix}.source", cfg.source, "one of skills, text")
    if cfg.loss_on not in ("answer", "all"):
        raise ConfigError(f"{prefix}.loss_on", cfg.loss_on, "one of answer, all")
    _positive(prefix, cfg, "batch_size")
    if cfg.num_workers < 0:
        raise ConfigError(f"{prefix}.num_workers", cfg.num_workers, "must be >= 0")
    if not cfg.cache_dir:
        raise ConfigError(f"{prefix}.cache_dir", cfg.cache_dir, "a directory path")
    if cfg.source == "text":
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
    from glassbox.training.data.skills.ioi import OBJECTS, PLACES

    if i.n_names < 2:
        raise ConfigError(f"{prefix}.ioi.n_names", i.n_names, "must be >= 2 (two people)")
    if not 1 <= i.n_places <= len(PLACES):
        raise ConfigError(f"{prefix}.ioi.n_places", i.n_places, f"must be in 1..{len(PLACES)}")
    if not 1 <= i.n_objects <= len(OBJECTS):
        raise ConfigError(f"{prefix}.ioi.n_objects", i.n_objects, f"must be in 1..{len(OBJECTS)}")
    from glassbox.training.data.names import MAX_NAMES

    if cfg.facts.n_entities + i.n_names > MAX_NAMES:
        raise ConfigError(
            f"{prefix}.ioi.n_names",
            i.n_names,
            f"facts.n_entities + ioi.n_names must be <= {MAX_NAMES} (synthetic name pool)",
        )
    _validate_train_share(cfg, prefix)


def _validate_train_share(cfg: DataConfig, prefix: str) -> None:
    """Each skill's share of n_train must cover what it has to teach (facts: every fact)."""
    from glassbox.training.data.skills import SKILLS
    from glassbox.training.data.suite import active_mix, allocate

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
    from glassbox.training.data.knowledge import RELATION_VALUES

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
    from glassbox.training.data.vocab import SPECIAL_TOKENS

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
