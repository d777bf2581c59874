"""A run whose reward plugin fails on every sample: warned about by name, and stopped unless the user opts out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from cluster.reward_health import RewardsFailed
from cluster.train import train
from common.config import Config, load_config
from tests.small_run import RECIPE, SMALL_RUN

ALWAYS_FAILS = ["rewards.modules=[tests.plugins_for_tests]", "rewards.plugins=[{name: test_always_fails}]"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, namespace="agrpo")
    yield
    ray.shutdown()


def small_config(run_dir: Path, *overrides: str) -> Config:
    return load_config(RECIPE, [f"run_dir={run_dir}", *SMALL_RUN, *ALWAYS_FAILS, *overrides])


def training_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "prompts" in line]


def test_a_plugin_failing_on_every_sample_is_named_and_stops_the_run_before_training(
    local_ray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RewardsFailed) as info:
        train(small_config(tmp_path, "learner.steps=3"))
    assert str(info.value).startswith(
        "every one of the 16 samples of step 1 failed to score (test_always_fails: KeyError: 'solution')"
    )
    err = capsys.readouterr().err
    assert "warning: reward plugin 'test_always_fails' failed on 100% of its calls over the last 1 step" in err
    assert training_lines(tmp_path) == []  # stopped before the first update


def test_with_the_opt_out_the_run_goes_on_and_warns(
    local_ray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = train(small_config(tmp_path, "learner.steps=2", "rewards.stop_when_all_fail=false"))
    assert summary.steps == 2
    lines = training_lines(tmp_path)
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["reward_mean"] == 0.0 for line in lines)
    err = capsys.readouterr().err
    assert "warning: reward plugin 'test_always_fails' failed on 100% of its calls" in err
    assert (
        "every one of the 16 samples of step 2 failed to score (test_always_fails: KeyError: 'solution'); training on"
        in err
    )
