"""The `agrpo_*` metrics of the runtime roles, declared in one table.

Ray exports `ray.util.metrics` values to its Prometheus endpoint and dashboard; declaring every name here
(with kind, description and tags) lets the Grafana dashboard test check its queries against the names the
code really registers. The reward service declares its per-plugin metrics in rewards/metrics.py.
`MetricsLog` writes the per-step lines of `metrics.jsonl` in the run directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

STALENESS_BOUNDARIES = [0.5, 1.5, 2.5, 3.5, 4.5, 8.5]
SECONDS_BOUNDARIES = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]

# name: (kind, description, tag keys)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "agrpo_learner_step": ("gauge", "Optimizer steps completed (= learner weight version).", ()),
    "agrpo_learner_loss": ("gauge", "Policy loss of the last step.", ()),
    "agrpo_learner_grad_norm": ("gauge", "Global gradient norm before clipping.", ()),
    "agrpo_learner_lr": ("gauge", "Learning rate of the last step.", ()),
    "agrpo_learner_step_seconds": ("histogram", "Wall time of one learner update.", ()),
    "agrpo_learner_tokens_per_second": ("gauge", "Completion tokens scored per second by the learner.", ()),
    "agrpo_learner_timesteps_per_second": ("gauge", "(trajectory, timestep) pairs per second.", ()),
    "agrpo_learner_clip_fraction": ("gauge", "Fraction of tokens whose ratio was clipped.", ()),
    "agrpo_rollout_groups_total": ("counter", "Groups sampled by rollout workers.", ("worker",)),
    "agrpo_rollout_groups_in_flight": ("gauge", "Groups dispatched and not yet rewarded.", ()),
    "agrpo_rollout_queue_depth": ("gauge", "Rewarded groups waiting for the learner.", ()),
    "agrpo_rollout_sampler_steps_per_second": ("gauge", "Sampler forward passes per second.", ("worker",)),
    "agrpo_rollout_tokens_per_forward": ("gauge", "Sequences x tokens per sampler forward pass.", ("worker",)),
    "agrpo_rollout_worker_restarts_total": ("counter", "Rollout workers restarted after a failure.", ()),
    "agrpo_staleness": ("histogram", "learner_version - group.weight_version at admission.", ()),
    "agrpo_staleness_dropped_groups_total": ("counter", "Groups dropped as too stale.", ()),
    "agrpo_weight_sync_seconds": ("histogram", "Seconds per weight broadcast.", ()),
    "agrpo_weight_sync_bytes_per_second": ("gauge", "Bandwidth of the last weight broadcast.", ()),
    "agrpo_weight_version": ("gauge", "Weight version held by each rollout worker.", ("worker",)),
    "agrpo_reward_mean_by_task": ("gauge", "Mean training reward per task.", ("task",)),
    "agrpo_accuracy": ("gauge", "Held-out accuracy per task.", ("task",)),
    "agrpo_driver_stage_seconds": ("histogram", "Wall time of each stage of a training step.", ("stage",)),
    "agrpo_rollout_mismatch_mean": ("gauge", "Mean |log pi_old - log pi_behaviour| (same weights).", ()),
    "agrpo_rollout_mismatch_max": ("gauge", "Max |log pi_old - log pi_behaviour| (same weights).", ()),
    "agrpo_rollout_mismatch_kl": ("gauge", "k3 estimate of KL(pi_behaviour || pi_old) per token.", ()),
    "agrpo_rollout_mismatch_corrected_fraction": ("gauge", "Fraction of tokens capped or masked.", ()),
    "agrpo_policy_drift_mean": ("gauge", "Mean |log pi_theta - log pi_old| at the update's first pass.", ()),
    "agrpo_policy_drift_max": ("gauge", "Max |log pi_theta - log pi_old| at the update's first pass.", ()),
}


class RoleMetrics:
    """Lazily created Ray metric objects (they need a connected Ray worker) for the names above."""

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        if name not in self._objects:
            from ray.util import metrics

            kind, description, tags = DEFINITIONS[name]
            if kind == "gauge":
                obj = metrics.Gauge(name, description=description, tag_keys=tags)
            elif kind == "counter":
                obj = metrics.Counter(name, description=description, tag_keys=tags)
            else:
                bounds = STALENESS_BOUNDARIES if name == "agrpo_staleness" else SECONDS_BOUNDARIES
                obj = metrics.Histogram(name, description=description, boundaries=bounds, tag_keys=tags)
            self._objects[name] = obj
        return self._objects[name]

    def set(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        if math.isfinite(value):
            self._get(name).set(value, tags=tags)

    def inc(self, name: str, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        if value > 0:
            self._get(name).inc(value, tags=tags)

    def observe(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        if math.isfinite(value):
            self._get(name).observe(value, tags=tags)


class MetricsLog:
    """Appends one JSON object per line; on resume, lines past the resumed step are dropped first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int, drop_accuracy: bool = False) -> None:
        """Keep the lines of steps <= `step` (with `drop_accuracy`, not the accuracy line of `step` itself).

        A line that is not valid JSON (torn by a crash mid-write) is dropped: it is the very case resume is for.
        """
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            at = record.get("step", 0)
            if at < step or (at == step and not (drop_accuracy and "accuracy" in record and "prompts" not in record)):
                keep.append(line)
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")
