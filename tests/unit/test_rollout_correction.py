"""Rollout/learner mismatch correction: weights, exact sampler = `none`, unbiasedness, stale versions, metrics."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from common.config import AlgorithmConfig, Config, LearnerConfig, SamplerConfig
from common.record import TrajectoryBatch
from learner.agrpo import LossStats, agrpo_pairs_loss
from learner.correction import (
    Correction,
    MismatchStats,
    OldPolicy,
    importance_weights,
    reduce_summaries,
)
from learner.logprobs import build_step_tokens, left_pad, model_logits, step_token_logprobs
from learner.old_policy import WeightVersions
from learner.update import policy_update
from learner.weight_history import WeightHistory
from rollout.sampler import sample
from tests.unit import block_helpers
from tests.unit.learner_helpers import (
    BANNED,
    EOS,
    MASK,
    PAD,
    PROMPTS,
    VOCAB,
    exact_pairs,
    flat_grad,
    num_params,
    sampled_batch,
    tiny_model,
)

MODES = ["tis", "mask", "seq_tis", "seq_mask"]
ADV = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, 0.9, -0.7, -0.6])


def perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy of `model` with Gaussian noise on every weight: a behaviour policy that differs from it."""
    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return out


def _loss(model: nn.Module, batch: TrajectoryBatch, pairs: tuple, mode: str, **kw: object) -> LossStats:
    model.zero_grad(set_to_none=True)
    return agrpo_pairs_loss(
        model,
        batch,
        ADV[: batch.size],
        *pairs,
        clip_eps=0.2,
        micro_batch_size=5,
        pad_id=PAD,
        banned_ids=BANNED,
        correction=Correction(mode, cap=2.0, low=0.5, high=2.0),
        **kw,
    )


# ---------------------------------------------------------------------------------------------- the weights


def test_importance_weights_cap_mask_and_aggregate_per_trajectory() -> None:
    log_ratio = torch.log(torch.tensor([0.25, 1.0, 1.5, 3.0, 0.8, 1.25]))
    known = torch.tensor([True, True, True, True, True, False])
    trajectory = torch.tensor([0, 0, 0, 1, 1, 1])
    weight, adjusted = importance_weights(log_ratio, known, trajectory, Correction("tis", cap=2.0))
    torch.testing.assert_close(weight, torch.tensor([0.25, 1.0, 1.5, 2.0, 0.8, 1.0]))
    assert adjusted.tolist() == [False, False, False, True, False, False]
    weight, adjusted = importance_weights(log_ratio, known, trajectory, Correction("mask", low=0.5, high=2.0))
    torch.testing.assert_close(weight, torch.tensor([0.0, 1.0, 1.5, 0.0, 0.8, 1.0]))
    assert adjusted.tolist() == [True, False, False, True, False, False]
    # Geometric means over the known tokens: (0.25 * 1 * 1.5)^(1/3) = 0.72, (3 * 0.8)^(1/2) = 1.55.
    first, second = (0.25 * 1.5) ** (1 / 3), (3.0 * 0.8) ** 0.5
    weight, adjusted = importance_weights(log_ratio, known, trajectory, Correction("seq_tis", cap=1.5))
    torch.testing.assert_close(weight, torch.tensor([first] * 3 + [1.5, 1.5, 1.0]))
    assert adjusted.tolist() == [False, False, False, True, True, False]
    weight, adjusted = importance_weights(log_ratio, known, trajectory, Correction("seq_mask", low=0.8, high=2.0))
    torch.testing.assert_close(weight, torch.tensor([0.0, 0.0, 0.0, second, second, 1.0]))
    assert adjusted.tolist() == [True, True, True, False, False, False]
    weight, adjusted = importance_weights(log_ratio, known, trajectory, Correction("none"))
    assert torch.equal(weight, torch.ones(6)) and not adjusted.any()


