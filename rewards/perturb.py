"""Plausible wrong completions: a correct completion with a small, task-shaped mistake in its answer.

Supervised warm-up on a mix of correct and near-miss answers gives a base model that often *almost*
solves a problem: its pass@G is far above its pass@1, which is the regime where RL mainly sharpens the
distribution (ALGORITHM.md section 7). A near miss keeps the answer's form, so format rewards still hold
and only correctness differs. Each task says what a near miss is (its `perturb`: Countdown swaps two
numbers or changes an operator, Sudoku swaps two filled-in cells, arithmetic is off by 1 or 2); this
module applies it to the text inside the first `<answer>...</answer>` pair (the pair every grader reads).
"""

from __future__ import annotations

import random
from typing import Any

from common.errors import ConfigError, DataError
from rewards.answers import ANSWER_CLOSE, ANSWER_OPEN
from rewards.tasks import load_task, task_names


def _answer_span(completion: str) -> tuple[int, int]:
    """Start and end of the stripped text inside the first answer pair."""
    start = completion.find(ANSWER_OPEN)
    end = completion.find(ANSWER_CLOSE, start + len(ANSWER_OPEN)) if start != -1 else -1
    if end == -1:
        raise DataError(f"completion {completion[:60]!r}: no <answer>...</answer> pair to perturb")
    body = completion[start + len(ANSWER_OPEN) : end]
    lead = len(body) - len(body.lstrip())
    return start + len(ANSWER_OPEN) + lead, start + len(ANSWER_OPEN) + len(body.rstrip())


def _perturbable() -> str:
    return ", ".join(name for name in task_names() if load_task(name).perturb is not None)


def check_wrong_fraction(task: str, wrong_fraction: float) -> None:
    """Fail before any work when wrong answers are asked for a task that cannot make them."""
    if wrong_fraction > 0 and load_task(task).perturb is None:
        raise ConfigError(
            f"sft.wrong_fraction = {wrong_fraction}: task {task} has no wrong-answer perturbation "
            f"(tasks with one: {_perturbable()})"
        )


def wrong_completion(task: str, item: dict[str, Any], rng: random.Random) -> str:
    """The item's correct `completion` with a plausible wrong answer in its first answer pair."""
    perturb = load_task(task).perturb
    if perturb is None:
        raise DataError(f"task {task!r}: no wrong-answer perturbation; tasks with one are {_perturbable()}")
    completion = item.get("completion")
    if not isinstance(completion, str):
        raise DataError(f"{task} item has no `completion` text to perturb (generated items carry one)")
    start, end = _answer_span(completion)
    wrong = perturb(completion[start:end], item, rng)
    return completion[:start] + wrong + completion[end:]
