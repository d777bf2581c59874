r"""MATH (MATH-500): a LaTeX answer, compared by `rewards.math_equiv.equivalent`.

Reference field: `answer` (LaTeX, no `\boxed{}`); the prompt reads `question` (or a `problem` column).

d1 scheme (d1's MATH reward): 2.0 when the last `\boxed{}` (else the first answer pair) is
equivalent to the answer, plus d1's boxed-in-answer format term, 0.5 x (1.0 for an `<answer>` tag
+ 1.0 if the answer part holds a `\boxed`, else 0.5), so 0.25 to 1.0.
AGRPO scheme: 0.5 for a think pair, 0.5 for an answer pair, 3.0 when the first answer pair (or the
whole completion), with its first `\boxed{}` unwrapped, is equivalent.
Grader (d1 evaluation): the last `\boxed{}`, else the first answer pair, equivalent to the answer.
No generator (items come from a data file) and no wrong-answer perturbation.
"""

from __future__ import annotations

from typing import Any

from rewards.answers import ANSWER_CLOSE, ANSWER_OPEN, boxed_contents, clip, first_answer, last_boxed
from rewards.formats import agrpo_format_terms
from rewards.math_equiv import equivalent
from rewards.tasks.base import nonempty_text
from rewards.templates import agrpo_math_prompt, d1_math_prompt, question_prompt
from rewards.types import RewardResult

D1_CORRECT = 2.0
AGRPO_CORRECT = 3.0
D1_TAG_WEIGHT = 0.5

FIELDS = ("answer",)
COLUMNS = {"question": ("question", "problem"), "answer": ("answer",)}
PROMPTS = {"d1": d1_math_prompt, "agrpo": agrpo_math_prompt, "plain": question_prompt}


def check_row(found: dict[str, Any]) -> dict[str, Any]:
    """A non-empty answer (any LaTeX), and the question as text."""
    question = {"question": str(found["question"])} if "question" in found else {}
    return {**found, "answer": nonempty_text(found["answer"], "answer"), **question}


def extract_answer(text: str) -> str | None:
    r"""The last non-empty `\boxed{}`, else the first answer pair."""
    boxed = last_boxed(text)
    if boxed and boxed.strip():
        return boxed.strip()
    return first_answer(text)


def agrpo_answer(text: str) -> str:
    r"""AGRPO's reading: the first answer pair (or the whole text), its first `\boxed{}` unwrapped."""
    answer = first_answer(text)
    answer = text if answer is None else answer
    boxes = boxed_contents(answer)
    return boxes[0] if boxes else answer


def d1_boxed_in_answer(text: str) -> dict[str, float]:
    r"""d1's format term: an `<answer>` tag, and a `\boxed` inside what follows it."""
    has_tag = ANSWER_OPEN in text
    part = text.split(ANSWER_OPEN, 1)[1].split(ANSWER_CLOSE, 1)[0] if has_tag else text
    return {
        "answer_tag": D1_TAG_WEIGHT if has_tag else 0.0,
        "boxed_in_answer": D1_TAG_WEIGHT * (1.0 if "\\boxed" in part else 0.5),
    }


def reward(completion: str, reference: dict, scheme: str = "d1") -> RewardResult:
    text = clip(completion)
    gold = str(reference["answer"])
    if scheme == "d1":
        correct = D1_CORRECT if equivalent(extract_answer(text), gold) else 0.0
        terms = {"correct": correct, **d1_boxed_in_answer(text)}
        return RewardResult(sum(terms.values()), terms)
    if scheme == "agrpo":
        correct = AGRPO_CORRECT if equivalent(agrpo_answer(text), gold) else 0.0
        terms = {**agrpo_format_terms(text), "correct": correct}
        return RewardResult(sum(terms.values()), terms)
    raise ValueError(f"scheme {scheme!r}: must be d1 or agrpo")


def grade(completion: str, reference: dict) -> tuple[float, float]:
    ok = equivalent(extract_answer(clip(completion)), str(reference["answer"]))
    return (1.0 if ok else 0.0), 1.0
