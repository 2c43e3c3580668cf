"""Safe arithmetic evaluation for untrusted expressions.

The expression comes from outside (a user or another agent), so it is never handed to ``eval``.
It is parsed into an AST and only a tiny arithmetic subset is interpreted, with hard bounds on
input length, nesting depth and integer size so that hostile input fails fast with a
readable :class:`ExpressionError` instead of hanging, exhausting memory or crashing.
"""

from __future__ import annotations

import ast
import math
from typing import Final

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_RESULT_BITS",
    "ExpressionError",
    "evaluate",
]

MAX_EXPRESSION_LENGTH: Final = 1000
"""Longest accepted input; keeps parsing cheap and bounds the number of AST nodes."""

MAX_DEPTH: Final = 100
"""Deepest accepted nesting of brackets and operands, far below the recursion limit."""

MAX_RESULT_BITS: Final = 4096
"""Largest accepted integer magnitude, so no single operation can take noticeable time."""

_ALLOWED = "only numbers, + - * / // % ** and parentheses are allowed"
_MAX_SNIPPET = 60
_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")

_BINARY_SYMBOLS: Final[dict[type[ast.operator], str]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
}
_ALLOWED_BINARY: Final = frozenset(
    {ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow}
)

_UNARY_SYMBOLS: Final[dict[type[ast.unaryop], str]] = {
    ast.UAdd: "+",
    ast.USub: "-",
    ast.Invert: "~",
    ast.Not: "not",
}

