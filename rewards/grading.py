"""Accuracy grading with a time limit per item, in a child process that is killed when an item exceeds it.

A grader reads untrusted model output, and some answers make SymPy (inside math-verify) compute for
minutes in C code that nothing in the process can interrupt. So every path that grades (`agrpo score`,
`agrpo eval`, the held-out evaluation in a rollout worker, the driver's success rate) grades through
the reward sandbox's machinery (`rewards.sandbox`): one child grades many items; an item past
`rewards.grade_timeout_s` gets its child killed and replaced, and is graded wrong (0 of its
denominator) and counted as a timeout. The child is built before its first item (math-verify and
SymPy imported, one answer verified), so the limit times grading alone, not start-up.

Two protocols: `agrpo`, our graders (`rewards.tasks.<task>.grade`), and `d1`, d1's evaluation parser
decision for decision (`rewards.d1_protocol`). See docs/rewards.md for where they differ.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.config import RewardsConfig
from common.errors import UserError
from rewards import d1_protocol
from rewards.outcomes import PluginOutcome, call_plugin
from rewards.sandbox import DEFAULT_MEMORY_LIMIT_MB, STARTUP_TIMEOUT_S, Sandbox, UnitCall
from rewards.tasks import load_task
from rewards.types import RewardResult

PROTOCOLS = ("agrpo", "d1")
GRADE_TIMEOUT_S: float = RewardsConfig.model_fields["grade_timeout_s"].default
DENOMINATOR = "denominator"
NOT_STARTED = ("worker failed to start", "worker did not start")
START_METHOD = "forkserver"
FORK_SERVER_PRELOAD = ["rewards.grading_warmup"]

GradeFn = Callable[[str, dict[str, Any]], tuple[float, float]]


def grade_function(task: str, protocol: str = "agrpo") -> GradeFn:
    """The `(completion, reference) -> (numerator, denominator)` grader of a task under a protocol."""
    if protocol not in PROTOCOLS:
        raise UserError(f"protocol {protocol!r}: unknown; choose {' or '.join(PROTOCOLS)}")
    grade = load_task(task).grade
    if protocol == "agrpo":
        return grade
    if task not in d1_protocol.GRADERS:
        raise UserError(
            f"protocol 'd1' with task {task!r}: d1's evaluation parser grades only {', '.join(d1_protocol.GRADERS)}"
        )
    return d1_protocol.GRADERS[task]


@dataclass(frozen=True)
class Grade:
    """One item: `num` of `den`, and why it got no verdict (`error`) when it timed out or failed."""

    num: float
    den: float
    error: str | None = None
    timed_out: bool = False
    reward: PluginOutcome | None = None
    """The training reward of the completion, when the grader was built with a reward scheme."""


@dataclass(frozen=True)
class GradeJob:
    """What a grading child runs: unit 0 grades an item; with a reward `scheme`, unit 1 is its reward."""

    task: str
    protocol: str = "agrpo"
    scheme: str | None = None

    @property
    def width(self) -> int:
        return 1 if self.scheme is None else 2

    def build(self) -> UnitCall:
        grade = grade_function(self.task, self.protocol)
        reward = load_task(self.task).reward

        def as_result(completion: str, reference: dict[str, Any]) -> RewardResult:
            num, den = grade(completion, reference)
            return RewardResult(score=num, components={DENOMINATOR: den})

        def call(unit: int, completion: str, reference: Mapping[str, Any]) -> PluginOutcome:
            if unit == 0:
                return call_plugin(as_result, completion, reference, {})
            return call_plugin(reward, completion, reference, {"scheme": self.scheme})

        if self.task == "math" and (self.protocol == "agrpo" or self.scheme is not None):
            _warm_up_math_verify()
        return call


def _warm_up_math_verify() -> None:
    """Import math-verify and SymPy and verify one answer, so an item's time limit times grading alone."""
    from rewards.math_equiv import equivalent

    equivalent("x+1", "1+x")


