"""Checkpoint directories: config.yaml, model.safetensors, tokenizer.json,
metrics.json, README.md (model card). Nothing in them is unpickled.

Loading checks every file before the model is built (archs/checkpoint_checks.py):
a bad file is one CheckpointError naming it and what is wrong.

Writes are atomic at the directory level (archs/writes.py): the new checkpoint is
written under a temporary name beside the target and renamed into place, and an existing good
checkpoint is only removed after the new one is complete. A crash at any moment
leaves either the old checkpoint or the new one at the target path (or, in the
instant between the two renames, the old one under `.<name>.old-*` beside it).

Where a checkpoint comes from (`resolve_checkpoint`, read by `load_pretrained`):

    "glassbox/<name>"    a checkpoint shipped with the package: <shipped_dir()>/<name>/,
                         found offline. shipped_dir() is the `checkpoints/` folder
                         beside the `archs/` package: the repository's top-level
                         checkpoints/ in a source tree or editable install, and
                         glassbox/checkpoints/ in an installed wheel, which carries the
                         folder as package data (pyproject.toml). GLASSBOX_CHECKPOINTS
                         (an environment variable) points it at another folder.
    a local directory    used as it is (config.yaml in it).
    "owner/name"         a hub repository, through huggingface_hub's snapshot_download
                         (its cache, HF_HUB_OFFLINE and HF_HUB_CACHE apply).

`save_pretrained(model, path, push_to_hub="owner/name")` writes the directory, then
uploads it (HfApi.create_repo and upload_folder); `load_pretrained("owner/name")`
reads it back.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from omegaconf import OmegaConf
from safetensors.torch import load_file, load_model, save_file, save_model

from glassbox.archs.checkpoint_checks import (
    DTYPE_BYTES,
    TOKENIZER_DIGEST_KEY,
    add_digest,
    check_digest,
    check_finite,
    check_tensors,
    checked_model_config,
    checked_tokenizer,
    expected_tensors,
    file_digest,
    read_header,
    read_json,
    read_yaml_mapping,
)
from glassbox.archs.config import ModelConfig
from glassbox.archs.errors import CheckpointError, one_line
from glassbox.archs.ffn import FFN_KINDS
from glassbox.archs.packed_masks import (
    pack_masked,
    packed_shapes,
    unpack_masked,
)
from glassbox.archs.transformer import Transformer
from glassbox.archs.weight_sparsity import MASK_SUFFIX
from glassbox.archs.writes import atomic_write_dir

CONFIG = "config.yaml"  # a checkpoint's config (a training run directory's too: training.train)
CARD = "README.md"  # the model card
FILES = (CONFIG, "model.safetensors", "tokenizer.json", "metrics.json", CARD)
SHIPPED_PREFIX = "glassbox/"  # "glassbox/<name>": a checkpoint shipped with the package
SHIPPED_ENV = "GLASSBOX_CHECKPOINTS"  # another folder of shipped checkpoints


def model_card(title: str, intro: str, code: str, sections: Sequence[tuple[str, str]]) -> str:
    """A checkpoint's README.md: `# title`, the intro paragraph, a Python code block,
    then one `## heading` and its Markdown body per section. Every card is written by
    it: save_pretrained's (`_model_card`) and the shipped checkpoints' (glassbox.ship)."""
    parts = [f"# {title}\n", f"{intro}\n", f"```python\n{code}\n```\n"]
    parts += [f"## {heading}\n\n{body}\n" for heading, body in sections]
    return "\n".join(parts)


def _model_card(cfg: ModelConfig, n_params: int, n_active: int, metrics: dict[str, Any]) -> str:
    """save_pretrained's card: the model's shape and its metrics.json, flat."""
    ffn = FFN_KINDS[cfg.ffn.kind].label(cfg.ffn)  # the kind's own words (archs/ffn.py)
    rows = "\n".join(
        f"| `{k}` | {v:.4g} |" if isinstance(v, float) else f"| `{k}` | {v} |"
        for k, v in sorted(flatten(metrics).items())
    )
    intro = (
        f"A glassbox model: decoder-only transformer, {cfg.n_layers} layers, "
        f"d_model {cfg.d_model},\n{cfg.n_heads} heads ({cfg.kv_heads} key/value), "
        f"feed-forward slot `{ffn}`,\nvocabulary {cfg.vocab_size}, context {cfg.max_seq_len}.\n"
        f"Parameters: {n_params:,} total, {n_active:,} active per token."
    )
    code = """from glassbox import archs
