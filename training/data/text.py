"""Text corpora: documents through `datasets`, a byte-level BPE, packed fixed-length blocks.

    data:
      source: text
      text: {paths: [corpus/], vocab_size: 4096, block_size: 256}

Documents come from local .txt (one per line, paragraph or file: `sample_by`),
.jsonl / .json and .parquet files (the `text_field` column), or, when `paths` is
empty, from `datasets.load_dataset(hub_name)` (a hub name, where a network
exists, or a local dataset folder). Folders are searched for the suffixes of
`extensions`; one not among .jsonl / .json / .parquet is read as text (.py, .md).
A `paths` entry `stdlib:` names the Python standard library's source folder
(`sysconfig.get_paths()["stdlib"]`, site-packages left out), `stdlib:NAME` its
package NAME: a corpus every machine with Python has.

Every document has a domain, carried per token in the `domain` column (ids into
`SuiteData.domain_names`, sorted): the `domain_field` column of a .jsonl /
.parquet / hub row when it is set, else the top-level folder (or the file's stem,
for a file directly in it) under the `paths` entry it came from; for `stdlib:NAME`
that is NAME, for a hub dataset its name. Val and test documents are carved off first,
from every domain (`held_out_parts`: each domain's share of its documents, by a
seeded shuffle), so that every domain is scored on held-out text and no document is
split between train and a held-out split; a domain of fewer than 3 documents (a book
per file) gives val and test the end of each document instead. Streaming takes the
first documents.

The tokenizer is a byte-level BPE trained with `tokenizers` on train documents
(or read from `tokenizer_path`); its special tokens are those of the skill suite,
so `<pad>` is 0, `<bos>` 1, `<eos>` 2. Documents are encoded, joined with `<eos>`
after each, and cut into rows of `block_size` tokens, each opening with `<bos>`
(block_size - 1 corpus tokens after it); the last row of each batch of 1000
documents may be shorter. Rows have the suite's columns: loss_mask and
answer_mask are 1 on every token but `<bos>`, skill and example_skill are -1, and
features are empty (no ground truth in text); domain is the domain id of each
token's document (`<eos>` closes its document and has its domain), -1 on `<bos>`.

Non-streaming builds are cached under cache_dir/text-<hash of the config and of
the input files' paths, sizes and modification times>. Streaming reads lazily
(splits are IterableDatasets) and caches only the tokenizer.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    IterableDataset,
    IterableDatasetDict,
    concatenate_datasets,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from glassbox.archs.config import ConfigError
from glassbox.training.data.cache import config_hash, load_entry, save_entry
from glassbox.training.data.config import DataConfig, TextConfig
from glassbox.training.data.suite import SuiteData
from glassbox.training.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS

# file suffix -> datasets' packaged builder (any other suffix of `extensions`: text)
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
PACK_BATCH = 1000  # documents encoded and packed together
STDLIB = "stdlib:"  # a `paths` entry: the standard library's source folder (or a package of it)
STDLIB_SKIP = ("site-packages", "dist-packages", "__pycache__")
ROW_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "loss_mask": datasets.List(datasets.Value("int32")),
        "answer_mask": datasets.List(datasets.Value("int32")),
        "skill": datasets.List(datasets.Value("int32")),
        "features": datasets.List(datasets.List(datasets.Value("int32"))),
        "example_skill": datasets.Value("int32"),
        "domain": datasets.List(datasets.Value("int32")),
    }
)


def stdlib_dir() -> Path:
    """The Python standard library's source folder, as sysconfig reports it."""
    return Path(sysconfig.get_paths()["stdlib"])


def resolve_path(entry: str) -> tuple[Path, Path]:
    """A `paths` entry -> (root, path): domains are named by the top-level part of a
    file's path under root. Plain paths are their own root; `stdlib:` is the
    standard library's folder, `stdlib:NAME` its package NAME under that root."""
    if not entry.startswith(STDLIB):
        p = Path(entry)
        return (p.parent if p.is_file() else p), p
    root, name = stdlib_dir(), entry[len(STDLIB) :].strip("/")
    p = root / name if name else root
    if name and not (p.is_dir() or p.with_suffix(".py").is_file()):
        raise ConfigError("data.text.paths", entry, f"{root} has no package or module {name!r}")
    return root, (p if p.is_dir() else p.with_suffix(".py"))


def _builder(f: Path) -> str:
    return BUILDERS.get(f.suffix, "text")


