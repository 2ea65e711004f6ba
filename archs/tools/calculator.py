"""A safe calculator: exact integer arithmetic with its own lexer and parser.

Grammar (Python's precedence and integer semantics):

    expr    := expr ('+' | '-') term | term
    term    := term ('*' | '//' | '/' | '%') unary | unary
    unary   := ('-' | '+') unary | '(' expr ')' | number
    number  := ASCII digits; with join_spaced_digits, digits separated only by
               whitespace form one number ('1 2 3' is 123, as the suite writes them)

`/` and `//` are both floor division (rounds toward minus infinity, as Python's
`//`), `%` takes the sign of the divisor (Python's `%`). Nothing else is accepted:
no names, no calls, no `**`, no floats, only ASCII digits and whitespace.

Parsing is a shunting-yard pass to postfix, and evaluation walks the postfix with a
stack: nothing recurses, so nesting cannot overflow Python's stack. Every bound is
checked before the work it bounds: the text length before lexing, the digits of each
literal before converting it, the size of a product from its operands' bit lengths
before multiplying, and the digits of every intermediate result. A violation is a
`ToolError` (an error result from `Calculator.run`), never a long computation.
"""

from __future__ import annotations

from dataclasses import dataclass

from glassbox.archs.tools.base import Tool, ToolError, split_digits

DIGITS = frozenset("0123456789")
SPACE = frozenset(" \t\n\r")
BINARY_PREC = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}
UNARY_PREC = 3  # binds tighter than every binary operator (as in Python: -a // b == (-a) // b)
_GRAMMAR = "digits 0-9, + - * / // %, parentheses, spaces"


@dataclass(frozen=True)
class CalculatorLimits:
    max_digits: int = 1000  # digits of every literal and of every intermediate result
    max_chars: int = 10_000  # characters of the whole expression text
    max_depth: int = 64  # parenthesis nesting
    max_ops: int = 500  # operators, binary and unary

    def __post_init__(self) -> None:
        for key in ("max_digits", "max_chars", "max_depth", "max_ops"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"CalculatorLimits.{key}={value!r}: must be a positive integer")


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "op" | "(" | ")"
    text: str  # the digits of a number, or the operator ('//' for both / and //)
    pos: int  # character offset in the expression


# Python refuses int <-> str conversions past sys.get_int_max_str_digits() digits
# (4300 by default, settable down to 640); convert in chunks of at most 640 digits
# so that any configured bound works whatever that global setting is.
_CHUNK = 640
_CHUNK_BOUND = 10**_CHUNK


def digits_to_int(digits: str) -> int:
    """A string of ASCII digits -> int, for any length."""
    if len(digits) <= _CHUNK:
        return int(digits)
    half = len(digits) // 2
    return digits_to_int(digits[:half]) * 10 ** (len(digits) - half) + digits_to_int(digits[half:])


