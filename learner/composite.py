"""One forward per trajectory for all its sampled timesteps: the composite sequence of a block-causal model.

In a block-causal model the logits of block b at step t depend only on the clean prompt, the clean blocks
before b (all committed before block b's first step) and block b itself at state t. So instead of one row
[prompt, x_t] per sampled timestep, a trajectory gets one row:

    [prompt | clean completion | noisy copy of block b_1 at t_1 | ... | noisy copy of block b_k at t_k]

The clean part is block-causal; each copy sits at its block's real positions (rotary phases), sees the
prompt, the clean blocks before its block and itself, and nothing sees a copy. Each copy's logits are then
exactly those of the per-timestep row (to float rounding), and all k step log-likelihoods come from one
forward/backward of length P + C + k*BL instead of k of length P + C. Rows are left-padded (prompt lengths
differ) and right-padded (copy counts differ); padding is never attended. A shifted model (output i predicts
token i+1) scores a copy's first position with the clean output just before the block, as the sampler does.

The same layout serves block SFT (learner/block_sft.py), with one noisy copy per completion block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.model.block_mask import BlockSpec, block_causal_mask
from common.record import TrajectoryBatch
from learner.logprobs import (
    CommittedTokens,
    LogitsFn,
    banned_token_ids,
    committed_tokens,
    sampling_temperature,
    truncated_logprobs,
)


@dataclass
class Composite:
    """R composite rows: ids, the (R, 1, L, L) attention mask, positions, and where each part sits.

    Column layout of row r: padding, prompt (ends at `prompt_width`), completion (`gen_length` columns), then
    copy q of the row at `copy_start + q * block.size`, then padding.
    """

    input_ids: torch.Tensor
    attention: torch.Tensor
    positions: torch.Tensor
    prompt_width: int
    gen_length: int
    block: BlockSpec

    @property
    def copy_start(self) -> int:
        return self.prompt_width + self.gen_length

    def logit_columns(self, copy: np.ndarray, block: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Columns holding the logits of completion `position` (in `block`) as seen by copy `copy` of its row."""
        size = self.block.size
        offset = position - block * size
        own = self.copy_start + copy * size + offset
        if not self.block.shift:
            return own
        before_block = self.prompt_width + position - 1  # the clean column just before the block (the prompt's last)
        return np.where(offset > 0, own - 1, before_block)


