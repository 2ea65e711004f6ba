"""Code micro-tasks (analysis.code_tasks) and the analysis of a code model
(analysis.code_analysis through analysis.pipeline.analyze): known answers on
hand-written snippets tokenized by a hand-made vocabulary (every task stated before it
is looked for, with its position, target and alternative), the cases that must give no
task, prompts drawn from a tiny corpus of standard-library packages checked against
the decoded source, and the whole analysis of a tiny model on that corpus, also when
interrupted and resumed (analysis.resume)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import glassbox.analysis.code_analysis as ca
import glassbox.analysis.microcircuits as mc
from glassbox.analysis.code_analysis import NOT_APPLICABLE, is_code
from glassbox.analysis.code_rows import CodeRow, CodeVocab, byte_decoder
from glassbox.analysis.code_tasks import CODE_TASKS, code_task_data, row_tasks
from glassbox.analysis.pipeline import Analysis, analyze
from glassbox.analysis.resume import saved_parts
from glassbox.archs import Transformer
from glassbox.training.config import load_config
from glassbox.training.data import build_datasets
from glassbox.training.data.code_labels import FEATURE_NAMES, label_source
from glassbox.training.data.vocab import SPECIAL_TOKENS

F = len(FEATURE_NAMES)
BYTE = {b: c for c, b in byte_decoder().items()}


def hand_tokenizer(texts: list[str], extra: tuple[str, ...] = ()) -> Tokenizer:
    """A byte-level BPE whose tokens are exactly the GPT-2 pre-tokens of `texts`
    (plus `extra` pieces): the tokens of a snippet are known before encoding it."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    pieces = {p for t in texts for p, _ in pre.pre_tokenize_str(t)}
    pieces |= {"".join(BYTE[b] for b in e.encode()) for e in extra}
    vocab = {s: i for i, s in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab.setdefault(BYTE[b], len(vocab))
    merges = []
    for p in sorted(pieces, key=len):
        for k in range(2, len(p) + 1):
            if p[:k] not in vocab:
                merges.append((p[: k - 1], p[k - 1]))
                vocab[p[:k]] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer, tok.decoder = pre, decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def row_of(src: str, tok: Tokenizer, document_start: bool = True) -> CodeRow:
    """A packed row of one file: <bos> (<eos>: a document starts here) src <eos>, with
    the file's ground truth (-1 where it does not parse)."""
    enc = tok.encode(src, add_special_tokens=False)
    lab = label_source(src)
    rows = lab.per_token(enc.offsets).tolist() if lab else [[-1] * F] * len(enc.ids)
    head = [1, 2] if document_start else [1]
    feats = [[-1] * F] * len(head) + rows + [[-1] * F]
    return CodeRow.of(head + enc.ids + [2], feats, FEATURE_NAMES, CodeVocab(tok))


def found(row: CodeRow, tok: Tokenizer) -> dict[str, list[tuple[str, str, str]]]:
    """Per task: (the 10 characters before the target, target text, alternative text)."""
    out = {}
    for name, items in row_tasks(row).items():
        out[name] = [
            (row.text[: row.spans[t][0]][-10:], row.piece(t), tok.decode([alt]))
            for t, _, alt in items
        ]
    return out


SRC = (
    "import os\nlimit = 3\ndef f(key, n):\n    if n:\n        m = g(key, \"ab\")\n"
    "    for i in n:\n        pass\n    return (key, [n])\n"
)  # fmt: skip
EXTRA = ("')", "]:", "))", "),")  # the alternatives' tokens

# Stated before running: tokens are SRC's pre-tokens ('"ab")' is ' "', 'ab', '")').
EXPECTED = {
    # the string "ab" closes in '")' (two tokens after its opener ' "'): against "')"
    "close_quote": [('g(key, "ab', '")', "')")],
    # "):" closes "(" of f( (3 tokens back): against "]:"; "])" closes " [": against
    # "))" (the first alternative of "]"); the ")" of g( sits inside '")', the ")" of
    # " (" inside "])": not a token's first closer, no task
    "close_bracket": [("f f(key, n", "):", "]:"), ("n (key, [n", "])", "))")],
    "self_attr": [],
    "def_colon": [("f f(key, n", "):", "),")],
    # after "def ...):" (column 0) the body at 4: "\n   " against "\n"; after "if n:"
    # and "for i in n:" (column 4) the body at 8: "\n       " against "\n   "
    "indent_after_colon": [
        ("f(key, n):", "\n   ", "\n"),
        ("\n    if n:", "\n       ", "\n   "),
        ("or i in n:", "\n       ", "\n   "),
    ],
    "for_in": [("\n    for i", " in", " =")],
    # every use of key and n in the body, against the latest name before the def
    # with the same leading space (" os" for " n"; "limit" for "key" and "n")
    "param_use": [
        ("n):\n    if", " n", " os"),
        ("    m = g(", "key", "limit"),
        ("  for i in", " n", " os"),
        ("  return (", "key", "limit"),
        ("rn (key, [", "n", "limit"),
    ],
}


def test_the_registry_holds_at_least_six_documented_tasks():
    assert len(CODE_TASKS) >= 6
    assert all(len(t.doc) > 80 and "against" in t.doc for t in CODE_TASKS.values())


def test_rows_decode_as_the_tokenizer_does_with_spans_at_its_offsets():
    src = 'def é(x):\n    return "ünï" + x  # 😀\n'
    tok = hand_tokenizer(["def x(x):\n    return x + x\n"])  # é, ü, 😀: bytes only
    enc = tok.encode(src, add_special_tokens=False)
    row = row_of(src, tok)
    assert row.text == tok.decode(enc.ids) == src
    assert row.spans[0] == row.spans[1] == (0, 0)  # <bos>, <eos>
    body = row.spans[2:-1]
    for (a, b), (c, d) in zip(body, enc.offsets):  # a character's leading byte: empty
        assert a == c and b in (c, d)
    assert [b for _, b in body[:-1]] == [a for a, _ in body[1:]]  # they tile the text


def test_known_answers_on_a_hand_written_function():
    tok = hand_tokenizer([SRC], EXTRA)
    row = row_of(SRC, tok)
    assert found(row, tok) == EXPECTED
    for items in row_tasks(row).values():  # prompt ends before its target
        for t, target, alt in items:
            assert row.ids[t] == target and alt != target


def test_self_attr_assigned_against_another_objects_attribute():
    src = (
        "class A:\n    def f(self, k):\n        self.size = k\n"
        "        os.sep\n        return self.size + self.other\n"
    )
    tok = hand_tokenizer([src])
    got = found(row_of(src, tok), tok)["self_attr"]
    # "size" after the second "self." was assigned: against "sep" (os.sep, never
    # self.sep); self.other was never assigned: no task; self.size = k is the assignment
    assert got == [("turn self.", "size", "sep")]


def test_no_task_where_the_alternative_is_no_token_of_the_vocabulary():
    tok = hand_tokenizer([SRC], ("))",))  # no "]:", "}:", "')", '"),' nor "),"
    got = found(row_of(SRC, tok), tok)
    assert got["close_bracket"] == [("n (key, [n", "])", "))")]
    assert got["close_quote"] == [] and got["def_colon"] == []
    tok = hand_tokenizer([SRC])  # nor "\n" + 3 spaces: the body lines' token is there,
    assert found(row_of(SRC, tok), tok)["indent_after_colon"] == EXPECTED["indent_after_colon"]


@pytest.mark.parametrize(
    "src",
    [
        'x = f(1, "ab)\ny = [2]\n',  # an unterminated string: tokenize stops at its quote
        "x = (1, 2]\ny = (3, 4)\n",  # a closer that does not match: the row's brackets end
    ],
)
def test_no_task_from_source_that_does_not_tokenize(src):
    tok = hand_tokenizer([src], ("')", ")", "]", "}", "1", "2", "3"))
    got = found(row_of(src, tok), tok)
    assert got["close_quote"] == [] and got["close_bracket"] == []
    assert label_source(src) is None  # and the ground truth says -1 everywhere


def test_no_task_for_an_empty_pair_nor_a_row_that_starts_inside_a_string():
    # tokens 'f', '("",', ' (),', ' x', ')': "" and () each one token, no task; the
    # last ")" closes f( two tokens back: against "]"
    tok = hand_tokenizer(['f("", (), x)\n'], ("')", "]", "}"))
    got = found(row_of('f("", (), x)\n', tok), tok)
    assert got["close_quote"] == [] and got["close_bracket"] == [('("", (), x', ")", "]")]
    # a row cut inside a docstring: its first segment starts at the first newline the
    # labels place outside strings, so the docstring's words are no code
    src = '"""Text (with "quotes")\nmore ]\n"""\nx = g(a)\n'
    lab = label_source(src)
    tok = hand_tokenizer([src], ("]", "}"))
    enc = tok.encode(src, add_special_tokens=False)
    cut = next(i for i, (a, _) in enumerate(enc.offsets) if a >= src.index("Text"))
    rows = lab.per_token(enc.offsets).tolist()[cut:]
    row = CodeRow.of([1, *enc.ids[cut:], 2], [[-1] * F, *rows, [-1] * F], FEATURE_NAMES,
                     CodeVocab(tok))  # fmt: skip
    assert [p.string for p in row.python] == ["x", "=", "g", "(", "a", ")"]
    assert found(row, tok)["close_quote"] == []


# ------------------------------------------------------------------ a tiny corpus

PACKAGES = ("concurrent", "tomllib", "json", "wsgiref", "collections")  # train x2, val x2, test


@pytest.fixture(scope="module")
def code_suite(tmp_path_factory):
    cfg = {
        "source": "code",
        "seed": 0,
        "cache_dir": str(tmp_path_factory.mktemp("code")),
        "code": {"paths": [f"stdlib:{p}" for p in PACKAGES], "vocab_size": 512,
                 "block_size": 128, "val_share": 0.3, "test_share": 0.3},
    }  # fmt: skip
    return build_datasets(cfg)


def test_prompts_from_the_corpus_agree_with_the_decoded_source(code_suite):
    data = code_task_data(code_suite, "val", n=12, seed=0)
    # (a 512-token BPE has "):" but not "),": def_colon is rare here)
    assert set(data) >= {"close_quote", "close_bracket", "indent_after_colon"}
    dec = code_suite.tokenizer.decode
    for name, d in data.items():
        assert len({tuple(r.tolist()) for r in d.input_ids}) == len(d)  # one prompt a row
        for i in range(len(d)):
            pos = int(d.position[i])
            ids = d.input_ids[i, : pos + 1].tolist()
            target, alt = dec([int(d.target[i])]), dec([int(d.alternative[i])])
            assert ids[-1] == int(d.target[i]) and (d.input_ids[i, pos + 1 :] == 0).all()
            if name == "close_quote":  # one quote character swapped for the other
                diff = [(a, b) for a, b in zip(target, alt) if a != b]
                assert len(target) == len(alt) and diff in ([('"', "'")], [("'", '"')])
            if name in ("close_bracket",):
                diff = [(a, b) for a, b in zip(target, alt) if a != b]
                assert len(diff) == 1 and {*diff[0]} <= set(")]}")
            if name == "def_colon":
                assert target.endswith(":") and alt == target[:-1] + ","
                assert "def " in dec(ids[:-1]).rsplit("\n\n", 1)[-1]
            if name == "indent_after_colon":
                assert dec(ids[:-1]).endswith(":") and len(target) > len(alt)
                assert target.strip(" ") == alt.strip(" ") == "\n"
    again = code_task_data(code_suite, "val", n=12, seed=0)
    assert all(torch.equal(again[k].input_ids, d.input_ids) for k, d in data.items())


@pytest.fixture(scope="module")
def tiny(code_suite):
    cfg = load_config("configs/dense.yaml", ["model.d_model=32", "model.n_heads=2",
                                             "model.max_seq_len=128", "model.ffn.d_ff=64"])  # fmt: skip
    mc = dataclasses.replace(
        cfg.model, vocab_size=code_suite.tokenizer.get_vocab_size(), pad_token_id=0
    )
    torch.manual_seed(0)
    return Transformer(mc).eval()


def test_analyze_routes_code_to_features_domains_and_code_micro_tasks(code_suite, tiny, tmp_path):
    assert is_code(code_suite)
    res = analyze(tiny, code_suite, ("interp",), tmp_path, n_examples=24)
    again = Analysis.read(res.write(tmp_path / "analysis.json"))
    assert again.data == res.data == "code" and set(again.sections) == {"interp"}
    interp, s = res.sections["interp"], res.summary
    assert set(interp["not_applicable"]) == set(NOT_APPLICABLE)
    assert set(res.not_applicable) == set(NOT_APPLICABLE)
    assert not any(k.startswith("interp.info_beyond_token") for k in s)  # about skills
    # the feature scores, read off code's ground truth, beside their baselines
    assert interp["coverage"]["n_ground_truth_features"] >= 10
    assert "code.in_string" in interp["coverage"]["features"]
    for key in ("interp.coverage", "baselines.token.interp.coverage",
                "baselines.token.interp.coverage_heldout", "interp.coverage_heldout"):  # fmt: skip
        assert 0 <= s[key] <= 1, key
    assert -1 <= s["interp.lift_pooled"] <= 1 and s["interp.n_features_scored"] >= 5
    lo, hi = s["interp.lift_pooled_ci"]
    assert lo <= s["interp.lift_pooled"] <= hi
    assert "baselines.random.interp.lift_pooled" in s and "baselines.init.interp.lift_pooled" in s
    # the domain scores: packages held out, information beyond the token about them
    assert interp["domains"] == sorted(PACKAGES) and s["interp.n_domains_held_out"] == 2
    assert s["interp.domain_info_beyond_token"] >= -1e-9
    assert all(s[f"domains.{d}.loss"] > 0 for d in ("json", "wsgiref"))
    # the code micro-tasks, untrained: drawn, none learned, so no circuit is claimed
    tasks = interp["microcircuits"]
    assert set(tasks) <= set(CODE_TASKS) and len(tasks) >= 4
    assert all(t["learned"] is False and t["clean_loss"] > 0 for t in tasks.values())
    assert s["interp.microcircuit_tasks"] == 0 == s["baselines.init.interp.microcircuit_tasks"]


def test_an_interrupted_scoring_resumes_to_the_uninterrupted_analysis(
    code_suite, tiny, tmp_path, monkeypatch
):
    out = tmp_path / "plots"
    whole = analyze(tiny, code_suite, ("interp",), out, n_examples=24)
    tasks = list(whole.sections["interp"]["microcircuits"])
    real_task, real_text = mc.circuit_for_task, ca.text_report
    calls: dict[str, list] = {"task": [], "text": []}

    def circuit_for_task(*args, **kw):
        if stop_after is not None and len(calls["task"]) == stop_after:
            raise KeyboardInterrupt  # the machine stopped during the third micro-task
        calls["task"].append(1)
        return real_task(*args, **kw)

    def text_report(*args, **kw):
        calls["text"].append(1)
        return real_text(*args, **kw)

    monkeypatch.setattr(mc, "circuit_for_task", circuit_for_task)
    monkeypatch.setattr(ca, "text_report", text_report)
    parts, stop_after = tmp_path / "parts.json", 2
    with pytest.raises(KeyboardInterrupt), saved_parts(parts, "key"):
        analyze(tiny, code_suite, ("interp",), out, n_examples=24)
    saved = set(json.loads(parts.read_text())["parts"])
    done = {f"interp/trained/microcircuits/{t}" for t in tasks[:2]}
    assert saved == {"interp/trained/text", "interp/trained/features", *done}
    calls, stop_after = {"task": [], "text": []}, None
    with saved_parts(parts, "key") as store:
        resumed = analyze(tiny, code_suite, ("interp",), out, n_examples=24)
    # read back: the trained model's text scores and first two tasks; the twin's computed
    assert len(calls["text"]) == 1 and len(calls["task"]) == 2 * len(tasks) - 2
    assert store.reused_seconds > 0
    assert resumed.summary == whole.summary and resumed.sections == whole.sections
