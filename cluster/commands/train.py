"""`agrpo train`: the training run (the same entrypoint as `python -m cluster.train` under ray job submit)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="Run AGRPO training on Ray (local cluster unless one is running).")
    parser.add_argument("--config", default=None, help="YAML recipe (default: deploy/recipes/tiny.yaml settings).")
    parser.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint in run_dir.")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cluster.train import main

    argv = [
        *(["--config", args.config] if args.config else []),
        *(["--resume"] if args.resume else []),
        *args.overrides,
    ]
    return main(argv)
