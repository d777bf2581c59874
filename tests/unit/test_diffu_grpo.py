"""diffu-GRPO baseline: d1's masking, its per-sequence loss, ratios of 1 with the same mask seed, KL."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from common.config import SamplerConfig
from common.record import TrajectoryBatch
from learner.diffu_grpo import completion_mask, diffu_grpo_logprobs, diffu_grpo_loss, masked_inputs, prompt_mask_pattern
from learner.logprobs import model_logits
from tests.unit.learner_helpers import BANNED, EOS, MASK, PAD, end_early, flat_grad, sampled_batch, tiny_model

CFG = SamplerConfig(gen_length=8, block_length=4, steps=8, temperature=1.0, remasking="random")
ADV = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, 0.9, -0.7, -0.6])
SEED = 1234


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(0)


@pytest.fixture(scope="module")
def batch(model: torch.nn.Module) -> TrajectoryBatch:
    """Trajectories whose late steps are EOS, so several rows have an EOS before their last position."""
    return end_early(sampled_batch(model, CFG, seed=0), [7, 2, 5, 0, 7, 3, 6, 1])


def _old(model: torch.nn.Module, batch: TrajectoryBatch, seed: int = SEED, mbs: int = 8) -> torch.Tensor:
    return diffu_grpo_logprobs(
        model_logits(model),
        batch,
        mask_seed=seed,
        prompt_mask_prob=0.15,
        micro_batch_size=mbs,
        pad_id=PAD,
        banned_ids=BANNED,
    )


def _loss(
    model: torch.nn.Module, batch: TrajectoryBatch, old: torch.Tensor, mbs: int = 8, **kw: object
) -> tuple[torch.Tensor, object]:
    model.zero_grad(set_to_none=True)
    stats = diffu_grpo_loss(
        model,
        batch,
        ADV,
        old,
        mask_seed=SEED,
        prompt_mask_prob=0.15,
        clip_eps=0.2,
        micro_batch_size=mbs,
        pad_id=PAD,
        banned_ids=BANNED,
        **kw,
    )
    return flat_grad(model), stats


def test_masking_hides_the_completion_and_about_15_percent_of_the_prompt() -> None:
    prompts = [list(np.random.default_rng(i).integers(0, 12, 10 + 5 * i)) for i in range(8)]
    batch = sampled_batch(tiny_model(0), CFG, seed=0, prompts=prompts)
    ids, attention = masked_inputs(batch, np.arange(batch.size), prompt_mask_pattern(batch, SEED, 0.15), PAD)
    assert bool((ids[:, -CFG.gen_length :] == MASK).all())
    masked = total = 0
    for r, prompt in enumerate(batch.prompt_ids):
        row = ids[r, -CFG.gen_length - len(prompt) : -CFG.gen_length]
        kept = row != MASK
        assert torch.equal(row[kept], torch.as_tensor(prompt[kept.numpy()], dtype=torch.long))
        pad = ids.shape[1] - CFG.gen_length - len(prompt)
        assert bool((ids[r, :pad] == PAD).all()) and int(attention[r, :pad].sum()) == 0
        masked += int((~kept).sum())
        total += len(prompt)
    sd = math.sqrt(total * 0.15 * 0.85)
    assert abs(masked - 0.15 * total) <= 4.5 * sd
    same = prompt_mask_pattern(batch, SEED, 0.15)
    other = prompt_mask_pattern(batch, SEED + 1, 0.15)
    assert all(np.array_equal(a, b) for a, b in zip(prompt_mask_pattern(batch, SEED, 0.15), same, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(same, other, strict=True))


def test_same_mask_seed_gives_ratio_one_under_any_micro_batching(
    model: torch.nn.Module, batch: TrajectoryBatch
) -> None:
    old = _old(model, batch, mbs=8)
    assert torch.allclose(old, _old(model, batch, mbs=3), atol=1e-6, rtol=0)
    whole, stats = _loss(model, batch, old, mbs=8)
    split, split_stats = _loss(model, batch, old, mbs=3)
    assert stats.mismatch.drift_max <= 1e-6 and abs(stats.mean_ratio - 1) <= 1e-6 and stats.clip_fraction == 0
    assert split_stats.forward_passes == 3 and stats.forward_passes == 1
    assert torch.allclose(whole, split, atol=1e-8, rtol=1e-5)
    assert not torch.allclose(old, _old(model, batch, seed=SEED + 1)), "a new seed is a new prompt-mask view"


def _naive_loss(
    model: torch.nn.Module, ref: torch.nn.Module, batch: TrajectoryBatch, old: torch.Tensor, beta: float
) -> torch.Tensor:
    """d1's loss written out one unpadded sequence at a time."""
    patterns = prompt_mask_pattern(batch, SEED, 0.15)
    total = torch.zeros(())
    for i in range(batch.size):
        prompt = np.where(patterns[i], MASK, batch.prompt_ids[i])
        ids = torch.as_tensor(np.concatenate([prompt, np.full(CFG.gen_length, MASK)]), dtype=torch.long)[None]
        target = torch.as_tensor(batch.completion_ids[i], dtype=torch.long)

        def logp(m: torch.nn.Module, ids: torch.Tensor = ids, target: torch.Tensor = target) -> torch.Tensor:
            logits = m(ids).logits[0, -CFG.gen_length :].float()
            logits[:, [MASK, *BANNED]] = float("-inf")
            return torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]

        new = logp(model)
        with torch.no_grad():
            r = logp(ref)
        ratio = torch.exp(new - old[i])
        surrogate = torch.minimum(ratio * ADV[i], ratio.clamp(0.8, 1.2) * ADV[i])
        per_token = -surrogate + beta * (torch.exp(r - new) - (r - new) - 1)
        is_eos = batch.completion_ids[i] == EOS
        length = int(np.argmax(is_eos)) + 1 if is_eos.any() else CFG.gen_length
        total = total + per_token[:length].mean() / batch.size
    return total


