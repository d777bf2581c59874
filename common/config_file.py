"""Reading a YAML config file into a plain mapping, safely: any file a user points at, or an attacker hands them,
ends in the mapping or in one line that says what is wrong with it (missing, too big, not UTF-8, not YAML, an alias
bomb, nested too deep); common/config.py validates the mapping against the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError, value_problem

MAX_CONFIG_BYTES = 4 * 1024**2
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_VALUES = 100_000
"""Bounds of a config document: recipes are a few KB, a few levels deep, a few hundred values. Past them a
file is a mistake or an attack (a YAML alias bomb expands a few lines into billions of values, and deep
nesting overflows the parser's stack), and validating or printing it would take minutes or crash."""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _config_text(p: Path) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark allowed); size and encoding problems as one line."""
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p}: {size} bytes, more than a config can be ({MAX_CONFIG_BYTES} bytes)")
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf16 = " (it starts with a UTF-16 byte-order mark)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"config file {p}: not UTF-8 text{utf16}, byte 0x{raw[err.start]:02x} at offset {err.start}; "
            "save it as UTF-8"
        ) from None


def check_document(data: Any, source: str) -> None:
    """Refuse a document nested deeper than MAX_CONFIG_DEPTH or holding more than MAX_CONFIG_VALUES values,
    counting every alias where it is used. The walk stops at the first bound, so it is quick on any input."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    values = 0
    while stack:
        node, depth = stack.pop()
        values += 1
        if values > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{source}: more than {MAX_CONFIG_VALUES} values (counting each use of a YAML alias); a config "
                "needs far fewer"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_CONFIG_DEPTH} levels deep; a config needs far fewer")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list | tuple | set):
            stack.extend((child, depth + 1) for child in node)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning file, encoding, syntax and size problems into one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p}: not found")
    text = _config_text(p)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"config file {p}: nested too deeply to parse; a config needs a few levels") from None
    except ValueError as exc:  # a value YAML cannot construct: a date like 2024-13-01, an int past 4300 digits
        raise ConfigError(f"config file {p}: not valid YAML ({value_problem(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping, got {type(data).__name__}")
    check_document(data, f"config file {p}")
    return data
