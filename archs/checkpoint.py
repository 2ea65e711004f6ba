"""Checkpoint directories: config.yaml, model.safetensors, tokenizer.json,
metrics.json, README.md (model card). Nothing in them is unpickled.

Loading checks every file before the model is built (archs/checkpoint_checks.py):
a bad file is one CheckpointError naming it and what is wrong.

Writes are atomic at the directory level: the new checkpoint is written under a
temporary name beside the target and renamed into place, and an existing good
checkpoint is only removed after the new one is complete. A crash at any moment
leaves either the old checkpoint or the new one at the target path (or, in the
instant between the two renames, the old one under `.<name>.old-*` beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model

from glassbox.archs.checkpoint_checks import (
    add_digest,
    check_digest,
    check_finite,
    check_tensors,
    checked_model_config,
    checked_tokenizer,
    read_header,
    read_json,
    read_yaml_mapping,
)
from glassbox.archs.config import ModelConfig
from glassbox.archs.errors import CheckpointError, one_line
from glassbox.archs.transformer import Transformer

FILES = ("config.yaml", "model.safetensors", "tokenizer.json", "metrics.json", "README.md")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_dir(target: str | Path, write) -> Path:
    """Call write(tmp_dir) to fill a fresh directory, then move it to `target`,
    replacing what was there only once the new one is complete."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def clean_interrupted_writes(target: str | Path) -> list[Path]:
    """Tidy what an `atomic_write_dir(target, ...)` killed midway left beside `target`:
    an unfinished `.<name>.tmp-*` is removed; a `.<name>.old-*` (the previous
    checkpoint, moved aside just before the new one was renamed in) is removed when
    `target` exists, and renamed back to `target` when it does not. Returns the
    paths removed or restored."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    touched = []
    for tmp in sorted(target.parent.glob(f".{target.name}.tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
        touched.append(tmp)
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        os.rename(olds.pop(), target)
        touched.append(target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
        touched.append(old)
    return touched


def _model_card(cfg: ModelConfig, n_params: int, n_active: int, metrics: dict[str, Any]) -> str:
    ffn = cfg.ffn.kind + (f" ({cfg.ffn.activation})" if cfg.ffn.kind == "dense" else "")
    rows = "\n".join(
        f"| `{k}` | {v:.4g} |" if isinstance(v, float) else f"| `{k}` | {v} |"
        for k, v in sorted(_flatten(metrics).items())
    )
    return f"""# {cfg.name}

A glassbox model: decoder-only transformer, {cfg.n_layers} layers, d_model {cfg.d_model},
{cfg.n_heads} heads ({cfg.kv_heads} key/value), feed-forward slot `{ffn}`,
vocabulary {cfg.vocab_size}, context {cfg.max_seq_len}.
Parameters: {n_params:,} total, {n_active:,} active per token.

```python
from glassbox import archs
model = archs.load_pretrained("path/to/this/dir")
logits, cache = model.run_with_cache(tokens, names_filter="blocks.*.hook_resid_post")
```

## Metrics

| metric | value |
|---|---|
{rows if rows else "| (none recorded) | |"}
"""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def save_pretrained(
    model: Transformer,
    path: str | Path,
    tokenizer=None,
    metrics: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as a checkpoint directory at `path` (atomically).

    tokenizer: a tokenizers.Tokenizer (defaults to model.tokenizer);
    metrics: nested dict written to metrics.json and the model card;
    extra_config: more sections for config.yaml (data, optim, ...) beside `model`.
    """
    cfg: ModelConfig = model.cfg
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    metrics = metrics or {}
    config = {"model": OmegaConf.to_container(OmegaConf.structured(cfg))}
    config.update(extra_config or {})

    def write(tmp: Path) -> None:
        OmegaConf.save(OmegaConf.create(config), tmp / "config.yaml")
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        add_digest(tmp / "model.safetensors")
        if tokenizer is not None:
            tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(
            _model_card(cfg, model.num_params(), model.num_params(active=True), metrics)
        )

    return atomic_write_dir(path, write)


