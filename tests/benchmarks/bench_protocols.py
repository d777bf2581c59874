r"""Accuracy under the two grading protocols side by side: `agrpo` (our graders) and `d1` (d1's parser).

1. Synthetic completions on the real benchmark items (`--data`, default /work/shared/data): every item
   of GSM8K (test), MATH-500, Countdown (cd3 test) and 4x4 Sudoku (test) gets one completion in each
   style below, written the way LLaDA-8B-Instruct writes under d1's prompts (a `<reasoning>` part with
   intermediate results, then `<answer>`), as our sampler decodes it (up to EOS, no special tokens).
   Per style and task it prints both accuracies and the difference (agrpo - d1, in points); `all` is
   the even mix of the task's styles. The styles are chosen to show each decision where the protocols
   differ, so the even mix is not an estimate of the gap on any real model.
2. With `--d1-generations DIR`: d1's own released LLaDA-8B-Instruct generations (the
   `*_generations.json` files of d1's `eval/eval_baselines`), per setup (task, length, steps): the d1
   protocol on the text as saved (special tokens kept), our protocol on the text as our sampler decodes
   it (cut at the first `<|endoftext|>`, special tokens dropped), and a check that the d1 protocol gives
   exactly what a plain reading of d1's parser (tests/d1_oracle.py) gives on every generation.

Grading runs in the time-limited grading child (1 s per item); timeouts are printed.

    .venv/bin/python tests/benchmarks/bench_protocols.py [--data DIR] [--d1-generations DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from itertools import permutations, product
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rewards.grading import TimedGrader  # noqa: E402
from tests import d1_oracle  # noqa: E402

Style = Callable[[dict[str, Any], random.Random], str]
REASONING = "<reasoning>\n{}\n</reasoning>\n"


def _answer(body: str) -> str:
    return f"<answer>\n{body}\n</answer>"


# GSM8K: the gold is a number g.


def _g(item: dict[str, Any]) -> int:
    return int(item["answer"])


def _gsm_reasoning(item: dict[str, Any], rng: random.Random) -> str:
    a = rng.randint(2, 40)
    return REASONING.format(f"First, {a} + {a} = {2 * a}. Then we subtract to get the total of {_g(item)}.")


GSM8K: dict[str, Style] = {
    "boxed in answer": lambda i, r: _gsm_reasoning(i, r) + _answer(f"\\boxed{{{_g(i)}}}"),
    "boxed wrong": lambda i, r: _gsm_reasoning(i, r) + _answer(f"\\boxed{{{_g(i) + r.randint(1, 9)}}}"),
    "thousands comma": lambda i, r: _gsm_reasoning(i, r) + _answer(f"\\boxed{{{_g(i):,}}}"),
    "dollars": lambda i, r: _gsm_reasoning(i, r) + _answer(f"\\boxed{{\\${_g(i)}}}"),
    "answer without box": lambda i, r: _gsm_reasoning(i, r) + _answer(f"The total is {_g(i)} dollars."),
    "truncated": lambda i, r: _gsm_reasoning(i, r) + f"<answer>\n\\boxed{{{_g(i)}",
    "no tags": lambda i, r: _gsm_reasoning(i, r) + f"So the answer is {_g(i)}.",
    "expression boxed": lambda i, r: _gsm_reasoning(i, r) + _answer(f"\\boxed{{{_g(i) - 1} + 1 = {_g(i)}}}"),
}


# MATH-500: the gold is a LaTeX string.


def _math_variant(gold: str) -> str:
    """An equivalent spelling that string normalisation does not undo, where one is easy to write."""
    value = _as_fraction(gold)
    if value is not None and value.denominator in (2, 4, 5, 8, 10, 20, 25) and value.denominator != 1:
        return str(float(value))
    if value is not None and value.denominator == 1:
        return f"\\frac{{{2 * value.numerator}}}{{2}}"
    parts = gold.split("+")
    if len(parts) == 2 and not any(c in gold for c in "{}=<>,"):
        return f"{parts[1].strip()}+{parts[0].strip()}"
    return gold.replace("\\frac", "\\dfrac") if "\\frac" in gold else gold


def _as_fraction(text: str) -> Fraction | None:
    found = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}|(-?\d+)", text.replace(" ", ""))
    if not found:
        return None
    if found.group(4) is not None:
        return Fraction(int(found.group(4)))
    value = Fraction(int(found.group(2)), int(found.group(3)))
    return -value if found.group(1) else value


def _math_reasoning(rng: random.Random) -> str:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return REASONING.format(f"We have $x = {a}$ and $y = {b}$, so $xy = {a * b}$.")


MATH: dict[str, Style] = {
    "boxed in answer": lambda i, r: _math_reasoning(r) + _answer(f"\\boxed{{{i['answer']}}}"),
    "equivalent spelling": lambda i, r: _math_reasoning(r) + _answer(f"\\boxed{{{_math_variant(i['answer'])}}}"),
    "answer without box": lambda i, r: _math_reasoning(r) + _answer(i["answer"]),
    "earlier box, final box": lambda i, r: (
        _math_reasoning(r) + "so \\boxed{7}. " + _answer(f"\\boxed{{{i['answer']}}}")
    ),
    "fbox": lambda i, r: _math_reasoning(r) + _answer(f"\\fbox{{{i['answer']}}}"),
    "truncated": lambda i, r: _math_reasoning(r) + f"<answer>\n\\boxed{{{i['answer']}",
    "no tags": lambda i, r: _math_reasoning(r) + f"The answer is {i['answer']}.",
}


# Countdown: numbers and a target; a solving expression is searched once per item.


def _solution(numbers: list[int], target: int) -> str | None:
    for a, b, c in permutations(numbers):
        for o, p in product("+-*/", repeat=2):
            for shape in ("({a} {o} {b}) {p} {c}", "{a} {o} ({b} {p} {c})"):
                text = shape.format(a=a, b=b, c=c, o=o, p=p)
                try:
                    if _value(text) == target:
                        return text
                except ZeroDivisionError:
                    continue
    return None


def _value(text: str) -> Fraction:
    tokens = re.findall(r"\d+|[-+*/()]", text)
    position = 0

    def expression() -> Fraction:
        nonlocal position
        value = term()
        while position < len(tokens) and tokens[position] in "+-":
            op = tokens[position]
            position += 1
            value = value + term() if op == "+" else value - term()
        return value

    def term() -> Fraction:
        nonlocal position
        value = factor()
        while position < len(tokens) and tokens[position] in "*/":
            op = tokens[position]
            position += 1
            value = value * factor() if op == "*" else value / factor()
        return value

    def factor() -> Fraction:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            value = expression()
            position += 1
            return value
        return Fraction(int(token))

    return expression()


def _cd_reasoning(item: dict[str, Any]) -> str:
    a, b = sorted(item["numbers"])[-2:]
    return REASONING.format(
        f"Let us try {b} - {a} = {b - a}. That is not the target {item['target']}, so we combine all three."
    )


def _latex_operators(expression: str) -> str:
    return expression.replace("*", "\\times ").replace("/", "\\div ")


COUNTDOWN: dict[str, Style] = {
    "boxed in answer": lambda i, r: _cd_reasoning(i) + _answer(f"\\boxed{{{i['solution']}}}"),
    "boxed with = target": lambda i, r: _cd_reasoning(i) + _answer(f"\\boxed{{{i['solution']} = {i['target']}}}"),
    "times and div": lambda i, r: _cd_reasoning(i) + _answer("\\boxed{" + _latex_operators(i["solution"]) + "}"),
    "answer without box": lambda i, r: _cd_reasoning(i) + _answer(i["solution"]),
    "answer without box, = target": lambda i, r: _cd_reasoning(i) + _answer(f"{i['solution']} = {i['target']}"),
    "wrong numbers": lambda i, r: _cd_reasoning(i) + _answer(f"\\boxed{{{i['target']} + 0}}"),
    "truncated": lambda i, r: _cd_reasoning(i) + f"<answer>\n\\boxed{{{i['solution']}",
}


# Sudoku: puzzle and solution, 16 digits each.


def _rows(grid: str, sep: str) -> str:
    return sep.join(grid[k : k + 4] for k in range(0, 16, 4))


def _wrong_cells(grid: str, rng: random.Random) -> str:
    cells = list(grid)
    for k in rng.sample(range(16), 3):
        cells[k] = str(1 + (int(cells[k]) % 4))
    return "".join(cells)


def _sd_reasoning(item: dict[str, Any]) -> str:
    return REASONING.format(f"The puzzle is {item['puzzle']}. Row 1 misses a 4, so we place it, and continue.")


SUDOKU: dict[str, Style] = {
    "16 digits in answer": lambda i, r: _sd_reasoning(i) + _answer(i["solution"]),
    "rows on lines": lambda i, r: _sd_reasoning(i) + _answer(_rows(i["solution"], "\n")),
    "separated digits": lambda i, r: _sd_reasoning(i) + _answer("[" + ",".join(i["solution"]) + "]"),
    "code block": lambda i, r: _sd_reasoning(i) + _answer("```\n" + _rows(i["solution"], "\n") + "\n```"),
    "three cells wrong": lambda i, r: _sd_reasoning(i) + _answer(_wrong_cells(i["solution"], r)),
    "truncated": lambda i, r: _sd_reasoning(i) + "<answer>\n" + i["solution"][:10],
    "no tags": lambda i, r: _sd_reasoning(i) + f"The solved grid is {i['solution']}.",
}


def load_items(data: Path) -> dict[str, list[dict[str, Any]]]:
    def jsonl(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (data / name).open()]

    countdown = []
    for row in jsonl("countdown_cd3_test.jsonl"):
        numbers, target = [int(x) for x in row["input"].split(",")], int(row["output"])
        solution = _solution(numbers, target)
        if solution is not None:
            countdown.append({"numbers": numbers, "target": target, "solution": solution})
    with (data / "sudoku_4x4_test.csv").open() as f:
        sudoku = [{"puzzle": r["Puzzle"], "solution": r["Solution"]} for r in csv.DictReader(f)]
    return {
        "gsm8k": jsonl("gsm8k_test.jsonl"),
        "math": jsonl("math500_test.jsonl"),
        "countdown": countdown,
        "sudoku": sudoku,
    }


def _accuracy(task: str, protocol: str, texts: list[str], refs: list[dict[str, Any]]) -> tuple[float, int]:
    with TimedGrader(task, protocol) as grader:
        grades = grader.grade(texts, refs)
        timeouts = grader.timeouts
    return 100 * sum(g.num for g in grades) / sum(g.den for g in grades), timeouts


DATA_FILES = ("gsm8k_test.jsonl", "math500_test.jsonl", "countdown_cd3_test.jsonl", "sudoku_4x4_test.csv")


def synthetic(data: Path) -> None:
    missing = [name for name in DATA_FILES if not (data / name).is_file()]
    if missing:
        print(f"synthetic completions: skipped, {data} lacks {', '.join(missing)}")
        return
    items = load_items(data)
    styles = {"gsm8k": GSM8K, "math": MATH, "countdown": COUNTDOWN, "sudoku": SUDOKU}
    print(f"synthetic completions on {data} (one per item and style)")
    print(f"{'task':<10} {'style':<30} {'items':>6} {'agrpo %':>8} {'d1 %':>7} {'diff':>6}")
    for task, table in styles.items():
        rng = random.Random(0)
        all_texts: list[str] = []
        all_refs: list[dict[str, Any]] = []
        for name, style in table.items():
            texts = [style(item, rng) for item in items[task]]
            all_texts += texts
            all_refs += items[task]
            _report(task, name, texts, items[task])
        _report(task, "all (even mix)", all_texts, all_refs)


def _report(task: str, name: str, texts: list[str], refs: list[dict[str, Any]]) -> None:
    ours, ours_timeouts = _accuracy(task, "agrpo", texts, refs)
    theirs, their_timeouts = _accuracy(task, "d1", texts, refs)
    late = f"  ({ours_timeouts} + {their_timeouts} timeouts)" if ours_timeouts or their_timeouts else ""
    print(f"{task:<10} {name:<30} {len(texts):>6} {ours:>8.1f} {theirs:>7.1f} {ours - theirs:>+6.1f}{late}")


_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
_PUZZLE = re.compile(r"Sudoku puzzle: ([0-9]{16})")
_ORACLE = {
    "gsm8k": lambda t, r: d1_oracle.gsm8k(t, r["answer"]),
    "math": lambda t, r: d1_oracle.math(t, r["answer"]),
    "countdown": lambda t, r: d1_oracle.countdown(t, r["numbers"], r["target"]),
    "sudoku": lambda t, r: d1_oracle.sudoku(t, r["puzzle"], r["solution"]),
}


def _reference(task: str, row: dict[str, Any]) -> dict[str, Any]:
    truth = row["ground_truth"]
    if task == "countdown":
        return {"numbers": truth[0], "target": truth[1]}
    if task == "sudoku":
        match = _PUZZLE.search(row["question"])
        assert match, row["question"]
        return {"puzzle": match.group(1), "solution": truth}
    return {"answer": truth}  # GSM8K: a float, or None where d1's "####" reader failed (then always wrong)


def real(directory: Path) -> None:
    setups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(directory.glob("*_generations.json")):
        setup = path.name.rsplit("_", 2)[0]
        setups[setup] += json.loads(path.read_text())["generations"]
    print(f"\nd1's released generations in {directory}")
    print(f"{'setup':<28} {'items':>6} {'agrpo %':>8} {'d1 %':>7} {'diff':>6} {'d1 = oracle':>12}")
    for setup, rows in setups.items():
        task = setup.split("_")[0].replace("math500", "math")
        refs = [_reference(task, row) for row in rows]
        raw = [row["generations"] for row in rows]
        decoded = [_SPECIAL.sub("", text.split("<|endoftext|>")[0]) for text in raw]
        ours, ours_timeouts = _accuracy(task, "agrpo", decoded, refs)
        theirs, their_timeouts = _accuracy(task, "d1", raw, refs)
        with TimedGrader(task, "d1") as grader:
            same = all(
                (g.num, g.den) == _ORACLE[task](t, r)
                for g, t, r in zip(grader.grade(raw, refs), raw, refs, strict=True)
            )
        late = f"  ({ours_timeouts} + {their_timeouts} timeouts)" if ours_timeouts or their_timeouts else ""
        print(f"{setup:<28} {len(rows):>6} {ours:>8.1f} {theirs:>7.1f} {ours - theirs:>+6.1f} {same!s:>12}{late}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--d1-generations", type=Path, default=None)
    args = parser.parse_args()
    synthetic(args.data)
    if args.d1_generations:
        real(args.d1_generations)


if __name__ == "__main__":
    main()
