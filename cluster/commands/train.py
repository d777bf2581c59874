"""`agrpo train`: a training run (`python -m cluster.train` is the same command, the form `ray job submit` runs)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from common.config import DEFAULT_RECIPE

if TYPE_CHECKING:
    from cluster.train import RunSummary


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="Run AGRPO training on Ray (local cluster unless one is running).",
        description="Train with the recipe (default: the embedded default) plus key.sub=value overrides. Every "
        "key, its default and its description: `agrpo config show`; docs/training.md and docs/operations.md.",
    )
    parser.add_argument("--config", default=None, help=f"YAML recipe (default: {DEFAULT_RECIPE.name}).")
    parser.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint in run_dir.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Start over in a run_dir that holds a run (checkpoint.overwrite)."
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. learner.steps=50.")
    parser.set_defaults(func=run)


def summary_text(summary: RunSummary) -> str:
    """The lines printed at the end of a run."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    base, final = summary.base_accuracy, summary.final_accuracy
    gain = "" if base is None or final is None else f" ({100 * (final - base):+.1f} points)"
    return "\n".join(
        [
            f"agrpo train: done {summary.steps} steps in {summary.wall_seconds:.0f} s",
            f"  held-out accuracy: base {pct(base)} -> final {pct(final)}{gain} (final = mean of last 3 evaluations)",
            f"  run directory: {summary.run_dir}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    from common.config import load_config

    overrides = [
        *args.overrides,
        *(["checkpoint.resume=auto"] if args.resume else []),
        *(["checkpoint.overwrite=true"] if args.overwrite else []),
    ]
    config = load_config(args.config or DEFAULT_RECIPE, overrides)  # a config error before the driver's imports
    from cluster.train import train

    print(summary_text(train(config)))
    return 0
