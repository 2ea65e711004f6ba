"""The skill suite: every ground-truth variable recomputed here from the tokens
alone (not from the generators), determinism, disjoint splits, tokenizer round trips.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from glassbox.training.data import DataConfig, build_datasets, collate, knowledge_graph
from glassbox.training.data.skills.addition import AdditionConfig
from glassbox.training.data.skills.dyck import DyckConfig
from glassbox.training.data.skills.facts import FactsConfig
from glassbox.training.data.skills.modadd import split_pairs
from glassbox.training.data.vocab import RESERVED_SKILLS, SPECIAL_TOKENS, TOOL_WORDS, tag_token

SMALL = dict(n_train=3000, n_val=600, n_test=600, n_ood=600)


def only(**weights: float) -> dict[str, float]:
    """A mix with these weights and 0 for every other skill."""
    return {s: 0.0 for s in DataConfig().mix} | weights


def make_cfg(tmp, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(tmp), **{**SMALL, **kw})


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return make_cfg(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def suite(cfg):
    return build_datasets(cfg)


class Row:
    """A row read back as words, with its ground truth by short feature name."""

    def __init__(self, data, row):
        self.ids = row["input_ids"]
        self.words = [data.tokenizer.id_to_token(i) for i in self.ids]
        self.answer = row["answer_mask"]
        self.loss = row["loss_mask"]
        self.skill = data.skill_names[row["example_skill"]]
        prefix = self.skill + "."
        self.f = {
            name[len(prefix) :]: [tok[j] for tok in row["features"]]
            for j, name in enumerate(data.feature_names)
            if name.startswith(prefix)
        }
        self.other = [
            [tok[j] for tok in row["features"]]
            for j, name in enumerate(data.feature_names)
            if not name.startswith(prefix)
        ]

    def answer_words(self) -> list[str]:
        return [w for w, a in zip(self.words, self.answer) if a]


def rows(data, split: str, skill: str) -> list[Row]:
    sid = data.skill_names.index(skill)
    ds = data.splits[split]
    out = [
        Row(data, r) for r in ds.select([i for i, s in enumerate(ds["example_skill"]) if s == sid])
    ]
    assert out, f"no {skill} rows in {split}"
    return out


def list_task(r: Row) -> tuple[str, list[str], list[str]]:
    """marker, items, answer of a copy / reverse / sort row."""
    left, right = split_at(r.words)
    return left[0], left[1:], right


def split_at(words, sep="="):
    """Content between <bos> and <eos> split at the first `sep`."""
    body = words[1:-1]
    k = body.index(sep)
    return body[:k], body[k + 1 :]


# ---------------------------------------------------------------- layout


def test_row_layout_and_masks(suite):
    vocab = suite.tokenizer.get_vocab()
    assert suite.pad_id == vocab["<pad>"] == 0
    assert set(suite.splits) == {"train", "val", "test", "ood"}
    F = len(suite.feature_names)
    for ds in suite.splits.values():
        for row in ds:
            ids, n = row["input_ids"], len(row["input_ids"])
            assert ids[0] == vocab["<bos>"] and ids[-1] == vocab["<eos>"]
            assert vocab["<pad>"] not in ids and vocab["<unk>"] not in ids
            for key in ("loss_mask", "answer_mask", "skill", "features"):
                assert len(row[key]) == n, key
            assert all(len(f) == F for f in row["features"])
            assert set(row["skill"]) == {row["example_skill"]}
            ans, loss = row["answer_mask"], row["loss_mask"]
            assert sum(ans) >= 1 and ans[-1] == 0 and loss[-1] == 1 and loss[0] == 0
            # loss_on=answer: the answer and <eos>
            assert loss == ans[:-1] + [1]
            # the answer is a suffix of the content
            first = ans.index(1)
            assert ans[first:-1] == [1] * (n - 1 - first)


def active(cfg: DataConfig) -> list[str]:
    return [k for k, w in cfg.mix.items() if w > 0]


def test_other_skills_features_do_not_apply(suite, cfg):
    for skill in active(cfg):
        for r in rows(suite, "train", skill)[:50]:
            assert all(v == -1 for col in r.other for v in col)
            # bos and eos carry no ground truth
            assert all(col[0] == -1 and col[-1] == -1 for col in r.f.values())


def test_mix_weights_share_the_splits(tmp_path):
    data = build_datasets(
        make_cfg(tmp_path, mix=only(copy=3.0, addition=1.0), n_train=400, n_ood=100)
    )
    names = data.skill_names
    train = Counter(names[s] for s in data.splits["train"]["example_skill"])
    assert train == {"copy": 300, "addition": 100}
    assert Counter(names[s] for s in data.splits["ood"]["example_skill"]) == {
        "copy": 75,
        "addition": 25,
    }


# ---------------------------------------------------------------- copy / reverse / sort


@pytest.mark.parametrize("split", ["train", "ood"])
def test_copy(suite, cfg, split):
    for r in rows(suite, split, "copy"):
        marker, items, out = list_task(r)
        assert marker == "copy"
        assert r.answer_words() == out == items
        assert len(set(items)) == len(items)
        n = len(items)
        lo, hi = (cfg.copy.max_len + 1, cfg.copy.ood_max_len) if split == "ood" else (4, 8)
        assert lo <= n <= hi
        for t, w in enumerate(r.words):
            content = t >= 2 and w not in ("=", "<eos>")
            if not content:
                assert r.f["is_repeat"][t] == -1
                continue
            assert r.f["is_repeat"][t] == int(w in r.words[2:t])
            if r.answer[t]:
                s = r.f["source_pos"][t]
                assert s < r.words.index("=") and r.ids[s] == r.ids[t]
            else:
                assert r.f["source_pos"][t] == -1
        assert [i for i in r.f["item_index"] if i >= 0] == list(range(n)) * 2


def test_reverse(suite):
    for r in rows(suite, "train", "reverse"):
        marker, items, out = list_task(r)
        assert marker == "rev"
        assert r.answer_words() == out == items[::-1]
        for t in range(len(r.words)):
            s = r.f["source_pos"][t]
            if r.answer[t]:
                k = t - (r.words.index("=") + 1)  # index in the answer
                assert s == 2 + len(items) - 1 - k and r.words[s] == r.words[t]
            else:
                assert s == -1


def test_sort(suite):
    for r in rows(suite, "train", "sort"):
        marker, items, out = list_task(r)
        assert marker == "sort"
        values = [int(w) for w in items]
        assert [int(w) for w in r.answer_words()] == sorted(values)
        order = sorted(values)
        for t, w in enumerate(r.words):
            if t >= 2 and w.isdigit():
                assert r.f["rank"][t] == order.index(int(w))
            else:
                assert r.f["rank"][t] == -1
            if r.answer[t]:
                assert r.words[r.f["source_pos"][t]] == w and r.f["source_pos"][t] < t


# ---------------------------------------------------------------- modadd


def test_modadd(suite, cfg):
    p = cfg.modadd.p
    for r in rows(suite, "train", "modadd"):
        _, mod, ta, plus, tb, eq, tc, _ = r.words
        assert (mod, plus, eq) == ("mod", "+", "=") and r.answer_words() == [tc]
        a, b, c = int(ta), int(tb), int(tc)
        assert 0 <= a < p and 0 <= b < p and c == (a + b) % p
        # a from its token on, b and c from b's token on
        assert r.f["a"] == [-1, -1, a, a, a, a, a, -1]
        assert r.f["b"] == [-1, -1, -1, -1, b, b, b, -1]
        assert r.f["c"] == [-1, -1, -1, -1, c, c, c, -1]


def test_modadd_pairs_are_split_disjointly(suite, cfg):
    pairs = {}
    for split in ("train", "val", "test"):
        pairs[split] = {(int(r.words[2]), int(r.words[4])) for r in rows(suite, split, "modadd")}
    assert not pairs["train"] & pairs["val"]
    assert not pairs["train"] & pairs["test"]
    assert not pairs["val"] & pairs["test"]
    every = split_pairs(cfg.modadd.p, cfg.modadd.train_fraction, cfg.seed)
    assert sum(len(v) for v in every.values()) == cfg.modadd.p**2
    assert len(set().union(*every.values())) == cfg.modadd.p**2
    assert "modadd" not in {suite.skill_names[s] for s in suite.splits["ood"]["example_skill"]}


# ---------------------------------------------------------------- addition


def schoolbook(a: str, b: str) -> tuple[str, list[int], list[int]]:
    """Digits of a + b (most significant first) and per column (units first) the carry
    in and out, computed digit by digit from the strings."""
    n = max(len(a), len(b))
    a, b = a.zfill(n)[::-1], b.zfill(n)[::-1]
    out, cin, cout, carry = [], [], [], 0
    for i in range(n):
        s = int(a[i]) + int(b[i]) + carry
        cin.append(carry)
        carry = s // 10
        cout.append(carry)
        out.append(str(s % 10))
    if carry:
        out.append("1")
        cin.append(1)
        cout.append(0)
    return "".join(reversed(out)), cin, cout


def check_addition(r: Row, reversed_digits: bool, lo: int, hi: int):
    left, ans = split_at(r.words)
    k = left.index("+")
    da, db = left[:k], left[k + 1 :]
    assert all(w.isdigit() and len(w) == 1 for w in da + db + ans)
    order = (lambda d: d[::-1]) if reversed_digits else (lambda d: d)
    a, b, c = ("".join(order(d)) for d in (da, db, ans))
    for x in (a, b, c):
        assert x == "0" or not x.startswith("0")  # no leading zeros
    assert lo <= len(a) <= hi and lo <= len(b) <= hi
    want, cin, cout = schoolbook(a, b)
    assert c == want == str(int(a) + int(b)) and r.answer_words() == ans
    start = 1 + len(da) + 1 + len(db) + 1  # <bos> a + b = : the first answer token
    for j in range(len(ans)):
        col = j if reversed_digits else len(ans) - 1 - j
        t = start + j
        assert r.f["carry_in"][t] == cin[col]
        assert r.f["carry_out"][t] == cout[col]
        assert r.f["sum_digit"][t] == int(ans[j])
        ai = int(a.zfill(len(c))[::-1][col])
        bi = int(b.zfill(len(c))[::-1][col])
        assert r.f["column_sum"][t] == ai + bi
        assert (ai + bi + cin[col]) % 10 == int(ans[j]) and (ai + bi + cin[col]) // 10 == cout[col]
    for operand, (off, digits) in enumerate([(1, da), (1 + len(da) + 1, db), (start, ans)]):
        for j in range(len(digits)):
            col = j if reversed_digits else len(digits) - 1 - j
            assert r.f["digit_pos"][off + j] == col
            assert r.f["operand"][off + j] == operand
    for t, w in enumerate(r.words):
        if not r.answer[t]:
            assert r.f["carry_in"][t] == r.f["carry_out"][t] == r.f["sum_digit"][t] == -1
        if not w.isdigit():
            assert r.f["digit_pos"][t] == -1


def test_addition(suite, cfg):
    a = cfg.addition
    for r in rows(suite, "train", "addition"):
        check_addition(r, False, a.min_digits, a.max_digits)
    for r in rows(suite, "ood", "addition"):
        check_addition(r, False, a.max_digits + 1, a.ood_max_digits)
    carries = [v for r in rows(suite, "train", "addition") for v in r.f["carry_out"] if v >= 0]
    assert 0.2 < sum(carries) / len(carries) < 0.8  # both carry values occur


def test_addition_reversed(tmp_path):
    cfg = make_cfg(
        tmp_path, mix=only(addition=1.0), n_train=300, addition=AdditionConfig(reversed=True)
    )
    data = build_datasets(cfg)
    for r in rows(data, "train", "addition"):
        check_addition(r, True, 1, 3)
    for r in rows(data, "ood", "addition"):
        check_addition(r, True, 4, 6)


# ---------------------------------------------------------------- dyck

PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
TYPES = {b: i for i, b in enumerate("([{<")} | {b: i for i, b in enumerate(")]}>")}


def check_dyck(r: Row, max_depth_range: tuple[int, int], len_range: tuple[int, int]):
    prompt, ans = split_at(r.words)
    assert r.answer_words() == ans and ans
    assert len_range[0] <= len(prompt) <= len_range[1]
    seq = prompt + ans
    eq = 1 + len(prompt)
    stack, peak = [], 0
    for k, b in enumerate(seq):
        t = k + 1 if k < len(prompt) else k + 2  # positions in input_ids
        if b in PAIRS:
            stack.append((t, b))
            assert r.f["is_open"][t] == 1
        else:
            assert stack, "closes a bracket that is not open"
            j, opener = stack.pop()
            assert PAIRS[opener] == b
            assert r.f["is_open"][t] == 0
            assert r.f["match_pos"][t] == j and r.f["match_pos"][j] == t
        peak = max(peak, len(stack))
        assert r.f["depth"][t] == len(stack)
        assert r.f["type"][t] == TYPES[b]
        assert r.f["top_type"][t] == (TYPES[stack[-1][1]] if stack else -1)
        if k == len(prompt) - 1:
            assert stack, "the prompt leaves something to close"
            assert r.f["depth"][eq] == len(stack)
            assert r.f["top_type"][eq] == TYPES[stack[-1][1]]
    assert not stack  # the answer closes everything
    assert max_depth_range[0] <= peak <= max_depth_range[1]
    assert r.f["is_open"][eq] == r.f["match_pos"][eq] == -1


def test_dyck(suite, cfg):
    d = cfg.dyck
    for r in rows(suite, "train", "dyck"):
        check_dyck(r, (1, d.max_depth), (d.min_len, d.max_len))
    for r in rows(suite, "ood", "dyck"):
        check_dyck(r, (d.max_depth + 1, d.ood_max_depth), (d.max_depth + 1, d.ood_max_len))
    used = {w for r in rows(suite, "train", "dyck") for w in r.words}
    assert used & set("([{<") == set("([{<"[: d.n_types])


# ---------------------------------------------------------------- facts


def parse_fact(r: Row):
    """(entity, relation, phrasing, positions) of a facts row."""
    body = r.words[1:-1]
    if body[1] == "of":
        relation, _, entity, eq, value = body
        return entity, relation, value, 1, 3, 1
    entity, relation, eq, value = body
    assert eq == "="
    return entity, relation, value, 0, 1, 2


def test_facts(suite, cfg):
    kg = knowledge_graph(cfg)
    for split in ("train", "val", "test"):
        for r in rows(suite, split, "facts"):
            entity, relation, value, phrasing, pe, pr = parse_fact(r)
            assert kg.attribute(entity, relation) == value
            assert r.answer_words() == [value]
            n = len(r.words)
            e, rel = kg.entities.index(entity), kg.relations.index(relation)
            both = max(pe, pr)
            assert r.f["entity"] == [-1] * pe + [e] * (n - 1 - pe) + [-1]
            assert r.f["relation"] == [-1] * pr + [rel] * (n - 1 - pr) + [-1]
            attr = kg.attributes.index(value)
            assert r.f["attribute"] == [-1] * both + [attr] * (n - 1 - both) + [-1]
            assert r.f["phrasing"] == [-1] + [phrasing] * (n - 2) + [-1]
            assert value in kg.values(relation)


def test_facts_holdout_by_phrasing(suite, cfg):
    """Every fact is in train; no held-out query is; held-out queries use phrasing 1."""
    kg = knowledge_graph(cfg)
    train = [parse_fact(r) for r in rows(suite, "train", "facts")]
    trained_facts = {(e, rel) for e, rel, *_ in train}
    assert trained_facts == {(e, rel) for e, rel, _ in kg.facts()}  # every fact
    trained_queries = {(e, rel, p) for e, rel, _, p, *_ in train}
    held_entities = {}
    for split in ("val", "test"):
        held = [parse_fact(r) for r in rows(suite, split, "facts")]
        assert {p for *_, p, _, _ in held} == {1}
        assert not {(e, rel, p) for e, rel, _, p, *_ in held} & trained_queries
        held_entities[split] = {e for e, *_ in held}
    assert not held_entities["val"] & held_entities["test"]
    # the entities asked "r of E" in train are the other half
    asked_1 = {e for e, _, _, p, *_ in train if p == 1}
    assert not asked_1 & (held_entities["val"] | held_entities["test"])
    assert len(asked_1) == round(cfg.facts.n_entities * cfg.facts.phrasing_train_fraction)


def test_facts_memorisation_overlaps_by_design(tmp_path):
    cfg = make_cfg(
        tmp_path, mix=only(facts=1.0), n_train=2000, n_val=100, facts=FactsConfig(holdout="none")
    )
    data = build_datasets(cfg)
    train = {tuple(r.words) for r in rows(data, "train", "facts")}
    val = [tuple(r.words) for r in rows(data, "val", "facts")]
    assert len(val) == len(set(val)) == 100
    assert set(val) <= train


def test_knowledge_graph_follows_the_seed(cfg):
    kg = knowledge_graph(cfg)
    assert kg == knowledge_graph(replace(cfg))
    assert kg.table != knowledge_graph(replace(cfg, seed=1)).table
    assert len(kg.entities) == cfg.facts.n_entities and kg.relations == tuple(cfg.facts.relations)
    assert len(kg.facts()) == len(kg.entities) * len(kg.relations)
    again = type(kg).from_dict(kg.to_dict())
    assert again == kg
    with pytest.raises(KeyError, match="unknown entity"):
        kg.attribute("Nobody", "city")
    with pytest.raises(KeyError, match="unknown relation"):
        kg.attribute(kg.entities[0], "mayor")


# ---------------------------------------------------------------- ioi


def test_ioi(suite):
    vocab = suite.tokenizer.get_vocab()
    orders = set()
    for r in rows(suite, "train", "ioi"):
        w = r.words
        assert w[1] == "When" and w[3] == "and" and w[9] == "," and w[-3] == "to"
        n1, n2, s2, ans = w[2], w[4], w[10], w[-2]
        assert n1 != n2 and s2 in (n1, n2)
        io = n2 if s2 == n1 else n1
        assert r.answer_words() == [ans] == [io]
        io_pos = w.index(io)
        s1_pos = w.index(s2)
        ref = {
            "io_token": vocab[io],
            "s_token": vocab[s2],
            "io_pos": io_pos,
            "s1_pos": s1_pos,
            "s2_pos": 10,
            "end_pos": len(w) - 3,
            "order": int(io_pos > s1_pos),
        }
        for name, value in ref.items():
            assert r.f[name][1:-1] == [value] * (len(w) - 2), name
        assert r.ids[r.f["end_pos"][1] + 1] == vocab[io]  # the answer follows end_pos
        role = {io_pos: 0, s1_pos: 1, 10: 2, len(w) - 2: 3}
        assert r.f["role"] == [role.get(t, -1) for t in range(len(w))]
        orders.add(ref["order"])
    assert orders == {0, 1}


# ---------------------------------------------------------------- splits, seeds, tokenizer


def content(data, split):
    return {tuple(r["input_ids"]) for r in data.splits[split]}


def test_held_out_splits_do_not_overlap_train(suite):
    train = content(suite, "train")
    seen = set(train)
    for split in ("val", "test", "ood"):
        held = [tuple(r["input_ids"]) for r in suite.splits[split]]
        assert len(held) == len(set(held)), f"{split} repeats an example"
        assert not set(held) & seen, f"{split} overlaps an earlier split"
        seen |= set(held)


def test_ood_is_longer(suite, cfg):
    for skill, lo in (("copy", cfg.copy.max_len), ("reverse", cfg.reverse.max_len)):
        for r in rows(suite, "ood", skill):
            _, items, _ = list_task(r)
            assert lo < len(items) <= cfg.copy.ood_max_len
    for r in rows(suite, "ood", "sort"):
        _, items, _ = list_task(r)
        assert cfg.sort.max_len < len(items) <= cfg.sort.ood_max_len


def test_determinism_from_the_seed(tmp_path, suite):
    again = build_datasets(make_cfg(tmp_path / "a"))  # a fresh build, not the cache
    for split in suite.splits:
        assert suite.splits[split].to_dict() == again.splits[split].to_dict()
    assert suite.tokenizer.to_str() == again.tokenizer.to_str()
    other = build_datasets(make_cfg(tmp_path / "b", seed=1))
    assert content(other, "train") != content(suite, "train")
    # the vocabulary depends on sizes only
    assert other.tokenizer.get_vocab() == suite.tokenizer.get_vocab()


def test_tokenizer_round_trips_every_example(suite):
    tok = suite.tokenizer
    for ds in suite.splits.values():
        for row in ds:
            text = tok.decode(row["input_ids"], skip_special_tokens=False)
            assert tok.encode(text).ids == row["input_ids"], text


def test_reserved_tokens(suite):
    vocab = suite.tokenizer.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    for skill in [*suite.skill_names, *RESERVED_SKILLS]:
        assert tag_token(skill) in vocab
    assert all(w in vocab for w in TOOL_WORDS)
    # number tokens are contiguous and in order
    zero = vocab["0"]
    assert all(vocab[str(n)] == zero + n for n in range(64))


def test_vocabulary_does_not_depend_on_the_mix(tmp_path, suite):
    only_copy = build_datasets(
        make_cfg(tmp_path, mix=only(copy=1.0), n_train=10, n_val=2, n_test=2, n_ood=2)
    )
    assert only_copy.tokenizer.get_vocab() == suite.tokenizer.get_vocab()
    assert only_copy.skill_names == suite.skill_names
    assert only_copy.feature_names == suite.feature_names


def test_task_tags_and_loss_on_all(tmp_path):
    cfg = make_cfg(tmp_path, task_tags=True, loss_on="all")
    data = build_datasets(cfg)
    vocab = data.tokenizer.get_vocab()
    for skill in active(cfg):
        for r in rows(data, "train", skill)[:20]:
            assert r.words[1] == tag_token(skill)
            assert r.loss == [0, 0] + [1] * (len(r.words) - 2)
    # positions still point at the right tokens with the tag in front
    for r in rows(data, "train", "copy"):
        for t in range(len(r.ids)):
            if r.answer[t]:
                assert r.ids[r.f["source_pos"][t]] == r.ids[t]
    for r in rows(data, "train", "ioi"):
        assert r.ids[r.f["io_pos"][2]] == r.f["io_token"][2] == vocab[r.answer_words()[0]]


# ---------------------------------------------------------------- cache and collate


def test_cache_hit_and_key(tmp_path, monkeypatch):
    import glassbox.training.data.build as build

    cfg = make_cfg(
        tmp_path, mix=only(copy=1.0, dyck=1.0), n_train=50, n_val=10, n_test=10, n_ood=10
    )
    first = build_datasets(cfg)
    assert len(list(tmp_path.iterdir())) == 1

    def fail(cfg):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(build, "build_skill_datasets", fail)
    hit = build_datasets(replace(cfg, batch_size=7, num_workers=2))  # not part of the key
    assert hit.splits["train"].to_dict() == first.splits["train"].to_dict()
    assert hit.feature_names == first.feature_names and hit.skill_names == first.skill_names
    assert hit.tokenizer.to_str() == first.tokenizer.to_str()
    with pytest.raises(AssertionError, match="rebuilt"):
        build_datasets(replace(cfg, seed=3))
    with pytest.raises(AssertionError, match="rebuilt"):
        build_datasets(replace(cfg, dyck=DyckConfig(max_depth=3)))
    # code that changes the vocabulary (or the feature columns) misses the old entry
    import glassbox.training.data.vocab as vocab

    monkeypatch.setattr(vocab, "TOOL_WORDS", (*vocab.TOOL_WORDS, "abacus"))
    with pytest.raises(AssertionError, match="rebuilt"):
        build_datasets(cfg)


def test_collate_pads(suite):
    batch_rows = [suite.splits["train"][i] for i in range(8)]
    b = collate(batch_rows, suite.pad_id)
    lengths = [len(r["input_ids"]) for r in batch_rows]
    B, T, F = 8, max(lengths), len(suite.feature_names)
    assert b["input_ids"].shape == (B, T) and b["features"].shape == (B, T, F)
    for key in ("input_ids", "attention_mask", "loss_mask", "answer_mask", "skill", "features"):
        assert b[key].dtype == torch.long
    for i, (r, n) in enumerate(zip(batch_rows, lengths)):
        assert b["input_ids"][i, :n].tolist() == r["input_ids"]
        assert (b["input_ids"][i, n:] == suite.pad_id).all()
        assert b["attention_mask"][i].tolist() == [1] * n + [0] * (T - n)
        assert b["loss_mask"][i, n:].eq(0).all() and b["answer_mask"][i, n:].eq(0).all()
        assert b["skill"][i, n:].eq(-1).all() and b["features"][i, n:].eq(-1).all()
        assert b["features"][i, :n].tolist() == r["features"]
    assert b["example_skill"].tolist() == [r["example_skill"] for r in batch_rows]


def test_skills_md_documents_every_variable(suite):
    from pathlib import Path

    import glassbox.training.data as data_pkg

    doc = (Path(data_pkg.__file__).parent / "SKILLS.md").read_text()
    for name in suite.feature_names:
        assert f"`{name}`" in doc, f"{name} is not documented in SKILLS.md"
    for skill in suite.skill_names:
        assert f"| {skill} |" in doc


DIGEST = """
import hashlib, json
from glassbox.training.data import DataConfig
from glassbox.training.data.suite import build_skill_datasets

