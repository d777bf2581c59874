"""Which tasks exist, read from package metadata so that the schema can check `data.task` without
importing any task (common/ may not import rewards/).

A task is registered as an entry point in the `agrpo.tasks` group, `name = "package.module"`; the
built-in ones are declared in agrpo's own pyproject.toml exactly as another package would declare
its own. A task that is not registered can still be named by its module path (`package.module`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import entry_points

from common.errors import ConfigError

ENTRY_POINT_GROUP = "agrpo.tasks"
MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


@cache
def registered_tasks() -> dict[str, str]:
    """Task name -> module path for every installed `agrpo.tasks` entry point (nothing is imported).

    Cached: the set of installed packages does not change while a process runs.
    """
    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if found.get(ep.name, ep.value) != ep.value:
            raise ConfigError(f"task {ep.name!r}: registered twice, by {found[ep.name]} and {ep.value}")
        found[ep.name] = ep.value
    return dict(sorted(found.items()))


def is_module_path(name: str) -> bool:
    """Whether `name` reads as a dotted module path `package.module` (an unregistered task)."""
    return MODULE_PATH.fullmatch(name) is not None


def is_task_name(name: str) -> bool:
    """Whether `name` can name a task: a registered one, or a module path (checked when it is imported)."""
    return name in registered_tasks() or is_module_path(name)


def unknown_task_rule() -> str:
    """The rule an unknown task name breaks, listing the names that would do."""
    return f"unknown; registered tasks are {', '.join(registered_tasks()) or 'none'} (or a module path package.module)"


def check_task_name(name: str) -> str:
    """`name` if it can name a task; else `ValueError` as the schema phrases it (`task = 'x': rule`)."""
    if not is_task_name(name):
        raise ValueError(f"task = {name!r}: {unknown_task_rule()}")
    return name


def task_module_path(name: str) -> str:
    """The module that implements task `name`: its entry point's, or `name` itself when it is a module path."""
    return registered_tasks().get(name, name)