def corpus_domains(paths: list[str], extensions: list[str] | None = None) -> list[tuple[Path, str]]:
    """(file, domain) of every corpus file `paths` names (files, folders searched
    recursively for `extensions`, `stdlib:` entries), files sorted within an entry."""
    exts = tuple(extensions or BUILDERS)
    out: list[tuple[Path, str]] = []
    for entry in paths:
        root, p = resolve_path(entry)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.suffix in exts and f.is_file() and not set(f.parts) & set(STDLIB_SKIP)
            )
            if not found:
                raise FileNotFoundError(
                    f"data.text.paths: no {'/'.join(exts)} files under {p} "
                    "(data.text.extensions says which suffixes are read)"
                )
        elif p.is_file():
            if p.suffix not in exts:
                raise ConfigError("data.text.paths", str(p), f"files end in {', '.join(exts)}")
            found = [p]
        else:
            raise FileNotFoundError(f"data.text.paths: {p} does not exist")
        for f in found:
            rel = f.relative_to(root).parts
            out.append((f, rel[0] if len(rel) > 1 else f.stem))
    return out


def corpus_files(paths: list[str], extensions: list[str] | None = None) -> list[Path]:
    """The corpus files named by `paths` (files, or folders searched recursively)."""
    return [f for f, _ in corpus_domains(paths, extensions)]


def load_documents(
    t: TextConfig, cache_dir: str, streaming: bool = False
) -> Dataset | IterableDataset:
    """Every document of the corpus as rows {"text": str, "domain": str} (empty
    documents dropped), in the order of the files (grouped by builder)."""
    hf_cache = str(Path(cache_dir) / "hf")
    parts = []
    if t.paths:
        groups: dict[str, dict[str, list[str]]] = {}  # builder -> domain -> files
        for f, domain in corpus_domains(list(t.paths), list(t.extensions)):
            groups.setdefault(_builder(f), {}).setdefault(domain, []).append(str(f))
        for builder, by_domain in groups.items():
            kwargs = {}
            if builder == "text":  # keep a paragraph's or a file's inner line breaks
                kwargs = {"sample_by": t.sample_by, "keep_linebreaks": t.sample_by != "line"}
            for domain, files in by_domain.items():
                ds = datasets.load_dataset(
                    builder,
                    data_files=files,
                    split="train",
                    streaming=streaming,
                    cache_dir=hf_cache,
                    **kwargs,
                )
                field = "text" if builder == "text" else t.text_field
                named = t.domain_field if builder != "text" else ""
                parts.append(_text_column(ds, field, files[0], named, domain))
    else:
        try:
            ds = datasets.load_dataset(
                t.hub_name,
                t.hub_config or None,
                split=t.hub_split,
                streaming=streaming,
                cache_dir=hf_cache,
            )
        except Exception as e:  # the hub path needs a network: say what failed
            raise RuntimeError(
                f"data.text.hub_name={t.hub_name!r}: load_dataset failed ({e}); "
                "without a network, give local files in data.text.paths"
            ) from e
        parts.append(_text_column(ds, t.text_field, t.hub_name, t.domain_field, t.hub_name))
    docs = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return docs.filter(lambda b: [bool(s.strip()) for s in b["text"]], batched=True)


def _text_column(ds, field: str, where: str, domain_field: str = "", domain: str = ""):
    """Rows {"text", "domain"}: the domain from the `domain_field` column when one is
    named, else `domain` on every row."""
    columns = list(ds.column_names or [])
    if ds.column_names is not None and field not in columns:
        raise ConfigError("data.text.text_field", field, f"{where} has columns {columns}")
    if domain_field and ds.column_names is not None and domain_field not in columns:
        raise ConfigError("data.text.domain_field", domain_field, f"{where} has columns {columns}")
    keep = [field, domain_field] if domain_field and domain_field != field else [field]
    ds = ds.select_columns(keep)
    if domain_field:
        return ds.map(
            lambda b: {"text": b[field], "domain": [str(d) for d in b[domain_field]]},
            batched=True,
            remove_columns=keep,
        )
    ds = ds.rename_column(field, "text") if field != "text" else ds
    return ds.map(lambda b: {"domain": [domain] * len(b["text"])}, batched=True)


def train_bpe(texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenizer and decoder) trained on `texts`,
    with the suite's special tokens first (<pad> = 0, <bos> = 1, <eos> = 2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def check_specials(tok: Tokenizer, where: str, key: str = "data.text.tokenizer_path") -> None:
    vocab = tok.get_vocab()
    for i, s in enumerate((PAD, BOS, EOS)):
        if vocab.get(s) != i:
            raise ConfigError(key, where, f"the tokenizer must map {s} to id {i}")


