"""The exact KV cache of block-causal models: cached sampling equals uncached sampling, and runs the block only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from common.config import ModelConfig, SamplerConfig
from common.errors import ConfigError
from common.model.loading import load_policy
from common.record import TrajectoryBatch
from learner.agrpo import agrpo_pairs_loss
from learner.timesteps import sample_timesteps
from rollout.kv_cache import BlockCausalCache, FullForward, step_cache
from rollout.sampler import sample
from tests.unit.block_helpers import EOS, MASK, PAD, PROMPTS, block_model, write_fast_dllm_dir, write_sdar_dir

MODES = [
    (0.0, "low_confidence", 0, 1.0),
    (1.0, "random", 0, 1.0),
    (1.0, "low_confidence", 6, 1.0),
    (0.8, "entropy", 8, 0.7),
]


def _cfg(kv_cache: str, temperature: float, remasking: str, top_k: int, top_p: float, **kw: Any) -> SamplerConfig:
    values: dict[str, Any] = {"gen_length": 16, "block_length": 4, "steps": 8, "early_exit": True}
    values.update(kw)
    return SamplerConfig(
        temperature=temperature, remasking=remasking, top_k=top_k, top_p=top_p, kv_cache=kv_cache, **values
    )


def _both(model: nn.Module, prompts: list[list[int]], mode: tuple, seed: int = 0, **kw: Any) -> list[TrajectoryBatch]:
    return [
        sample(model, prompts, _cfg(kv, *mode, **kw), MASK, EOS, PAD, torch.Generator().manual_seed(seed), (PAD,))
        for kv in ("auto", "off")
    ]


def assert_same_record(cached: TrajectoryBatch, uncached: TrajectoryBatch) -> None:
    np.testing.assert_array_equal(cached.completion_ids, uncached.completion_ids)
    np.testing.assert_array_equal(cached.unmask_step, uncached.unmask_step)
    np.testing.assert_array_equal(cached.filled, uncached.filled)
    np.testing.assert_allclose(cached.logprob, uncached.logprob, atol=1e-5, rtol=0)
    np.testing.assert_allclose(cached.entropy, uncached.entropy, atol=1e-5, rtol=0)
    if uncached.allowed_ids is None:
        assert cached.allowed_ids is None
    else:
        np.testing.assert_array_equal(cached.allowed_ids, uncached.allowed_ids)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"T{m[0]}-{m[1]}-k{m[2]}-p{m[3]}")
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_cached_sampling_equals_uncached_sampling(mode: tuple, shift: bool) -> None:
    """Prompts of 1 to 9 tokens in one batch, rows leaving early (EOS blocks) at different blocks."""
    model = block_model(shift=shift, eos_boost=7.0)
    cached, uncached = _both(model, PROMPTS * 2, mode)
    assert_same_record(cached, uncached)
    if mode[0] > 0:
        exited = cached.filled.any(axis=1)
        assert exited.any() and not exited.all(), "the batch should mix rows that exit early and rows that do not"


class CallLog(nn.Module):
    """The model, recording how many columns each call runs (the cache must run the current block only)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.widths: list[int] = []

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        self.widths.append(int(input_ids.shape[1]))
        return self.inner(input_ids, **kwargs)


def test_each_step_runs_the_current_block_and_each_block_is_committed_once() -> None:
    log = CallLog(block_model())
    cfg = _cfg("auto", 1.0, "random", 0, 1.0, early_exit=False)
    sample(log, PROMPTS, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(0))
    prompt_width, blocks = max(len(p) for p in PROMPTS), cfg.gen_length // cfg.block_length
    # One prefill of the prompt, one call per step, one commit per block but the last; never more than a block.
    assert log.widths == [prompt_width] + [cfg.block_length] * (cfg.steps + blocks - 1)
    log.widths.clear()
    sample(log, PROMPTS, cfg.model_copy(update={"kv_cache": "off"}), MASK, EOS, PAD, torch.Generator())
    assert log.widths == [prompt_width + cfg.gen_length] * cfg.steps


def test_kv_cache_auto_caches_block_models_only() -> None:
    attention = torch.ones(2, 6, dtype=torch.bool)
    auto = SamplerConfig(gen_length=4, block_length=4, steps=2)
    assert isinstance(step_cache(block_model(), None, auto, attention, 2), BlockCausalCache)
    assert isinstance(
        step_cache(block_model(), None, auto.model_copy(update={"kv_cache": "off"}), attention, 2), FullForward
    )
    full = block_model()
    full.config.attention = "full"
    assert isinstance(step_cache(full, None, auto, attention, 2), FullForward)


def test_sampler_blocks_must_be_the_model_blocks() -> None:
    cfg = SamplerConfig(gen_length=16, block_length=8, steps=8)
    with pytest.raises(ConfigError, match=r"sampler.block_length = 8: the model is block-causal with blocks of 4"):
        sample(block_model(), PROMPTS, cfg, MASK, EOS, PAD, torch.Generator())


def _learner_mismatch(model: nn.Module, record: TrajectoryBatch, pad_id: int, banned: tuple[int, ...]) -> float:
    """The largest |recomputed - recorded| log-prob over every step of every trajectory (composite rows)."""
    last = torch.from_numpy(record.last_step())
    rows, steps, coef = sample_timesteps(last, "all", "uniform", "uniform", None, torch.Generator())
    stats = agrpo_pairs_loss(
        model,
        record,
        torch.zeros(record.size),
        rows,
        steps,
        coef,
        clip_eps=0.2,
        micro_batch_size=64,
        pad_id=pad_id,
        banned_ids=banned,
    )
    assert stats.mean_ratio == pytest.approx(1.0, abs=1e-5)
    return stats.mismatch.max


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_learner_recomputes_the_cached_rollouts_logprobs(shift: bool) -> None:
    model = block_model(shift=shift, eos_boost=7.0)
    record = _both(model, PROMPTS * 2, (0.9, "random", 8, 0.9))[0]
    assert _learner_mismatch(model, record, PAD, (PAD,)) < 1e-5


@pytest.mark.parametrize("writer", [write_sdar_dir, write_fast_dllm_dir], ids=["sdar", "fast-dllm-v2"])
def test_checkpoint_formats_sample_with_the_exact_cache(tmp_path: Path, writer: Any) -> None:
    """SDAR (Qwen3, unshifted) and Fast-dLLM v2 (Qwen2, shifted) on transformers' classes with our cache."""
    writer(tmp_path)
    policy = load_policy(ModelConfig(path=str(tmp_path)))
    prompts = [[10, 11, 12], [13], [14, 15, 16, 17, 18, 19]]
    records = [
        sample(
            policy.model,
            prompts,
            _cfg(kv, 1.0, "low_confidence", 8, 1.0),
            policy.mask_id,
            policy.eos_id,
            policy.pad_id,
            torch.Generator().manual_seed(1),
            policy.banned_ids,
        )
        for kv in ("auto", "off")
    ]
    assert_same_record(*records)
    assert _learner_mismatch(policy.model, records[0], policy.pad_id, policy.banned_ids) < 1e-5
