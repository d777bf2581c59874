"""Shared setup of the learner tests: a tiny model, sampled records, and gradient bookkeeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from common.config import AlgorithmConfig, SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from common.record import TrajectoryBatch
from learner.agrpo import Backward, LossStats, agrpo_pairs_loss, default_backward, draw_pairs
from learner.logprobs import LogitsFn
from learner.timesteps import sample_timesteps
from rollout.sampler import sample

VOCAB, MASK, EOS, PAD = 16, 15, 14, 13
BANNED = (PAD,)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8], [9], [2, 2, 2, 2], [7, 1], [3, 3, 3, 3, 3, 3], [5], [8, 6, 4]]


def tiny_model(seed: int = 0, n_layers: int = 1) -> nn.Module:
    shape = TinyModelConfig(
        d_model=32, n_layers=n_layers, n_heads=2, n_kv_heads=2, mlp_hidden_size=64, max_sequence_length=64
    )
    return build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=seed).eval()


def sampled_batch(
    model: nn.Module, cfg: SamplerConfig, seed: int = 0, prompts: Sequence[Sequence[int]] = PROMPTS
) -> TrajectoryBatch:
    return sample(model, list(prompts), cfg, MASK, EOS, PAD, torch.Generator().manual_seed(seed), BANNED)


def end_early(batch: TrajectoryBatch, last_steps: Sequence[int]) -> TrajectoryBatch:
    """The same trajectories with every token committed after step last_steps[i] replaced by EOS.

    States at t <= last_steps[i] and the tokens committed there are unchanged, so the record stays exact
    for every pair a loss can draw, while L_i now varies across rows.
    """
    after = batch.unmask_step.astype(np.int64) > np.asarray(last_steps)[:, None]
    return dataclasses.replace(batch, completion_ids=np.where(after, EOS, batch.completion_ids).astype(np.int32))


def perturb_old_logprob(batch: TrajectoryBatch, scale: float, seed: int) -> TrajectoryBatch:
    """Off-policy old log-probs (ratios away from 1, some clipped) for tests of the full surrogate."""
    noise = np.random.default_rng(seed).normal(0.0, scale, batch.logprob.shape).astype(np.float32)
    return dataclasses.replace(batch, logprob=batch.logprob + noise)


def flat_grad(model: nn.Module) -> torch.Tensor:
    """All parameter gradients as one float64 vector (zeros where a parameter got none)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).double()
            for p in model.parameters()
        ]
    )


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def agrpo_loss(
    model: nn.Module,
    batch: TrajectoryBatch,
    advantages: torch.Tensor,
    algorithm: AlgorithmConfig,
    *,
    micro_batch_size: int,
    pad_id: int,
    generator: torch.Generator,
    banned_ids: Sequence[int] = (),
    backward: Backward = default_backward,
    ref_logits_fn: LogitsFn | None = None,
    logits_fn: LogitsFn | None = None,
) -> LossStats:
    """Draw k timesteps per trajectory (per `algorithm`), then accumulate the packed loss gradient (the driver
    does the same through learner.update.policy_update)."""
    rows, steps, coef = draw_pairs(batch, algorithm, generator)
    return agrpo_pairs_loss(
        model,
        batch,
        advantages,
        rows,
        steps,
        coef,
        clip_eps=algorithm.clip_eps,
        micro_batch_size=micro_batch_size,
        pad_id=pad_id,
        beta=algorithm.beta,
        banned_ids=banned_ids,
        backward=backward,
        ref_logits_fn=ref_logits_fn,
        logits_fn=logits_fn,
    )


def exact_pairs(batch: TrajectoryBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every step 0..L_i of every trajectory with coef 1/(L_i+1): the estimator's target, for checks."""
    last = torch.from_numpy(np.asarray(batch.last_step()))
    return sample_timesteps(last, "all", "uniform", "uniform", None, torch.Generator())
