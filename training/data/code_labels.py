"""Ground truth for Python source on every BPE token, from Python's own `tokenize` and `ast`.

    labels = label_source(text)                  # None: the file does not parse (skip it)
    rows = labels.per_token(enc.offsets)         # (T, len(FEATURES)) ints, -1: does not apply

The columns are the skill suite's ground-truth features (`training.data.skills.base.
Feature`), named `code.<name>` in `SuiteData.feature_names`, so the coverage, held-out
and information-beyond-the-token scores read them as they read the suite's:

| column | kind | value at a token |
|---|---|---|
| `code.token_type` | cat | 0 name, 1 keyword, 2 number, 3 string, 4 comment, 5 operator, 6 whitespace |
| `code.in_string` | bool | inside a string literal (prefix and quotes included; an f-string whole) |
| `code.in_comment` | bool | inside a `#` comment |
| `code.in_fstring` | bool | inside an f-string (its `{expressions}` too) |
| `code.bracket_depth` | int | (), [], {} still open after the token (an opening bracket counts itself) |
| `code.indent_depth` | int | indentation level of the token's line (tokenize's INDENT - DEDENT) |
| `code.in_def_signature` | bool | from `def` (or `async def`) to the `:` ending the header, both included |
| `code.in_class_body` | bool | after a class header's `:` to the class's last statement (methods too) |
| `code.in_decorator` | bool | from a decorator's `@` to the end of its expression |
| `code.is_param` | bool | on name tokens: a parameter of the innermost enclosing def or lambda (its declaration or a use); -1 on every other token |

Keywords are `keyword.kwlist` (True, False, None included); soft keywords (match, case,
type, _) are names. `is_param` follows Python's scopes as far as they are lexical:
defaults, annotations and decorators belong to the scope around the def; a class body
takes the function around it; a comprehension's own targets shadow a parameter; a
closure's use of an outer function's parameter is 0 (the innermost function's own
parameters only). An attribute (`self.x`) or a keyword argument (`f(x=1)`) is not a
use of a parameter `x`.

The straddling rule. Every label is first an array over the file's characters; a BPE
token reads it at its anchor: the first character of its span that lies inside a Python
token other than NEWLINE, NL and INDENT (tokenize's spans), or its first character when
none does. So " def" (a space, then the keyword: byte-level BPE puts the space first)
is a keyword, '("' (an operator, then a string's quote) an operator, "')" (a string's
closing quote, then an operator) a string, and a run of indentation whitespace. A token of one byte of a multi-byte character has its
character's span.

The same labels on every Python: 3.12+ splits an f-string into FSTRING_START ...
FSTRING_END with its expression's tokens inside; they are merged back into one string
token, as 3.11 reads it (so braces inside an f-string are no brackets). Text with a
carriage return is not labelled: the corpus normalises line ends first
(`normalise_source`).
"""

from __future__ import annotations

import ast
import bisect
import io
import keyword
import tokenize
import warnings
from dataclasses import dataclass

import numpy as np

from glassbox.training.data.skills.base import Feature

TOKEN_TYPES = ("name", "keyword", "number", "string", "comment", "operator", "whitespace")
NAME, KEYWORD, NUMBER, STRING, COMMENT, OPERATOR, SPACE = range(len(TOKEN_TYPES))
FEATURES = (
    Feature("token_type", "cat", " ".join(f"{i} {t}," for i, t in enumerate(TOKEN_TYPES))),
    Feature("in_string", "bool", "inside a string literal (an f-string whole)"),
    Feature("in_comment", "bool", "inside a # comment"),
    Feature("in_fstring", "bool", "inside an f-string, its expressions too"),
    Feature("bracket_depth", "int", "(), [], {} still open after this token"),
    Feature("indent_depth", "int", "indentation level of the token's line"),
    Feature("in_def_signature", "bool", "from def to the : ending its header"),
    Feature("in_class_body", "bool", "inside a class body, its methods too"),
    Feature("in_decorator", "bool", "from a decorator's @ to the end of its expression"),
    Feature("is_param", "bool", "name tokens: a parameter of the innermost def or lambda"),
)
FEATURE_NAMES = [f"code.{f.name}" for f in FEATURES]
FEATURE_KINDS = [f.kind for f in FEATURES]
COLUMN = {f.name: j for j, f in enumerate(FEATURES)}
OPEN, CLOSE = "([{", ")]}"
_FSTART = {n for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)}
_FEND = {n for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)}
_NO_SPAN = (tokenize.ENDMARKER, tokenize.DEDENT)


