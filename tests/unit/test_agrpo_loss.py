"""AGRPO loss: on-policy ratio 1, packing invariance, unbiased and lower-variance gradients, KL."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from common.config import AlgorithmConfig, SamplerConfig
from common.record import RolloutGroup, TrajectoryBatch, group_advantages, group_from_state, group_to_state
from learner.agrpo import agrpo_pairs_loss
from learner.logprobs import build_step_tokens, model_logits, step_token_logprobs
from learner.timesteps import draw_uniforms, sample_timesteps
from tests.unit.learner_helpers import (
    BANNED,
    EOS,
    MASK,
    PAD,
    agrpo_loss,
    end_early,
    exact_pairs,
    flat_grad,
    num_params,
    perturb_old_logprob,
    sampled_batch,
    tiny_model,
)

STAT_CFG = SamplerConfig(gen_length=8, block_length=4, steps=8, temperature=1.0, remasking="random")
LAST_STEPS = [7, 2, 5, 0, 7, 3, 6, 1]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(0)


@pytest.fixture(scope="module")
def stat_batch(model: torch.nn.Module) -> TrajectoryBatch:
    """Eight trajectories with L_i from 0 to 7 and off-policy old log-probs (ratios != 1, some clipped)."""
    batch = end_early(sampled_batch(model, STAT_CFG, seed=0), LAST_STEPS)
    return perturb_old_logprob(batch, 0.3, seed=0)


ADV = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, 0.9, -0.7, -0.6])


def _pairs_grad(
    model: torch.nn.Module, batch: TrajectoryBatch, pairs: tuple[torch.Tensor, ...], mbs: int = 64, **kw: object
) -> tuple[torch.Tensor, object]:
    model.zero_grad(set_to_none=True)
    stats = agrpo_pairs_loss(
        model, batch, ADV, *pairs, clip_eps=0.2, micro_batch_size=mbs, pad_id=PAD, banned_ids=BANNED, **kw
    )
    return flat_grad(model), stats


@pytest.mark.parametrize("remasking", ["low_confidence", "random", "entropy"])
@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (5, 1.0), (0, 0.8), (6, 0.9)])
def test_recomputed_logprobs_match_the_rollout(
    model: torch.nn.Module, remasking: str, top_k: int, top_p: float
) -> None:
    """Rebuilt states give the recorded log-probs within 1e-5, in a learner batch padded differently."""
    cfg = SamplerConfig(
        gen_length=8, block_length=4, steps=4, temperature=0.8, top_k=top_k, top_p=top_p, remasking=remasking
    )
    batch = sampled_batch(model, cfg, seed=3)
    # Regroup rows so every learner micro-batch has a different longest prompt than the rollout batch.
    batch = batch.select([2, 6, 0, 3, 1, 4, 5, 7])
    rows, steps, _ = exact_pairs(batch)
    for chunk in np.array_split(np.arange(len(rows)), 5):
        tokens = build_step_tokens(batch, rows.numpy()[chunk], steps.numpy()[chunk], PAD)
        with torch.no_grad():
            logprob = step_token_logprobs(model_logits(model), tokens, batch, BANNED)
        assert torch.allclose(logprob, tokens.behaviour_logprob, atol=1e-5, rtol=0)
    stats = agrpo_loss(
        model,
        batch,
        ADV,
        AlgorithmConfig(k=2),
        micro_batch_size=5,
        pad_id=PAD,
        generator=torch.Generator().manual_seed(0),
        banned_ids=BANNED,
    )
    assert stats.mismatch.max <= 1e-5 and abs(stats.mean_ratio - 1.0) <= 1e-5 and stats.clip_fraction == 0


def test_greedy_records_are_scored_at_temperature_one(model: torch.nn.Module) -> None:
    cfg = SamplerConfig(gen_length=8, block_length=4, steps=8, temperature=0.0, remasking="low_confidence")
    batch = sampled_batch(model, cfg, seed=0)
    rows, steps, _ = exact_pairs(batch)
    tokens = build_step_tokens(batch, rows.numpy(), steps.numpy(), PAD)
    with torch.no_grad():
        logprob = step_token_logprobs(model_logits(model), tokens, batch, BANNED)
    assert torch.allclose(logprob, tokens.behaviour_logprob, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mbs", [1, 3, 16, 64])
def test_packing_gives_the_per_timestep_gradient(model: torch.nn.Module, stat_batch: TrajectoryBatch, mbs: int) -> None:
    """Any packing equals one pass per sampled timestep (the reference loop); passes = ceil(pairs/mbs)."""
    last = torch.from_numpy(stat_batch.last_step())
    rows, steps, coef = sample_timesteps(last, 4, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(1))
    reference = torch.zeros(num_params(model), dtype=torch.float64)
    for j in range(4):
        column = torch.arange(j, len(rows), 4)
        reference += _pairs_grad(model, stat_batch, (rows[column], steps[column], coef[column]))[0]
    packed, stats = _pairs_grad(model, stat_batch, (rows, steps, coef), mbs=mbs)
    assert torch.allclose(packed, reference, atol=1e-7, rtol=1e-5)
    assert stats.forward_passes == math.ceil(len(rows) / mbs) and stats.pairs == len(rows)
    assert stats.clip_fraction > 0, "the perturbed old log-probs should clip some tokens"


def _estimates(model: torch.nn.Module, batch: TrajectoryBatch, algo: AlgorithmConfig, draws: int) -> torch.Tensor:
    out = []
    for seed in range(draws):
        model.zero_grad(set_to_none=True)
        agrpo_loss(
            model,
            batch,
            ADV,
            algo,
            micro_batch_size=64,
            pad_id=PAD,
            generator=torch.Generator().manual_seed(seed),
            banned_ids=BANNED,
        )
        out.append(flat_grad(model))
    return torch.stack(out)


def _directions(model: torch.nn.Module) -> torch.Tensor:
    return torch.randn(num_params(model), 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scheme", "weighting"), [("uniform", "uniform"), ("low_discrepancy", "uniform"), ("low_discrepancy", "entropy")]
)
def test_gradient_estimate_is_unbiased(
    model: torch.nn.Module, stat_batch: TrajectoryBatch, scheme: str, weighting: str
) -> None:
    """Mean of 400 k=2 estimates (fresh draws) matches the k='all' gradient within 4.5 SE on 3 projections."""
    dirs = _directions(model)
    exact = _pairs_grad(model, stat_batch, exact_pairs(stat_batch))[0] @ dirs
    algo = AlgorithmConfig(k=2, timestep_sampling=scheme, importance_sampling=weighting)
    proj = _estimates(model, stat_batch, algo, 400) @ dirs
    se = proj.std(dim=0) / math.sqrt(len(proj))
    assert bool((se > 1e-3 * exact.abs().max()).all()), "k=2 of up to 8 steps must be a noisy estimate"
    assert bool(((proj.mean(dim=0) - exact).abs() <= 4.5 * se).all())


@pytest.mark.slow
def test_unbiasedness_check_rejects_a_biased_step_map(model: torch.nn.Module, stat_batch: TrajectoryBatch) -> None:
    """The same statistic flags floor(u * L_i), which never draws the last step."""
    dirs = _directions(model)
    exact = _pairs_grad(model, stat_batch, exact_pairs(stat_batch))[0] @ dirs
    last = torch.from_numpy(stat_batch.last_step())
    proj = []
    for seed in range(400):
        u = draw_uniforms(len(last), 2, "low_discrepancy", torch.Generator().manual_seed(seed))
        steps = torch.floor(u * last[:, None]).long().reshape(-1)
        rows = torch.arange(len(last)).repeat_interleave(2)
        coef = torch.full((len(rows),), 0.5, dtype=torch.float64)
        proj.append(_pairs_grad(model, stat_batch, (rows, steps, coef))[0] @ dirs)
    proj_t = torch.stack(proj)
    se = proj_t.std(dim=0) / math.sqrt(len(proj_t))
    assert bool(((proj_t.mean(dim=0) - exact).abs() > 4.5 * se).any())


def _variance(
    batch_rows: list[int], k: int, scheme: str, table: torch.Tensor, batch: TrajectoryBatch, draws: int
) -> float:
    """Trace of the gradient-estimate covariance: Cov(pair weights) contracted with the pair Gram matrix."""
    last = torch.from_numpy(batch.last_step())
    offset = torch.cumsum(last + 1, 0) - (last + 1)
    sel = torch.tensor(batch_rows)
    weights = torch.zeros(draws, table.shape[0], dtype=torch.float64)
    for d in range(draws):
        rows, steps, coef = sample_timesteps(last[sel], k, scheme, "uniform", None, torch.Generator().manual_seed(d))
        weights[d].index_add_(0, offset[sel][rows] + steps, coef)
    return float((torch.cov(weights.T) * (table @ table.T)).sum())


@pytest.mark.slow
def test_low_discrepancy_lowers_gradient_variance(model: torch.nn.Module, stat_batch: TrajectoryBatch) -> None:
    """Per-pair gradients are exact; the estimate is linear in them, so its variance follows from the draws."""
    rows, steps, _ = exact_pairs(stat_batch)
    one = torch.ones(1, dtype=torch.float64)
    table = torch.stack(
        [_pairs_grad(model, stat_batch, (rows[i : i + 1], steps[i : i + 1], one))[0] for i in range(len(rows))]
    )
    draw = sample_timesteps(
        torch.from_numpy(stat_batch.last_step()), 4, "low_discrepancy", "uniform", None, torch.Generator()
    )
    offset = torch.cumsum(torch.from_numpy(stat_batch.last_step()) + 1, 0)
    index = offset[draw[0]] - (torch.from_numpy(stat_batch.last_step())[draw[0]] + 1) + draw[1]
    linear = (draw[2][:, None] * table[index]).sum(dim=0)
    assert torch.allclose(_pairs_grad(model, stat_batch, draw)[0], linear, atol=1e-7, rtol=1e-5)
    everyone = list(range(stat_batch.size))
    for batch_rows, draws, margin in [(everyone, 8000, 0.96), ([0, 4], 4000, 0.8)]:
        iid = _variance(batch_rows, 4, "uniform", table, stat_batch, draws)
        low = _variance(batch_rows, 4, "low_discrepancy", table, stat_batch, draws)
        assert low < margin * iid, f"rows {batch_rows}: low-discrepancy {low:.4f} vs i.i.d. {iid:.4f}"


def test_kl_vanishes_against_itself_and_pulls_toward_the_reference(stat_batch: TrajectoryBatch) -> None:
    policy = tiny_model(0)
    pairs = exact_pairs(stat_batch)
    plain, _ = _pairs_grad(policy, stat_batch, pairs)
    same, stats = _pairs_grad(policy, stat_batch, pairs, beta=0.5, ref_logits_fn=model_logits(copy.deepcopy(policy)))
    assert stats.kl == 0 and torch.allclose(plain, same, atol=1e-9)

    reference = tiny_model(5)
    zero_adv = torch.zeros(stat_batch.size)

    def kl_step() -> float:
        policy.zero_grad(set_to_none=True)
        stats = agrpo_pairs_loss(
            policy,
            stat_batch,
            zero_adv,
            *pairs,
            clip_eps=0.2,
            micro_batch_size=64,
            pad_id=PAD,
            beta=1.0,
            banned_ids=BANNED,
            ref_logits_fn=model_logits(reference),
        )
        with torch.no_grad():
            for p in policy.parameters():
                p -= 0.1 * p.grad
        return stats.kl

    first = kl_step()
    later = [kl_step() for _ in range(5)]
    assert first > 0 and later[-1] < 0.8 * first and all(b < a for a, b in zip([first, *later], later, strict=False))


def test_kl_without_reference_is_an_error(model: torch.nn.Module, stat_batch: TrajectoryBatch) -> None:
    with pytest.raises(ValueError, match="ref_logits_fn"):
        _pairs_grad(model, stat_batch, exact_pairs(stat_batch), beta=0.1)


def _naive_logprob(net: torch.nn.Module, batch: TrajectoryBatch, i: int, state: list[int], j: int) -> torch.Tensor:
    """log p(token j of row i | prompt + state), unpadded, under the record's temperature and allowed set."""
    prompt = list(batch.prompt_ids[i])
    scores = net(torch.tensor([prompt + state])).logits[0, len(prompt) + j].float()
    scores[[MASK, *BANNED]] = float("-inf")
    allowed = batch.allowed_ids[i, j]
    allowed = allowed[allowed >= 0]
    kept = torch.full_like(scores, float("-inf"))
    kept[allowed] = scores[allowed] / batch.sampler.temperature
    return torch.log_softmax(kept, -1)[int(batch.completion_ids[i, j])]


