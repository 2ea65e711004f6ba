"""Build the skill suite: sample every split, encode it into rows, return a DatasetDict.

Row layout (one example per row):

    input_ids    <bos> [<tag:skill>] words... <eos>
    loss_mask    1 on the tokens trained on: the answer (or the example's `loss` words)
                 and <eos> (the model learns to stop), or with loss_on=all every token
                 but <bos> and the tag; never on what a tool wrote (`tool_written`)
    answer_mask  1 on the answer tokens (not <eos>: accuracy is about the answer)
    skill        the skill id on every token
    features     (T, F): the ground truth, -1 where a variable does not apply
    example_skill

Randomness: every (skill, split) has its own generator seeded from
"seed:skill:split", so weights and split sizes change how many examples are
drawn from a skill's stream, never which, and no skill depends on another.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, IterableDatasetDict
from datasets.table import InMemoryTable
from tokenizers import Tokenizer

from glassbox.training.data.config import DataConfig
from glassbox.training.data.skills import SKILLS, Example, Skill
from glassbox.training.data.skills.base import SPLITS
from glassbox.training.data.vocab import BOS, EOS, PAD, build_word_tokenizer, tag_token

MAX_TRIES_PER_EXAMPLE = 20  # held-out sampling gives up after this many draws per example asked


@dataclass
class SuiteData:
    """What build_datasets returns."""

    splits: DatasetDict | IterableDatasetDict  # train, val, test (+ ood for skills)
    tokenizer: Tokenizer  # save it with every checkpoint (tokenizer.json)
    skill_names: list[str]  # index = skill id in the `skill` / `example_skill` columns
    feature_names: list[str]  # "skill.variable"; index = column of `features`
    pad_id: int  # 0
    feature_kinds: list[str] | None = None  # bool | int | cat | pos | token, per feature
    domain_names: list[str] | None = None  # text: index = domain id in the `domain` column


def make_skills(cfg: DataConfig) -> list[Skill]:
    """Every registered skill (also those with weight 0: ids and vocabulary stay fixed)."""
    return [cls(cfg) for cls in SKILLS.values()]


def suite_tokenizer(cfg: DataConfig, skills: list[Skill] | None = None) -> Tokenizer:
    """The word-level tokenizer of the suite `cfg` describes."""
    skills = skills or make_skills(cfg)
    return build_word_tokenizer([s.name for s in skills], [w for s in skills for w in s.words()])


def active_mix(cfg: DataConfig) -> dict[str, float]:
    """The skills weighed above 0, in registry order whatever the order of `mix`
    (the cache key ignores that order, so the data must too)."""
    return {name: cfg.mix[name] for name in SKILLS if cfg.mix.get(name, 0) > 0}


def allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split n examples by weight, rounding by largest remainder (the counts sum to n)."""
    total = sum(weights.values())
    if n == 0 or total <= 0:
        return dict.fromkeys(weights, 0)
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def sample_split(
    skill: Skill, split: str, n: int, seed: int, exclude: set[tuple[str, ...]]
) -> list[Example]:
    """n examples of one skill and split. Held-out splits hold distinct examples, none
    of them in `exclude` (the content already used by earlier splits) when the skill
    keeps its splits disjoint; if the skill has fewer such examples, fewer come back."""
    rng = random.Random(f"{seed}:{skill.name}:{split}")
    if split == "train":
        return skill.sample_train(rng, n)
    out: list[Example] = []
    seen = set(exclude) if skill.disjoint_splits else set()
    for _ in range(n * MAX_TRIES_PER_EXAMPLE):
        if len(out) == n:
            break
        ex = skill.sample(rng, split)
        key = tuple(ex.words)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def build_skill_datasets(cfg: DataConfig) -> SuiteData:
    """Generate train / val / test / ood for the skills `cfg.mix` weighs above 0."""
    skills = make_skills(cfg)
    tokenizer = suite_tokenizer(cfg, skills)
    vocab = tokenizer.get_vocab()
    for s in skills:
        s.vocab = vocab
    feature_names = [f"{s.name}.{f.name}" for s in skills for f in s.features]
    kinds = [f.kind for s in skills for f in s.features]

    active = active_mix(cfg)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, "ood": cfg.n_ood}
    by_name = {s.name: s for s in skills}
    ids = {s.name: i for i, s in enumerate(skills)}
    used: dict[str, set[tuple[str, ...]]] = {name: set() for name in active}
    rows: dict[str, list[tuple[int, Example]]] = {}
    for split in SPLITS:
        weights = active
        if split == "ood":
            weights = {k: w for k, w in active.items() if by_name[k].has_ood}
        counts = allocate(sizes[split], weights)
        rows[split] = []
        for name, n in counts.items():
            skill = by_name[name]
            exs = sample_split(skill, split, n, cfg.seed, used[name])
            used[name].update(tuple(ex.words) for ex in exs)
            rows[split] += [(ids[name], ex) for ex in exs]
        random.Random(f"{cfg.seed}:shuffle:{split}").shuffle(rows[split])

    encoder = _Encoder(cfg, skills, vocab)
    splits = DatasetDict({k: encoder.dataset(v) for k, v in rows.items()})
    return SuiteData(splits, tokenizer, [s.name for s in skills], feature_names, vocab[PAD], kinds)


