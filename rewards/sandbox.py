"""Plugin calls in a child process that can be killed, each bounded by a timeout.

A thread cannot be stopped, and a plugin can hang, crash the interpreter or call `os._exit`; only a
separate process can be killed and replaced. The child is started with `spawn` (no fork of a
process that holds Ray's threads) and receives the reward *spec*, not functions: it imports and
resolves the plugins by name itself, so nothing unpicklable ever crosses.

A whole group goes to the child in one message, as (sample, plugin) units, and each unit's outcome
streams back as soon as it is done. The parent waits at most `timeout_s` for each unit. When a unit
times out, the child is killed; when the child dies, the unit it was running is blamed. Either way
the units already received are kept, and the rest of the group is sent to a fresh child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from rewards.outcomes import TIMEOUT, PluginOutcome, describe_exception
from rewards.registry import CombinedReward, RewardSpec, build_from_spec

STARTUP_TIMEOUT_S = 60.0
SEND_ATTEMPTS = 3

Sample = tuple[str, Mapping[str, Any]]
Unit = tuple[int, int]


def _exit_when_parent_dies() -> None:
    """Exit if the parent goes away while a plugin hangs, so a killed actor leaves no orphan child."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(conn: Connection, spec: RewardSpec) -> None:
    """Resolve the plugins, say ready, then score (sample, plugin) units and send each outcome."""
    _exit_when_parent_dies()
    try:
        scorer = build_from_spec(spec)
    except Exception as exc:
        conn.send(("failed", describe_exception(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        samples, units = job
        for i, j in units:
            completion, reference = samples[i]
            conn.send((i, j, scorer.call(j, completion, reference)))


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker died (exit code {exitcode}, {signal.Signals(-exitcode).name})"
        except ValueError:
            pass
    return f"worker died (exit code {exitcode})"


@dataclass
class _Child:
    """The live child and its pipe end; held apart from the scorer so a finalizer can close it."""

    process: BaseProcess | None = None
    conn: Connection | None = None

    def stop(self, graceful: bool) -> int | None:
        """Stop the child (asking first when `graceful`) and return its exit code."""
        process, conn = self.process, self.conn
        self.process, self.conn = None, None
        if conn is not None and graceful:
            with contextlib.suppress(OSError):
                conn.send(None)
        if process is not None:
            process.join(timeout=2.0 if graceful else 0.0)
            if process.is_alive():
                process.kill()
            process.join(timeout=5.0)
        if conn is not None:
            conn.close()
        return None if process is None else process.exitcode


class SandboxedScorer:
    """Scores groups with the plugins of `scorer`, each call in a killable child under `timeout_s`.

    Not thread-safe: one caller at a time (a Ray actor runs one task at a time by default).
    """

    def __init__(
        self,
        scorer: CombinedReward,
        timeout_s: float,
        start_method: str = "spawn",
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.spec = scorer.spec
        self.num_plugins = len(scorer.plugins)
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.replacements = 0
        self._context = multiprocessing.get_context(start_method)
        self._child = _Child()
        self._finalizer = weakref.finalize(self, self._child.stop, False)

    def close(self) -> None:
        self._child.stop(graceful=True)

    def score(self, samples: Sequence[Sample]) -> list[list[PluginOutcome]]:
        """Outcomes per sample, per plugin; always one for every unit, whatever the plugins do."""
        units = [(i, j) for i in range(len(samples)) for j in range(self.num_plugins)]
        outcomes: dict[Unit, PluginOutcome] = {}
        position, send_failures = 0, 0
        while position < len(units):
            failure = self._start()
            if failure is None:
                remaining = units[position:]
                needed = {i: samples[i] for i, _ in remaining}
                conn = self._child.conn
                assert conn is not None
                try:
                    conn.send((needed, remaining))
                except OSError as exc:
                    self._child.stop(graceful=False)
                    send_failures += 1
                    if send_failures < SEND_ATTEMPTS:
                        continue
                    failure = f"cannot reach worker ({describe_exception(exc)})"
            if failure is not None:
                for unit in units[position:]:
                    outcomes[unit] = PluginOutcome.failed(failure)
                break
            position = self._collect(units, position, outcomes)
        return [[outcomes[(i, j)] for j in range(self.num_plugins)] for i in range(len(samples))]

    def _start(self) -> str | None:
        """Make sure a ready child exists; the reason when none could be started."""
        if self._child.process is not None and self._child.process.is_alive():
            return None
        if self._child.process is not None:
            self._child.stop(graceful=False)
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_child_main, args=(child_conn, self.spec), name="agrpo-reward-sandbox", daemon=True
        )
        process.start()
        child_conn.close()
        self._child.process, self._child.conn = process, parent_conn
        if not parent_conn.poll(self.startup_timeout_s):
            self._child.stop(graceful=False)
            return f"worker did not start within {self.startup_timeout_s:g} s"
        try:
            kind, detail = parent_conn.recv()
        except (EOFError, OSError):
            return "worker failed to start: " + _death_reason(self._child.stop(graceful=False))
        if kind != "ready":
            self._child.stop(graceful=False)
            return f"worker failed to start: {detail}"
        return None

    def _collect(self, units: list[Unit], position: int, outcomes: dict[Unit, PluginOutcome]) -> int:
        """Receive outcomes in order until the job is done or the child is lost; the next position."""
        conn = self._child.conn
        assert conn is not None
        while position < len(units):
            unit = units[position]
            start = time.perf_counter()
            if not conn.poll(self.timeout_s):
                self._child.stop(graceful=False)
                self.replacements += 1
                outcomes[unit] = PluginOutcome.failed(TIMEOUT, latency_s=time.perf_counter() - start, timed_out=True)
                return position + 1
            try:
                i, j, outcome = conn.recv()
            except (EOFError, OSError):
                reason = _death_reason(self._child.stop(graceful=False))
                self.replacements += 1
                outcomes[unit] = PluginOutcome.failed(reason, latency_s=time.perf_counter() - start)
                return position + 1
            outcomes[(i, j)] = outcome
            position += 1
        return position
