"""Task items from local files (JSONL, JSON, CSV, parquet, `save_to_disk` datasets) or the generators.

Rows are mapped onto the task's reference fields (config `data.fields`, else the usual column
names, including those of the shared benchmark files: Countdown `input`/`output`, Sudoku
`Puzzle`/`Solution`) and checked. A row that fails is never dropped silently: it is reported as
`file:line: reason` (the row number for parquet and datasets) and skipped, or raises `DataError`
when `on_malformed` is `fail`.
"""

from __future__ import annotations

import csv
import json
import random
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError, DataError
from rewards.answers import parse_number
from rewards.generators import GENERATORS, generate_split
from rewards.tasks import REFERENCE_FIELDS, TASK_NAMES

FORMATS = ("jsonl", "json", "csv", "parquet", "hf_disk")
SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
ALIASES = {
    "question": ("question", "problem"),
    "answer": ("answer",),
    "numbers": ("numbers", "nums", "input"),
    "target": ("target", "output"),
    "puzzle": ("puzzle", "Puzzle"),
    "solution": ("solution", "Solution"),
}
MAX_WARNINGS = 20


class RowError(ValueError):
    """One row breaks a rule; the loader adds the file and line."""


@dataclass
class LoadResult:
    """The rows that loaded, the line (or row number) each came from, and `file:line: reason` per skip."""

    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise RowError(f"{name} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d{1,12}", text):
        return int(text)
    raise RowError(f"{name} {value!r} is not an integer")


def _numbers(value: Any) -> list[int]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        value = [part for part in re.split(r"[\s,\[\]]+", value) if part]
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 16:
        raise RowError(f"numbers {value!r} is not a list of 1 to 16 integers")
    numbers = [_int(v, "number") for v in value]
    if any(not 0 <= n < 10**9 for n in numbers):
        raise RowError(f"numbers {numbers}: each must be in 0..999999999")
    return numbers


def _grid(value: Any, name: str, digits: str) -> str:
    text = str(value).zfill(16) if isinstance(value, int) and not isinstance(value, bool) else str(value).strip()
    if len(text) != 16 or any(c not in digits for c in text):
        raise RowError(f"{name} {value!r} is not 16 digits from {digits}")
    return text


def _answer(value: Any, task: str) -> str:
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        raise RowError(f"answer {value!r} is empty")
    text = str(value).strip()
    if task in ("gsm8k", "arithmetic"):
        if "####" in text:
            text = text.split("####")[-1].strip()
        if parse_number(text) is None:
            raise RowError(f"answer {text[:40]!r} is not a number")
    return text