def resolve_checkpoint(path_or_hub_id: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a hub id downloaded (or found in the local
    hub cache) through huggingface_hub. FileNotFoundError for a path that does not
    exist; CheckpointError for a hub id that cannot be fetched."""
    p = Path(path_or_hub_id)
    if p.is_dir():
        if not (p / "config.yaml").is_file():
            raise FileNotFoundError(
                f"{p} is a directory but has no config.yaml: not a glassbox checkpoint"
            )
        return p
    s = str(path_or_hub_id)
    if p.is_file():
        raise CheckpointError(
            p, f"is a file; a checkpoint is the directory holding config.yaml ({p.parent}?)"
        )
    if s.startswith((".", "/")) or s.count("/") != 1:
        raise FileNotFoundError(
            f"no checkpoint directory at {s!r} (and it is not a hub id of the form 'owner/name')"
        )
    try:
        local = Path(snapshot_download(repo_id=s, revision=revision, allow_patterns=list(FILES)))
    except Exception as e:  # noqa: BLE001 - every hub failure becomes the one line below
        raise CheckpointError(s, f"{_hub_failure(e, revision)}; {_LOCAL_HINT}") from None
    if not (local / "config.yaml").is_file():
        raise CheckpointError(s, f"the hub repository has no config.yaml; {_LOCAL_HINT}")
    return local


_LOCAL_HINT = (
    "no local directory has this name either (a local checkpoint is a directory with "
    "config.yaml and model.safetensors, e.g. ./runs/dense/checkpoint)"
)


def _hub_failure(e: Exception, revision: str | None) -> str:
    if isinstance(e, RepositoryNotFoundError):
        return "no such model repository on the hub (or it is private)"
    if isinstance(e, RevisionNotFoundError):
        return f"the hub repository has no revision {revision!r}"
    if isinstance(e, LocalEntryNotFoundError):
        return "the hub could not be reached (offline or no network) and it is not in the local hub cache"
    return f"the hub could not be reached ({type(e).__name__}: {one_line(str(e))[:120]})"


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint directory's config.yaml as a dict (CheckpointError if it is not
    a YAML mapping)."""
    return read_yaml_mapping(Path(path) / "config.yaml")


def load_pretrained(
    path_or_hub_id: str | Path,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> Transformer:
    """Load a checkpoint directory or hub id into a Transformer (eval mode), with
    `model.tokenizer` set when the checkpoint has tokenizer.json.

    Every file is checked before a weight is read (archs/checkpoint_checks.py):
    config.yaml against the model schema, model.safetensors' header and each
    tensor's name, shape and dtype against the model of the config (and its recorded
    SHA-256), tokenizer.json against the embedding. A problem is one CheckpointError
    naming the file.
    """
    path = resolve_checkpoint(path_or_hub_id, revision)
    config_file, weights, tok_file = (
        path / "config.yaml",
        path / "model.safetensors",
        path / "tokenizer.json",
    )
    cfg = checked_model_config(read_yaml_mapping(config_file), config_file)
    entries, metadata, data_start = read_header(weights)
    tokenizer = checked_tokenizer(tok_file, cfg) if tok_file.is_file() else None
    model = Transformer(cfg)
    check_tensors(weights, entries, model, config_file)
    check_digest(weights, metadata, data_start)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except Exception as e:  # noqa: BLE001 - the header was checked; anything left is corruption
        raise CheckpointError(weights, f"cannot be read: {one_line(str(e))[:200]}") from None
    if missing or unexpected:
        raise CheckpointError(
            weights,
            f"does not match config.yaml: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}",
        )
    check_finite(model, weights)
    if tokenizer is not None:
        model.tokenizer = tokenizer
    if device is not None:
        model.to(device)
    return model.eval()


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metrics.json ({} when it has none)."""
    return read_json(Path(path) / "metrics.json")
