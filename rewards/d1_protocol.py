r"""The d1 grading protocol: d1's evaluation parser (`eval/parse_and_get_acc.py` and the MATH string
helpers it imports), decision for decision, so that accuracies compare with d1's published tables.

Each `grade_<task>(completion, reference) -> (numerator, denominator)` takes the answer where d1 takes
it, normalises it as d1 does and compares as d1 does, including d1's quirks: GSM8K reads the first
box that holds a number (`\boxed{1,234}` reads 1) and compares floats; MATH with no box compares the
whole completion, and an `\fbox` keeps its wrapper; Countdown without a box reads the first
`expr = number` anywhere in the text; Sudoku tries five patterns and compares characters as written.
docs/rewards.md lists where this differs from our own graders (`rewards.tasks.<task>.grade`).

Two things are not d1's. Countdown expressions are evaluated by walking Python's own parse of them,
never by `eval`: the same values and the same errors (division by zero, float overflow, `5**-1` as
a float), except that an integer power of more than `MAX_POWER_BITS` bits counts as invalid, where
d1 would compute it for minutes (it cannot come back to a target of three small numbers). And
like every grader here, these run in the time-limited grading child (`rewards.grading`).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from rewards.tasks.gsm8k import gold_number

MAX_POWER_BITS = 1_000_000

_ANSWER_PAIR = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class _Unparsable(Exception):
    """Where d1's MATH normaliser raises (an assertion or an index error), and its caller compares raw strings."""


# GSM8K


_BOXED_UP_TO_FIRST_BRACE = re.compile(r"\\boxed{(.*?)}")
_SIGNED_NUMBER = re.compile(r"-?\d+\.?\d*")
_ONLY_DOTS = re.compile(r"^\.+$")


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def gsm8k_answer(text: str) -> float | None:
    r"""The first `\boxed{..}` (cut at its first `}`) that is or holds a number, else the first answer pair."""
    for content in _BOXED_UP_TO_FIRST_BRACE.findall(text):
        content = content.strip()
        if not content or _ONLY_DOTS.match(content):  # d1 also names "...", which this covers
            continue
        value = _as_float(content)
        if value is None:
            numbers = _SIGNED_NUMBER.findall(content)
            value = _as_float(numbers[0]) if numbers else None
        if value is not None:
            return value
    pair = _ANSWER_PAIR.search(text)
    body = pair.group(1).strip() if pair else ""
    if not body:
        return None
    value = _as_float(body)
    if value is not None:
        return value
    numbers = _SIGNED_NUMBER.findall(body)
    return _as_float(numbers[-1]) if numbers else None


def grade_gsm8k(completion: str, reference: dict[str, Any]) -> tuple[float, float]:
    value = gsm8k_answer(completion)
    return (1.0 if value is not None and value == float(gold_number(reference)) else 0.0), 1.0


# MATH


def last_boxed(text: str) -> str | None:
    r"""The last `\boxed{..}` with its wrapper (else the last `\fbox{..}`); the whole text without either;
    None when that box never closes. Any `\boxed ` (with a space) wins: what follows the last one, up to `$`."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return text
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def unbox(boxed: str) -> str:
    r"""`\boxed{x}` -> `x` and `\boxed x` -> `x`; anything else (an `\fbox`, plain text) is kept as it is."""
    if "\\boxed " in boxed:
        if not boxed.startswith("\\boxed "):
            raise _Unparsable(boxed)
        return boxed[len("\\boxed ") :]
    if boxed.startswith("\\boxed{") and boxed.endswith("}"):
        return boxed[len("\\boxed{") : -1]
    return boxed


def _drop_right_units(s: str) -> str:
    if "\\text{ " not in s:
        return s
    parts = s.split("\\text{ ")
    if len(parts) != 2:
        raise _Unparsable(s)
    return parts[0]


def _brace_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    head, *pieces = s.split("\\sqrt")
    out = [head]
    for piece in pieces:
        if not piece:
            raise _Unparsable(s)
        out.append("\\sqrt" + piece if piece[0] == "{" else "\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(out)


def _brace_fracs(s: str) -> str:
    head, *pieces = s.split("\\frac")
    out = head
    for piece in pieces:
        out += "\\frac"
        if not piece:
            raise _Unparsable(s)
        if piece[0] == "{":
            out += piece
            continue
        if len(piece) < 2:
            return s
        a, b, tail = piece[0], piece[1], piece[2:]
        out += "{" + a + "}" + (b if b == "{" else "{" + b + "}") + tail
    return out


def _slash_to_frac(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        raise _Unparsable(s) from None
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def normalise(s: str) -> str:
    """d1's `strip_string`, step for step; raises `_Unparsable` where d1's raises."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _drop_right_units(s)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _brace_sqrt(s).replace(" ", "")
    s = _brace_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def equivalent(answer: str, gold: str) -> bool:
    """d1's `is_equiv`: normalised strings equal, or the raw strings equal when normalising fails."""
    try:
        return normalise(answer) == normalise(gold)
    except _Unparsable:
        return answer == gold


