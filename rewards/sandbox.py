"""Plugin calls in a child process that can be killed, each bounded by a timeout and a memory limit.

A thread cannot be stopped, and a plugin can hang, crash the interpreter or call `os._exit`; only a
separate process can be killed and replaced. The child is started with `spawn`, or forked from
multiprocessing's fork server (the graders, whose server holds math-verify warm), never forked from a
process that holds Ray's threads. It receives a *job*, not functions: plain data from which it
imports and builds what it calls (the reward plugins by name, or a task's grader), so nothing
unpicklable ever crosses.

A whole group goes to the child in one message, as (sample, unit) pairs, and each outcome streams
back as soon as it is done. The parent waits at most `timeout_s` for each one. When a unit times
out, the child is killed; when the child dies, the unit it was running is blamed. Either way the
outcomes already received are kept, and the rest of the group is sent to a fresh child.

The child leads a process group of its own, and every stop kills that whole group, so whatever a
plugin started (a shell, a `sleep`) goes with it instead of outliving it as an orphan. The child
also runs under an address-space limit (`rewards.memory_limit_mb`): a runaway allocation fails at
once with a `memory limit` reason instead of swapping the node or running until the timeout.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from common.config import RewardsConfig
from rewards.outcomes import OUT_OF_MEMORY, TIMEOUT, PluginOutcome, describe_exception
from rewards.registry import CombinedReward, RewardSpec, build_from_spec

STARTUP_TIMEOUT_S = 60.0
SEND_ATTEMPTS = 3
GRACEFUL_EXIT_S = 2.0
DEFAULT_MEMORY_LIMIT_MB: int = RewardsConfig.model_fields["memory_limit_mb"].default
MEMORY_EXIT_CODE = 75
"""Exit status of a child whose own machinery (not a plugin call) ran out of memory."""

Sample = tuple[str, Mapping[str, Any]]
Unit = tuple[int, int]
UnitCall = Callable[[int, str, Mapping[str, Any]], PluginOutcome]


class SandboxJob(Protocol):
    """What a child runs: picklable data with `width` units per sample, built into a call in the child."""

    @property
    def width(self) -> int: ...

    def build(self) -> UnitCall: ...


@dataclass(frozen=True)
class PluginJob:
    """The reward plugins of a spec: unit j of a sample is plugin j."""

    spec: RewardSpec
    width: int

    def build(self) -> UnitCall:
        return build_from_spec(self.spec).call


def memory_limit_reason(memory_limit_mb: int) -> str:
    return f"memory limit ({memory_limit_mb} MB) exceeded"


def _lead_own_process_group() -> None:
    """Become the leader of a new session, so that the parent can kill everything this child starts."""
    with contextlib.suppress(OSError):
        os.setsid()


def _limit_memory(memory_limit_mb: int) -> None:
    """Cap this process's address space (inherited by what it starts); 0 leaves it unlimited."""
    if memory_limit_mb <= 0:
        return
    limit = memory_limit_mb * 1024**2
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _exit_when_parent_dies() -> None:
    """Exit, with the processes a plugin started, if the parent goes away while a plugin hangs."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        if os.getpgid(0) == os.getpid():  # never signal a group this child does not lead
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(conn: Connection, job: SandboxJob, memory_limit_mb: int) -> None:
    """Build the job, say ready, then run (sample, unit) pairs and send each outcome."""
    _lead_own_process_group()
    _limit_memory(memory_limit_mb)
    _exit_when_parent_dies()
    try:
        call = job.build()
    except MemoryError:
        conn.send(("failed", memory_limit_reason(memory_limit_mb)))
        return
    except Exception as exc:
        conn.send(("failed", describe_exception(exc)))
        return
    conn.send(("ready", None))
    try:
        _serve(conn, call, memory_limit_mb)
    except MemoryError:
        os._exit(MEMORY_EXIT_CODE)


def _serve(conn: Connection, call: UnitCall, memory_limit_mb: int) -> None:
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
            outcome = call(j, completion, reference)
            if outcome.error == OUT_OF_MEMORY and memory_limit_mb > 0:
                outcome = replace(outcome, error=memory_limit_reason(memory_limit_mb))
            conn.send((i, j, outcome))


def _death_reason(exitcode: int | None, memory_limit_mb: int) -> str:
    if exitcode == MEMORY_EXIT_CODE and memory_limit_mb > 0:
        return f"worker died: {memory_limit_reason(memory_limit_mb)}"
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker died (exit code {exitcode}, {signal.Signals(-exitcode).name})"
        except ValueError:
            pass
    return f"worker died (exit code {exitcode})"


def _kill_group(process: BaseProcess) -> None:
    """SIGKILL the child's process group (the child and all it started), then the child itself.

    Called before the child is reaped, so its pid, and with it the group id, cannot have been reused.
    """
    pid = process.pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


@dataclass
class _Child:
    """The live child and its pipe end; held apart from the sandbox so a finalizer can close it."""

    process: BaseProcess | None = None
    conn: Connection | None = None

    def stop(self, graceful: bool) -> int | None:
        """Stop the child (asking first when `graceful`), kill its process group, return its exit code."""
        process, conn = self.process, self.conn
        self.process, self.conn = None, None
        if conn is not None and graceful:
            with contextlib.suppress(OSError):
                conn.send(None)
        if process is not None:
            if graceful:
                wait([process.sentinel], timeout=GRACEFUL_EXIT_S)
            _kill_group(process)
            process.join(timeout=5.0)
        if conn is not None:
            conn.close()
        return None if process is None else process.exitcode


class Sandbox:
    """Runs a job's units on samples in a killable child, each unit under `timeout_s`.

    Not thread-safe: one caller at a time (a Ray actor runs one task at a time by default).
    """

    def __init__(
        self,
        job: SandboxJob,
        timeout_s: float,
        start_method: str = "spawn",
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    ) -> None:
        self.job = job
        self.width = job.width
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.replacements = 0
        self._context = multiprocessing.get_context(start_method)
        self._child = _Child()
        self._finalizer = weakref.finalize(self, self._child.stop, False)

    def close(self) -> None:
        self._child.stop(graceful=True)

    def score(self, samples: Sequence[Sample]) -> list[list[PluginOutcome]]:
        """Outcomes per sample, per unit; always one for every unit, whatever the job does."""
        units = [(i, j) for i in range(len(samples)) for j in range(self.width)]
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
        return [[outcomes[(i, j)] for j in range(self.width)] for i in range(len(samples))]

    def _start(self) -> str | None:
        """Make sure a ready child exists; the reason when none could be started."""
        if self._child.process is not None and self._child.process.is_alive():
            return None
        if self._child.process is not None:
            self._child.stop(graceful=False)
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_child_main,
            args=(child_conn, self.job, self.memory_limit_mb),
            name="agrpo-reward-sandbox",
            daemon=True,
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
            exitcode = self._child.stop(graceful=False)
            return "worker failed to start: " + _death_reason(exitcode, self.memory_limit_mb)
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
                reason = _death_reason(self._child.stop(graceful=False), self.memory_limit_mb)
                self.replacements += 1
                outcomes[unit] = PluginOutcome.failed(reason, latency_s=time.perf_counter() - start)
                return position + 1
            outcomes[(i, j)] = outcome
            position += 1
        return position


class SandboxedScorer(Sandbox):
    """Scores groups with the plugins of `scorer`: unit j of a sample is plugin j."""

    def __init__(
        self,
        scorer: CombinedReward,
        timeout_s: float,
        start_method: str = "spawn",
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    ) -> None:
        super().__init__(
            PluginJob(scorer.spec, len(scorer.plugins)), timeout_s, start_method, startup_timeout_s, memory_limit_mb
        )
        self.spec = scorer.spec
        self.num_plugins = len(scorer.plugins)
