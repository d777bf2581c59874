"""`agrpo score`: grade and reward completions produced by any model.

Input rows hold `completion` plus the task's reference fields. A row that cannot be read or scored
is counted in `errors` (and reported on stderr), never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import sys

from common.errors import UserError
from rewards.data import read_items, report_skipped
from rewards.tasks import load_task, task_names


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("score", help="Score completions: d1-protocol accuracy and mean training reward.")
    parser.add_argument(
        "--task",
        required=True,
        help=f"Task whose grader and reward apply: {', '.join(task_names())}, or a module path package.module.",
    )
    parser.add_argument("--input", required=True, help="JSONL/JSON/CSV/parquet rows: completion + reference fields.")
    parser.add_argument("--scheme", default="d1", choices=("d1", "agrpo"), help="Reward scheme (default d1).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    parser.set_defaults(func=run)


def score_items(task: str, items: list[dict], scheme: str, sources: list[str] | None = None) -> dict[str, float | int]:
    """Accuracy (sum of grader numerators over denominators), mean reward, rows scored, rows failed.

    `sources` names where each item came from (`file:line`) for the warning about a row that fails.
    """
    loaded = load_task(task)
    num = den = reward_sum = 0.0
    scored = errors = 0
    for index, item in enumerate(items):
        completion = item["completion"]
        try:
            if not isinstance(completion, str):
                raise TypeError(f"completion is {type(completion).__name__}, not text")
            n, d = loaded.grade(completion, item)
            result = loaded.reward(completion, item, scheme)
        except (ValueError, TypeError, KeyError) as err:
            where = sources[index] if sources else f"row {index + 1}"
            print(f"warning: {where}: not scored ({err})", file=sys.stderr)
            errors += 1
            continue
        num, den, reward_sum, scored = num + n, den + d, reward_sum + result.score, scored + 1
    return {
        "accuracy": num / den if den else 0.0,
        "mean_reward": reward_sum / scored if scored else 0.0,
        "n": scored,
        "errors": errors,
        "correct": num,
        "total": den,
    }


def run(args: argparse.Namespace) -> int:
    loaded = read_items(args.input, args.task, require=("completion",))
    report_skipped(loaded, args.input)
    if not loaded.items:
        raise UserError(f"input {args.input}: no scorable rows (each needs completion and the {args.task} fields)")
    sources = [f"{args.input}:{line}" for line in loaded.lines]
    summary = score_items(args.task, loaded.items, args.scheme, sources)
    summary["errors"] += len(loaded.skipped)
    if summary["errors"]:
        total = summary["n"] + summary["errors"]
        print(
            f"warning: {summary['errors']} of {total} rows not scored (above); accuracy and mean reward are over "
            f"the {summary['n']} scored rows",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({"task": args.task, "scheme": args.scheme, **summary}))
    else:
        print(
            f"{args.task}: accuracy {summary['accuracy']:.4f} ({summary['correct']:g}/{summary['total']:g}), "
            f"mean reward ({args.scheme}) {summary['mean_reward']:.4f}, n {summary['n']}, errors {summary['errors']}"
        )
    return 0
