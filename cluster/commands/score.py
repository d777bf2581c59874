"""`agrpo score`: grade and reward completions produced by any model.

Input rows hold `completion` plus the task's reference fields. A row that cannot be read or scored
is counted in `errors` (and reported on stderr), never silently dropped. Grading and the reward run
in the time-limited grading child (`rewards.grading`): a row whose grading runs past the limit is
scored as wrong, counted in `timeouts` and reported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from common.errors import UserError
from rewards.data import read_items, report_skipped
from rewards.grading import GRADE_TIMEOUT_S, PROTOCOLS, Grade, TimedGrader
from rewards.tasks import task_names


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("score", help="Score completions: accuracy under a grading protocol and mean reward.")
    parser.add_argument(
        "--task",
        required=True,
        help=f"Task whose grader and reward apply: {', '.join(task_names())}, or a module path package.module.",
    )
    parser.add_argument("--input", required=True, help="JSONL/JSON/CSV/parquet rows: completion + reference fields.")
    parser.add_argument("--scheme", default="d1", choices=("d1", "agrpo"), help="Reward scheme (default d1).")
    parser.add_argument(
        "--protocol",
        default="agrpo",
        choices=PROTOCOLS,
        help="Grading protocol: agrpo (our graders, default) or d1 (d1's eval/parse_and_get_acc.py, decision for "
        "decision, to compare with d1's tables).",
    )
    parser.add_argument(
        "--grade-timeout",
        type=float,
        default=GRADE_TIMEOUT_S,
        help=f"Seconds per row before its grading is stopped and the row counts as wrong (default {GRADE_TIMEOUT_S:g}).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    parser.set_defaults(func=run)


def _failure(grade: Grade) -> str | None:
    """Why a row cannot be scored at all (its grader or reward raised); a timeout is not such a failure."""
    if grade.error is not None and not grade.timed_out:
        return grade.error
    if grade.reward is not None and grade.reward.error is not None and not grade.reward.timed_out:
        return grade.reward.error
    return None


def score_items(
    task: str,
    items: list[dict],
    scheme: str,
    sources: list[str] | None = None,
    protocol: str = "agrpo",
    timeout_s: float = GRADE_TIMEOUT_S,
) -> dict[str, float | int]:
    """Accuracy (sum of grader numerators over denominators), mean reward, rows scored, failed and timed out.

    `sources` names where each item came from (`file:line`) for the warnings about a row.
    """
    where = sources or [f"row {index + 1}" for index in range(len(items))]
    texts, references, places = [], [], []
    errors = 0
    for index, item in enumerate(items):
        completion = item["completion"]
        if not isinstance(completion, str):
            print(
                f"warning: {where[index]}: not scored (completion is {type(completion).__name__}, not text)",
                file=sys.stderr,
            )
            errors += 1
            continue
        texts.append(completion)
        references.append(item)
        places.append(where[index])
    with TimedGrader(task, protocol, timeout_s, scheme=scheme) as grader:
        grades = grader.grade(texts, references)
    num = den = reward_sum = 0.0
    scored = timeouts = 0
    for grade, place in zip(grades, places, strict=True):
        failure = _failure(grade)
        if failure is not None:
            print(f"warning: {place}: not scored ({failure})", file=sys.stderr)
            errors += 1
            continue
        if grade.timed_out or (grade.reward is not None and grade.reward.timed_out):
            print(f"warning: {place}: grading ran past {timeout_s:g} s; scored as wrong", file=sys.stderr)
            timeouts += 1
        reward = grade.reward.score if grade.reward is not None else 0.0
        num, den, reward_sum, scored = num + grade.num, den + grade.den, reward_sum + reward, scored + 1
    return {
        "accuracy": num / den if den else 0.0,
        "mean_reward": reward_sum / scored if scored else 0.0,
        "n": scored,
        "errors": errors,
        "timeouts": timeouts,
        "correct": num,
        "total": den,
    }


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.grade_timeout) and args.grade_timeout > 0):
        raise UserError(f"--grade-timeout {args.grade_timeout:g}: must be a positive number of seconds")
    loaded = read_items(args.input, args.task, require=("completion",))
    report_skipped(loaded, args.input)
    if not loaded.items:
        raise UserError(f"input {args.input}: no scorable rows (each needs completion and the {args.task} fields)")
    sources = [f"{args.input}:{line}" for line in loaded.lines]
    summary = score_items(args.task, loaded.items, args.scheme, sources, args.protocol, args.grade_timeout)
    summary["errors"] += len(loaded.skipped)
    if summary["errors"]:
        total = summary["n"] + summary["errors"]
        print(
            f"warning: {summary['errors']} of {total} rows not scored (above); accuracy and mean reward are over "
            f"the {summary['n']} scored rows",
            file=sys.stderr,
        )
    if summary["timeouts"]:
        print(
            f"warning: {summary['timeouts']} of {summary['n']} rows ran past the {args.grade_timeout:g} s grading "
            "limit and are scored as wrong (above)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({"task": args.task, "scheme": args.scheme, "protocol": args.protocol, **summary}))
    else:
        print(
            f"{args.task}: accuracy {summary['accuracy']:.4f} ({summary['correct']:g}/{summary['total']:g}), "
            f"mean reward ({args.scheme}) {summary['mean_reward']:.4f}, n {summary['n']}, errors {summary['errors']}, "
            f"timeouts {summary['timeouts']}, protocol {args.protocol}"
        )
    return 0
