"""The RewardService interface without Ray, for tests and the reward-pool benchmark.

Plain calls are fastest and fine for tests and trusted plugins; a hanging plugin would hang the
caller, which is what the sandbox (and the pool) exist to prevent. Counters and results go through
the same `finish_group` as the pool's, so the two are compared like for like.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from common.config import Config
from rewards.metrics import RewardStats
from rewards.registry import CombinedReward, build_reward_fn
from rewards.sandbox import STARTUP_TIMEOUT_S, SandboxedScorer
from rewards.service import RewardScorer, RewardService, check_lengths, finish_group
from rewards.types import RewardResult


class LocalRewardScorer:
    """The same interface without Ray: plain calls, or a sandbox child when `timeout_s` is given."""

    def __init__(
        self, combined: CombinedReward, timeout_s: float | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S
    ) -> None:
        self._combined = combined
        self._sandbox = (
            None if timeout_s is None else SandboxedScorer(combined, timeout_s, startup_timeout_s=startup_timeout_s)
        )
        self._stats = RewardStats()

    @classmethod
    def from_config(cls, config: Config, isolate: bool = False) -> LocalRewardScorer:
        timeout_s = config.rewards.timeout_s if isolate else None
        return cls(build_reward_fn(config.rewards, config.data.task), timeout_s, config.rewards.startup_timeout_s)

    def score_group(self, completions: Sequence[str], references: Sequence[dict]) -> Future[list[RewardResult]]:
        check_lengths(completions, references)
        samples = list(zip(completions, references, strict=True))
        if self._sandbox is not None:
            outcomes = self._sandbox.score(samples)
        else:
            count = len(self._combined.plugins)
            outcomes = [[self._combined.call(j, text, ref) for j in range(count)] for text, ref in samples]
        future: Future[list[RewardResult]] = Future()
        future.set_result(finish_group(self._combined, outcomes, self._stats))
        return future

    def stats(self) -> dict[str, Any]:
        return {"plugins": self._stats.as_dict()}

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()


def create_reward_scorer(config: Config, in_process: bool) -> RewardScorer:
    """The pool when running on Ray, otherwise plain in-process calls; same interface either way."""
    if in_process:
        return LocalRewardScorer.from_config(config)
    return RewardService.from_config(config)
