"""The Python-code corpus (training.data.code) and its ground truth (training.data.code_labels):
labels on hand-written snippets labelled by hand, the straddling rule, files that do not
parse, the split by package, and a tiny corpus built end to end and read by the analysis's
ground-truth functions."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from glassbox.analysis.batches import real_tokens, suite_batches
from glassbox.analysis.beyond_token import info_beyond_token
from glassbox.analysis.coverage import ground_truth_labels
from glassbox.analysis.heldout import Split, protocol
from glassbox.analysis.intervals import bootstrap_weights
from glassbox.archs.errors import ConfigError
from glassbox.training.data import build_datasets, data_config_from_dict
from glassbox.training.data.code import (
    check_code_config,
    find_files,
    load_corpus,
    package_split,
    read_source,
    write_snapshot,
)
from glassbox.training.data.code_labels import FEATURE_NAMES, FEATURES, TOKEN_TYPES, label_source
from glassbox.training.data.config import CodeConfig

T = {"N": 0, "K": 1, "D": 2, "S": 3, "C": 4, "O": 5, "W": 6}  # token_type by letter


def labels_of(pieces: list[str]) -> np.ndarray:
    """Per piece (a hand-made BPE token: its text), the labels label_source gives it."""
    src = "".join(pieces)
    ends = np.cumsum([len(p) for p in pieces])
    offsets = list(zip([0, *ends[:-1].tolist()], ends.tolist()))
    lab = label_source(src)
    assert lab is not None
    return lab.per_token(offsets)


# piece, type, in_string, in_comment, in_fstring, bracket depth, indent depth,
# in_def_signature, in_class_body, in_decorator, is_param (labelled by hand)
SNIPPET = [
    ("@", "O", 0, 0, 0, 0, 0, 0, 0, 1, -1),
    ("dec", "N", 0, 0, 0, 0, 0, 0, 0, 1, 0),
    ("(", "O", 0, 0, 0, 1, 0, 0, 0, 1, -1),
    ("1", "D", 0, 0, 0, 1, 0, 0, 0, 1, -1),
    (")", "O", 0, 0, 0, 0, 0, 0, 0, 1, -1),
    ("\n", "W", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    ("class", "K", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    (" A", "N", 0, 0, 0, 0, 0, 0, 0, 0, 0),
    (":", "O", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    ("\n", "W", 0, 0, 0, 0, 0, 0, 1, 0, -1),
    ("   ", "W", 0, 0, 0, 0, 1, 0, 1, 0, -1),
    (" def", "K", 0, 0, 0, 0, 1, 1, 1, 0, -1),  # space + keyword: the keyword
    (" f", "N", 0, 0, 0, 0, 1, 1, 1, 0, 0),
    ("(", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    ("self", "N", 0, 0, 0, 1, 1, 1, 1, 0, 1),
    (",", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    (" x", "N", 0, 0, 0, 1, 1, 1, 1, 0, 1),
    (",", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    (" y", "N", 0, 0, 0, 1, 1, 1, 1, 0, 1),
    ("=", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    ("x", "N", 0, 0, 0, 1, 1, 1, 1, 0, 0),  # a default: the scope around the def
    (",", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    (" *", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    ("a", "N", 0, 0, 0, 1, 1, 1, 1, 0, 1),
    (",", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    (" **", "O", 0, 0, 0, 1, 1, 1, 1, 0, -1),
    ("k", "N", 0, 0, 0, 1, 1, 1, 1, 0, 1),
    ("):", "O", 0, 0, 0, 0, 1, 1, 1, 0, -1),  # two operators: the first, ")"
    ("\n", "W", 0, 0, 0, 0, 1, 0, 1, 0, -1),
    ("       ", "W", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    (" return", "K", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    (" [", "O", 0, 0, 0, 1, 2, 0, 1, 0, -1),
    ("x", "N", 0, 0, 0, 1, 2, 0, 1, 0, 0),  # the comprehension's x shadows the parameter
    (" for", "K", 0, 0, 0, 1, 2, 0, 1, 0, -1),
    (" x", "N", 0, 0, 0, 1, 2, 0, 1, 0, 0),
    (" in", "K", 0, 0, 0, 1, 2, 0, 1, 0, -1),
    (" a", "N", 0, 0, 0, 1, 2, 0, 1, 0, 1),
    ("]", "O", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    (" +", "O", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    (" self", "N", 0, 0, 0, 0, 2, 0, 1, 0, 1),
    (".", "O", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    ("x", "N", 0, 0, 0, 0, 2, 0, 1, 0, 0),  # an attribute, not the parameter x
    ("(", "O", 0, 0, 0, 1, 2, 0, 1, 0, -1),
    ("x", "N", 0, 0, 0, 1, 2, 0, 1, 0, 0),  # a keyword argument's name
    ("=", "O", 0, 0, 0, 1, 2, 0, 1, 0, -1),
    ("y", "N", 0, 0, 0, 1, 2, 0, 1, 0, 1),
    (")", "O", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    (" #", "C", 0, 1, 0, 0, 2, 0, 1, 0, -1),
    (" c(", "C", 0, 1, 0, 0, 2, 0, 1, 0, -1),  # a bracket in a comment is no bracket
    ("\n", "W", 0, 0, 0, 0, 2, 0, 1, 0, -1),
    ("   ", "W", 0, 0, 0, 0, 1, 0, 1, 0, -1),  # a dedented line's own indentation
    (" s", "N", 0, 0, 0, 0, 1, 0, 1, 0, 0),
    (" =", "O", 0, 0, 0, 0, 1, 0, 1, 0, -1),
    (" (", "O", 0, 0, 0, 1, 1, 0, 1, 0, -1),
    ("'q", "S", 1, 0, 0, 1, 1, 0, 1, 0, -1),
    ("')", "S", 1, 0, 0, 1, 1, 0, 1, 0, -1),  # a string's quote, then ")": the string
    ("\n", "W", 0, 0, 0, 0, 1, 0, 0, 0, -1),
    ("g", "N", 0, 0, 0, 0, 0, 0, 0, 0, 0),
    (" =", "O", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    (" lambda", "K", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    (" z", "N", 0, 0, 0, 0, 0, 0, 0, 0, 1),
    (":", "O", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    (" z", "N", 0, 0, 0, 0, 0, 0, 0, 0, 1),
    ('("', "O", 0, 0, 0, 1, 0, 0, 0, 0, -1),  # an operator, then a quote: the operator
    ("s", "S", 1, 0, 0, 1, 0, 0, 0, 0, -1),
    ('",', "S", 1, 0, 0, 1, 0, 0, 0, 0, -1),
    (" f", "S", 1, 0, 1, 1, 0, 0, 0, 0, -1),  # an f-string whole: a string
    ('"{', "S", 1, 0, 1, 1, 0, 0, 0, 0, -1),  # its braces are no brackets
    ("z", "S", 1, 0, 1, 1, 0, 0, 0, 0, -1),
    ('}(",', "S", 1, 0, 1, 1, 0, 0, 0, 0, -1),
    (" 0x1F", "D", 0, 0, 0, 1, 0, 0, 0, 0, -1),
    (")", "O", 0, 0, 0, 0, 0, 0, 0, 0, -1),
    ("\n", "W", 0, 0, 0, 0, 0, 0, 0, 0, -1),
]


def test_snippet_labelled_by_hand():
    got = labels_of([p for p, *_ in SNIPPET])
    want = np.array([[T[r[1]], *r[2:]] for r in SNIPPET])
    for i, (piece, *_) in enumerate(SNIPPET):
        assert got[i].tolist() == want[i].tolist(), (i, piece, dict(zip(FEATURE_NAMES, got[i])))
    assert len(FEATURES) == want.shape[1]


def test_closure_uses_only_its_own_parameters():
    pieces = ["def", " o", "(", "p", "):", "\n", "   ", " def", " i", "(", "q", "):", "\n"]
    pieces += ["       ", " return", " p", " +", " q", "\n", "   ", " return", " i", "\n"]
    got = labels_of(pieces)
    param = got[:, FEATURE_NAMES.index("code.is_param")].tolist()
    assert param[3] == 1 and param[10] == 1  # the declarations of p and q
    assert param[15] == 0 and param[17] == 1  # in i: the outer p is not i's; q is
    assert param[1] == param[8] == param[21] == 0  # the functions' names
    sig = got[:, FEATURE_NAMES.index("code.in_def_signature")].tolist()
    assert sig == [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0] + [0] * 10


def test_multibyte_characters_and_bytes_of_one_character():
    src = 's = "é"  # ü\n'
    lab = label_source(src)
    assert lab is not None
    # byte-level BPE may give two tokens for the one character é: both have its span
    spans = [(0, 1), (1, 3), (3, 5), (5, 6), (5, 6), (6, 7), (7, 10), (10, 12), (11, 12), (12, 13)]
    rows = lab.per_token(spans)
    assert rows[:, 0].tolist() == [T[k] for k in "NOSSSSCCCW"]


@pytest.mark.parametrize(
    "src",
    [
        "def f(:\n    pass\n",  # a syntax error
        'print "python 2"\n',  # Python 2
        's = """never closed\n',  # tokenize fails
        "x = 1\r\ny = 2\r\n",  # not normalised
        "x = '\x00'\n",  # a null byte
    ],
)
def test_source_that_does_not_parse_is_none(src):
    assert label_source(src) is None


