"""The driver's side of reward scoring: groups go to the RewardService as soon as they are sampled.

Scoring runs on the reward actors while the driver waits for the rest of a batch or for the learner, so by the
time a batch is complete most of its groups already hold rewards; `scored` waits for the remainder and writes
each group's rewards, per-sample errors and per-plugin errors into it.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from common.record import RolloutGroup
from rewards.service import RewardScorer
from rewards.types import RewardResult


@dataclass
class RewardCounters:
    """Saved with every checkpoint: each sampled group is rewarded exactly once."""

    groups_rewarded: int = 0
    reward_errors: int = 0


class RewardQueue:
    def __init__(self, service: RewardScorer) -> None:
        self.service = service
        self.pending: dict[int, Future[list[RewardResult]]] = {}
        self.counters = RewardCounters()

    def submit(self, groups: list[RolloutGroup]) -> None:
        """Start scoring each group (keyed by its prompt index, unique within a run)."""
        for group in groups:
            if group.prompt_index in self.pending or group.rewards is not None:
                raise RuntimeError(f"group of prompt {group.prompt_index} submitted for scoring twice")
            references = [group.reference] * len(group.texts)
            self.pending[group.prompt_index] = self.service.score_group(group.texts, references)

    def scored(self, groups: list[RolloutGroup]) -> list[RolloutGroup]:
        """The same groups, each holding its rewards (scoring any that was never submitted)."""
        self.submit([g for g in groups if g.rewards is None and g.prompt_index not in self.pending])
        for group in groups:
            if group.rewards is not None:
                continue
            results = self.pending.pop(group.prompt_index).result()
            group.rewards = np.asarray([r.score for r in results], dtype=np.float32)
            group.reward_errors = [r.error for r in results]
            group.plugin_errors = [dict(r.plugin_errors) for r in results]
            group.reward_components = [dict(r.components) for r in results]
            self.counters.groups_rewarded += 1
            self.counters.reward_errors += sum(r.error is not None for r in results)
        return groups
