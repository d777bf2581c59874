"""Prompts out to the rollout workers, sampled groups back: chunks, per-batch bookkeeping, lost chunks.

A batch's prompts are split into chunks of whole groups and assigned round-robin to the workers (a deterministic
assignment, so a run and its resumed twin sample the same groups with the same seeds). `collect` hands back the
groups of every chunk that finished; a chunk whose worker died is kept as *lost* until the driver has given the
restarted worker the current weights (never while a learner update runs), then `resubmit_lost` sends it again,
so no group is lost and none is counted twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from common.metrics import RoleMetrics
from common.record import RolloutGroup
from rollout.worker import NoWeightsError

log = logging.getLogger(__name__)
# A worker that restarted between calls fails its next call with NoWeightsError: same recovery.
WORKER_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError, NoWeightsError)


@dataclass
class PromptChunk:
    """Requests of one batch sent to one worker in one call."""

    batch: int
    requests: list[dict[str, Any]]
    worker: int
    attempts: int = 1


@dataclass
class DispatchCounters:
    """Exact bookkeeping, saved with every checkpoint: each dispatched group is sampled exactly once."""

    groups_dispatched: int = 0
    groups_sampled: int = 0
    chunks_redispatched: int = 0
    worker_restarts: int = 0


@dataclass
class _Batch:
    expected: int
    groups: dict[int, RolloutGroup] = field(default_factory=dict)


class RolloutDispatcher:
    """Sends prompt chunks to the rollout workers and collects the groups they sample."""

    def __init__(self, workers: list[Any], groups_per_call: int, metrics: RoleMetrics, max_attempts: int = 3) -> None:
        self.workers = workers
        self.groups_per_call = max(1, groups_per_call)
        self.max_attempts = max_attempts
        self.batches: dict[int, _Batch] = {}
        self.sampling: dict[Any, PromptChunk] = {}
        self.lost: list[PromptChunk] = []
        self.counters = DispatchCounters()
        self.metrics = metrics

    def dispatch(self, batch: int, requests: list[dict[str, Any]]) -> None:
        """Submit a batch's requests as chunks, round-robin over workers in chunk order."""
        self.batches[batch] = _Batch(expected=len(requests))
        # Spread a batch over every worker even when it is smaller than one full sampler batch per worker.
        size = min(self.groups_per_call, math.ceil(len(requests) / len(self.workers)))
        for j, start in enumerate(range(0, len(requests), size)):
            self._submit(PromptChunk(batch, requests[start : start + size], worker=j % len(self.workers)))
        self.counters.groups_dispatched += len(requests)
        self._report()

    def restore(self, batch: int, groups: list[RolloutGroup]) -> None:
        """Put back a batch sampled before a checkpoint."""
        self.batches[batch] = _Batch(expected=len(groups), groups={g.prompt_index: g for g in groups})

    def _submit(self, chunk: PromptChunk) -> None:
        self.sampling[self.workers[chunk.worker].sample_groups.remote(chunk.requests)] = chunk

    def collect(self, timeout: float = 0.05) -> list[RolloutGroup]:
        """Groups of every chunk that finished within `timeout`; failed chunks become `lost`."""
        if not self.sampling:
            return []
        finished, _ = ray.wait(list(self.sampling), num_returns=len(self.sampling), timeout=timeout)
        groups: list[RolloutGroup] = []
        for ref in finished:
            chunk = self.sampling.pop(ref)
            try:
                sampled: list[RolloutGroup] = ray.get(ref)
            except WORKER_FAILURES as err:
                self._lose(chunk, err)
                continue
            for group in sampled:
                self.batches[chunk.batch].groups[group.prompt_index] = group
            self.counters.groups_sampled += len(sampled)
            groups.extend(sampled)
        self._report()
        return groups

    def _lose(self, chunk: PromptChunk, err: Exception) -> None:
        if chunk.attempts >= self.max_attempts:
            raise RuntimeError(
                f"rollout-{chunk.worker} failed {chunk.attempts} times on the same prompts ({type(err).__name__})"
            ) from err
        log.warning("rollout-%d died (%s); its chunk goes out again once it holds the weights", chunk.worker, err)
        self.counters.worker_restarts += 1
        self.metrics.inc("agrpo_rollout_worker_restarts_total")
        self.lost.append(chunk)

    def resubmit_lost(self) -> None:
        """Send lost chunks again, to the same (restarted) workers; call after they received the weights."""
        for chunk in self.lost:
            self.counters.chunks_redispatched += 1
            self._submit(PromptChunk(chunk.batch, chunk.requests, chunk.worker, chunk.attempts + 1))
        self.lost = []

    def complete(self, batch: int) -> bool:
        state = self.batches.get(batch)
        return state is not None and len(state.groups) == state.expected

    def idle(self) -> bool:
        """True when no chunk is being sampled or waiting to be sent again."""
        return not self.sampling and not self.lost

    def groups(self, batch: int) -> list[RolloutGroup]:
        """The sampled groups of a complete batch, in prompt order."""
        state = self.batches[batch]
        return [state.groups[k] for k in sorted(state.groups)]

    def take(self, batch: int) -> list[RolloutGroup]:
        """`groups(batch)`, forgetting the batch."""
        groups = self.groups(batch)
        del self.batches[batch]
        self._report()
        return groups

    def _report(self) -> None:
        waiting = sum(len(b.groups) for b in self.batches.values())
        self.metrics.set("agrpo_rollout_groups_in_flight", sum(b.expected for b in self.batches.values()) - waiting)
        self.metrics.set("agrpo_rollout_queue_depth", waiting)