model = archs.load_pretrained("path/to/this/dir")
logits, cache = model.run_with_cache(tokens, names_filter="blocks.*.hook_resid_post")"""
    table = f"| metric | value |\n|---|---|\n{rows if rows else '| (none recorded) | |'}"
    return model_card(cfg.name, intro, code, [("Metrics", table)])


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"skills": {"copy": {"accuracy": 1}}} -> {"skills.copy.accuracy": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def save_pretrained(
    model: Transformer,
    path: str | Path,
    tokenizer=None,
    metrics: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    push_to_hub: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    hub_api: HfApi | None = None,
) -> Path:
    """Write `model` as a checkpoint directory at `path` (atomically), and upload it to
    the hub repository `push_to_hub` ("owner/name") when given.

    tokenizer: a tokenizers.Tokenizer (defaults to model.tokenizer);
    metrics: nested dict written to metrics.json and the model card;
    extra_config: more sections for config.yaml (data, optim, ...) beside `model`;
    push_to_hub, private, commit_message: the upload (`push_checkpoint`); hub_api: the
    huggingface_hub.HfApi that uploads (default HfApi(): token and endpoint from the
    environment). Returns the local directory.
    """
    cfg: ModelConfig = model.cfg
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    metrics = metrics or {}
    config = {"model": OmegaConf.to_container(OmegaConf.structured(cfg))}
    config.update(extra_config or {})

    def write(tmp: Path) -> None:
        OmegaConf.save(OmegaConf.create(config), tmp / CONFIG)
        digest = None
        if tokenizer is not None:
            tokenizer.save(str(tmp / "tokenizer.json"))
            digest = file_digest(tmp / "tokenizer.json")
        write_weights(model, tmp / "model.safetensors", digest)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / CARD).write_text(
            _model_card(cfg, model.num_params(), model.num_params(active=True), metrics)
        )

    out = atomic_write_dir(path, write)
    if push_to_hub is not None:
        push_checkpoint(out, push_to_hub, private, commit_message, hub_api)
    return out


def write_weights(model: Transformer, file: Path, tokenizer_digest: str | None = None) -> None:
    """A checkpoint's model.safetensors: the model's state dict in its dtypes, each
    tied tensor once, a weight-sparse model's pruned matrices packed
    (archs/packed_masks.py), and in the header the SHA-256 of the tensor bytes (and
    `tokenizer_digest`, the tokenizer.json saved beside them)."""
    _save_weights(model, file)
    add_digest(file, {TOKENIZER_DIGEST_KEY: tokenizer_digest} if tokenizer_digest else {})


def _save_weights(model: Transformer, file: Path) -> None:
    state, packed = pack_masked(model.state_dict())
    if not packed:  # safetensors' own writer, as every dense checkpoint was written
        save_model(model, str(file), metadata={"format": "pt"})
        return
    metadata, names = {"format": "pt", **packed}, packed_shapes(packed, file)
    for group in expected_tensors(model)[1]:  # tied: one name holds the tensor, the packed one
        keep = next((n for n in group if n in names), group[0])
        for name in group:
            if name != keep:
                metadata[name] = keep
                del state[name]
    save_file({k: v.contiguous() for k, v in state.items()}, str(file), metadata=metadata)


def weights_bytes(file: str | Path) -> int:
    """The bytes a model.safetensors' tensors take in memory, each at its full shape
    (a packed matrix as its dense values and its mask as bools): what the file would
    hold unpacked. Read from the header alone; 0 for a missing file."""
    file = Path(file)
    if not file.is_file():
        return 0
    entries, metadata, _ = read_header(file)
    packed = packed_shapes(metadata, file)
    total = 0
    for name, e in entries.items():
        begin, end = e["data_offsets"]
        if name in packed:  # the values' dtype, at the matrix's shape
            total += math.prod(packed[name]) * DTYPE_BYTES[e["dtype"]]
        elif name.endswith(MASK_SUFFIX) and name[: -len(MASK_SUFFIX)] in packed:
            total += math.prod(packed[name[: -len(MASK_SUFFIX)]])  # one bool an entry
        else:
            total += end - begin
    return total


def _tied_names(model: Transformer) -> set[str]:
    """Every name of a tensor the model shares under several names."""
    return {n for group in expected_tensors(model)[1] for n in group}


def push_checkpoint(
    path: str | Path,
    repo_id: str,
    private: bool | None = None,
    commit_message: str | None = None,
    hub_api: HfApi | None = None,
) -> str:
    """Upload the checkpoint directory `path` to the hub model repository `repo_id`
    ("owner/name"), creating it when it does not exist. Only the checkpoint's files
    (FILES) go up. Returns repo_id; CheckpointError (one line) when the hub refuses
    or cannot be reached."""
    path = Path(path)
    if not _is_hub_id(repo_id) or repo_id.startswith(SHIPPED_PREFIX):
        raise CheckpointError(
            repo_id,
            "push_to_hub needs a hub repository id 'owner/name' (not 'glassbox/...', the "
            "names of the shipped checkpoints)",
        )
    if not (path / CONFIG).is_file():
        raise CheckpointError(path, "has no config.yaml: write it with save_pretrained first")
    api = hub_api if hub_api is not None else HfApi()
    message = commit_message or f"glassbox checkpoint {read_config(path)['model'].get('name', '')}"
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(path),
            repo_type="model",
            commit_message=message.strip(),
            allow_patterns=[f for f in FILES if (path / f).is_file()],
        )
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one line
        raise CheckpointError(
            repo_id,
            f"upload failed ({type(e).__name__}: {one_line(str(e))[:160]}); the checkpoint "
            f"is saved at {path}: push it again with archs.push_checkpoint when the hub "
            "is reachable (a token: huggingface-cli login or HF_TOKEN)",
        ) from None
    return repo_id


def _is_hub_id(s: str) -> bool:
    return not s.startswith((".", "/")) and s.count("/") == 1 and all(s.split("/"))


def shipped_dir() -> Path:
    """The folder of the shipped checkpoints: $GLASSBOX_CHECKPOINTS when set, else the
    `checkpoints/` folder beside the `archs/` package (the repository's checkpoints/
    in a source tree, glassbox/checkpoints/ in an installed wheel)."""
    env = os.environ.get(SHIPPED_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_checkpoints() -> list[str]:
    """Names of the shipped checkpoints (each loads as "glassbox/<name>"), sorted."""
    root = shipped_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).is_file())


def _check_shipped_env(root: Path) -> None:
    """CheckpointError naming GLASSBOX_CHECKPOINTS when it is set to something that
    cannot hold shipped checkpoints."""
    env = os.environ.get(SHIPPED_ENV)
    if not env or root.is_dir():
        return
    what = "is a file" if root.exists() else "does not exist"
    raise CheckpointError(
        f"{SHIPPED_ENV}={env}",
        f"{what}: the variable names the folder of shipped checkpoints (a folder with "
        "config.yaml per checkpoint); point it at one, or unset it for the package's own",
    )


def _short(s: str) -> str:
    return s if len(s) <= 80 else f"{s[:60]}...({len(s)} characters)"


def _shipped(name: str) -> Path:
    root = shipped_dir()
    _check_shipped_env(root)
    path = root / name
    parts = name.split("/")  # a family may nest its checkpoints: glassbox/code/dense
    if all(p and not p.startswith(".") for p in parts) and (path / CONFIG).is_file():
        return path
    names = shipped_checkpoints()
    listed = ", ".join(SHIPPED_PREFIX + n for n in names) if names else "none yet"
    raise CheckpointError(
        SHIPPED_PREFIX + name,
        f"is not a shipped checkpoint (shipped in {root}: {listed}); pass a checkpoint "
        "directory or a hub id 'owner/name' instead",
    )


def resolve_checkpoint(path_or_hub_id: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory; "glassbox/<name>", a shipped checkpoint
    (shipped_dir()/<name>, offline); or a hub id downloaded (or found in the local hub
    cache) through huggingface_hub. FileNotFoundError for a path that does not exist;
    CheckpointError for a shipped name that is not there (listing the shipped names) or
    a hub id that cannot be fetched, or a name longer than a path can be."""
    try:
        return _resolve(Path(path_or_hub_id), str(path_or_hub_id), revision)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        raise CheckpointError(
            _short(str(path_or_hub_id)),
            "is longer than a path can be (255 bytes a name, 4096 a path): not a "
            "checkpoint; pass a checkpoint directory, a hub id or glassbox/<name>",
        ) from None