def _naive_objective(
    model: torch.nn.Module,
    reference: torch.nn.Module,
    batch: TrajectoryBatch,
    advantages: torch.Tensor,
    clip_eps: float,
    beta: float,
) -> torch.Tensor:
    """ALGORITHM.md section 3 written as the plainest loop: one forward per committed token, t = 0..L_i.

    J = (1/B) sum_i 1/(L_i+1) sum_{t<=L_i} sum_{j committed at t} [min(rho A_i, clip(rho) A_i) - beta KL3].
    """
    objective = torch.zeros((), dtype=torch.float64)
    for i in range(batch.size):
        steps = batch.unmask_step[i].astype(int)
        real = (batch.completion_ids[i] != EOS) & ~batch.filled[i]
        last = int(steps[real].max()) if real.any() else 0
        inner = torch.zeros((), dtype=torch.float64)
        for t in range(last + 1):
            state = [MASK if steps[j] >= t else int(batch.completion_ids[i, j]) for j in range(len(steps))]
            for j in np.flatnonzero((steps == t) & ~batch.filled[i]):
                current = _naive_logprob(model, batch, i, state, j)
                ratio = torch.exp(current - float(batch.logprob[i, j]))
                a = advantages[i]
                term = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
                with torch.no_grad():
                    ref = _naive_logprob(reference, batch, i, state, j)
                term = term - beta * (torch.exp(ref - current) - (ref - current) - 1)
                inner = inner + term.double()
        objective = objective + inner / (last + 1)
    return objective / batch.size


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_exact_loss_equals_the_written_out_objective(model: torch.nn.Module, beta: float) -> None:
    """An independent loop over the spec's formula gives the same loss and gradient as the packed code."""
    cfg = SamplerConfig(gen_length=8, block_length=4, steps=8, temperature=0.8, top_k=6, remasking="random")
    batch = perturb_old_logprob(end_early(sampled_batch(model, cfg, seed=0), LAST_STEPS), 0.3, 0)
    advantages = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, 0.9, -0.7, -0.6])
    reference = tiny_model(5)
    policy = copy.deepcopy(model)
    policy.zero_grad()
    (-_naive_objective(policy, reference, batch, advantages, 0.2, beta)).backward()
    expected = flat_grad(policy)
    policy.zero_grad()
    stats = agrpo_pairs_loss(
        policy,
        batch,
        advantages,
        *exact_pairs(batch),
        clip_eps=0.2,
        micro_batch_size=7,
        pad_id=PAD,
        beta=beta,
        banned_ids=BANNED,
        ref_logits_fn=model_logits(reference),
    )
    with torch.no_grad():
        naive = float(-_naive_objective(policy, reference, batch, advantages, 0.2, beta))
    assert stats.clip_fraction > 0  # the clipped branch is exercised
    assert stats.loss == pytest.approx(naive, rel=1e-5, abs=1e-7)
    assert torch.allclose(flat_grad(policy), expected, rtol=1e-4, atol=1e-6)


