"""What a task module defines, and the `Task` the rest of the system sees.

A task is one module (`rewards/tasks/<name>.py`, or any importable `package.module`) with these names:

| name | required | what |
|---|---|---|
| `FIELDS` | yes | the reference fields a row must have, e.g. `("numbers", "target")` |
| `COLUMNS` | no | `{field: accepted column names}` for every field read from a data row, optional ones (such as `question`) included; a field not listed is read from its own column |
| `check_row(found)` | yes | the fields found in a row (required ones present) -> the same fields checked and normalised; raises `RowError` |
| `PROMPTS` | yes | `{template: item -> chat turns}` for some of `d1`, `agrpo`, `plain` (or -> text, used as it is) |
| `reward(completion, reference, scheme)` | yes | the training reward, a `RewardResult` with named components |
| `grade(completion, reference)` | yes | the d1-protocol accuracy as (numerator, denominator), summed over a set |
| `generate(rng, **options)` | no | one generated item: its fields, what the prompts read, and a correct `completion` |
| `OPTIONS` | with `generate` | `{option: Option(default, help, ..., low=, high=)}`; `generate` takes every one as a keyword; an integer option's range keeps one item cheap to make |
| `item_key(item)` | with `generate` | what makes two generated items the same puzzle (splits are disjoint by it) |
| `perturb(answer, item, rng)` | no | a plausible wrong answer for supervised warm-up (`sft.wrong_fraction`) |
| `ACCURACY_NAME` | no | what the grader's accuracy counts, for plots and tables (default `accuracy`; Sudoku: `cell accuracy`) |

Plain module names keep a task free of classes to subclass: a third-party task imports from here
only `RowError` and `Option`, and a reward plugin package is built the same way.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from common.config import DataConfig
from common.errors import ConfigError, DataError, brief
from rewards.types import RewardResult

TEMPLATES: tuple[str, ...] = get_args(DataConfig.model_fields["template"].annotation)
_INTEGER = re.compile(r"-?\d{1,12}")
MAX_OPTION_VALUES = 16

Messages = list[dict[str, str]]


class RowError(ValueError):
    """One data row breaks a task's rule; the loader adds the file and line."""


@dataclass(frozen=True)
class Option:
    """One generator option: its default, help line, the type of one value, whether it takes a list, and for
    an integer the range `low..high` it must lie in.

    The range is what keeps a generator quick: one item must stay cheap to make (`num_numbers: 100000` would
    build a 100000-number expression per item), so every integer option of a built-in task declares one.
    """

    default: Any
    help: str
    type: type = int
    several: bool = False
    low: int | None = None
    high: int | None = None
    max_values: int = MAX_OPTION_VALUES

    def parse(self, where: str, value: Any) -> Any:
        """`value` (from YAML or the command line, where numbers arrive as text) as the option's type."""
        if isinstance(value, (list, tuple)) and not self.several:
            raise ConfigError(f"{where} = {brief(value)}: takes one value")
        if isinstance(value, (list, tuple)) and len(value) > self.max_values:
            raise ConfigError(f"{where} = {brief(value)}: takes at most {self.max_values} values")
        values = [self._one(where, v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        return values if self.several else values[0]

    def _one(self, where: str, value: Any) -> Any:
        if self.type is int:
            if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where} = {brief(value)}: must be an integer")
            low = -math.inf if self.low is None else self.low
            high = math.inf if self.high is None else self.high
            if not low <= value <= high:
                raise ConfigError(f"{where} = {brief(value)}: must be in {self.range_text()}")
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {brief(value)}: must be text")
        return value

    def range_text(self) -> str:
        """`2..16`, `>= 0` or `<= 9`: the range as the help and the error messages say it."""
        if self.low is not None and self.high is not None:
            return f"{self.low}..{self.high}"
        return f">= {self.low}" if self.low is not None else f"<= {self.high}"


def nonempty_text(value: Any, name: str) -> str:
    """A row's text field, stripped; empty, missing or boolean is a `RowError`."""
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        raise RowError(f"{name} {value!r} is empty")
    return str(value).strip()


def prompt_field(item: Mapping[str, Any], name: str) -> Any:
    """A field a prompt needs; a file row may lack an optional one such as `question`."""
    if item.get(name) in (None, ""):
        raise DataError(f"item has no {name!r} field, which the prompt needs")
    return item[name]


@dataclass(frozen=True)
class Task:
    """A loaded task: the members of its module, checked once by `rewards.tasks.load_task`."""

    name: str
    module: str
    fields: tuple[str, ...]
    columns: Mapping[str, tuple[str, ...]]
    check_row: Callable[[dict[str, Any]], dict[str, Any]]
    prompts: Mapping[str, Callable[[Mapping[str, Any]], Messages | str]]
    reward: Callable[..., RewardResult]
    grade: Callable[[str, Mapping[str, Any]], tuple[float, float]]
    generate: Callable[..., dict[str, Any]] | None = None
    options: Mapping[str, Option] = field(default_factory=dict)
    item_key: Callable[[dict[str, Any]], Hashable] | None = None
    perturb: Callable[[str, dict[str, Any], random.Random], str] | None = None
    accuracy_name: str = "accuracy"

    @property
    def reward_target(self) -> str:
        """The reward as a `module:function` path: the built-in reward plugin of this task."""
        return f"{self.module}:reward"

    def messages(self, item: Mapping[str, Any], template: str) -> Messages | str:
        """The chat turns of the item's prompt under `template` (or its text, to be used without a chat template)."""
        prompt = self.prompts.get(template)
        if prompt is None:
            raise DataError(f"task {self.name}: template {template!r} not defined; it has {', '.join(self.prompts)}")
        return prompt(item)
