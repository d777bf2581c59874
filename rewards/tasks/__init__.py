"""Built-in tasks. Each module `rewards.tasks.<name>` has `reward(completion, reference, scheme)`
(the training reward, a `RewardResult` with named components) and `grade(completion, reference)`
(the d1-protocol accuracy as a (numerator, denominator) pair, summed over a set)."""

from __future__ import annotations

import importlib
from types import ModuleType

from common.errors import UserError

TASK_NAMES = ("gsm8k", "math", "countdown", "sudoku", "arithmetic")
REFERENCE_FIELDS = {
    "gsm8k": ("answer",),
    "math": ("answer",),
    "arithmetic": ("answer",),
    "countdown": ("numbers", "target"),
    "sudoku": ("puzzle", "solution"),
}


def task_module(name: str) -> ModuleType:
    """The module of a built-in task, or a one-line error naming the choices."""
    if name not in TASK_NAMES:
        raise UserError(f"task {name!r}: unknown; built-in tasks are {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"rewards.tasks.{name}")
