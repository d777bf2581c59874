"""Countdown: answer rules (numbers once, optional `= target`), both schemes and the grader."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import pytest

from rewards.tasks import countdown
from tests.unit.reward_helpers import shared_file

REF = {"numbers": [3, 5, 7], "target": 22}


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        ("<answer>3*5+7</answer>", 1.0),
        ("<reasoning>r</reasoning>\n<answer>\n 7 + 5*3 \n</answer>", 1.0),
        ("<answer>3*5+7 = 22</answer>", 1.0),
        ("<answer>3*5+7 = 23</answer>", 0.1),
        ("<answer>3*5+7 = 22 = 22</answer>", 0.1),
        ("<answer>5*5-3</answer>", 0.1),
        ("<answer>3*5+7+0</answer>", 0.1),
        ("<answer>3*7+5</answer>", 0.1),
        ("<answer></answer>", 0.1),
        ("<answer>3*5+7", 0.0),
        ("3*5+7", 0.0),
        ("", 0.0),
        ("<answer>1</answer> <answer>3*5+7</answer>", 1.0),
        ("<answer>3*5+7</answer> <answer>1</answer>", 0.1),
    ],
)
def test_d1_scores(completion: str, score: float) -> None:
    result = countdown.reward(completion, REF, "d1")
    assert result.score == pytest.approx(score)
    assert sum(result.components.values()) == pytest.approx(score)


def test_exact_rational_division() -> None:
    assert countdown.reward("<answer>6/(1-3/4)</answer>", {"numbers": [1, 3, 4, 6], "target": 24}).score == 1.0


@pytest.mark.parametrize(
    ("answer", "fmt", "correct"),
    [
        ("3*5+7 = 22", 1.0, 3.0),
        ("3*5+7", 0.0, 3.0),
        ("3*5+7 = 21", 2 / 3, 0.0),
        ("3*5*7 = 22", 1.0, 0.0),
        ("x+5+7 = 22", 1 / 3, 0.0),
        ("3*5+7 = 22 = 22", 0.5, 0.0),
    ],
)
def test_agrpo_components(answer: str, fmt: float, correct: float) -> None:
    result = countdown.reward(f"<think>t</think><answer>{answer}</answer>", REF, "agrpo")
    assert result.components["format"] == pytest.approx(fmt)
    assert result.components["correct"] == correct
    assert result.score == pytest.approx(fmt + correct)


def test_agrpo_without_answer_scores_zero() -> None:
    assert countdown.reward("<think>t</think>", REF, "agrpo").score == 0.0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("\\boxed{3 \\times 5 + 7}", 1.0),
        ("\\boxed{1} then \\boxed{3*5+7}", 1.0),
        ("<answer>3*5+7</answer><answer>1</answer>", 1.0),
        ("<answer>3*5+7 = 22</answer>", 1.0),
        ("<answer>3*5+7 = 21</answer>", 0.0),
        ("3*5+7", 1.0),
        ("I think 3*5+7", 0.0),
        ("", 0.0),
    ],
)
def test_grader(completion: str, expected: float) -> None:
    assert countdown.grade(completion, REF) == (expected, 1.0)


OPS = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": lambda x, y: x / y if y else None,
}


def _apply(op: str, x: Fraction | None, y: Fraction | None) -> Fraction | None:
    return None if x is None or y is None else OPS[op](x, y)


def _solve(numbers: list[int], target: int) -> str | None:
    """Brute force over orders, operators and both bracketings of three numbers."""
    for a, b, c in itertools.permutations(numbers):
        fa, fb, fc = Fraction(a), Fraction(b), Fraction(c)
        for p, q in itertools.product("+-*/", repeat=2):
            if _apply(q, _apply(p, fa, fb), fc) == target:
                return f"({a}{p}{b}){q}{c}"
            if _apply(p, fa, _apply(q, fb, fc)) == target:
                return f"{a}{p}({b}{q}{c})"
    return None


def test_real_rows_are_graded_correct_when_solved() -> None:
    rows = [json.loads(line) for line in shared_file("countdown_cd3_test.jsonl").open()][:20]
    solved = 0
    for row in rows:
        ref = {"numbers": [int(n) for n in row["input"].split(",")], "target": int(row["output"])}
        text = _solve(ref["numbers"], ref["target"])
        if text is not None:
            solved += 1
            assert countdown.grade(f"<answer>{text}</answer>", ref) == (1.0, 1.0)
            assert countdown.reward(f"<answer>{text} = {ref['target']}</answer>", ref).score == 1.0
    assert solved > 0
