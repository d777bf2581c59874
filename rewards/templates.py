r"""Prompt templates: the instruction wording several tasks share, and rendering a prompt.

There are three templates: d1's reasoning/answer format, AGRPO's think/answer format and a compact
one. The d1 and AGRPO instructions use the published wording (d1: the evaluation prompt for
GSM8K/MATH, the training prompts for Countdown and Sudoku, all in one user turn; AGRPO: a system turn
with the instruction and a user turn with the problem, Sudoku with its three worked examples) so that
scores are comparable with the papers. `plain` is for the built-in character-level model, whose
sequences are short; its expected completion is just `<answer>...</answer>`. Every template asks for
the answer inside answer tags. Each task module holds its own prompts (`PROMPTS`) and the wording only
it uses; the wording and prompts shared by the math-style tasks are here.
A tokenizer with a chat template renders the turns through `apply_chat_template`; a prompt function may also
return plain text, which is used as it is (rewards/tasks/generic.py, for rows whose prompt is a string).
"""

from __future__ import annotations

from typing import Any

from rewards.tasks import load_task
from rewards.tasks.base import Messages, prompt_field

D1_FORMAT = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"

D1_MATH = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}.\nRespond in the following format:\n<reasoning>\n"
    "Your reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)

AGRPO_MATH = r"""You will be given a math problem.
Think through the problem step by step, enclosing your reasoning process in <think> tags.
Provide your final answer in <answer> tags, with only the number or expression enclosed in \boxed{}, as follows:
<think>
...
</think>
<answer>
\boxed{...}
</answer>
"""


def d1_math_prompt(item: dict[str, Any]) -> Messages:
    """d1's evaluation prompt for GSM8K and MATH: the instruction, then the question, in one user turn."""
    return [{"role": "user", "content": f"{D1_MATH}\n\n{prompt_field(item, 'question')}"}]


def agrpo_math_prompt(item: dict[str, Any]) -> Messages:
    """AGRPO's boxed-answer instruction as the system turn, the question as the user turn."""
    return [{"role": "system", "content": AGRPO_MATH}, {"role": "user", "content": str(prompt_field(item, "question"))}]


def question_prompt(item: dict[str, Any]) -> Messages:
    """The question alone."""
    return [{"role": "user", "content": str(prompt_field(item, "question"))}]


def render_prompt(task: str, item: dict[str, Any], template: str, tokenizer: Any = None) -> str:
    """The prompt text: chat turns through the tokenizer's chat template when it has one, else their contents
    joined; a prompt a task gives as text (the generic task's string prompts) as it is."""
    messages = load_task(task).messages(item, template)
    if isinstance(messages, str):
        return messages
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)
