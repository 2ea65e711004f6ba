"""On-disk cache of built splits: cache_dir/<kind>-<hash of the data config>/.

A directory holds the DatasetDict (save_to_disk), tokenizer.json and meta.json
(names, and the config that made it). It is written under a temporary name and
renamed into place, so a crashed build never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict, load_from_disk
from omegaconf import OmegaConf
from tokenizers import Tokenizer

# Bump when generation changes what a config produces: old cache entries then miss.
DATA_VERSION = 2
# Keys that do not change the data.
NOT_HASHED = ("batch_size", "num_workers", "cache_dir", "pack_length")
# Keys of a corpus section that do not either: a code snapshot is hashed by its content
# (training.data.code's fingerprint), not by where it lies
NOT_HASHED_IN = {"code": ("snapshot",)}
CORPORA = ("text", "code")  # sources read from a section of their own


def config_hash(cfg: Any, extra: Any = None) -> str:
    """16 hex digits of sha256 over what of the data config shapes the data (not
    NOT_HASHED, nor the sections the source does not read), DATA_VERSION and `extra`
    (e.g. fingerprints of the input files)."""
    d = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(d, dict)
    if d["source"] in CORPORA:  # the skill sections do not touch a corpus
        d = {k: d[k] for k in ("source", "seed", d["source"])}
    else:
        for k in CORPORA:
            d.pop(k)
    for k in NOT_HASHED:
        d.pop(k, None)
    for section, keys in NOT_HASHED_IN.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    blob = json.dumps({"v": DATA_VERSION, "cfg": d, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_entry(path: Path) -> tuple[DatasetDict, Tokenizer, dict] | None:
    """The cached splits, tokenizer and meta at `path`, or None if there is no entry."""
    if not (path / "meta.json").is_file():
        return None
    meta = json.loads((path / "meta.json").read_text())
    splits = load_from_disk(str(path / "splits"))
    for name in meta.get("empty_splits", []):  # datasets cannot reload a saved empty split
        splits[name] = next(iter(splits.values())).select([])
    return splits, Tokenizer.from_file(str(path / "tokenizer.json")), meta


@contextmanager
def quiet_progress() -> Iterator[None]:
    """datasets' progress bars off inside the block (restored after)."""
    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def save_entry(path: Path, splits: DatasetDict, tokenizer: Tokenizer, meta: dict) -> None:
    """Write an entry atomically; if another process wrote it first, keep theirs.
    (archs.checkpoint.atomic_write_dir syncs flat files; save_to_disk writes folders.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    empty = [k for k, v in splits.items() if len(v) == 0]
    meta = {**meta, "empty_splits": empty}
    try:
        with quiet_progress():
            DatasetDict({k: v for k, v in splits.items() if k not in empty}).save_to_disk(
                str(tmp / "splits")
            )
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        os.rename(tmp, path)
    except OSError:
        if not (path / "meta.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
