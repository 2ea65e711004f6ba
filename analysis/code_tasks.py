"""Binary micro-tasks on Python code (Gao et al. 2025's kind, on their kind of data):
one next-token decision, the target token against one alternative on the same prompt,
found in the rows of the code corpus (training.data.code) from its ground truth
(training.data.code_labels) and, where the labels do not suffice, from the standard
library's `tokenize` on the decoded row (analysis.code_rows).

    data = code_task_data(suite, "val", n=64, seed=0)["close_bracket"]
    data.input_ids (N, T), data.position (N,), data.target (N,), data.alternative (N,)

The prompts are analysis.microtasks' `TaskData` and the task loss its pair loss, so
analysis.microcircuits learns their circuits unchanged. A task is a function of one row
(`CodeRow`) to every (position, target id, alternative id) it finds there, registered
with `@code_task(name)` in `CODE_TASKS`; `code_task_data` draws rows with the one
sampler (analysis.batches.sample_indices) and keeps one seeded position per row, so the
two halves microcircuits fits and scores on are different rows. Target and alternative
are always single tokens of the vocabulary, and the alternative is always what the
same prompt would be followed by under a wrong reading of the code: each task's
docstring says which, and why a copy of the previous token does not solve it.
"""

from __future__ import annotations

import keyword
import random
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from glassbox.analysis.batches import sample_indices
from glassbox.analysis.code_rows import CodeRow, CodeVocab
from glassbox.analysis.microtasks import TaskData
from glassbox.training.data import SuiteData
from glassbox.training.data.code_labels import KEYWORD, NAME

Found = tuple[int, int, int]  # position, target id, alternative id
CodeTaskFn = Callable[[CodeRow], list[Found]]
OTHER_CLOSERS = {")": "]}", "]": ")}", "}": ")]"}
OTHER_QUOTE = {'"': "'", "'": '"'}
CONVENTIONAL = ("self", "cls")  # parameters a model names without reading the signature


@dataclass(frozen=True)
class CodeTask:
    name: str
    fn: CodeTaskFn
    doc: str


CODE_TASKS: dict[str, CodeTask] = {}


def code_task(name: str):
    """Register a task: fn(CodeRow) -> [(position, target id, alternative id), ...]."""

    def deco(fn: CodeTaskFn) -> CodeTaskFn:
        CODE_TASKS[name] = CodeTask(name, fn, (fn.__doc__ or "").strip())
        return fn

    return deco


def _found(row: CodeRow, t: int, alt: int | None) -> list[Found]:
    return [] if alt is None or alt == row.ids[t] or t < 1 else [(t, row.ids[t], alt)]


def _is_name_start(row: CodeRow, t: int) -> bool:
    """Token t begins an identifier: after its leading spaces, or right after a token
    that does not end inside one."""
    p = row.piece(t)
    head = p.lstrip(" ")
    if not head or not row.name_at(row.spans[t][1] - len(head)):
        return False
    before = row.piece(t - 1) if t > 0 else ""
    return head != p or not before or not (before[-1].isalnum() or before[-1] == "_")


# ------------------------------------------------------------------ from tokenize


@code_task("close_quote")
def close_quote(row: CodeRow) -> list[Found]:
    """The token holding a one-line string's closing quote, against the same token
    with the other quote character (' for ", " for '). Which one closes the string is
    said only by its opening quote, at least one token back (an empty string's `""`
    written as two tokens, where copying the previous token would do, is left out);
    triple-quoted strings are left out."""
    out: list[Found] = []
    for p in row.python:
        body = p.string.lstrip("rRbBuUfF")
        if p.type != tokenize.STRING or body[:3] in ('"""', "'''") or "\n" in p.string:
            continue
        t, opener = row.token_at(p.end - 1), row.token_at(p.end - len(body))
        if t - opener >= 2:
            out += _found(row, t, row.swapped(t, p.end - 1, OTHER_QUOTE[body[0]]))
    return out


@code_task("close_bracket")
def close_bracket(row: CodeRow) -> list[Found]:
    """The token that begins with the closer of the innermost open bracket, against the
    same token with another closer (for ")" the first of "]", "}" that makes a token of
    the vocabulary; "]": ")", "}"; "}": ")", "]"). The opener is in the prompt, at
    least one token back (so `()` is no bigram), with brackets opened and closed
    between. The stack is tokenize's operators: brackets in strings and comments do
    not count; a mismatched closer ends the row's tasks."""
    out: list[Found] = []
    stack: list[tuple[str, int]] = []
    for p in row.python:
        if p.type != tokenize.OP or p.string not in "([{)]}":
            continue
        if p.string in "([{":
            stack.append((p.string, p.start))
            continue
        if not stack or "([{".index(stack[-1][0]) != ")]}".index(p.string):
            break
        _, at = stack.pop()
        t = row.token_at(p.start)
        piece = row.piece(t)
        if p.start != row.spans[t][1] - len(piece.lstrip(" ")) or t - row.token_at(at) < 2:
            continue
        alts = (row.swapped(t, p.start, c) for c in OTHER_CLOSERS[p.string])
        out += _found(row, t, next((a for a in alts if a is not None), None))
    return out


