"""The Countdown expression evaluator: exact values, and every hostile input rejected, never run."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rewards.safe_expr import ExprError, evaluate, uses_exactly
from rewards.tasks import countdown
from tests.unit.reward_helpers import finishes


@pytest.mark.parametrize(
    ("text", "value", "literals"),
    [
        ("3*5+7", 22, (3, 5, 7)),
        ("6/(1-3/4)", 24, (6, 1, 3, 4)),
        ("-(2-5)", 3, (2, 5)),
        ("1/3+1/3+1/3", 1, (1, 3, 1, 3, 1, 3)),
        ("7 \\times 3 \\div 7", 3, (7, 3, 7)),
        ("(((((1)))))", 1, (1,)),
    ],
)
def test_exact_values(text: str, value: int, literals: tuple[int, ...]) -> None:
    result = evaluate(text)
    assert result.value == Fraction(value)
    assert result.literals == literals


def test_rationals_are_exact() -> None:
    assert evaluate("1/3").value == Fraction(1, 3)
    assert evaluate("2/3*3").value == 2


HOSTILE = {
    "power chain": "9**9**9**9",
    "power tower": "10**10**10",
    "nested parentheses": "(" * 10000 + "1" + ")" * 10000,
    "deep but short": "(" * 40 + "1" + ")" * 40,
    "division by zero": "1/0",
    "zero division after folding": "5/(3-3)",
    "huge literal": "1" * 10000,
    "long literal": "1234567890+1",
    "import": "__import__('os').system('echo hacked')",
    "attribute": "(1).__class__",
    "name": "x+1",
    "float": "1.5*2",
    "floor division": "7//2",
    "unary plus": "+3",
    "call": "abs(-3)",
    "unbalanced": "(1+2",
    "unbalanced close": "1+2)",
    "empty": "   ",
    "leading zero": "012+1",
    "lambda": "lambda: 1",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_expressions_are_rejected(text: str) -> None:
    def attempt() -> str:
        try:
            evaluate(text)
        except ExprError as err:
            return str(err)
        return "accepted"

    assert finishes(attempt) != "accepted"


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_answers_score_no_more_than_an_attempt(text: str) -> None:
    ref = {"numbers": [9, 9, 9, 9], "target": 1}
    completion = f"<answer>{text}</answer>"
    assert finishes(countdown.reward, completion, ref, "d1").score == pytest.approx(0.1)
    assert finishes(countdown.reward, completion, ref, "agrpo").components["correct"] == 0.0
    assert finishes(countdown.grade, completion, ref) == (0.0, 1.0)
    assert finishes(countdown.grade, f"\\boxed{{{text}}}", ref) == (0.0, 1.0)


def test_uses_exactly_is_a_multiset_check() -> None:
    assert uses_exactly((3, 5, 7), [7, 5, 3])
    assert not uses_exactly((3, 3, 7), [3, 5, 7])
    assert not uses_exactly((3, 5), [3, 5, 7])
