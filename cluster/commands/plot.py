"""`agrpo plot RUN_DIR`: PNG plots of a run's metrics.jsonl (and eval.json) into RUN_DIR/plots/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plot",
        help="Plot a run directory's metrics (reward/accuracy, learner, staleness, weight sync, time) as PNGs.",
        description="Read RUN_DIR/metrics.jsonl (and RUN_DIR/eval.json if present) and write PNGs into RUN_DIR/plots/.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="Run directory holding metrics.jsonl.")
    parser.set_defaults(func=run)


def accuracy_name(run_dir: str) -> str:
    """What the run's task calls its accuracy (from the run's config.yaml); `accuracy` when it cannot tell."""
    from common.errors import UserError
    from common.plots import run_name
    from rewards.tasks import load_task

    task = run_name(Path(run_dir)).task
    if task is None:
        return "accuracy"
    try:
        return load_task(task).accuracy_name
    except UserError:
        return "accuracy"


def run(args: argparse.Namespace) -> int:
    from common.plots import plot_run

    paths, skipped = plot_run(args.run_dir, accuracy_name(args.run_dir))
    for message in skipped:
        print(f"warning: {message}; line skipped", file=sys.stderr)
    print(f"wrote {len(paths)} plots to {paths[0].parent}:")
    for path in paths:
        print(f"  {path}")
    return 0
