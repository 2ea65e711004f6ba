"""Text corpora: local .txt / .jsonl / .parquet through `datasets`, byte-level BPE,
packing, streaming, caching. Offline: the hub path is exercised with a local
dataset folder (the same `load_dataset` call a hub name takes)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from glassbox.archs.config import ConfigError
from glassbox.training.data import DataConfig, build_datasets, collate, data_config_from_dict
from glassbox.training.data.config import TextConfig
from glassbox.training.data.vocab import SPECIAL_TOKENS

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"

WORDS = "the a cat dog sat ran on under over mat tree house red blue quick slow and then".split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."


def documents(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        lines = [sentence(rng) for _ in range(rng.randint(1, 3))]
        if i % 7 == 0:
            lines.append("Ünïcödé ✓ 数字 42 <eos> tabs\tand  spaces")  # bytes, and a literal <eos>
        docs.append("\n".join(lines))
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    """A folder with .txt (paragraph per document), .jsonl and .parquet files."""
    root = tmp_path_factory.mktemp("corpus")
    txt_docs, json_docs, pq_docs = documents(0, 40), documents(1, 30), documents(2, 30)
    (root / "a").mkdir()
    (root / "a" / "one.txt").write_text("\n\n".join(txt_docs[:20]) + "\n")
    (root / "a" / "two.txt").write_text("\n\n".join(txt_docs[20:]) + "\n")
    with open(root / "b.jsonl", "w") as f:
        for d in json_docs:
            f.write(json.dumps({"body": d, "id": 1}) + "\n")
    pq.write_table(pa.table({"body": pq_docs}), root / "c.parquet")
    (root / "ignored.md").write_text("not a corpus file")
    return root, txt_docs + json_docs + pq_docs


def text_cfg(tmp: Path, paths, **kw) -> DataConfig:
    t = dict(paths=[str(p) for p in paths], text_field="body", vocab_size=400, block_size=32)
    t.update(kw)
    return DataConfig(source="text", cache_dir=str(tmp / "cache"), text=TextConfig(**t))


def split_docs(data, split: str) -> list[str]:
    """The documents of a split, read back from its packed rows (the last paragraph of
    a .txt file keeps the file's final line break: dropped here)."""
    eos = data.tokenizer.token_to_id("<eos>")
    stream: list[int] = []
    for row in data.splits[split]:
        stream += row["input_ids"][1:]
    docs, cur = [], []
    for i in stream:
        if i == eos:
            docs.append(data.tokenizer.decode(cur).removesuffix("\n"))
            cur = []
        else:
            cur.append(i)
    assert not cur, "a document without its <eos>"
    return docs


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    root, docs = corpus
    cfg = text_cfg(tmp_path_factory.mktemp("run"), [root])
    return cfg, build_datasets(cfg)


def test_rows_are_packed_blocks(built):
    cfg, data = built
    assert set(data.splits) == {"train", "val", "test"}
    assert data.pad_id == 0 and data.skill_names == [] and data.feature_names == []
    bos = data.tokenizer.token_to_id("<bos>")
    for split in data.splits:
        rows = list(data.splits[split])
        assert rows
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            assert r["input_ids"][0] == bos and 2 <= n <= cfg.text.block_size
            if i < len(rows) - 1:  # only the last block of a packing batch is short
                assert n == cfg.text.block_size
            assert r["loss_mask"] == r["answer_mask"] == [0] + [1] * (n - 1)
            assert r["skill"] == [-1] * n and r["features"] == [[]] * n
            assert r["example_skill"] == -1


def test_documents_survive_packing_and_splits_are_disjoint(built, corpus):
    _, docs = corpus
    _, data = built
    got = {s: split_docs(data, s) for s in ("train", "val", "test")}
    assert sorted(got["train"] + got["val"] + got["test"]) == sorted(docs)
    # each domain (a/, b.jsonl, c.parquet: 40, 30, 30 documents) gives val and test
    # its own 5%, at least one document
    per_domain = sum(max(1, round(0.05 * n)) for n in (40, 30, 30))
    assert len(got["val"]) == len(got["test"]) == per_domain
    # a literal "<eos>" in a document is text, not the token
    assert any("<eos>" in d for d in got["train"] + got["val"] + got["test"])


def test_collate_text_rows(built):
    _, data = built
    loader = DataLoader(
        data.splits["train"], batch_size=4, collate_fn=lambda r: collate(r, data.pad_id)
    )
    b = next(iter(loader))
    assert b["input_ids"].shape == (4, 32) and b["features"].shape == (4, 32, 0)
    assert b["skill"].eq(-1).all() and b["example_skill"].tolist() == [-1] * 4


def test_bpe_trains_saves_reloads_and_encodes_identically(built, tmp_path, corpus):
    _, data = built
    tok = data.tokenizer
    # a tiny corpus runs out of merges before vocab_size
    assert 256 + len(SPECIAL_TOKENS) < tok.get_vocab_size() <= 400
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    tok.save(str(tmp_path / "tokenizer.json"))
    again = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    # (text holding a literal special token such as "<eos>" encodes it as the token)
    texts = [d for d in corpus[1] if "<eos>" not in d] + ["Ünïcödé ✓ 数字 unseen 🙂 \t\n x"]
    for text in texts:
        ids = tok.encode(text).ids
        assert again.encode(text).ids == ids
        assert tok.decode(ids) == text  # byte-level: lossless
    assert again.to_str() == tok.to_str()


def test_given_tokenizer_is_used(built, corpus, tmp_path):
    cfg, data = built
    data.tokenizer.save(str(tmp_path / "tok.json"))
    other = replace(cfg, text=replace(cfg.text, tokenizer_path=str(tmp_path / "tok.json")))
    other = replace(other, cache_dir=str(tmp_path / "cache"))
    again = build_datasets(other)
    assert again.tokenizer.to_str() == data.tokenizer.to_str()
    assert again.splits["val"].to_dict() == data.splits["val"].to_dict()


def test_tokenizer_without_pad_zero_is_refused(tmp_path, corpus):
    from tokenizers.models import WordLevel

    bad = Tokenizer(WordLevel({"x": 0, "<pad>": 1, "<bos>": 2, "<eos>": 3}, unk_token="x"))
    bad.save(str(tmp_path / "bad.json"))
    cfg = text_cfg(tmp_path, [corpus[0]], tokenizer_path=str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="<pad> to id 0"):
        build_datasets(cfg)


def test_cache_hit_and_invalidation(corpus, tmp_path, monkeypatch):
    import glassbox.training.data.text as text

    root = tmp_path / "corpus"
    root.mkdir()
    docs = documents(5, 30)
    (root / "x.txt").write_text("\n\n".join(docs))
    cfg = text_cfg(tmp_path, [root])
    first = build_datasets(cfg)

    def fail(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(text, "load_documents", fail)
    hit = build_datasets(replace(cfg, batch_size=3, mix={"copy": 1.0}, loss_on="all"))
    assert hit.splits["train"].to_dict() == first.splits["train"].to_dict()
    assert hit.tokenizer.to_str() == first.tokenizer.to_str()
    (root / "x.txt").write_text("\n\n".join(docs[:-1]))  # the corpus changed
    with pytest.raises(AssertionError, match="rebuilt"):
        build_datasets(cfg)
    with pytest.raises(AssertionError, match="rebuilt"):
        build_datasets(replace(cfg, text=replace(cfg.text, block_size=16)))


def test_streaming(corpus, tmp_path):
    root, docs = corpus
    cfg = text_cfg(tmp_path, [root], streaming=True, val_size=3, test_size=2)
    streamed = build_datasets(cfg)
    for split in ("train", "val", "test"):
        assert isinstance(streamed.splits[split], torch.utils.data.IterableDataset)
    # streaming carves off the first documents (txt files first, in path order)
    assert split_docs(streamed, "val") == docs[:3]
    assert split_docs(streamed, "test") == docs[3:5]
    assert sorted(split_docs(streamed, "train")) == sorted(docs[5:])
    loader = DataLoader(
        streamed.splits["train"], batch_size=8, collate_fn=lambda r: collate(r, streamed.pad_id)
    )
    b = next(iter(loader))
    assert b["input_ids"].shape == (8, 32)
    # the trained tokenizer is cached beside the config hash and reused
    again = build_datasets(cfg)
    assert again.tokenizer.to_str() == streamed.tokenizer.to_str()


def test_hub_path_with_a_local_dataset_folder(tmp_path):
    """paths empty: load_dataset(hub_name) — here a local folder, as offline CI allows."""
    root = tmp_path / "hub"
    root.mkdir()
    docs = documents(7, 40)
    with open(root / "train.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    cfg = DataConfig(
        source="text",
        cache_dir=str(tmp_path / "cache"),
        text=TextConfig(hub_name=str(root), vocab_size=300, block_size=64, val_size=2, test_size=2),
    )
    data = build_datasets(cfg)
    got = split_docs(data, "train") + split_docs(data, "val") + split_docs(data, "test")
    assert sorted(got) == sorted(docs)


def test_hub_failure_names_the_key(tmp_path):
    cfg = DataConfig(
        source="text",
        cache_dir=str(tmp_path),
        text=TextConfig(hub_name=str(tmp_path / "no-such-dataset")),
    )
    with pytest.raises(RuntimeError, match="data.text.hub_name"):
        build_datasets(cfg)


def test_errors_name_the_key(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(ConfigError, match="data.text.text_field"):
        build_datasets(text_cfg(tmp_path, [root / "b.jsonl"], text_field="content"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt"):
        build_datasets(text_cfg(tmp_path, [empty]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_datasets(text_cfg(tmp_path, [tmp_path / "missing"]))
    with pytest.raises(ConfigError, match="data.text.paths"):
        build_datasets(DataConfig(source="text", cache_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="data.text.val_size"):
        build_datasets(text_cfg(tmp_path, [root], streaming=True))  # a fraction when streaming
    one = tmp_path / "one.txt"
    one.write_text("just one document")
    with pytest.raises(ConfigError, match="sample_by"):
        build_datasets(text_cfg(tmp_path, [one], sample_by="document"))


def test_example_config(tmp_path):
    cfg = data_config_from_dict(OmegaConf.load(CONFIGS / "text.yaml"))
    assert cfg.source == "text" and cfg.text.paths


def docs_with_domains(data, split: str) -> list[tuple[str, str]]:
    """(document, domain name) of a split, read back from its rows; every token of a
    document (and its <eos>) must carry one domain, <bos> none."""
    eos = data.tokenizer.token_to_id("<eos>")
    out, cur, doms = [], [], set()
    for row in data.splits[split]:
        assert row["domain"][0] == -1 and len(row["domain"]) == len(row["input_ids"])
        for i, d in zip(row["input_ids"][1:], row["domain"][1:]):
            doms.add(d)
            if i == eos:
                assert len(doms) == 1, "a document with tokens of several domains"
                text = data.tokenizer.decode(cur).removesuffix("\n")
                out.append((text, data.domain_names[doms.pop()]))
                cur = []
            else:
                cur.append(i)
    return out


def test_every_token_carries_its_documents_domain(built, corpus):
    """Domains are the top-level folder (a/) or file (b.jsonl, c.parquet) under the
    `paths` folder; packing keeps each token's own, also across document joins."""
    _, docs = corpus
    _, data = built
    assert data.domain_names == ["a", "b", "c"]
    source = dict(zip(docs, ["a"] * 40 + ["b"] * 30 + ["c"] * 30))
    got = [x for s in ("train", "val", "test") for x in docs_with_domains(data, s)]
    assert len(got) == len(docs) and all(source[text] == d for text, d in got)
    batch = collate([data.splits["val"][0], data.splits["val"][1]], data.pad_id)
    assert batch["domain"].shape == batch["input_ids"].shape and batch["domain"][0, 0] == -1


def test_domain_field_names_the_domain(tmp_path):
    docs = documents(3, 20)
    path = tmp_path / "d.jsonl"
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"body": d, "topic": "xy"[i % 2]}) + "\n")
    data = build_datasets(text_cfg(tmp_path, [path], domain_field="topic"))
    assert data.domain_names == ["x", "y"]
    source = {d: "xy"[i % 2] for i, d in enumerate(docs)}
    got = [x for s in ("train", "val", "test") for x in docs_with_domains(data, s)]
    assert sorted(t for t, _ in got) == sorted(docs) and all(source[t] == d for t, d in got)
    with pytest.raises(ConfigError, match="data.text.domain_field"):
        build_datasets(text_cfg(tmp_path, [path], domain_field="nope"))
    streaming = text_cfg(
        tmp_path, [path], domain_field="topic", streaming=True, val_size=2, test_size=2
    )
    with pytest.raises(ConfigError, match="domain_field.*streaming=false"):
        build_datasets(streaming)


def test_every_domain_is_held_out_even_with_a_book_per_file(tmp_path):
    """Three domains of one document each (a book per file): val and test still hold
    text of every domain (the end of each book), and nothing is lost or duplicated."""
    books = {name: "\n".join(documents(i, 60)) for i, name in enumerate(("x", "y", "z"))}
    for name, text in books.items():
        (tmp_path / f"{name}.txt").write_text(text)
    data = build_datasets(text_cfg(tmp_path, [tmp_path], sample_by="document", val_size=0.1,
                                   test_size=0.1, block_size=64))  # fmt: skip
    names = data.domain_names
    for split in ("val", "test"):
        seen = {d for row in data.splits[split] for d in row["domain"] if d >= 0}
        assert {names[d] for d in seen} == {"x", "y", "z"}, split


def test_held_out_parts_cut_few_document_domains_into_chunks():
    from datasets import Dataset

    from glassbox.training.data.text import held_out_parts

    lines = [f"line {i}" for i in range(100)]
    docs = Dataset.from_dict(
        {"text": ["\n".join(lines)] + [f"doc {i}" for i in range(40)],
         "domain": ["book"] + ["many"] * 40}
    )  # fmt: skip
    parts = held_out_parts(docs, 0.1, 0.2, seed=0)
    book = {k: [t for t, d in zip(p["text"], p["domain"]) if d == "book"] for k, p in parts.items()}
    # the book, cut at line breaks: its start to train, then 20% to test, its last 10% to val
    assert book["train"][0] + book["test"][0] + book["val"][0] == "\n".join(lines)
    assert book["val"][0].startswith("line 90") and book["test"][0].startswith("line 70")
    # the 40-document domain: whole documents, 4 to val and 8 to test, none shared
    many = {k: [t for t, d in zip(p["text"], p["domain"]) if d == "many"] for k, p in parts.items()}
    assert (len(many["val"]), len(many["test"]), len(many["train"])) == (4, 8, 28)
    assert len(set(many["val"]) | set(many["test"]) | set(many["train"])) == 40