def normalise_source(text: str) -> str:
    """Line ends as \\n (\\r\\n and a lone \\r), a leading byte-order mark dropped."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class PyToken:
    """One Python token as absolute character offsets [start, end)."""

    type: int  # a tokenize type (an f-string merged back: STRING)
    string: str
    start: int
    end: int
    fstring: bool = False


class _Lines:
    """(row, column) -> character offset; ast's columns are UTF-8 bytes, tokenize's characters."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0]  # each line's first character, then a sentinel past the end
        for line in text.split("\n"):
            self.starts.append(self.starts[-1] + len(line) + 1)

    def char(self, row: int, col: int) -> int:
        return min(self.starts[min(row - 1, len(self.starts) - 1)] + col, len(self.text))

    def byte(self, row: int, col: int) -> int:
        start = self.starts[row - 1]
        line = self.text[start : self.starts[row] - 1 if row < len(self.starts) - 1 else None]
        if not line.isascii():
            col = len(line.encode()[:col].decode("utf-8", errors="ignore"))
        return min(start + col, len(self.text))


def python_tokens(text: str, lines: _Lines) -> list[PyToken]:
    """tokenize's tokens with character spans, an f-string's parts merged into one
    STRING token (as Python 3.11 reads it). Raises tokenize.TokenError / SyntaxError."""
    out: list[PyToken] = []
    depth, opened = 0, None  # nesting of f-strings (3.12+), the outermost's start
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        name = tokenize.tok_name[tok.type]
        start, end = lines.char(*tok.start), lines.char(*tok.end)
        if name in _FSTART:
            depth += 1
            opened = start if depth == 1 else opened
            continue
        if name in _FEND:
            depth -= 1
            if depth == 0:
                out.append(PyToken(tokenize.STRING, text[opened:end], opened, end, True))
            continue
        if depth:
            continue
        fstring = tok.type == tokenize.STRING and "f" in _prefix(tok.string).lower()
        out.append(PyToken(tok.type, tok.string, start, end, fstring))
    return out


def _prefix(s: str) -> str:
    return s[: min(i for i in (s.find("'"), s.find('"'), len(s)) if i >= 0)]


def _type_of(t: PyToken) -> int:
    if t.type == tokenize.NAME:
        return KEYWORD if keyword.iskeyword(t.string) else NAME
    return {
        tokenize.NUMBER: NUMBER,
        tokenize.STRING: STRING,
        tokenize.COMMENT: COMMENT,
        tokenize.OP: OPERATOR,
    }.get(t.type, SPACE)


@dataclass
class SourceLabels:
    """Per-character labels of one file: chars (n_chars, len(FEATURES)) int16, -1 where
    a label does not apply; covered (n_chars,) bool: inside a Python token that is not
    whitespace (NEWLINE, NL, INDENT)."""

    chars: np.ndarray
    covered: np.ndarray

    def anchors(self, offsets: list[tuple[int, int]]) -> np.ndarray:
        """(T,) the anchor character of each BPE token (see the module docstring)."""
        n = len(self.covered)
        if not offsets:
            return np.zeros(0, dtype=np.int64)
        idx = np.where(self.covered, np.arange(n), n)
        nxt = np.minimum.accumulate(idx[::-1])[::-1] if n else idx
        span = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        start = np.clip(span[:, 0], 0, max(n - 1, 0))
        first = nxt[start] if n else start
        return np.where(first < span[:, 1], first, start)

    def per_token(self, offsets: list[tuple[int, int]]) -> np.ndarray:
        """(T, len(FEATURES)) int32: each BPE token's labels, read at its anchor."""
        if len(self.chars) == 0:
            return np.full((len(offsets), len(FEATURES)), -1, dtype=np.int32)
        return self.chars[self.anchors(offsets)].astype(np.int32)


def parse(text: str) -> tuple[ast.AST, list[PyToken], _Lines] | None:
    """(ast, tokens, line table) of Python source `text` (line ends \\n), or None when
    Python cannot tokenize or parse it."""
    if "\r" in text:
        return None
    lines = _Lines(text)
    try:
        with warnings.catch_warnings():  # invalid escape sequences in old files
            warnings.simplefilter("ignore")
            return ast.parse(text), python_tokens(text, lines), lines
    except (SyntaxError, tokenize.TokenError, ValueError, RecursionError, MemoryError):
        return None


def label_source(text: str) -> SourceLabels | None:
    """The labels of Python source `text` (line ends \\n), or None when Python cannot
    tokenize or parse it (the caller skips the file and counts it)."""
    parsed = parse(text)
    if parsed is None:
        return None
    tree, toks, lines = parsed
    n = len(text)
    chars = np.zeros((n, len(FEATURES)), dtype=np.int16)
    covered = np.zeros(n, dtype=bool)
    chars[:, COLUMN["token_type"]] = SPACE
    chars[:, COLUMN["is_param"]] = -1
    for t in toks:
        if t.type in _NO_SPAN or t.end <= t.start:
            continue
        kind = _type_of(t)
        covered[t.start : t.end] = kind != SPACE
        row = chars[t.start : t.end]
        row[:, COLUMN["token_type"]] = kind
        row[:, COLUMN["in_string"]] = t.type == tokenize.STRING
        row[:, COLUMN["in_comment"]] = t.type == tokenize.COMMENT
        row[:, COLUMN["in_fstring"]] = t.fstring
    chars[:, COLUMN["bracket_depth"]] = _bracket_depth(toks, n)
    chars[:, COLUMN["indent_depth"]] = _indent_depth(text, toks, n)
    _structure(tree, toks, lines, chars)
    _params(tree, toks, lines, chars)
    return SourceLabels(chars, covered)