def normalise_row(row: dict[str, Any], task: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The row with the task's reference fields under our names, checked; other columns kept."""
    fields = fields or {}
    wanted = (*REFERENCE_FIELDS[task], "question")
    out = dict(row)
    found: dict[str, Any] = {}
    for name in wanted:
        columns = (fields[name],) if name in fields else ALIASES[name]
        column = next((c for c in columns if c in row and row[c] is not None), None)
        if column is None:
            if name in REFERENCE_FIELDS[task]:
                raise RowError(f"missing field {name!r} (column {' or '.join(map(repr, columns))})")
            continue
        found[name] = row[column]
        out.pop(column, None)
    if task == "countdown":
        found["numbers"] = _numbers(found["numbers"])
        found["target"] = _int(found["target"], "target")
    elif task == "sudoku":
        found["puzzle"] = _grid(found["puzzle"], "puzzle", "01234")
        found["solution"] = _grid(found["solution"], "solution", "1234")
        clash = [i for i in range(16) if found["puzzle"][i] not in ("0", found["solution"][i])]
        if clash:
            raise RowError(f"solution disagrees with the puzzle's given cell {clash[0]}")
    else:
        found["answer"] = _answer(found["answer"], task)
    if "question" in found:
        found["question"] = str(found["question"])
    out.update(found)
    return out


def detect_format(path: Path, format: str) -> str:
    if format != "auto":
        if format not in FORMATS:
            raise DataError(f"data format {format!r}: must be auto or one of {', '.join(FORMATS)}")
        return format
    if path.is_dir():
        return "hf_disk"
    if path.suffix.lower() in SUFFIXES:
        return SUFFIXES[path.suffix.lower()]
    raise DataError(f"data file {path}: cannot tell the format from {path.suffix!r}; set data.format")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                yield lineno, RowError(f"not valid JSON ({err.msg})")


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise DataError(f"data file {path}: top level must be a JSON array of objects")
    pos, line, counted = pos + 1, 1, 0
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= len(text):
            raise DataError(f"data file {path}: JSON array is not closed")
        if text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        yield line, value


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:
                yield reader.line_num, RowError("more fields than the header")
            elif any(v is None for v in row.values()):
                yield reader.line_num, RowError("fewer fields than the header")
            else:
                yield reader.line_num, row


def _table_rows(path: Path, format: str) -> Iterator[tuple[int, Any]]:
    if format == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if len(data) != 1:
                raise DataError(
                    f"data directory {path}: holds splits {', '.join(data)}; point data.path at one "
                    f"of them ({path}/<split>)"
                )
            data = next(iter(data.values()))
        rows = iter(data)
    yield from enumerate(rows, 1)


def read_items(
    path: str | Path,
    task: str,
    format: str = "auto",
    fields: dict[str, str] | None = None,
    on_malformed: str = "skip",
    require: Sequence[str] = (),
) -> LoadResult:
    """Items of `task` from a file, plus `file:line: reason` for every skipped row.

    `require` names further columns a row must have (e.g. `completion` for scoring).
    """
    if task not in TASK_NAMES:
        raise DataError(f"task {task!r}: unknown; built-in tasks are {', '.join(TASK_NAMES)}")
    if on_malformed not in ("skip", "fail"):
        raise DataError(f"on_malformed {on_malformed!r}: must be skip or fail")
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p}: not found")
    kind = detect_format(p, format)
    readers = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows}
    rows = readers[kind](p) if kind in readers else _table_rows(p, kind)
    result = LoadResult()
    for line, row in rows:
        try:
            if isinstance(row, RowError):
                raise row
            if not isinstance(row, dict):
                raise RowError(f"not an object but {type(row).__name__}")
            missing = [name for name in require if row.get(name) is None]
            if missing:
                raise RowError(f"missing field {missing[0]!r}")
            result.items.append(normalise_row(row, task, fields))
            result.lines.append(line)
        except RowError as err:
            if on_malformed == "fail":
                raise DataError(f"{p}:{line}: {err}") from None
            result.skipped.append(f"{p}:{line}: {err}")
    return result


def report_skipped(result: LoadResult, path: str | Path) -> None:
    """One warning line per skipped row (the first few), then the count."""
    for message in result.skipped[:MAX_WARNINGS]:
        print(f"warning: {message}; row skipped", file=sys.stderr)
    if result.skipped:
        total = len(result.items) + len(result.skipped)
        print(f"warning: {path}: skipped {len(result.skipped)} malformed rows of {total}", file=sys.stderr)


def load_items(
    path: str | Path,
    task: str,
    format: str = "auto",
    fields: dict[str, str] | None = None,
    on_malformed: str = "skip",
) -> list[dict[str, Any]]:
    """Items of `task` from a file; malformed rows are reported on stderr and skipped, or fatal."""
    result = read_items(path, task, format, fields, on_malformed)
    report_skipped(result, path)
    return result.items


def load_task_items(data_cfg: Any, split: str, seed: int) -> list[dict[str, Any]]:
    """The items of one split as configured.

    With `data.path`: a path containing `{split}` names one file per split (`train`, `eval`);
    otherwise the file is shuffled with the seed, its first `num_eval` rows are the eval split and
    the rest the train split. Without a path the task's generator makes `num_train`/`num_eval` items.
    """
    if split not in ("train", "eval"):
        raise ConfigError(f"split {split!r}: must be train or eval")
    task = data_cfg.task
    if data_cfg.path:
        if "{split}" in data_cfg.path:
            path = data_cfg.path.replace("{split}", split)
            items = load_items(path, task, data_cfg.format, data_cfg.fields, data_cfg.on_malformed)
        else:
            path = data_cfg.path
            every = load_items(path, task, data_cfg.format, data_cfg.fields, data_cfg.on_malformed)
            if len(every) <= data_cfg.num_eval:
                raise DataError(
                    f"data file {path}: {len(every)} valid rows, not more than data.num_eval = "
                    f"{data_cfg.num_eval}; lower num_eval or give one file per split with {{split}} in the path"
                )
            random.Random(f"data:{seed}").shuffle(every)
            items = every[: data_cfg.num_eval] if split == "eval" else every[data_cfg.num_eval :]
        if not items:
            raise DataError(f"data file {path}: no valid rows for task {task}")
        return items
    if task not in GENERATORS:
        raise ConfigError(f"data.path: required for task {task} (it has no generator)")
    n_train = data_cfg.num_train if split == "train" else 0
    train, evaluation = generate_split(task, n_train, data_cfg.num_eval, seed, **data_cfg.generator)
    return train if split == "train" else evaluation
