"""LearnerGroup: `learner.world_size` LearnerWorker actors forming one DeepSpeed world.

Each rank takes a contiguous share of whole groups and weights its loss by its share of the step's groups, so
the averaged gradient is the mean over all trajectories even when the shares differ by one group. A rank with no
group cannot sit out DeepSpeed's reductions, so a step with fewer groups than ranks is skipped, explicitly. A
rank that dies stops the run with an error naming the rank and the checkpoint to resume from: a DeepSpeed world
cannot lose a member and continue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from common.errors import UserError
from common.record import RolloutGroup
from learner.worker import LearnerWorker


class LearnerRankDied(UserError):
    """A learner rank died; the run stops and can be resumed from the last checkpoint."""


def split_groups(groups: list[RolloutGroup], world_size: int) -> list[list[RolloutGroup]] | None:
    """Contiguous shares of whole groups, one per rank, sizes differing by at most one (earlier ranks larger);
    None when some rank would get no group."""
    if len(groups) < world_size:
        return None
    base, extra = divmod(len(groups), world_size)
    shares, start = [], 0
    for rank in range(world_size):
        size = base + (rank < extra)
        shares.append(groups[start : start + size])
        start += size
    return shares


class LearnerUpdate:
    """One update in flight on every rank; `skipped` says why there is none."""

    def __init__(self, learners: LearnerGroup, refs: list[Any], skipped: str | None = None) -> None:
        self.learners, self.refs, self.skipped = learners, refs, skipped
        self._stats: list[dict[str, float]] | None = [] if skipped else None

    def done(self, timeout: float = 0.05) -> bool:
        if self._stats is not None:
            return True
        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=timeout)
        return len(ready) == len(self.refs)

    def stats(self) -> list[dict[str, float]]:
        """Each rank's statistics (empty when skipped); waits for the update and advances the learner version."""
        if self._stats is None:
            self._stats = self.learners.wait(self.refs)
            self.learners.version += 1
        return self._stats


class LearnerGroup:
    """The learner ranks; `version` counts the updates applied (the weight version rank 0 broadcasts)."""

    def __init__(
        self, config: dict[str, Any], actor_options: list[dict[str, Any]], last_checkpoint: Callable[[], str | None]
    ) -> None:
        """`actor_options[rank]` are the Ray options of that rank (placement, CPUs, GPUs)."""
        self.world_size = len(actor_options)
        self.last_checkpoint = last_checkpoint
        self.version = 0
        remote = ray.remote(max_restarts=0, max_task_retries=0)(LearnerWorker)
        self.ranks = [
            remote.options(name=f"learner-{rank}", **options).remote(config, rank, self.world_size)
            for rank, options in enumerate(actor_options)
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
        """Call `method` on every rank with the same arguments and wait for all (collectives need every rank)."""
        return self._get([getattr(r, method).remote(*args) for r in self.ranks])

    def call_async(self, method: str, *args: Any) -> list[Any]:
        return [getattr(r, method).remote(*args) for r in self.ranks]

    def wait(self, refs: list[Any]) -> list[Any]:
        return self._get(refs)

    def update(self, groups: list[RolloutGroup], step: int) -> LearnerUpdate:
        """Start one update on the admitted groups; see the module docstring for short and empty steps."""
        shares = split_groups(groups, self.world_size)
        if shares is None:
            return LearnerUpdate(self, [], skipped=f"{len(groups)} groups for {self.world_size} learner ranks")
        # Every rank visits the same older versions in the same order (a collective under ZeRO-3).
        older = sorted({g.weight_version for g in groups if g.weight_version != self.version})
        refs = [
            rank.train_step.remote(share, step, self.world_size * len(share) / len(groups), older)
            for rank, share in zip(self.ranks, shares, strict=True)
        ]
        return LearnerUpdate(self, refs)
