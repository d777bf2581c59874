"""How agrpo's metrics reach Prometheus: the run tag, zeroed counters, kept gauges, fine buckets, staleness.

Ray metric objects are replaced by recorders (`FakeMetrics`); tests/e2e/test_job_submit.py checks the same
rules against a real Prometheus scraping a real cluster at Ray's default report interval.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.ray_setup import local_cluster_lines
from cluster.staleness import StalenessManager
from cluster.step_metrics import StalenessExport
from common.config import load_config
from common.metrics import SECONDS_BOUNDARIES, GaugeKeeper, RoleMetrics, run_label
from rewards.metrics import PluginStats, RayRewardMetrics
from rewards.outcomes import PluginOutcome


class _Recorder:
    """Stands in for a Ray metric: keeps what was observed, set, added or recorded, with its tags."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        self.name = name
        self.boundaries = kwargs.get("boundaries")
        self.tag_keys = kwargs.get("tag_keys")
        self.values: list[tuple[str, float, dict[str, str]]] = []

    def observe(self, value: float, tags: dict[str, str]) -> None:
        self.values.append(("observe", value, tags))

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.values.append(("inc", value, tags))

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.values.append(("set", value, tags))

    def _record(self, value: float, tags: dict[str, str]) -> None:
        self.values.append(("record", value, tags))


class FakeMetrics:
    """A `ray.util.metrics` stand-in that keeps every object it created by name."""

    def __init__(self) -> None:
        self.objects: dict[str, _Recorder] = {}

    def _make(self, name: str, **kwargs: Any) -> _Recorder:
        self.objects[name] = _Recorder(name, **kwargs)
        return self.objects[name]

    Gauge = Counter = Histogram = _make


def idle_keeper() -> GaugeKeeper:
    """A keeper whose thread never wakes during a test, so only explicit refreshes set gauges again."""
    return GaugeKeeper(interval_s=lambda: 3600.0)


def test_every_value_carries_the_run_tag_and_non_finite_values_are_skipped() -> None:
    fake = FakeMetrics()
    metrics = RoleMetrics("exp-1", factory=fake, keeper=idle_keeper())
    metrics.set("agrpo_learner_loss", 0.5)
    metrics.set("agrpo_learner_loss", float("nan"))
    metrics.inc("agrpo_rollout_groups_total", 3, {"worker": "0"})
    metrics.inc("agrpo_rollout_groups_total", 0, {"worker": "0"})
    metrics.observe("agrpo_driver_stage_seconds", 0.002, {"stage": "reward"})
    assert fake.objects["agrpo_learner_loss"].values == [("set", 0.5, {"run": "exp-1"})]
    assert fake.objects["agrpo_rollout_groups_total"].values == [("inc", 3, {"run": "exp-1", "worker": "0"})]
    assert fake.objects["agrpo_rollout_groups_total"].tag_keys == ("run", "worker")
    assert fake.objects["agrpo_driver_stage_seconds"].values == [
        ("observe", 0.002, {"run": "exp-1", "stage": "reward"})
    ]


def test_run_label_is_the_run_name_or_the_run_directory_name() -> None:
    assert run_label(load_config(None, ["run_dir=/checkpoints/gsm8k-a"])) == "gsm8k-a"
    assert run_label(load_config(None, ["run_dir=runs/tiny/"])) == "tiny"
    assert run_label(load_config(None, ["run_dir=runs/tiny", "metrics.run_name=ablation-3"])) == "ablation-3"


def test_reward_metrics_export_each_outcome_under_its_plugin_and_start_counters_at_zero() -> None:
    fake = FakeMetrics()
    exported = RayRewardMetrics("r1", ["gsm8k"], factory=fake)
    tags = {"run": "r1", "plugin": "gsm8k"}
    for name in ("agrpo_reward_calls", "agrpo_reward_timeouts", "agrpo_reward_errors"):
        assert fake.objects[name].values == [("record", 0.0, tags)], name
    outcomes = [
        PluginOutcome(score=1.0, latency_s=0.01),
        PluginOutcome.failed("timeout", latency_s=5.0, timed_out=True),
        PluginOutcome.failed("ValueError: x", latency_s=0.02),
        PluginOutcome(score=0.5, latency_s=0.03),
    ]
    exported.record("gsm8k", outcomes, PluginStats(calls=10, score_sum=4.0))
    assert fake.objects["agrpo_reward_latency_seconds"].values == [("observe", o.latency_s, tags) for o in outcomes]
    assert fake.objects["agrpo_reward_calls"].values[1:] == [("inc", 4, tags)]
    assert fake.objects["agrpo_reward_timeouts"].values[1:] == [("inc", 1, tags)]
    assert fake.objects["agrpo_reward_errors"].values[1:] == [("inc", 1, tags)]
    assert fake.objects["agrpo_reward_mean_score"].values == [("set", 0.4, tags)]
    exported.record("gsm8k", outcomes[:1], PluginStats(calls=11, score_sum=5.0))
    assert fake.objects["agrpo_reward_timeouts"].values[1:] == [("inc", 1, tags)]  # nothing added without timeouts


