"""Placement on a local Ray cluster with fake GPU resources, and fail-fast errors for bad cluster input."""

from __future__ import annotations

import time

import pytest
import ray
from ray.util.placement_group import placement_group_table

from cluster.placement import create_placements, remove_placements, role_bundles
from common.config import load_config
from common.errors import UserError


@pytest.fixture(scope="module")
def fake_gpu_ray():
    ray.init(num_cpus=2, num_gpus=4, object_store_memory=100 * 1024**2, include_dashboard=False)
    yield
    ray.shutdown()


def gpu_config(rollout: int, learners: int, gpus: float = 1.0):
    return load_config(
        None,
        [
            f"rollout.num_workers={rollout}",
            f"learner.world_size={learners}",
            "learner.groups_per_step=4",
            f"cluster.gpus_per_rollout_worker={gpus}",
            f"cluster.gpus_per_learner={gpus}",
            "cluster.cpus_per_rollout_worker=0.25",
            "cluster.cpus_per_learner=0.25",
        ],
    )


def test_bundles_and_actor_resources_follow_the_config(fake_gpu_ray) -> None:
    config = gpu_config(rollout=2, learners=2)
    placements = create_placements(config, timeout_s=30)
    try:
        table = {p.group.id.hex(): p for p in placements.values()}
        for pg_id, placement in table.items():
            info = placement_group_table(placement.group)
            bundles = list(info["bundles"].values())
            assert bundles == [{"CPU": 0.25, "GPU": 1.0}] * 2, placement.name
            assert info["state"] == "CREATED", pg_id
        options = placements["learner"].actor_options(1)
        assert (options["num_cpus"], options["num_gpus"]) == (0.25, 1.0)
        assert placements["rollout"].actor_options(1)["scheduling_strategy"].placement_group_bundle_index == 1
    finally:
        remove_placements(placements)


def test_cpu_bundles_when_no_gpus_are_asked_for() -> None:
    config = gpu_config(rollout=1, learners=2, gpus=0.0)
    bundles = role_bundles(config)
    assert bundles["rollout"] == [{"CPU": 0.25}]
    assert bundles["learner"] == [{"CPU": 0.25}] * 2
    assert bundles["reward"] == [{"CPU": config.cluster.cpus_per_reward_actor}]


def test_more_gpus_than_the_cluster_has_fails_fast_naming_what_is_missing(fake_gpu_ray) -> None:
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        create_placements(gpu_config(rollout=4, learners=2), timeout_s=30)
    message = str(info.value)
    assert "needs 6 GPU (rollout 4 x 1, learner 2 x 1) but the cluster has 4" in message
    assert time.monotonic() - start < 10