def test_mismatch_sums_merge_and_reduce_over_ranks() -> None:
    a = MismatchStats(
        tokens=4, abs_sum=0.4, max=0.3, k3_sum=0.02, adjusted=1, drift_tokens=4, drift_sum=2.0, drift_max=0.9
    )
    b = MismatchStats(
        tokens=6, abs_sum=0.2, max=0.1, k3_sum=0.01, adjusted=0, drift_tokens=6, drift_sum=0.6, drift_max=0.2
    )
    both = a.merge(b).summary()
    assert both["rollout_mismatch_mean"] == pytest.approx(0.06) and both["rollout_mismatch_max"] == 0.3
    assert both["rollout_mismatch_kl"] == pytest.approx(0.003) and both["rollout_correction_fraction"] == 0.1
    assert both["policy_drift_mean"] == pytest.approx(0.26) and both["policy_drift_max"] == 0.9
    reduced = reduce_summaries([a.summary(), b.summary()])
    assert reduced == pytest.approx(both)
    empty = MismatchStats().summary()
    assert empty["rollout_mismatch_tokens"] == 0 and math.isnan(empty["rollout_mismatch_mean"])
    assert reduce_summaries([empty, a.summary()]) == pytest.approx(a.summary())


def test_config_fields_and_their_rules() -> None:
    algo = AlgorithmConfig(rollout_correction="seq_mask", mask_low=0.9, mask_high=1.1)
    assert Correction.from_config(algo) == Correction("seq_mask", cap=2.0, low=0.9, high=1.1)
    assert AlgorithmConfig().rollout_correction == "none" and AlgorithmConfig().measure_mismatch
    with pytest.raises(ValidationError, match="rollout_correction = tis: applies to agrpo only"):
        AlgorithmConfig(name="diffu_grpo", rollout_correction="tis")
    for bad in ({"tis_cap": 0.5}, {"mask_low": 1.0}, {"mask_high": 1.0}, {"rollout_correction": "is"}):
        with pytest.raises(ValidationError):
            AlgorithmConfig(**bad)


# ---------------------------------------------------------------------------------------------- exact sampler


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_model(0)


@pytest.fixture(scope="module")
def exact_batch(model: nn.Module) -> TrajectoryBatch:
    cfg = SamplerConfig(gen_length=8, block_length=4, steps=8, temperature=0.9, top_k=6, remasking="random")
    return sampled_batch(model, cfg, seed=1)


@pytest.mark.parametrize("mode", MODES)
def test_with_an_exact_sampler_the_weights_are_one_and_the_loss_is_nones(
    model: nn.Module, exact_batch: TrajectoryBatch, mode: str
) -> None:
    pairs = exact_pairs(exact_batch)
    tokens = build_step_tokens(exact_batch, pairs[0].numpy(), pairs[1].numpy(), PAD)
    with torch.no_grad():
        old = step_token_logprobs(model_logits(model), tokens, exact_batch, BANNED)
    trajectory = pairs[0][tokens.token_pair]
    weight, adjusted = importance_weights(
        old - tokens.behaviour_logprob, torch.ones_like(old, dtype=torch.bool), trajectory, Correction(mode)
    )
    assert float((weight - 1).abs().max()) <= 1e-5 and not adjusted.any()
    plain = _loss(model, exact_batch, pairs, "none")
    plain_grad = flat_grad(model)
    corrected = _loss(model, exact_batch, pairs, mode)
    assert corrected.loss == pytest.approx(plain.loss, abs=1e-5)
    torch.testing.assert_close(flat_grad(model), plain_grad, atol=1e-5, rtol=1e-4)
    assert corrected.mismatch.max <= 1e-5 and corrected.mismatch.adjusted == 0
    assert corrected.mismatch.tokens == corrected.tokens and corrected.mismatch.drift_max == 0