def test_real_bpe_tokens_inside_one_python_token_take_its_type():
    """With a trained BPE, every token wholly inside one Python token has that token's
    type, whatever the tokenizer merged (checked against tokenize directly)."""
    import io
    import keyword
    import tokenize

    from glassbox.training.data.text import train_bpe

    src = (
        "class Point:\n    def norm(self, scale=2.0):\n        return (self.x ** 2) * scale  # n\n"
    )
    tok = train_bpe(iter([src] * 20), 300)
    enc = tok.encode(src, add_special_tokens=False)
    rows = label_source(src).per_token(enc.offsets)
    starts = np.cumsum([0] + [len(line) for line in src.splitlines(keepends=True)])
    kinds = {tokenize.NUMBER: "D", tokenize.STRING: "S", tokenize.COMMENT: "C", tokenize.OP: "O"}
    spans = []
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        if t.type in kinds or t.type == tokenize.NAME:
            k = kinds.get(t.type) or ("K" if keyword.iskeyword(t.string) else "N")
            spans.append((starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1], k))
    checked = 0
    for (a, b), row in zip(enc.offsets, rows):
        for s, e, k in spans:
            if s <= a and b <= e:
                assert row[0] == T[k], (src[a:b], k)
                checked += 1
    assert checked >= len(enc.ids) // 2


