"""The `agrpo_*` metrics of the runtime roles, declared in one table, and how a process exports them.

Ray exports `ray.util.metrics` values to its Prometheus endpoint and dashboard; declaring every name here
(with kind, description and tags) lets the Grafana dashboard test check its queries against the names the
code really registers. The reward service declares its per-plugin metrics in rewards/metrics.py and exports
them through the same `RoleMetrics`. `MetricsLog` writes the per-step lines of `metrics.jsonl`.

Three rules make the values graphable by a real Prometheus (docs/operations.md, "Metrics"):
- every series carries a `run` tag (`run_label`), so two runs on one cluster stay apart;
- every gauge is set again by its own process twice per report interval (`GaugeKeeper`): Ray 2.60 exports a
  gauge only in the report interval it was set in, and its metrics agent forgets it two intervals later, so a
  value set once per evaluation would vanish from Prometheus within seconds;
- a counter is exported at 0 before its first increment (`RoleMetrics.zero`), so "never" reads 0, not "No data".
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.config import Config

RUN_TAG = "run"
# Ray 2.60 rebuilds a histogram from its buckets' midpoints (the first bucket's is half its bound), so each
# staleness 0-4 is the midpoint of a bucket of its own: sums, means and quantiles read whole versions.
STALENESS_BOUNDARIES = [0.001, 1.999, 2.001, 3.999, 4.001, 8.5]
# From 100 µs (a reward plugin call, a driver stage with nothing to wait for) to 10 minutes (an 8B learner step).
SECONDS_BOUNDARIES = [
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
]
BOUNDARIES = {"agrpo_staleness": STALENESS_BOUNDARIES}
"""Bucket boundaries of a histogram that does not count seconds; every other histogram uses SECONDS_BOUNDARIES."""

Definitions = Mapping[str, tuple[str, str, tuple[str, ...]]]

# name: (kind, description, tag keys besides `run`)
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


def run_label(config: Config) -> str:
    """The `run` tag of a run's metrics and its name in the trackers: `metrics.run_name`, or the run
    directory's name.

    Computed from the config alone, so the driver and every actor (which get the config, not the driver's
    working directory) agree on it, and a resumed run keeps its label and continues its graphs.
    """
    return config.metrics.run_name or Path(config.run_dir).name or "run"


def report_interval_s() -> float:
    """Ray's metrics report interval in this process (10 s unless RAY_metrics_report_interval_ms is set);
    Ray itself never exports more often than once a second."""
    try:
        import ray

        return max(ray._config.metrics_report_interval_ms(), 1000) / 1000.0
    except Exception:
        return 10.0


class GaugeKeeper:
    """Sets every gauge of this process again, to its last value, until the process exits.

    One per process, because Ray's metric registry is per process; it starts its thread at the first gauge.
    A dead process's gauges stop being refreshed and vanish from Prometheus, which is the truthful signal.
    """

    def __init__(self, interval_s: Callable[[], float] = lambda: report_interval_s() / 2) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._values: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Any, float, dict[str, str]]] = {}
        self._thread: threading.Thread | None = None

    def set(self, gauge: Any, value: float, tags: dict[str, str]) -> None:
        gauge.set(value, tags=tags)
        with self._lock:
            self._values[(id(gauge), tuple(sorted(tags.items())))] = (gauge, value, tags)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agrpo-gauge-keeper", daemon=True)
                self._thread.start()

    def refresh(self) -> int:
        """Set every remembered gauge again; returns how many."""
        with self._lock:
            values = list(self._values.values())
        for gauge, value, tags in values:
            gauge.set(value, tags=tags)
        return len(values)

    def _run(self) -> None:
        interval = self._interval_s()
        while True:
            time.sleep(interval)
            try:
                self.refresh()
            except Exception:  # a failing export must never take the actor down; the next round tries again
                continue


KEEPER = GaugeKeeper()


class RoleMetrics:
    """The metrics of `definitions` with the `run` tag; the Ray objects are created at first use (they need a
    connected Ray worker). Non-finite values are skipped: Prometheus cannot graph them and Ray rejects some."""

    def __init__(
        self, run: str, definitions: Definitions = DEFINITIONS, keeper: GaugeKeeper = KEEPER, factory: Any = None
    ) -> None:
        self.run = run
        self.definitions = definitions
        self.keeper = keeper
        self._factory = factory
        self._objects: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        if name not in self._objects:
            factory = self._factory
            if factory is None:
                from ray.util import metrics as factory
            kind, description, tags = self.definitions[name]
            keys = (RUN_TAG, *tags)
            if kind == "gauge":
                obj = factory.Gauge(name, description=description, tag_keys=keys)
            elif kind == "counter":
                obj = factory.Counter(name, description=description, tag_keys=keys)
            else:
                bounds = BOUNDARIES.get(name, SECONDS_BOUNDARIES)
                obj = factory.Histogram(name, description=description, boundaries=bounds, tag_keys=keys)
            self._objects[name] = obj
        return self._objects[name]

    def _tags(self, tags: dict[str, str] | None) -> dict[str, str]:
        return {RUN_TAG: self.run, **(tags or {})}

    def set(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        if math.isfinite(value):
            self.keeper.set(self._get(name), float(value), self._tags(tags))

    def inc(self, name: str, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        if value > 0:
            self._get(name).inc(float(value), tags=self._tags(tags))

    def zero(self, name: str, tags: dict[str, str] | None = None) -> None:
        """Export counter `name` at 0 now. Ray's public `inc` refuses 0, so this records through the metric's
        recording method that `inc` itself calls."""
        metric = self._get(name)
        record = getattr(metric, "_record", None) or metric.record
        record(0.0, tags=self._tags(tags))

    def observe(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        if math.isfinite(value):
            self._get(name).observe(float(value), tags=self._tags(tags))


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
