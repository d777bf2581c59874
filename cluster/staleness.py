"""The staleness rule of the streaming loop, kept in one class so it can be tested alone.

A group sampled with weights of version v is used for the learner update at version V only if
V - v <= max_staleness. max_staleness = 0 is the synchronous on-policy loop; larger values let rollout
of step s+1 overlap training on step s, with the per-token ratio and clipping correcting for the lag.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StalenessGate:
    """Accepts or drops groups by weight version and counts both, per observed staleness."""

    max_staleness: int
    accepted: int = 0
    dropped: int = 0
    histogram: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness = {self.max_staleness}: must be >= 0")

    def admit(self, learner_version: int, group_version: int) -> bool:
        """True if the group may train the learner now; every call is counted exactly once."""
        staleness = learner_version - group_version
        if staleness < 0:
            raise ValueError(f"group weight_version {group_version} is newer than learner version {learner_version}")
        self.histogram[staleness] += 1
        if staleness <= self.max_staleness:
            self.accepted += 1
            return True
        self.dropped += 1
        return False

    def state_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "dropped": self.dropped,
            "histogram": {str(k): v for k, v in self.histogram.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.accepted = int(state["accepted"])  # type: ignore[arg-type]
        self.dropped = int(state["dropped"])  # type: ignore[arg-type]
        self.histogram = Counter({int(k): int(v) for k, v in state["histogram"].items()})  # type: ignore[union-attr]
