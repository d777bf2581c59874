"""Threshold decoding and the dual cache through the whole loop: variable per-row step counts reach the learner."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from tests.integration.test_training_loop import metrics_lines, run_to_end, small_config


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, namespace="agrpo")
    yield
    ray.shutdown()


@pytest.mark.parametrize("kv_cache", ["off", "dual"])
def test_threshold_rollouts_train_through_the_whole_loop(local_ray, tmp_path: Path, kv_cache: str) -> None:
    """On-policy: with exact rollouts the learner recomputes every recorded log-prob, each row at its own steps;
    with the dual cache it recomputes the exact ones, which differ from what the rollout sampled from."""
    config = small_config(
        tmp_path,
        "sampler.gen_length=16",
        "sampler.block_length=8",
        "sampler.steps=8",
        "sampler.unmask=threshold",
        "sampler.threshold=0.3",
        f"sampler.kv_cache={kv_cache}",
        "evaluation.kv_cache=auto",
        "evaluation.unmask=fixed",
        "rollout.max_staleness=0",
        "learner.steps=2",
    )
    _, checksums = run_to_end(config)
    assert checksums["rollout"] == checksums["learner"]
    lines = metrics_lines(tmp_path)
    assert [line["step"] for line in lines] == [1, 2]
    diffs = [line["rollout_mismatch_max"] for line in lines]
    if kv_cache == "off":
        assert all(d < 1e-4 for d in diffs), diffs
    else:
        assert all(d > 1e-4 for d in diffs), diffs
