"""`agrpo config show|validate`: print the resolved config or check a file."""

from __future__ import annotations

import argparse

from common.config import DEFAULT_RECIPE, dump_config, load_config
from common.config_describe import describe_config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="Show the resolved config or validate a config file.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="Print the resolved config (defaults, file, overrides) as YAML; --describe adds descriptions."
    )
    show.add_argument("--config", help=f"YAML config file (default: {DEFAULT_RECIPE.name}, as `agrpo train`).")
    show.add_argument(
        "--describe",
        action="store_true",
        help="Write every field's description as a comment above it (the output still loads as a config).",
    )
    show.add_argument("overrides", nargs="*", help="key.sub=value overrides.")
    validate = actions.add_parser("validate", help="Check a config file against the schema.")
    validate.add_argument("file", help="YAML config file.")
    validate.add_argument("overrides", nargs="*", help="key.sub=value overrides.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        source = args.config or DEFAULT_RECIPE
        config = load_config(source, args.overrides)
        resolved = describe_config(config) if args.describe else dump_config(config)
        print(f"# {source} with {len(args.overrides)} override(s), resolved", flush=True)
        print(resolved, end="")
    else:
        load_config(args.file, args.overrides)
        print(f"{args.file}: valid")
    return 0