def test_latency_buckets_resolve_sub_millisecond_calls() -> None:
    """A reward call of 0.47 ms lands in a bucket whose upper bound is 0.5 ms, not in '< 10 ms'."""
    fake = FakeMetrics()
    RayRewardMetrics("r", factory=fake).record("p", [PluginOutcome(score=1.0, latency_s=0.00047)], PluginStats())
    bounds = fake.objects["agrpo_reward_latency_seconds"].boundaries
    assert bounds == SECONDS_BOUNDARIES == sorted(SECONDS_BOUNDARIES)
    assert min(b for b in bounds if b >= 0.00047) == 0.0005
    assert sum(b < 0.01 for b in bounds) >= 6 and bounds[-1] >= 600


def test_the_keeper_sets_every_gauge_again_to_its_last_value() -> None:
    fake = FakeMetrics()
    keeper = idle_keeper()
    metrics = RoleMetrics("r", factory=fake, keeper=keeper)
    metrics.set("agrpo_accuracy", 0.25, {"task": "gsm8k"})
    metrics.set("agrpo_accuracy", 0.5, {"task": "gsm8k"})
    metrics.set("agrpo_accuracy", 0.75, {"task": "math"})
    metrics.inc("agrpo_rollout_worker_restarts_total")
    assert keeper.refresh() == 2
    accuracy = fake.objects["agrpo_accuracy"].values
    assert accuracy[3:] == [("set", 0.5, {"run": "r", "task": "gsm8k"}), ("set", 0.75, {"run": "r", "task": "math"})]
    assert fake.objects["agrpo_rollout_worker_restarts_total"].values == [("inc", 1.0, {"run": "r"})]


def test_the_keeper_thread_refreshes_on_its_own() -> None:
    fake = FakeMetrics()
    RoleMetrics("r", factory=fake, keeper=GaugeKeeper(interval_s=lambda: 0.01)).set("agrpo_learner_step", 7)
    gauge = fake.objects["agrpo_learner_step"]
    deadline = time.monotonic() + 30
    while len(gauge.values) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gauge.values[:3] == [("set", 7.0, {"run": "r"})] * 3


def _group(weight_version: int) -> Any:
    class Group:
        pass

    group = Group()
    group.weight_version = weight_version
    return group


def test_staleness_is_exported_once_per_group_and_dropped_groups_counted() -> None:
    fake = FakeMetrics()
    metrics = RoleMetrics("r", factory=fake, keeper=idle_keeper())
    manager = StalenessManager(max_staleness=1, total_steps=10)
    manager.admit(2, [_group(2), _group(1)])
    export = StalenessExport(metrics, manager)  # a resumed run: what was counted before is not exported again
    assert fake.objects["agrpo_staleness_dropped_groups_total"].values == [("record", 0.0, {"run": "r"})]
    manager.admit(5, [_group(5), _group(4), _group(2), _group(2)])
    export.update()
    export.update()
    observed = [value for _, value, _ in fake.objects["agrpo_staleness"].values]
    assert observed == [0, 1, 3, 3]
    assert fake.objects["agrpo_staleness_dropped_groups_total"].values[1:] == [("inc", 2, {"run": "r"})]
    assert manager.dropped == 2


def test_a_local_run_says_where_its_dashboard_and_metrics_are() -> None:
    session, temp = Path("/tmp/ray/session_x"), Path("/tmp/ray")
    lines = local_cluster_lines("127.0.0.1:8266", "127.0.0.1", 4321, session, temp, token=True)
    assert lines[0] == "Ray dashboard at http://127.0.0.1:8266 (sign in with the token `ray get-auth-token` prints)"
    assert "http://127.0.0.1:4321/metrics" in lines[1]
    assert str(session / "prom_metrics_service_discovery.json") in lines[1]
    off = local_cluster_lines(None, "127.0.0.1", 4321, session, temp, token=False)
    assert off == [
        "Prometheus metrics at http://127.0.0.1:4321/metrics (cluster.dashboard is false: no dashboard, no service-discovery file)"
    ]


@pytest.mark.parametrize("value", [np.float32(0.5), 0.5])
def test_numpy_and_python_numbers_are_both_exported(value: float) -> None:
    fake = FakeMetrics()
    RoleMetrics("r", factory=fake, keeper=idle_keeper()).set("agrpo_learner_lr", value)
    assert fake.objects["agrpo_learner_lr"].values == [("set", 0.5, {"run": "r"})]


def test_resume_truncation_survives_a_torn_line_and_drops_an_evaluation_to_redo(tmp_path) -> None:
    """A crash mid-write leaves a torn last line; resuming at step 2 keeps steps <= 2, and when the evaluation
    of step 2 is to run again (it was cut short), its accuracy line goes too, so it is not written twice."""
    import json

    from common.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 0, "accuracy": 0.5},
        {"step": 1, "prompts": [0], "loss": 1.0},
        {"step": 2, "prompts": [1], "loss": 0.9},
        {"step": 2, "accuracy": 0.6},
        {"step": 3, "prompts": [2], "loss": 0.8},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 4, "prom')
    log = MetricsLog(path)
    log.truncate_after(2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines[:4]
    log.truncate_after(2, drop_accuracy=True)
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines[:3]
    log.truncate_after(0, drop_accuracy=True)  # `--resume` without a checkpoint: the base evaluation runs again
    assert path.read_text() == ""
