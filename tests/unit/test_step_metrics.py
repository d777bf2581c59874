"""Statistics of a step's metrics line: zero-variance groups, completion length, the learner fields over ranks."""

import math

import numpy as np
import pytest

from cluster.step_metrics import completion_length, learner_fields, zero_variance_fraction
from common.config import SamplerConfig
from common.record import RolloutGroup, TrajectoryBatch
from learner.correction import MismatchStats

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


def test_learner_fields_weigh_the_mismatch_by_each_ranks_tokens() -> None:
    """A rank that measured more tokens counts for more in the means; maxima are over ranks; a rank that
    measured none (no recomputed pi_old) does not pull the means toward 0."""
    common = {"loss": 0.1, "grad_norm": 1.0, "lr": 1e-4, "clip_fraction": 0.0, "kl": 0.0, "timesteps_per_s": 10.0}
    a = MismatchStats(tokens=30, abs_sum=0.3, max=0.05, k3_sum=0.003, adjusted=3, drift_tokens=30, drift_sum=3.0)
    b = MismatchStats(tokens=10, abs_sum=0.5, max=0.2, k3_sum=0.001, adjusted=0, drift_tokens=10, drift_sum=1.0)
    line = learner_fields([{**common, **s.summary()} for s in (a, b, MismatchStats())])
    expected = {
        "rollout_mismatch_mean": (0.3 + 0.5) / 40,
        "rollout_mismatch_max": 0.2,
        "rollout_mismatch_kl": 0.004 / 40,
        "rollout_correction_fraction": 3 / 40,
        "rollout_mismatch_tokens": 40,
        "policy_drift_mean": 4.0 / 40,
        "timesteps_per_s": 30.0,
    }
    assert {k: line[k] for k in expected} == pytest.approx(expected)
