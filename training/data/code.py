"""A Python-code corpus from the machine's own Python, with ground truth on every token.

    data:
      source: code
      code: {paths: ["stdlib:", "site:"], vocab_size: 2048, block_size: 256}

What is read (`data.code.paths`): "stdlib:" is the standard library's source folder
(`sysconfig`'s stdlib, site-packages left out), "stdlib:NAME" its package NAME; "site:"
the .py files of the running interpreter's installed packages (sysconfig's purelib and
platlib; dist-info, egg-info and __pycache__ left out), "site:NAME" one of them; any
other entry is a folder. A document is one file. The top-level package (or module)
a file belongs to is its domain, and `exclude` leaves packages out by name.

What is kept, in the order of `paths` and of sorted paths within an entry: files no
larger than `max_file_bytes`, decodable by their PEP 263 encoding, whose content was
not seen before (sha256 of the bytes: a vendored copy is read once), with line ends
normalised to \\n, that this Python parses (`ast.parse`; a file that ast takes and
tokenize does not gets -1 labels). What is left out is counted by reason in the manifest.

Splits: whole packages. With `split_depth` 2 the unit held out is a subpackage (torch.nn,
email.mime; a package's own top-level files are one more unit), so one large package
cannot take a whole split (stdlib plus numpy, sympy and torch at depth 1 and seed 0:
train 33.4M tokens, val 63K, test 50K). A package (or subpackage) is val when u < val_share, test when u < val_share +
test_share, else train, where u in [0, 1) is read off sha256("<seed>:<package>"): the
choice of one package never depends on which others are installed, so two machines
with different packages agree on every package they share.

The manifest (`corpus_manifest`, saved in the cache entry's meta.json and returned by
`build_code_datasets` as `SuiteData`'s companion `manifest.json`) records the Python
version, every package with its source, split, file and character counts, and its
distribution and version (importlib.metadata; the Python version for the standard
library), and what was left out: enough to rebuild the same corpus elsewhere.

Tokenizer: the byte-level BPE of training.data.text (`train_bpe`, `vocab_size` 2048 by
default, the suite's special tokens first), trained on a seeded sample of train files
up to `tokenizer_train_chars` characters (or read from `tokenizer_path`).

Rows: as training.data.text packs them (documents joined with <eos>, rows of
`block_size` tokens opening with <bos>, `domain` the package id per token), and
`features` the ground truth of training.data.code_labels per token (-1 on <bos> and
<eos>), on val and test; on train only with `label_train` (else no columns: labels
cost 40 bytes a token and the time of Python's parser, and no score fits on train).

Snapshot (`snapshot`): the documents of every split, the manifest and the tokenizer,
as one xz-compressed JSON file (`write_snapshot`; stdlib, numpy, sympy and torch: 98 MB
of JSON, 14.6 MB compressed). A config naming one reads it instead of this machine's
files, and builds rows token for token as the machine that wrote it did; the config's
keys that choose the documents must equal the snapshot's (one line says which does
not), and the manifest records the snapshot's sha256 beside the Python and packages
it was read from. The size ladder's GPU script carries one (benchmarks/scale_gpu.sh),
so that its L rung trains and is scored on the corpus the CPU rungs read.

Without one, on a GPU machine (64 MiB travels): carry the tokenizer (tokenizer.json, about 100 KB,
trained here) and the manifest, not the data. There, `glassbox train` with
`data.code.tokenizer_path` set builds the corpus from that machine's own standard
library and installed packages (the split by hashed name keeps every shared package on
the same side) and records its manifest; the manifests of the two machines say what
differed. The train split needs no labels, so the build there is reading, parsing to
filter, and Rust's BPE (`python -m glassbox.training.data.code --count` times it).
Where the corpus must be the same token for token, carry token ids instead: uint16 ids
(vocab 2048) are 2 bytes a token, so 64 MiB carries about 32M tokens.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import io
import json
import random
import sys
import sysconfig
import time
import tokenize
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer

from glassbox.archs.errors import ConfigError
from glassbox.training.data.cache import config_hash, load_entry, save_entry
from glassbox.training.data.code_labels import (
    FEATURE_KINDS,
    FEATURE_NAMES,
    FEATURES,
    label_source,
    normalise_source,
)
from glassbox.training.data.config import CodeConfig, DataConfig
from glassbox.training.data.suite import SuiteData
from glassbox.training.data.text import PACK_BATCH, ROW_FEATURES, check_specials, train_bpe
from glassbox.training.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS

STDLIB, SITE = "stdlib:", "site:"
SKIP_PARTS = ("site-packages", "dist-packages", "__pycache__")
SPLIT_NAMES = ("train", "val", "test")
CODE_MANIFEST = "corpus_manifest.json"  # the manifest beside a code run's exported checkpoint


def check_code_config(c: CodeConfig, prefix: str = "data.code") -> None:
    """Raise ConfigError (one line) for an impossible value of `data.code`."""
    if not c.paths:
        raise ConfigError(f"{prefix}.paths", list(c.paths), 'e.g. ["stdlib:", "site:"] or folders')
    smallest = 256 + len(SPECIAL_TOKENS)
    if not c.tokenizer_path and c.vocab_size < smallest:
        raise ConfigError(f"{prefix}.vocab_size", c.vocab_size, f"must be >= {smallest}")
    if c.block_size < 2:
        raise ConfigError(f"{prefix}.block_size", c.block_size, "must be >= 2")
    for key in ("max_file_bytes", "tokenizer_train_chars", "split_depth"):
        if getattr(c, key) <= 0:
            raise ConfigError(f"{prefix}.{key}", getattr(c, key), "must be a positive integer")
    for key in ("val_share", "test_share"):
        if not 0 < getattr(c, key) < 1:
            raise ConfigError(f"{prefix}.{key}", getattr(c, key), "a fraction in (0, 1)")
    if c.val_share + c.test_share >= 1:
        raise ConfigError(f"{prefix}.test_share", c.test_share, "val_share + test_share < 1")
    if c.snapshot and not Path(c.snapshot).is_file():
        raise ConfigError(f"{prefix}.snapshot", c.snapshot, "no such file")


# ------------------------------------------------------------------ finding files


def site_dirs() -> list[Path]:
    """The running interpreter's site-packages folders (purelib, platlib), once each."""
    paths = sysconfig.get_paths()
    out: list[Path] = []
    for key in ("purelib", "platlib"):
        p = Path(paths[key])
        if p.is_dir() and p.resolve() not in [q.resolve() for q in out]:
            out.append(p)
    return out


