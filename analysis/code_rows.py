"""A packed row of the Python-code corpus as the code micro-tasks read it: each BPE
token's text and character span in the decoded row, its ground truth
(training.data.code_labels) by short name, and the row's Python tokens from the
standard library's `tokenize` where the labels do not suffice.

    vocab = CodeVocab(suite.tokenizer)
    row = CodeRow.of(ids, features, suite.feature_names, vocab)
    row.piece(t), row.span(t), row.label("bracket_depth", t), row.python_tokens()

Decoding: a byte-level BPE token is bytes (GPT-2's byte-to-unicode alphabet); the
row's bytes are decoded incrementally as UTF-8, so a token's span is the characters it
completes (a token of one byte of a multi-byte character may be empty). Special tokens
(<bos>, <eos>, ...) are empty and end a segment: a document never runs across <eos>.

Python tokens of a row (`python_tokens`): each segment is tokenized from a safe start,
a document's first character (after <eos>) or, for the row's first segment which
starts inside a file, the line after the first newline the labels place at bracket
depth 0 outside any string or comment (without labels the first segment is not read).
Where that line is indented, `if 1:` lines at the indentation columns of the segment's
shallower lines are put before it, so dedenting lines tokenize as in their file.
Tokens stop at the first error token or tokenize error (a segment ending inside a
string or a bracket, text that is not Python): only complete tokens are returned.
"""

from __future__ import annotations

import bisect
import codecs
import io
import re
import tokenize
from dataclasses import dataclass, field
from functools import cached_property

from tokenizers import Tokenizer

from glassbox.training.data.vocab import EOS, SPECIAL_TOKENS

IDENT = re.compile(r"[^\W\d]\w*")  # a Python identifier (ASCII or not)


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte (the inverse of bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars)}


class CodeVocab:
    """Each token id's bytes and text (None: not valid UTF-8 alone, or special), and
    the id of a text (`id_of`)."""

    def __init__(self, tokenizer: Tokenizer):
        dec = byte_decoder()
        n = tokenizer.get_vocab_size()
        self.special = {i for i in range(n) if tokenizer.id_to_token(i) in SPECIAL_TOKENS}
        self.bytes: list[bytes] = []
        self.text: list[str | None] = []
        for i in range(n):
            s = tokenizer.id_to_token(i) or ""
            b = (
                b""
                if i in self.special or any(c not in dec for c in s)
                else bytes(dec[c] for c in s)
            )
            self.bytes.append(b)
            try:
                self.text.append(b.decode() if b else None)
            except UnicodeDecodeError:
                self.text.append(None)
        self.eos = tokenizer.token_to_id(EOS)
        self._ids = {t: i for i, t in enumerate(self.text) if t}

    def id_of(self, text: str) -> int | None:
        """The id of the token whose text is `text`, or None (not one token)."""
        return self._ids.get(text)


@dataclass(frozen=True)
class PyTok:
    """One Python token of a row: tokenize's type and string, row character span."""

    type: int
    string: str
    start: int
    end: int