def test_group_advantages_center_each_group_and_optionally_scale() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0], [0.5, 1.5, 0.5, 1.5]])
    centered = group_advantages(rewards)
    assert torch.allclose(centered, torch.tensor([[0.0, -1.0, -1.0, 2.0], [0.0] * 4, [-0.5, 0.5, -0.5, 0.5]]))
    scaled = group_advantages(rewards, scale_by_std=True)
    std = rewards.std(dim=-1, keepdim=True)  # unbiased, as in GRPO
    assert torch.allclose(scaled[0], centered[0] / (std[0] + 1e-4))
    assert torch.allclose(scaled[2], centered[2] / (std[2] + 1e-4))
    assert torch.equal(scaled[1], torch.zeros(4))  # a group with one reward teaches nothing, and is not NaN


def test_the_learner_must_ban_what_the_sampler_banned(model: torch.nn.Module, stat_batch: TrajectoryBatch) -> None:
    assert stat_batch.banned_ids == BANNED
    pairs = exact_pairs(stat_batch)
    advantages = torch.ones(stat_batch.size)
    kwargs = {"clip_eps": 0.2, "micro_batch_size": 64, "pad_id": PAD}
    with pytest.raises(ValueError, match=r"banned_ids \[\]: the rollout banned \[13\] \(besides MASK\)"):
        agrpo_pairs_loss(model, stat_batch, advantages, *pairs, banned_ids=(), **kwargs)
    with pytest.raises(ValueError, match=r"banned_ids \[12, 13\]: the rollout banned \[13\]"):
        agrpo_pairs_loss(model, stat_batch, advantages, *pairs, banned_ids=(12, PAD, MASK), **kwargs)
    agrpo_pairs_loss(model, stat_batch, advantages, *pairs, banned_ids=(PAD, MASK), **kwargs)  # MASK is implied
    unknown = dataclasses.replace(stat_batch, banned_ids=None)  # a record saved before banned ids were kept
    agrpo_pairs_loss(model, unknown, advantages, *pairs, banned_ids=BANNED, **kwargs)
    with pytest.raises(ValueError, match="different settings"):
        TrajectoryBatch.concat([stat_batch, dataclasses.replace(stat_batch, banned_ids=(12,))])
    saved = group_from_state(group_to_state(RolloutGroup(0, stat_batch, 0, 0)))  # a checkpoint keeps them
    assert saved.trajectories.banned_ids == BANNED