def int_to_digits(n: int) -> str:
    """A non-negative int -> its decimal digits, for any size."""
    if n < _CHUNK_BOUND:
        return str(n)
    half = (n.bit_length() * 3 // 10) // 2  # about half of its decimal digits
    high, low = divmod(n, 10**half)
    return int_to_digits(high) + int_to_digits(low).zfill(half)


def format_int(n: int) -> str:
    return "-" + int_to_digits(-n) if n < 0 else int_to_digits(n)


def _describe(ch: str) -> str:
    return f"{ch!r} (U+{ord(ch):04X})"


class Calculator(Tool):
    """Exact integer arithmetic on bounded numbers.

    name: the word that names it in calls; "calculator" is the one the suite's
    vocabulary reserves (training/data/vocab.py TOOL_WORDS).
    limits: the bounds (CalculatorLimits). digit_tokens: write results digit by
    digit ('- 5 7 9') for word-level vocabularies; False writes '-579'.
    join_spaced_digits: read '1 2 3' as 123 (the suite's spelling of numbers);
    False makes two numbers in a row a syntax error.
    reversed_digits: every number, read or written, is spelt units first (the
    suite's `addition.reversed`): '3 2 1 + 5 4' is 123 + 45, and 168 is written
    '8 6 1' (a minus sign stays in front: '- 8 6 1').
    """

    def __init__(
        self,
        limits: CalculatorLimits | None = None,
        *,
        name: str = "calculator",
        digit_tokens: bool = True,
        join_spaced_digits: bool = True,
        reversed_digits: bool = False,
    ):
        self.name = name
        self.reversed_digits = reversed_digits
        self.limits = limits if limits is not None else CalculatorLimits()
        self.digit_tokens = digit_tokens
        self.join_spaced_digits = join_spaced_digits
        self._bound = 10**self.limits.max_digits  # every value must stay below this in magnitude
        self._bound_bits = self._bound.bit_length()

    # -- lexing -------------------------------------------------------------------

    def tokenize(self, text: str) -> list[_Tok]:
        lim = self.limits
        if not isinstance(text, str):
            raise ToolError(f"{self.name}: expected text, got {type(text).__name__}")
        if len(text) > lim.max_chars:
            raise ToolError(
                f"{self.name}: expression has {len(text)} characters (limit max_chars={lim.max_chars})"
            )
        toks: list[_Tok] = []
        n_ops = 0
        i, n = 0, len(text)
        spaced = False  # whitespace since the previous token
        while i < n:
            ch = text[i]
            if ch in SPACE:
                spaced = True
                i += 1
                continue
            if ch in DIGITS:
                j = i
                while j < n and text[j] in DIGITS:
                    j += 1
                prev = toks[-1] if toks else None
                if prev is not None and prev.kind == "num" and spaced and self.join_spaced_digits:
                    toks[-1] = _Tok("num", prev.text + text[i:j], prev.pos)
                else:
                    toks.append(_Tok("num", text[i:j], i))
                if len(toks[-1].text) > lim.max_digits:
                    raise ToolError(
                        f"{self.name}: number at position {toks[-1].pos} has more than "
                        f"{lim.max_digits} digits (limit max_digits={lim.max_digits})"
                    )
                i, spaced = j, False
                continue
            spaced = False
            if ch in "()":
                toks.append(_Tok(ch, ch, i))
                i += 1
                continue
            if ch in "+-*/%":
                two = text[i : i + 2]
                if two == "**":
                    raise ToolError(
                        f"{self.name}: '**' (power) at position {i} is not supported ({_GRAMMAR})"
                    )
                op = "//" if ch == "/" else ch
                toks.append(_Tok("op", op, i))
                i += 2 if two == "//" else 1
                n_ops += 1
                if n_ops > lim.max_ops:
                    raise ToolError(
                        f"{self.name}: more than {lim.max_ops} operators (limit max_ops={lim.max_ops})"
                    )
                continue
            raise ToolError(
                f"{self.name}: character {_describe(ch)} at position {i} is not allowed ({_GRAMMAR})"
            )
        return toks

    # -- parsing: shunting-yard to postfix ----------------------------------------------

    def parse(self, arguments: str) -> list[_Tok]:
        """Expression text -> postfix program (list of tokens; unary ops are 'neg'/'pos')."""
        toks = self.tokenize(arguments)
        if not toks:
            raise ToolError(f"{self.name}: empty expression")
        out: list[_Tok] = []
        stack: list[_Tok] = []  # operators and '('
        depth = 0
        expect_operand = True
        for tok in toks:
            if expect_operand:
                if tok.kind == "num":
                    out.append(tok)
                    expect_operand = False
                elif tok.kind == "(":
                    depth += 1
                    if depth > self.limits.max_depth:
                        raise ToolError(
                            f"{self.name}: parentheses nested deeper than {self.limits.max_depth} "
                            f"at position {tok.pos} (limit max_depth={self.limits.max_depth})"
                        )
                    stack.append(tok)
                elif tok.kind == "op" and tok.text in "+-":
                    stack.append(_Tok("op", "neg" if tok.text == "-" else "pos", tok.pos))
                else:
                    raise ToolError(
                        f"{self.name}: expected a number or '(' at position {tok.pos}, found {tok.text!r}"
                    )
                continue
            if tok.kind == "op":
                prec = BINARY_PREC[tok.text]
                while stack and stack[-1].kind == "op" and self._prec(stack[-1]) >= prec:
                    out.append(stack.pop())
                stack.append(tok)
                expect_operand = True
            elif tok.kind == ")":
                while stack and stack[-1].kind != "(":
                    out.append(stack.pop())
                if not stack:
                    raise ToolError(f"{self.name}: unmatched ')' at position {tok.pos}")
                stack.pop()
                depth -= 1
            else:
                what = "number" if tok.kind == "num" else "'('"
                raise ToolError(
                    f"{self.name}: missing operator before the {what} at position {tok.pos}"
                )
        if expect_operand:
            raise ToolError(f"{self.name}: expression ends early (expected a number or '(')")
        while stack:
            tok = stack.pop()
            if tok.kind == "(":
                raise ToolError(f"{self.name}: unclosed '(' at position {tok.pos}")
            out.append(tok)
        return out

    @staticmethod
    def _prec(tok: _Tok) -> int:
        return UNARY_PREC if tok.text in ("neg", "pos") else BINARY_PREC[tok.text]

    # -- evaluation -----------------------------------------------------------------

    def execute(self, program: list[_Tok]) -> int:
        """Evaluate a postfix program with a stack, checking each result's size."""
        stack: list[int] = []
        for tok in program:
            if tok.kind == "num":
                stack.append(digits_to_int(tok.text[::-1] if self.reversed_digits else tok.text))
            elif tok.text == "neg":
                stack[-1] = -stack[-1]
            elif tok.text == "pos":
                pass
            else:
                b = stack.pop()
                a = stack.pop()
                stack.append(self._apply(tok, a, b))
        (value,) = stack
        return value

    def _apply(self, tok: _Tok, a: int, b: int) -> int:
        op = tok.text
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            # |a*b| >= 2**(bits(a)-1 + bits(b)-1): if even that reaches the bound the
            # product is too big, so refuse before multiplying.
            if a and b and a.bit_length() + b.bit_length() - 2 >= self._bound_bits:
                self._too_big(tok)
            r = a * b
        elif b == 0:
            what = "division" if op == "//" else "modulo"
            raise ToolError(f"{self.name}: {what} by zero at position {tok.pos}")
        elif op == "//":
            r = a // b
        else:
            r = a % b
        if -self._bound < r < self._bound:
            return r
        self._too_big(tok)

    def _too_big(self, tok: _Tok):
        d = self.limits.max_digits
        raise ToolError(
            f"{self.name}: result of {tok.text!r} at position {tok.pos} has more than {d} digits "
            f"(limit max_digits={d})"
        )

    # -- formatting -----------------------------------------------------------------

    def format(self, value) -> str:
        """An int (or the text of one) -> '579', or '5 7 9' with digit_tokens."""
        if isinstance(value, str):
            value = self.parse_int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ToolError(f"{self.name}: can only format integers, got {value!r}")
        text = format_int(value)
        if self.reversed_digits:
            text = "-" + text[:0:-1] if value < 0 else text[::-1]
        return split_digits(text) if self.digit_tokens else text

    def parse_int(self, text: str) -> int:
        """'-579', '- 5 7 9' -> -579 (for counterfactual values given as text; units
        first with reversed_digits)."""
        s = "".join(text.split())
        sign, body = (-1, s[1:]) if s.startswith("-") else (1, s)
        if not body or any(ch not in DIGITS for ch in body) or len(body) > self.limits.max_digits:
            raise ToolError(
                f"{self.name}: {text[:40]!r} is not an integer of at most "
                f"{self.limits.max_digits} digits"
            )
        return sign * digits_to_int(body[::-1] if self.reversed_digits else body)

    def evaluate(self, expression: str) -> int:
        """Expression text -> int; raises ToolError (use `run` for a result object)."""
        return self.execute(self.parse(expression))
