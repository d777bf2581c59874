"""Seeded, deterministic items of any task that has a generator, and their disjoint train/eval splits.

Each task module makes one item from a `random.Random` (`generate(rng, **options)`, options declared
in its `OPTIONS`); this module turns that into `n` distinct items. Every item holds the task's
reference fields, what its prompts read, and `completion`: a correct completion in the compact
format (`<answer>...</answer>`) for supervised warm-up and for checking graders end to end. (It is
not called `solution` because that is Sudoku's reference field.)
The same (task, seed, options) always gives the same items: every draw comes from one
`random.Random` seeded with a string, which Python hashes identically on every platform and run.
The held-out split is drawn from its own stream so it does not change with the training-set size,
and training items whose key (`item_key`, e.g. the puzzle) is in it are skipped, so the splits are
disjoint.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from common.config_sections import MAX_ITEMS
from common.errors import ConfigError
from rewards.tasks import load_task, task_names

MAX_MISSES = 2000
PROGRESS_EVERY_S = 10.0


Maker = Callable[..., dict[str, Any]]
Key = Callable[[dict[str, Any]], Hashable]


def _generator(task: str, given: dict[str, Any]) -> tuple[Maker, Key, dict[str, Any]]:
    """The task's generator, its item key, and every option: the given ones checked and typed, the rest
    at their defaults."""
    loaded = load_task(task)
    if loaded.generate is None or loaded.item_key is None:
        generated = [name for name in task_names() if load_task(name).generate is not None]
        raise ConfigError(f"task {task!r}: no generator; tasks with one: {', '.join(generated)}")
    unknown = sorted(set(given) - set(loaded.options))
    if unknown:
        raise ConfigError(
            f"{task} generator: unknown option {unknown[0]!r}; options are {', '.join(loaded.options) or 'none'}"
        )
    options = {
        name: option.parse(f"{task} generator option {name}", given[name]) if name in given else option.default
        for name, option in loaded.options.items()
    }
    return loaded.generate, loaded.item_key, options


def _unique(task: str, stream: str, n: int, exclude: set[Hashable], given: dict[str, Any]) -> list[dict]:
    """`n` items with distinct keys, none in `exclude`, from the stream named `stream`.

    At most MAX_ITEMS; a generation that takes long says how far it got every PROGRESS_EVERY_S seconds, so a
    slow generator (a task's own, or a large `n`) is visibly working rather than hung.
    """
    if n > MAX_ITEMS:
        raise ConfigError(
            f"{task} generator: {n} items asked for, at most {MAX_ITEMS}; for more, write them to files with "
            "`agrpo generate` in parts and set data.path"
        )
    make, key, options = _generator(task, given)
    rng = random.Random(stream)
    items: list[dict[str, Any]] = []
    seen = set(exclude)
    misses = 0
    start = time.monotonic()
    note_at = start + PROGRESS_EVERY_S
    while len(items) < n:
        if time.monotonic() >= note_at:
            note_at += PROGRESS_EVERY_S
            print(
                f"{task} generator: {len(items)} of {n} items after {time.monotonic() - start:.0f} s", file=sys.stderr
            )
        item = make(rng, **options)
        k = key(item)
        if k in seen:
            misses += 1
            if misses > MAX_MISSES:
                raise ConfigError(
                    f"{task} generator: found only {len(items)} of {n} distinct items with options "
                    f"{given or 'default'}; widen the ranges or ask for fewer"
                )
            continue
        misses = 0
        seen.add(k)
        items.append(item)
    return items


def generate(task: str, n: int, seed: int, **options: Any) -> list[dict[str, Any]]:
    """`n` distinct items of a generated task."""
    return _unique(task, f"{task}:all:{seed}", n, set(), options)


def generate_split(
    task: str, n_train: int, n_eval: int, seed: int, **options: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval) with no shared puzzle; the eval items depend only on (task, n_eval, seed, options)."""
    evaluation = _unique(task, f"{task}:eval:{seed}", n_eval, set(), options)
    _, key, _ = _generator(task, options)
    held_out = {key(item) for item in evaluation}
    train = _unique(task, f"{task}:train:{seed}", n_train, held_out, options)
    return train, evaluation


def write_jsonl(items: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object per line, creating parent directories."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    return out
