"""GSM8K: number extraction, the d1 and AGRPO reward components and the d1 evaluation grader."""

from __future__ import annotations

import json
import random
import re

import pytest

from rewards.formats import soft_format, strict_format
from rewards.tasks import gsm8k
from tests.unit.reward_helpers import shared_file

REF = {"answer": "18"}
STRICT = "<reasoning>\nShe sells 9 eggs at $2.\n</reasoning>\n<answer>\n18\n</answer>\n"


def test_d1_perfect_completion_gets_every_term() -> None:
    result = gsm8k.reward(STRICT, REF, "d1")
    assert result.components == {
        "correct": 2.0,
        "int": 0.5,
        "soft_format": 0.5,
        "strict_format": 0.5,
        "xml_count": 0.5,
    }
    assert result.score == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("answer", "gold", "correct", "integer"),
    [
        ("1,234", "1234", 2.0, 0.5),
        ("-7", "-7", 2.0, 0.5),
        ("18.0", "18", 2.0, 0.0),
        ("$18", "18", 2.0, 0.5),
        ("18 dollars", "18", 2.0, 0.5),
        ("\\boxed{18}", "18", 2.0, 0.5),
        ("17", "18", 0.0, 0.5),
        ("eighteen", "18", 0.0, 0.0),
        ("18.5", "18.50", 2.0, 0.0),
    ],
)
def test_d1_answer_forms(answer: str, gold: str, correct: float, integer: float) -> None:
    result = gsm8k.reward(f"<answer>{answer}</answer>", {"answer": gold}, "d1")
    assert result.components["correct"] == correct
    assert result.components["int"] == integer


def test_d1_extraction_follows_d1_training_reward() -> None:
    # The last answer tag wins, a truncated answer still counts, no tag means the whole text.
    assert gsm8k.reward("<answer>5</answer> then <answer>18</answer>", REF).components["correct"] == 2.0
    assert gsm8k.reward("<answer>18", REF).components["correct"] == 2.0
    assert gsm8k.reward("18", REF).components["correct"] == 2.0
    assert gsm8k.reward("The answer is 18", REF).components["correct"] == 0.0


def test_d1_format_terms_without_format() -> None:
    result = gsm8k.reward("<answer>18</answer>", REF, "d1")
    assert result.components["soft_format"] == 0.0
    assert result.components["strict_format"] == 0.0
    soft = gsm8k.reward("<reasoning>x</reasoning> <answer>18</answer>", REF, "d1")
    assert soft.components["soft_format"] == 0.5
    assert soft.components["strict_format"] == 0.0


def test_xml_count_penalises_trailing_text() -> None:
    clean = gsm8k.reward(STRICT, REF).components["xml_count"]
    trailing = gsm8k.reward(STRICT + "extra", REF).components["xml_count"]
    assert clean == pytest.approx(0.5)
    assert trailing == pytest.approx(0.5 - 2 * 5 * 0.001)


def test_empty_completion_scores_zero() -> None:
    assert gsm8k.reward("", REF, "d1").score == 0.0
    assert gsm8k.reward("", REF, "agrpo").score == 0.0
    assert gsm8k.grade("", REF) == (0.0, 1.0)


def test_agrpo_components() -> None:
    full = gsm8k.reward("<think>9*2</think><answer>\\boxed{18}</answer>", REF, "agrpo")
    assert full.components == {"think_format": 0.5, "answer_format": 0.5, "correct": 3.0}
    no_think = gsm8k.reward("<answer>18</answer>", REF, "agrpo")
    assert no_think.score == pytest.approx(3.5)
    wrong = gsm8k.reward("<think>x</think><answer>17</answer>", REF, "agrpo")
    assert wrong.score == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("so \\boxed{18}", 1.0),
        ("\\boxed{...} then \\boxed{18}", 1.0),
        ("\\boxed{18 eggs}", 1.0),
        ("\\boxed{18} <answer>17</answer>", 1.0),
        ("<answer>first 3, then 18</answer>", 1.0),
        ("<answer>1,8</answer>", 0.0),
        ("<answer>18", 0.0),
        ("<answer>17</answer><answer>18</answer>", 0.0),
        ("no answer at all 18", 0.0),
    ],
)
def test_grader_follows_d1_evaluation(completion: str, expected: float) -> None:
    assert gsm8k.grade(completion, REF) == (expected, 1.0)


def test_grader_compares_numbers() -> None:
    assert gsm8k.grade("\\boxed{1,234.0}", {"answer": 1234}) == (1.0, 1.0)
    assert gsm8k.grade("<answer>-7</answer>", {"answer": "-7"}) == (1.0, 1.0)


def test_unusable_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a number"):
        gsm8k.reward("<answer>1</answer>", {"answer": "n/a"})


def test_real_rows_grade_with_their_own_answers() -> None:
    rows = [json.loads(line) for line in shared_file("gsm8k_test.jsonl").open()][:50]
    for row in rows:
        assert gsm8k.grade(f"<answer>\\boxed{{{row['answer']}}}</answer>", row) == (1.0, 1.0)
        assert gsm8k.grade(f"<answer>{int(row['answer']) + 1}</answer>", row) == (0.0, 1.0)


D1_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
D1_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
FRAGMENTS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", "\n", " ", "x", "7"]


def test_format_terms_decide_as_d1s_regexes_do() -> None:
    """Differential check on random tag soup: our linear scans accept exactly what d1's regexes match."""
    rng = random.Random(0)
    for _ in range(20000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 14)))
        assert strict_format(text) == (0.5 if D1_STRICT.match(text) else 0.0), repr(text)
        assert soft_format(text) == (0.5 if D1_SOFT.match(text) else 0.0), repr(text)
    well_formed = "<reasoning>\nx\n</reasoning>\n<answer>\n7\n</answer>\n"
    for text in (well_formed, well_formed + "\n", "<reasoning>\n\n</reasoning>\n<answer>\n\n</answer>\n\n"):
        assert strict_format(text) == 0.5 and D1_STRICT.match(text), repr(text)
    assert strict_format(well_formed + "\n\n") == 0.0 and not D1_STRICT.match(well_formed + "\n\n")