def _resolve(p: Path, s: str, revision: str | None) -> Path:
    if s.startswith(SHIPPED_PREFIX) and not (p / CONFIG).is_file():
        # a shipped name, unless a local checkpoint directory has the same path
        return _shipped(s[len(SHIPPED_PREFIX) :])
    if p.is_dir():
        if not (p / CONFIG).is_file():
            raise FileNotFoundError(
                f"{p} is a directory but has no config.yaml: not a glassbox checkpoint"
            )
        return p
    if p.is_file():
        raise CheckpointError(
            p, f"is a file; a checkpoint is the directory holding config.yaml ({p.parent}?)"
        )
    if not _is_hub_id(s):
        raise FileNotFoundError(
            f"no checkpoint directory at {s!r} (and it is not a hub id of the form 'owner/name')"
        )
    try:
        local = Path(snapshot_download(repo_id=s, revision=revision, allow_patterns=list(FILES)))
    except Exception as e:  # noqa: BLE001 - every hub failure becomes the one line below
        raise CheckpointError(s, f"{_hub_failure(e, revision)}; {_LOCAL_HINT}") from None
    if not (local / CONFIG).is_file():
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
    return read_yaml_mapping(Path(path) / CONFIG)


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
    SHA-256), tokenizer.json against the embedding (and its SHA-256, recorded with the
    weights). A problem is one CheckpointError naming the file.
    """
    path = resolve_checkpoint(path_or_hub_id, revision)
    config_file, weights, tok_file = (
        path / CONFIG,
        path / "model.safetensors",
        path / "tokenizer.json",
    )
    cfg = checked_model_config(read_yaml_mapping(config_file), config_file)
    entries, metadata, data_start = read_header(weights)
    tok_digest = metadata.get(TOKENIZER_DIGEST_KEY)
    tokenizer = checked_tokenizer(tok_file, cfg, tok_digest) if tok_file.is_file() else None
    model = Transformer(cfg)
    packed = packed_shapes(metadata, weights)
    for name in packed:
        if name not in entries or name + MASK_SUFFIX not in entries:
            raise CheckpointError(weights, f"tensor {name} is listed as packed but not stored")
    check_tensors(weights, entries, model, config_file, packed)
    check_digest(weights, metadata, data_start)
    try:
        if packed:
            state = unpack_masked(load_file(str(weights)), packed, weights)
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [n for n in missing if n not in _tied_names(model)]
        else:
            missing, unexpected = load_model(model, str(weights), strict=False)
    except CheckpointError:
        raise
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
