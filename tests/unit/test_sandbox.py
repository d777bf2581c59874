"""The sandbox child against plugins that escape it: a grandchild process, and a huge allocation.

No Ray: the sandbox is a plain child process (the RewardService tests cover it inside reward actors).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from common.config import RewardsConfig
from rewards.registry import CombinedReward, build_reward_fn
from rewards.sandbox import SandboxedScorer, memory_limit_reason

TIMEOUT_S = 1.0
GONE_WITHIN_S = 10.0
"""How long a killed process may take to disappear from the process table (a wait, not a timing claim)."""


def scorer(name: str) -> CombinedReward:
    return build_reward_fn(RewardsConfig(plugins=[{"name": name}], modules=["tests.plugins_for_tests"]))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("hang", [True, False], ids=["timed-out", "returned"])
def test_processes_a_plugin_starts_do_not_outlive_its_child(tmp_path: Path, hang: bool) -> None:
    """A hung plugin's grandchild dies with the killed child; a returning plugin's dies when the sandbox closes."""
    pid_file = tmp_path / "sleeper.pid"
    sandbox = SandboxedScorer(scorer("test_spawns_grandchild"), timeout_s=TIMEOUT_S)
    try:
        [[outcome]] = sandbox.score([("x", {"pid_file": str(pid_file), "hang": hang})])
        sleeper = int(pid_file.read_text())
        if hang:
            assert outcome.timed_out and outcome.error == "timeout"
            assert _gone(sleeper), f"grandchild {sleeper} outlived the timeout"
        else:
            assert outcome.error is None and _alive(sleeper)
    finally:
        sandbox.close()
    assert _gone(sleeper), f"grandchild {sleeper} outlived the sandbox"


def test_an_allocation_past_the_memory_limit_fails_at_once_with_a_reason() -> None:
    sandbox = SandboxedScorer(scorer("test_allocates"), timeout_s=30.0, memory_limit_mb=1024)
    try:
        outcomes = sandbox.score([("x", {"gigabytes": 16}), ("x", {"gigabytes": 0.01})])
    finally:
        sandbox.close()
    [[huge], [small]] = outcomes
    assert huge.score == 0.0 and huge.error == memory_limit_reason(1024) == "memory limit (1024 MB) exceeded"
    assert not huge.timed_out
    assert small.error is None and small.score == 1.0
    assert sandbox.replacements == 0, "a refused allocation leaves the child usable"


def test_the_memory_limit_comes_from_the_config() -> None:
    assert RewardsConfig().memory_limit_mb == 8192
    sandbox = SandboxedScorer(scorer("test_allocates"), timeout_s=TIMEOUT_S)
    assert sandbox.memory_limit_mb == 8192
