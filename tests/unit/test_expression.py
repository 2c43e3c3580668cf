"""Tests for the safe arithmetic evaluator, with emphasis on hostile input."""

from __future__ import annotations

import pytest

from actors.builtins import _expression
from actors.builtins._expression import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_RESULT_BITS,
    ExpressionError,
    evaluate,
)

ALLOWED_HINT = "only numbers, + - * / // % ** and parentheses are allowed"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2*(3+4)", 14),
        ("6*7", 42),
        ("-3 + +2", -1),
        ("2**10", 1024),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-7 // 2", -4),
        ("-7 % 4", 1),
        ("2**3**2", 512),
        ("-2**2", -4),
        ("(-2)**2", 4),
        ("1 - 2 - 3", -4),
        ("  42  ", 42),
        ("(1\n+ 2)", 3),
        ("1_000 + 0x10", 1016),
        ("2**4095 // 2**4094", 2),
        ("1**(2**4000)", 1),
        ("(-1)**(2**4095)", 1),
        ("0**(2**4095)", 0),
    ],
)
def test_integer_results(expression: str, expected: int) -> None:
    result = evaluate(expression)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1.5 * 2", 3.0),
        ("7/2", 3.5),
        ("6/3", 2.0),
        ("2**-1", 0.5),
        ("2 ** 0.5 ** 2", 2**0.25),
        ("7.5 // 2", 3.0),
        ("7.5 % 2", 1.5),
        ("1e3 + 1", 1001.0),
        ("-.5", -0.5),
        ("10 ** -400", 0.0),
    ],
)
def test_float_results(expression: str, expected: float) -> None:
    result = evaluate(expression)
    assert result == pytest.approx(expected)
    assert type(result) is float


def test_long_flat_chain_does_not_count_as_nesting() -> None:
    assert evaluate("+".join(["1"] * 500)) == 500


