"""The driver's half of the weight sync: group generations, one broadcast per version (a restarted worker is
taken into a new generation at the next broadcast).

The wire protocol is common/weight_sync.py; the lifecycle is in docs/weight_sync.md.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from common.errors import UserError
from common.metrics import RoleMetrics
from common.weight_sync import SyncStats

if TYPE_CHECKING:
    from learner.group import LearnerGroup


def worker_identities(workers: list[Any], timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Each worker's `identity()` (pid, layout hash, ...), waiting through restarts.

    A restarting actor answers 'unavailable' for a while; a pid that differs from the last one seen means
    the worker restarted and left the weight group.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get([w.identity.remote() for w in workers])
        except (ActorUnavailableError, RayActorError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class WeightBroadcaster:
    """Learner rank 0 is rank 0 of the weight group; rollout worker i is rank i + 1."""

    def __init__(self, learners: LearnerGroup, workers: list[Any], metrics: RoleMetrics) -> None:
        self.learners = learners
        self.workers = workers
        self.generation = 0
        self.members: list[int] = []
        self.history: list[SyncStats] = []
        self.metrics = metrics

    def check_layout(self) -> None:
        """Refuse to start if a rollout model's parameters differ from what the learner sends."""
        sender = ray.get(self.learners.ranks[0].weight_layout.remote())
        for i, info in enumerate(worker_identities(self.workers)):
            if info["layout"] != sender:
                raise UserError(
                    f"rollout-{i} holds a model whose parameter names/shapes differ from the learner's; "
                    "both must load the same model.path"
                )

    def rebuild(self) -> None:
        """A new group generation with every current member (needed whenever a member restarts)."""
        self.generation += 1
        self.members = [info["pid"] for info in worker_identities(self.workers)]
        host, port = ray.get(self.learners.ranks[0].reserve_address.remote())
        world = 1 + len(self.workers)
        refs = [self.learners.ranks[0].join_weight_group.remote(port, world, self.generation)]
        refs += [
            w.join_weight_group.remote(host, port, i + 1, world, self.generation) for i, w in enumerate(self.workers)
        ]
        ray.get(refs)

    def broadcast(self) -> SyncStats:
        """Send the learner's current weights to every worker; returns what rank 0 sent.

        A worker that restarted since the group was built (its pid changed) makes the group unusable, so
        the group is rebuilt first; a sync that fails because a member died mid-way is retried once.
        """
        pids = [info["pid"] for info in worker_identities(self.workers)]
        if pids != self.members:
            self.rebuild()
        try:
            stats = self._send()
        except (RayActorError, RayTaskError):
            self.rebuild()
            stats = self._send()
        self.history.append(stats)
        self.metrics.observe("agrpo_weight_sync_seconds", stats.seconds)
        self.metrics.set("agrpo_weight_sync_bytes_per_second", stats.bytes_per_s)
        return stats

    def _send(self) -> SyncStats:
        learner_refs = self.learners.call_async("broadcast_weights")
        worker_refs = [w.receive_weights.remote() for w in self.workers]
        sent: SyncStats = self.learners.wait(learner_refs)[0]
        received: list[SyncStats] = ray.get(worker_refs)
        if any(r.version != sent.version for r in received):
            raise RuntimeError(f"weight sync: workers hold {[r.version for r in received]}, sent {sent.version}")
        return sent