def test_loss_and_gradient_match_the_d1_formula(model: torch.nn.Module, batch: TrajectoryBatch) -> None:
    reference = tiny_model(3)
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, batch.completion_ids.shape).astype(np.float32))
    old = _old(model, batch) + noise
    grad, stats = _loss(model, batch, old, mbs=3, beta=0.04, ref_logits_fn=model_logits(reference))
    model.zero_grad(set_to_none=True)
    expected = _naive_loss(model, reference, batch, old, beta=0.04)
    expected.backward()
    assert math.isclose(stats.loss, float(expected.detach()), rel_tol=1e-5, abs_tol=1e-7)
    assert torch.allclose(grad, flat_grad(model), atol=1e-7, rtol=1e-4)
    assert stats.clip_fraction > 0 and stats.kl > 0


def test_only_tokens_up_to_the_first_eos_count(model: torch.nn.Module, batch: TrajectoryBatch) -> None:
    counted = completion_mask(batch)
    assert not counted.all(), "the fixture needs rows that end before the last position"
    first_eos = [int(np.argmax(row == EOS)) if (row == EOS).any() else None for row in batch.completion_ids]
    assert all(counted[i].sum() == (8 if f is None else f + 1) for i, f in enumerate(first_eos))
    old = _old(model, batch)
    base, base_stats = _loss(model, batch, old)
    after = old.clone()
    after[torch.from_numpy(~counted)] -= 3.0
    changed, changed_stats = _loss(model, batch, after)
    assert torch.equal(base, changed) and base_stats.loss == changed_stats.loss
    before = old.clone()
    before[torch.from_numpy(counted)] -= 3.0
    assert not torch.allclose(base, _loss(model, batch, before)[0])


def test_kl_is_zero_against_an_identical_reference(model: torch.nn.Module, batch: TrajectoryBatch) -> None:
    old = _old(model, batch)
    plain, _ = _loss(model, batch, old)
    same, stats = _loss(model, batch, old, beta=0.04, ref_logits_fn=model_logits(copy.deepcopy(model)))
    assert stats.kl == 0 and torch.allclose(plain, same, atol=1e-9)
    with pytest.raises(ValueError, match="ref_logits_fn"):
        _loss(model, batch, old, beta=0.04)
