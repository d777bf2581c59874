"""The block-causal mask builder: block layout of prompts and completions, padding, composite copies."""

from __future__ import annotations

import torch

from common.model.block_mask import block_causal_mask, plain_block_mask, sequence_blocks, token_positions


def test_prompt_blocks_start_at_position_0_and_completion_blocks_at_the_completion() -> None:
    # Row 0: 5 prompt tokens, left-padded by 2; row 1: 7 prompt tokens. Completion of 8 from column 7.
    real = torch.ones(2, 15, dtype=torch.bool)
    real[0, :2] = False
    blocks = sequence_blocks(real, completion_start=7, size=4)
    assert blocks[0, 2:7].tolist() == [0, 0, 0, 0, 1]  # the prompt tail is a partial block of its own
    assert blocks[1, :7].tolist() == [0, 0, 0, 0, 1, 1, 1]
    # Both rows' completions begin a block at the same column whatever the prompt length.
    assert blocks[0, 7:].tolist() == [2, 2, 2, 2, 3, 3, 3, 3]
    assert blocks[1, 7:].tolist() == [2, 2, 2, 2, 3, 3, 3, 3]
    assert token_positions(real)[0, 2:].tolist() == list(range(13))


def test_a_token_sees_its_block_and_earlier_blocks_never_later_ones_or_padding() -> None:
    real = torch.tensor([[False, True, True, True, True, True, True]])
    mask, _ = plain_block_mask(real, completion_start=3, size=2)
    m = mask[0, 0]
    # Columns: pad | prompt p0 p1 | completion c0 c1 | c2 c3 -> blocks -, 0 0, 1 1, 2 2.
    assert m[3].tolist() == [False, True, True, True, True, False, False]
    assert m[5].tolist() == [False, True, True, True, True, True, True]
    assert m[1].tolist() == [False, True, True, False, False, False, False]
    assert not m[:, 0][1:].any(), "no real token attends to padding"
    assert m[0].tolist() == [True] + [False] * 6, "a padding query sees only itself (no empty softmax row)"


def test_whole_sequence_mask_is_sdar_and_fast_dllm_inference_mask() -> None:
    """SDAR's generate() builds tril(ones(blocks, blocks)) repeated per block; Fast-dLLM v2's eval mask is
    block_q >= block_kv. Without a completion (and without padding) ours is exactly that matrix."""
    size, blocks = 4, 3
    sdar = torch.tril(torch.ones(blocks, blocks)).repeat_interleave(size, 0).repeat_interleave(size, 1).bool()
    idx = torch.arange(size * blocks)
    fast_dllm = (idx[:, None] // size) >= (idx[None, :] // size)
    mask, positions = plain_block_mask(torch.ones(1, size * blocks, dtype=torch.bool), None, size)
    assert torch.equal(mask[0, 0], sdar) and torch.equal(mask[0, 0], fast_dllm)
    assert positions[0].tolist() == list(range(size * blocks))


def test_noisy_copies_see_the_clean_prefix_and_themselves_only() -> None:
    # Clean: 4 tokens in blocks 0, 0, 1, 1; copy 1 of block 1 (2 tokens); copy 2 of block 1 (2 tokens).
    blocks = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 2]])
    real = torch.ones(1, 8, dtype=torch.bool)
    m = block_causal_mask(blocks, real, segments)[0, 0]
    assert m[4].tolist() == [True, True, False, False, True, True, False, False]
    assert m[6].tolist() == [True, True, False, False, False, False, True, True]
    assert not m[:4, 4:].any(), "the clean sequence never sees a noisy copy"
    assert m[2].tolist() == [True, True, True, True, False, False, False, False]


def test_queries_at_a_window_of_key_columns() -> None:
    """A cache step: queries are the window's columns, keys every column up to the window's end."""
    real = torch.tensor([[False, True, True, True, True, True]])
    blocks = sequence_blocks(real, completion_start=3, size=2)
    full = block_causal_mask(blocks, real)
    window = block_causal_mask(blocks, real, queries=slice(3, 5))
    assert torch.equal(window, full[:, :, 3:5])
