"""The two group statistics of a step's metrics line: zero-variance groups and completion length."""

import math

import numpy as np

from cluster.step_metrics import completion_length, zero_variance_fraction
from common.config import SamplerConfig
from common.record import RolloutGroup, TrajectoryBatch

EOS = 8


def group(completions: list[list[int]], rewards: list[float] | None) -> RolloutGroup:
    ids = np.array(completions, dtype=np.int32)
    rows, width = ids.shape
    batch = TrajectoryBatch(
        prompt_ids=[np.zeros(1, dtype=np.int32)] * rows,
        completion_ids=ids,
        unmask_step=np.zeros((rows, width), dtype=np.int16),
        logprob=np.zeros((rows, width), dtype=np.float32),
        entropy=np.zeros((rows, width), dtype=np.float32),
        filled=np.zeros((rows, width), dtype=bool),
        allowed_ids=None,
        sampler=SamplerConfig(gen_length=width, block_length=width, steps=width),
        mask_id=9,
        eos_id=EOS,
    )
    scored = None if rewards is None else np.array(rewards, dtype=np.float32)
    return RolloutGroup(prompt_index=0, trajectories=batch, weight_version=0, seed=0, rewards=scored)


def test_zero_variance_fraction_counts_groups_whose_rewards_are_all_equal() -> None:
    groups = [
        group([[1, EOS], [2, EOS]], [1.0, 1.0]),
        group([[1, EOS], [2, EOS]], [0.0, 0.0]),
        group([[1, EOS], [2, EOS]], [0.0, 0.5]),
        group([[1, EOS], [2, EOS]], [0.3, 0.3 + 1e-6]),
    ]
    assert zero_variance_fraction(groups) == 0.5
    assert math.isnan(zero_variance_fraction([]))


def test_completion_length_counts_tokens_before_the_first_eos() -> None:
    groups = [group([[1, 2, EOS, 3], [EOS, EOS, EOS, EOS]], None), group([[1, 2, 3, 4], [5, EOS, 6, EOS]], None)]
    assert completion_length(groups) == (2 + 0 + 4 + 1) / 4
    assert math.isnan(completion_length([]))
