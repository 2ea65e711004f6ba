"""The calculator against Python's integers, and against hostile input.

Random expression trees are rendered to text (with minimal parentheses, so the
parser's precedence and associativity decide the value) and compared with a
reference walker that evaluates the tree itself with Python's int operators."""

from __future__ import annotations

import builtins
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassbox.archs.tools import ToolError
from glassbox.archs.tools.calculator import (
    Calculator,
    CalculatorLimits,
    digits_to_int,
    int_to_digits,
)

MAX_DIGITS = 25
CALC = Calculator(CalculatorLimits(max_digits=MAX_DIGITS), digit_tokens=False)
CALC_SPACED = Calculator(CalculatorLimits(max_digits=MAX_DIGITS), digit_tokens=True)

# -- expression trees: int leaves, ("neg", x), ("paren", x), (op, a, b) --------------

BINARY = ("+", "-", "*", "//", "%")
PREC = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2, "neg": 3}

leaves = st.one_of(st.integers(0, 3), st.integers(0, 10**12))


def _extend(children):
    return st.one_of(
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("paren"), children),
        st.tuples(st.sampled_from(BINARY), children, children),
    )


trees = st.recursive(leaves, _extend, max_leaves=20)


class RefError(Exception):
    pass


def reference(node, bound: int = 10**MAX_DIGITS) -> int:
    """Evaluate the tree with Python ints, post-order, left to right; the first
    division by zero or out-of-bound intermediate is the error."""
    if isinstance(node, int):
        return node
    if node[0] == "paren":
        return reference(node[1], bound)
    if node[0] == "neg":
        return -reference(node[1], bound)
    op, a, b = node[0], reference(node[1], bound), reference(node[2], bound)
    if op in ("//", "%") and b == 0:
        raise RefError("by zero")
    r = (
        {"+": a + b, "-": a - b, "*": a * b}[op]
        if op in "+-*"
        else (a // b if op == "//" else a % b)
    )
    if abs(r) >= bound:
        raise RefError(f"more than {MAX_DIGITS} digits")
    return r


def prec(node) -> int:
    if isinstance(node, int) or node[0] == "paren":
        return 4
    return PREC[node[0]]


def render(node, spaced_digits: bool, spaces: bool, slash: str) -> str:
    """Text whose parse (with Python precedence, left associativity) is this tree."""

    def r(n) -> str:
        if isinstance(n, int):
            return " ".join(str(n)) if spaced_digits else str(n)
        if n[0] == "paren":
            return "(" + r(n[1]) + ")"
        if n[0] == "neg":
            child = r(n[1]) if prec(n[1]) >= 3 else "(" + r(n[1]) + ")"
            return "- " + child  # the space keeps '- -x' from reading as one token
        op, a, b = n
        p = PREC[op]
        left = r(a) if prec(a) >= p else "(" + r(a) + ")"
        right = r(b) if prec(b) > p else "(" + r(b) + ")"  # left-associative
        sym = slash if op == "//" else op
        return f"{left} {sym} {right}" if spaces else f"{left}{sym}{right}"

    return r(node)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=trees,
    spaced_digits=st.booleans(),
    spaces=st.booleans(),
    slash=st.sampled_from(["//", "/"]),
)
def test_random_trees_match_python_integers(tree, spaced_digits, spaces, slash):
    text = render(tree, spaced_digits, spaces, slash)
    result = CALC.run(text)
    try:
        expected = reference(tree)
    except RefError as e:
        assert not result.ok, (text, result)
        assert str(e) in result.error, (text, result.error)
        assert result.value is None and result.text is None
        return
    assert result.ok, (text, result.error)
    assert result.value == expected, text
    assert result.text == str(expected)
    assert CALC_SPACED.run(text).text == " ".join(str(expected))  # '-579' -> '- 5 7 9'


def _check_product(a: int, b: int) -> None:
    result = CALC.run(f"{a} * {b}".replace("* -", "* - "))
    if abs(a * b) < 10**MAX_DIGITS:
        assert result.ok and result.value == a * b, (a, b, result.error)
    else:
        assert not result.ok and "more than 25 digits" in result.error


