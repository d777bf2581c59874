r"""GSM8K: a numeric answer, compared as a number (`1,234`, `-7`, `18.0`, `$18`, `18 dollars`).

Reference field: `answer` (a number, as text or a number; a GSM8K solution's `#### 42` tail is
read as its answer); the prompt reads `question` (or a `problem` column).

d1 scheme (d1's GSM8K reward): 2.0 for the right number, 0.5 when the answer is written as a whole
number, soft format 0.5, strict format 0.5 and d1's XML count (up to 0.5). The answer is d1's: the
text after the last `<answer>` up to `</answer>` (or the whole completion without a tag), a
`\boxed{}` inside it unwrapped. d1 compared strings; we compare numbers, so `18.0` and `$18` count.
AGRPO scheme: 0.5 for a think pair, 0.5 for an answer pair, 3.0 for the right number (the first
answer pair, or the whole completion, with a `\boxed{}` inside it unwrapped).
Grader (d1 evaluation): the first numeric `\boxed{}`, else the last number in the first answer pair.
No generator (items come from a data file) and no wrong-answer perturbation.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from rewards.answers import (
    answer_number,
    boxed_contents,
    clip,
    d1_xml_answer,
    first_answer,
    first_boxed_number,
    is_integer_literal,
    parse_number,
)
from rewards.formats import agrpo_format_terms, d1_format_terms
from rewards.tasks.base import RowError, nonempty_text
from rewards.templates import agrpo_math_prompt, d1_math_prompt, question_prompt
from rewards.types import RewardResult

D1_CORRECT, D1_INT = 2.0, 0.5
AGRPO_CORRECT = 3.0

FIELDS = ("answer",)
COLUMNS = {"question": ("question", "problem"), "answer": ("answer",)}
PROMPTS = {"d1": d1_math_prompt, "agrpo": agrpo_math_prompt, "plain": question_prompt}


def check_row(found: dict[str, Any]) -> dict[str, Any]:
    """A numeric answer (after a GSM8K `####`), and the question as text."""
    answer = nonempty_text(found["answer"], "answer")
    if "####" in answer:
        answer = answer.split("####")[-1].strip()
    if parse_number(answer) is None:
        raise RowError(f"answer {answer[:40]!r} is not a number")
    question = {"question": str(found["question"])} if "question" in found else {}
    return {**found, "answer": answer, **question}


def gold_number(reference: dict) -> Fraction:
    value = parse_number(str(reference["answer"]))
    if value is None:
        raise ValueError(f"reference answer {reference['answer']!r} is not a number")
    return value


def _value_and_literal(answer: str) -> tuple[Fraction | None, str]:
    r"""The number an answer states and the text it is written as (a `\boxed{}` unwrapped)."""
    boxes = boxed_contents(answer)
    if boxes:
        return first_boxed_number(answer), boxes[0]
    return parse_number(answer), answer


def reward(completion: str, reference: dict, scheme: str = "d1") -> RewardResult:
    text = clip(completion)
    gold = gold_number(reference)
    if scheme == "d1":
        value, written = _value_and_literal(d1_xml_answer(text))
        terms = {
            "correct": D1_CORRECT if value == gold else 0.0,
            "int": D1_INT if is_integer_literal(written) else 0.0,
            **d1_format_terms(text),
        }
        return RewardResult(sum(terms.values()), terms)
    if scheme == "agrpo":
        answer = first_answer(text)
        value, _ = _value_and_literal(text if answer is None else answer)
        terms = {**agrpo_format_terms(text), "correct": AGRPO_CORRECT if value == gold else 0.0}
        return RewardResult(sum(terms.values()), terms)
    raise ValueError(f"scheme {scheme!r}: must be d1 or agrpo")


def grade(completion: str, reference: dict) -> tuple[float, float]:
    value = answer_number(clip(completion))
    return (1.0 if value is not None and value == gold_number(reference) else 0.0), 1.0
