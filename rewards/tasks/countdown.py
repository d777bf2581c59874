r"""Countdown: reach the target with + - * / and parentheses, each given number used exactly once.

Reference fields: `numbers` (list of int) and `target` (int); a data file may call them `nums` or
`input` (text like `"30,100,93"`) and `output`. The answer may end in `= target`; that part is
checked, never trusted. Expressions go through `rewards.safe_expr`, never `eval`.

d1 scheme (d1's Countdown reward): 1.0 for a correct expression in the last answer pair, 0.1 for
any other answer (wrong, invalid or empty), 0 without a complete answer pair.
AGRPO scheme: format up to 1 (1/3 each for `= target` on the right, a clean left side and exactly
the given numbers on it; -0.5 for more than one `=`) plus 3.0 for a correct expression.
Grader (d1 evaluation): the last `\boxed{}`, else the first answer pair, else the whole completion.
Wrong answer for warm-up: the same numbers and operators with two numbers swapped or one operator
changed, still a valid expression over exactly the given numbers, missing the target (a whole-number
result when one exists).
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from itertools import combinations
from typing import Any

from common.errors import ConfigError, DataError
from rewards.answers import clip, first_answer, last_answer, last_boxed
from rewards.safe_expr import MAX_LITERAL_DIGITS, ExprError, evaluate, uses_exactly
from rewards.tasks.base import Option, RowError, prompt_field
from rewards.templates import D1_FORMAT
from rewards.types import RewardResult

D1_CORRECT, D1_ATTEMPT = 1.0, 0.1
AGRPO_CORRECT = 3.0
MAX_MISSES = 2000
MAX_NUMBERS = 16
MAX_NUMBER = 10**9 - 1
MAX_TARGET = 10**12 - 1
_LHS_CHARS = frozenset("0123456789+-*/() \t\n")
_EXPR_PIECES = re.compile(r"\d+|\D")
_OPERATORS = "+-*/"

FIELDS = ("numbers", "target")
COLUMNS = {"numbers": ("numbers", "nums", "input"), "target": ("target", "output")}


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise RowError(f"{name} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d{1,12}", text):
        return int(text)
    raise RowError(f"{name} {value!r} is not an integer")


def _numbers(value: Any) -> list[int]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        value = [part for part in re.split(r"[\s,\[\]]+", value) if part]
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_NUMBERS:
        raise RowError(f"numbers {value!r} is not a list of 1 to {MAX_NUMBERS} integers")
    numbers = [_int(v, "number") for v in value]
    if any(not 0 <= n <= MAX_NUMBER for n in numbers):
        raise RowError(f"numbers {numbers}: each must be in 0..{MAX_NUMBER}")
    return numbers


def check_row(found: dict[str, Any]) -> dict[str, Any]:
    return {**found, "numbers": _numbers(found["numbers"]), "target": _int(found["target"], "target")}


# --- generator

OPTIONS = {
    "num_numbers": Option(
        3, "how many numbers; several values mix sizes (e.g. 3 4)", several=True, low=2, high=MAX_NUMBERS
    ),
    "min_number": Option(1, "smallest number", low=0, high=MAX_NUMBER),
    "max_number": Option(100, "largest number", low=0, high=MAX_NUMBER),
    "min_target": Option(1, "smallest target", low=0, high=MAX_TARGET),
    "max_target": Option(1000, "largest target", low=0, high=MAX_TARGET),
}


def _render(a: tuple[int, str, int], op: str, b: tuple[int, str, int]) -> str:
    """Text of `a op b` with only the parentheses that change the value (precedence: 1 +-, 2 */, 3 atom)."""
    left = f"({a[1]})" if op in "*/" and a[2] == 1 else a[1]
    right_needs = (op == "-" and b[2] == 1) or (op == "*" and b[2] == 1) or (op == "/" and b[2] <= 2)
    right = f"({b[1]})" if right_needs else b[1]
    return f"{left}{op}{right}"


def generate(
    rng: random.Random,
    num_numbers: int | list[int],
    min_number: int,
    max_number: int,
    min_target: int,
    max_target: int,
) -> dict[str, Any]:
    """Numbers, a target reachable with each number once, and one expression that reaches it.

    The expression keeps every intermediate value a non-negative integer, so its text reads as the
    usual Countdown arithmetic.
    """
    sizes = [num_numbers] if isinstance(num_numbers, int) else list(num_numbers)
    if not sizes or min(sizes) < 2 or min_number < 0 or max_number < min_number or max_target < min_target:
        raise ConfigError(
            f"countdown generator: need num_numbers >= 2, 0 <= min_number <= max_number and "
            f"min_target <= max_target (got {num_numbers}, {min_number}..{max_number}, {min_target}..{max_target})"
        )
    for _ in range(MAX_MISSES):
        numbers = [rng.randint(min_number, max_number) for _ in range(rng.choice(sizes))]
        nodes = [(n, str(n), 3) for n in numbers]
        while len(nodes) > 1:
            a = nodes.pop(rng.randrange(len(nodes)))
            b = nodes.pop(rng.randrange(len(nodes)))
            op = rng.choice("+-*/")
            if op == "-" and a[0] < b[0]:
                a, b = b, a
            if op == "/" and (b[0] == 0 or a[0] % b[0]):
                op = "+"
            value = {"+": a[0] + b[0], "-": a[0] - b[0], "*": a[0] * b[0], "/": a[0] // max(b[0], 1)}[op]
            nodes.append((value, _render(a, op, b), 1 if op in "+-" else 2))
        target, expression, _ = nodes[0]
        if min_target <= target <= max_target:
            return {
                "numbers": numbers,
                "target": target,
                "expression": expression,
                "completion": f"<answer>{expression}</answer>",
            }
    raise ConfigError(
        f"countdown generator: no target in {min_target}..{max_target} reached from numbers in "
        f"{min_number}..{max_number} after {MAX_MISSES} tries; widen the ranges"
    )


def item_key(item: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(item["numbers"])), item["target"]


# --- prompts

D1_COUNTDOWN = (
    "Using only the numbers {numbers}, create an arithmetic expression that evaluates to exactly "
    "{target}. You must use all numbers from the list, and each number must be used exactly once. "
    "You may use the operations +, -, *, and / as needed. After reasoning, provide only your final "
    "expression inside <answer></answer> tags without including an equals sign or the target number. "
    "For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: "
    "<answer>\n2*4-3\n</answer>"
)

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


def _given(item: dict[str, Any]) -> tuple[list[int], Any]:
    return [int(n) for n in prompt_field(item, "numbers")], prompt_field(item, "target")


def d1_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    numbers, target = _given(item)
    return [{"role": "user", "content": D1_FORMAT + "\n" + D1_COUNTDOWN.format(numbers=numbers, target=target)}]


def agrpo_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    numbers, target = _given(item)
    return [
        {"role": "system", "content": AGRPO_COUNTDOWN},
        {"role": "user", "content": f"Target: {target}\nNumbers: {numbers}"},
    ]


def plain_prompt(item: dict[str, Any]) -> list[dict[str, str]]:
    numbers, target = _given(item)
    return [{"role": "user", "content": " ".join(str(n) for n in numbers) + f" = {target}"}]


PROMPTS = {"d1": d1_prompt, "agrpo": agrpo_prompt, "plain": plain_prompt}


# --- reward and grader


def check_answer(text: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """Whether `text` (an expression, optionally `= target`) hits the target with exactly `numbers`."""
    parts = text.split("=")
    if len(parts) > 2:
        return False, "more than one '='"
    if len(parts) == 2:
        rhs = parts[1].strip().rstrip(".").strip()
        if not _is_target(rhs, target):
            return False, f"right-hand side {rhs[:20]!r} is not the target {target}"
    try:
        result = evaluate(parts[0])
    except ExprError as err:
        return False, str(err)
    if not uses_exactly(result.literals, numbers):
        return False, f"uses {sorted(result.literals)}, not each of {sorted(numbers)} once"
    if result.value != Fraction(target):
        return False, f"evaluates to {result.value}, not {target}"
    return True, "correct"


def _is_target(text: str, target: int) -> bool:
    """Whether `text` is the target written as a plain integer (ASCII digits, bounded length)."""
    digits = text[1:] if text.startswith("-") else text
    ok = digits.isascii() and digits.isdigit() and len(digits) <= MAX_LITERAL_DIGITS
    return ok and int(text) == target


def _literal_ints(text: str) -> list[int] | None:
    """The digit runs of `text` as ints, or None when one is too long to be a given number."""
    values, run = [], ""
    for char in [*text, " "]:
        if char in "0123456789":
            run += char
            if len(run) > MAX_LITERAL_DIGITS:
                return None
        elif run:
            values.append(int(run))
            run = ""
    return values


def agrpo_format(answer: str | None, numbers: list[int], target: int) -> float:
    """AGRPO's Countdown format score of the answer text `lhs = rhs`."""
    if answer is None or "=" not in answer:
        return 0.0
    parts = answer.split("=")
    score = -0.5 if len(parts) > 2 else 0.0
    lhs, rhs = parts[0].strip(), parts[-1].strip()
    if _is_target(rhs, target):
        score += 1 / 3
    if lhs and set(lhs) <= _LHS_CHARS:
        score += 1 / 3
    used = _literal_ints(lhs)
    if used is not None and sorted(used) == sorted(numbers):
        score += 1 / 3
    return score