def _roots(entry: str) -> list[tuple[Path, Path, str]]:
    """(root, path, source) for one `paths` entry: packages are the top-level parts
    of files' paths under root; source is stdlib | site | the folder."""
    if entry.startswith(STDLIB) or entry.startswith(SITE):
        src = "stdlib" if entry.startswith(STDLIB) else "site"
        name = entry.split(":", 1)[1].strip("/")
        roots = [Path(sysconfig.get_paths()["stdlib"])] if src == "stdlib" else site_dirs()
        out = []
        for root in roots:
            p = root / name if name else root
            if not name or p.is_dir():
                out.append((root, p, src))
            elif p.with_suffix(".py").is_file():
                out.append((root, p.with_suffix(".py"), src))
        if not out:
            where = ", ".join(str(r) for r in roots)
            raise ConfigError(
                "data.code.paths", entry, f"{where} has no package or module {name!r}"
            )
        return out
    p = Path(entry)
    if not p.exists():
        raise ConfigError("data.code.paths", entry, "stdlib:, site:, or an existing folder")
    return [(p.parent if p.is_file() else p, p, str(p))]


def _skipped(rel: tuple[str, ...], under_site: bool) -> bool:
    if set(rel) & set(SKIP_PARTS):
        return True
    top = rel[0]
    return under_site and (top.endswith((".dist-info", ".egg-info")) or not top.isidentifier())


def find_files(
    paths: list[str], exclude: list[str] = (), depth: int = 1
) -> list[tuple[Path, str, str]]:
    """(file, package, source) of every .py file `paths` names, in their order (sorted
    within an entry), packages in `exclude` left out. The package is the file's first
    `depth` folders below its root, dotted (depth 2: "torch/nn/modules/linear.py" is
    torch.nn, "torch/functional.py" torch), or the module's name for a top-level file."""
    out = []
    for entry in paths:
        for root, p, src in _roots(entry):
            files = [p] if p.is_file() else sorted(p.rglob("*.py"))
            for f in files:
                rel = f.relative_to(root).parts
                top = rel[0] if len(rel) > 1 else f.stem
                package = ".".join(rel[: min(depth, len(rel) - 1)]) or f.stem
                if {top, package} & set(exclude) or _skipped(rel[:-1] + (top,), src == "site"):
                    continue
                if f.is_file():
                    out.append((f, package, src))
    return out


