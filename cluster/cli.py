"""The `agrpo` command line.

Each subcommand lives in its own module under `cluster.commands` with `register(subparsers)` and
`run(args) -> int`; this file only dispatches. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from common.errors import UserError

COMMANDS = {
    "train": "cluster.commands.train",
    "config": "cluster.commands.config",
    "sample": "cluster.commands.sample",
    "score": "cluster.commands.score",
    "generate": "cluster.commands.generate",
    "sft": "cluster.commands.sft",
    "eval": "cluster.commands.eval",
    "plot": "cluster.commands.plot",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agrpo", description="AGRPO post-training for diffusion language models on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"agrpo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"agrpo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