class TimedGrader:
    """Grades items in one long-lived child, each under `timeout_s`; `timeouts` counts the items killed.

    Thread-safe (one grading at a time). Close it, or use it as a context manager, to stop the child.
    """

    def __init__(
        self,
        task: str,
        protocol: str = "agrpo",
        timeout_s: float = GRADE_TIMEOUT_S,
        scheme: str | None = None,
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self._grade = grade_function(task, protocol)  # checks task and protocol here, not in the child
        self.task, self.protocol, self.timeout_s = task, protocol, timeout_s
        self.timeouts = 0
        self._lock = threading.Lock()
        # Takes effect when the process's fork server starts, i.e. with its first grading child.
        multiprocessing.get_context(START_METHOD).set_forkserver_preload(FORK_SERVER_PRELOAD)
        self._sandbox = Sandbox(
            GradeJob(task, protocol, scheme),
            timeout_s,
            start_method=START_METHOD,
            startup_timeout_s=startup_timeout_s,
            memory_limit_mb=memory_limit_mb,
        )

    def __enter__(self) -> TimedGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sandbox.close()

    def grade(self, texts: Sequence[str], references: Sequence[Mapping[str, Any]]) -> list[Grade]:
        """One Grade per item, in order; an item that timed out or failed is 0 of its unanswered denominator."""
        if len(texts) != len(references):
            raise ValueError(f"{len(texts)} completions but {len(references)} references; need one each")
        with self._lock:
            outcomes = self._sandbox.score(list(zip(texts, references, strict=True)))
            unstarted = next((u[0].error for u in outcomes if (u[0].error or "").startswith(NOT_STARTED)), None)
            if unstarted is not None:
                # Not a verdict on any item: scoring every item wrong would silently report accuracy 0.
                raise UserError(
                    f"the grading child process could not start ({unstarted}); a script that calls agrpo's "
                    "evaluation or grading must guard its entry point with `if __name__ == '__main__':`"
                )
            grades = [self._as_grade(units, reference) for units, reference in zip(outcomes, references, strict=True)]
            self.timeouts += sum(g.timed_out for g in grades)
        return grades

    def _as_grade(self, units: list[PluginOutcome], reference: Mapping[str, Any]) -> Grade:
        graded, reward = units[0], (units[1] if len(units) > 1 else None)
        if graded.error is None:
            return Grade(graded.score, graded.components[DENOMINATOR], reward=reward)
        return Grade(0.0, self.unanswered_denominator(reference), graded.error, graded.timed_out, reward)

    def unanswered_denominator(self, reference: Mapping[str, Any]) -> float:
        """What an item without a verdict counts for: the denominator of an empty completion (1, or
        Sudoku's blank cells), computed here, where an empty completion costs nothing to grade."""
        try:
            return float(self._grade("", dict(reference))[1])
        except Exception:
            return 1.0


@functools.cache
def shared_grader(task: str, protocol: str, timeout_s: float, memory_limit_mb: int) -> TimedGrader:
    """One grader per setting for the whole process, so repeated calls reuse its child."""
    return TimedGrader(task, protocol, timeout_s, memory_limit_mb=memory_limit_mb)


def grade_items(
    task: str,
    texts: Sequence[str],
    references: Sequence[Mapping[str, Any]],
    protocol: str = "agrpo",
    timeout_s: float = GRADE_TIMEOUT_S,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
) -> list[Grade]:
    """Grades of the items on this process's shared grader for the setting (started on first use)."""
    return shared_grader(task, protocol, float(timeout_s), memory_limit_mb).grade(texts, references)


def grade_all(
    task: str,
    texts: Sequence[str],
    references: Sequence[Mapping[str, Any]],
    protocol: str = "agrpo",
    timeout_s: float = GRADE_TIMEOUT_S,
) -> list[tuple[float, float]]:
    """(numerator, denominator) per item under the time limit; an item past it counts as wrong."""
    return [(g.num, g.den) for g in grade_items(task, texts, references, protocol, timeout_s)]