@code_task("self_attr")
def self_attr(row: CodeRow) -> list[Found]:
    """After `self.`, the first token of an attribute assigned earlier in the prompt
    (`self.x = ...`), against the first token of a name seen in the prompt only as
    another object's attribute (`obj.y`, never `self.y`): both are attribute names
    the prompt holds after a dot, only the assignment says which one self has. The
    most recent such name is taken; the token before the target is the dot."""
    py = row.python
    assigned: set[str] = set()
    on_self: set[str] = set()
    other: dict[str, int] = {}  # attribute name -> token of its latest first token
    out: list[Found] = []
    for k in range(1, len(py) - 1):
        if py[k].string != "." or py[k + 1].type != tokenize.NAME:
            continue
        name, t = py[k + 1].string, row.token_at(py[k + 1].start)
        starts = row.spans[t][0] == py[k + 1].start
        if py[k - 1].string != "self":
            if starts and name not in on_self:
                other[name] = t
            continue
        if starts and name in assigned:
            alts = [(u, n) for n, u in other.items() if n not in on_self and u < t]
            alt = max(alts)[0] if alts else None
            out += _found(row, t, row.ids[alt] if alt is not None else None)
        on_self.add(name)
        other.pop(name, None)
        if k + 2 < len(py) and py[k + 2].string == "=":
            assigned.add(name)
    return out


# ------------------------------------------------------------------ from the labels


@code_task("def_colon")
def def_colon(row: CodeRow) -> list[Found]:
    """The token ending a def header (`):`, `:`), against the same token with a comma
    (`),`, `,`): after a closing bracket a comma is what a call or a tuple has, a colon
    only a header; which one depends on the `def` at the start of the signature, in
    the prompt (a signature the row cuts is left out)."""
    out: list[Found] = []
    for t in range(2, len(row) - 1):
        piece = row.piece(t)
        if not (row.label("in_def_signature", t) == 1 and piece.endswith(":")):
            continue
        if row.label("in_def_signature", t + 1) != 0:
            continue
        s = t
        while s > 0 and row.label("in_def_signature", s - 1) == 1:
            s -= 1
        if row.piece(s).strip() in ("def", "async"):
            out += _found(row, t, row.swapped(t, row.spans[t][1] - 1, ","))
    return out


@code_task("indent_after_colon")
def indent_after_colon(row: CodeRow) -> list[Found]:
    """The whitespace token (a newline and spaces) opening the first line of a block,
    after a header ending in ":", against the whitespace token that keeps the header's
    own indentation ("\\n" + its spaces less the one the next token carries, or "\\n"
    at column 0): only the colon says to indent, and copying the last indentation
    token of the prompt gives the alternative, not the target."""
    out: list[Found] = []
    for t in range(2, len(row) - 1):
        piece = row.piece(t)
        if not (piece.startswith("\n") and piece[1:] == " " * (len(piece) - 1)):
            continue
        if not row.piece(t - 1).endswith(":") or row.label("bracket_depth", t - 1) != 0:
            continue
        if row.label("in_string", t - 1) or row.label("in_comment", t - 1):
            continue
        header = _line_start(row, t - 1)
        if header is None:
            continue
        h = _indent_at(row, header)
        b = _indent_at(row, row.spans[t][0] + 1)
        if b > h:
            out += _found(row, t, row.vocab.id_of("\n" + " " * max(h - 1, 0)))
    return out


def _line_start(row: CodeRow, t: int) -> int | None:
    """The character after the newline that starts token t's logical line (the last
    newline before it at bracket depth 0 outside strings), or None if not in the row."""
    for u in range(t, 0, -1):
        piece = row.piece(u)
        if "\n" in piece and row.label("bracket_depth", u) == 0 and not row.label("in_string", u):
            return row.spans[u][0] + piece.rindex("\n") + 1
    return None


def _indent_at(row: CodeRow, char: int) -> int:
    line = row.text[char : row.text.find("\n", char) if "\n" in row.text[char:] else None]
    return len(line) - len(line.lstrip(" "))


@code_task("for_in")
def for_in(row: CodeRow) -> list[Found]:
    """The keyword ` in` of a for loop or comprehension right after its target names,
    against ` =`: after a name at the start of a statement an assignment is the common
    continuation; ` in` is said by the `for` earlier on the line (the previous token is
    a target name, which says neither)."""
    out: list[Found] = []
    alt = row.vocab.id_of(" =")
    for t in range(2, len(row)):
        if row.piece(t) != " in" or row.label("token_type", t) != KEYWORD:
            continue
        for u in range(t - 1, 0, -1):
            piece = row.piece(u)
            if "\n" in piece or (row.label("token_type", u) == KEYWORD and piece.strip() != "for"):
                break
            if piece.strip() == "for" and row.label("token_type", u) == KEYWORD:
                out += _found(row, t, alt) if u < t - 1 else []
                break
    return out


