r"""Simple arithmetic (`3*4-5`): the generated sanity task for the tiny model.

Reference field: `answer` (a number). The reward has Countdown's shape so that a model which only
learned the format is rewarded a little and a right answer a lot.
d1 scheme: 1.0 for the right number in the last answer pair, 0.1 for any other answer pair, 0 without.
AGRPO scheme: 0.5 for a think pair, 0.5 for an answer pair, 3.0 for the right number in the first one.
Grader: GSM8K's (first numeric `\boxed{}`, else the last number in the first answer pair).
"""

from __future__ import annotations

from rewards.answers import answer_number, clip, first_answer, last_answer, parse_number
from rewards.formats import agrpo_format_terms
from rewards.tasks.gsm8k import gold_number
from rewards.types import RewardResult

D1_CORRECT, D1_ATTEMPT = 1.0, 0.1
AGRPO_CORRECT = 3.0


def reward(completion: str, reference: dict, scheme: str = "d1") -> RewardResult:
    text = clip(completion)
    gold = gold_number(reference)
    if scheme == "d1":
        answer = last_answer(text)
        if answer is None:
            return RewardResult(0.0, {"correct": 0.0, "attempt": 0.0})
        if parse_number(answer) == gold:
            return RewardResult(D1_CORRECT, {"correct": D1_CORRECT, "attempt": 0.0})
        return RewardResult(D1_ATTEMPT, {"correct": 0.0, "attempt": D1_ATTEMPT})
    if scheme == "agrpo":
        answer = first_answer(text)
        ok = answer is not None and parse_number(answer) == gold
        terms = {**agrpo_format_terms(text), "correct": AGRPO_CORRECT if ok else 0.0}
        return RewardResult(sum(terms.values()), terms)
    raise ValueError(f"scheme {scheme!r}: must be d1 or agrpo")


def grade(completion: str, reference: dict) -> tuple[float, float]:
    value = answer_number(clip(completion))
    return (1.0 if value is not None and value == gold_number(reference) else 0.0), 1.0
