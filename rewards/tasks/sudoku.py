"""4x4 Sudoku: the fraction of originally empty cells filled correctly.

Reference fields: `puzzle` (16 digits, 0 = blank) and `solution` (16 digits). The answer's digits
are read from the answer pair (other characters ignored), padded with 0 or cut to 16.

d1 scheme (d1's Sudoku reward): the cell accuracy of the last answer pair (0 without one).
AGRPO scheme: format up to 1 (0.25 for exactly 16 characters, then 0.25 for four of each digit 1-4
and 0.5 for keeping every given cell) plus 3.0 x the cell accuracy of the first answer pair.
Grader (d1 evaluation): (correct empty cells, empty cells) of the first answer pair, else of the
last 16-digit run in the completion, so a set's accuracy is the sum over the sum.
"""

from __future__ import annotations

import re

from rewards.answers import clip, first_answer, last_answer
from rewards.types import RewardResult

CELLS = 16
AGRPO_CORRECT = 3.0
_SIXTEEN_DIGITS = re.compile(r"(?<!\d)\d{16}(?!\d)")


def answer_digits(answer: str | None) -> str | None:
    """The digits of an answer, padded with 0 or cut to 16; None when it holds no digit."""
    if answer is None:
        return None
    digits = "".join(c for c in answer if c in "0123456789")
    if not digits:
        return None
    return digits[:CELLS].ljust(CELLS, "0")


def cell_counts(grid: str | None, reference: dict) -> tuple[int, int]:
    """(correct originally-empty cells, originally-empty cells)."""
    puzzle, solution = reference["puzzle"], reference["solution"]
    empty = [i for i in range(CELLS) if puzzle[i] == "0"]
    if grid is None:
        return 0, len(empty)
    return sum(grid[i] == solution[i] for i in empty), len(empty)


def _accuracy(grid: str | None, reference: dict) -> float:
    correct, empty = cell_counts(grid, reference)
    return correct / empty if empty else 0.0


def agrpo_format(answer: str | None, puzzle: str) -> float:
    if answer is None or len(answer) != CELLS:
        return 0.0
    score = 0.25
    if "".join(sorted(answer)) == "1111222233334444":
        score += 0.25
    if all(p == "0" or p == a for p, a in zip(puzzle, answer, strict=True)):
        score += 0.5
    return score


def reward(completion: str, reference: dict, scheme: str = "d1") -> RewardResult:
    text = clip(completion)
    if scheme == "d1":
        accuracy = _accuracy(answer_digits(last_answer(text)), reference)
        return RewardResult(accuracy, {"cells": accuracy})
    if scheme == "agrpo":
        answer = first_answer(text)
        fmt = agrpo_format(answer, reference["puzzle"])
        correct = AGRPO_CORRECT * _accuracy(answer_digits(answer), reference)
        return RewardResult(fmt + correct, {"format": fmt, "correct": correct})
    raise ValueError(f"scheme {scheme!r}: must be d1 or agrpo")


def grade(completion: str, reference: dict) -> tuple[float, float]:
    text = clip(completion)
    grid = answer_digits(first_answer(text))
    if grid is None:
        runs = _SIXTEEN_DIGITS.findall(text)
        grid = runs[-1] if runs else None
    correct, empty = cell_counts(grid, reference)
    return float(correct), float(empty)
