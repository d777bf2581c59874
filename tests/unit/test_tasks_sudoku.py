"""4x4 Sudoku: digit extraction, padding/truncation, cell accuracy, AGRPO format and the grader."""

from __future__ import annotations

import csv

import pytest

from rewards.tasks import sudoku
from tests.unit.reward_helpers import shared_file

PUZZLE = "3102200002100320"
SOLUTION = "3142243142131324"
REF = {"puzzle": PUZZLE, "solution": SOLUTION}
EMPTY = PUZZLE.count("0")


def _with_wrong_blanks(count: int) -> str:
    """The solution with the first `count` blank cells set to a wrong digit."""
    grid = list(SOLUTION)
    blanks = [i for i, c in enumerate(PUZZLE) if c == "0"][:count]
    for i in blanks:
        grid[i] = "1" if grid[i] != "1" else "2"
    return "".join(grid)


@pytest.mark.parametrize(
    ("answer", "accuracy"),
    [
        (SOLUTION, 1.0),
        ("3142 2431\n4213 1324", 1.0),
        ("[" + ",".join(SOLUTION) + "]", 1.0),
        (_with_wrong_blanks(2), (EMPTY - 2) / EMPTY),
        (SOLUTION + "9999", 1.0),
        (SOLUTION[:8], PUZZLE[:8].count("0") / EMPTY),
        ("no digits", 0.0),
    ],
)
def test_d1_cell_accuracy(answer: str, accuracy: float) -> None:
    result = sudoku.reward(f"<answer>{answer}</answer>", REF, "d1")
    assert result.score == pytest.approx(accuracy)
    assert result.components == {"cells": pytest.approx(accuracy)}


def test_d1_reads_the_last_complete_answer_pair() -> None:
    assert sudoku.reward(f"<answer>0000</answer><answer>{SOLUTION}</answer>", REF).score == 1.0
    assert sudoku.reward(f"<answer>{SOLUTION}", REF).score == 0.0
    assert sudoku.reward("", REF).score == 0.0


def test_agrpo_components() -> None:
    full = sudoku.reward(f"<think>t</think><answer>\n{SOLUTION}\n</answer>", REF, "agrpo")
    assert full.components == {"format": 1.0, "correct": 3.0}
    changed_given = "4" + SOLUTION[1:]
    result = sudoku.reward(f"<answer>{changed_given}</answer>", REF, "agrpo")
    assert result.components["format"] == 0.25
    assert result.components["correct"] == 3.0
    short = sudoku.reward(f"<answer>{SOLUTION[:15]}</answer>", REF, "agrpo")
    assert short.components["format"] == 0.0
    assert sudoku.reward("", REF, "agrpo").score == 0.0


def test_grader_counts_cells() -> None:
    assert sudoku.grade(f"<answer>{SOLUTION}</answer>", REF) == (EMPTY, EMPTY)
    assert sudoku.grade(f"<answer>{_with_wrong_blanks(3)}</answer>", REF) == (EMPTY - 3, EMPTY)
    assert sudoku.grade(f"the grid is {SOLUTION}.", REF) == (EMPTY, EMPTY)
    assert sudoku.grade("", REF) == (0.0, EMPTY)


def test_real_rows_score_fully_with_their_solution() -> None:
    with shared_file("sudoku_4x4_test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[:50]
    for row in rows:
        ref = {"puzzle": row["Puzzle"], "solution": row["Solution"]}
        empty = ref["puzzle"].count("0")
        assert sudoku.grade(f"<answer>{ref['solution']}</answer>", ref) == (empty, empty)
        assert sudoku.reward(f"<answer>{ref['solution']}</answer>", ref, "agrpo").score == 4.0
