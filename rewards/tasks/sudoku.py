"""4x4 Sudoku: the fraction of originally empty cells filled correctly.

Reference fields: `puzzle` (16 digits, 0 = blank) and `solution` (16 digits), also read from the
columns `Puzzle` and `Solution` of the shared benchmark file; a solution must agree with the
puzzle's given cells. The answer's digits are read from the answer pair (other characters ignored),
padded with 0 or cut to 16.

d1 scheme (d1's Sudoku reward): the cell accuracy of the last answer pair (0 without one).
AGRPO scheme: format up to 1 (0.25 for exactly 16 characters, then 0.25 for four of each digit 1-4
and 0.5 for keeping every given cell) plus 3.0 x the cell accuracy of the first answer pair.
Grader (d1 evaluation): (correct empty cells, empty cells) of the first answer pair, else of the
last 16-digit run in the completion, so a set's accuracy is the sum over the sum.
Generator: a uniformly relabelled valid grid with blanks removed while the solution stays unique.
Wrong answer for warm-up: a full grid keeping every given cell, with two originally empty cells
holding different digits swapped (each digit still appears four times), or one empty cell changed
when no such pair exists.
"""

from __future__ import annotations

import random
import re
from itertools import combinations
from typing import Any

from common.errors import ConfigError, DataError
from rewards.answers import clip, first_answer, last_answer
from rewards.tasks.base import Option, RowError, prompt_field
from rewards.types import RewardResult

CELLS = 16
AGRPO_CORRECT = 3.0
MAX_BLANKS = 12
MAX_MISSES = 2000
_SIXTEEN_DIGITS = re.compile(r"(?<!\d)\d{16}(?!\d)")

FIELDS = ("puzzle", "solution")
ACCURACY_NAME = "cell accuracy"
COLUMNS = {"puzzle": ("puzzle", "Puzzle"), "solution": ("solution", "Solution")}


def _grid(value: Any, name: str, digits: str) -> str:
    text = str(value).zfill(16) if isinstance(value, int) and not isinstance(value, bool) else str(value).strip()
    if len(text) != CELLS or any(c not in digits for c in text):
        raise RowError(f"{name} {value!r} is not 16 digits from {digits}")
    return text


def check_row(found: dict[str, Any]) -> dict[str, Any]:
    puzzle, solution = _grid(found["puzzle"], "puzzle", "01234"), _grid(found["solution"], "solution", "1234")
    clash = [i for i in range(CELLS) if puzzle[i] not in ("0", solution[i])]
    if clash:
        raise RowError(f"solution disagrees with the puzzle's given cell {clash[0]}")
    return {**found, "puzzle": puzzle, "solution": solution}


# --- generator

OPTIONS = {
    "min_blanks": Option(6, "fewest blank cells"),
    "max_blanks": Option(10, f"most blank cells (at most {MAX_BLANKS})"),
}


def _full_grid(rng: random.Random) -> list[int]:
    """A uniformly relabelled valid 4x4 grid: permute digits, rows within bands, bands, columns, stacks."""
    base = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    digits = rng.sample([1, 2, 3, 4], 4)
    bands = rng.sample([0, 1], 2)
    rows = [2 * band + r for band in bands for r in rng.sample([0, 1], 2)]
    stacks = rng.sample([0, 1], 2)
    cols = [2 * stack + c for stack in stacks for c in rng.sample([0, 1], 2)]
    grid = [[digits[base[r][c] - 1] for c in cols] for r in rows]
    if rng.random() < 0.5:
        grid = [list(col) for col in zip(*grid, strict=True)]
    return [v for row in grid for v in row]


