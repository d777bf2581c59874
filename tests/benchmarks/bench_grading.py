"""Grading throughput: the time-limited grading child against plain in-process `grade` calls.

Grades the same completions two ways side by side, in batches of `--batch` as `evaluate()` does:
plain calls of the task's grader in this process (what every path did before grading got a time
limit), and a `TimedGrader` (one long-lived child, forked from a warm fork server; each item under
the 1 s limit). Prints items per second and the ratio, and checks that both give the same grades.
Start-up is excluded (one warm-up batch first): what remains is the per-item cost of isolation (a
pipe round trip per item) against the grading itself.

Completions: for Countdown and Sudoku, generated items answered right, wrong and not at all; for
MATH, the MATH-500 answers in /work/shared/data (when present) boxed as themselves, as a neighbour's
answer and as a `\\dfrac` variant. Threads: OMP_NUM_THREADS=1, one grading child.

    .venv/bin/python tests/benchmarks/bench_grading.py [--items 600] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from rewards.generators import generate  # noqa: E402
from rewards.grading import TimedGrader  # noqa: E402
from rewards.tasks import load_task  # noqa: E402

MATH500 = Path("/work/shared/data/math500_test.jsonl")


def _generated(task: str, n: int, rng: random.Random) -> tuple[list[str], list[dict[str, Any]]]:
    items = generate(task, n, seed=3)
    texts = []
    for i, item in enumerate(items):
        other = items[(i + 1) % len(items)]
        texts.append(rng.choice([item["completion"], other["completion"], "I do not know."]))
    return texts, items


def _math(n: int, rng: random.Random) -> tuple[list[str], list[dict[str, Any]]]:
    rows = [json.loads(line) for line in MATH500.open()][:n]
    texts = []
    for i, row in enumerate(rows):
        answer = rng.choice(
            [row["answer"], rows[(i + 1) % len(rows)]["answer"], row["answer"].replace("\\frac", "\\dfrac")]
        )
        texts.append(f"<reasoning>work</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>")
    return texts, rows


def _rate(
    grade_batch: Callable[[list[str], list[dict]], list[tuple[float, float]]],
    texts: list[str],
    refs: list[dict],
    batch: int,
) -> tuple[float, list]:
    grade_batch(texts[:batch], refs[:batch])  # warm-up: imports, the child's start
    start = time.perf_counter()
    grades = []
    for lo in range(0, len(texts), batch):
        grades += grade_batch(texts[lo : lo + batch], refs[lo : lo + batch])
    return len(texts) / (time.perf_counter() - start), grades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    rng = random.Random(0)
    sets = {"countdown": _generated("countdown", args.items, rng), "sudoku": _generated("sudoku", args.items, rng)}
    if MATH500.is_file():
        sets["math"] = _math(args.items, rng)
    print(f"threads: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, one grading child; batch {args.batch}")
    print(f"{'task':<10} {'items':>6} {'in-process/s':>13} {'timed child/s':>14} {'ratio':>6}")
    for task, (texts, refs) in sets.items():
        grade = load_task(task).grade
        plain, expected = _rate(
            lambda t, r, grade=grade: [grade(x, y) for x, y in zip(t, r, strict=True)], texts, refs, args.batch
        )
        with TimedGrader(task) as grader:
            timed, grades = _rate(lambda t, r: [(g.num, g.den) for g in grader.grade(t, r)], texts, refs, args.batch)
            assert grader.timeouts == 0
        assert grades == expected, f"{task}: the child graded differently"
        print(f"{task:<10} {len(texts):>6} {plain:>13.0f} {timed:>14.0f} {timed / plain:>6.2f}")


if __name__ == "__main__":
    main()
