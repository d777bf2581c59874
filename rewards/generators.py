"""Seeded, deterministic generators for Countdown, 4x4 Sudoku and simple arithmetic.

Each item holds the task's reference fields, what the prompt templates need, and `completion`: a
correct completion in the compact format (`<answer>...</answer>`) for supervised warm-up and for
checking graders end to end. (It is not called `solution` because that is Sudoku's reference field.)
The same (task, seed, options) always gives the same items: every draw comes from one
`random.Random` seeded with a string, which Python hashes identically on every platform and run.
The held-out split is drawn from its own stream so it does not change with the training-set size,
and training items whose key (the puzzle) is in it are skipped, so the splits are disjoint.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from common.errors import ConfigError

MAX_MISSES = 2000
SUDOKU_MAX_BLANKS = 12


def _render(a: tuple[int, str, int], op: str, b: tuple[int, str, int]) -> str:
    """Text of `a op b` with only the parentheses that change the value (precedence: 1 +-, 2 */, 3 atom)."""
    left = f"({a[1]})" if op in "*/" and a[2] == 1 else a[1]
    right_needs = (op == "-" and b[2] == 1) or (op == "*" and b[2] == 1) or (op == "/" and b[2] <= 2)
    right = f"({b[1]})" if right_needs else b[1]
    return f"{left}{op}{right}"


def countdown_item(
    rng: random.Random,
    num_numbers: int | list[int] = 3,
    min_number: int = 1,
    max_number: int = 100,
    min_target: int = 1,
    max_target: int = 1000,
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


def _full_grid(rng: random.Random) -> list[int]:
    """A uniformly relabelled valid 4x4 grid: permute digits, rows within bands, bands, columns, stacks."""
    base = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    digits = rng.sample([1, 2, 3, 4], 4)
    bands = rng.sample([0, 1], 2)
    rows = [2 * band + r for band in bands for r in rng.sample([0, 1], 2)]
    stacks = rng.sample([0, 1], 2)
    cols = [2 * stack + c for stack in stacks for c in rng.sample([0, 1], 2)]
    grid = [[digits[base[r][c] - 1] for c in cols] for r in rows]
    if rng.random() < 0.5:
        grid = [list(col) for col in zip(*grid, strict=True)]
    return [v for row in grid for v in row]


def _candidates(grid: list[int], i: int) -> set[int]:
    r, c = divmod(i, 4)
    box = [4 * (2 * (r // 2) + dr) + 2 * (c // 2) + dc for dr in (0, 1) for dc in (0, 1)]
    seen = {grid[4 * r + k] for k in range(4)} | {grid[4 * k + c] for k in range(4)} | {grid[j] for j in box}
    return {1, 2, 3, 4} - seen


def count_solutions(grid: list[int], limit: int = 2) -> int:
    """Solutions of a 4x4 puzzle (0 = blank), counting no further than `limit`."""
    try:
        i = grid.index(0)
    except ValueError:
        return 1
    total = 0
    for digit in sorted(_candidates(grid, i)):
        grid[i] = digit
        total += count_solutions(grid, limit - total)
        grid[i] = 0
        if total >= limit:
            break
    return total


def sudoku_item(rng: random.Random, min_blanks: int = 6, max_blanks: int = 10) -> dict[str, Any]:
    """A puzzle with a unique solution and a number of blanks drawn from [min_blanks, max_blanks]."""
    if not 1 <= min_blanks <= max_blanks <= SUDOKU_MAX_BLANKS:
        raise ConfigError(
            f"sudoku generator: need 1 <= min_blanks <= max_blanks <= {SUDOKU_MAX_BLANKS} "
            f"(a 4x4 puzzle with a unique solution keeps at least 4 givens); got {min_blanks}, {max_blanks}"
        )
    blanks = rng.randint(min_blanks, max_blanks)
    for _ in range(MAX_MISSES):
        solution = _full_grid(rng)
        puzzle = list(solution)
        removed = 0
        for cell in rng.sample(range(16), 16):
            if removed == blanks:
                break
            puzzle[cell] = 0
            if count_solutions(list(puzzle)) == 1:
                removed += 1
            else:
                puzzle[cell] = solution[cell]
        if removed == blanks:
            solution_text = "".join(map(str, solution))
            return {
                "puzzle": "".join(map(str, puzzle)),
                "solution": solution_text,
                "completion": f"<answer>{solution_text}</answer>",
            }
    raise ConfigError(f"sudoku generator: no unique puzzle with {blanks} blanks after {MAX_MISSES} tries")


ARITHMETIC_FORMS = ("a+b", "a-b", "a*b", "a*b+c", "a*b-c", "a+b*c")


def arithmetic_item(
    rng: random.Random, min_number: int = 0, max_number: int = 9, forms: list[str] | None = None
) -> dict[str, Any]:
    """A short expression over small integers (`3*4-5`) and its value."""
    chosen = list(forms or ARITHMETIC_FORMS)
    unknown = sorted(set(chosen) - set(ARITHMETIC_FORMS))
    if unknown or max_number < min_number or min_number < 0:
        raise ConfigError(
            f"arithmetic generator: forms must be among {', '.join(ARITHMETIC_FORMS)} and "
            f"0 <= min_number <= max_number (got forms {chosen}, {min_number}..{max_number})"
        )
    form = rng.choice(chosen)
    values = {name: rng.randint(min_number, max_number) for name in "abc"}
    question = "".join(str(values[ch]) if ch in values else ch for ch in form)
    answer = _arithmetic_value(form, values)
    return {"question": question, "answer": str(answer), "completion": f"<answer>{answer}</answer>"}


def _arithmetic_value(form: str, v: dict[str, int]) -> int:
    a, b, c = v["a"], v["b"], v["c"]
    return {"a+b": a + b, "a-b": a - b, "a*b": a * b, "a*b+c": a * b + c, "a*b-c": a * b - c, "a+b*c": a + b * c}[form]


GENERATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "countdown": countdown_item,
    "sudoku": sudoku_item,
    "arithmetic": arithmetic_item,
}
KEYS: dict[str, Callable[[dict[str, Any]], Hashable]] = {
    "countdown": lambda item: (tuple(sorted(item["numbers"])), item["target"]),
    "sudoku": lambda item: item["puzzle"],
    "arithmetic": lambda item: item["question"],
}


def _generator(task: str, kwargs: dict[str, Any]) -> Callable[[random.Random], dict[str, Any]]:
    if task not in GENERATORS:
        raise ConfigError(f"task {task!r}: no generator; generated tasks are {', '.join(GENERATORS)}")
    make = GENERATORS[task]
    allowed = [p for p in inspect.signature(make).parameters if p != "rng"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{task} generator: unknown option {unknown[0]!r}; options are {', '.join(allowed)}")
    return lambda rng: make(rng, **kwargs)


def _unique(task: str, stream: str, n: int, exclude: set[Hashable], kwargs: dict[str, Any]) -> list[dict]:
    """`n` items with distinct keys, none in `exclude`, from the stream named `stream`."""
    make, key = _generator(task, kwargs), KEYS[task]
    rng = random.Random(stream)
    items: list[dict[str, Any]] = []
    seen = set(exclude)
    misses = 0
    while len(items) < n:
        item = make(rng)
        k = key(item)
        if k in seen:
            misses += 1
            if misses > MAX_MISSES:
                raise ConfigError(
                    f"{task} generator: found only {len(items)} of {n} distinct items with options "
                    f"{kwargs or 'default'}; widen the ranges or ask for fewer"
                )
            continue
        misses = 0
        seen.add(k)
        items.append(item)
    return items


def generate(task: str, n: int, seed: int, **kwargs: Any) -> list[dict[str, Any]]:
    """`n` distinct items of a generated task."""
    return _unique(task, f"{task}:all:{seed}", n, set(), kwargs)


def generate_split(
    task: str, n_train: int, n_eval: int, seed: int, **kwargs: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval) with no shared puzzle; the eval items depend only on (task, n_eval, seed, options)."""
    evaluation = _unique(task, f"{task}:eval:{seed}", n_eval, set(), kwargs)
    held_out = {KEYS[task](item) for item in evaluation}
    train = _unique(task, f"{task}:train:{seed}", n_train, held_out, kwargs)
    return train, evaluation


def write_jsonl(items: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object per line, creating parent directories."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    return out
