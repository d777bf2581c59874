"""`agrpo plot RUN_DIR`: PNG plots of a run's metrics.jsonl (and eval.json) into RUN_DIR/plots/."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plot",
        help="Plot a run directory's metrics (reward/accuracy, loss, staleness, weight sync) as PNGs.",
        description="Read RUN_DIR/metrics.jsonl (and RUN_DIR/eval.json if present) and write PNGs into RUN_DIR/plots/.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="Run directory holding metrics.jsonl.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.plots import plot_run

    paths, skipped = plot_run(args.run_dir)
    for message in skipped:
        print(f"warning: {message}; line skipped", file=sys.stderr)
    print(f"wrote {len(paths)} plots to {paths[0].parent}:")
    for path in paths:
        print(f"  {path}")
    return 0
