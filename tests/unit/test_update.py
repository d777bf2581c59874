"""policy_update: however a batch is cut into accumulation chunks, the gradient is the batch mean."""

from __future__ import annotations

import pytest
import torch

from common.config import AlgorithmConfig, Config, LearnerConfig, SamplerConfig
from learner.update import policy_update
from tests.unit.learner_helpers import BANNED, PAD, flat_grad, perturb_old_logprob, sampled_batch, tiny_model

SAMPLER = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=1.0, remasking="random")


def gradient(accumulation: int) -> torch.Tensor:
    model = tiny_model(seed=3).train()
    batch = perturb_old_logprob(sampled_batch(tiny_model(seed=3), SAMPLER, seed=1, prompts=[[1, 2]] * 6), 0.3, 0)
    config = Config(
        sampler=SAMPLER,
        algorithm=AlgorithmConfig(group_size=2, k="all"),
        learner=LearnerConfig(groups_per_step=3 * accumulation, grad_accumulation=accumulation, micro_batch_size=5),
    )
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    model.zero_grad()
    policy_update(
        model,
        batch,
        advantages,
        config,
        pad_id=PAD,
        banned_ids=BANNED,
        backward=lambda loss, last: loss.backward(),
        optimizer_step=lambda: {"grad_norm": 0.0, "lr": 0.0},
        generator=torch.Generator().manual_seed(0),
    )
    return flat_grad(model)


def test_uneven_accumulation_chunks_give_the_batch_mean_gradient() -> None:
    """Three groups in two chunks (2 + 1 groups): each chunk weighs by its share, not by 1/2."""
    whole, split = gradient(1), gradient(2)
    assert whole.norm() > 0
    assert torch.allclose(split, whole, atol=1e-6, rtol=1e-5), (split - whole).abs().max()


@pytest.mark.parametrize("accumulation", [3])
def test_even_chunks_match_too(accumulation: int) -> None:
    assert torch.allclose(gradient(accumulation), gradient(1), atol=1e-6, rtol=1e-5)
