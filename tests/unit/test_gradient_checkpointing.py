"""Gradient checkpointing of the native LLaDA class: the same gradients with less kept, and no effect on a KV-cache
forward (the rollout's) or on sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common.config import SamplerConfig, TinyModelConfig
from common.errors import ConfigError
from common.model import build_tiny_model
from learner.agrpo import agrpo_pairs_loss
from learner.engine import enable_gradient_checkpointing
from learner.timesteps import sample_timesteps
from rollout.kv_cache import KVBuffer
from rollout.sampler import sample
from tests.unit.block_helpers import EOS, MASK, PAD, PROMPTS, VOCAB, block_model


def model_pair(attention: str) -> tuple[nn.Module, nn.Module]:
    """Two copies of one model, the second with gradient checkpointing on; both in training mode."""
    shape = TinyModelConfig(
        d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden_size=48, attention=attention, block_size=4
    )
    plain, checkpointed = (build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=3).train() for _ in range(2))
    enable_gradient_checkpointing(checkpointed)
    return plain, checkpointed


def block_calls(model: nn.Module) -> list[int]:
    """A list that grows by one at every forward of the first block, recomputation included (which runs the
    block's forward but not its forward hooks, so the forward itself is wrapped)."""
    calls: list[int] = []
    block = model.model.transformer["blocks"][0]
    forward = block.forward

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return forward(*args, **kwargs)

    block.forward = counted
    return calls


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_grads(plain: nn.Module, checkpointed: nn.Module) -> None:
    got, want = grads(checkpointed), grads(plain)
    assert list(got) == list(want)
    for name, value in want.items():
        assert value.abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=1e-5, msg=name)


def weighted_logits_loss(model: nn.Module, seed: int, **inputs: torch.Tensor) -> torch.Tensor:
    logits = model(**inputs).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed))
    return (logits * weights).sum()


@pytest.mark.parametrize("attention", ["full", "block_causal"])
def test_gradients_are_equal_with_and_without_checkpointing(attention: str) -> None:
    """Left-padded rows with a (B, S) mask: padding keys, real-token positions and (block-causal) the block mask
    are rebuilt inside the recomputed blocks exactly as in the first pass."""
    plain, checkpointed = model_pair(attention)
    ids = torch.randint(3, VOCAB - 3, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    calls = block_calls(checkpointed)
    for model in (plain, checkpointed):
        weighted_logits_loss(model, 1, input_ids=ids, attention_mask=mask).backward()
    assert len(calls) == 2, "with checkpointing each block runs again in the backward pass"
    assert_same_grads(plain, checkpointed)


def test_agrpo_loss_gradients_are_equal_on_composite_rows() -> None:
    """The learner's own loss on a block-causal model: composite rows, a 4-D mask and explicit positions."""
    plain, checkpointed = block_model().train(), block_model().train()
    enable_gradient_checkpointing(checkpointed)
    cfg = SamplerConfig(gen_length=16, block_length=4, steps=8, temperature=1.0, remasking="random")
    with torch.no_grad():
        record = sample(plain, PROMPTS, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(0), (PAD,))
    rows, steps, coef = sample_timesteps(
        torch.from_numpy(record.last_step()), 3, "uniform", "uniform", None, torch.Generator().manual_seed(1)
    )
    advantages = torch.linspace(-1.0, 1.0, record.size)
    for model in (plain, checkpointed):
        agrpo_pairs_loss(
            model, record, advantages, rows, steps, coef, clip_eps=0.2, micro_batch_size=8, pad_id=PAD,
            banned_ids=(PAD,),
        )  # fmt: skip
    assert_same_grads(plain, checkpointed)


class RecordingBuffer(KVBuffer):
    """The rollout's KV buffer, counting its writes: a recomputed cache forward would write a window twice."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def update(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        self.writes += 1
        return super().update(*args, **kwargs)


def test_a_kv_cache_forward_is_never_checkpointed() -> None:
    """Even in training mode with gradients on, a forward against a cache (and its backward) runs each block once."""
    plain, checkpointed = model_pair("block_causal")
    ids = torch.randint(3, VOCAB - 3, (2, 8), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(8).expand(2, 8)
    allowed = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    results = []
    for model in (plain, checkpointed):
        buffer = RecordingBuffer()
        buffer.width = 8
        buffer.window(0, 8, 8)
        logits = model(ids, attention_mask=allowed, position_ids=positions, cache=buffer).logits
        logits.sum().backward()  # where a checkpointed block would run again, writing the cache again
        results.append((logits.detach(), buffer.writes))
    assert results[1][1] == results[0][1] == 3
    torch.testing.assert_close(results[1][0], results[0][0], atol=0, rtol=0)


def test_sampling_with_the_exact_cache_is_unchanged() -> None:
    cfg = SamplerConfig(gen_length=16, block_length=4, steps=8, temperature=1.0, remasking="random")
    plain, checkpointed = block_model().train(), block_model().train()
    enable_gradient_checkpointing(checkpointed)
    a, b = (
        sample(m, PROMPTS, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(4), (PAD,)) for m in (plain, checkpointed)
    )
    np.testing.assert_array_equal(a.completion_ids, b.completion_ids)
    np.testing.assert_array_equal(a.logprob, b.logprob)


def test_a_model_without_support_is_refused_with_the_field_name() -> None:
    with pytest.raises(ConfigError, match=r"learner.gradient_checkpointing = true: Linear does not support"):
        enable_gradient_checkpointing(nn.Linear(2, 2))