@dataclass
class CodeRow:
    """One row: ids (T,), its decoded text, each token's character span in it, and the
    code ground truth per token by short name (`bracket_depth`, ...; empty without)."""

    ids: list[int]
    text: str
    spans: list[tuple[int, int]]
    labels: dict[str, list[int]]
    vocab: CodeVocab
    _starts: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, ids, features, feature_names, vocab: CodeVocab) -> CodeRow:
        """The row of token ids `ids` with their feature rows (T, F) named
        `feature_names` (the code ones, `code.<name>`, are kept)."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, spans = "", []
        for i in ids:
            piece = dec.decode(vocab.bytes[i]) if i not in vocab.special else dec.decode(b"", True)
            spans.append((len(text), len(text) + len(piece)))
            text += piece
        cols = {
            n.removeprefix("code."): j for j, n in enumerate(feature_names) if n.startswith("code.")
        }
        has = bool(cols) and all(len(f) > max(cols.values()) for f in features)
        labels = {n: [int(f[j]) for f in features] for n, j in cols.items()} if has else {}
        return cls(list(ids), text, spans, labels, vocab, [s for s, _ in spans])

    def __len__(self) -> int:
        return len(self.ids)

    def piece(self, t: int) -> str:
        a, b = self.spans[t]
        return self.text[a:b]

    def label(self, name: str, t: int) -> int | None:
        col = self.labels.get(name)
        return None if col is None or not 0 <= t < len(col) else col[t]

    def token_at(self, char: int) -> int:
        """The token whose span holds character `char`."""
        t = bisect.bisect_right(self._starts, char) - 1
        while t > 0 and self.spans[t][0] == self.spans[t][1]:  # empty tokens hold nothing
            t -= 1
        return t

    def name_at(self, char: int) -> str:
        """The identifier starting at character `char` ('' if none)."""
        m = IDENT.match(self.text, char)
        return m.group() if m else ""

    def is_special(self, t: int) -> bool:
        return self.ids[t] in self.vocab.special

    def swapped(self, t: int, at: int, new: str) -> int | None:
        """The id of token t's text with its character at row offset `at` replaced by
        `new`, or None where that text is no token."""
        a, b = self.spans[t]
        if not a <= at < b:
            return None
        return self.vocab.id_of(self.text[a:at] + new + self.text[at + 1 : b])

    @cached_property
    def python(self) -> list[PyTok]:
        return python_tokens(self)


def _segments(row: CodeRow) -> list[tuple[int, int]]:
    """(start, end) characters of each run of non-special tokens: from a document's
    start where <eos> comes before it, else from its safe start (_safe_start)."""
    out, lo = [], 0
    for t in range(len(row) + 1):
        if t < len(row) and not row.is_special(t):
            continue
        if t > lo:
            at_start = lo > 0 and row.ids[lo - 1] == row.vocab.eos
            a = row.spans[lo][0] if at_start else _safe_start(row, lo, t)
            if a is not None and a < row.spans[t - 1][1]:
                out.append((a, row.spans[t - 1][1]))
        lo = t + 1
    return out


def _safe_start(row: CodeRow, lo: int, hi: int) -> int | None:
    """The character after the first newline of tokens lo..hi that the labels place at
    bracket depth 0 outside any string or comment (None without labels or such a line)."""
    if not row.labels:
        return None
    for t in range(lo, hi):
        if (
            row.piece(t).startswith("\n")
            and row.label("bracket_depth", t) == 0
            and not (row.label("in_string", t) or row.label("in_comment", t))
        ):
            return row.spans[t][0] + 1
    return None


def _indent_prefix(text: str) -> str:
    """`if 1:` lines at the indentation columns, below the first line's, of the text's
    lines (none where the first line is not indented, or tabs indent)."""
    lines = text.split("\n")
    width = len(lines[0]) - len(lines[0].lstrip(" "))
    if width == 0 or "\t" in text:
        return ""
    cols = {len(s) - len(s.lstrip(" ")) for s in lines[1:] if s.strip()}
    return "".join(" " * c + "if 1:\n" for c in sorted({0} | {c for c in cols if c < width}))


def python_tokens(row: CodeRow) -> list[PyTok]:
    """The row's Python tokens (the module docstring): complete tokens of each segment,
    in row characters; NEWLINE, NL, INDENT, DEDENT, COMMENT and ENDMARKER left out."""
    out: list[PyTok] = []
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
            tokenize.COMMENT, tokenize.ENDMARKER}  # fmt: skip
    for a, end in _segments(row):
        frag = row.text[a:end]
        prefix = _indent_prefix(frag)
        src = prefix + frag
        starts = [0, *(m.end() for m in re.finditer("\n", src))]
        shift = a - len(prefix)
        try:
            for tok in tokenize.generate_tokens(io.StringIO(src).readline):
                if tok.type == tokenize.ERRORTOKEN:
                    break
                if tok.type in skip:
                    continue
                s = starts[tok.start[0] - 1] + tok.start[1]
                e = starts[tok.end[0] - 1] + tok.end[1]
                if s >= len(prefix):
                    out.append(PyTok(tok.type, tok.string, s + shift, e + shift))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass
    return out
