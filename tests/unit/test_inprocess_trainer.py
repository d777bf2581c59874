"""The in-process trainer learns a toy reward from random init with AGRPO and with diffu-GRPO."""

from __future__ import annotations

import math

import pytest

from common.config import AlgorithmConfig, Config, DiffuGRPOConfig, LearnerConfig, SamplerConfig
from tests.inprocess_trainer import InProcessTrainer
from tests.unit.learner_helpers import BANNED, EOS, MASK, PAD, tiny_model

TARGET = 3
PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12], [2, 4, 6]]


def target_fraction(ids: list[int]) -> float:
    """Toy reward: the share of completion tokens equal to TARGET (1/13 for a uniform policy)."""
    return sum(1 for t in ids if t == TARGET) / len(ids)


def _trainer(algorithm: AlgorithmConfig, seed: int = 0, **learner: object) -> InProcessTrainer:
    config = Config(
        seed=seed,
        sampler=SamplerConfig(gen_length=8, block_length=8, steps=4, temperature=1.0, remasking="random"),
        algorithm=algorithm,
        learner=LearnerConfig(
            lr=1e-2, steps=30, groups_per_step=4, micro_batch_size=16, warmup_ratio=0.0, schedule="constant", **learner
        ),
    )
    return InProcessTrainer(
        tiny_model(seed, n_layers=2),
        config,
        PROMPTS,
        target_fraction,
        mask_id=MASK,
        eos_id=EOS,
        pad_id=PAD,
        banned_ids=BANNED,
    )


def _rewards(trainer: InProcessTrainer, steps: int) -> list[float]:
    return [trainer.step()["reward_mean"] for _ in range(steps)]


@pytest.mark.slow
def test_agrpo_raises_the_reward() -> None:
    trainer = _trainer(AlgorithmConfig(name="agrpo", group_size=4, k=2))
    rewards = _rewards(trainer, 30)
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.2 and last > first + 0.4, f"reward {first:.3f} -> {last:.3f}"


@pytest.mark.slow
def test_diffu_grpo_raises_the_reward() -> None:
    algorithm = AlgorithmConfig(name="diffu_grpo", group_size=4, diffu_grpo=DiffuGRPOConfig(inner_iterations=2))
    trainer = _trainer(algorithm)
    rewards = _rewards(trainer, 30)
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.2 and last > first + 0.3, f"reward {first:.3f} -> {last:.3f}"


def test_step_reports_on_policy_statistics_and_is_seeded() -> None:
    a = _trainer(AlgorithmConfig(name="agrpo", group_size=4, k=3, beta=0.05), grad_accumulation=2)
    stats = a.step()
    assert stats["pairs"] == 4 * 4 * 3 and stats["forward_passes"] == 2 * math.ceil(8 * 3 / 16)
    assert stats["rollout_mismatch_max"] <= 1e-5 and stats["clip_fraction"] == 0 and stats["kl"] == 0
    assert stats["grad_norm"] > 0 and stats["lr"] == pytest.approx(1e-2)
    second = a.step()
    assert second["kl"] > 0, "after one update the policy differs from its frozen reference"
    again = _trainer(AlgorithmConfig(name="agrpo", group_size=4, k=3, beta=0.05), grad_accumulation=2).step()
    assert {k: v for k, v in again.items() if not k.endswith("seconds")} == {
        k: v for k, v in stats.items() if not k.endswith("seconds")
    }