@pytest.mark.parametrize("mode", ["tis", "seq_tis"])
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_composite_sequences_carry_the_correction(mode: str, shift: bool) -> None:
    """A block-causal model's composite rows give the per-timestep rows' corrected loss and gradient, with an
    exact cached sampler (weights 1, the loss of `none`) and with a perturbed behaviour (weights away from 1)."""
    net = block_helpers.block_model(shift=shift, sharp=False, eos_boost=60.0)
    cfg = SamplerConfig(gen_length=16, block_length=4, steps=8, temperature=1.0, top_k=8, remasking="random")
    exact = sample(
        net,
        block_helpers.PROMPTS * 2,
        cfg,
        block_helpers.MASK,
        block_helpers.EOS,
        block_helpers.PAD,
        torch.Generator().manual_seed(0),
        (block_helpers.PAD,),
    )
    # Off by up to +-0.4 per token, and by a different amount per row, so sequence ratios leave [1/1.2, 1.2] too.
    rows, cols = np.indices(exact.logprob.shape)
    noise = 0.3 * np.cos(rows) + 0.1 * np.sin(rows * cols + cols)
    noisy = dataclasses.replace(exact, logprob=(exact.logprob + noise).astype(np.float32))
    last = torch.from_numpy(exact.last_step())
    pairs = sample_pairs(last, 4)
    results = {}
    for name, record in (("exact", exact), ("noisy", noisy)):
        for composite in (False, True):
            for m in ("none", mode):
                net.zero_grad(set_to_none=True)
                stats = agrpo_pairs_loss(
                    net,
                    record,
                    torch.linspace(-1.0, 1.0, record.size),
                    *pairs,
                    clip_eps=0.2,
                    micro_batch_size=6,
                    pad_id=block_helpers.PAD,
                    banned_ids=(block_helpers.PAD,),
                    composite=composite,
                    correction=Correction(m, cap=1.2),
                )
                results[name, composite, m] = (stats, flat_grad(net))
    for name in ("exact", "noisy"):
        rows, comp = results[name, False, mode], results[name, True, mode]
        assert comp[0].loss == pytest.approx(rows[0].loss, abs=1e-5)
        assert comp[0].mismatch.adjusted == rows[0].mismatch.adjusted
        torch.testing.assert_close(comp[1], rows[1], atol=1e-5, rtol=0)
    exact_tis, exact_none = results["exact", True, mode], results["exact", True, "none"]
    assert exact_tis[0].mismatch.max <= 1e-5 and exact_tis[0].loss == pytest.approx(exact_none[0].loss, abs=1e-5)
    noisy_tis, noisy_none = results["noisy", True, mode], results["noisy", True, "none"]
    assert noisy_tis[0].mismatch.max > 0.1 and noisy_tis[0].mismatch.adjusted > 0
    assert noisy_tis[0].clip_fraction == 0 < noisy_none[0].clip_fraction  # the ratio is anchored at pi_old
    assert not torch.allclose(noisy_tis[1], noisy_none[1], atol=1e-4)


