"""Tasks by name: a registered name (entry point group `agrpo.tasks`) or a module path `package.module`.

`load_task` is the one place a task name becomes a task. It imports the module, checks that it
defines the interface of rewards/tasks/base.py and returns a `Task`. Every process (driver, rollout
workers, reward actors and their sandbox children) resolves the configured name the same way, so an
unregistered task given by its module path works everywhere as long as the module is importable.
"""

from __future__ import annotations

import importlib
import inspect
from functools import cache
from types import ModuleType
from typing import Any

from common.errors import ConfigError
from common.task_names import is_task_name, registered_tasks, task_module_path, unknown_task_rule
from rewards.outcomes import describe_exception
from rewards.tasks.base import TEMPLATES, Option, Task

REQUIRED = ("FIELDS", "check_row", "PROMPTS", "reward", "grade")


@cache
def load_task(name: str) -> Task:
    """The task `name` names, checked; one line (`ConfigError`) for a name or module that is not a task."""
    if not is_task_name(name):
        raise ConfigError(f"task {name!r}: {unknown_task_rule()}")
    path = task_module_path(name)
    try:
        module = importlib.import_module(path)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"task {name!r}: cannot import {path} ({describe_exception(exc)})") from None
    return _task(name, path, module)


def task_names() -> list[str]:
    """The registered tasks' names; a task given by module path is known only where it is named."""
    return list(registered_tasks())


def _task(name: str, path: str, module: ModuleType) -> Task:
    where = f"task {name!r} (module {path})"
    missing = [member for member in REQUIRED if not hasattr(module, member)]
    if missing:
        raise ConfigError(
            f"{where}: not a task, it lacks {', '.join(missing)} (the interface is in rewards/tasks/base.py)"
        )
    fields, prompts = module.FIELDS, module.PROMPTS
    if not isinstance(fields, tuple) or not all(isinstance(f, str) for f in fields):
        raise ConfigError(f"{where}: FIELDS = {fields!r}: must be a tuple of field names")
    if not isinstance(prompts, dict) or not prompts or not set(prompts) <= set(TEMPLATES):
        raise ConfigError(f"{where}: PROMPTS must map some of {', '.join(TEMPLATES)} to prompt functions")
    optional = ("generate", "item_key", "perturb")
    functions = {
        **{m: getattr(module, m) for m in ("check_row", "reward", "grade")},
        **{m: getattr(module, m) for m in optional if getattr(module, m, None) is not None},
        **{f"PROMPTS[{t!r}]": f for t, f in prompts.items()},
    }
    not_callable = [member for member, value in functions.items() if not callable(value)]
    if not_callable:
        raise ConfigError(f"{where}: {not_callable[0]} is not a function")
    generate = functions.get("generate")
    options: dict[str, Option] = getattr(module, "OPTIONS", {})
    if generate is not None:
        _check_generator(where, generate, functions.get("item_key"), options)
    return Task(
        name=name,
        module=path,
        fields=fields,
        columns=getattr(module, "COLUMNS", {}),
        check_row=module.check_row,
        prompts=prompts,
        reward=module.reward,
        grade=module.grade,
        generate=generate,
        options=options,
        item_key=functions.get("item_key"),
        perturb=functions.get("perturb"),
        accuracy_name=str(getattr(module, "ACCURACY_NAME", "accuracy")),
    )


def _check_generator(where: str, generate: Any, item_key: Any, options: dict[str, Option]) -> None:
    """A generator needs `item_key`, and must take every declared option (with its default) as a keyword."""
    if item_key is None:
        raise ConfigError(f"{where}: has generate but no item_key(item), which keeps the splits disjoint")
    if not isinstance(options, dict) or not all(isinstance(o, Option) for o in options.values()):
        raise ConfigError(f"{where}: OPTIONS must map option names to rewards.tasks.base.Option")
    try:
        inspect.signature(generate).bind(None, **{k: o.default for k, o in options.items()})
    except TypeError as exc:
        raise ConfigError(f"{where}: generate(rng, **OPTIONS) does not fit its signature ({exc})") from None