@code_task("param_use")
def param_use(row: CodeRow) -> list[Found]:
    """In a function's body, the first token of a use of one of its parameters (not
    self or cls), against the first token of a name the prompt holds only before the
    function's `def` (never in its signature or body, so not defined in the function),
    with the same leading space: both are names the prompt shows, only the signature
    says which one is in scope. The most recent such name is taken; the signature is
    in the prompt."""
    out: list[Found] = []
    for t in range(2, len(row)):
        if row.label("is_param", t) != 1 or row.label("in_def_signature", t) == 1:
            continue
        name = row.name_at(row.spans[t][1] - len(row.piece(t).lstrip(" ")))
        if name in CONVENTIONAL or not _is_name_start(row, t):
            continue
        d = _signature_start(row, t, name)
        if d is not None:
            out += _found(row, t, _outside_name(row, t, d))
    return out


def _signature_start(row: CodeRow, t: int, name: str) -> int | None:
    """The first token of the latest signature before t that declares `name`."""
    for u in range(t - 1, 0, -1):
        if row.label("in_def_signature", u) == 1 and row.label("is_param", u) == 1:
            if row.name_at(row.spans[u][1] - len(row.piece(u).lstrip(" "))) == name:
                while u > 0 and row.label("in_def_signature", u - 1) == 1:
                    u -= 1
                return u
    return None


def _outside_name(row: CodeRow, t: int, d: int) -> int | None:
    """The id of the latest name-start token before d, of t's leading-space form,
    whose name does not occur from d to t (nor is a keyword)."""
    inside = {_name(row, u) for u in range(d, t + 1)}
    space = row.piece(t).startswith(" ")
    for u in range(d - 1, 0, -1):
        if row.label("token_type", u) != NAME or row.piece(u).startswith(" ") != space:
            continue
        name = _name(row, u)
        if name and name not in inside and not keyword.iskeyword(name) and _is_name_start(row, u):
            return row.ids[u]
    return None


def _name(row: CodeRow, u: int) -> str:
    return row.name_at(row.spans[u][1] - len(row.piece(u).lstrip(" ")))


# ------------------------------------------------------------------ building data


def row_tasks(row: CodeRow, names: Sequence[str] | None = None) -> dict[str, list[Found]]:
    """{task: every (position, target, alternative) it finds in the row}."""
    return {n: CODE_TASKS[n].fn(row) for n in (names or CODE_TASKS)}


def suite_rows(suite: SuiteData, split: str, n_rows: int, seed: int = 0):
    """(row index, CodeRow) of n_rows rows drawn by the one sampler."""
    vocab = CodeVocab(suite.tokenizer)
    ds = suite.splits[split]
    for i in sample_indices(suite, split, n_rows, seed):
        r = ds[i]
        yield i, CodeRow.of(r["input_ids"], r["features"], suite.feature_names, vocab)


def code_task_data(
    suite: SuiteData,
    split: str,
    names: Sequence[str] | None = None,
    n: int = 64,
    seed: int = 0,
    n_rows: int | None = None,
) -> dict[str, TaskData]:
    """{task: up to n prompts} of the code tasks `names` (all by default) over n_rows
    rows of the split (8 n by default) drawn by the one sampler: one position per row
    (seeded), then n of those rows (seeded) where more were found; tasks with no
    prompt are left out."""
    names = list(names or CODE_TASKS)
    found: dict[str, list[tuple[list[int], Found]]] = {k: [] for k in names}
    for i, row in suite_rows(suite, split, n_rows or 8 * n, seed):
        rng = random.Random(f"{seed}:{i}")
        for name, items in row_tasks(row, names).items():
            if items:
                pos, tgt, alt = rng.choice(items)
                found[name].append((row.ids[: pos + 1], (pos, tgt, alt)))
    out = {}
    for name, items in found.items():
        if len(items) > n:
            items = random.Random(f"{seed}:{name}").sample(items, n)
        if items:
            out[name] = _task_data(name, items, suite.pad_id)
    return out


def _task_data(name: str, items: list[tuple[list[int], Found]], pad_id: int) -> TaskData:
    T = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    for k, (seq, _) in enumerate(items):
        ids[k, : len(seq)] = torch.tensor(seq)
    pos, tgt, alt = (torch.tensor([f[j] for _, f in items]) for j in range(3))
    return TaskData(name, ids, pos, tgt, alt)


def code_task_counts(suite: SuiteData, split: str, n_rows: int, seed: int = 0) -> dict[str, dict]:
    """Per task over n_rows sampled rows: rows with at least one prompt, and prompts."""
    out = {n: {"rows": 0, "positions": 0} for n in CODE_TASKS}
    for _, row in suite_rows(suite, split, n_rows, seed):
        for name, items in row_tasks(row).items():
            out[name]["rows"] += bool(items)
            out[name]["positions"] += len(items)
    return out


__all__ = [
    "CODE_TASKS",
    "CodeTask",
    "code_task",
    "code_task_counts",
    "code_task_data",
    "row_tasks",
    "suite_rows",
]
