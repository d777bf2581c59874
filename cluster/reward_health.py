"""Reward plugins that keep failing: a warning naming the plugin, and a stop when a whole step failed.

A failed plugin call scores its sample 0 and the run goes on (rewards/outcomes.py). One failure is noise; a
plugin that fails on most samples (a missing dependency, a field it reads under the wrong name) trains the
policy on zeros, which otherwise shows only in a counter. `RewardHealth` keeps each plugin's errors and calls
over the last `rewards.error_window` steps and warns once the fraction that failed reaches
`rewards.error_warn_rate`, with the plugin's last error; a step in which every sample failed stops the run
before the learner trains on it, unless `rewards.stop_when_all_fail` is false.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from common.errors import UserError
from common.record import RolloutGroup


class RewardsFailed(UserError):
    """Every sample of a step failed to score."""


@dataclass
class StepCount:
    """One step's calls and errors per plugin (each sample is one call of every plugin)."""

    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Verdict:
    """What the driver does after a step's rewards: print `warnings`, and stop with `stop` when it is set."""

    warnings: list[str] = field(default_factory=list)
    stop: str | None = None


class RewardHealth:
    def __init__(self, labels: list[str], window: int, warn_rate: float, stop_when_all_fail: bool) -> None:
        self.labels = list(labels)
        self.window = window
        self.warn_rate = warn_rate
        self.stop_when_all_fail = stop_when_all_fail
        self.recent: deque[StepCount] = deque(maxlen=window)
        self.last_error: dict[str, str] = {}
        self.steps_since_warning: dict[str, int] = {}

    def rate(self, label: str) -> float:
        """The fraction of `label`'s calls over the window that failed (0 before any call)."""
        calls = sum(step.calls for step in self.recent)
        errors = sum(step.errors.get(label, 0) for step in self.recent)
        return errors / calls if calls else 0.0

    def update(self, step: int, groups: list[RolloutGroup]) -> Verdict:
        """Count the scored `groups` of `step` (as the metrics lines number it) and judge the plugins."""
        count, failed, samples, example = StepCount(), 0, 0, None
        for group in groups:
            for i, error in enumerate(group.reward_errors):
                samples += 1
                if error is not None:
                    failed += 1
                    example = example or error
                plugin_errors = group.plugin_errors[i] if i < len(group.plugin_errors) else {}
                for label, reason in plugin_errors.items():
                    count.errors[label] = count.errors.get(label, 0) + 1
                    self.last_error[label] = reason
        count.calls = samples
        self.recent.append(count)
        verdict = Verdict(warnings=self._warnings(step))
        if samples and failed == samples:
            worst = max(count.errors, key=count.errors.__getitem__, default=None)
            cause = f"{worst}: {self.last_error[worst]}" if worst is not None else example
            if self.stop_when_all_fail:
                verdict.stop = (
                    f"every one of the {samples} samples of step {step} failed to score ({cause}); the run stops "
                    "before training on them: fix the plugin, or set rewards.stop_when_all_fail=false to train on "
                    "with those samples scored 0"
                )
            else:
                verdict.warnings.append(
                    f"every one of the {samples} samples of step {step} failed to score ({cause}); training on "
                    "with them scored 0 (rewards.stop_when_all_fail = false)"
                )
        return verdict

    def _warnings(self, step: int) -> list[str]:
        """A warning per plugin at or above the rate: when it gets there, then once a window while it stays."""
        warnings = []
        for label in self.labels:
            rate = self.rate(label)
            if rate < self.warn_rate:
                self.steps_since_warning.pop(label, None)
                continue
            since = self.steps_since_warning.get(label)
            if since is None or since >= self.window:
                steps = len(self.recent)
                warnings.append(
                    f"reward plugin {label!r} failed on {rate:.0%} of its calls over the last {steps} step"
                    f"{'s' if steps > 1 else ''} (up to step {step}); last error: {self.last_error.get(label)}"
                )
                since = 0
            self.steps_since_warning[label] = since + 1
        return warnings
