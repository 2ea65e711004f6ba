"""Data configuration: typed dataclass schemas checked by omegaconf.

Every field is a YAML key under `data:` in a run config (configs/data/*.yaml hold
the values of that section only). `source: skills` generates the synthetic skill
suite from `seed`; `source: text` reads a text corpus (see `TextConfig`); `source: code`
reads Python source with ground truth on every token (see `CodeConfig`).

Each skill reads the section named like it (`data.addition.max_digits`, ...): the
skill brings that section's dataclass where it registers itself
(`@register_skill("addition", config=AdditionConfig)` in
training/data/skills/addition.py), and the skill registry makes it a field of
DataConfig, before `text`. `mix` says how much of each split every skill gets. omegaconf merges dicts key by
key, so a YAML or command-line `mix` only changes the weights it names: set a
weight to 0 to leave a skill out.

This module is the schema (and `row_length`, what a row of it holds); the checks, which need the skill registry, are in
training.data.validate (`validate_data_config`, `data_config_from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SKILLS = ("copy", "reverse", "sort", "modadd", "addition", "dyck", "facts", "ioi")


@dataclass
class TextConfig:
    # Files or folders (searched recursively for `extensions`); "stdlib:" is the Python
    # standard library's source folder, "stdlib:NAME" its package NAME (read .py files).
    paths: list[str] = field(default_factory=list)
    # Suffixes read from folders: .jsonl / .json / .parquet by their column, any other as text.
    extensions: list[str] = field(default_factory=lambda: [".txt", ".jsonl", ".json", ".parquet"])
    hub_name: str = ""  # a datasets hub name (or a local dataset folder); used when paths is empty
    hub_config: str = ""  # the hub dataset's configuration name, if it has several
    hub_split: str = "train"  # the hub split to read
    text_field: str = "text"  # column holding the text in .jsonl / .parquet / hub rows
    # Column naming each row's domain (.jsonl / .parquet / hub); "" = the top-level folder
    # (or file) under the `paths` entry, the hub name for a hub dataset.
    domain_field: str = ""
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
class CodeConfig:
    # What to read: "stdlib:" (the standard library), "stdlib:NAME", "site:" (the Python
    # source of the running interpreter's installed packages), "site:NAME", or folders.
    # A top-level package (or module) is a domain and is never split between train,
    # val and test. See training/data/code.py.
    paths: list[str] = field(default_factory=lambda: ["stdlib:"])
    exclude: list[str] = field(default_factory=list)  # package names (top-level or dotted) left out
    # the unit held out for val / test and a domain: a file's first split_depth folders
    # (1: top-level packages; 2: subpackages such as torch.nn)
    split_depth: int = 1
    max_file_bytes: int = 1_000_000  # larger files (generated tables) are left out, counted
    vocab_size: int = 2048  # byte-level BPE vocabulary (special tokens included), trained on train
    tokenizer_path: str = ""  # a tokenizer.json to use instead of training one
    tokenizer_train_chars: int = 50_000_000  # train characters (seeded sample of files) for the BPE
    block_size: int = 256  # tokens per packed row, <bos> included
    val_share: float = 0.05  # chance a package is held out for val (seeded hash of its name)
    test_share: float = 0.05  # chance a package is held out for test
    label_train: bool = False  # ground truth on train rows too (val and test always have it)
    # a corpus snapshot (`glassbox ladder --prepare --snapshot FILE`, or code.write_snapshot):
    # the documents, splits, manifest and tokenizer of a corpus read on another machine,
    # used instead of this machine's files, so that every token is the same
    snapshot: str = ""


@dataclass
class DataConfig:
    # skills (the synthetic suite) | text (a corpus, see `text`) | code (Python, see `code`)
    source: str = "skills"
    seed: int = 0  # everything generated (examples, knowledge graph, splits) follows this seed
    batch_size: int = 32  # examples (skills) or blocks (text) per batch; packed rows if pack_length
    # skills, train split: pack several examples into rows of this many tokens (attention
    # and rotary positions stay per example; val/test stay one example per row). 0: off,
    # one example per row padded to the batch's longest (the CPU default: its budgets
    # count examples per step)
    pack_length: int = 0
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
    # here, one section per registered skill that brings one (`copy:`, ..., `ioi:`)
    text: TextConfig = field(default_factory=TextConfig)
    code: CodeConfig = field(default_factory=CodeConfig)


def row_length(data: DataConfig) -> int:
    """Tokens in one training row of `data`: a packed block of code or text
    (code.block_size, text.block_size); 0 for the skills, whose rows are examples
    (pack_length long only when packed)."""
    return {"code": data.code.block_size, "text": data.text.block_size}.get(data.source, 0)
