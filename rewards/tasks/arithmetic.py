r"""Simple arithmetic (`3*4-5`): the generated sanity task for the tiny model.

Reference field: `answer` (a number); rows are read and checked as GSM8K's, and the prompt reads
`question` (the expression). The reward has Countdown's shape so that a model which only learned the
format is rewarded a little and a right answer a lot.
d1 scheme: 1.0 for the right number in the last answer pair, 0.1 for any other answer pair, 0 without.
AGRPO scheme: 0.5 for a think pair, 0.5 for an answer pair, 3.0 for the right number in the first one.
Grader: GSM8K's (first numeric `\boxed{}`, else the last number in the first answer pair).
Wrong answer for warm-up: the right number off by 1 or 2.
"""

from __future__ import annotations

import random
from typing import Any

from common.errors import ConfigError, DataError
from rewards.answers import answer_number, clip, first_answer, last_answer, parse_number
from rewards.formats import agrpo_format_terms
from rewards.tasks import gsm8k
from rewards.tasks.base import Option, prompt_field
from rewards.tasks.gsm8k import gold_number
from rewards.templates import D1_FORMAT, agrpo_math_prompt
from rewards.types import RewardResult

D1_CORRECT, D1_ATTEMPT = 1.0, 0.1
AGRPO_CORRECT = 3.0
FORMS = ("a+b", "a-b", "a*b", "a*b+c", "a*b-c", "a+b*c")
WRONG_OFFSETS = (-2, -1, 1, 2)
MAX_NUMBER = 10**9 - 1

FIELDS, COLUMNS, check_row = gsm8k.FIELDS, gsm8k.COLUMNS, gsm8k.check_row

# --- generator

OPTIONS = {
    "min_number": Option(0, "smallest number", low=0, high=MAX_NUMBER),
    "max_number": Option(9, "largest number", low=0, high=MAX_NUMBER),
    "forms": Option(FORMS, "expression forms, e.g. a+b a*b-c", type=str, several=True),
}


def generate(rng: random.Random, min_number: int, max_number: int, forms: list[str]) -> dict[str, Any]:
    """A short expression over small integers (`3*4-5`) and its value."""
    chosen = list(forms or FORMS)
    unknown = sorted(set(chosen) - set(FORMS))
    if unknown or max_number < min_number or min_number < 0:
        raise ConfigError(
            f"arithmetic generator: forms must be among {', '.join(FORMS)} and "
            f"0 <= min_number <= max_number (got forms {chosen}, {min_number}..{max_number})"
        )
    form = rng.choice(chosen)
    values = {name: rng.randint(min_number, max_number) for name in "abc"}
    question = "".join(str(values[ch]) if ch in values else ch for ch in form)
    answer = _value(form, values)
    return {"question": question, "answer": str(answer), "completion": f"<answer>{answer}</answer>"}


def _value(form: str, v: dict[str, int]) -> int:
    a, b, c = v["a"], v["b"], v["c"]
    return {"a+b": a + b, "a-b": a - b, "a*b": a * b, "a*b+c": a * b + c, "a*b-c": a * b - c, "a+b*c": a + b * c}[form]


def item_key(item: dict[str, Any]) -> str:
    return item["question"]


# --- prompts


def d1_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{D1_FORMAT}\nCompute {prompt_field(item, 'question')}"}]


def plain_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{prompt_field(item, 'question')}="}]


PROMPTS = {"d1": d1_prompt, "agrpo": agrpo_math_prompt, "plain": plain_prompt}


# --- reward and grader


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


# --- wrong answer for warm-up


def perturb(answer: str, item: dict[str, Any], rng: random.Random) -> str:
    """The number `answer` states, moved by a small non-zero offset."""
    value = parse_number(answer)
    if value is None:
        raise DataError(f"answer {answer!r}: not a number, cannot be moved off by a little")
    wrong = value + rng.choice(WRONG_OFFSETS)
    return str(wrong.numerator) if wrong.denominator == 1 else str(float(wrong))
