"""Checks a checkpoint directory's files before a model is built from them.

Every problem is one `CheckpointError` naming the file, the key or tensor, what was
found and what was expected. Nothing is unpickled: config.yaml is YAML,
model.safetensors is read as its JSON header plus raw bytes, tokenizer.json is JSON.

model.safetensors is checked before any weight is read: the header (length, JSON,
each entry's dtype, shape and byte range, the byte ranges covering the data
exactly), then each tensor's name, shape and dtype against the model built from
config.yaml. A file written by `save_pretrained` carries the SHA-256 of its tensor
bytes in its header metadata (`glassbox.sha256`); where it is there, the bytes are
checked against it, which catches a flipped bit that leaves the tensors finite. It
carries the SHA-256 of the tokenizer.json saved beside it too (`glassbox.tokenizer_sha256`): a tokenizer of
the same size whose ids were reassigned passes every other check and generates
nonsense. Checkpoints saved before these digests load without the check.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from tokenizers import Tokenizer

from glassbox.archs.config import ModelConfig, model_config_from_dict
from glassbox.archs.errors import CheckpointError, ConfigError, one_line
from glassbox.archs.packed_masks import packed_bytes
from glassbox.archs.transformer import Transformer
from glassbox.archs.weight_sparsity import MASK_SUFFIX

# safetensors dtype name -> bytes per element
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # what a floating-point weight may be stored as
INT_DTYPES = {torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL", torch.uint8: "U8"}
DIGEST_KEY = "glassbox.sha256"  # header metadata: SHA-256 of the tensor bytes
TOKENIZER_DIGEST_KEY = "glassbox.tokenizer_sha256"  # and of the tokenizer.json saved with them
MAX_HEADER = 100_000_000  # the safetensors format's own limit on the JSON header
_CHUNK = 1 << 22


# --- config.yaml ---------------------------------------------------------------------


def read_yaml_mapping(file: Path) -> dict[str, Any]:
    """A checkpoint's config.yaml as a plain dict; CheckpointError if it is not a
    non-empty YAML mapping."""
    try:
        cfg = OmegaConf.load(file)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CheckpointError(file, f"is not valid YAML: {e.problem or e}{where}") from None
    except (yaml.YAMLError, UnicodeDecodeError, OmegaConfBaseException) as e:
        raise CheckpointError(file, f"is not valid YAML: {one_line(str(e))[:200]}") from None
    if not isinstance(cfg, DictConfig):
        raise CheckpointError(file, "holds a YAML list, expected a mapping with a model: section")
    if len(cfg) == 0:
        raise CheckpointError(file, "is empty, expected a mapping with a model: section")
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise CheckpointError(file, one_line(str(e))) from None


def checked_model_config(config: dict[str, Any], file: Path) -> ModelConfig:
    """The `model:` section of a checkpoint's config checked against ModelConfig's
    schema and ranges; CheckpointError naming the key."""
    if "model" not in config:
        raise CheckpointError(
            file, f"has no model: section (sections: {', '.join(map(str, config)) or 'none'})"
        )
    section = config["model"]
    if not isinstance(section, dict):
        raise CheckpointError(file, f"model: is a {type(section).__name__}, expected a mapping")
    try:
        cfg = model_config_from_dict(section)
    except ConfigKeyError as e:
        key = f"model.{e.full_key}" if e.full_key else "model"
        raise CheckpointError(file, f"unknown key {key} (not in the model schema)") from None
    except OmegaConfBaseException as e:
        key = f"model.{e.full_key}" if getattr(e, "full_key", None) else "model"
        raise CheckpointError(file, f"{key}: {one_line(str(e).splitlines()[0])}") from None
    except ConfigError as e:
        raise CheckpointError(file, f"{e.key}={e.value!r}: {e.allowed}") from None
    if cfg.vocab_size <= 0:
        raise CheckpointError(
            file, f"model.vocab_size={cfg.vocab_size}: a saved model needs its vocabulary size"
        )
    return cfg


# --- model.safetensors ---------------------------------------------------------------


def _sniff(head: bytes) -> str | None:
    """What a file that is not safetensors looks like it is."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a torch .pt/.ckpt file?)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    return None


def _header_bytes(file: Path) -> tuple[bytes, int]:
    """The JSON header of a safetensors file and the file's size, after checking that
    the file is there, is not another format and is long enough for its header."""
    if not file.is_file():
        raise CheckpointError(file, "is missing: a checkpoint needs its weights")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if size == 0:
            raise CheckpointError(file, "is empty (0 bytes): the write was cut short")
        kind = _sniff(head)
        if kind is not None:
            raise CheckpointError(
                file,
                f"is {kind}, not safetensors; glassbox never unpickles a checkpoint "
                "(load it yourself and write it with archs.save_pretrained)",
            )
        if size < 8:
            raise CheckpointError(file, f"is {size} bytes: too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(
                file,
                f"header length {n} does not fit the file's {size} bytes: truncated, or not safetensors",
            )
        return f.read(n), size


