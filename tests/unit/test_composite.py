"""Composite sequences: one forward per trajectory gives the per-timestep log-probs, loss and gradient."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from common.config import AlgorithmConfig, Config, LearnerConfig, SamplerConfig
from common.errors import ConfigError
from common.model.block_mask import block_spec
from common.record import TrajectoryBatch
from learner.agrpo import LossStats, agrpo_pairs_loss
from learner.composite import build_composite_tokens, trajectory_chunks
from learner.logprobs import model_logits
from learner.timesteps import sample_timesteps
from learner.update import policy_update
from rollout.sampler import sample
from tests.unit.block_helpers import EOS, MASK, PAD, PROMPTS, block_model
from tests.unit.learner_helpers import flat_grad, perturb_old_logprob


def _record(model: nn.Module, seed: int = 0) -> TrajectoryBatch:
    """Prompts of 1 to 9 tokens (left padding); off-policy old log-probs so that some ratios are clipped."""
    cfg = SamplerConfig(gen_length=16, block_length=4, steps=8, temperature=1.0, top_k=8, remasking="random")
    record = sample(model, PROMPTS * 2, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(seed), (PAD,))
    return perturb_old_logprob(record, 0.3, seed)


def _pairs(record: TrajectoryBatch, k: int | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    last = torch.from_numpy(record.last_step())
    if k == "same_block":
        # Two timesteps in one block for every row: steps 2t and 2t+1 (two steps per block), t <= L_i.
        rows = torch.arange(record.size).repeat_interleave(2)
        first = (last // 2 * 2).clamp(max=last - 1).clamp(min=0)
        steps = torch.stack([first, torch.minimum(first + 1, last)], dim=1).reshape(-1)
        return rows, steps, torch.full((rows.numel(),), 0.5, dtype=torch.float64)
    return sample_timesteps(last, k, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(5))


def _loss(model: nn.Module, record: TrajectoryBatch, pairs: tuple, composite: bool, **kw: object) -> LossStats:
    model.zero_grad(set_to_none=True)
    return agrpo_pairs_loss(
        model,
        record,
        torch.linspace(-1.0, 1.0, record.size),
        *pairs,
        clip_eps=0.2,
        micro_batch_size=6,
        pad_id=PAD,
        banned_ids=(PAD,),
        composite=composite,
        **kw,
    )


@pytest.mark.parametrize("k", [1, 4, "all", "same_block"])
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_composite_rows_give_the_per_timestep_loss_and_gradient(k: int | str, shift: bool) -> None:
    model = block_model(shift=shift, sharp=False, eos_boost=60.0)
    record = _record(model)
    exited = record.filled.any(axis=1)
    assert exited.any() and not exited.all(), "the batch should mix EOS rows (early exit) and full rows"
    pairs = _pairs(record, k)
    rows_stats = _loss(model, record, pairs, composite=False)
    rows_grad = flat_grad(model)
    comp_stats = _loss(model, record, pairs, composite=True)
    comp_grad = flat_grad(model)
    assert comp_stats.tokens == rows_stats.tokens > 0
    assert comp_stats.clip_fraction == rows_stats.clip_fraction > 0
    assert comp_stats.loss == pytest.approx(rows_stats.loss, abs=1e-5)
    assert comp_stats.mean_ratio == pytest.approx(rows_stats.mean_ratio, abs=1e-5)
    assert comp_stats.mismatch.max == pytest.approx(rows_stats.mismatch.max, abs=1e-5)
    assert float(rows_grad.abs().max()) > 1e-3
    torch.testing.assert_close(comp_grad, rows_grad, atol=1e-5, rtol=0)
    # Whole trajectories per pass, as many as fit in 6 pairs.
    assert comp_stats.forward_passes == len(trajectory_chunks(pairs[0].numpy(), 6))


def test_composite_kl_term_matches_per_timestep_rows() -> None:
    model = block_model(sharp=False)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn_like(p))
    record = _record(model)
    pairs = _pairs(record, 4)
    ref = model_logits(reference)
    a = _loss(model, record, pairs, composite=False, beta=0.1, ref_logits_fn=ref)
    b = _loss(model, record, pairs, composite=True, beta=0.1, ref_logits_fn=ref)
    assert a.kl > 0 and b.kl == pytest.approx(a.kl, abs=1e-6)
    assert b.loss == pytest.approx(a.loss, abs=1e-5)


def test_composite_layout_copies_sit_at_their_blocks_positions() -> None:
    model = block_model()
    record = _record(model)
    rows, steps = np.array([2, 2, 2, 5]), np.array([0, 3, 2, 1])
    tokens = build_composite_tokens(record, rows, steps, PAD, block_spec(model))
    c = tokens.composite
    prompts = [len(record.prompt_ids[r]) for r in (2, 5)]
    assert c.input_ids.shape == (2, max(prompts) + 16 + 3 * 4)
    # Row 0 is trajectory 2: copies of blocks 0, 1, 1 (steps 0, 3, 2), holding the states at those steps.
    for q, (t, b) in enumerate([(0, 0), (3, 1), (2, 1)]):
        cols = slice(c.copy_start + 4 * q, c.copy_start + 4 * (q + 1))
        state = record.state_at(np.array([2]), np.array([t]))[0, 4 * b : 4 * (b + 1)]
        assert c.input_ids[0, cols].tolist() == state.tolist()
        assert c.positions[0, cols].tolist() == list(range(prompts[0] + 4 * b, prompts[0] + 4 * (b + 1)))
    assert c.input_ids[1, c.copy_start + 4 :].tolist() == [PAD] * 8, "row 1 has one copy; the rest is padding"
    committed = (record.unmask_step[rows] == steps[:, None]) & ~record.filled[rows]
    assert tokens.num_tokens == int(committed.sum())


def test_trajectory_chunks_keep_trajectories_whole() -> None:
    rows = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3])
    assert trajectory_chunks(rows, 5) == [slice(0, 5), slice(5, 10), slice(10, 11)]
    assert trajectory_chunks(rows, 3) == [slice(0, 3), slice(3, 5), slice(5, 10), slice(10, 11)]
    assert trajectory_chunks(rows, 100) == [slice(0, 11)]


def test_policy_update_scores_block_models_in_composite_rows() -> None:
    model = block_model(sharp=False)
    record = _record(model)
    config = Config(
        sampler=record.sampler,
        algorithm=AlgorithmConfig(group_size=4, k=4),
        learner=LearnerConfig(groups_per_step=2, micro_batch_size=8),
    )
    calls: list[bool] = []
    stats = policy_update(
        model,
        record,
        torch.linspace(-1.0, 1.0, record.size),
        config,
        pad_id=PAD,
        banned_ids=(PAD,),
        backward=lambda loss, last: calls.append(last) or loss.backward(),
        optimizer_step=lambda: {"grad_norm": 0.0, "lr": 0.0},
        generator=torch.Generator().manual_seed(0),
    )
    # 8 trajectories x 4 pairs, whole trajectories up to 8 pairs per pass: 4 passes, the last closes the step.
    assert stats["pairs"] == 32 and stats["forward_passes"] == 4
    assert calls == [False, False, False, True]
    diffu = config.model_copy(update={"algorithm": AlgorithmConfig(name="diffu_grpo", group_size=4)})
    with pytest.raises(ConfigError, match="diffu-GRPO baseline runs on full-attention models only"):
        policy_update(
            model,
            record,
            torch.zeros(record.size),
            diffu,
            pad_id=PAD,
            banned_ids=(PAD,),
            backward=lambda loss, last: None,
            optimizer_step=dict,
            generator=torch.Generator(),
            mask_seeds=[0],
        )
