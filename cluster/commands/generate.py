"""`agrpo generate`: write seeded items of any task with a generator as JSONL.

The generator options come from the tasks themselves (each task module's `OPTIONS`): every option of
a registered task is a flag (`--max-number`), shared by the tasks that declare it, and `--option
key=value` reaches any option of any task, a task given by module path included.
"""

from __future__ import annotations

import argparse
from typing import Any

from common.config import parse_override
from common.errors import ConfigError, UserError
from rewards.generators import generate, generate_split, write_jsonl
from rewards.tasks import load_task, task_names
from rewards.tasks.base import Option, Task

COMMAND_FLAGS = {"task", "n", "seed", "split", "n_eval", "output", "option", "help"}
"""Names an option flag may not take; such an option is reachable with --option only."""


def generated_tasks() -> dict[str, Task]:
    """The registered tasks with a generator. A task module that cannot be loaded is left out here (no
    flags of its own); naming it with --task reports why."""
    tasks = {}
    for name in task_names():
        try:
            task = load_task(name)
        except ConfigError:
            continue
        if task.generate is not None:
            tasks[name] = task
    return tasks


def declared_options(tasks: dict[str, Task]) -> dict[str, dict[str, Option]]:
    """Option name -> {task: its declaration}: one flag serves every task that declares the option."""
    declared: dict[str, dict[str, Option]] = {}
    for name, task in tasks.items():
        for option, spec in task.options.items():
            declared.setdefault(option, {})[name] = spec
    return declared


def _flag(option: str) -> str:
    return f"--{option.replace('_', '-')}"


def _shown(default: Any) -> str:
    return " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="Write generated task items (with a correct completion) as JSONL.")
    tasks = generated_tasks()
    parser.add_argument(
        "--task", required=True, help=f"Task with a generator ({', '.join(tasks)}) or a module path package.module."
    )
    parser.add_argument("--n", type=int, required=True, help="Number of distinct items.")
    parser.add_argument("--seed", type=int, default=0, help="Seed; the same seed gives the same items.")
    parser.add_argument(
        "--split",
        choices=("train", "eval"),
        help="Write this split of the disjoint train/eval pair that training uses (data.num_eval = --n-eval).",
    )
    parser.add_argument("--n-eval", type=int, help="Size of the held-out split the train split avoids.")
    parser.add_argument("--output", required=True, help="JSONL file to write.")
    for option, specs in declared_options(tasks).items():
        if option in COMMAND_FLAGS:
            continue
        several = any(spec.several for spec in specs.values())
        parser.add_argument(
            _flag(option),
            dest=f"option_{option}",
            metavar=option.upper(),
            nargs="+" if several else None,
            help="; ".join(
                f"{task}: {spec.help} (default {_shown(spec.default)})" for task, spec in specs.items()
            ).replace("%", "%%"),
        )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A generator option by name, the value in YAML (e.g. --option num_numbers=[3,4]); works for any task.",
    )
    parser.set_defaults(func=run)


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line; a flag that does not apply to the task is an error."""
    options = load_task(args.task).options
    given: dict[str, Any] = {}
    for name, value in vars(args).items():
        if not name.startswith("option_") or value is None:
            continue
        option = name.removeprefix("option_")
        if option not in options:
            raise UserError(f"{_flag(option)}: not an option of the {args.task} generator")
        # A flag shared with a task that takes a list collects a list; one value for this task's single option.
        single = isinstance(value, list) and len(value) == 1 and not options[option].several
        given[option] = value[0] if single else value
    for text in args.option:
        path, value = parse_override(text)
        given[".".join(path)] = value
    return given


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"--n {args.n}: must be at least 1")
    options = generator_options(args)
    if args.split is None:
        if args.n_eval is not None:
            raise UserError("--n-eval: only meaningful with --split")
        items = generate(args.task, args.n, args.seed, **options)
    elif args.split == "eval":
        items = generate_split(args.task, 0, args.n, args.seed, **options)[1]
    else:
        if args.n_eval is None or args.n_eval < 1:
            raise UserError("--split train: needs --n-eval (the held-out size the train items must avoid)")
        items = generate_split(args.task, args.n, args.n_eval, args.seed, **options)[0]
    path = write_jsonl(items, args.output)
    print(f"wrote {len(items)} {args.task} items to {path}")
    return 0
