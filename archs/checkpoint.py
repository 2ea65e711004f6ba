"""Checkpoint directories: config.yaml, model.safetensors, tokenizer.json,
metrics.json, README.md (model card). Nothing in them is unpickled.

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
from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from glassbox.archs.config import ModelConfig, model_config_from_dict
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
        if tokenizer is not None:
            tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(
            _model_card(cfg, model.num_params(), model.num_params(active=True), metrics)
        )

    return atomic_write_dir(path, write)


def resolve_checkpoint(path_or_hub_id: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a hub id downloaded (or found in the local
    hub cache) through huggingface_hub."""
    p = Path(path_or_hub_id)
    if p.is_dir():
        if not (p / "config.yaml").is_file():
            raise FileNotFoundError(
                f"{p} is a directory but has no config.yaml: not a glassbox checkpoint"
            )
        return p
    s = str(path_or_hub_id)
    if p.exists() or s.startswith((".", "/")) or s.count("/") != 1:
        raise FileNotFoundError(
            f"no checkpoint directory at {s!r} (and it is not a hub id of the form 'owner/name')"
        )
    local = snapshot_download(repo_id=s, revision=revision, allow_patterns=list(FILES))
    return Path(local)


def read_config(path: str | Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(Path(path) / "config.yaml"), resolve=True)  # type: ignore[return-value]


def load_pretrained(
    path_or_hub_id: str | Path,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> Transformer:
    """Load a checkpoint directory or hub id into a Transformer (eval mode), with
    `model.tokenizer` set when the checkpoint has tokenizer.json."""
    path = resolve_checkpoint(path_or_hub_id, revision)
    config = read_config(path)
    if "model" not in config:
        raise ValueError(f"{path / 'config.yaml'} has no 'model' section")
    cfg = model_config_from_dict(config["model"])
    model = Transformer(cfg)
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path / 'model.safetensors'} does not match its config.yaml: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    tok_path = path / "tokenizer.json"
    if tok_path.is_file():
        model.tokenizer = Tokenizer.from_file(str(tok_path))
    if device is not None:
        model.to(device)
    return model.eval()


def read_metrics(path: str | Path) -> dict[str, Any]:
    f = Path(path) / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}