_NODE_NAMES: Final[dict[type[ast.AST], str]] = {
    ast.Attribute: "attribute access",
    ast.Await: "await",
    ast.BoolOp: "boolean operator",
    ast.Call: "function call",
    ast.Compare: "comparison",
    ast.Dict: "dict",
    ast.DictComp: "comprehension",
    ast.FormattedValue: "f-string",
    ast.GeneratorExp: "generator expression",
    ast.IfExp: "conditional expression",
    ast.JoinedStr: "f-string",
    ast.Lambda: "lambda",
    ast.List: "list",
    ast.ListComp: "comprehension",
    ast.NamedExpr: "assignment expression",
    ast.Set: "set",
    ast.SetComp: "comprehension",
    ast.Slice: "slice",
    ast.Starred: "starred expression",
    ast.Subscript: "subscript",
    ast.Tuple: "tuple",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class ExpressionError(ValueError):
    """The expression is malformed, uses unsupported syntax or exceeds a safety limit.

    Subclasses ``ValueError`` so callers that already treat bad input as a value error keep
    working; the message is meant to be shown to the person who wrote the expression.
    """


def evaluate(expression: str) -> int | float:
    """Evaluate a plain arithmetic expression such as ``"2*(3+4)"``.

    Python semantics are kept (``/`` always yields a float, ``**`` binds right-to-left) so the
    result matches what the author would get from a Python prompt.

    Args:
        expression: Numbers combined with ``+ - * / // % **``, unary ``+``/``-`` and parentheses.

    Returns:
        The value, as an ``int`` when every step stayed integral, otherwise a ``float``.

    Raises:
        ExpressionError: For any input that is not a safe, finite arithmetic expression.
    """
    if not isinstance(expression, str):
        raise ExpressionError(f"expression must be a string, not {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression is too long ({len(expression)} characters; "
            f"the maximum is {MAX_EXPRESSION_LENGTH})"
        )
    source = expression.strip()
    if not source:
        raise ExpressionError(
            f"empty expression: expected a calculation such as '2*(3+4)' ({_ALLOWED})"
        )
    _check_bracket_depth(source)
    tree = _parse(source, leading=expression[: len(expression) - len(expression.lstrip())])
    return _eval(tree.body, source, 0)


def _check_bracket_depth(source: str) -> None:
    """Reject deep bracket nesting before the parser sees it.

    Brackets leave no trace in the AST, and CPython's own limits here differ between versions
    and surface as ``SyntaxError``, ``RecursionError`` or ``MemoryError``.
    """
    depth = 0
    for char in source:
        if char in _OPENERS:
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep()
        elif char in _CLOSERS and depth > 0:
            depth -= 1


def _parse(source: str, leading: str) -> ast.Expression:
    """Parse ``source``, turning every parser failure into an :class:`ExpressionError`."""
    try:
        return ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(_describe_syntax_error(exc, source, leading)) from None
    except (RecursionError, MemoryError):
        raise _too_deep() from None
    except ValueError as exc:
        raise ExpressionError(f"invalid syntax: {exc}") from None


def _describe_syntax_error(exc: SyntaxError, source: str, leading: str) -> str:
    """Point at the offending column of the text the user actually typed."""
    message = exc.msg or "invalid syntax"
    if "null bytes" in message:
        return "invalid syntax: the expression contains a null byte"
    if not exc.offset:
        return "invalid syntax: the expression ends unexpectedly"
    lineno = exc.lineno or 1
    column = exc.offset
    if lineno == 1:
        column += len(leading) - (leading.rfind("\n") + 1)
    shown_line = lineno + leading.count("\n")
    multiline = "\n" in source or shown_line > 1
    where = f"line {shown_line}, column {column}" if multiline else f"column {column}"
    if message != "invalid syntax":
        return f"invalid syntax at {where}: {message}"
    lines = source.splitlines() or [""]
    line = lines[min(lineno, len(lines)) - 1]
    start = exc.offset - 1
    end = start + 1
    if exc.end_offset and (exc.end_lineno or lineno) == lineno and exc.end_offset > exc.offset:
        end = exc.end_offset - 1
    near = line[start:end].strip()
    return f"invalid syntax at {where} near {near!r}" if near else f"invalid syntax at {where}"


def _too_deep() -> ExpressionError:
    return ExpressionError(f"expression is too deeply nested (the maximum depth is {MAX_DEPTH})")


def _eval(node: ast.expr, source: str, depth: int) -> int | float:
    """Interpret one node of the already-parsed expression.

    Left-leaning operator chains (``1 + 2 + 3 + ...``) are folded iteratively so that a long
    flat sum costs no nesting depth; only genuinely nested operands count towards
    :data:`MAX_DEPTH`, which keeps the recursion bounded.
    """
    if depth > MAX_DEPTH:
        raise _too_deep()
    if isinstance(node, ast.Constant):
        return _literal(node, source)
    if isinstance(node, ast.UnaryOp):
        unary_type = type(node.op)
        if unary_type not in (ast.UAdd, ast.USub):
            raise _unsupported_operator(_UNARY_SYMBOLS.get(unary_type, unary_type.__name__))
        operand = _eval(node.operand, source, depth + 1)
        return -operand if unary_type is ast.USub else +operand
    if isinstance(node, ast.BinOp):
        chain: list[ast.BinOp] = []
        leftmost: ast.expr = node
        while isinstance(leftmost, ast.BinOp):
            chain.append(leftmost)
            leftmost = leftmost.left
        value = _eval(leftmost, source, depth + 1)
        for binop in reversed(chain):
            op_type = type(binop.op)
            if op_type not in _ALLOWED_BINARY:
                raise _unsupported_operator(_BINARY_SYMBOLS.get(op_type, op_type.__name__))
            right = _eval(binop.right, source, depth + 1)
            value = _apply(binop, value, right, source)
        return value
    raise _unsupported(_describe_node(node))


def _literal(node: ast.Constant, source: str) -> int | float:
    """Accept only real numbers; ``bool`` is an ``int`` subclass and must be singled out."""
    value: object = node.value
    if isinstance(value, bool):
        raise _unsupported(f"boolean literal {value}")
    if isinstance(value, int):
        if value.bit_length() > MAX_RESULT_BITS:
            raise ExpressionError(
                f"number too large in {_snippet(source, node)} "
                f"(integers are limited to {MAX_RESULT_BITS} bits)"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(
                f"number too large in {_snippet(source, node)} (floats must be finite)"
            )
        return value
    if isinstance(value, complex):
        raise _unsupported("complex number")
    if isinstance(value, str):
        raise _unsupported("string literal")
    if isinstance(value, bytes):
        raise _unsupported("bytes literal")
    if value is None:
        raise _unsupported("None")
    if value is Ellipsis:
        raise _unsupported("ellipsis")
    raise _unsupported(f"literal {value!r}")


def _apply(node: ast.BinOp, left: int | float, right: int | float, source: str) -> int | float:
    """Apply one binary operator after ruling out results too big to compute quickly."""
    op_type = type(node.op)
    result: object
    try:
        if op_type is ast.Add:
            result = left + right
        elif op_type is ast.Sub:
            result = left - right
        elif op_type is ast.Mult:
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() - 1 > MAX_RESULT_BITS
            ):
                raise _too_large(source, node)
            result = left * right
        elif op_type is ast.Div:
            result = left / right
        elif op_type is ast.FloorDiv:
            result = left // right
        elif op_type is ast.Mod:
            result = left % right
        else:
            if isinstance(left, int) and isinstance(right, int) and _power_too_large(left, right):
                raise _too_large(source, node)
            result = left**right
    except ZeroDivisionError:
        raise ExpressionError(f"division by zero in {_snippet(source, node)}") from None
    except OverflowError:
        raise _too_large(source, node) from None
    return _checked(result, source, node)


def _power_too_large(base: int, exponent: int) -> bool:
    """Estimate the size of ``base ** exponent`` without computing it.

    ``9**9**9`` would otherwise run for minutes; a negative exponent is evaluated by Python as
    a float power, which is fast and reports overflow by itself.
    """
    if exponent <= 0 or abs(base) <= 1:
        return False
    if exponent > MAX_RESULT_BITS:
        return True
    return exponent * math.log2(abs(base)) > MAX_RESULT_BITS + 1


def _checked(result: object, source: str, node: ast.BinOp) -> int | float:
    """Enforce the result limits shared by every operator."""
    if isinstance(result, int):
        if result.bit_length() > MAX_RESULT_BITS:
            raise _too_large(source, node)
        return result
    if isinstance(result, float):
        if not math.isfinite(result):
            raise _too_large(source, node)
        return result
    if isinstance(result, complex):
        raise ExpressionError(
            f"result is not a real number in {_snippet(source, node)} "
            "(a negative number cannot be raised to a fractional power)"
        )
    raise ExpressionError(f"unsupported result in {_snippet(source, node)}")


def _too_large(source: str, node: ast.BinOp) -> ExpressionError:
    return ExpressionError(
        f"result too large in {_snippet(source, node)} "
        f"(integers are limited to {MAX_RESULT_BITS} bits and floats must be finite)"
    )


def _unsupported(what: str) -> ExpressionError:
    return ExpressionError(f"unsupported syntax: {what} ({_ALLOWED})")


def _unsupported_operator(symbol: str) -> ExpressionError:
    return ExpressionError(f"unsupported operator {symbol!r} ({_ALLOWED})")


def _describe_node(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"name {node.id!r}"
    return _NODE_NAMES.get(type(node), f"{type(node).__name__} expression")


def _snippet(source: str, node: ast.expr) -> str:
    """Quote the failing sub-expression, shortened so one bad operand cannot flood a reply."""
    segment = ast.get_source_segment(source, node) or source
    segment = " ".join(segment.split())
    if len(segment) > _MAX_SNIPPET:
        segment = segment[: _MAX_SNIPPET - 3] + "..."
    return repr(segment)