def reward(completion: str, reference: dict, scheme: str = "d1") -> RewardResult:
    text = clip(completion)
    numbers, target = list(reference["numbers"]), int(reference["target"])
    if scheme == "d1":
        answer = last_answer(text)
        if answer is None:
            return RewardResult(0.0, {"correct": 0.0, "attempt": 0.0})
        if check_answer(answer, numbers, target)[0]:
            return RewardResult(D1_CORRECT, {"correct": D1_CORRECT, "attempt": 0.0})
        return RewardResult(D1_ATTEMPT, {"correct": 0.0, "attempt": D1_ATTEMPT})
    if scheme == "agrpo":
        answer = first_answer(text)
        fmt = agrpo_format(answer, numbers, target)
        ok = answer is not None and check_answer(answer, numbers, target)[0]
        correct = AGRPO_CORRECT if ok else 0.0
        return RewardResult(fmt + correct, {"format": fmt, "correct": correct})
    raise ValueError(f"scheme {scheme!r}: must be d1 or agrpo")


def extract_for_grading(completion: str) -> str:
    r"""d1's evaluation order: the last `\boxed{}`, else the first answer pair, else the whole text."""
    text = clip(completion)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    answer = first_answer(text)
    return answer if answer is not None else text


def grade(completion: str, reference: dict) -> tuple[float, float]:
    ok, _ = check_answer(extract_for_grading(completion), list(reference["numbers"]), int(reference["target"]))
    return (1.0 if ok else 0.0), 1.0


# --- wrong answer for warm-up


def wrong_answer(answer: str, numbers: list[int], target: int, rng: random.Random) -> str:
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


def perturb(answer: str, item: dict[str, Any], rng: random.Random) -> str:
    return wrong_answer(answer, [int(n) for n in item["numbers"]], int(item["target"]), rng)