def _bracket_depth(toks: list[PyToken], n: int) -> np.ndarray:
    delta = np.zeros(n + 1, dtype=np.int32)
    for t in toks:
        if t.type == tokenize.OP and t.string in OPEN:
            delta[t.start] += 1
        elif t.type == tokenize.OP and t.string in CLOSE:
            delta[t.start] -= 1
    return np.maximum(np.cumsum(delta)[:n], 0)


def _indent_depth(text: str, toks: list[PyToken], n: int) -> np.ndarray:
    """INDENT and DEDENT take effect from the start of their line (a dedented line's
    own indentation is already at the new level)."""
    delta = np.zeros(n + 1, dtype=np.int32)
    for t in toks:
        if t.type in (tokenize.INDENT, tokenize.DEDENT):
            at = text.rfind("\n", 0, t.start) + 1
            delta[at] += 1 if t.type == tokenize.INDENT else -1
    return np.maximum(np.cumsum(delta)[:n], 0)


def _structure(tree: ast.AST, toks: list[PyToken], lines: _Lines, chars: np.ndarray) -> None:
    """in_def_signature, in_class_body and in_decorator, from the ast's spans and the
    tokens that close a header (its `:`) or open a decorator (its `@`)."""
    depth = chars[:, COLUMN["bracket_depth"]]
    colons = [t.start for t in toks if t.type == tokenize.OP and t.string == ":"]
    ats = [t.start for t in toks if t.type == tokenize.OP and t.string == "@"]

    def header_colon(start: int, after: int) -> int:
        """The first `:` at or after `after` at the bracket depth of `start`."""
        i = bisect.bisect_left(colons, after)
        while i < len(colons) and depth[colons[i]] != depth[start]:
            i += 1
        return colons[i] if i < len(colons) else len(depth) - 1

    def span(node: ast.AST, end: bool = False) -> int:
        row, col = (node.end_lineno, node.end_col_offset) if end else (node.lineno, node.col_offset)
        return lines.byte(row, col)

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                at = ats[max(bisect.bisect_left(ats, span(dec)) - 1, 0)]
                chars[at : span(dec, end=True), COLUMN["in_decorator"]] = 1
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = span(node)
            after = span(node.returns, end=True) if node.returns else start
            chars[start : header_colon(start, after) + 1, COLUMN["in_def_signature"]] = 1
        elif isinstance(node, ast.ClassDef):
            start = span(node)
            chars[
                header_colon(start, start) + 1 : span(node, end=True), COLUMN["in_class_body"]
            ] = 1


def _params(tree: ast.AST, toks: list[PyToken], lines: _Lines, chars: np.ndarray) -> None:
    """is_param: 0 on every name token, 1 where the ast says it is a parameter."""
    visitor = _ParamUses()
    visitor.visit(tree)
    col = COLUMN["is_param"]
    for t in toks:
        if t.type == tokenize.NAME and not keyword.iskeyword(t.string):
            chars[t.start : t.end, col] = 0
    hit = np.zeros(len(chars) + 1, dtype=bool)
    for row, c in visitor.hits:
        hit[lines.byte(row, c)] = True
    for t in toks:  # a hit is a name's first character: the whole token is a parameter
        if t.type == tokenize.NAME and hit[t.start] and chars[t.start, col] == 0:
            chars[t.start : t.end, col] = 1


class _ParamUses(ast.NodeVisitor):
    """(row, byte column) of every ast.arg and of every Name that is a parameter of the
    innermost enclosing def or lambda (the rules of the module docstring)."""

    def __init__(self) -> None:
        self.scope: list[set[str]] = [set()]
        self.hits: list[tuple[int, int]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        a = node.args
        outer = [*a.defaults, *(d for d in a.kw_defaults if d is not None)]
        if not isinstance(node, ast.Lambda):
            outer += [*node.decorator_list, *([node.returns] if node.returns else [])]
        every = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
        params = [p for p in every if p is not None]
        outer += [p.annotation for p in params if p.annotation is not None]
        for n in outer:
            self.visit(n)
        self.hits += [(p.lineno, p.col_offset) for p in params]
        self.scope.append({p.arg for p in params})
        for stmt in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(stmt)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _comprehension(self, node: ast.AST) -> None:
        bound = {
            n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)
        }
        self.scope.append(self.scope[-1] - bound)
        self.generic_visit(node)
        self.scope.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.scope[-1]:
            self.hits.append((node.lineno, node.col_offset))
