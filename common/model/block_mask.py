"""Block-causal attention: which tokens a block-diffusion model lets each token see.

A block-diffusion model (SDAR, TraDo, Fast-dLLM v2, the tiny model with `attention: block_causal`) attends
bidirectionally inside a block of `size` tokens and causally across blocks. Rollout (sampler, KV cache) and
learner (composite sequences, block SFT) must build the very same pattern, so it is built here, once, from
three per-token facts:

- `real`: the token exists (left/right padding does not, is never attended and counts no position);
- `blocks`: the block it belongs to. The prompt is cut into blocks from its first token (position 0), as
  the public models cut it; the completion's blocks start at the completion's first token, so the
  sampler's blocks, the model's blocks and the cache coincide for every row whatever its prompt length
  (docs/models.md, "Block layout");
- `segments`: 0 for the clean sequence, j >= 1 for the j-th noisy copy of a block in a composite sequence
  (learner/composite.py). A copy sits at its block's real positions and sees the clean blocks before its
  block and itself, nothing else; clean tokens never see a copy.

A query may see a key iff the key is real and either both are clean and the key's block is not later, or
the key is clean and in an earlier block than the (noisy) query, or both are in the same noisy copy. A padding
query sees only itself, so no softmax row is empty (an all-false row makes SDPA return NaN, and NaN
gradients would leak through a masked loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BlockSpec:
    """A block-causal model's attention block size and whether its logits are shifted (output i predicts i+1)."""

    size: int
    shift: bool


def block_spec(model: Any) -> BlockSpec | None:
    """The block layout of a loaded model (anything with a `config`), or None for full attention."""
    config = getattr(model, "config", None)
    if getattr(config, "attention", "full") != "block_causal":
        return None
    return BlockSpec(size=int(config.block_size), shift=bool(getattr(config, "logits_shift", False)))


def token_positions(real: torch.Tensor) -> torch.Tensor:
    """(B, S) positions that count real tokens only, so left padding moves no rotary phase."""
    return (real.long().cumsum(-1) - 1).clamp(min=0)


def sequence_blocks(real: torch.Tensor, completion_start: int | None, size: int) -> torch.Tensor:
    """(B, S) block ids of plain [padding, prompt, completion] rows.

    Prompt tokens: position // size. Completion tokens (columns from `completion_start` on): the prompt's
    block count, ceil(P / size), plus their completion offset // size. Without a completion every token is
    prompt-like, which is also the public models' layout of a whole sequence.
    """
    blocks = token_positions(real) // size
    if completion_start is None:
        return blocks
    width = real.shape[1]
    prompt_len = real[:, :completion_start].sum(dim=1, keepdim=True)
    first = (prompt_len + size - 1) // size
    offset = torch.arange(width - completion_start, device=real.device) // size
    blocks = blocks.clone()
    blocks[:, completion_start:] = first + offset[None, :]
    return blocks


def block_causal_mask(
    blocks: torch.Tensor,
    real: torch.Tensor,
    segments: torch.Tensor | None = None,
    queries: torch.Tensor | slice | None = None,
) -> torch.Tensor:
    """(B, 1, Q, K) boolean "may attend" mask over K keys for the queries at key columns `queries` (all by default).

    `blocks`, `real` and `segments` are (B, K) facts of the keys; a query's facts are those of its column.
    """
    k = blocks.shape[1]
    if segments is None:
        segments = torch.zeros_like(blocks)
    cols = torch.arange(k, device=blocks.device)
    q_cols = cols if queries is None else cols[queries]
    bq, bk = blocks[:, q_cols, None], blocks[:, None, :]
    sq, sk = segments[:, q_cols, None], segments[:, None, :]
    clean_k = sk == 0
    allowed = (clean_k & ((bk < bq) | ((bk == bq) & (sq == 0)))) | (~clean_k & (sk == sq))
    real_q = real[:, q_cols, None]
    allowed &= real[:, None, :] & real_q
    alone = ~real_q & (q_cols[:, None] == cols[None, :])[None]
    return (allowed | alone)[:, None]


def plain_block_mask(real: torch.Tensor, completion_start: int | None, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask and positions of plain [padding, prompt, completion] rows under block-causal attention."""
    blocks = sequence_blocks(real, completion_start, size)
    return block_causal_mask(blocks, real), token_positions(real)
