"""Arithmetic: the tiny model's sanity task; Countdown-shaped reward, GSM8K grader."""

from __future__ import annotations

import pytest

from rewards.tasks import arithmetic

REF = {"answer": "-7"}


@pytest.mark.parametrize(
    ("completion", "score"),
    [("<answer>-7</answer>", 1.0), ("<answer>7</answer>", 0.1), ("<answer>-7", 0.0), ("", 0.0)],
)
def test_d1_scores(completion: str, score: float) -> None:
    assert arithmetic.reward(completion, REF, "d1").score == pytest.approx(score)


def test_agrpo_components() -> None:
    result = arithmetic.reward("<think>2*3-13</think><answer>-7</answer>", REF, "agrpo")
    assert result.components == {"think_format": 0.5, "answer_format": 0.5, "correct": 3.0}


def test_grader() -> None:
    assert arithmetic.grade("<answer>-7</answer>", REF) == (1.0, 1.0)
    assert arithmetic.grade("<answer>7</answer>", REF) == (0.0, 1.0)


def test_unknown_scheme_is_an_error() -> None:
    with pytest.raises(ValueError, match="scheme"):
        arithmetic.reward("<answer>-7</answer>", REF, "other")
