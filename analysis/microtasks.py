"""Binary micro-tasks (Gao et al. 2025): one next-token decision, the target token
against one alternative on the same prompt, built from the skill suite's own ground
truth.

A task reads one example of its skill and returns (position, target, alternative):
the model predicts input_ids[position] from position - 1, and the task loss is the
cross-entropy over the pair, -log softmax(logit_target, logit_alt)[0], so a uniform
guess costs ln 2 and accuracy is logit_target > logit_alt.

    data = task_data(suite, "val", ["dyck_first_closer"], n=64, seed=0)["dyck_first_closer"]
    data.input_ids (N, T), data.position (N,), data.target (N,), data.alternative (N,)

Tasks are registered with `@micro_task(name, skill)`; `MICRO_TASKS` lists them. Each
says in its docstring what the alternative is.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassbox.training.data import SuiteData


@dataclass
class Row:
    """One example as a task reads it: ids (T,), the answer positions, the feature
    values by name at each position, and the token ids of words (`tok("7")`)."""

    ids: list[int]
    answers: list[int]
    features: dict[str, list[int]]
    tok: Callable[[str], int | None]
    pools: dict[str, Any]

    def value(self, name: str, t: int) -> int:
        return self.features[name][t]


TaskFn = Callable[[Row], tuple[int, int, int] | None]


@dataclass(frozen=True)
class MicroTask:
    name: str
    skill: str
    fn: TaskFn
    doc: str


MICRO_TASKS: dict[str, MicroTask] = {}


def micro_task(name: str, skill: str):
    """Register a task: fn(Row) -> (position, target id, alternative id) or None."""

    def deco(fn: TaskFn) -> TaskFn:
        MICRO_TASKS[name] = MicroTask(name, skill, fn, (fn.__doc__ or "").strip())
        return fn

    return deco


def _pair(r: Row, pos: int, alt: int | None) -> tuple[int, int, int] | None:
    if alt is None or alt == r.ids[pos]:
        return None
    return pos, r.ids[pos], alt


# ------------------------------------------------------------------ the tasks


@micro_task("copy_first", "copy")
def _copy_first(r: Row):
    """The first answer item (the list's first) against the list's second item."""
    return _pair(r, r.answers[0], r.ids[r.answers[1]]) if len(r.answers) > 1 else None


@micro_task("copy_next", "copy")
@micro_task("reverse_next", "reverse")
def _middle_vs_previous(r: Row):
    """The middle answer item against the item just written before it."""
    j = len(r.answers) // 2
    return _pair(r, r.answers[j], r.ids[r.answers[j - 1]]) if j >= 1 else None


@micro_task("copy_last", "copy")
def _copy_last(r: Row):
    """The last answer item against the list's first item."""
    return _pair(r, r.answers[-1], r.ids[r.answers[0]]) if len(r.answers) > 1 else None


@micro_task("reverse_first", "reverse")
def _reverse_first(r: Row):
    """The first answer item (the list's last) against the list's first item."""
    return _pair(r, r.answers[0], r.ids[r.answers[-1]]) if len(r.answers) > 1 else None


@micro_task("sort_min", "sort")
def _sort_min(r: Row):
    """The smallest item against the second smallest."""
    return _pair(r, r.answers[0], r.ids[r.answers[1]]) if len(r.answers) > 1 else None


@micro_task("sort_next", "sort")
def _sort_next(r: Row):
    """The second answer item against the third (the next larger)."""
    return _pair(r, r.answers[1], r.ids[r.answers[2]]) if len(r.answers) > 2 else None


def _other_closer(r: Row, pos: int) -> int | None:
    closers = r.pools["closers"]
    i = closers.index(r.ids[pos]) if r.ids[pos] in closers else -1
    return closers[(i + 1) % len(closers)] if i >= 0 and len(closers) > 1 else None


@micro_task("dyck_first_closer", "dyck")
def _dyck_first(r: Row):
    """The first closer (the innermost open bracket's type) against the next type's closer."""
    return _pair(r, r.answers[0], _other_closer(r, r.answers[0]))


@micro_task("dyck_last_closer", "dyck")
def _dyck_last(r: Row):
    """The last closer (the outermost open bracket's type) against the next type's closer."""
    if len(r.answers) < 2:
        return None
    return _pair(r, r.answers[-1], _other_closer(r, r.answers[-1]))


@micro_task("ioi_io", "ioi")
def _ioi(r: Row):
    """The indirect object against the subject."""
    pos = r.answers[0]
    return _pair(r, pos, r.value("ioi.s_token", pos))


@micro_task("facts_attribute", "facts")
def _facts(r: Row):
    """The entity's attribute against another value of the same relation."""
    pos = r.answers[0]
    values = r.pools["facts"].get(r.value("facts.relation", pos), [])
    if len(values) < 2 or r.ids[pos] not in values:
        return None
    return _pair(r, pos, values[(values.index(r.ids[pos]) + 1) % len(values)])


def _digit(r: Row, pos: int, shift: int) -> int | None:
    word = r.pools["words"].get(r.ids[pos], "")
    return r.tok(str((int(word) + shift) % 10)) if word.isdigit() and len(word) == 1 else None


@micro_task("addition_carry", "addition")
def _add_carry(r: Row):
    """An answer digit with a carry in against the digit without it (one less)."""
    pos = next((t for t in r.answers if r.value("addition.carry_in", t) == 1), None)
    return None if pos is None else _pair(r, pos, _digit(r, pos, -1))


@micro_task("addition_no_carry", "addition")
def _add_no_carry(r: Row):
    """An answer digit without a carry in against the digit with one (one more)."""
    pos = next((t for t in r.answers if r.value("addition.carry_in", t) == 0), None)
    return None if pos is None else _pair(r, pos, _digit(r, pos, 1))


@micro_task("addition_units", "addition")
def _add_units(r: Row):
    """The units digit of the sum (the last answer digit) against one more."""
    return _pair(r, r.answers[-1], _digit(r, r.answers[-1], 1))


@micro_task("modadd_next", "modadd")
def _modadd_next(r: Row):
    """c = (a + b) mod p against c + 1 (mod p)."""
    pos = r.answers[0]
    return _pair(r, pos, r.tok(str((r.value("modadd.c", pos) + 1) % r.pools["p"])))


@micro_task("modadd_vs_a", "modadd")
def _modadd_vs_a(r: Row):
    """c against the first operand a."""
    pos = r.answers[0]
    return _pair(r, pos, r.tok(str(r.value("modadd.a", pos))))


# ------------------------------------------------------------------ building data


@dataclass
class TaskData:
    """N prompts of one task: input_ids (N, T) right-padded (T: the longest prompt
    up to its target, inclusive), position (N,) of the target token, target and
    alternative (N,) token ids."""

    name: str
    input_ids: Tensor
    position: Tensor
    target: Tensor
    alternative: Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def subset(self, idx: Tensor) -> TaskData:
        return TaskData(self.name, self.input_ids[idx], self.position[idx], self.target[idx],
                        self.alternative[idx])  # fmt: skip

    def to(self, device) -> TaskData:
        return TaskData(self.name, *(x.to(device) for x in (self.input_ids, self.position,
                                                              self.target, self.alternative)))  # fmt: skip

    def nonsense(self, seed: int = 0) -> TaskData:
        """The same prompts with target and alternative swapped on a random half: a
        task no mechanism of the model can perform (Drori 2026's control)."""
        g = torch.Generator().manual_seed(seed)
        swap = torch.rand(len(self), generator=g) < 0.5
        t = torch.where(swap, self.alternative, self.target)
        a = torch.where(swap, self.target, self.alternative)
        return TaskData(f"{self.name}.nonsense", self.input_ids, self.position, t, a)


def _pools(suite: SuiteData, rows: Sequence[dict]) -> dict[str, Any]:
    vocab = suite.tokenizer.get_vocab()
    words = {i: w for w, i in vocab.items()}
    closers = [vocab[c] for c in (")", "]", "}", ">") if c in vocab]
    fi = {n: j for j, n in enumerate(suite.feature_names)}
    facts: dict[int, set[int]] = {}
    p = 1
    for row in rows:
        for t, a in enumerate(row["answer_mask"]):
            f = row["features"][t]
            if a and "facts.relation" in fi and f[fi["facts.relation"]] >= 0:
                facts.setdefault(f[fi["facts.relation"]], set()).add(row["input_ids"][t])
            if "modadd.a" in fi and f[fi["modadd.a"]] >= 0:
                p = max(p, f[fi["modadd.a"]] + 1, f[fi["modadd.b"]] + 1)
    return {
        "words": words,
        "closers": closers,
        "facts": {k: sorted(v) for k, v in facts.items()},
        "p": p,
    }


def task_data(
    suite: SuiteData, split: str, names: Sequence[str], n: int = 64, seed: int = 0
) -> dict[str, TaskData]:
    """{task name: up to n prompts} of the tasks `names` from a seeded pass over the
    split's examples of each task's skill (tasks whose skill the suite lacks, or
    with no prompt, are left out)."""
    ds = suite.splits[split]
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    skill_of = {s: i for i, s in enumerate(suite.skill_names)}
    wanted = {name: MICRO_TASKS[name] for name in names if MICRO_TASKS[name].skill in skill_of}
    skill_ids = {skill_of[t.skill] for t in wanted.values()}
    rows = [ds[i] for i in order if ds[i]["example_skill"] in skill_ids]
    pools = _pools(suite, rows)
    vocab = suite.tokenizer.get_vocab()
    fi = {nm: j for j, nm in enumerate(suite.feature_names)}
    found: dict[str, list[tuple[list[int], int, int, int]]] = {k: [] for k in wanted}
    for row in rows:
        skill = suite.skill_names[row["example_skill"]]
        tasks = [t for t in wanted.values() if t.skill == skill and len(found[t.name]) < n]
        if not tasks:
            continue
        feats = {nm: [f[j] for f in row["features"]] for nm, j in fi.items()}
        r = Row(row["input_ids"], [t for t, a in enumerate(row["answer_mask"]) if a], feats,
                vocab.get, pools)  # fmt: skip
        if not r.answers:
            continue
        for task in tasks:
            got = task.fn(r)
            if got is not None:
                pos, tgt, alt = got
                found[task.name].append((r.ids[: pos + 1], pos, tgt, alt))
    out = {}
    for name, items in found.items():
        if not items:
            continue
        T = max(len(ids) for ids, *_ in items)
        ids = torch.full((len(items), T), suite.pad_id, dtype=torch.long)
        for k, (seq, *_) in enumerate(items):
            ids[k, : len(seq)] = torch.tensor(seq)
        pos, tgt, alt = (torch.tensor([it[j] for it in items]) for j in (1, 2, 3))
        out[name] = TaskData(name, ids, pos, tgt, alt)
    return out


def task_logit_diff(logits: Tensor, data: TaskData) -> Tensor:
    """(N,) logit_target - logit_alt at each prompt's prediction position;
    logits (N, T, V)."""
    rows = torch.arange(len(data), device=logits.device)
    at = logits[rows, data.position - 1].float()  # (N, V)
    return at.gather(1, data.target[:, None]).squeeze(1) - at.gather(
        1, data.alternative[:, None]
    ).squeeze(1)


def task_loss(diff: Tensor) -> Tensor:
    """(N,) the pair cross-entropy -log sigmoid(logit_target - logit_alt): ln 2 for a
    uniform guess between the two."""
    return torch.nn.functional.softplus(-diff)


__all__ = [
    "MICRO_TASKS",
    "MicroTask",
    "TaskData",
    "micro_task",
    "task_data",
    "task_logit_diff",
    "task_loss",
]
