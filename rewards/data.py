"""Task items from local files (JSONL, JSON, CSV, parquet, `save_to_disk` datasets) or the generators.

Rows are mapped onto the task's fields (config `data.fields`, else the column names the task
accepts, including those of the shared benchmark files: Countdown `input`/`output`, Sudoku
`Puzzle`/`Solution`) and checked by the task's `check_row`. A column name with dots reads a nested
value (`reward_model.ground_truth`, as in verl's parquet files) when the row has no column of that
exact name. A row that fails is never dropped silently: it is reported as `file:line: reason` (the
row number for parquet and datasets) and skipped, or raises `DataError` when `on_malformed` is `fail`.

Splits are named by `data.train_split` / `data.eval_split` (`train` / `eval` by default; the Hugging
Face hub's GSM8K and MATH call the held-out split `test`): the name replaces `{split}` in a path, and
selects the split of a `save_to_disk` DatasetDict.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from common.errors import ConfigError, DataError, value_problem
from rewards.generators import generate_split
from rewards.tasks import load_task
from rewards.tasks.base import RowError, Task

SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
MAX_WARNINGS = 20
SNIFF_BYTES = 8192


@dataclass
class LoadResult:
    """The rows that loaded, the line (or row number) each came from, and `file:line: reason` per skip."""

    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def column_value(row: dict[str, Any], column: str) -> Any:
    """The row's value in `column`, or None. A name with dots that is not a column of its own is a path into
    nested mappings: `reward_model.ground_truth` is `row["reward_model"]["ground_truth"]`."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def normalise_row(row: dict[str, Any], task: Task, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The row with the task's fields under our names, checked by the task; other columns kept.

    A field is read from the column `data.fields` names for it, else from the first of the task's
    accepted column names (`COLUMNS`, default the field's own name) that the row has. A top-level
    column read as a field is replaced by the field; a nested one stays where it is, beside it.
    """
    fields = fields or {}
    out = dict(row)
    found: dict[str, Any] = {}
    for name in dict.fromkeys([*task.fields, *task.columns]):
        columns = (fields[name],) if name in fields else task.columns.get(name, (name,))
        column = next((c for c in columns if column_value(row, c) is not None), None)
        if column is None:
            if name in task.fields:
                raise RowError(f"missing field {name!r} (column {' or '.join(map(repr, columns))})")
            continue
        found[name] = column_value(row, column)
        out.pop(column, None)
    out.update(task.check_row(found))
    return out


def detect_format(path: Path, format: str) -> str:
    """`format` as configured (the schema allows only known ones), or the one the path's suffix names."""
    if format != "auto":
        return format
    if path.is_dir():
        return "hf_disk"
    if path.suffix.lower() in SUFFIXES:
        return SUFFIXES[path.suffix.lower()]
    raise DataError(f"data file {path}: cannot tell the format from {path.suffix!r}; set data.format")


def _check_text(path: Path, kind: str) -> None:
    """Refuse a file that is not text at all (an archive, a parquet file named .jsonl, UTF-16) with one line,
    instead of one skipped "row" per stretch of noise: a NUL byte near the start, or a first line that is not
    UTF-8. A bad line further on is that row's problem."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"data file {path}: binary or UTF-16, not {kind} text (a NUL byte at offset {nul}); data files are UTF-8"
        )
    first = head.split(b"\n", 1)[0]
    try:
        first.decode("utf-8")
    except UnicodeDecodeError as err:
        if first is not head or err.start < len(head) - 3:  # not just a character cut by the end of the sample
            raise DataError(
                f"data file {path}: not UTF-8 {kind} text (byte 0x{head[err.start]:02x} at offset {err.start})"
            ) from None


def _json_problem(err: ValueError | RecursionError) -> str:
    """Why a JSON text does not load, on one line."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return err.msg
    return value_problem(err)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    _check_text(path, "JSONL")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield lineno, RowError(f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as err:
                row = RowError(f"not valid JSON ({_json_problem(err)})")
            yield lineno, row


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    _check_text(path, "JSON")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"data file {path}: not UTF-8 JSON text (byte offset {err.start})") from None
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
        except (ValueError, RecursionError) as err:
            raise DataError(f"{path}:{line}: not valid JSON ({_json_problem(err)})") from None
        yield line, value


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    _check_text(path, "CSV")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:  # e.g. a field past csv's 128 KB limit; the reader goes on after the line
                yield reader.line_num + 1, RowError(f"not valid CSV ({err})")
                continue
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{reader.line_num + 1}: not UTF-8 text (byte 0x{err.object[err.start]:02x})"
                ) from None
            if None in row:
                yield reader.line_num, RowError("more fields than the header")
            elif any(v is None for v in row.values()):
                yield reader.line_num, RowError("fewer fields than the header")
            else:
                yield reader.line_num, row


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def dataset_splits(path: Path) -> list[str]:
    """The split names of a `save_to_disk` DatasetDict directory (from its dataset_dict.json), else none."""
    index = path / "dataset_dict.json"
    if not index.is_file():
        return []
    try:
        splits = json.loads(index.read_text()).get("splits", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return []
    return [str(name) for name in splits] if isinstance(splits, list) else []


def _table_rows(path: Path, format: str, split: str | None = None) -> Iterator[tuple[int, Any]]:
    if format == "parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others for a file it cannot read
            raise DataError(f"data file {path}: not a readable parquet file ({_first_line(err)})") from None
    else:
        import datasets

        try:
            data = datasets.load_from_disk(str(path))
        except Exception as err:  # datasets raises FileNotFoundError for a directory that is not a dataset
            raise DataError(
                f"data directory {path}: not a dataset saved with save_to_disk ({_first_line(err)}); point "
                "data.path at a data file or such a directory"
            ) from None
        if isinstance(data, datasets.DatasetDict):
            if split is not None and split not in data:
                raise DataError(f"data directory {path}: has no split {split!r}; it holds {', '.join(data)}")
            if split is None and len(data) != 1:
                raise DataError(
                    f"data directory {path}: holds splits {', '.join(data)}; name the two to use in "
                    f"data.train_split and data.eval_split, or point data.path at one of them ({path}/<split>)"
                )
            data = data[split] if split is not None else next(iter(data.values()))
        rows = iter(data)
    yield from enumerate(rows, 1)


def _readable(path: Path, rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """`rows`, with an OS error while reading (permissions, an I/O error) as one line."""
    try:
        yield from rows
    except OSError as err:
        raise DataError(f"data file {path}: cannot read ({err.strerror or _first_line(err)})") from None


def read_items(
    path: str | Path,
    task: str,
    format: str = "auto",
    fields: dict[str, str] | None = None,
    on_malformed: str = "skip",
    require: Sequence[str] = (),
    split: str | None = None,
) -> LoadResult:
    """Items of `task` from a file, plus `file:line: reason` for every skipped row.

    `require` names further columns a row must have (e.g. `completion` for scoring). `format` and
    `on_malformed` take the values the schema allows for `data.format` and `data.on_malformed`.
    `split` picks a split of a `save_to_disk` DatasetDict (rows are then reported as `<dir>/<split>:row`).
    """
    loaded = load_task(task)
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p}: not found")
    kind = detect_format(p, format)
    if p.is_dir() != (kind == "hf_disk"):
        expected = "a directory saved with save_to_disk" if kind == "hf_disk" else f"a {kind} file"
        raise DataError(
            f"data file {p}: is {'a directory' if p.is_dir() else 'a file'}, data.format {kind} needs {expected}"
        )
    readers = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows}
    rows = readers[kind](p) if kind in readers else _table_rows(p, kind, split)
    if split is not None and kind == "hf_disk":
        p = p / split
    result = LoadResult()
    for line, row in _readable(p, rows):
        try:
            if isinstance(row, RowError):
                raise row
            if not isinstance(row, dict):
                raise RowError(f"not an object but {type(row).__name__}")
            missing = [name for name in require if row.get(name) is None]
            if missing:
                raise RowError(f"missing field {missing[0]!r}")
            result.items.append(normalise_row(row, loaded, fields))
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
    split: str | None = None,
) -> list[dict[str, Any]]:
    """Items of `task` from a file; malformed rows are reported on stderr and skipped, or fatal."""
    result = read_items(path, task, format, fields, on_malformed, split=split)
    report_skipped(result, path)
    return result.items


