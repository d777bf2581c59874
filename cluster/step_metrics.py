"""What one training step reports: its metrics.jsonl line, and the wall time of each of its stages.

The driver wraps every stage of a step in `timer("<stage>")`; the stage name is both the `seconds_<stage>` key
of the line and the `stage` tag of the `agrpo_driver_stage_seconds` histogram, so the log, the dashboard and the
code use one name for one thing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from cluster.staleness import StalenessManager
from common.config import Config
from common.metrics import RoleMetrics
from common.record import RolloutGroup
from common.weight_sync import SyncStats
from learner.correction import reduce_summaries
from rewards.grading import grade_all


class StalenessExport:
    """Exports to `agrpo_staleness` and `agrpo_staleness_dropped_groups_total` what the staleness manager has
    counted since the last update, starting from its (restored) counts, so a resumed run adds only new groups."""

    def __init__(self, metrics: RoleMetrics, staleness: StalenessManager) -> None:
        self.metrics = metrics
        self.staleness = staleness
        self.seen = Counter(staleness.histogram)
        metrics.zero("agrpo_staleness_dropped_groups_total")

    def update(self) -> None:
        new = self.staleness.histogram - self.seen
        for staleness, count in sorted(new.items()):
            for _ in range(count):
                self.metrics.observe("agrpo_staleness", staleness)
            if staleness > self.staleness.max_staleness:
                self.metrics.inc("agrpo_staleness_dropped_groups_total", count)
        self.seen.update(new)


class StageTimer:
    """Seconds per named stage of one step."""

    def __init__(self, metrics: RoleMetrics) -> None:
        self.metrics = metrics
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
            self.metrics.observe("agrpo_driver_stage_seconds", elapsed, {"stage": stage})


def success_rate(task: str, groups: list[RolloutGroup], grade_timeout_s: float) -> float:
    """Accuracy of the training samples themselves under the task's grader (the collapse guard's signal),
    graded in the time-limited grading child: model output can make a grader compute for minutes."""
    texts = [text for g in groups for text in g.texts]
    references = [g.reference for g in groups for _ in g.texts]
    parts = grade_all(task, texts, references, timeout_s=grade_timeout_s)
    den = sum(d for _, d in parts)
    return sum(n for n, _ in parts) / den if den else float("nan")


def zero_variance_fraction(groups: list[RolloutGroup]) -> float:
    """The share of groups whose rewards are all equal: their advantages are all 0, so they teach nothing.
    A high value means prompts too easy or too hard for the policy (or a reward that cannot tell answers apart)."""
    if not groups:
        return float("nan")
    flat = [g for g in groups if g.rewards is not None and np.all(g.rewards == g.rewards[0])]
    return len(flat) / len(groups)


def completion_length(groups: list[RolloutGroup]) -> float:
    """Mean completion tokens before the first EOS (the whole completion when it has none)."""
    lengths = []
    for g in groups:
        ids = g.trajectories.completion_ids
        eos = ids == g.trajectories.eos_id
        lengths.append(np.where(eos.any(axis=1), eos.argmax(axis=1), ids.shape[1]))
    return float(np.concatenate(lengths).mean()) if lengths else float("nan")


def learner_fields(ranks: list[dict[str, float]]) -> dict[str, float]:
    """The learner's statistics of the step, reduced over ranks (the mismatch fields token-weighted,
    learner/correction.py)."""
    return {
        "loss": float(np.mean([r["loss"] for r in ranks])),
        "grad_norm": ranks[0]["grad_norm"],
        "lr": ranks[0]["lr"],
        "clip_fraction": float(np.mean([r["clip_fraction"] for r in ranks])),
        "kl": float(np.mean([r["kl"] for r in ranks])),
        **reduce_summaries(ranks),
        "timesteps_per_s": float(sum(r["timesteps_per_s"] for r in ranks)),
    }


def step_line(
    step: int,
    config: Config,
    groups: list[RolloutGroup],
    ranks: list[dict[str, float]],
    skipped: str | None,
    synced: SyncStats,
    staleness: StalenessManager,
    learner_version: int,
    timer: StageTimer,
) -> dict[str, Any]:
    """The metrics.jsonl line of the update that trained on batch `step` (the line says step + 1, done)."""
    rewards = np.concatenate([g.rewards for g in groups]) if groups else np.zeros(0)
    line: dict[str, Any] = {
        "step": step + 1,
        "prompts": [g.prompt_index for g in groups],
        "reward_mean": float(rewards.mean()) if rewards.size else float("nan"),
        "reward_std": float(rewards.std()) if rewards.size else float("nan"),
        "zero_variance_fraction": zero_variance_fraction(groups),
        "completion_length": completion_length(groups),
        "success_rate": success_rate(config.data.task, groups, config.rewards.grade_timeout_s),
        **(learner_fields(ranks) if ranks else {"skipped": skipped}),
        "staleness_mean": float(np.mean([learner_version - g.weight_version for g in groups])) if groups else 0.0,
        "groups": len(groups),
        "sync_seconds": synced.seconds,
        "sync_bytes_per_s": synced.bytes_per_s,
        "dropped_total": staleness.dropped,
        "accepted_total": staleness.accepted,
    }
    line.update({f"seconds_{stage}": seconds for stage, seconds in timer.seconds.items()})
    line["step_seconds"] = time.perf_counter() - timer.start
    return line
