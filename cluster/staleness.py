"""The staleness rule of the streaming loop, in one class: which batches may be sampled, which groups may train.

With S = max_staleness, batch b is dispatched once the learner has finished step b - S - 1, so it is sampled
with weight version >= b - S, and while the learner trains step s the batches in flight are

    in flight at step s  =  { b : s <= b <= min(s + S, total - 1) }

A group sampled with weight version w is admitted at learner version v iff  v - w <= S.

S = 0 is the synchronous on-policy loop; S = 1 overlaps sampling of batch s+1 with training on batch s, the
per-token ratio and clipping correcting for the lag. The dispatch rule alone already keeps every group within
the bound (a chunk sampled again after a worker died gets newer weights, never older), so admission drops a
group only if that invariant is broken; the learner group handles a short or empty step explicitly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common.record import RolloutGroup


@dataclass
class StalenessManager:
    """Owns dispatch capacity (`dispatchable`) and admission (`admit`), and counts both."""

    max_staleness: int
    total_steps: int
    next_batch: int = 0
    accepted: int = 0
    dropped: int = 0
    histogram: Counter[int] = field(default_factory=Counter)

    def last_in_flight(self, step: int) -> int:
        """The last batch that may be sampling while the learner works on `step`."""
        return min(step + self.max_staleness, self.total_steps - 1)

    def dispatchable(self, step: int) -> range:
        """Batches that may start sampling now that the learner is at `step`; each batch is returned once."""
        batches = range(self.next_batch, self.last_in_flight(step) + 1)
        self.next_batch = max(self.next_batch, batches.stop)
        return batches

    def admit(self, learner_version: int, groups: list[RolloutGroup]) -> list[RolloutGroup]:
        """The groups that may train the learner at `learner_version`; every group is counted exactly once."""
        admitted = []
        for group in groups:
            staleness = learner_version - group.weight_version
            if staleness < 0:
                raise ValueError(
                    f"group weight_version {group.weight_version} is newer than learner version {learner_version}"
                )
            self.histogram[staleness] += 1
            if staleness <= self.max_staleness:
                admitted.append(group)
        self.accepted += len(admitted)
        self.dropped += len(groups) - len(admitted)
        return admitted

    def state_dict(self) -> dict[str, Any]:
        return {
            "next_batch": self.next_batch,
            "accepted": self.accepted,
            "dropped": self.dropped,
            "histogram": {str(k): v for k, v in self.histogram.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_batch = int(state["next_batch"])
        self.accepted = int(state["accepted"])
        self.dropped = int(state["dropped"])
        self.histogram = Counter({int(k): int(v) for k, v in state["histogram"].items()})
