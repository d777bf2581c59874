"""Scoring whole groups on a pool of Ray reward actors.

`RewardService` keeps `rewards.pool_size` actors named `reward-<i>`; each runs its plugin calls in a
killable sandbox child (rewards/sandbox.py), so a hanging or crashing plugin costs one sample's
score, never an actor. If an actor dies anyway (killed, out of memory, node lost), it is replaced
under the same name and the group is scored again from scratch by the replacement: results and
stats are taken only from the attempt that returns, so nothing is lost and nothing is counted twice.

`score_group` returns a `concurrent.futures.Future`, so the driver streams groups to the pool and
collects each group's rewards when they are ready.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import ray
from ray.exceptions import RayActorError

from common.config import Config
from common.metrics import run_label
from rewards.metrics import RayRewardMetrics, RewardStats
from rewards.outcomes import PluginOutcome
from rewards.registry import CombinedReward, build_reward_fn
from rewards.sandbox import DEFAULT_MEMORY_LIMIT_MB, STARTUP_TIMEOUT_S, SandboxedScorer
from rewards.types import RewardResult

NAME_RETRY_S = 10.0


class RewardScorer(Protocol):
    """What the driver needs from a scorer, wherever it runs."""

    def score_group(self, completions: Sequence[str], references: Sequence[dict]) -> Future[list[RewardResult]]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def check_lengths(completions: Sequence[str], references: Sequence[dict]) -> None:
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references; need one each")


def finish_group(
    combined: CombinedReward, outcomes: list[list[PluginOutcome]], stats: RewardStats
) -> list[RewardResult]:
    """Combine each sample's plugin outcomes and count every outcome under its plugin label."""
    for sample in outcomes:
        for label, outcome in zip(combined.labels, sample, strict=True):
            stats.add(label, outcome)
    return [combined.combine(sample) for sample in outcomes]


class RewardActor:
    """One pool member: a sandbox child for the plugin calls, counters, and the Ray metrics."""

    def __init__(
        self,
        combined: CombinedReward,
        timeout_s: float,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
        run: str = "",
    ) -> None:
        self._combined = combined
        self._sandbox = SandboxedScorer(
            combined, timeout_s, startup_timeout_s=startup_timeout_s, memory_limit_mb=memory_limit_mb
        )
        self._stats = RewardStats()
        self._metrics = RayRewardMetrics(run, combined.labels)

    def ping(self) -> bool:
        return True

    def score_group(
        self, completions: list[str], references: list[dict]
    ) -> tuple[list[RewardResult], dict[str, dict[str, float]]]:
        """Results of one group, with that group's counters so the service can total delivered groups.

        Counters and metrics are recorded only once the whole group is scored: an actor that dies
        mid-group has exported nothing for it, and its replacement counts the group once.
        """
        outcomes = self._sandbox.score(list(zip(completions, references, strict=True)))
        group = RewardStats()
        results = finish_group(self._combined, outcomes, group)
        self._stats.merge(group)
        for j, label in enumerate(self._combined.labels):
            self._metrics.record(label, [sample[j] for sample in outcomes], self._stats.plugins[label])
        return results, group.as_dict()

    def stats(self) -> dict[str, Any]:
        """This actor's lifetime counters per plugin and how many sandbox children it replaced."""
        return {"plugins": self._stats.as_dict(), "sandbox_replacements": self._sandbox.replacements}