def digest(sizes):
    data = build_skill_datasets(DataConfig(**sizes))
    blob = json.dumps({k: v.to_dict() for k, v in data.splits.items()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
"""


@pytest.mark.slow
def test_determinism_across_processes():
    """The same seed gives the same data in a fresh interpreter with another hash seed."""
    import os
    import subprocess
    import sys

    sizes = dict(n_train=2400, n_val=200, n_test=200, n_ood=200)
    here: dict = {}
    exec(DIGEST, here)
    script = DIGEST + f"print(digest({sizes!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == here["digest"](sizes)


def test_registry_declares_its_features():
    from glassbox.training.data.skills import SKILLS
    from glassbox.training.data.skills.base import FEATURE_KINDS

    for name, cls in SKILLS.items():
        assert cls.name == name
        assert cls.features and len({f.name for f in cls.features}) == len(cls.features)
        assert all(f.kind in FEATURE_KINDS and f.doc for f in cls.features)


def test_mix_order_does_not_matter(tmp_path):
    sizes = dict(n_train=30, n_val=7, n_test=7, n_ood=7)
    a = only(copy=1.0, sort=1.0, dyck=1.0)
    b = dict(reversed(list(a.items())))
    one = build_datasets(make_cfg(tmp_path / "a", mix=a, **sizes))
    two = build_datasets(make_cfg(tmp_path / "b", mix=b, **sizes))
    for split in one.splits:
        assert one.splits[split].to_dict() == two.splits[split].to_dict()


def test_empty_ood_split_reloads_from_cache(tmp_path):
    """A suite whose ood split is empty (n_ood=0) reloads from its cache entry."""
    from glassbox.training.data import DataConfig, build_datasets

    only_copy = {s: 0.0 for s in DataConfig().mix} | {"copy": 1.0}
    cfg = DataConfig(
        cache_dir=str(tmp_path), n_ood=0, n_train=300, n_val=20, n_test=20, mix=only_copy
    )
    first = build_datasets(cfg)
    again = build_datasets(cfg)
    assert len(first.splits["ood"]) == len(again.splits["ood"]) == 0
    assert again.splits["ood"].features == again.splits["train"].features
    assert again.splits["train"]["input_ids"] == first.splits["train"]["input_ids"]