# ------------------------------------------------------------------ the corpus


def write_packages(root, n: int = 10) -> None:
    """n small packages (pkg0 ... pkgN-1), each a package of two modules."""
    for i in range(n):
        d = root / f"pkg{i}"
        d.mkdir(parents=True)
        (d / "__init__.py").write_text(f'"""Package {i}."""\nVALUE = {i}\n')
        (d / "core.py").write_text(
            f"def f{i}(a, b={i}):\n    # add\n    return [a + b for _ in range({i})]\n\n\n"
            f"class C{i}:\n    @staticmethod\n    def g(x):\n        return f'{{x}}{i}'\n"
        )


def test_files_left_out_are_counted_and_never_crash(tmp_path):
    write_packages(tmp_path, 2)
    (tmp_path / "pkg0" / "copy.py").write_bytes((tmp_path / "pkg0" / "core.py").read_bytes())
    (tmp_path / "pkg0" / "py2.py").write_text('print "old"\n')
    (tmp_path / "pkg0" / "empty.py").write_text("\n")
    (tmp_path / "pkg0" / "big.py").write_text("x = 1\n" * 100)
    (tmp_path / "pkg1" / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    (tmp_path / "pkg1" / "crlf.py").write_bytes(b"a = 1\r\nb = 2\r\n")
    c = CodeConfig(paths=[str(tmp_path)], max_file_bytes=500)
    corpus = load_corpus(c, seed=0)
    assert corpus.manifest["skipped"] == {
        "duplicate": 1,
        "empty": 1,
        "too_large": 1,
        "unparsable": 1,
    }
    texts = [t for d in corpus.docs.values() for t in d["text"]]
    assert "s = 'é'\n" in [t.splitlines(keepends=True)[1] for t in texts if "latin" in t]
    assert "a = 1\nb = 2\n" in texts  # line ends normalised
    assert corpus.manifest["packages"]["pkg1"]["files"] == 4


def test_read_source_by_its_encoding():
    assert read_source(b"\xef\xbb\xbfx = 1\r\n") == "x = 1\n"
    assert read_source(b"x = '\xff'\n") is None  # not UTF-8, and no cookie


def test_split_is_by_package_hash_and_stable():
    names = [f"package_{i}" for i in range(4000)]
    splits = [package_split(n, 0, 0.1, 0.2) for n in names]
    share = {k: splits.count(k) / len(names) for k in ("val", "test")}
    assert abs(share["val"] - 0.1) < 0.02 and abs(share["test"] - 0.2) < 0.02
    # the same name, the same split, whatever else is installed; another seed reshuffles
    assert [package_split(n, 0, 0.1, 0.2) for n in names[::-1]] == splits[::-1]
    assert [package_split(n, 1, 0.1, 0.2) for n in names] != splits


def test_stdlib_and_site_entries_find_their_files():
    stdlib = find_files(["stdlib:json"])
    assert {p for _, p, _ in stdlib} == {"json"} and {s for *_, s in stdlib} == {"stdlib"}
    site = find_files(["site:tokenizers"])
    assert site and all(p == "tokenizers" and s == "site" for _, p, s in site)
    with pytest.raises(ConfigError, match="data.code.paths"):
        find_files(["stdlib:no_such_module_here"])


def test_split_depth_holds_out_subpackages(tmp_path):
    """At depth 2 a package's subpackages are units of their own (held out, a domain),
    its top-level files one more; exclude takes a top-level or a dotted name."""
    big = tmp_path / "big"
    for sub in ("nn", "linalg", "io"):
        (big / sub / "deep").mkdir(parents=True)
        (big / sub / "a.py").write_text(f"x = {sub!r}\n")  # unique: duplicates are read once
        (big / sub / "deep" / "b.py").write_text(f"y = {sub!r}\n")
    (big / "__init__.py").write_text("z = 3\n")
    (tmp_path / "single.py").write_text("w = 4\n")
    units = {
        f.relative_to(tmp_path).as_posix(): p for f, p, _ in find_files([str(tmp_path)], depth=2)
    }
    assert units == {
        "big/__init__.py": "big", "single.py": "single",
        **{f"big/{s}/a.py": f"big.{s}" for s in ("nn", "linalg", "io")},
        **{f"big/{s}/deep/b.py": f"big.{s}" for s in ("nn", "linalg", "io")},
    }  # fmt: skip
    assert {p for _, p, _ in find_files([str(tmp_path)])} == {"big", "single"}  # depth 1
    kept = {p for _, p, _ in find_files([str(tmp_path)], ["big.io"], depth=2)}
    assert kept == {"big", "big.nn", "big.linalg", "single"}
    assert {p for _, p, _ in find_files([str(tmp_path)], ["big"], depth=2)} == {"single"}
    # the corpus splits by the unit: one package's subpackages land on different sides
    c = CodeConfig(paths=[str(tmp_path)], split_depth=2, val_share=0.3, test_share=0.3)
    manifest = load_corpus(c, 0).manifest
    assert set(manifest["packages"]) == {"big", "big.nn", "big.linalg", "big.io", "single"}
    for unit, info in manifest["packages"].items():
        assert info["split"] == package_split(unit, 0, 0.3, 0.3)
    with pytest.raises(ConfigError, match="data.code.split_depth"):
        check_code_config(CodeConfig(split_depth=0))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("val_share", 0.0),
        ("test_share", 1.5),
        ("block_size", 1),
        ("vocab_size", 100),
        ("paths", []),
    ],
)
def test_bad_config_is_one_line_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"data.code.{key}"):
        check_code_config(CodeConfig(**{key: value}))
    with pytest.raises(ConfigError, match=f"data.code.{key}"):
        data_config_from_dict({"source": "code", "code": {key: value}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    write_packages(root / "src", 10)
    cfg = {
        "source": "code",
        "seed": 0,
        "cache_dir": str(root / "cache"),
        "code": {"paths": [str(root / "src")], "vocab_size": 300, "block_size": 32,
                 "val_share": 0.25, "test_share": 0.25},
    }  # fmt: skip
    return cfg, build_datasets(cfg)


def test_tiny_corpus_rows(tiny):
    cfg, data = tiny
    assert data.feature_names == FEATURE_NAMES and data.tokenizer.get_vocab_size() <= 300
    packages = {}
    for split in ("train", "val", "test"):
        ds = data.splits[split]
        assert len(ds) > 0
        for row in ds:
            ids, feats, dom = row["input_ids"], row["features"], row["domain"]
            assert ids[0] == 1 and len(ids) <= 32 and dom[0] == -1
            width = 0 if split == "train" else len(FEATURES)
            assert all(len(f) == width for f in feats)
            for t, f in zip(ids, feats):  # <bos> and <eos> carry no labels
                if t in (1, 2) and width:
                    assert f == [-1] * width
            packages.update({data.domain_names[d]: split for d in dom if d >= 0})
    # every package is in one split only, the one its hash says
    for name, split in packages.items():
        assert package_split(name, 0, 0.25, 0.25) == split
    assert set(packages) == {f"pkg{i}" for i in range(10)}


def test_tiny_corpus_labels_match_a_fresh_labelling(tiny):
    """The stored val labels are those of label_source on the decoded file, token by token."""
    _, data = tiny
    row = data.splits["val"][0]
    ids, feats = row["input_ids"][1:], np.array(row["features"][1:])
    end = ids.index(2) if 2 in ids else len(ids)
    text = data.tokenizer.decode(ids[:end])
    enc = data.tokenizer.encode(text, add_special_tokens=False)
    assert enc.ids == ids[:end]
    assert label_source(text).per_token(enc.offsets).tolist() == feats[:end].tolist()


def test_tiny_corpus_cache_and_manifest(tiny):
    cfg, data = tiny
    again = build_datasets(cfg)
    assert again.splits["val"]["input_ids"] == data.splits["val"]["input_ids"]
    entries = list(Path(cfg["cache_dir"]).glob("code-*/meta.json"))
    manifest = json.loads(entries[0].read_text())["manifest"]
    assert set(manifest["packages"]) == {f"pkg{i}" for i in range(10)}
    assert manifest["python"] and manifest["packages"]["pkg0"]["files"] == 2
    assert sorted(sum(manifest["splits"].values(), [])) == sorted(manifest["packages"])


def test_a_snapshot_builds_the_same_rows_without_reading_files(tiny, tmp_path, monkeypatch):
    """A corpus snapshot written here and read "elsewhere" (another cache, and no file
    of the corpus readable) gives the same rows token for token, labels and domains
    included, with the same tokenizer; the manifest names the snapshot."""
    from glassbox.training.data import code

    cfg, data = tiny
    snap = write_snapshot(data_config_from_dict(cfg), tmp_path / "corpus.json.xz")
    assert snap["bytes"] > 0 and snap["chars"] > 0

    def no_files(*a, **k):
        raise AssertionError("read the machine's files, not the snapshot")

    from_files = code._entry(data_config_from_dict({**cfg, "cache_dir": str(tmp_path / "cache")}))
    monkeypatch.setattr(code, "find_files", no_files)
    elsewhere = {
        **cfg,
        "cache_dir": str(tmp_path / "cache"),
        "code": {**cfg["code"], "snapshot": snap["path"]},
    }
    again = build_datasets(elsewhere)
    assert again.tokenizer.to_str() == data.tokenizer.to_str()
    assert again.domain_names == data.domain_names
    for split in ("train", "val", "test"):
        for column in ("input_ids", "features", "domain"):
            assert again.splits[split][column] == data.splits[split][column], (split, column)
    meta = json.loads(next((tmp_path / "cache").glob("code-*/meta.json")).read_text())
    assert meta["manifest"]["snapshot"]["sha256"] == snap["sha256"]
    moved = tmp_path / "elsewhere.json.xz"  # the same snapshot elsewhere: the same entry
    moved.write_bytes(Path(snap["path"]).read_bytes())
    entry = code._entry(data_config_from_dict(elsewhere))
    assert entry == code._entry(data_config_from_dict({**elsewhere, "code": {**elsewhere["code"], "snapshot": str(moved)}}))  # fmt: skip
    assert entry != from_files
    assert (
        meta["manifest"]["packages"]
        == json.loads(next(Path(cfg["cache_dir"]).glob("code-*/meta.json")).read_text())[
            "manifest"
        ]["packages"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split_depth": 2}, "was written with data.code.split_depth=1; this config has 2"),
        ({"vocab_size": 400}, "trained for data.code.vocab_size=300; this config has 400"),
        ({"val_share": 0.3}, "data.code.val_share=0.25"),
    ],
)
def test_a_snapshot_read_by_another_corpus_config_is_one_line(tiny, tmp_path, change, message):
    cfg, _ = tiny
    path = tmp_path / "corpus.json.xz"
    write_snapshot(data_config_from_dict(cfg), path)
    other = {**cfg, "cache_dir": str(tmp_path / "c"), "code": {**cfg["code"], **change, "snapshot": str(path)}}  # fmt: skip
    with pytest.raises(ConfigError, match="data.code.snapshot") as e:
        build_datasets(other)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_what_is_not_a_snapshot_is_one_line(tiny, tmp_path):
    cfg, _ = tiny
    junk = tmp_path / "junk.xz"
    junk.write_bytes(b"not xz")
    for path, message in ((junk, "not a corpus snapshot"), (tmp_path / "none.xz", "no such file")):
        other = {**cfg, "cache_dir": str(tmp_path / "c"), "code": {**cfg["code"], "snapshot": str(path)}}  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            build_datasets(other)
    with pytest.raises(ConfigError, match="from files, not from one"):
        write_snapshot(data_config_from_dict({**cfg, "code": {**cfg["code"], "snapshot": str(junk)}}), junk)  # fmt: skip


def test_the_analysis_reads_code_ground_truth_unchanged(tiny):
    """ground_truth_labels, the held-out protocol and information beyond the token run
    on code rows as on the skill suite's (fit on val, score on test; labels named and
    valued on the union, as analysis.audit does)."""
    _, data = tiny
    sides = {}
    for split in ("val", "test"):
        batches = suite_batches(data, split, 64)
        m = [real_tokens(b["input_ids"], b.get("attention_mask")) for b in batches]
        m = [k & (b["features"][..., 0] >= 0) for b, k in zip(batches, m)]  # not <eos>
        cols = ("input_ids", "features", "skill")
        cat = {c: torch.cat([b[c][k] for b, k in zip(batches, m)]) for c in cols}
        example = torch.cat([k.nonzero()[:, 0] + 64 * i for i, k in enumerate(m)])
        sides[split] = (cat, torch.unique(example, return_inverse=True)[1])
    (v, v_ex), (t, t_ex) = sides["val"], sides["test"]
    labels, names = ground_truth_labels(
        torch.cat([v["features"], t["features"]]), data.feature_names, data.feature_kinds,
        torch.cat([v["skill"], t["skill"]]), data.skill_names, min_count=1,
    )  # fmt: skip
    for want in ("code.in_string", "code.token_type=0", "code.in_class_body", "code.is_param"):
        assert want in names
    n = len(v_ex)
    fit = Split(v["input_ids"], labels[:n], v_ex, int(v_ex.max()) + 1)
    score = Split(t["input_ids"], labels[n:], t_ex, int(t_ex.max()) + 1)
    p = protocol(fit, score, names, min_positives=2, n_boot=10)
    assert bool(p.eligible.any()) and p.contextual.shape == (len(names),)
    assert not bool(p.contextual[names.index("code.token_type=1")])  # keywords: the token says
    assert bool(p.contextual[names.index("code.in_class_body")])  # the token does not say
    # a unit set that is the label itself adds all the token leaves unsaid
    vf, tf = v["features"][:, 0], t["features"][:, 0]
    info, _ = info_beyond_token(
        v["input_ids"], vf, vf, t["input_ids"], tf, tf, score.example, score.n_examples,
        len(TOKEN_TYPES), bootstrap_weights(score.n_examples, 10, 0),
    )  # fmt: skip
    assert 0 < info["info_bits"] <= info["entropy_given_token_bits"] + 1e-9
    assert info["acc_token_group"] > info["acc_token"]


def test_code_yaml_loads_with_every_code_key_commented():
    path = Path(__file__).parents[1] / "configs" / "data" / "code.yaml"
    cfg = data_config_from_dict(OmegaConf.load(path))
    assert cfg.source == "code" and cfg.code.paths == ["stdlib:", "site:"]
    keys = [line.strip() for line in path.read_text().splitlines() if line.startswith("  ")]
    keys = [k for k in keys if not k.startswith("#")]
    assert {k.split(":")[0] for k in keys} == set(asdict(CodeConfig()))
    assert all("#" in k for k in keys), [k for k in keys if "#" not in k]
