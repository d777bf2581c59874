"""Countdown: reach the target with + - * / and parentheses, each given number used exactly once.

Reference fields: `numbers` (list of int) and `target` (int). The answer may end in `= target`;
that part is checked, never trusted. Expressions go through `rewards.safe_expr`, never `eval`.

d1 scheme (d1's Countdown reward): 1.0 for a correct expression in the last answer pair, 0.1 for
any other answer (wrong, invalid or empty), 0 without a complete answer pair.
AGRPO scheme: format up to 1 (1/3 each for `= target` on the right, a clean left side and exactly
the given numbers on it; -0.5 for more than one `=`) plus 3.0 for a correct expression.
"""

from __future__ import annotations

from fractions import Fraction

from rewards.answers import clip, first_answer, last_answer, last_boxed
from rewards.safe_expr import MAX_LITERAL_DIGITS, ExprError, evaluate, uses_exactly
from rewards.types import RewardResult

D1_CORRECT, D1_ATTEMPT = 1.0, 0.1
AGRPO_CORRECT = 3.0
_LHS_CHARS = frozenset("0123456789+-*/() \t\n")


def check_answer(text: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """Whether `text` (an expression, optionally `= target`) hits the target with exactly `numbers`."""
    parts = text.split("=")
    if len(parts) > 2:
        return False, "more than one '='"
    if len(parts) == 2:
        rhs = parts[1].strip().rstrip(".").strip()
        if not _is_target(rhs, target):
            return False, f"right-hand side {rhs[:20]!r} is not the target {target}"
    try:
        result = evaluate(parts[0])
    except ExprError as err:
        return False, str(err)
    if not uses_exactly(result.literals, numbers):
        return False, f"uses {sorted(result.literals)}, not each of {sorted(numbers)} once"
    if result.value != Fraction(target):
        return False, f"evaluates to {result.value}, not {target}"
    return True, "correct"


def _is_target(text: str, target: int) -> bool:
    """Whether `text` is the target written as a plain integer (ASCII digits, bounded length)."""
    digits = text[1:] if text.startswith("-") else text
    ok = digits.isascii() and digits.isdigit() and len(digits) <= MAX_LITERAL_DIGITS
    return ok and int(text) == target


def _literal_ints(text: str) -> list[int] | None:
    """The digit runs of `text` as ints, or None when one is too long to be a given number."""
    values, run = [], ""
    for char in [*text, " "]:
        if char in "0123456789":
            run += char
            if len(run) > MAX_LITERAL_DIGITS:
                return None
        elif run:
            values.append(int(run))
            run = ""
    return values


def agrpo_format(answer: str | None, numbers: list[int], target: int) -> float:
    """AGRPO's Countdown format score of the answer text `lhs = rhs`."""
    if answer is None or "=" not in answer:
        return 0.0
    parts = answer.split("=")
    score = -0.5 if len(parts) > 2 else 0.0
    lhs, rhs = parts[0].strip(), parts[-1].strip()
    if _is_target(rhs, target):
        score += 1 / 3
    if lhs and set(lhs) <= _LHS_CHARS:
        score += 1 / 3
    used = _literal_ints(lhs)
    if used is not None and sorted(used) == sorted(numbers):
        score += 1 / 3
    return score


def reward(completion: str, reference: dict, scheme: str = "d1") -> RewardResult:
    text = clip(completion)
    numbers, target = list(reference["numbers"]), int(reference["target"])
    if scheme == "d1":
        answer = last_answer(text)
        if answer is None:
            return RewardResult(0.0, {"correct": 0.0, "attempt": 0.0})
        if check_answer(answer, numbers, target)[0]:
            return RewardResult(D1_CORRECT, {"correct": D1_CORRECT, "attempt": 0.0})
        return RewardResult(D1_ATTEMPT, {"correct": 0.0, "attempt": D1_ATTEMPT})
    if scheme == "agrpo":
        answer = first_answer(text)
        fmt = agrpo_format(answer, numbers, target)
        ok = answer is not None and check_answer(answer, numbers, target)[0]
        correct = AGRPO_CORRECT if ok else 0.0
        return RewardResult(fmt + correct, {"format": fmt, "correct": correct})
    raise ValueError(f"scheme {scheme!r}: must be d1 or agrpo")


def extract_for_grading(completion: str) -> str:
    r"""d1's evaluation order: the last `\boxed{}`, else the first answer pair, else the whole text."""
    text = clip(completion)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    answer = first_answer(text)
    return answer if answer is not None else text


def grade(completion: str, reference: dict) -> tuple[float, float]:
    ok, _ = check_answer(extract_for_grading(completion), list(reference["numbers"]), int(reference["target"]))
    return (1.0 if ok else 0.0), 1.0
