r"""Prompt templates: d1's reasoning/answer format, AGRPO's think/answer format and a compact one.

The d1 and AGRPO instructions use the published wording (d1: the evaluation prompt for GSM8K/MATH,
the training prompts for Countdown and Sudoku, all in one user turn; AGRPO: a system turn with the
instruction and a user turn with the problem, Sudoku with its three worked examples) so that scores
are comparable with the papers. `plain` is for the built-in character-level model, whose sequences
are short: Countdown `3 5 7 = 22`, Sudoku the 16 digits, arithmetic `3*4-5=`; its expected
completion is just `<answer>...</answer>`. Every template asks for the answer inside answer tags.
A tokenizer with a chat template renders the turns through `apply_chat_template`.
"""

from __future__ import annotations

from typing import Any

from common.errors import DataError

D1_FORMAT = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"

D1_MATH = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}.\nRespond in the following format:\n<reasoning>\n"
    "Your reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)

D1_COUNTDOWN = (
    "Using only the numbers {numbers}, create an arithmetic expression that evaluates to exactly "
    "{target}. You must use all numbers from the list, and each number must be used exactly once. "
    "You may use the operations +, -, *, and / as needed. After reasoning, provide only your final "
    "expression inside <answer></answer> tags without including an equals sign or the target number. "
    "For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: "
    "<answer>\n2*4-3\n</answer>"
)

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

AGRPO_COUNTDOWN = """You will be given a target number and a list of numbers. Create a mathematical expression using each number exactly once and the operations +, -, *, / (with parentheses allowed) to reach the target.
Think through different combinations systematically, exploring which operations might work. Enclose your reasoning process in <think> tags.
Format your response as:
<think>
reasoning process here
</think>
<answer>
final expression = target
</answer>
For example, if the target is 67 and the numbers are [17, 18, 5], a valid answer is:
<answer>
17 * 5 - 18 = 67
</answer>
"""

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

TEMPLATES = ("d1", "agrpo", "plain")


def _field(item: dict[str, Any], name: str, task: str) -> Any:
    if name not in item or item[name] in (None, ""):
        raise DataError(f"task {task}: item has no {name!r} field, which the prompt needs")
    return item[name]


def _numbers(item: dict[str, Any]) -> list[int]:
    return [int(n) for n in _field(item, "numbers", "countdown")]


def messages_for(task: str, item: dict[str, Any], template: str) -> list[dict[str, str]]:
    """The chat turns of a prompt (d1: one user turn; AGRPO: system + user; plain: one user turn)."""
    if template == "d1":
        if task in ("gsm8k", "math"):
            content = f"{D1_MATH}\n\n{_field(item, 'question', task)}"
        elif task == "countdown":
            content = (
                D1_FORMAT + "\n" + D1_COUNTDOWN.format(numbers=_numbers(item), target=_field(item, "target", task))
            )
        elif task == "sudoku":
            content = f"{D1_SUDOKU}\n\nSolve the following Sudoku puzzle: {_field(item, 'puzzle', task)}\n"
        elif task == "arithmetic":
            content = f"{D1_FORMAT}\nCompute {_field(item, 'question', task)}"
        else:
            raise DataError(f"task {task!r}: no d1 template")
        return [{"role": "user", "content": content}]
    if template == "agrpo":
        if task in ("gsm8k", "math", "arithmetic"):
            system, user = AGRPO_MATH, str(_field(item, "question", task))
        elif task == "countdown":
            system, user = AGRPO_COUNTDOWN, f"Target: {_field(item, 'target', task)}\nNumbers: {_numbers(item)}"
        elif task == "sudoku":
            system, user = AGRPO_SUDOKU, f"Puzzle: {_field(item, 'puzzle', task)}"
        else:
            raise DataError(f"task {task!r}: no agrpo template")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if template == "plain":
        if task == "countdown":
            content = " ".join(str(n) for n in _numbers(item)) + f" = {_field(item, 'target', task)}"
        elif task == "sudoku":
            content = str(_field(item, "puzzle", task))
        elif task == "arithmetic":
            content = f"{_field(item, 'question', task)}="
        else:
            content = str(_field(item, "question", task))
        return [{"role": "user", "content": content}]
    raise DataError(f"template {template!r}: must be one of {', '.join(TEMPLATES)}")


def render_prompt(task: str, item: dict[str, Any], template: str, tokenizer: Any = None) -> str:
    """The prompt text; through the tokenizer's chat template when it has one."""
    messages = messages_for(task, item, template)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)
