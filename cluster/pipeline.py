"""The rollout side of the streaming loop: dispatch prompt chunks, reward groups as they arrive, recover.

Prompts of a batch are split into chunks of whole groups and assigned round-robin to rollout workers (a
deterministic assignment, so a run and its resumed twin sample the same groups with the same seeds). As
each chunk comes back, its groups go to the reward service at once; rewarded groups wait in a bounded
buffer per batch until the learner takes the batch. A chunk whose worker died is dispatched again to the
restarted worker after it has received the current weights (`on_restart`), so no group is lost and none
is counted twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from common.metrics import RoleMetrics
from common.record import RolloutGroup
from rewards.service import RewardScorer
from rollout.worker import NoWeightsError

log = logging.getLogger(__name__)
# A worker that restarted between calls fails its next call with NoWeightsError: same recovery.
WORKER_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError, NoWeightsError)


@dataclass
class Chunk:
    batch: int
    requests: list[dict[str, Any]]
    worker: int
    attempts: int = 1


@dataclass
class PipelineCounters:
    """Exact bookkeeping that tests assert on: every dispatched group is rewarded exactly once."""

    groups_dispatched: int = 0
    groups_sampled: int = 0
    groups_rewarded: int = 0
    chunks_redispatched: int = 0
    worker_restarts: int = 0
    reward_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Batch:
    expected: int
    groups: dict[int, RolloutGroup] = field(default_factory=dict)


class RolloutPipeline:
    """Streams chunks through rollout workers and the reward service."""

    def __init__(
        self,
        workers: list[Any],
        scorer: RewardScorer,
        chunk_groups: int,
        on_restart: Callable[[int], None],
        max_attempts: int = 3,
    ) -> None:
        self.workers = workers
        self.scorer = scorer
        self.chunk_groups = max(1, chunk_groups)
        self.on_restart = on_restart
        self.max_attempts = max_attempts
        self.batches: dict[int, _Batch] = {}
        self.sampling: dict[Any, Chunk] = {}
        self.scoring: list[tuple[Future, RolloutGroup, int]] = []
        self.counters = PipelineCounters()
        self.metrics = RoleMetrics()

    def dispatch(self, batch: int, requests: list[dict[str, Any]]) -> None:
        """Submit a batch's requests as chunks, round-robin over workers in chunk order."""
        self.batches[batch] = _Batch(expected=len(requests))
        # Spread a batch over every worker even when it is smaller than one full sampler batch per worker.
        size = min(self.chunk_groups, math.ceil(len(requests) / len(self.workers)))
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        for j, chunk in enumerate(chunks):
            self._submit(Chunk(batch, chunk, worker=j % len(self.workers)))
        self.counters.groups_dispatched += len(requests)
        self._report()

    def add_ready(self, batch: int, groups: list[RolloutGroup]) -> None:
        """Put back a batch restored from a checkpoint (already sampled and rewarded)."""
        state = _Batch(expected=len(groups))
        state.groups = {g.prompt_index: g for g in groups}
        self.batches[batch] = state

    def _submit(self, chunk: Chunk) -> None:
        ref = self.workers[chunk.worker].sample_groups.remote(chunk.requests)
        self.sampling[ref] = chunk

    def in_flight(self) -> int:
        return sum(b.expected - len(b.groups) for b in self.batches.values())

    def sampled(self, upto_batch: int) -> bool:
        """True when no chunk of a batch <= upto_batch is still being sampled (safe to swap weights)."""
        return all(c.batch > upto_batch for c in self.sampling.values())

    def ready(self, batch: int) -> bool:
        state = self.batches.get(batch)
        return state is not None and len(state.groups) == state.expected

    def wait_sampled(self, upto_batch: int) -> None:
        while not self.sampled(upto_batch):
            self.poll()

    def wait_ready(self, batch: int) -> None:
        while not self.ready(batch):
            self.poll()

    def take(self, batch: int) -> list[RolloutGroup]:
        """Block until every group of `batch` is rewarded; return them in prompt order."""
        self.wait_ready(batch)
        state = self.batches.pop(batch)
        self._report()
        return [state.groups[k] for k in sorted(state.groups)]

    def peek(self, batch: int) -> list[RolloutGroup]:
        state = self.batches[batch]
        return [state.groups[k] for k in sorted(state.groups)]

    def poll(self, timeout: float = 0.05) -> None:
        """Advance whatever finished: sampled chunks go to scoring, scored groups into their batch."""
        if self.sampling:
            done, _ = ray.wait(list(self.sampling), num_returns=1, timeout=timeout)
            for ref in done:
                self._collect(ref)
        elif not self.scoring:
            time.sleep(timeout)
        still = []
        for fut, group, batch in self.scoring:
            if fut.done():
                self._attach(fut, group, batch)
            else:
                still.append((fut, group, batch))
        self.scoring = still
        if self.scoring and not self.sampling:
            time.sleep(min(timeout, 0.01))

    def _collect(self, ref: Any) -> None:
        chunk = self.sampling.pop(ref)
        try:
            groups: list[RolloutGroup] = ray.get(ref)
        except WORKER_FAILURES as err:
            self._recover(chunk, err)
            return
        self.counters.groups_sampled += len(groups)
        for group in groups:
            fut = self.scorer.score_group(group.texts, [group.reference] * len(group.texts))
            self.scoring.append((fut, group, chunk.batch))

    def _recover(self, chunk: Chunk, err: Exception) -> None:
        if chunk.attempts >= self.max_attempts:
            raise RuntimeError(
                f"rollout-{chunk.worker} failed {chunk.attempts} times on the same prompts ({type(err).__name__})"
            ) from err
        log.warning("rollout-%d died (%s); restarting it and dispatching its chunk again", chunk.worker, err)
        self.counters.worker_restarts += 1
        self.metrics.inc("agrpo_rollout_worker_restarts_total")
        self.on_restart(chunk.worker)
        self.counters.chunks_redispatched += 1
        self._submit(Chunk(chunk.batch, chunk.requests, chunk.worker, chunk.attempts + 1))

    def _attach(self, fut: Future, group: RolloutGroup, batch: int) -> None:
        results = fut.result()
        group.rewards = np.asarray([r.score for r in results], dtype=np.float32)
        group.reward_errors = [r.error for r in results]
        self.counters.reward_errors += sum(r.error is not None for r in results)
        state = self.batches[batch]
        if group.prompt_index in state.groups:
            raise RuntimeError(f"group of prompt {group.prompt_index} rewarded twice")
        state.groups[group.prompt_index] = group
        self.counters.groups_rewarded += 1
        self._report()

    def _report(self) -> None:
        self.metrics.set("agrpo_rollout_groups_in_flight", self.in_flight())
        waiting = sum(len(b.groups) for b in self.batches.values())
        self.metrics.set("agrpo_rollout_queue_depth", waiting)
