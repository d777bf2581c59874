"""Reward plugins used by the registry and RewardService tests.

They live in an importable module (not in a test file) because the sandbox children and Ray actors
resolve plugins by name and must be able to import them. `chaos` misbehaves as the sample's
reference asks, so one group can mix good samples with a hang, an exception, NaN and a crash.
The plugins marked with a bare `@reward()` are reached by dotted path, and the faulty ones among
them (wrong signature, async, ...) are marked so that the registry gets as far as the fault;
`unmarked_length` is not a plugin at all, and the registry must refuse it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from rewards.registry import reward
from rewards.types import RewardResult


@reward("test_char_count")
def char_count(completion: str, reference: dict[str, Any], scale: float = 1.0) -> float:
    """Deterministic and cheap: the score is the completion length times `scale`."""
    return scale * len(completion)


@reward("test_exact_match")
class ExactMatch:
    """A class plugin: created once with no arguments, then called per sample."""

    def __init__(self) -> None:
        self.bonus = 0.5

    def __call__(self, completion: str, reference: dict[str, Any]) -> RewardResult:
        correct = float(completion.strip() == str(reference.get("answer", "")))
        return RewardResult(score=correct + self.bonus * correct, components={"correct": correct})


@reward("test_chaos")
def chaos(completion: str, reference: dict[str, Any]) -> float:
    """Behaves as `reference["mode"]` says: ok, pid, slow, hang, raise, nan, inf, huge, exit, sigkill."""
    mode = reference.get("mode", "ok")
    if mode == "pid":
        return float(os.getpid())
    if mode == "slow":
        time.sleep(float(reference["seconds"]))
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "raise":
        raise ValueError(f"bad completion {completion!r}")
    if mode == "nan":
        return math.nan
    if mode == "inf":
        return math.inf
    if mode == "huge":
        return 10**400  # an int no float can hold
    if mode == "exit":
        os._exit(3)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return 1.0 + len(completion) / 100


@reward()
def pause(completion: str, reference: dict[str, Any], seconds: float = 0.02) -> float:
    """Takes `seconds` and scores 0: stretches a run's steps to real-world length (the e2e Prometheus test needs
    a run that spans several of Ray's 10 s metrics report intervals)."""
    time.sleep(seconds)
    return 0.0


@reward()
def unnamed_length(completion: str, reference: dict[str, Any]) -> float:
    """Reachable only by dotted path `tests.plugins_for_tests:unnamed_length`."""
    return float(len(completion))


def unmarked_length(completion: str, reference: dict[str, Any]) -> float:
    """Callable like a reward, but never registered or marked: refused by dotted path."""
    return float(len(completion))


@reward()
def returns_text(completion: str, reference: dict[str, Any]) -> str:
    """A plugin bug: returns text instead of a score."""
    return completion


@reward()
def one_argument(completion: str) -> float:
    """A wrong signature: no room for the reference."""
    return 0.0


NOT_CALLABLE = 42


@reward()
class NeedsArguments:
    """A class plugin that cannot be created without arguments."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, completion: str, reference: dict[str, Any]) -> float:
        return float(len(completion) > self.threshold)


@reward()
async def async_reward(completion: str, reference: dict[str, Any]) -> float:
    """Never called: the registry refuses async plugins when it builds them."""
    return float(len(completion))


@reward()
class AsyncCall:
    """A class plugin whose __call__ is async: refused the same way."""

    async def __call__(self, completion: str, reference: dict[str, Any]) -> float:
        return 0.0


@reward("test_spawns_grandchild")
def spawns_grandchild(completion: str, reference: dict[str, Any]) -> float:
    """Starts a long `sleep` (its pid written to `reference["pid_file"]`), then hangs unless `reference["hang"]`
    is false, in which case it returns and leaves the `sleep` running."""
    sleeper = subprocess.Popen(["sleep", "300"])
    Path(reference["pid_file"]).write_text(str(sleeper.pid))
    while reference.get("hang", True):
        time.sleep(3600)
    return 1.0


@reward("test_allocates")
def allocates(completion: str, reference: dict[str, Any]) -> float:
    """Reserves `reference["gigabytes"]` GB in one block, never touched (so it costs no RAM where it is allowed)."""
    import numpy as np

    block = np.empty(int(reference["gigabytes"] * 1024**3), dtype=np.uint8)
    return float(block.size > 0)


HANG_S = 20.0
"""How long the plugins that hang while being built take: far past the limits their tests set."""


@reward()
class HangsWhileBuilt:
    """A class plugin whose constructor hangs (a model that never loads, a lock never released)."""

    def __init__(self) -> None:
        time.sleep(HANG_S)

    def __call__(self, completion: str, reference: dict[str, Any]) -> float:
        return 0.0


@reward("test_always_fails")
def always_fails(completion: str, reference: dict[str, Any]) -> float:
    """Fails on every sample, as a plugin with a broken dependency or a wrong field name would."""
    raise KeyError("solution")
