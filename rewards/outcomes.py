"""What one plugin call produced, and how a sample's plugin calls combine into its reward.

Both the in-process scorer and the sandbox child call plugins through `call_plugin`, so a plugin is
judged by the same rules wherever it runs: an exception, a non-finite score, a value that is not a
number, a plugin-reported error, or running out of memory all become score 0 with a reason. `combine` then applies the
weights; one failed plugin fails the whole sample (score 0), because partial credit from the
plugins that did run (say, format without correctness) would be a reward the config never asked for.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewards.types import RewardResult

ERROR_MAX_CHARS = 300
TIMEOUT = "timeout"
NON_FINITE = "non-finite score"
OUT_OF_MEMORY = "out of memory (MemoryError)"
"""A plugin's MemoryError; the sandbox child, which runs under a memory limit, names the limit instead."""


@dataclass
class PluginOutcome:
    """One plugin on one sample: its score (0 on failure), its own components, and why it failed.

    `timed_out` is kept apart from `error` so that timeouts and other failures are counted separately.
    """

    score: float
    latency_s: float
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    timed_out: bool = False

    @classmethod
    def failed(cls, error: str, latency_s: float = 0.0, timed_out: bool = False) -> PluginOutcome:
        return cls(score=0.0, latency_s=latency_s, error=error, timed_out=timed_out)


def describe_exception(exc: BaseException) -> str:
    """`Type: message` on one line and bounded, so a huge or multi-line message cannot flood logs."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:ERROR_MAX_CHARS]


def _as_score(value: Any) -> float | None:
    """A real number as float (one too large for a float is +-inf); None for anything else."""
    if not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:  # 10**400, a huge Fraction
        return math.inf if value > 0 else -math.inf


def _validate(value: Any) -> tuple[float, dict[str, float]] | str:
    """The plugin's return value as (score, components), or the reason it is not acceptable."""
    components: dict[str, float] = {}
    if isinstance(value, RewardResult):
        if value.error:
            return " ".join(str(value.error).split())[:ERROR_MAX_CHARS]
        for key, part in value.components.items():
            number = _as_score(part)
            if number is None or not math.isfinite(number):
                return f"component {key!r} = {part!r} is not a finite number"
            components[str(key)] = number
        value = value.score
    score = _as_score(value)
    if score is None:
        return f"returned {type(value).__name__}, expected a float or RewardResult"
    if not math.isfinite(score):
        return f"{NON_FINITE} ({score})"
    return score, components


def call_plugin(
    fn: Callable[..., Any], completion: str, reference: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> PluginOutcome:
    """Call one plugin and judge its result; never raises for what the plugin does wrong."""
    start = time.perf_counter()
    try:
        value = fn(completion, reference, **kwargs)
    except MemoryError:
        return PluginOutcome.failed(OUT_OF_MEMORY, time.perf_counter() - start)
    except Exception as exc:
        return PluginOutcome.failed(describe_exception(exc), time.perf_counter() - start)
    latency = time.perf_counter() - start
    try:
        checked = _validate(value)
    except Exception as exc:  # a result object whose attributes themselves raise
        return PluginOutcome.failed(f"invalid result: {describe_exception(exc)}", latency)
    if isinstance(checked, str):
        return PluginOutcome.failed(checked, latency)
    score, components = checked
    return PluginOutcome(score=score, latency_s=latency, components=components)


def combine(labels: Sequence[str], weights: Sequence[float], outcomes: Sequence[PluginOutcome]) -> RewardResult:
    """Weighted sum of the plugin scores; any failed plugin makes the sample score 0 with its reason (per
    plugin in `plugin_errors`, joined as `label: reason; ...` in `error`).

    Components always hold every plugin's own score under its label (0 for a failed one) so their keys
    are the same for every sample, plus each plugin's components as `label/name`.
    """
    components: dict[str, float] = {}
    failed: dict[str, str] = {}
    total = 0.0
    for label, weight, outcome in zip(labels, weights, outcomes, strict=True):
        components[label] = outcome.score
        for key, part in outcome.components.items():
            components[f"{label}/{key}"] = part
        if outcome.error is not None:
            failed[label] = outcome.error
        total += weight * outcome.score
    if failed:
        error = "; ".join(f"{label}: {reason}" for label, reason in failed.items())
        return RewardResult(score=0.0, components=components, error=error, plugin_errors=failed)
    if not math.isfinite(total):
        return RewardResult(score=0.0, components=components, error=f"combined: {NON_FINITE} ({total})")
    return RewardResult(score=total, components=components)