def _parse_header(file: Path, raw: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """(entries, metadata) of a header's JSON, each checked to be a JSON object."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            file, f"header is not valid JSON ({e}): the file is corrupted"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(file, "header is not a JSON object: the file is corrupted")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(file, "header __metadata__ is not a JSON object")
    return header, metadata


def _entry_span(file: Path, name: str, e: Any) -> tuple[int, int]:
    """The byte range of one header entry, checked: its keys, dtype, shape, and a
    range as long as the dtype and shape need."""
    if not (isinstance(e, dict) and {"dtype", "shape", "data_offsets"} <= set(e)):
        raise CheckpointError(
            file, f"tensor {name}: header entry {e!r} lacks dtype, shape or data_offsets"
        )
    dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise CheckpointError(file, f"tensor {name}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CheckpointError(file, f"tensor {name}: shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(file, f"tensor {name}: data_offsets {offsets!r} are malformed")
    nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(
            file,
            f"tensor {name}: {dtype} {shape} needs {nbytes} bytes, its byte range "
            f"{offsets} holds {offsets[1] - offsets[0]}",
        )
    return offsets[0], offsets[1]


def _check_spans(file: Path, spans: list[tuple[int, int, str]], data_len: int) -> None:
    """That the tensors' byte ranges tile the data region: no gap, overlap or excess."""
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise CheckpointError(
                file, f"tensor {name}: starts at byte {begin}, expected {end} (overlap or gap)"
            )
        end = stop
    if end > data_len:
        raise CheckpointError(
            file,
            f"truncated: the header promises {end} bytes of tensor data, the file holds "
            f"{data_len} (a write or copy cut short); copy or export it again",
        )
    if end < data_len:
        raise CheckpointError(
            file, f"{data_len - end} bytes after the last tensor: the file is corrupted"
        )


def read_header(file: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Parse and check a safetensors header without reading the tensors.

    Returns (entries {name: {dtype, shape, data_offsets}}, metadata, data_start): the
    byte ranges are checked to be well-formed and to cover the data region exactly.
    """
    raw, size = _header_bytes(file)
    header, metadata = _parse_header(file, raw)
    spans = [(*_entry_span(file, name, e), name) for name, e in header.items()]
    _check_spans(file, spans, size - 8 - len(raw))
    return header, metadata, 8 + len(raw)


def expected_tensors(
    model: torch.nn.Module,
) -> tuple[dict[str, tuple[list[int], torch.dtype]], list]:
    """{name: (shape, dtype)} of every tensor `model` saves, and the groups of names
    that share one tensor (tied embeddings: the file holds one of them)."""
    state = model.state_dict(keep_vars=True)
    by_id: dict[int, list[str]] = {}
    for name, t in state.items():
        by_id.setdefault(id(t), []).append(name)
    shapes = {name: (list(t.shape), t.dtype) for name, t in state.items()}
    return shapes, [names for names in by_id.values() if len(names) > 1]


def check_tensors(
    file: Path,
    entries: dict[str, dict[str, Any]],
    model: Transformer,
    config_file: Path,
    packed: Mapping[str, list[int]] | None = None,
) -> None:
    """Each tensor's name, shape and dtype in the header `entries` against `model`
    (freshly built from config.yaml, before any weight is read into it). `packed`
    ({weight name: its shape}, archs/packed_masks.py): the weights stored as their kept
    values, their masks as bits."""
    cfg = model.cfg
    expected, tied = expected_tensors(model)
    dims = f"d_model={cfg.d_model}, n_layers={cfg.n_layers}, vocab_size={cfg.vocab_size}"
    unexpected = sorted(set(entries) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            file,
            f"tensor {unexpected[0]}{more} is not in a model of {config_file.name} "
            f"({cfg.ffn.kind}, {dims}): weights of another architecture?",
        )
    optional = {n for group in tied for n in group}
    missing = sorted(n for n in expected if n not in entries and n not in optional)
    missing += [g[0] for g in tied if not any(n in entries for n in g)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            file, f"tensor {missing[0]}{more} is missing; a model of {config_file.name} needs it"
        )
    for name, e in entries.items():
        shape, dtype = expected[name]
        if packed and (name in packed or name.removesuffix(MASK_SUFFIX) in packed):
            _check_packed(file, name, e, packed)
            continue
        if e["shape"] != shape:
            raise CheckpointError(
                file,
                f"tensor {name} has shape {e['shape']}, {config_file.name} ({dims}) "
                f"expects {shape}",
            )
        if dtype.is_floating_point:
            if e["dtype"] not in FLOAT_DTYPES:
                raise CheckpointError(
                    file,
                    f"tensor {name} is {e['dtype']}, expected a float ({', '.join(FLOAT_DTYPES)})",
                )
        elif e["dtype"] != INT_DTYPES.get(dtype, e["dtype"]):
            raise CheckpointError(
                file, f"tensor {name} is {e['dtype']}, expected {INT_DTYPES[dtype]}"
            )


def _check_packed(
    file: Path, name: str, e: dict[str, Any], packed: Mapping[str, list[int]]
) -> None:
    """One packed tensor's header entry: a weight's kept values (1-D floats, at most
    its n entries) or its mask's bits (1-D uint8, ceil(n / 8) bytes)."""
    shape, dtype = e["shape"], e["dtype"]
    if name in packed:
        n = math.prod(packed[name])
        if not (len(shape) == 1 and shape[0] <= n and dtype in FLOAT_DTYPES):
            raise CheckpointError(
                file,
                f"tensor {name} is stored packed: expected at most {n} float values in "
                f"one dimension, the header says {dtype} {shape}",
            )
        return
    n_bytes = packed_bytes(math.prod(packed[name.removesuffix(MASK_SUFFIX)]))
    if not (shape == [n_bytes] and dtype == "U8"):
        raise CheckpointError(
            file,
            f"tensor {name} is a packed mask: expected U8 [{n_bytes}] (one bit per entry), "
            f"the header says {dtype} {shape}",
        )


def data_digest(file: Path, data_start: int) -> str:
    """SHA-256 (hex) of a safetensors file's tensor bytes (everything after the header)."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        f.seek(data_start)
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_digest(file: Path, metadata: dict[str, str], data_start: int) -> None:
    want = metadata.get(DIGEST_KEY)
    if want is not None and data_digest(file, data_start) != want:
        raise CheckpointError(
            file,
            "tensor bytes do not match the SHA-256 recorded when it was saved: the file "
            "is corrupted (a flipped bit or a partial copy); copy or export it again",
        )


def file_digest(file: Path) -> str:
    """SHA-256 (hex) of a whole file."""
    return data_digest(file, 0)


def add_digest(file: Path, extra: dict[str, str] | None = None) -> None:
    """Rewrite a safetensors file's header with the SHA-256 of its tensor bytes in the
    metadata (`glassbox.sha256`), and the `extra` metadata (the tokenizer's digest).
    The tensor bytes and their offsets are unchanged."""
    entries, metadata, start = read_header(file)
    metadata = {**metadata, **(extra or {}), DIGEST_KEY: data_digest(file, start)}
    header = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format aligns the data to 8 bytes
    tmp = file.with_name(file.name + ".digest")
    with open(file, "rb") as src, open(tmp, "wb") as dst:
        dst.write(struct.pack("<Q", len(header)) + header)
        src.seek(start)
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
    os.replace(tmp, file)


def check_finite(model: torch.nn.Module, file: Path) -> None:
    """Every floating-point tensor loaded from `file` is finite."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                file,
                f"tensor {name} holds {bad} non-finite values (NaN or Inf): the file is "
                "corrupted, or the run that wrote it had diverged",
            )


# --- tokenizer.json ------------------------------------------------------------------


def checked_tokenizer(file: Path, cfg: ModelConfig, digest: str | None = None) -> Tokenizer:
    """tokenizer.json parsed, with every token id inside the model's embedding, and
    its bytes matching `digest` (the SHA-256 recorded with the weights) when given."""
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise CheckpointError(
            file, f"is not a tokenizers JSON file: {one_line(str(e))[:200]}"
        ) from None
    vocab = tok.get_vocab(with_added_tokens=True)
    top = max(vocab.values(), default=-1) + 1
    if top > cfg.vocab_size:
        raise CheckpointError(
            file,
            f"has {len(vocab)} tokens (ids up to {top - 1}), the model's embedding has "
            f"{cfg.vocab_size} rows (model.vocab_size): a tokenizer of another model; use "
            "the tokenizer.json saved with these weights",
        )
    if digest is not None and file_digest(file) != digest:
        raise CheckpointError(
            file,
            "does not match the SHA-256 recorded with the weights when they were saved: a "
            "tokenizer of another model, or this one edited (ids reassigned); use the "
            "tokenizer.json saved with these weights",
        )
    return tok


def read_json(file: Path) -> dict[str, Any]:
    """A JSON object file of a checkpoint (metrics.json); {} when absent."""
    if not file.is_file():
        return {}
    try:
        out = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(file, f"is not valid JSON ({e})") from None
    if not isinstance(out, dict):
        raise CheckpointError(file, f"holds a JSON {type(out).__name__}, expected an object")
    return out
