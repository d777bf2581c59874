"""A task that exists only for tests, to show that adding a task is one new file: reverse the digits.

Nothing registers it: a run names it by module path, `data.task=tests.toy_task`, and every process
(driver, rollout workers, reward actors and their sandbox children) imports it by that path. Item:
`digits` (the reference field, e.g. `"407"`), its prompt `407>` (the `plain` template only) and the
correct completion `<answer>704</answer>`.
Reward: 1.0 for the reversed digits in the first answer pair, 0.1 for any other answer pair, 0 without.
Grader: the same exact match, as (1, 1) or (0, 1).
"""

from __future__ import annotations

import random
from typing import Any

from rewards.answers import clip, first_answer
from rewards.tasks.base import Option, RowError, prompt_field
from rewards.types import RewardResult

CORRECT, ATTEMPT = 1.0, 0.1

FIELDS = ("digits",)


def check_row(found: dict[str, Any]) -> dict[str, Any]:
    digits = str(found["digits"]).strip()
    if not digits.isascii() or not digits.isdigit():
        raise RowError(f"digits {found['digits']!r} is not a run of digits")
    return {**found, "digits": digits}


OPTIONS = {"length": Option(3, "how many digits")}


def generate(rng: random.Random, length: int) -> dict[str, Any]:
    digits = "".join(rng.choice("0123456789") for _ in range(length))
    return {"digits": digits, "completion": f"<answer>{digits[::-1]}</answer>"}


def item_key(item: dict[str, Any]) -> str:
    return item["digits"]


PROMPTS = {"plain": lambda item: [{"role": "user", "content": f"{prompt_field(item, 'digits')}>"}]}


def reward(completion: str, reference: dict[str, Any], scheme: str = "d1") -> RewardResult:
    answer = first_answer(clip(completion))
    if answer is None:
        return RewardResult(0.0, {"correct": 0.0, "attempt": 0.0})
    if answer.strip() == str(reference["digits"])[::-1]:
        return RewardResult(CORRECT, {"correct": CORRECT, "attempt": 0.0})
    return RewardResult(ATTEMPT, {"correct": 0.0, "attempt": ATTEMPT})


def grade(completion: str, reference: dict[str, Any]) -> tuple[float, float]:
    answer = first_answer(clip(completion))
    return (1.0 if answer is not None and answer.strip() == str(reference["digits"])[::-1] else 0.0), 1.0
