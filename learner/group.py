"""LearnerGroup: `learner.world_size` LearnerWorker actors forming one DeepSpeed world.

Each rank takes a contiguous share of whole groups; DeepSpeed averages the ranks' gradients. A rank that
dies stops the run with an error naming the rank and the checkpoint to resume from: a DeepSpeed world
cannot lose a member and continue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.placement import RolePlacement
from common.errors import UserError
from common.record import RolloutGroup
from learner.worker import LearnerWorker


class LearnerRankDied(UserError):
    """A learner rank died; the run stops and can be resumed from the last checkpoint."""


class LearnerGroup:
    def __init__(
        self, config: dict[str, Any], placement: RolePlacement, last_checkpoint: Callable[[], str | None]
    ) -> None:
        self.world_size = len(placement.bundles)
        self.last_checkpoint = last_checkpoint
        remote = ray.remote(max_restarts=0, max_task_retries=0)(LearnerWorker)
        self.ranks = [
            remote.options(
                name=f"learner-{rank}", scheduling_strategy=placement.strategy(rank), **placement.actor_resources(rank)
            ).remote(config, rank, self.world_size)
            for rank in range(self.world_size)
        ]
        master = self._get([self.ranks[0].reserve_address.remote()])[0]
        self._get([r.init_engine.remote(*master) for r in self.ranks])

    def _get(self, refs: list[Any]) -> list[Any]:
        try:
            return ray.get(refs)
        except RayActorError as err:
            rank = next((i for i, r in enumerate(self.ranks) if r._actor_id.hex() == err.actor_id), None)
            where = self.last_checkpoint()
            how = f"resume with `--resume` (latest checkpoint: {where})" if where else "no checkpoint was written yet"
            raise LearnerRankDied(f"learner rank {rank if rank is not None else '?'} died: {how}") from None

    def call(self, method: str, *args: Any) -> list[Any]:
        """Call `method` on every rank with the same arguments and wait for all."""
        return self._get([getattr(r, method).remote(*args) for r in self.ranks])

    def call_async(self, method: str, *args: Any) -> list[Any]:
        return [getattr(r, method).remote(*args) for r in self.ranks]

    def shares(self, groups: list[RolloutGroup]) -> list[list[RolloutGroup]]:
        """Contiguous equal shares of whole groups, one per rank."""
        per = len(groups) // self.world_size
        return [groups[r * per : (r + 1) * per] for r in range(self.world_size)]

    def train_step(self, groups: list[RolloutGroup], step: int) -> list[Any]:
        """Submit one update; returns refs (the driver waits on them with `wait`)."""
        return [r.train_step.remote(share, step) for r, share in zip(self.ranks, self.shares(groups), strict=True)]

    def wait(self, refs: list[Any]) -> list[Any]:
        return self._get(refs)
