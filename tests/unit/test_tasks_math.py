"""MATH: boxed extraction, equivalence (math-verify + normalisation), reward schemes, hostile input.

Hostile answers go through the time-limited grading child (`rewards.grading`), as in every real path:
`equivalent` itself has no time bound, so calling the grader directly on them would hang the test.
"""

from __future__ import annotations

import itertools
import json

import pytest

from common.config import RewardsConfig
from rewards.grading import TimedGrader
from rewards.math_equiv import as_rational, equivalent, normalise
from rewards.registry import build_reward_fn
from rewards.sandbox import SandboxedScorer
from rewards.tasks import math as math_task
from tests.unit.reward_helpers import shared_file


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
        ("x^{25}+1", "1+x^{25}"),
        ("\\sinh(0)", "0"),
        ("(x+1)^{21}", "(1+x)^{21}"),
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


ISSUE_13 = [
    "9^\\left(999999999\\right)",
    "99999999\\,!",
    "99999999\\!!",
    "(a+b+c+d+e+f+g+h)^{20}",
    "\\int 1/(x^5+x+1) dx",
    "\\sqrt{\\sqrt{\\sqrt{\\sqrt{\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}}}}}}}}",
]
TRUE_PAIRS = [("x^{25}+1", "1+x^{25}"), ("\\sinh(0)", "0"), ("(x+1)^{21}", "(1+x)^{21}")]
SWEEP_TIMEOUT_S = 0.25
"""Stricter than the 1 s default, so each hostile item is bounded well under the issue's second."""


def test_hostile_answers_are_graded_wrong_within_the_time_limit() -> None:
    """Every hostile answer, boxed (where the grader reads it), graded wrong: finished, or stopped at the limit."""
    completions = [f"\\boxed{{{a}}}" for a in HOSTILE + ISSUE_13]
    with TimedGrader("math", timeout_s=SWEEP_TIMEOUT_S) as grader:
        grades = grader.grade(completions, [{"answer": "1"}] * len(completions))
        timeouts = grader.timeouts
    assert all((g.num, g.den) == (0.0, 1.0) for g in grades)
    assert all(g.error is None or g.timed_out for g in grades), {g.error for g in grades}
    assert timeouts == sum(g.timed_out for g in grades) > 0


def test_hostile_gold_answers_time_out_and_true_answers_still_pass_afterwards() -> None:
    """Hostile gold answers at the default limit, between true pairs that must still pass in the children
    that replace the killed ones."""
    completions, references = [], []
    for hostile, (pred, gold) in zip(ISSUE_13[:4:2], TRUE_PAIRS[:2], strict=True):
        completions += ["\\boxed{1}", f"\\boxed{{{pred}}}"]
        references += [{"answer": hostile}, {"answer": gold}]
    completions.append(f"\\boxed{{{TRUE_PAIRS[2][0]}}}")
    references.append({"answer": TRUE_PAIRS[2][1]})
    with TimedGrader("math") as grader:
        grades = grader.grade(completions, references)
    assert [(g.num, g.den) for g in grades] == [(0.0, 1.0), (1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (1.0, 1.0)]
    assert [g.timed_out for g in grades] == [True, False, True, False, False]


def test_hostile_rewards_score_zero_in_the_reward_sandbox() -> None:
    """The training reward of hostile answers: scored 0 (stopped at the limit, or wrong), never a hang."""
    completions = [f"<answer>\\boxed{{{a}}}</answer>" for a in ISSUE_13[:2]]
    for scheme in ("d1", "agrpo"):
        scorer = build_reward_fn(RewardsConfig(plugins=[{"name": "math"}], scheme=scheme))
        sandbox = SandboxedScorer(scorer, timeout_s=SWEEP_TIMEOUT_S)
        try:
            outcomes = sandbox.score([(c, {"answer": "1"}) for c in completions])
        finally:
            sandbox.close()
        assert all(o[0].timed_out or o[0].components["correct"] == 0.0 for o in outcomes)
        assert any(o[0].timed_out for o in outcomes)


def test_real_rows_match_themselves_and_not_their_neighbours() -> None:
    rows = [json.loads(line) for line in shared_file("math500_test.jsonl").open()][:40]
    for row, other in itertools.pairwise(rows):
        assert math_task.grade(f"<answer>\\boxed{{{row['answer']}}}</answer>", row) == (1.0, 1.0)
        if normalise(other["answer"]) != normalise(row["answer"]):
            assert math_task.grade(f"\\boxed{{{other['answer']}}}", row) == (0.0, 1.0)