def build_composite(
    prompts: Sequence[np.ndarray],
    completions: np.ndarray,
    copies: Sequence[Sequence[tuple[int, np.ndarray]]],
    block: BlockSpec,
    pad_id: int,
) -> Composite:
    """Composite rows of `prompts` + clean `completions` (R, C) + per row the noisy copies (block index, BL ids)."""
    rows, gen = completions.shape
    size = block.size
    width = max(len(p) for p in prompts)
    most = max((len(c) for c in copies), default=0)
    length = width + gen + most * size
    ids = np.full((rows, length), pad_id, dtype=np.int64)
    real = np.zeros((rows, length), dtype=bool)
    blocks = np.zeros((rows, length), dtype=np.int64)
    segments = np.zeros((rows, length), dtype=np.int64)
    positions = np.zeros((rows, length), dtype=np.int64)
    offsets = np.arange(size)
    for r, (prompt, own) in enumerate(zip(prompts, copies, strict=True)):
        p = len(prompt)
        first = -(-p // size)  # the completion's first block follows the prompt's (last, maybe partial) block
        cols = np.arange(width - p, width + gen)
        ids[r, cols] = np.concatenate([prompt, completions[r]])
        real[r, cols] = True
        positions[r, cols] = np.arange(p + gen)
        blocks[r, width - p : width] = np.arange(p) // size
        blocks[r, width : width + gen] = first + np.arange(gen) // size
        for q, (b, tokens) in enumerate(own):
            cols = width + gen + q * size + offsets
            ids[r, cols] = tokens
            real[r, cols] = True
            positions[r, cols] = p + b * size + offsets
            blocks[r, cols] = first + b
            segments[r, cols] = q + 1
    real_t = torch.from_numpy(real)
    mask = block_causal_mask(torch.from_numpy(blocks), real_t, torch.from_numpy(segments))
    return Composite(torch.from_numpy(ids), mask, torch.from_numpy(positions), width, gen, block)


def composite_logits(logits_fn: LogitsFn, composite: Composite, device: torch.device | str) -> torch.Tensor:
    """(R, L, V) logits of a composite micro-batch: one forward."""
    return logits_fn(
        composite.input_ids.to(device), composite.attention.to(device), position_ids=composite.positions.to(device)
    )


@dataclass
class CompositeTokens(CommittedTokens):
    """A composite micro-batch of whole trajectories and the tokens their sampled timesteps committed: as
    learner.logprobs.StepTokens, with `token_row` / `token_col` saying where each token's logits are in the
    composite."""

    composite: Composite
    token_row: torch.Tensor
    token_col: torch.Tensor


def build_composite_tokens(
    batch: TrajectoryBatch, rows: np.ndarray, steps: np.ndarray, pad_id: int, block: BlockSpec
) -> CompositeTokens:
    """One composite row per trajectory in `rows` (its pairs contiguous), one copy per (row, step) pair."""
    rows = np.asarray(rows, dtype=np.int64)
    steps = np.asarray(steps, dtype=np.int64)
    trajectories, first_pair = np.unique(rows, return_index=True)
    trajectories = trajectories[np.argsort(first_pair)]
    slot = {int(t): i for i, t in enumerate(trajectories)}
    pair_row = np.array([slot[int(r)] for r in rows], dtype=np.int64)
    pair_copy = np.zeros(len(rows), dtype=np.int64)
    seen = np.zeros(len(trajectories), dtype=np.int64)
    for j, r in enumerate(pair_row):
        pair_copy[j] = seen[r]
        seen[r] += 1
    pair_block = batch.block_of_step(steps, rows)
    states = batch.state_at(rows, steps)
    size = block.size
    copies: list[list[tuple[int, np.ndarray]]] = [[] for _ in trajectories]
    for j, (r, b) in enumerate(zip(pair_row, pair_block, strict=True)):
        copies[r].append((int(b), states[j, b * size : (b + 1) * size]))
    composite = build_composite(
        [batch.prompt_ids[t] for t in trajectories], batch.completion_ids[trajectories], copies, block, pad_id
    )
    pair, pos, committed = committed_tokens(batch, rows, steps)
    return CompositeTokens(
        **vars(committed),
        composite=composite,
        token_row=torch.from_numpy(pair_row[pair]),
        token_col=torch.from_numpy(composite.logit_columns(pair_copy[pair], pair_block[pair], pos)),
    )


def composite_token_logprobs(
    logits_fn: LogitsFn,
    tokens: CompositeTokens,
    batch: TrajectoryBatch,
    banned_ids: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One forward over the composite micro-batch; (num_tokens,) log-probs of the committed tokens."""
    logits = composite_logits(logits_fn, tokens.composite, device)
    picked = logits[tokens.token_row.to(device), tokens.token_col.to(device)]
    return truncated_logprobs(
        picked,
        tokens.token_ids,
        sampling_temperature(batch),
        banned_token_ids(batch, banned_ids),
        tokens.allowed_ids,
    )


def trajectory_chunks(rows: np.ndarray, micro_batch_size: int) -> list[slice]:
    """Consecutive chunks of whole trajectories, each with at most `micro_batch_size` (row, step) pairs (a
    trajectory with more pairs gets a chunk of its own). `rows` lists each trajectory's pairs contiguously."""
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size = {micro_batch_size}: must be at least 1")
    rows = np.asarray(rows)
    if rows.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], rows.size]
    chunks, lo = [], 0
    for start, end in zip(starts, ends, strict=True):
        if end - lo > micro_batch_size and start > lo:
            chunks.append(slice(lo, int(start)))
            lo = int(start)
    chunks.append(slice(lo, int(rows.size)))
    return chunks