def _candidates(grid: list[int], i: int) -> set[int]:
    r, c = divmod(i, 4)
    box = [4 * (2 * (r // 2) + dr) + 2 * (c // 2) + dc for dr in (0, 1) for dc in (0, 1)]
    seen = {grid[4 * r + k] for k in range(4)} | {grid[4 * k + c] for k in range(4)} | {grid[j] for j in box}
    return {1, 2, 3, 4} - seen


def count_solutions(grid: list[int], limit: int = 2) -> int:
    """Solutions of a 4x4 puzzle (0 = blank), counting no further than `limit`."""
    try:
        i = grid.index(0)
    except ValueError:
        return 1
    total = 0
    for digit in sorted(_candidates(grid, i)):
        grid[i] = digit
        total += count_solutions(grid, limit - total)
        grid[i] = 0
        if total >= limit:
            break
    return total


def generate(rng: random.Random, min_blanks: int, max_blanks: int) -> dict[str, Any]:
    """A puzzle with a unique solution and a number of blanks drawn from [min_blanks, max_blanks]."""
    if not 1 <= min_blanks <= max_blanks <= MAX_BLANKS:
        raise ConfigError(
            f"sudoku generator: need 1 <= min_blanks <= max_blanks <= {MAX_BLANKS} "
            f"(a 4x4 puzzle with a unique solution keeps at least 4 givens); got {min_blanks}, {max_blanks}"
        )
    blanks = rng.randint(min_blanks, max_blanks)
    for _ in range(MAX_MISSES):
        solution = _full_grid(rng)
        puzzle = list(solution)
        removed = 0
        for cell in rng.sample(range(CELLS), CELLS):
            if removed == blanks:
                break
            puzzle[cell] = 0
            if count_solutions(list(puzzle)) == 1:
                removed += 1
            else:
                puzzle[cell] = solution[cell]
        if removed == blanks:
            solution_text = "".join(map(str, solution))
            return {
                "puzzle": "".join(map(str, puzzle)),
                "solution": solution_text,
                "completion": f"<answer>{solution_text}</answer>",
            }
    raise ConfigError(f"sudoku generator: no unique puzzle with {blanks} blanks after {MAX_MISSES} tries")


def item_key(item: dict[str, Any]) -> str:
    return item["puzzle"]


# --- prompts

D1_SUDOKU = """Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>"""

AGRPO_SUDOKU = """You will be given a 4x4 Sudoku puzzle, provided as a 16-character string from left to right, top to bottom, with 0s representing empty cells.
Fill in the empty cells with the correct digits 1-4 such that each row, column, and 2x2 subgrid contains each digit exactly once.
Think through the puzzle step by step, enclosing your reasoning process in <think> tags.
Your final answer should be a complete 16-character string with only the digits 1-4 representing the filled-in grid.
Format your response as:
<think>
reasoning process here
</think>
<answer>
[16-character string with no spaces]
</answer>

Puzzle: 3014002020004130

<think>
Interpret puzzle as 4 rows of 4:
R1: 3 0 1 4
R2: 0 0 2 0
R3: 2 0 0 0
R4: 4 1 3 0

Fill easy singles:
R1 missing 2 → R1C2=2.
R4 missing 2 → R4C4=2.
Box D (R3-4,C3-4) then needs {1,4}; column4 can only accept 1 → R3C4=1, R3C3=4.
R3 now missing 3 → R3C2=3.
Column1 missing 1 → R2C1=1.
Column2 missing 4 → R2C2=4.
Last cell R2C4=3.

Final grid:
R1: 3 2 1 4
R2: 1 4 2 3
R3: 2 3 4 1
R4: 4 1 3 2
</think>
<answer>
3214142323414132
</answer>

Puzzle: 0000100420013142

<think>
Interpret puzzle as 4 rows of 4:
R1: 0 0 0 0
R2: 1 0 0 4
R3: 2 0 0 1
R4: 3 1 4 2

Fill easy singles:
Col1 missing 4 → R1C1=4.
Col4 missing 3 → R1C4=3.
Box A (R1-2,C1-2) missing {2,3} and R1 now needs {1,2} → R1C2=2, R2C2=3.
R1C3=1.
R2 now missing 2 → R2C3=2.
Col2 missing 4 → R3C2=4, then R3C3=3.

Final grid:
R1: 4 2 1 3
R2: 1 3 2 4
R3: 2 4 3 1
R4: 3 1 4 2
</think>
<answer>
4213132424313142
</answer>

Puzzle: 2001403002001420

<think>
Interpret puzzle as 4 rows of 4:
R1: 2 0 0 1
R2: 4 0 3 0
R3: 0 2 0 0
R4: 1 4 2 0

Fill easy singles:
R1 missing {3,4}; Col2 can't be 1 so R1C2=3 → R1C3=4.
R4 missing 3 → R4C4=3.
Col4 missing {2,4}; R2 must take 2 → R2C4=2 → R2C2=1.
Col1 missing 3 → R3C1=3.
Col3 missing 1 → R3C3=1 → R3C4=4.

Final grid:
R1: 2 3 4 1
R2: 4 1 3 2
R3: 3 2 1 4
R4: 1 4 2 3
</think>
<answer>
2341413232141423
</answer>
"""


def d1_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    content = f"{D1_SUDOKU}\n\nSolve the following Sudoku puzzle: {prompt_field(item, 'puzzle')}\n"
    return [{"role": "user", "content": content}]


def agrpo_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": AGRPO_SUDOKU},
        {"role": "user", "content": f"Puzzle: {prompt_field(item, 'puzzle')}"},
    ]


def plain_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": str(prompt_field(item, "puzzle"))}]


PROMPTS = {"d1": d1_prompt, "agrpo": agrpo_prompt, "plain": plain_prompt}


# --- reward and grader


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


# --- wrong answer for warm-up


def wrong_grid(grid: str, puzzle: str, rng: random.Random) -> str:
    """`grid` with two empty cells of different digits swapped (or one empty cell changed)."""
    empty = [i for i in range(len(puzzle)) if puzzle[i] == "0"]
    if not empty:
        raise DataError(f"sudoku puzzle {puzzle}: no empty cell to fill wrongly")
    cells = list(grid)
    pairs = [(i, j) for i, j in combinations(empty, 2) if grid[i] != grid[j]]
    if pairs:
        i, j = rng.choice(pairs)
        cells[i], cells[j] = grid[j], grid[i]
    else:
        i = rng.choice(empty)
        cells[i] = rng.choice([d for d in "1234" if d != grid[i]])
    return "".join(cells)


def perturb(answer: str, item: dict[str, Any], rng: random.Random) -> str:
    digits = "".join(c for c in answer if c.isdigit())
    if len(digits) != len(item["puzzle"]):
        raise DataError(f"sudoku answer {answer!r}: not a {len(item['puzzle'])}-digit grid")
    return wrong_grid(digits, item["puzzle"], rng)