@settings(max_examples=300, deadline=None)
@given(
    a=st.integers(-(10**MAX_DIGITS) + 1, 10**MAX_DIGITS - 1),
    b=st.integers(-(10**MAX_DIGITS) + 1, 10**MAX_DIGITS - 1),
)
def test_product_bound_random(a, b):
    _check_product(a, b)


@settings(max_examples=300, deadline=None)
@given(
    a=st.one_of(
        st.integers(1, 10**MAX_DIGITS - 1),
        st.integers(0, 83).map(lambda k: 2**k),  # bit-length edges (2**83 < 10**25)
    ),
    delta=st.integers(-2, 2),
    signs=st.tuples(st.sampled_from([1, -1]), st.sampled_from([1, -1])),
)
def test_product_bound_at_the_edge(a, delta, signs):
    """Products right at 10**max_digits: the size estimate made before multiplying
    never refuses a product that fits, and never lets one through that does not."""
    b = max(0, (10**MAX_DIGITS - 1) // a + delta)
    if b >= 10**MAX_DIGITS:
        return
    _check_product(signs[0] * a, signs[1] * b)


@pytest.mark.parametrize(
    "text, value",
    [
        ("1 2 3 + 4 5 6", 579),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 * 3 + 4", 10),
        ("10 - 4 - 3", 3),  # left associative
        ("100 // 10 // 3", 3),
        ("2 * 7 % 4", 2),  # (2 * 7) % 4, as Python
        ("-7 // 2", -4),  # floor, and unary minus binds tighter: (-7) // 2
        ("-7 / 2", -4),
        ("7 // -2", -4),
        ("-7 % 3", 2),
        ("7 % -3", -2),
        ("- - 5", 5),
        ("+5", 5),
        ("-(2 + 3)", -5),
        ("((((7))))", 7),
        ("0 0 7", 7),
        ("1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 * 3", 3 * 10**19),
        (" \t12\n+ 3 ", 15),
    ],
)
def test_known_values(text, value):
    result = CALC.run(text)
    assert result.ok, result.error
    assert result.value == value


def test_digit_tokens_formatting():
    assert CALC_SPACED.run("1 2 3 + 4 5 6").text == "5 7 9"
    assert CALC_SPACED.run("3 - 1 0").text == "- 7"
    assert CALC_SPACED.run("0 * 5").text == "0"
    assert CALC.run("1 2 3 + 4 5 6").text == "579"
    assert CALC_SPACED.format(-1203) == "- 1 2 0 3"
    assert CALC_SPACED.format("- 5 7 9") == "- 5 7 9"  # text of an int, as counterfactuals give
    assert CALC.parse_int("- 5 7 9") == -579
    with pytest.raises(ToolError):
        CALC.format("five")
    with pytest.raises(ToolError):
        CALC.format(True)


def test_join_spaced_digits_off():
    calc = Calculator(join_spaced_digits=False)
    assert calc.run("12 + 3").value == 15
    result = calc.run("1 2 + 3")
    assert not result.ok and "missing operator" in result.error


@pytest.mark.parametrize(
    "limits, ok_text, bad_text, message",
    [
        (CalculatorLimits(max_digits=5), "99999 + 0", "99999 + 1", "more than 5 digits"),
        (CalculatorLimits(max_digits=5), "-99999 + 0", "-99999 - 1", "more than 5 digits"),
        (CalculatorLimits(max_digits=5), "316 * 316", "316 * 317", "more than 5 digits"),
        (CalculatorLimits(max_digits=5), "99999", "100000", "more than 5 digits"),
        (CalculatorLimits(max_depth=3), "(((1)))", "((((1))))", "max_depth=3"),
        (CalculatorLimits(max_ops=3), "1+2+3+4", "1+2+3+4+5", "max_ops=3"),
        (CalculatorLimits(max_ops=2), "--1", "---1", "max_ops=2"),
        (CalculatorLimits(max_chars=9), "1 + 2 + 3", "1 + 2 + 34", "max_chars=9"),
    ],
)
def test_bounds_are_exact(limits, ok_text, bad_text, message):
    calc = Calculator(limits)
    assert calc.run(ok_text).ok, calc.run(ok_text).error
    bad = calc.run(bad_text)
    assert not bad.ok and message in bad.error


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 / 0", "division by zero"),
        ("5 // (3 - 3)", "division by zero"),
        ("5 % 0", "modulo by zero"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("9**9**9", "'**' (power)"),
        ("2 ** 100000000", "'**' (power)"),
        ("__import__('os').system('echo hi')", "character '_'"),
        ("().__class__.__bases__[0].__subclasses__()", "character '.'"),
        ("1 + 2; import os", "character ';'"),
        ("lambda: 0", "character 'l'"),
        ("0x10", "character 'x'"),
        ("1e9", "character 'e'"),
        ("1.5", "character '.'"),
        ("1_000", "character '_'"),
        ("١٢٣ + 1", "U+0661"),  # Arabic-Indic digits: Python's int() would accept them
        ("１２３", "U+FF11"),  # full-width digits
        ("2²", "U+00B2"),
        ("1\u00a0+ 1", "U+00A0"),  # a no-break space is not whitespace here
        ("\x00", "U+0000"),
        ("1 +", "ends early"),
        ("+", "ends early"),
        ("* 1", "expected a number"),
        ("(1", "unclosed '('"),
        ("1)", "unmatched ')'"),
        ("()", "expected a number"),
        ("2 (3)", "missing operator"),
        ("(" * 65 + "1" + ")" * 65, "max_depth=64"),
        ("(" * 100_000 + "1" + ")" * 100_000, "max_chars=10000"),
        ("9" * 1_000_000, "max_chars=10000"),
        ("9" * 1001, "max_digits=1000"),
        ("1+" * 100_000 + "1", "max_chars=10000"),
        ("1+" * 600 + "1", "max_ops=500"),
        ("-" * 600 + "1", "max_ops=500"),
        ("9" * 1000 + " * " + "9" * 1000, "max_digits=1000"),
        ("(" + "9" * 999 + ") * 10 * 10", "max_digits=1000"),
    ],
)
def test_hostile_input_is_a_clear_error(monkeypatch, text, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("the calculator must never run code")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    calc = Calculator()
    t0 = time.perf_counter()
    result = calc.run(text)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"{text[:30]!r} took {elapsed:.2f}s"
    assert not result.ok
    assert result.value is None and result.text is None
    assert result.error.startswith("calculator: ")
    assert message in result.error, result.error


@pytest.mark.parametrize("value", [None, b"1 + 1", 12])
def test_non_text_input_is_an_error(value):
    result = Calculator().run(value)
    assert not result.ok and "expected text" in result.error


def test_worst_case_within_bounds_is_fast():
    """The most work the default bounds allow (max-size operands, every operator
    used) stays small."""
    big = "9" * 999
    text = " + ".join(f"({big} // 7 * 3 % {big})" for _ in range(4))
    calc = Calculator()
    t0 = time.perf_counter()
    result = calc.run(text)
    assert time.perf_counter() - t0 < 0.5
    expected = 4 * ((int(big) // 7 * 3) % int(big))
    assert result.ok and result.value == expected


def test_numbers_past_pythons_str_digit_limit():
    """Bounds above sys.get_int_max_str_digits() (4300) still work, exactly."""
    calc = Calculator(CalculatorLimits(max_digits=12_000, max_chars=30_000), digit_tokens=False)
    a = 7 * (10**5000 - 1) // 9  # 777...7, 5000 digits
    b = (10**4500 - 1) // 3 + 1  # 333...34, 4500 digits
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # only for building the reference strings
    try:
        a_text, b_text, expected_text = str(a), str(b), str(a * b)
        expected_minus_one = str(a * b - 1)
    finally:
        sys.set_int_max_str_digits(old)
    result = calc.run(f"{a_text} * {b_text} - 1")
    assert result.ok, result.error
    assert result.value == a * b - 1
    assert result.text == expected_minus_one
    assert digits_to_int(expected_text) == a * b
    assert int_to_digits(a * b) == expected_text


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_digits"):
        CalculatorLimits(max_digits=0)