class Packer:
    """The batched map from documents to packed rows (picklable, for datasets.map)."""

    def __init__(self, tokenizer: Tokenizer, block_size: int, domain_names: list[str]):
        # A copy that reads "<eos>" written in a document as text, not as the token.
        self.tok = Tokenizer.from_str(tokenizer.to_str())
        self.tok.encode_special_tokens = True
        self.step = block_size - 1
        vocab = tokenizer.get_vocab()
        self.bos, self.eos = vocab[BOS], vocab[EOS]
        self.domain_id = {d: i for i, d in enumerate(domain_names)}

    def __call__(self, batch: dict) -> dict:
        stream: list[int] = []
        domains: list[int] = []
        encs = self.tok.encode_batch(batch["text"], add_special_tokens=False)
        for enc, domain in zip(encs, batch["domain"]):
            stream += enc.ids
            stream.append(self.eos)
            domains += [self.domain_id[domain]] * (len(enc.ids) + 1)
        starts = range(0, len(stream), self.step)
        blocks = [[self.bos, *stream[i : i + self.step]] for i in starts]
        masks = [[0] + [1] * (len(b) - 1) for b in blocks]
        return {
            "input_ids": blocks,
            "loss_mask": masks,
            "answer_mask": masks,
            "skill": [[-1] * len(b) for b in blocks],
            "features": [[[]] * len(b) for b in blocks],
            "example_skill": [-1] * len(blocks),
            "domain": [[-1, *domains[i : i + self.step]] for i in starts],
        }


def pack(
    docs: Dataset | IterableDataset,
    tokenizer: Tokenizer,
    block_size: int,
    domain_names: list[str],
):
    """Rows of packed blocks (see the module docstring) from documents
    {"text": str, "domain": str}; domain ids index `domain_names`."""
    return docs.map(
        Packer(tokenizer, block_size, domain_names),
        batched=True,
        batch_size=PACK_BATCH,
        remove_columns=["text", "domain"],
        features=ROW_FEATURES,
    )


def _count(size: float, n: int) -> int:
    return int(size) if size >= 1 else max(1, round(n * size))


def _fingerprint(t: TextConfig) -> list:
    """What identifies the input: each file's path, size and mtime (or the hub name),
    and the content of a given tokenizer."""
    out: list = []
    if t.paths:
        for f in corpus_files(list(t.paths), list(t.extensions)):
            st = f.stat()
            out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    if t.tokenizer_path:
        out.append(hashlib.sha256(Path(t.tokenizer_path).read_bytes()).hexdigest())
    return out


def _tokenizer(t: TextConfig, train_texts: Iterator[str]) -> Tokenizer:
    if t.tokenizer_path:
        tok = Tokenizer.from_file(t.tokenizer_path)
        check_specials(tok, t.tokenizer_path)
        return tok
    return train_bpe(train_texts, t.vocab_size)


def _texts(docs: Dataset | IterableDataset, limit: int) -> Iterator[str]:
    """The first `limit` documents' texts."""
    for batch in docs.take(limit).iter(batch_size=PACK_BATCH):
        yield from batch["text"]


def build_text_datasets(cfg: DataConfig) -> SuiteData:
    """train / val / test of packed blocks of the corpus `cfg.text` names."""
    t = cfg.text
    key = config_hash(cfg, extra=_fingerprint(t))
    path = Path(cfg.cache_dir) / f"text-{key}"
    if t.streaming:
        return _build_streaming(cfg, path)
    hit = load_entry(path)
    if hit is not None:
        splits, tok, meta = hit
        return SuiteData(splits, tok, [], [], tok.token_to_id(PAD), [], meta["domain_names"])

    docs = load_documents(t, cfg.cache_dir)
    domain_names = sorted(set(docs["domain"]))
    n = len(docs)
    n_val, n_test = _count(t.val_size, n), _count(t.test_size, n)
    if n_val + n_test >= n:
        raise ConfigError(
            "data.text.val_size",
            t.val_size,
            f"val ({n_val}) + test ({n_test}) documents leave none of the {n} for train"
            + (" (try data.text.sample_by=paragraph or line)" if n < 10 else ""),
        )
    parts = held_out_parts(docs, n_val / n, n_test / n, cfg.seed)
    tok = _tokenizer(t, _texts(parts["train"], t.tokenizer_train_docs))
    splits = DatasetDict(
        {k: pack(parts[k], tok, t.block_size, domain_names) for k in ("train", "val", "test")}
    )
    save_entry(path, splits, tok, {"config": asdict(cfg), "domain_names": domain_names})
    hit = load_entry(path)  # serve the saved copy: memory-mapped, not the map's cache files
    assert hit is not None
    return SuiteData(hit[0], tok, [], [], tok.token_to_id(PAD), [], domain_names)


