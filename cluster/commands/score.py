"""`agrpo score`: grade and reward completions produced by any model.

Input rows hold `completion` plus the task's reference fields. A row that cannot be read or scored
is counted in `errors` (and reported on stderr), never silently dropped. Grading and the reward run
in the time-limited grading child (`rewards.grading`): a row whose grading runs past the limit is
scored as wrong, counted in `timeouts` and reported. `--output FILE` writes one line per input row with
its score and the reason for it, so the rows that failed can be found and read.

Settings are one config like every command's: the flags are aliases of `data.task`, `rewards.scheme`,
`evaluation.protocol` and `rewards.grade_timeout_s`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.commands.options import Alias, add_config_options, check_output_file, resolve_config
from common.errors import UserError
from rewards.data import read_items, report_skipped
from rewards.grading import GRADE_TIMEOUT_S, Grade, TimedGrader

ALIASES = (
    Alias("--task", "data.task"),
    Alias("--scheme", "rewards.scheme"),
    Alias("--protocol", "evaluation.protocol"),
    Alias("--grade-timeout", "rewards.grade_timeout_s"),
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "score",
        help="Score completions: accuracy under a grading protocol and mean reward.",
        description="Grade and reward every row's `completion` against its reference fields. Settings: --config "
        "(default: the built-in defaults), then KEY=VALUE overrides; each flag below sets one config field.",
    )
    parser.add_argument("--input", required=True, help="JSONL/JSON/CSV/parquet rows: completion + reference fields.")
    parser.add_argument(
        "--output",
        default=None,
        help="JSONL file with one line per input row: where it is, status, score, reward and the reason.",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    add_config_options(
        parser, ALIASES, "YAML config whose data.*, rewards.* and evaluation.* apply.", "data.fields={answer: gold}"
    )
    parser.set_defaults(func=run)


@dataclass
class RowScore:
    """What became of one input row, and why."""

    row: str
    line: int
    status: str
    """`correct`, `partial` (some of its graded parts), `wrong`, `timeout`, `error` (not scored) or `skipped`."""
    reason: str
    correct: float | None = None
    total: float | None = None
    reward: float | None = None
    reward_components: dict[str, float] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        return self.status not in ("error", "skipped")


def _failure(grade: Grade) -> str | None:
    """Why a row cannot be scored at all (its grader or reward raised); a timeout is not such a failure."""
    if grade.error is not None and not grade.timed_out:
        return grade.error
    if grade.reward is not None and grade.reward.error is not None and not grade.reward.timed_out:
        return grade.reward.error
    return None


def _row_score(grade: Grade, where: str, line: int, protocol: str, timeout_s: float) -> RowScore:
    failure = _failure(grade)
    if failure is not None:
        return RowScore(where, line, "error", f"not scored ({failure})")
    reward = grade.reward.score if grade.reward is not None else 0.0
    components = dict(grade.reward.components) if grade.reward is not None else {}
    scores = {"correct": grade.num, "total": grade.den, "reward": reward, "reward_components": components}
    if grade.timed_out or (grade.reward is not None and grade.reward.timed_out):
        return RowScore(where, line, "timeout", f"grading ran past {timeout_s:g} s; scored as wrong", **scores)
    status = "correct" if grade.num == grade.den else "wrong" if grade.num == 0 else "partial"
    parts = ", ".join(f"{name} {value:g}" for name, value in components.items())
    reason = f"{status}: {grade.num:g} of {grade.den:g} under the {protocol} grader; reward {reward:g}"
    return RowScore(where, line, status, reason + (f" ({parts})" if parts else ""), **scores)


def score_items(
    task: str,
    items: list[dict],
    scheme: str,
    sources: list[str] | None = None,
    protocol: str = "agrpo",
    timeout_s: float = GRADE_TIMEOUT_S,
    lines: list[int] | None = None,
) -> tuple[dict[str, float | int], list[RowScore]]:
    """Accuracy (sum of grader numerators over denominators), mean reward, rows scored, failed and timed out;
    and each row's score with its reason.

    `sources` names where each item came from (`file:line`) for the warnings about a row.
    """
    where = sources or [f"row {index + 1}" for index in range(len(items))]
    numbers = lines or list(range(1, len(items) + 1))
    rows: list[RowScore] = []
    texts, references, places = [], [], []
    for index, item in enumerate(items):
        completion = item["completion"]
        if not isinstance(completion, str):
            reason = f"not scored (completion is {type(completion).__name__}, not text)"
            rows.append(RowScore(where[index], numbers[index], "error", reason))
            continue
        texts.append(completion)
        references.append(item)
        places.append(index)
    with TimedGrader(task, protocol, timeout_s, scheme=scheme) as grader:
        grades = grader.grade(texts, references)
    for grade, index in zip(grades, places, strict=True):
        rows.append(_row_score(grade, where[index], numbers[index], protocol, timeout_s))
    rows.sort(key=lambda r: r.line)
    for row in rows:
        if row.status in ("error", "timeout"):
            print(f"warning: {row.row}: {row.reason}", file=sys.stderr)
    scored = [r for r in rows if r.scored]
    num = sum(r.correct or 0.0 for r in scored)
    den = sum(r.total or 0.0 for r in scored)
    return {
        "accuracy": num / den if den else 0.0,
        "mean_reward": sum(r.reward or 0.0 for r in scored) / len(scored) if scored else 0.0,
        "n": len(scored),
        "errors": len(rows) - len(scored),
        "timeouts": sum(r.status == "timeout" for r in rows),
        "correct": num,
        "total": den,
    }, rows


def skipped_rows(messages: list[str], path: str) -> list[RowScore]:
    """The rows the reader skipped (`file:line: reason`, as rewards.data words them), as scores."""
    rows = []
    for message in messages:
        line, _, reason = message.removeprefix(f"{path}:").partition(": ")
        rows.append(RowScore(f"{path}:{line}", int(line), "skipped", f"not scored ({reason})"))
    return rows


def write_rows(path: Path, rows: list[RowScore]) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(asdict(row)) + "\n" for row in sorted(rows, key=lambda r: r.line))


def run(args: argparse.Namespace) -> int:
    config, _ = resolve_config(args, ALIASES)
    task, scheme = config.data.task, config.rewards.scheme
    protocol, timeout_s = config.evaluation.protocol, config.rewards.grade_timeout_s
    output = check_output_file("--output", Path(args.output)) if args.output else None
    loaded = read_items(args.input, task, config.data.format, config.data.fields, require=("completion",))
    report_skipped(loaded, args.input)
    if not loaded.items:
        raise UserError(f"input {args.input}: no scorable rows (each needs completion and the {task} fields)")
    sources = [f"{args.input}:{line}" for line in loaded.lines]
    summary, rows = score_items(task, loaded.items, scheme, sources, protocol, timeout_s, loaded.lines)
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
            f"warning: {summary['timeouts']} of {summary['n']} rows ran past the {timeout_s:g} s grading "
            "limit and are scored as wrong (above)",
            file=sys.stderr,
        )
    if output is not None:
        write_rows(output, rows + skipped_rows(loaded.skipped, str(args.input)))
    if args.json:
        print(json.dumps({"task": task, "scheme": scheme, "protocol": protocol, **summary}))
    else:
        print(
            f"{task}: accuracy {summary['accuracy']:.4f} ({summary['correct']:g}/{summary['total']:g}), "
            f"mean reward ({scheme}) {summary['mean_reward']:.4f}, n {summary['n']}, errors {summary['errors']}, "
            f"timeouts {summary['timeouts']}, protocol {protocol}"
        )
    if output is not None:
        print(f"wrote a score and a reason for each of {len(rows) + len(loaded.skipped)} rows to {output}")
    return 0