class RewardService:
    """A pool of `RewardActor`s; `score_group` goes to the least-loaded one (ties in rotation)."""

    def __init__(
        self,
        combined: CombinedReward,
        pool_size: int,
        timeout_s: float,
        num_cpus: float = 0.25,
        name_prefix: str = "reward",
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        max_attempts: int = 3,
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
        run: str = "",
    ) -> None:
        self._combined = combined
        self._run = run
        self._timeout_s = timeout_s
        self._startup_timeout_s = startup_timeout_s
        self._memory_limit_mb = memory_limit_mb
        self._num_cpus = num_cpus
        self._name_prefix = name_prefix
        self.max_attempts = max_attempts
        self.actor_replacements = 0
        self._lock = threading.Lock()
        self._stats = RewardStats()
        self._rotation = 0
        self._actor_class = ray.remote(RewardActor)
        self._actors = [self._create(i) for i in range(pool_size)]
        self._load = [0] * pool_size
        self._executor = ThreadPoolExecutor(max_workers=2 * pool_size + 2, thread_name_prefix=name_prefix)
        try:
            ray.get([actor.ping.remote() for actor in self._actors])
        except Exception:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: Config, combined: CombinedReward | None = None) -> RewardService:
        """The pool `config.rewards` describes; `combined` saves building the plugins again (class plugins
        may load a model) when the caller already built them to check them."""
        return cls(
            combined or build_reward_fn(config.rewards, config.data.task),
            pool_size=config.rewards.pool_size,
            timeout_s=config.rewards.timeout_s,
            num_cpus=config.cluster.cpus_per_reward_actor,
            startup_timeout_s=config.rewards.startup_timeout_s,
            memory_limit_mb=config.rewards.memory_limit_mb,
            run=run_label(config),
        )

    @property
    def actors(self) -> list[Any]:
        with self._lock:
            return list(self._actors)

    def _create(self, slot: int) -> Any:
        """Start the actor `<prefix>-<slot>`, waiting briefly while a dead predecessor frees the name."""
        name = f"{self._name_prefix}-{slot}"
        deadline = time.monotonic() + NAME_RETRY_S
        while True:
            try:
                return self._actor_class.options(name=name, num_cpus=self._num_cpus, max_restarts=0).remote(
                    self._combined, self._timeout_s, self._startup_timeout_s, self._memory_limit_mb, self._run
                )
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _acquire(self) -> tuple[int, Any]:
        with self._lock:
            size = len(self._actors)
            slot = min(range(size), key=lambda i: (self._load[i], (i - self._rotation) % size))
            self._rotation = (slot + 1) % size
            self._load[slot] += 1
            return slot, self._actors[slot]

    def _release(self, slot: int) -> None:
        with self._lock:
            self._load[slot] -= 1

    def _replace(self, slot: int, dead: Any) -> None:
        """Replace the actor in `slot` unless another thread already did."""
        with self._lock:
            if self._actors[slot] is not dead:
                return
            with contextlib.suppress(RayActorError, ValueError):
                ray.kill(dead, no_restart=True)
            self._actors[slot] = self._create(slot)
            self.actor_replacements += 1

    def _score(self, completions: list[str], references: list[dict]) -> list[RewardResult]:
        for _ in range(self.max_attempts):
            slot, actor = self._acquire()
            try:
                results, group = ray.get(actor.score_group.remote(completions, references))
            except RayActorError:
                self._replace(slot, actor)
                continue
            finally:
                self._release(slot)
            with self._lock:
                self._stats.merge(RewardStats.from_dict(group))
            return results
        return self._give_up(len(completions))

    def _give_up(self, size: int) -> list[RewardResult]:
        """Every attempt lost its actor: score the group 0 with the reason, and count it."""
        reason = f"reward actor died on all {self.max_attempts} attempts to score this group"
        outcomes = [[PluginOutcome.failed(reason) for _ in self._combined.labels] for _ in range(size)]
        with self._lock:
            return finish_group(self._combined, outcomes, self._stats)

    def score_group(self, completions: Sequence[str], references: Sequence[dict]) -> Future[list[RewardResult]]:
        """Score one group on the pool; the future's result has one RewardResult per completion."""
        check_lengths(completions, references)
        return self._executor.submit(self._score, list(completions), list(references))

    def stats(self) -> dict[str, Any]:
        """Counters per plugin over every group delivered so far, and actor replacements."""
        with self._lock:
            return {"plugins": self._stats.as_dict(), "actor_replacements": self.actor_replacements}

    def actor_stats(self) -> list[dict[str, Any]]:
        """Each live actor's own lifetime counters (a replaced actor's counters are gone)."""
        return ray.get([actor.stats.remote() for actor in self.actors])

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        for actor in self.actors:
            with contextlib.suppress(RayActorError, ValueError):
                ray.kill(actor, no_restart=True)
