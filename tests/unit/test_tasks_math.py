"""MATH: boxed extraction, equivalence (math-verify + normalisation), reward schemes, hostile input."""

from __future__ import annotations

import itertools
import json

import pytest

from rewards.math_equiv import as_rational, equivalent, normalise, safe_for_sympy
from rewards.tasks import math as math_task
from tests.unit.reward_helpers import finishes, shared_file


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac12", "\\frac{1}{2}"),
        ("-\\frac{3}{4}", "-0.75"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("16\\sqrt{3}", "16 \\sqrt{3}"),
        ("\\sqrt{768}", "16\\sqrt{3}"),
        ("90^\\circ", "90"),
        ("10\\text{ cm}", "10"),
        ("x = 5", "5"),
        ("\\$18", "18"),
        ("x^2+1", "1+x^2"),
        ("1,234", "1234"),
    ],
)
def test_equivalent_forms(pred: str, gold: str) -> None:
    assert equivalent(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), [("\\frac{1}{3}", "0.5"), ("2", "3"), ("", "0"), (None, "1")])
def test_different_answers(pred: str | None, gold: str) -> None:
    assert not equivalent(pred, gold)


def test_normalise_and_rational() -> None:
    assert normalise(" \\left( 1, 2 \\right). ") == "(1,2)"
    assert normalise("\\text{Evelyn}") == "Evelyn"
    assert as_rational("\\frac{-2}{4}") == as_rational("-0.5")
    assert as_rational("1/0") is None


def test_extraction_last_box_with_nested_braces() -> None:
    text = "first \\boxed{1} and finally \\boxed{\\frac{\\sqrt{3}}{2}}"
    assert math_task.extract_answer(text) == "\\frac{\\sqrt{3}}{2}"
    assert math_task.extract_answer("<answer>7</answer>") == "7"
    assert math_task.extract_answer("\\boxed{} <answer>7</answer>") == "7"
    assert math_task.extract_answer("\\boxed{\\frac{1}{2}") is None


def test_d1_components() -> None:
    ref = {"answer": "\\frac{1}{2}"}
    full = math_task.reward("<reasoning>r</reasoning><answer>\\boxed{0.5}</answer>", ref, "d1")
    assert full.components == {"correct": 2.0, "answer_tag": 0.5, "boxed_in_answer": 0.5}
    bare = math_task.reward("\\boxed{0.5}", ref, "d1")
    assert bare.components == {"correct": 2.0, "answer_tag": 0.0, "boxed_in_answer": 0.5}
    unboxed = math_task.reward("<answer>0.5</answer>", ref, "d1")
    assert unboxed.components == {"correct": 2.0, "answer_tag": 0.5, "boxed_in_answer": 0.25}
    assert math_task.reward("", ref, "d1").score == pytest.approx(0.25)


def test_agrpo_components() -> None:
    ref = {"answer": "\\frac{1}{2}"}
    full = math_task.reward("<think>t</think><answer>\\boxed{\\dfrac{1}{2}}</answer>", ref, "agrpo")
    assert full.components == {"think_format": 0.5, "answer_format": 0.5, "correct": 3.0}
    # AGRPO reads the first answer pair, then its first box.
    first = math_task.reward("<answer>\\boxed{0.5}</answer><answer>\\boxed{3}</answer>", ref, "agrpo")
    assert first.components["correct"] == 3.0
    assert math_task.reward("<think>t</think>", ref, "agrpo").score == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("\\boxed{2} ... \\boxed{\\frac{1}{2}}", 1.0),
        ("\\boxed{\\frac{1}{2}} ... \\boxed{2}", 0.0),
        ("<answer>\\frac12</answer>", 1.0),
        ("<answer>0.5", 0.0),
        ("", 0.0),
    ],
)
def test_grader(completion: str, expected: float) -> None:
    assert math_task.grade(completion, {"answer": "\\frac{1}{2}"}) == (expected, 1.0)


HOSTILE = [
    "9**9**9**9",
    "10**10**10",
    "9^{9^{9^{9}}}",
    "10^{10^{10}}",
    "2^{100000}",
    "((10^{1000})^{1000})^{1000}",
    "\\binom{100000}{50000}",
    "2^{999*999*999}",
    "2^{10\\cdot10\\cdot10\\cdot10\\cdot10\\cdot10\\cdot10}",
    "(10^{10})!",
    "1000000!",
    "(" * 10000 + "1" + ")" * 10000,
    "{" * 10000 + "1" + "}" * 10000,
    "1/0",
    "1" * 10000,
    "__import__('os').system('echo hacked')",
    "().__class__.__bases__[0]",
    "\\sum_{i=1}^{10^{9}} i",
    "\\Gamma(\\Gamma(20))",
    "\\tan(\\tan(\\tan(\\tan(1))))",
    "\\cosh(10^{5})",
    "\\sin(1)^{999}",
    "\\sin(1)^{60}",
    "(\\pi+e)^{999}",
    "(x+1)^{999}",
    "\\boxed{" * 7142,
    "\\fbox{" * 8333,
]


@pytest.fixture(scope="module")
def warm_math_verify() -> None:
    """Import SymPy and math-verify once, so the one-second deadline below times the grading alone."""
    assert math_task.grade("\\boxed{x+1}", {"answer": "1+x"}) == (1.0, 1.0)


@pytest.mark.parametrize("answer", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_answers_score_zero_without_hanging(answer: str, warm_math_verify: None) -> None:
    ref = {"answer": "1"}
    for completion in (f"\\boxed{{{answer}}}", f"<answer>{answer}</answer>", answer):
        assert finishes(math_task.grade, completion, ref) == (0.0, 1.0)
        assert finishes(math_task.reward, completion, ref, "d1").components["correct"] == 0.0
        assert finishes(math_task.reward, completion, ref, "agrpo").components["correct"] == 0.0


def test_guard_flags_what_sympy_would_blow_up_on() -> None:
    assert not safe_for_sympy("10**10**10")
    assert not safe_for_sympy("2^{10000}")
    assert safe_for_sympy("x^{2}+2^{10}")
    assert safe_for_sympy("5!")
    assert safe_for_sympy("x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1")
    assert safe_for_sympy("(x^{2}+1)^{3}")
    assert not safe_for_sympy("((10^{100})^{100})^{100}")
    assert safe_for_sympy("(10^{10})^{10}")


def test_real_rows_match_themselves_and_not_their_neighbours() -> None:
    rows = [json.loads(line) for line in shared_file("math500_test.jsonl").open()][:40]
    for row, other in itertools.pairwise(rows):
        assert math_task.grade(f"<answer>\\boxed{{{row['answer']}}}</answer>", row) == (1.0, 1.0)
        if normalise(other["answer"]) != normalise(row["answer"]):
            assert math_task.grade(f"\\boxed{{{other['answer']}}}", row) == (0.0, 1.0)