@pytest.mark.parametrize(
    ("expression", "phrase"),
    [
        ("x", "name 'x'"),
        ("pi * 2", "name 'pi'"),
        ("__import__('os')", "function call"),
        ("abs(-1)", "function call"),
        ("().__class__", "attribute access"),
        ("(1).real", "attribute access"),
        ("'abc'", "string literal"),
        ("'1' + '2'", "string literal"),
        ("b'x'", "bytes literal"),
        ("f'{1}'", "f-string"),
        ("lambda: 1", "lambda"),
        ("1 < 2", "comparison"),
        ("1 == 1", "comparison"),
        ("True", "boolean literal True"),
        ("False + 1", "boolean literal False"),
        ("None", "None"),
        ("1j", "complex number"),
        ("2 + 3j", "complex number"),
        ("[1, 2]", "list"),
        ("(1, 2)", "tuple"),
        ("1, 2", "tuple"),
        ("{1}", "set"),
        ("{1: 2}", "dict"),
        ("[1][0]", "subscript"),
        ("(1, 2)[0]", "subscript"),
        ("x[0]", "subscript"),
        ("[x for x in (1,)]", "comprehension"),
        ("1 if 1 else 2", "conditional expression"),
        ("1 and 2", "boolean operator"),
        ("(x := 1)", "assignment expression"),
        ("...", "ellipsis"),
    ],
)
def test_unsupported_syntax_is_rejected(expression: str, phrase: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(expression)
    message = str(info.value)
    assert "unsupported syntax" in message
    assert phrase in message
    assert ALLOWED_HINT in message


@pytest.mark.parametrize(
    ("expression", "symbol"),
    [
        ("1 << 2", "'<<'"),
        ("8 >> 1", "'>>'"),
        ("1 & 2", "'&'"),
        ("1 | 2", "'|'"),
        ("1 ^ 2", "'^'"),
        ("1 @ 2", "'@'"),
        ("~1", "'~'"),
        ("not 1", "'not'"),
    ],
)
def test_unsupported_operators_are_rejected(expression: str, symbol: str) -> None:
    with pytest.raises(ExpressionError, match="unsupported operator") as info:
        evaluate(expression)
    assert symbol in str(info.value)
    assert ALLOWED_HINT in str(info.value)


def test_subscript_on_a_number_is_rejected_as_subscript() -> None:
    with pytest.raises(ExpressionError, match="unsupported syntax: subscript"):
        evaluate("1[0] + 1")


@pytest.mark.parametrize(
    "expression",
    ["9**9**9", "2**100000", "10**10**10", "(-2)**99999", "2**2**2**2**2**2", "4**2048"],
)
def test_huge_powers_are_rejected(expression: str) -> None:
    with pytest.raises(ExpressionError, match="result too large"):
        evaluate(expression)


@pytest.mark.parametrize(
    "expression",
    [
        f"2**{MAX_RESULT_BITS}",
        f"2**{MAX_RESULT_BITS - 1} * 2",
        f"2**{MAX_RESULT_BITS - 1} + 2**{MAX_RESULT_BITS - 1}",
        f"-2**{MAX_RESULT_BITS - 1} - 2**{MAX_RESULT_BITS - 1} - 1",
        f"(2**{MAX_RESULT_BITS - 1}) * (2**{MAX_RESULT_BITS - 1})",
        "1e308 * 10",
        "1e308 + 1e308",
        "2.0 ** 10000",
        "10 ** 300 / 10 ** -10",
        "2**2000 / 3",
        "(2**4000) * 1.0",
        "2 ** -(2**4000)",
    ],
)
def test_results_over_the_limits_are_rejected(expression: str) -> None:
    with pytest.raises(ExpressionError, match="result too large"):
        evaluate(expression)


def test_largest_allowed_integer() -> None:
    assert evaluate(f"2**{MAX_RESULT_BITS - 1}") == 2 ** (MAX_RESULT_BITS - 1)
    largest = f"2**{MAX_RESULT_BITS - 1} - 1 + 2**{MAX_RESULT_BITS - 1}"
    assert evaluate(largest) == 2**MAX_RESULT_BITS - 1


def test_infinite_float_literal_is_rejected() -> None:
    with pytest.raises(ExpressionError, match="number too large in '1e999'"):
        evaluate("1e999")


def test_oversized_integer_literal_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A literal cannot exceed MAX_RESULT_BITS within MAX_EXPRESSION_LENGTH characters, so the
    # limit is lowered to reach the guard.
    monkeypatch.setattr(_expression, "MAX_RESULT_BITS", 64)
    assert evaluate("1" * 19) == int("1" * 19)
    with pytest.raises(ExpressionError, match="number too large"):
        evaluate("1" * 30)


def test_long_integer_literal_within_length_limit_is_accepted() -> None:
    assert evaluate("1" * 999) == int("1" * 999)


def test_negative_base_with_fractional_exponent_is_rejected() -> None:
    with pytest.raises(ExpressionError, match="not a real number"):
        evaluate("(-8) ** 0.5")


@pytest.mark.parametrize(
    "expression", ["1/0", "1 // 0", "1 % 0", "1.0 / 0.0", "5.5 % 0", "0 ** -1", "2 + 3/(1-1)"]
)
def test_division_by_zero(expression: str) -> None:
    with pytest.raises(ExpressionError, match="division by zero"):
        evaluate(expression)


def test_division_by_zero_quotes_the_failing_part() -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate("2 + 1/0")
    assert str(info.value) == "division by zero in '1/0'"


@pytest.mark.parametrize("expression", ["", "   ", "\n\t "])
def test_empty_expression(expression: str) -> None:
    with pytest.raises(ExpressionError, match="empty expression"):
        evaluate(expression)


@pytest.mark.parametrize(
    ("expression", "phrase"),
    [
        ("1 +", "ends unexpectedly"),
        ("(1", "'(' was never closed"),
        ("1)", "unmatched ')'"),
        ("1 2", "column 3 near '2'"),
        ("2 +* 3", "column 4 near '*'"),
        ("  2 +* 3", "column 6 near '*'"),
        ("(1\n+ * 2)", "line 2, column 3"),
        ("1..2", "invalid syntax at column"),
        ("01", "leading zeros"),
        ("3 $ 4", "column 3"),
        ("import os", "invalid syntax"),
        ("1 = 2", "invalid syntax"),
        ("'abc", "unterminated string"),
        ("1\x00", "null byte"),
    ],
)
def test_syntax_errors(expression: str, phrase: str) -> None:
    with pytest.raises(ExpressionError, match="invalid syntax") as info:
        evaluate(expression)
    assert phrase in str(info.value)


def test_too_long_expression() -> None:
    expression = "1+" * (MAX_EXPRESSION_LENGTH // 2) + "1"
    with pytest.raises(ExpressionError, match="too long") as info:
        evaluate(expression)
    assert str(MAX_EXPRESSION_LENGTH) in str(info.value)


def test_expression_at_length_limit_is_accepted() -> None:
    expression = "1+" * ((MAX_EXPRESSION_LENGTH - 1) // 2) + "1"
    assert len(expression) == MAX_EXPRESSION_LENGTH - 1
    assert evaluate(expression + " ") == (MAX_EXPRESSION_LENGTH + 1) // 2


@pytest.mark.parametrize("depth", [100_000, 999, 300, MAX_DEPTH + 1])
def test_deep_parentheses_are_rejected(depth: int) -> None:
    with pytest.raises(ExpressionError, match=r"too long|too deeply nested"):
        evaluate("(" * depth + "1" + ")" * depth)


@pytest.mark.parametrize("depth", [300, MAX_DEPTH + 1])
def test_nesting_within_length_limit_reports_depth(depth: int) -> None:
    with pytest.raises(ExpressionError, match=f"too deeply nested .*{MAX_DEPTH}"):
        evaluate("(" * depth + "1" + ")" * depth)


def test_parentheses_at_depth_limit_are_accepted() -> None:
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1


@pytest.mark.parametrize("count", [MAX_DEPTH + 1, 999])
def test_deep_unary_chain_is_rejected(count: int) -> None:
    with pytest.raises(ExpressionError, match="too deeply nested"):
        evaluate("-" * count + "1")


def test_unary_chain_at_depth_limit_is_accepted() -> None:
    assert evaluate("-" * MAX_DEPTH + "1") == 1


def test_deep_right_nesting_is_rejected() -> None:
    expression = "1-(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ExpressionError, match="too deeply nested"):
        evaluate(expression)


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        evaluate(42)  # type: ignore[arg-type]


def test_expression_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        evaluate("1/0")


@pytest.mark.parametrize(
    "expression",
    [
        "9**9**9",
        "()",
        "().__class__.__bases__[0].__subclasses__()",
        "__builtins__",
        "[*range(10**9)]",
        "'a' * 10**9",
        "1 if True else 0",
        pytest.param("(" * 150 + ")" * 150, id="deep-empty-parens"),
        "((((",
        "))))",
        pytest.param("-" * 999 + "1", id="999-unary-minus"),
        "\x00",
        "\u0661 + 1",
        "# comment",
        "1; 2",
        "yield 1",
        "await x",
    ],
)
def test_hostile_inputs_raise_expression_error(expression: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(expression)
    assert str(info.value)