def sample_pairs(last: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from learner.timesteps import sample_timesteps

    return sample_timesteps(last, k, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(5))


# ---------------------------------------------------------------------------------------------- unbiasedness

ONE_STEP = SamplerConfig(gen_length=4, block_length=4, steps=1, temperature=1.0, remasking="random")
TOKEN_REWARD = torch.randn(VOCAB, generator=torch.Generator().manual_seed(3))


def _expected_reward(policy: nn.Module) -> torch.Tensor:
    """E_pi[sum_j f(o_ij)] per prompt for one-step trajectories, by enumerating the vocabulary.

    In one step every token is drawn independently from the all-MASK state, so the expected additive reward is
    sum_j sum_v pi_j(v) f(v); its gradient is the exact policy gradient the estimator targets.
    """
    ids, mask = left_pad([np.asarray(p) for p in PROMPTS], np.full((len(PROMPTS), ONE_STEP.gen_length), MASK), PAD)
    logits = policy(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits[:, -ONE_STEP.gen_length :]
    logits = logits.float().index_fill(-1, torch.tensor([PAD, MASK]), float("-inf"))
    return (torch.softmax(logits, dim=-1) * TOKEN_REWARD).sum(dim=(1, 2))


def _exact_gradient(policy: nn.Module) -> torch.Tensor:
    policy.zero_grad(set_to_none=True)
    _expected_reward(policy).mean().backward()
    return flat_grad(policy)


def _estimates(policy: nn.Module, behaviour: nn.Module, mode: str, draws: int) -> torch.Tensor:
    """-grad of the loss for `draws` fresh batches drawn by `behaviour`; the advantage is the trajectory's reward
    minus a baseline that depends on the prompt only (its exact expectation), which keeps the estimate unbiased."""
    with torch.no_grad():
        baseline = _expected_reward(policy)
    out = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(draws):
        with torch.no_grad():
            batch = sample(behaviour, PROMPTS, ONE_STEP, MASK, EOS, PAD, generator, BANNED)
        reward = TOKEN_REWARD[torch.from_numpy(batch.completion_ids.astype(np.int64))].sum(dim=1)
        policy.zero_grad(set_to_none=True)
        agrpo_pairs_loss(
            policy,
            batch,
            reward - baseline,
            *exact_pairs(batch),
            clip_eps=0.2,
            micro_batch_size=64,
            pad_id=PAD,
            banned_ids=BANNED,
            correction=Correction(mode, cap=1e6),
        )
        out.append(-flat_grad(policy))
    return torch.stack(out)


@pytest.mark.slow
def test_tis_is_unbiased_for_the_exact_policy_gradient_under_a_perturbed_behaviour(model: nn.Module) -> None:
    """Tokens drawn by a perturbed model, trained on the exact one: with the ratio anchored at pi_old and the
    weight pi_old / mu (cap not binding), the mean of 400 estimates matches the exact gradient within 4.5 SE on
    3 random projections. `none` anchors the clipped ratio at mu, so clipping cuts the tokens that mismatch
    most, and the same statistic rejects it."""
    behaviour = perturbed(model, 0.05, seed=7)
    dirs = torch.randn(num_params(model), 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    exact = _exact_gradient(model) @ dirs
    tis = _estimates(model, behaviour, "tis", 400) @ dirs
    se = tis.std(dim=0) / math.sqrt(len(tis))
    assert bool((se > 1e-3 * exact.abs().max()).all()), "a batch of 8 one-step trajectories is a noisy estimate"
    assert bool(((tis.mean(dim=0) - exact).abs() <= 4.5 * se).all()), (tis.mean(dim=0), exact, se)
    plain = _estimates(model, behaviour, "none", 400) @ dirs
    se = plain.std(dim=0) / math.sqrt(len(plain))
    assert bool(((plain.mean(dim=0) - exact).abs() > 4.5 * se).any()), (plain.mean(dim=0), exact, se)


# ---------------------------------------------------------------------------------------------- older weights


def _plain_history(net: nn.Module, keep: int) -> WeightHistory:
    params = dict(net.named_parameters())

    def capture() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in params.items() if p.requires_grad}

    def load(state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, value in state.items():
                params[n].copy_(value)

    return WeightHistory(capture, load, keep, collective=False)


def test_weight_history_keeps_recent_versions_and_restores_the_current_ones() -> None:
    net = tiny_model(0)
    first = {n: p.detach().clone() for n, p in net.named_parameters()}
    history = _plain_history(net, keep=1)
    history.record(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1)
    current = {n: p.detach().clone() for n, p in net.named_parameters()}
    history.record(4)
    with history.use(3):
        assert all(torch.equal(p, first[n]) for n, p in net.named_parameters())
    assert all(torch.equal(p, current[n]) for n, p in net.named_parameters())
    with history.use(4):
        assert all(torch.equal(p, current[n]) for n, p in net.named_parameters())
    history.record(5)
    assert history.versions == [4, 5] and not history.has(3)
    with pytest.raises(KeyError, match="weight version 3 is not kept"):
        history.use(3).__enter__()
    saved = history.state(6)
    assert list(saved) == ["5"]
    restored = _plain_history(net, keep=1)
    restored.load_state(saved)
    assert restored.versions == [5] and restored.current is None
    with pytest.raises(ValueError, match="keep = 0"):
        _plain_history(net, keep=0)


def _stale_update(mode: str, keep_old: bool = True, measure: bool = True) -> tuple[dict[str, float], nn.Module]:
    """One policy_update at version 1 on groups sampled exactly with version 0's weights (max_staleness 1)."""
    old = tiny_model(0)
    cfg = SamplerConfig(gen_length=8, block_length=4, steps=8, temperature=1.0, remasking="random")
    batch = sampled_batch(old, cfg, seed=2, prompts=PROMPTS[:4] * 2)
    net = copy.deepcopy(old)
    history = _plain_history(net, keep=1)
    if keep_old:
        history.record(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    new = {n: p.detach().clone() for n, p in net.named_parameters()}
    history.record(1)
    config = Config(
        sampler=cfg,
        algorithm=AlgorithmConfig(group_size=2, k=3, rollout_correction=mode, measure_mismatch=measure),
        learner=LearnerConfig(groups_per_step=4, micro_batch_size=5),
    )
    net.train()
    stats = policy_update(
        net,
        batch,
        ADV,
        config,
        pad_id=PAD,
        banned_ids=BANNED,
        backward=lambda loss, last: loss.backward(),
        optimizer_step=lambda: {"grad_norm": 0.0, "lr": 0.0},
        generator=torch.Generator().manual_seed(0),
        sampled_with=WeightVersions(np.zeros(batch.size, dtype=np.int64), 1, history),
    )
    assert net.training, "the pi_old pass runs in eval mode and gives the training mode back"
    assert all(torch.equal(p, new[n]) for n, p in net.named_parameters()), "the current weights are back"
    return stats, net


@pytest.mark.parametrize("mode", ["none", "tis"])
def test_stale_groups_are_scored_under_the_weights_that_sampled_them(mode: str) -> None:
    """pi_old of version 0 equals the exact rollout's log-probs (numerics ~0) while the trained weights have
    moved (drift > 0): the two halves of the old `max_logprob_diff` read apart."""
    stats, _ = _stale_update(mode)
    assert stats["rollout_mismatch_tokens"] == stats["tokens"] > 0
    assert stats["rollout_mismatch_max"] <= 1e-5 and stats["rollout_correction_fraction"] == 0
    assert stats["policy_drift_max"] > 1e-2 and stats["policy_drift_mean"] > 1e-3


def test_unkept_or_unmeasured_versions_fall_back_to_the_behaviour_log_probs() -> None:
    none, _ = _stale_update("none")
    for stats, _ in (_stale_update("tis", keep_old=False), _stale_update("none", measure=False)):
        assert stats["rollout_mismatch_tokens"] == 0 and math.isnan(stats["rollout_mismatch_max"])
        assert stats["loss"] == pytest.approx(none["loss"], abs=1e-6)


def test_old_policy_marks_fresh_trajectories(model: nn.Module, exact_batch: TrajectoryBatch) -> None:
    """A stale trajectory with no recomputed pi_old keeps `none`'s loss under tis and is not measured."""
    pairs = exact_pairs(exact_batch)
    stale = OldPolicy(np.zeros(exact_batch.size, dtype=bool), None)
    stats = _loss(model, exact_batch, pairs, "tis", old_policy=stale)
    plain = _loss(model, exact_batch, pairs, "none")
    assert stats.mismatch.tokens == 0 and stats.loss == pytest.approx(plain.loss, abs=1e-7)
