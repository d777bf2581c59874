"""`agrpo train`: a training run (`python -m cluster.train` is the same command, the form `ray job submit` runs)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cluster.commands.options import Alias, add_config_options, resolve_config
from common.config import DEFAULT_RECIPE, read_yaml

if TYPE_CHECKING:
    from cluster.train import RunSummary

ALIASES = (
    Alias("--resume", "checkpoint.resume", switch="auto", help="Continue from the latest checkpoint in run_dir."),
    Alias(
        "--overwrite",
        "checkpoint.overwrite",
        switch=True,
        help="Start over in a run_dir that holds a run, deleting its outputs first.",
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="Run AGRPO training on Ray (local cluster unless one is running).",
        description="Train with the recipe (default: the embedded default) plus key.sub=value overrides; a list "
        "item by its index, e.g. rewards.plugins.0.weight=0.5. Every key with its value and description: "
        "`agrpo config show --describe [--config FILE]`; docs/training.md, docs/operations.md, and "
        "docs/config-mapping.md (the same keys in TRL, verl and OpenRLHF).",
    )
    add_config_options(parser, ALIASES, f"YAML recipe (default: {DEFAULT_RECIPE.name}).", "learner.steps=50")
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
    config, _ = resolve_config(args, ALIASES, read_yaml(DEFAULT_RECIPE), str(DEFAULT_RECIPE), training=True)
    from cluster.train import train  # after the config: a config error comes before the driver's imports

    print(summary_text(train(config)))
    return 0
