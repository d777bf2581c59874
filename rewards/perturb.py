"""Plausible wrong completions: a correct completion with a small, task-shaped mistake in its answer.

Supervised warm-up on a mix of correct and near-miss answers gives a base model that often *almost*
solves a problem: its pass@G is far above its pass@1, which is the regime where RL mainly sharpens the
distribution (ALGORITHM.md section 7). A near miss keeps the answer's form, so format rewards still hold
and only correctness differs:

- countdown: the same numbers and operators with two numbers swapped or one operator changed, still a
  valid expression over exactly the given numbers, but missing the target (a whole-number result when
  one exists);
- sudoku: a full grid keeping every given cell, with two originally empty cells holding different digits
  swapped (each digit still appears four times), or one empty cell changed when no such pair exists;
- arithmetic: the right number off by 1 or 2.

Only the text inside the first `<answer>...</answer>` pair changes (the pair every grader reads).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from fractions import Fraction
from itertools import combinations
from typing import Any

from common.errors import DataError
from rewards.answers import ANSWER_CLOSE, ANSWER_OPEN, parse_number
from rewards.safe_expr import ExprError, evaluate, uses_exactly

_EXPR_PIECES = re.compile(r"\d+|\D")
_OPERATORS = "+-*/"
ARITHMETIC_OFFSETS = (-2, -1, 1, 2)


def _answer_span(completion: str) -> tuple[int, int]:
    """Start and end of the stripped text inside the first answer pair."""
    start = completion.find(ANSWER_OPEN)
    end = completion.find(ANSWER_CLOSE, start + len(ANSWER_OPEN)) if start != -1 else -1
    if end == -1:
        raise DataError(f"completion {completion[:60]!r}: no <answer>...</answer> pair to perturb")
    body = completion[start + len(ANSWER_OPEN) : end]
    lead = len(body) - len(body.lstrip())
    return start + len(ANSWER_OPEN) + lead, start + len(ANSWER_OPEN) + len(body.rstrip())


def wrong_countdown_answer(answer: str, numbers: list[int], target: int, rng: random.Random) -> str:
    """A well-formed expression over exactly `numbers` near `answer` that does not reach `target`.

    An `= target` suffix is kept, so the answer still claims the target and only its left side is wrong.
    """
    lhs, equals, rhs = answer.partition("=")
    pieces = _EXPR_PIECES.findall(lhs)
    literal_at = [i for i, p in enumerate(pieces) if p.isdigit()]
    operator_at = [i for i, p in enumerate(pieces) if p in _OPERATORS]
    candidates: list[list[str]] = []
    for i, j in combinations(literal_at, 2):
        if pieces[i] != pieces[j]:
            swapped = list(pieces)
            swapped[i], swapped[j] = pieces[j], pieces[i]
            candidates.append(swapped)
    for i in operator_at:
        for op in _OPERATORS:
            if op != pieces[i]:
                changed = list(pieces)
                changed[i] = op
                candidates.append(changed)
    wrong: list[tuple[bool, str]] = []
    for candidate in candidates:
        text = "".join(candidate)
        try:
            result = evaluate(text)
        except ExprError:
            continue
        if uses_exactly(result.literals, numbers) and result.value != Fraction(target):
            wrong.append((result.value.denominator == 1, text))
    if not wrong:
        raise DataError(f"countdown answer {answer!r}: no well-formed wrong expression within one swap or operator")
    # A whole-number result reads like a real attempt; a fraction only when nothing else misses.
    whole = [text for is_whole, text in wrong if is_whole]
    return rng.choice(whole or [text for _, text in wrong]) + equals + rhs


def wrong_sudoku_grid(grid: str, puzzle: str, rng: random.Random) -> str:
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


def wrong_number(answer: str, rng: random.Random) -> str:
    """The number `answer` states, moved by a small non-zero offset."""
    value = parse_number(answer)
    if value is None:
        raise DataError(f"answer {answer!r}: not a number, cannot be moved off by a little")
    wrong = value + rng.choice(ARITHMETIC_OFFSETS)
    return str(wrong.numerator) if wrong.denominator == 1 else str(float(wrong))


def _countdown(answer: str, item: dict[str, Any], rng: random.Random) -> str:
    return wrong_countdown_answer(answer, [int(n) for n in item["numbers"]], int(item["target"]), rng)


def _sudoku(answer: str, item: dict[str, Any], rng: random.Random) -> str:
    digits = "".join(c for c in answer if c.isdigit())
    if len(digits) != len(item["puzzle"]):
        raise DataError(f"sudoku answer {answer!r}: not a {len(item['puzzle'])}-digit grid")
    return wrong_sudoku_grid(digits, item["puzzle"], rng)


def _arithmetic(answer: str, item: dict[str, Any], rng: random.Random) -> str:
    return wrong_number(answer, rng)


PERTURBATIONS: dict[str, Callable[[str, dict[str, Any], random.Random], str]] = {
    "countdown": _countdown,
    "sudoku": _sudoku,
    "arithmetic": _arithmetic,
}


def wrong_completion(task: str, item: dict[str, Any], rng: random.Random) -> str:
    """The item's correct `completion` with a plausible wrong answer in its first answer pair."""
    if task not in PERTURBATIONS:
        raise DataError(f"task {task!r}: no wrong-answer perturbation; tasks with one are {', '.join(PERTURBATIONS)}")
    completion = item.get("completion")
    if not isinstance(completion, str):
        raise DataError(f"{task} item has no `completion` text to perturb (generated items carry one)")
    start, end = _answer_span(completion)
    wrong = PERTURBATIONS[task](completion[start:end], item, rng)
    return completion[:start] + wrong + completion[end:]