# A domain with fewer documents than this is held out by chunks of each document.
MIN_DOMAIN_DOCUMENTS = 3


def _cut(text: str, share: float, from_end: bool) -> tuple[str, str]:
    """(rest, piece): `share` of text's characters, cut at a line break where there is
    one near, taken from its end (from_end) or start."""
    at = round(len(text) * (1 - share if from_end else share))
    brk = text.rfind("\n", 0, at) if from_end else text.find("\n", at)
    at = brk + 1 if brk > 0 else at
    return (text[:at], text[at:]) if from_end else (text[at:], text[:at])


def held_out_parts(docs: Dataset, val_share: float, test_share: float, seed: int) -> dict:
    """{"val", "test", "train": Dataset of {"text", "domain"}}, stratified by domain.

    Every domain gives val and test their share of its documents (at least one each,
    chosen by a seeded shuffle), so every domain is scored on held-out text and no
    document is split. A domain with fewer than MIN_DOMAIN_DOCUMENTS documents (or
    too few to leave train one) is held out by chunks instead: the last `val_share`
    of each document's text goes to val, the `test_share` before it to test (cut at
    line breaks), the rest to train."""
    rng = np.random.default_rng(seed)
    domains = np.asarray(docs["domain"])
    idx: dict[str, list[int]] = {"val": [], "test": [], "train": []}
    chunks: dict[str, dict[str, list[str]]] = {k: {"text": [], "domain": []} for k in idx}
    for d in sorted(set(domains.tolist())):
        mine = rng.permutation(np.flatnonzero(domains == d)).tolist()
        nv = max(1, round(len(mine) * val_share))
        nt = max(1, round(len(mine) * test_share))
        if len(mine) >= max(MIN_DOMAIN_DOCUMENTS, nv + nt + 1):
            idx["val"] += mine[:nv]
            idx["test"] += mine[nv : nv + nt]
            idx["train"] += mine[nv + nt :]
            continue
        for text in docs.select(mine)["text"]:
            rest, val = _cut(text, val_share, from_end=True)
            train, test = _cut(rest, test_share / max(1 - val_share, 1e-9), from_end=True)
            for k, piece in (("val", val), ("test", test), ("train", train)):
                if piece.strip():
                    chunks[k]["text"].append(piece)
                    chunks[k]["domain"].append(d)
    out = {}
    for k in ("val", "test", "train"):
        part = docs.select(sorted(idx[k]))
        if chunks[k]["text"]:
            extra = Dataset.from_dict(chunks[k], features=part.features)
            part = concatenate_datasets([part, extra])
        out[k] = part
    return out


def _build_streaming(cfg: DataConfig, path: Path) -> SuiteData:
    t = cfg.text
    if t.domain_field:  # the names would have to be read off the whole stream first
        raise ConfigError(
            "data.text.domain_field", t.domain_field, "needs data.text.streaming=false"
        )
    if t.paths:
        domain_names = sorted({d for _, d in corpus_domains(list(t.paths), list(t.extensions))})
    else:
        domain_names = [t.hub_name]
    docs = load_documents(t, cfg.cache_dir, streaming=True)
    n_val, n_test = int(t.val_size), int(t.test_size)
    parts = {
        "val": docs.take(n_val),
        "test": docs.skip(n_val).take(n_test),
        "train": docs.skip(n_val + n_test),
    }
    tok_file = path / "tokenizer.json"
    if tok_file.is_file():
        tok = Tokenizer.from_file(str(tok_file))
    else:
        tok = _tokenizer(t, _texts(parts["train"], t.tokenizer_train_docs))
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".tokenizer.json.tmp-{id(tok)}"
        tok.save(str(tmp))
        tmp.replace(tok_file)
    splits = IterableDatasetDict(
        {k: pack(parts[k], tok, t.block_size, domain_names) for k in ("train", "val", "test")}
    )
    return SuiteData(splits, tok, [], [], tok.token_to_id(PAD), [], domain_names)