def load_task_items(data_cfg: Any, split: Literal["train", "eval"], seed: int) -> list[dict[str, Any]]:
    """The items of one split as configured.

    With `data.path`: a path containing `{split}` names one file per split (`{split}` becomes
    `data.train_split` or `data.eval_split`); a `save_to_disk` DatasetDict holding both of those
    splits gives each; otherwise the file is shuffled with the seed, its first `num_eval` rows are
    the eval split and the rest the train split. Without a path the task's generator makes
    `num_train`/`num_eval` items.
    """
    task = data_cfg.task
    name = data_cfg.train_split if split == "train" else data_cfg.eval_split
    if data_cfg.path:
        read = {"format": data_cfg.format, "fields": data_cfg.fields, "on_malformed": data_cfg.on_malformed}
        named = dataset_splits(Path(data_cfg.path)) if data_cfg.format in ("auto", "hf_disk") else []
        if "{split}" in data_cfg.path:
            path = data_cfg.path.replace("{split}", name)
            items = load_items(path, task, **read)
        elif {data_cfg.train_split, data_cfg.eval_split} <= set(named):
            path = f"{data_cfg.path}/{name}"
            items = load_items(data_cfg.path, task, **read, split=name)
        else:
            path = data_cfg.path
            every = load_items(path, task, **read)
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
    if load_task(task).generate is None:
        raise ConfigError(f"data.path: required for task {task} (it has no generator)")
    n_train = data_cfg.num_train if split == "train" else 0
    train, evaluation = generate_split(task, n_train, data_cfg.num_eval, seed, **data_cfg.generator)
    return train if split == "train" else evaluation
