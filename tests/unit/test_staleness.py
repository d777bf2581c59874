"""StalenessManager: the in-flight window and the admission formula learner_version - group_version <= S."""

import numpy as np
import pytest

from cluster.staleness import StalenessManager
from common.config import SamplerConfig
from common.record import RolloutGroup, TrajectoryBatch


def group(version: int, index: int = 0) -> RolloutGroup:
    batch = TrajectoryBatch(
        prompt_ids=[np.zeros(1, dtype=np.int32)],
        completion_ids=np.zeros((1, 4), dtype=np.int32),
        unmask_step=np.zeros((1, 4), dtype=np.int16),
        logprob=np.zeros((1, 4), dtype=np.float32),
        entropy=np.zeros((1, 4), dtype=np.float32),
        filled=np.zeros((1, 4), dtype=bool),
        allowed_ids=None,
        sampler=SamplerConfig(gen_length=4, block_length=4, steps=4),
        mask_id=9,
        eos_id=8,
    )
    return RolloutGroup(prompt_index=index, trajectories=batch, weight_version=version, seed=0)


def test_on_policy_admits_only_the_current_version() -> None:
    manager = StalenessManager(max_staleness=0, total_steps=10)
    current, old = group(3), group(2)
    assert manager.admit(3, [current, old]) == [current]
    assert (manager.accepted, manager.dropped) == (1, 1)
    assert manager.histogram == {0: 1, 1: 1}


def test_lagged_admission_and_counts_add_up() -> None:
    manager = StalenessManager(max_staleness=1, total_steps=10)
    groups = [group(v, i) for i, v in enumerate((5, 4, 3, 4, 1))]
    assert [g.prompt_index for g in manager.admit(5, groups)] == [0, 1, 3]
    assert manager.accepted + manager.dropped == 5
    assert manager.histogram == {0: 1, 1: 2, 2: 1, 4: 1}


@pytest.mark.parametrize("staleness", [0, 1, 3])
def test_dispatch_window_samples_batch_b_with_version_at_least_b_minus_s(staleness: int) -> None:
    """Simulate the driver: batch b is sampled with the version the learner holds when it is dispatched."""
    total = 7
    manager = StalenessManager(max_staleness=staleness, total_steps=total)
    sampled_with = {b: 0 for b in manager.dispatchable(0)}
    for step in range(total):
        assert step in sampled_with, "the batch a step trains on was dispatched before the step"
        assert max(sampled_with) == manager.last_in_flight(step)
        for batch in manager.dispatchable(step + 1) if step + 1 < total else ():
            sampled_with[batch] = step + 1
    assert sorted(sampled_with) == list(range(total)), "every batch is dispatched exactly once"
    assert all(version >= batch - staleness for batch, version in sampled_with.items())
    assert all(batch - version <= staleness for batch, version in sampled_with.items())


def test_dispatchable_returns_each_batch_once_and_stops_at_the_last_step() -> None:
    manager = StalenessManager(max_staleness=2, total_steps=4)
    assert list(manager.dispatchable(0)) == [0, 1, 2]
    assert list(manager.dispatchable(0)) == []
    assert list(manager.dispatchable(1)) == [3]
    assert list(manager.dispatchable(2)) == []


def test_state_round_trip() -> None:
    manager = StalenessManager(max_staleness=2, total_steps=9)
    manager.dispatchable(1)
    manager.admit(3, [group(0), group(0), group(1)])
    other = StalenessManager(max_staleness=2, total_steps=9)
    other.load_state_dict(manager.state_dict())
    assert other.state_dict() == manager.state_dict()
    assert list(other.dispatchable(1)) == []


def test_a_group_newer_than_the_learner_is_a_bug() -> None:
    with pytest.raises(ValueError, match="newer than learner version"):
        StalenessManager(max_staleness=1, total_steps=3).admit(learner_version=1, groups=[group(2)])
