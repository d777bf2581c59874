"""Exact evaluation of untrusted arithmetic (Countdown answers) without `eval`.

d1 scores Countdown with Python's `eval`, so `9**9**9**9` hangs it and anything that slips past its
character filter runs as code. Here the text is first bounded (length, characters, parenthesis depth),
then parsed with `ast` and walked by hand: only integer literals, + - * /, unary minus and
parentheses are accepted, literals have a bounded number of digits, values are exact `Fraction`s,
and division by zero is an error. With these bounds every accepted expression evaluates in
microseconds, so no timeout is needed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPR_CHARS = 200
MAX_DEPTH = 32
MAX_LITERAL_DIGITS = 9

_ALLOWED_CHARS = frozenset("0123456789+-*/() \t\n")
_REPLACEMENTS = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("×", "*"),
    ("·", "*"),
    ("÷", "/"),
    ("−", "-"),
    ("\\left", ""),
    ("\\right", ""),
)
_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}


class ExprError(ValueError):
    """The text is not an accepted arithmetic expression; the message says which rule it broke."""


@dataclass(frozen=True)
class Evaluated:
    value: Fraction
    literals: tuple[int, ...]


def normalise(text: str) -> str:
    """Map the usual LaTeX/Unicode operator spellings onto + - * /."""
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    return text.strip()


def check_text(text: str) -> None:
    """Reject by length, characters, `**`/`//` and nesting before the parser ever sees the text."""
    if not text:
        raise ExprError("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression longer than {MAX_EXPR_CHARS} characters")
    bad = sorted(set(text) - _ALLOWED_CHARS)
    if bad:
        raise ExprError(f"character {bad[0]!r} not allowed (only integers, + - * / and parentheses)")
    if "**" in text or "//" in text:
        raise ExprError("only + - * / are allowed (no ** or //)")
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExprError(f"parentheses nested deeper than {MAX_DEPTH}")
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ExprError("unbalanced parentheses")
    if depth:
        raise ExprError("unbalanced parentheses")


def evaluate(text: str) -> Evaluated:
    """The exact value of an arithmetic expression and the integer literals it uses."""
    text = normalise(text)
    check_text(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ExprError(f"not an arithmetic expression ({type(err).__name__})") from None
    literals: list[int] = []
    value = _walk(tree.body, literals)
    return Evaluated(value, tuple(literals))


def _walk(node: ast.AST, literals: list[int]) -> Fraction:
    """Recursion depth is at most the text length, which `check_text` bounds."""
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise ExprError(f"literal {node.value!r} is not an integer")
        if node.value >= 10**MAX_LITERAL_DIGITS:
            raise ExprError(f"literal longer than {MAX_LITERAL_DIGITS} digits")
        literals.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_walk(node.operand, literals)
    if isinstance(node, ast.BinOp):
        left = _walk(node.left, literals)
        right = _walk(node.right, literals)
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise ExprError("division by zero")
            return left / right
        op = _OPS.get(type(node.op))
        if op is None:
            raise ExprError(f"operator {type(node.op).__name__} not allowed")
        return op(left, right)
    raise ExprError(f"{type(node).__name__} not allowed")


def uses_exactly(literals: tuple[int, ...], numbers: list[int]) -> bool:
    """Each given number used exactly once (as a multiset), and nothing else."""
    return sorted(literals) == sorted(numbers)