def package_split(package: str, seed: int, val_share: float, test_share: float) -> str:
    """train | val | test for a package, from sha256("<seed>:<package>") alone."""
    digest = hashlib.sha256(f"{seed}:{package}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if u < val_share else "test" if u < val_share + test_share else "train"


def compiles(text: str) -> bool:
    """Whether this Python parses `text` (ast, in C: the fast filter of every file)."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences in old files
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def read_source(raw: bytes) -> str | None:
    """The text of a source file by its PEP 263 encoding, line ends normalised; None if
    it does not decode."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return normalise_source(raw.decode(encoding))
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return None


# ------------------------------------------------------------------ the corpus


@dataclass
class Corpus:
    """Documents per split ({"text": [...], "domain": [...]}) and the manifest."""

    docs: dict[str, dict[str, list[str]]]
    manifest: dict = field(default_factory=dict)


def load_corpus(c: CodeConfig, seed: int) -> Corpus:
    """Read, filter, deduplicate and split the files `c.paths` names (see the module
    docstring); what was left out is counted in manifest["skipped"]. With `c.snapshot`:
    its documents and manifest instead."""
    if c.snapshot:
        return read_snapshot(c, seed)[0]
    seen: set[bytes] = set()
    skipped: Counter[str] = Counter()
    packages: dict[str, dict] = {}
    docs: dict[str, dict[str, list[str]]] = {k: {"text": [], "domain": []} for k in SPLIT_NAMES}
    for f, package, src in find_files(list(c.paths), list(c.exclude), c.split_depth):
        raw = f.read_bytes()
        digest = hashlib.sha256(raw).digest()
        text = None if len(raw) > c.max_file_bytes or digest in seen else read_source(raw)
        reason = (
            "too_large" if len(raw) > c.max_file_bytes
            else "duplicate" if digest in seen
            else "undecodable" if text is None
            else "empty" if not text.strip()
            else "unparsable" if not compiles(text)
            else ""
        )  # fmt: skip
        seen.add(digest)
        if reason:
            skipped[reason] += 1
            continue
        split = package_split(package, seed, c.val_share, c.test_share)
        info = packages.setdefault(package, {"source": src, "split": split, "files": 0, "chars": 0})
        info["files"] += 1
        info["chars"] += len(text)
        docs[split]["text"].append(text)
        docs[split]["domain"].append(package)
    return Corpus(docs, _manifest(c, seed, packages, skipped))


def _manifest(c: CodeConfig, seed: int, packages: dict[str, dict], skipped: Counter) -> dict:
    """What a run needs to rebuild its corpus: the Python, each package's split, counts,
    distribution and version, and the files left out by reason."""
    python = ".".join(map(str, sys.version_info[:3]))
    owners = importlib.metadata.packages_distributions()
    for name, info in packages.items():
        if info["source"] == "stdlib":
            info.update(distribution="python", version=python)
            continue
        dists = sorted(set(owners.get(name.split(".")[0], [])))
        info["distribution"] = ",".join(dists)
        info["version"] = ",".join(_version(d) for d in dists)
    splits = {k: sorted(n for n, i in packages.items() if i["split"] == k) for k in SPLIT_NAMES}
    return {
        "python": python,
        "implementation": sys.implementation.name,
        "seed": seed,
        "config": asdict(c),
        "packages": dict(sorted(packages.items())),
        "splits": splits,
        "chars": {k: sum(packages[n]["chars"] for n in names) for k, names in splits.items()},
        "skipped": dict(sorted(skipped.items())),
    }


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def tokenizer_sample(docs: dict[str, list[str]], n_chars: int, seed: int) -> Iterator[str]:
    """Train files in a seeded order until `n_chars` characters have been given."""
    order = list(range(len(docs["text"])))
    random.Random(f"{seed}:tokenizer").shuffle(order)
    given = 0
    for i in order:
        if given >= n_chars:
            return
        given += len(docs["text"][i])
        yield docs["text"][i]


def code_tokenizer(c: CodeConfig, corpus: Corpus, seed: int) -> Tokenizer:
    """`tokenizer_path`'s tokenizer, else the snapshot's, else a byte-level BPE trained
    on the train split."""
    if c.tokenizer_path:
        tok = Tokenizer.from_file(c.tokenizer_path)
        check_specials(tok, c.tokenizer_path, "data.code.tokenizer_path")
        return tok
    if c.snapshot:
        return read_snapshot(c, seed)[1]
    return train_bpe(
        tokenizer_sample(corpus.docs["train"], c.tokenizer_train_chars, seed), c.vocab_size
    )


# ------------------------------------------------------------------ rows


class CodePacker:
    """The batched map from documents to packed rows with ground truth (picklable)."""

    def __init__(self, tokenizer: Tokenizer, block_size: int, domains: list[str], labels: bool):
        self.tok = Tokenizer.from_str(tokenizer.to_str())  # "<eos>" in a file is text
        self.tok.encode_special_tokens = True
        self.step = block_size - 1
        vocab = tokenizer.get_vocab()
        self.bos, self.eos = vocab[BOS], vocab[EOS]
        self.domain_id = {d: i for i, d in enumerate(domains)}
        self.labels = labels

    def __call__(self, batch: dict) -> dict:
        ids: list[int] = []
        domains: list[int] = []
        feats: list[np.ndarray] = []
        none = np.full((1, len(FEATURES)), -1, dtype=np.int32)  # <bos>, <eos>
        encs = self.tok.encode_batch(batch["text"], add_special_tokens=False)
        for text, enc, domain in zip(batch["text"], encs, batch["domain"]):
            ids += [*enc.ids, self.eos]
            domains += [self.domain_id[domain]] * (len(enc.ids) + 1)
            if self.labels:  # (a file ast takes but tokenize does not: -1, never seen yet)
                lab = label_source(text)
                rows = lab.per_token(enc.offsets) if lab is not None else none[[0] * len(enc.ids)]
                feats += [rows, none]
        starts = range(0, len(ids), self.step)
        blocks = [[self.bos, *ids[i : i + self.step]] for i in starts]
        masks = [[0] + [1] * (len(b) - 1) for b in blocks]
        if self.labels:
            rows = np.concatenate(feats).tolist()
            features = [[none[0].tolist(), *rows[i : i + self.step]] for i in starts]
        else:
            features = [[[]] * len(b) for b in blocks]
        return {
            "input_ids": blocks,
            "loss_mask": masks,
            "answer_mask": masks,
            "skill": [[-1] * len(b) for b in blocks],
            "features": features,
            "example_skill": [-1] * len(blocks),
            "domain": [[-1, *domains[i : i + self.step]] for i in starts],
        }


def _fingerprint(c: CodeConfig) -> list:
    """Each file's path, size and mtime (or the snapshot's content), and the content of
    a given tokenizer."""
    out: list = (
        [_sha256(Path(c.snapshot))]
        if c.snapshot
        else [
            [str(f), f.stat().st_size, f.stat().st_mtime_ns]
            for f, _, _ in find_files(list(c.paths), list(c.exclude), c.split_depth)
        ]
    )
    if c.tokenizer_path:
        out.append(hashlib.sha256(Path(c.tokenizer_path).read_bytes()).hexdigest())
    return out


def _suite(splits, tok: Tokenizer, domains: list[str]) -> SuiteData:
    return SuiteData(
        splits, tok, [], list(FEATURE_NAMES), tok.token_to_id(PAD), list(FEATURE_KINDS), domains
    )


def build_code_datasets(cfg: DataConfig) -> SuiteData:
    """train / val / test of packed rows of the corpus `cfg.code` names, cached under
    cache_dir/code-<hash of the config and the files' paths, sizes and times>; the
    manifest is in that entry's meta.json (`code_manifest`)."""
    c = cfg.code
    path = _entry(cfg)
    hit = load_entry(path)
    if hit is not None:
        return _suite(hit[0], hit[1], hit[2]["domain_names"])
    corpus = load_corpus(c, cfg.seed)
    for k, key in (("train", "val_share"), ("val", "val_share"), ("test", "test_share")):
        if not corpus.docs[k]["text"]:
            n = len(corpus.manifest["packages"])
            raise ConfigError(
                f"data.code.{key}", getattr(c, key),
                f"no package of the {n} read fell in {k} at seed {cfg.seed} (more packages, "
                "another data.seed, or other shares)",
            )  # fmt: skip
    domains = sorted(corpus.manifest["packages"])
    tok = code_tokenizer(c, corpus, cfg.seed)
    splits = DatasetDict(
        {
            k: Dataset.from_dict(corpus.docs[k]).map(
                CodePacker(tok, c.block_size, domains, labels=k != "train" or c.label_train),
                batched=True,
                batch_size=PACK_BATCH,
                remove_columns=["text", "domain"],
                features=ROW_FEATURES,
            )
            for k in SPLIT_NAMES
        }
    )
    meta = {"config": asdict(cfg), "domain_names": domains, "manifest": corpus.manifest}
    save_entry(path, splits, tok, meta)
    hit = load_entry(path)  # serve the saved copy: memory-mapped
    assert hit is not None
    return _suite(hit[0], tok, domains)


def _entry(cfg: DataConfig) -> Path:
    """The cache entry of the corpus `cfg` names (its config and its files' fingerprint)."""
    return Path(cfg.cache_dir) / f"code-{config_hash(cfg, extra=_fingerprint(cfg.code))}"


def code_manifest(cfg: DataConfig) -> dict:
    """The manifest of the corpus `cfg.code` names: its cache entry's meta.json alone
    (the corpus is built first where it is not cached)."""
    meta = _entry(cfg) / "meta.json"
    if not meta.is_file():
        build_code_datasets(cfg)
    return json.loads(meta.read_text())["manifest"]


# ------------------------------------------------------------------ snapshots

SNAPSHOT_FORMAT = "glassbox code corpus snapshot 1"
# what chooses a corpus's documents and splits: a snapshot is read only by a config
# that agrees on every one (vocab_size is checked against its tokenizer)
SNAPSHOT_KEYS = ("paths", "exclude", "split_depth", "max_file_bytes", "val_share", "test_share")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_snapshot(cfg: DataConfig, out: str | Path) -> dict:
    """Write the corpus `cfg` names, read from this machine, to `out` (xz-compressed
    JSON): every split's documents and domains, the manifest, the tokenizer its rows
    are built with (the cache entry's, built first where there is none) and the keys
    that chose them. Returns {"path", "bytes", "sha256", "chars"}."""
    import lzma

    c = cfg.code
    if c.snapshot:
        raise ConfigError("data.code.snapshot", c.snapshot, "write a snapshot from files, not from one")  # fmt: skip
    build_code_datasets(cfg)  # the tokenizer the rows here are made with
    tokenizer = (_entry(cfg) / "tokenizer.json").read_text()
    corpus = load_corpus(c, cfg.seed)
    blob = {
        "format": SNAPSHOT_FORMAT,
        "seed": cfg.seed,
        "keys": {k: _plain(getattr(c, k)) for k in SNAPSHOT_KEYS},
        "vocab_size": c.vocab_size,  # what its tokenizer was asked for (it may hold fewer)
        "manifest": corpus.manifest,
        "tokenizer": tokenizer,
        "docs": corpus.docs,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_bytes(lzma.compress(json.dumps(blob).encode(), preset=6))
    tmp.replace(out)
    chars = sum(len(t) for d in corpus.docs.values() for t in d["text"])
    return {"path": str(out), "bytes": out.stat().st_size, "sha256": _sha256(out), "chars": chars}


def _plain(value):
    """A config value as JSON reads it back (a tuple or list config: a list)."""
    return value if isinstance(value, str | int | float) else list(value)


_SNAPSHOTS: dict[str, dict] = {}  # the latest snapshot read, by sha256: read once per process


def _snapshot_blob(path: Path, key: str) -> tuple[dict, str]:
    import lzma

    digest = _sha256(path)
    if digest not in _SNAPSHOTS:
        try:
            blob = json.loads(lzma.decompress(path.read_bytes()))
        except (lzma.LZMAError, ValueError):
            raise ConfigError(key, str(path), "not a corpus snapshot (xz-compressed JSON)") from None  # fmt: skip
        if not isinstance(blob, dict) or blob.get("format") != SNAPSHOT_FORMAT:
            raise ConfigError(key, str(path), f"not a corpus snapshot ({SNAPSHOT_FORMAT!r})")
        _SNAPSHOTS.clear()
        _SNAPSHOTS[digest] = blob
    return _SNAPSHOTS[digest], digest


def read_snapshot(c: CodeConfig, seed: int) -> tuple[Corpus, Tokenizer]:
    """The snapshot `c.snapshot` names: its corpus (the manifest with the snapshot's
    sha256 added) and tokenizer. ConfigError (one line) when it is not a snapshot or
    was written for other documents than `c` and `seed` choose."""
    key = "data.code.snapshot"
    blob, digest = _snapshot_blob(Path(c.snapshot), key)
    wanted = {"seed": seed, **{k: _plain(getattr(c, k)) for k in SNAPSHOT_KEYS}}
    written = {"seed": blob["seed"], **blob["keys"]}
    for k, v in wanted.items():
        if written.get(k) != v:
            name = "data.seed" if k == "seed" else f"data.code.{k}"
            raise ConfigError(key, c.snapshot, f"was written with {name}={written.get(k)}; this config has {v}")  # fmt: skip
    if not c.tokenizer_path and blob["vocab_size"] != c.vocab_size:  # else its tokenizer is used
        raise ConfigError(key, c.snapshot, f"its tokenizer was trained for data.code.vocab_size={blob['vocab_size']}; this config has {c.vocab_size}")  # fmt: skip
    tok = Tokenizer.from_str(blob["tokenizer"])
    check_specials(tok, c.snapshot, key)
    manifest = {**blob["manifest"], "snapshot": {"file": Path(c.snapshot).name, "sha256": digest}}
    return Corpus(blob["docs"], manifest), tok


# ------------------------------------------------------------------ counting


def count_tokens(c: CodeConfig, seed: int, labels: bool = False) -> dict:
    """Per split: packages, files, characters and tokens (the corpus's own BPE), and
    the seconds each step took (reading and filtering, BPE, encoding; labelling val
    and test if `labels`). Nothing is cached."""
    clock = [time.perf_counter()]
    corpus = load_corpus(c, seed)
    clock.append(time.perf_counter())
    tok = code_tokenizer(c, corpus, seed)
    clock.append(time.perf_counter())
    out: dict = {"python": corpus.manifest["python"], "paths": list(c.paths)}
    for k in SPLIT_NAMES:
        texts = corpus.docs[k]["text"]
        n = 0
        for i in range(0, len(texts), PACK_BATCH):
            encs = tok.encode_batch(texts[i : i + PACK_BATCH], add_special_tokens=False)
            n += sum(len(e.ids) for e in encs)
        out[k] = {
            "packages": len(corpus.manifest["splits"][k]),
            "files": len(texts),
            "chars": corpus.manifest["chars"][k],
            "tokens": n,
        }
    clock.append(time.perf_counter())
    if labels:
        for k in ("val", "test"):
            for text in corpus.docs[k]["text"]:
                label_source(text)
        clock.append(time.perf_counter())
    steps = ("read", "bpe", "encode", "label_val_test")
    out["seconds"] = {s: round(b - a, 1) for s, a, b in zip(steps, clock, clock[1:])}
    out["skipped"] = corpus.manifest["skipped"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m glassbox.training.data.code",
        description="Count the tokens of a code corpus per split (nothing cached).",
    )
    p.add_argument(
        "paths", nargs="*", default=["stdlib:"], help='e.g. stdlib: site: (default "stdlib:")'
    )
    p.add_argument("--exclude", nargs="*", default=[], help="packages left out")
    p.add_argument("--split-depth", type=int, default=1, help="2: subpackages are held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=CodeConfig.vocab_size)
    p.add_argument("--tokenizer-train-chars", type=int, default=CodeConfig.tokenizer_train_chars)
    p.add_argument("--labels", action="store_true", help="also time labelling val and test")
    args = p.parse_args(argv)
    c = CodeConfig(
        paths=args.paths,
        exclude=args.exclude,
        split_depth=args.split_depth,
        vocab_size=args.vocab_size,
        tokenizer_train_chars=args.tokenizer_train_chars,
    )
    check_code_config(c)
    print(json.dumps(count_tokens(c, args.seed, args.labels), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