class _Encoder:
    """Turns (skill id, Example) pairs into an arrow table of rows."""

    def __init__(self, cfg: DataConfig, skills: list[Skill], vocab: dict[str, int]):
        self.vocab = vocab
        self.loss_all = cfg.loss_on == "all"
        self.tags = [vocab[tag_token(s.name)] for s in skills] if cfg.task_tags else None
        self.prefix = 2 if cfg.task_tags else 1  # <bos> [tag]
        # per skill: (first feature column, [(name, is_position)])
        self.columns: list[tuple[int, list[tuple[str, bool]]]] = []
        col = 0
        for s in skills:
            self.columns.append((col, [(f.name, f.kind == "pos") for f in s.features]))
            col += len(s.features)
        self.n_features = col

    def dataset(self, rows: list[tuple[int, Example]]) -> Dataset:
        p = self.prefix
        lengths = np.array([len(ex.words) + p + 1 for _, ex in rows], dtype=np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        ids = np.empty(total, np.int32)
        answer = np.zeros(total, np.int32)
        trained = np.zeros(total, np.int32)  # the targets under loss_on=answer
        written = np.zeros(total, np.int32)  # written by a tool: never a target
        skill = np.empty(total, np.int32)
        feats = np.full((total, self.n_features), -1, np.int32)
        bos, eos = self.vocab[BOS], self.vocab[EOS]
        for (sid, ex), start, end in zip(rows, offsets[:-1], offsets[1:]):
            body = slice(start + p, end - 1)
            ids[start] = bos
            if self.tags:
                ids[start + 1] = self.tags[sid]
            ids[body] = [self.vocab[w] for w in ex.words]
            ids[end - 1] = eos
            answer[body] = ex.answer
            trained[body] = ex.answer if ex.loss is None else ex.loss
            if ex.tool_written is not None:
                written[body] = ex.tool_written
            skill[start:end] = sid
            col, names = self.columns[sid]
            for j, (name, is_pos) in enumerate(names):
                v = np.asarray(ex.features[name], np.int32)
                feats[body, col + j] = np.where(v >= 0, v + p, -1) if is_pos else v
        loss = self._loss_mask(offsets, trained, written)
        example_skill = np.array([sid for sid, _ in rows], np.int32)
        return _arrow_dataset(offsets, ids, loss, answer, skill, feats, example_skill)

    def _loss_mask(
        self, offsets: np.ndarray, trained: np.ndarray, written: np.ndarray
    ) -> np.ndarray:
        """1 where a position is a target: under loss_on=all every token but <bos> and
        the given tag, else the trained ones and <eos>; never a token a tool wrote."""
        loss = np.zeros(len(trained), np.int32)
        if self.loss_all:
            loss[:] = 1
            loss[offsets[:-1]] = 0  # <bos>
            if self.tags:
                loss[offsets[:-1] + 1] = 0  # the given tag is not a target
        else:
            loss[:] = trained
            loss[offsets[1:] - 1] = 1  # <eos>
        loss[written == 1] = 0
        return loss


def _arrow_dataset(
    offsets: np.ndarray,
    ids: np.ndarray,
    loss: np.ndarray,
    answer: np.ndarray,
    skill: np.ndarray,
    feats: np.ndarray,
    example_skill: np.ndarray,
) -> Dataset:
    """The rows as a Dataset of list columns (row i spans offsets[i]:offsets[i + 1] of
    each flat per-token array; feats is (tokens, features)), fingerprinted by a hash
    of the columns."""
    total = len(ids)

    def lists(flat: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))

    f = feats.shape[1]
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(total + 1, dtype=np.int32) * f), pa.array(feats.reshape(-1))
    )
    table = pa.table(
        {
            "input_ids": lists(ids),
            "loss_mask": lists(loss),
            "answer_mask": lists(answer),
            "skill": lists(skill),
            "features": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), inner),
            "example_skill": pa.array(example_skill),
        }
    )
    # An explicit fingerprint (a hash of the columns): datasets would otherwise
    # pickle the whole table with dill to make one, slow on large splits and
    # failing on some pyarrow / Python pairs (MonthDayNano on Python 3.12.3).
    digest = hashlib.sha256()
    for column in (ids, loss, answer, skill, feats, offsets):
        digest.update(column.tobytes())
    return Dataset(InMemoryTable(table), fingerprint=digest.hexdigest()[:16])
