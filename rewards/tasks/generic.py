r"""Your own prompts and your own reward: a task that brings no prompt wording and no scoring of its own.

Rows: a `prompt` column (or `messages`) holding either
- a string: the prompt text, given to the model as it is (no chat template; TRL's "standard" format), or
- chat turns, a list of `{"role": ..., "content": ...}`: rendered with the tokenizer's chat template when it
  has one (TRL's "conversational" format, and verl's `prompt` column), else their contents joined.
Every other column stays in the item and reaches the reward plugins as the `reference` dict, nested columns
included (verl's `reward_model`, `extra_info`, `data_source`). The same prompt is used under every
`data.template`: the wording is the data's.

Optional field `ground_truth`: read from `ground_truth` or verl's `reward_model.ground_truth` (or the column
`data.fields.ground_truth` names, e.g. `answer`, which the item then holds as `ground_truth`), kept as text. It
is what the task's own grader and reward compare with; the task knows nothing else about the rows.

- `grade` (held-out accuracy, the training success rate and the collapse guard, `agrpo score`): (1, 1) when the
  completion's answer equals the ground truth, (0, 1) when not, and (0, 0) for an item without a ground truth:
  such items are not graded at all (an evaluation of none of them has no accuracy). The answer is the last
  closed `\boxed{}`, else the last `<answer>` pair, else the whole completion; it equals the ground truth when
  both read as the same number (`1,234`, `18.0`, `$18`), else when the two texts are equal up to whitespace.
- `reward` (only when `rewards.plugins` is unset): 1.0 for a graded-correct answer, else 0.0; an item without a
  ground truth is an error (name your reward plugins in `rewards.plugins`, which is what this task is for).
"""

from __future__ import annotations

from typing import Any

from rewards.answers import clip, last_answer, last_boxed, parse_number
from rewards.tasks.base import RowError
from rewards.types import RewardResult

FIELDS = ("prompt",)
COLUMNS = {
    "prompt": ("prompt", "messages"),
    "ground_truth": ("ground_truth", "reward_model.ground_truth"),
}
ROLES = ("system", "user", "assistant")
MAX_GROUND_TRUTH_CHARS = 1000


def check_row(found: dict[str, Any]) -> dict[str, Any]:
    """A non-empty prompt text or a list of chat turns with known roles and text contents; a scalar ground truth."""
    prompt = found["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RowError("prompt is empty")
    elif isinstance(prompt, list) and prompt:
        for index, turn in enumerate(prompt):
            if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                raise RowError(
                    f"prompt turn {index} {str(turn)[:60]!r}: must be {{role: {'|'.join(ROLES)}, content: text}}"
                )
        prompt = [{"role": turn["role"], "content": turn["content"]} for turn in prompt]
    else:
        raise RowError(f"prompt {str(prompt)[:60]!r}: must be a text or a non-empty list of chat turns")
    checked: dict[str, Any] = {"prompt": prompt}
    if "ground_truth" in found:
        truth = found["ground_truth"]
        if isinstance(truth, (dict, list)) or len(str(truth)) > MAX_GROUND_TRUTH_CHARS:
            raise RowError(f"ground_truth {str(truth)[:60]!r}: must be a text or a number (for a structure, map the "
                           "column to a field of your reward plugin's own instead)")  # fmt: skip
        checked["ground_truth"] = str(truth).strip()
    return checked


def prompt(item: dict[str, Any]) -> str | list[dict[str, str]]:
    """The row's own prompt: text as it is, or chat turns for the tokenizer's chat template."""
    return item["prompt"]


PROMPTS = {"plain": prompt, "d1": prompt, "agrpo": prompt}


def completion_answer(completion: str) -> str:
    r"""The last closed `\boxed{}`, else the last answer pair, else the whole completion; stripped."""
    text = clip(completion)
    for answer in (last_boxed(text), last_answer(text)):
        if answer is not None:
            return answer.strip()
    return text.strip()


def matches(answer: str, truth: str) -> bool:
    number, gold = parse_number(answer), parse_number(truth)
    if number is not None and gold is not None:
        return number == gold
    return answer.split() == truth.split()


def grade(completion: str, reference: dict[str, Any]) -> tuple[float, float]:
    truth = reference.get("ground_truth")
    if truth is None:
        return 0.0, 0.0
    return (1.0 if matches(completion_answer(completion), str(truth)) else 0.0), 1.0


def reward(completion: str, reference: dict[str, Any], scheme: str = "d1") -> RewardResult:
    if reference.get("ground_truth") is None:
        raise ValueError("the item has no ground_truth to compare with: name your reward plugins in rewards.plugins")
    correct = grade(completion, reference)[0]
    return RewardResult(correct, {"correct": correct})
