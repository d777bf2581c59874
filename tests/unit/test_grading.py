"""The time-limited grader: what an item without a verdict counts for, and the shared child of grade_all."""

from __future__ import annotations

import pytest

from rewards.grading import TimedGrader, grade_all, grade_items, shared_grader
from rewards.tasks import load_task

SUDOKU = {"puzzle": "3102200002100320", "solution": "3142243142131324"}


def test_an_item_without_a_verdict_counts_as_unanswered() -> None:
    """A timeout or an error is 0 of the denominator an empty completion gets: Sudoku's blank cells."""
    with TimedGrader("sudoku") as grader:
        assert grader.unanswered_denominator(SUDOKU) == 8.0
        assert grader.unanswered_denominator({"puzzle": "x"}) == 1.0  # a reference the grader cannot read
    with TimedGrader("gsm8k") as grader:
        [good, broken] = grader.grade(["<answer>18</answer>"] * 2, [{"answer": "18"}, {"answer": "eighteen"}])
    assert (good.num, good.den, good.error) == (1.0, 1.0, None)
    assert (broken.num, broken.den, broken.timed_out) == (0.0, 1.0, False)
    assert broken.error == "ValueError: reference answer 'eighteen' is not a number"


def test_grade_all_matches_the_grader_and_reuses_one_child() -> None:
    texts = [f"<answer>{SUDOKU['solution']}</answer>", "<answer>3142</answer>", "no answer"]
    expected = [load_task("sudoku").grade(t, SUDOKU) for t in texts]
    assert grade_all("sudoku", texts, [SUDOKU] * 3) == expected
    grader = shared_grader("sudoku", "agrpo", 1.0, 8192)
    child = grader._sandbox._child.process
    assert grade_items("sudoku", texts, [SUDOKU] * 3) == grade_items("sudoku", texts, [SUDOKU] * 3)
    assert grader._sandbox._child.process is child and child is not None and child.is_alive()


def test_the_reward_comes_with_the_grade_when_a_scheme_is_given() -> None:
    with TimedGrader("gsm8k", scheme="agrpo") as grader:
        [grade] = grader.grade(["<think>t</think><answer>18</answer>"], [{"answer": "18"}])
    assert (grade.num, grade.den) == (1.0, 1.0)
    assert grade.reward is not None and grade.reward.score == pytest.approx(4.0)


def test_mismatched_lengths_are_refused() -> None:
    with TimedGrader("gsm8k") as grader, pytest.raises(ValueError, match="2 completions but 1 references"):
        grader.grade(["a", "b"], [{"answer": "1"}])


def test_a_grading_child_that_cannot_start_is_an_error_not_zero_accuracy(tmp_path) -> None:
    """A script without a main guard cannot start forkserver children; its items must not all grade wrong."""
    import subprocess
    import sys

    script = tmp_path / "no_guard.py"
    script.write_text(
        "from rewards.grading import grade_items\n"
        "print(grade_items('arithmetic', ['<answer>3</answer>'], [{'question': '1+2', 'answer': '3'}]))\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "guard its entry point with `if __name__ == '__main__':`" in run.stderr
