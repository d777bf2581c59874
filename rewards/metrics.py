"""Per-plugin reward counters: plain numbers for `stats()`, and the `agrpo_reward_*` Ray metrics.

Ray metrics go to Prometheus but cannot be read back in a test or by the driver, so every outcome is
also added to a `RewardStats`, a plain dict-of-counters that travels with each scored group. The
service sums the stats of the groups it delivers, which is why its totals stay exact when an actor
dies mid-group and the group is scored again by its replacement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.metrics import RoleMetrics
from rewards.outcomes import PluginOutcome

TAG_KEYS = ("plugin",)


@dataclass
class PluginStats:
    """Counters of one plugin. `errors` excludes timeouts; every call is in `calls`."""

    calls: int = 0
    timeouts: int = 0
    errors: int = 0
    score_sum: float = 0.0
    latency_sum_s: float = 0.0

    @property
    def mean_score(self) -> float:
        """Mean over all calls, failures counting 0: the reward the learner actually saw."""
        return self.score_sum / self.calls if self.calls else 0.0

    def add(self, outcome: PluginOutcome) -> None:
        self.calls += 1
        self.timeouts += int(outcome.timed_out)
        self.errors += int(outcome.error is not None and not outcome.timed_out)
        self.score_sum += outcome.score
        self.latency_sum_s += outcome.latency_s

    def merge(self, other: PluginStats) -> None:
        self.calls += other.calls
        self.timeouts += other.timeouts
        self.errors += other.errors
        self.score_sum += other.score_sum
        self.latency_sum_s += other.latency_sum_s


class RewardStats:
    """Counters per plugin label; converts to and from plain dicts to cross process boundaries."""

    def __init__(self) -> None:
        self.plugins: dict[str, PluginStats] = {}

    def add(self, label: str, outcome: PluginOutcome) -> None:
        self.plugins.setdefault(label, PluginStats()).add(outcome)

    def merge(self, other: RewardStats) -> None:
        for label, stats in other.plugins.items():
            self.plugins.setdefault(label, PluginStats()).merge(stats)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {label: {**asdict(stats), "mean_score": stats.mean_score} for label, stats in self.plugins.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> RewardStats:
        result = cls()
        for label, values in data.items():
            result.plugins[label] = PluginStats(
                calls=int(values["calls"]),
                timeouts=int(values["timeouts"]),
                errors=int(values["errors"]),
                score_sum=float(values["score_sum"]),
                latency_sum_s=float(values["latency_sum_s"]),
            )
        return result


REWARD_DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "agrpo_reward_latency_seconds": (
        "histogram",
        "Seconds per reward plugin call (a timeout counts as the timeout).",
        TAG_KEYS,
    ),
    "agrpo_reward_calls": ("counter", "Reward plugin calls.", TAG_KEYS),
    "agrpo_reward_timeouts": ("counter", "Reward plugin calls killed after the timeout (scored 0).", TAG_KEYS),
    "agrpo_reward_errors": (
        "counter",
        "Reward plugin calls that raised, returned a non-finite or non-number score, or crashed their worker "
        "process (scored 0); timeouts excluded.",
        TAG_KEYS,
    ),
    "agrpo_reward_mean_score": (
        "gauge",
        "Mean score of the plugin's calls so far in this process (failures count 0).",
        TAG_KEYS,
    ),
}
COUNTERS = ("agrpo_reward_calls", "agrpo_reward_timeouts", "agrpo_reward_errors")


class RayRewardMetrics:
    """The `agrpo_reward_*` metrics of one process, tagged by run and plugin label.

    The counters of every plugin are exported at 0 from the start, so a plugin that never timed out reads 0.
    Outside a Ray worker the metric objects exist but export nothing, so the in-process scorer can use the same
    code path.
    """

    def __init__(self, run: str, labels: Iterable[str] = (), factory: Any = None) -> None:
        self.metrics = RoleMetrics(run, REWARD_DEFINITIONS, factory=factory)
        for label in labels:
            for name in COUNTERS:
                self.metrics.zero(name, {"plugin": label})

    def record(self, label: str, outcomes: Iterable[PluginOutcome], totals: PluginStats) -> None:
        """Export one group's outcomes of one plugin, and the running mean from `totals`."""
        tags = {"plugin": label}
        group = PluginStats()
        for outcome in outcomes:
            group.add(outcome)
            self.metrics.observe("agrpo_reward_latency_seconds", outcome.latency_s, tags)
        self.metrics.inc("agrpo_reward_calls", group.calls, tags)
        self.metrics.inc("agrpo_reward_timeouts", group.timeouts, tags)
        self.metrics.inc("agrpo_reward_errors", group.errors, tags)
        self.metrics.set("agrpo_reward_mean_score", totals.mean_score, tags)