def math_answer(text: str) -> str | None:
    r"""The last box unwrapped (the whole text when there is none); if that is empty or unclosed, the first
    answer pair; None when neither."""
    boxed = last_boxed(text)
    try:
        answer = None if boxed is None else unbox(boxed)
    except _Unparsable:
        answer = None
    if not answer:
        pair = _ANSWER_PAIR.search(text)
        if pair:
            answer = pair.group(1).strip()
    return answer


def grade_math(completion: str, reference: dict[str, Any]) -> tuple[float, float]:
    answer = math_answer(completion)
    return (1.0 if answer is not None and equivalent(answer, str(reference["answer"])) else 0.0), 1.0


# Countdown


_EQUATION_WITH_RESULT = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")
_EQUATION_CHARS = re.compile(r"^[\d+\-*/().\s]+$")
_DIGITS = re.compile(r"\d+")
_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


class _Invalid(Exception):
    """An expression d1's `eval` would reject or fail on (d1 then scores infinity, never the target)."""


def countdown_equation(text: str) -> str:
    r"""The last box unwrapped (the whole text without one), else for an unclosed box the first answer pair or
    the whole text; LaTeX operators made Python's; cut to `expr` when it reads `expr = number`."""
    boxed = last_boxed(text)
    try:
        if boxed is None:
            raise _Unparsable(text)
        equation = unbox(boxed)
    except _Unparsable:
        pair = _ANSWER_PAIR.search(text)
        equation = pair.group(1).strip() if pair else text
    equation = equation.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    found = _EQUATION_WITH_RESULT.search(equation)
    return found.group(1).strip() if found else equation


def uses_given_numbers(equation: str, numbers: list[int]) -> bool:
    try:
        used = [int(n) for n in _DIGITS.findall(equation)]
    except ValueError:
        return False
    return sorted(used) == sorted(numbers)


def _value(node: ast.AST) -> Any:
    signs: list[ast.unaryop] = []
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        signs.append(node.op)  # a chain of signs, walked without recursion however long it is
        node = node.operand
    value = _operand(node)
    for sign in reversed(signs):
        value = +value if isinstance(sign, ast.UAdd) else -value
    return value


def _operand(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and _huge_power(left, right):
            raise _Invalid("power too large")
        return _OPERATORS[type(node.op)](left, right)
    raise _Invalid(type(node).__name__)


def _huge_power(base: Any, exponent: Any) -> bool:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0 or abs(base) <= 1:
        return False
    return exponent * abs(base).bit_length() > MAX_POWER_BITS


def evaluate_equation(equation: str) -> Any:
    """What d1's `eval` of the equation gives (int, float or complex), or infinity where it raises."""
    if not _EQUATION_CHARS.match(equation):
        return math.inf
    try:
        return _value(ast.parse(equation.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ArithmeticError, TypeError, RecursionError, MemoryError, _Invalid):
        return math.inf


def grade_countdown(completion: str, reference: dict[str, Any]) -> tuple[float, float]:
    numbers, target = list(reference["numbers"]), int(reference["target"])
    equation = countdown_equation(completion)
    ok = uses_given_numbers(equation, numbers) and abs(evaluate_equation(equation) - target) < 1e-5
    return (1.0 if ok else 0.0), 1.0


# Sudoku


_SUDOKU_PATTERNS = tuple(
    re.compile(pattern, re.DOTALL)
    for pattern in (
        r"<answer>.*?```\s*([\d\s]+)```",
        r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
        r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
        r".*?(\d{16})\s*</answer>",
        r"\b(\d{16})\b",
    )
)
_WHITESPACE = re.compile(r"\s")
CELLS = 16


def sudoku_answer(text: str) -> str:
    """The first non-blank capture of d1's five patterns, whitespace removed ("" when none)."""
    for pattern in _SUDOKU_PATTERNS:
        found = pattern.search(text)
        if found and found.group(1).strip():
            return _WHITESPACE.sub("", found.group(1).strip())
    return ""


def grade_sudoku(completion: str, reference: dict[str, Any]) -> tuple[float, float]:
    puzzle, solution = reference["puzzle"], reference["solution"]
    empty = [i for i in range(CELLS) if puzzle[i] == "0"]
    answer = sudoku_answer(completion)
    if not answer:
        return 0.0, float(len(empty))
    grid = answer[:CELLS].ljust(CELLS, "0")
    return float(sum(grid[i] == solution[i] for i in empty)), float(len(empty))


GRADERS: dict[str, Callable[[str, dict[str, Any]], tuple[float, float]]] = {
    "gsm8k": grade_gsm8k,
    "math": grade_math,
    "countdown": grade_countdown,
    "sudoku": grade_sudoku,
}
