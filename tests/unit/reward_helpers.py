"""Helpers for the reward and task tests: a hang detector and the optional shared benchmark files."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path("/work/shared/data")
DEADLINE_S = 1.0
"""The issue's bound for grading hostile input; a call still running then fails the test."""


def finishes(fn: Callable[..., Any], *args: Any, deadline_s: float = DEADLINE_S) -> Any:
    """Run `fn(*args)` in a daemon thread and return its result; fail the test if it is still running
    after the deadline (a hang then fails the test instead of hanging the suite)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {deadline_s} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def shared_file(name: str) -> Path:
    """A shared benchmark file, or skip: a user's clone does not have them."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path
