"""`agrpo generate`: write seeded items of any task with a generator as JSONL.

Settings are one config like every command's: `--config`, `key.sub=value` overrides, and flags that are
aliases of `data.task`, `seed`, `data.num_eval` and `data.generator.<option>`. The option flags come from the
tasks themselves (each task module's `OPTIONS`): every option of a registered task is a flag
(`--max-number`), shared by the tasks that declare it, and `--option key=value` (or
`data.generator.key=value`) reaches any option of any task, a task given by module path included. With
`--split`, the items are exactly those of the split a training run with the same config uses.
"""

from __future__ import annotations

import argparse
from typing import Any

from cluster.commands.options import Alias, add_config_options, given_aliases, resolve_config
from common.errors import ConfigError, UserError
from rewards.generators import generate, generate_split, write_jsonl
from rewards.tasks import load_task, task_names
from rewards.tasks.base import Option, Task

COMMAND_FLAGS = {"task", "n", "seed", "split", "n_eval", "output", "option", "help", "config"}
"""Names an option flag may not take; such an option is reachable with --option only."""
ALIASES = (Alias("--task", "data.task"), Alias("--seed", "seed"), Alias("--n-eval", "data.num_eval"))
GENERATOR = "data.generator"


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


def option_aliases(tasks: dict[str, Task]) -> tuple[Alias, ...]:
    """One flag per generator option of the registered tasks, each setting data.generator.<option>."""
    aliases = []
    for option, specs in declared_options(tasks).items():
        if option in COMMAND_FLAGS:
            continue
        aliases.append(
            Alias(
                _flag(option),
                f"{GENERATOR}.{option}",
                several=any(spec.several for spec in specs.values()),
                help="; ".join(f"{task}: {spec.help} (default {_shown(spec.default)})" for task, spec in specs.items()),
            )
        )
    return tuple(aliases)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "generate",
        help="Write generated task items (with a correct completion) as JSONL.",
        description="Write generated items of data.task, each with a correct completion. Settings: --config "
        "(default: the built-in defaults), then KEY=VALUE overrides; each flag below sets one config field.",
    )
    parser.add_argument(
        "--n", type=int, default=None, help="Items to write (with --split: the first N of it; default all of it)."
    )
    parser.add_argument(
        "--split",
        choices=("train", "eval"),
        help="Write (the first --n items of) this split of the disjoint train/eval pair a training run with this "
        "config uses: data.num_train / data.num_eval items, the train split avoiding the held-out ones.",
    )
    parser.add_argument("--output", required=True, help="JSONL file to write.")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A generator option by name, the value in YAML (e.g. --option num_numbers=[3,4]); works for any "
        "task; the same as data.generator.KEY=VALUE.",
    )
    aliases = ALIASES + option_aliases(generated_tasks())
    add_config_options(parser, aliases, "YAML config whose data.* and seed apply.", "data.generator.max_blanks=6")
    parser.set_defaults(func=run, aliases=aliases)


def generator_options(args: argparse.Namespace, task: str, options: dict[str, Any]) -> dict[str, Any]:
    """The config's generator options for `task`; an option flag the task does not declare is an error."""
    declared = load_task(task).options
    flags = {alias.key: alias.flag for alias in args.aliases}
    adjusted = dict(options)
    for key, value in given_aliases(args, args.aliases).items():
        if not key.startswith(f"{GENERATOR}."):
            continue
        option = key.removeprefix(f"{GENERATOR}.")
        if option not in declared:
            raise UserError(f"{flags[key]}: not an option of the {task} generator")
        # A flag shared with a task that takes a list collects a list; one value for this task's single option.
        if isinstance(value, list) and len(value) == 1 and not declared[option].several:
            adjusted[option] = value[0]
    return adjusted


def _count(args: argparse.Namespace, size: int, field: str) -> int:
    if args.n is None:
        return size
    if args.n > size:
        raise UserError(f"--n {args.n}: the {args.split} split holds {field} = {size} items")
    return args.n


def run(args: argparse.Namespace) -> int:
    args.overrides = [*args.overrides, *(f"{GENERATOR}.{text}" for text in args.option)]
    if args.n is not None and args.n < 1:
        raise UserError(f"--n {args.n}: must be at least 1")
    if args.split is None:
        if args.n is None:
            raise UserError("--n: required without --split")
        if "data.num_eval" in given_aliases(args, args.aliases):
            raise UserError("--n-eval: only meaningful with --split")
    config, _ = resolve_config(args, args.aliases)
    data = config.data
    options = generator_options(args, data.task, data.generator)
    if args.split is None:
        items = generate(data.task, args.n, config.seed, **options)
    elif args.split == "eval":
        items = generate_split(data.task, 0, _count(args, data.num_eval, "data.num_eval"), config.seed, **options)[1]
    else:
        n = _count(args, data.num_train, "data.num_train")
        items = generate_split(data.task, n, data.num_eval, config.seed, **options)[0]
    path = write_jsonl(items, args.output)
    print(f"wrote {len(items)} {data.task} items to {path}")
    return 0
