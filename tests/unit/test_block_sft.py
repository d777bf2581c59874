"""Block-diffusion SFT: noisy blocks conditioned on the clean prefix, in one composite forward, and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import ModelConfig, SFTConfig, TinyModelConfig
from common.model.block_mask import BlockSpec, plain_block_mask
from common.model.loading import load_policy
from learner.block_sft import block_sft_loss, block_training_batch
from learner.sft import build_examples, train_sft
from rewards.generators import generate

SMALL = TinyModelConfig(
    d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, attention="block_causal", block_size=4
)
BLOCK = BlockSpec(size=4, shift=False)


def test_every_block_gets_a_noisy_copy_and_the_prompt_stays_clean() -> None:
    prompts = [[5, 6, 7], [8]]
    completions = torch.randint(10, 50, (2, 8))
    gen = torch.Generator().manual_seed(0)
    batch = block_training_batch(prompts, completions, mask_id=2, pad_id=0, block=BLOCK, generator=gen, eps=1e-3)
    c = batch.composite
    assert c.input_ids.shape == (2, 3 + 8 + 2 * 4)
    assert c.input_ids[0, :11].tolist() == [5, 6, 7, *completions[0].tolist()]
    assert c.input_ids[1, :11].tolist() == [0, 0, 8, *completions[1].tolist()]
    copies = c.input_ids[:, c.copy_start :]
    clean = completions
    assert torch.equal(copies[copies != 2], clean[copies != 2]), "a copy holds clean tokens or MASK"
    assert c.positions[1, c.copy_start :].tolist() == list(range(1, 9)), "copies sit at their real positions"
    assert len(batch.targets) == int((copies == 2).sum()) and (batch.weights >= 1.0).all()


@torch.no_grad()
def test_loss_is_each_noisy_block_scored_after_its_clean_prefix() -> None:
    """The composite forward gives, for every block b, the logits of [prompt, clean blocks < b, noisy block b]."""
    policy = load_policy(ModelConfig(tiny=SMALL))
    prompts = [[5, 6, 7, 9, 9], [8]]
    completions = torch.randint(10, 50, (2, 12))
    loss = block_sft_loss(policy, prompts, completions, BLOCK, torch.Generator().manual_seed(3), 1e-3)
    batch = block_training_batch(prompts, completions, 2, 0, BLOCK, torch.Generator().manual_seed(3), 1e-3)
    copies = batch.composite.input_ids[:, batch.composite.copy_start :]
    expected = torch.zeros(())
    for r, prompt in enumerate(prompts):
        for b in range(3):
            ids = torch.tensor([[*prompt, *completions[r, : 4 * b].tolist(), *copies[r, 4 * b : 4 * b + 4].tolist()]])
            mask, positions = plain_block_mask(torch.ones_like(ids, dtype=torch.bool), len(prompt), 4)
            logits = policy.model(ids, attention_mask=mask, position_ids=positions).logits[0, -4:]
            masked = copies[r, 4 * b : 4 * b + 4] == 2
            ce = F.cross_entropy(logits[masked], completions[r, 4 * b : 4 * b + 4][masked], reduction="sum")
            if masked.any():
                # The block's 1/t: the weight of its first masked token (tokens are listed row by row, in order).
                first = (batch.token_row == r) & (batch.token_col >= batch.composite.copy_start + 4 * b)
                expected = expected + ce * batch.weights[first][0]
    assert float(loss) == pytest.approx(float(expected / completions.numel()), rel=1e-5)


def test_block_sft_learns_a_tiny_countdown_set() -> None:
    items = generate("countdown", 64, 0, max_number=10)
    policy = load_policy(ModelConfig(tiny=SMALL))
    examples = build_examples(items, "countdown", "plain", policy, 16, 0.0, 0)
    losses = train_sft(policy, examples, SFTConfig(steps=30, batch_size=16, lr=3e-3, warmup_ratio=0.1), seed=0).losses
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
