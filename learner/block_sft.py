"""The block-diffusion SFT objective of a block-causal model, in the composite layout of learner/composite.py.

SDAR and Fast-dLLM v2 train on [noisy sequence, clean sequence]: every noisy block sees the clean blocks before
it and itself, so one forward trains every block at once, each conditioned on the clean prefix it will see at
sampling time. Here the clean part is [prompt, completion] and one noisy copy of each completion block follows
it (prompt blocks are never noised, so their noisy copies, identical to the clean ones, are left out):

    [prompt | clean completion | noisy block 0 | noisy block 1 | ... | noisy block C/BL - 1]

Per (example, block) a mask ratio t ~ U(eps, 1) is drawn (a ratio per block, as Fast-dLLM v2; SDAR draws one
per sequence) and each token of the copy is replaced by MASK with probability t. The loss is the masked
cross-entropy weighted by 1/t, summed and divided by (batch size x completion length), the estimate of the
negative log-likelihood bound that the full-attention objective (learner/sft.py) uses per sequence.
Fast-dLLM v2 adds a second, complementary copy (each token masked in exactly one of the two); one copy keeps
the composite at P + 2C tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from common.model.block_mask import BlockSpec
from common.model.loading import Policy, mask_predictor_logits
from learner.composite import Composite, build_composite


@dataclass
class BlockTrainingBatch:
    """A noised composite batch and, per masked copy token, where its logits are, its target and its 1/t weight."""

    composite: Composite
    token_row: torch.Tensor
    token_col: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    completion_tokens: int


def block_training_batch(
    prompts: Sequence[Sequence[int]],
    completions: torch.Tensor,
    mask_id: int,
    pad_id: int,
    block: BlockSpec,
    generator: torch.Generator,
    eps: float,
) -> BlockTrainingBatch:
    """One noisy copy of every completion block, masked at a per-(row, block) ratio t ~ U(eps, 1)."""
    rows, gen = completions.shape
    size = block.size
    blocks = gen // size
    t = (1 - eps) * torch.rand((rows, blocks), device=generator.device, generator=generator) + eps
    noise = torch.rand((rows, gen), device=generator.device, generator=generator)
    masked = (noise < t.repeat_interleave(size, dim=1)).cpu().numpy()
    clean = completions.cpu().numpy()
    noisy = np.where(masked, mask_id, clean)
    copies = [[(b, noisy[r, b * size : (b + 1) * size]) for b in range(blocks)] for r in range(rows)]
    composite = build_composite([np.asarray(p, dtype=np.int64) for p in prompts], clean, copies, block, pad_id)
    row, pos = np.nonzero(masked)
    cols = composite.logit_columns(pos // size, pos // size, pos)
    return BlockTrainingBatch(
        composite=composite,
        token_row=torch.from_numpy(row),
        token_col=torch.from_numpy(cols),
        targets=torch.from_numpy(clean[row, pos]),
        weights=(1.0 / t.cpu())[torch.from_numpy(row), torch.from_numpy(pos // size)],
        completion_tokens=rows * gen,
    )


def block_sft_loss(
    policy: Policy,
    prompts: Sequence[Sequence[int]],
    completions: torch.Tensor,
    block: BlockSpec,
    generator: torch.Generator,
    eps: float,
) -> torch.Tensor:
    """sum over masked copy tokens of CE / t, over (batch x completion length); one forward."""
    batch = block_training_batch(prompts, completions, policy.mask_id, policy.pad_id, block, generator, eps)
    device = next(policy.model.parameters()).device
    c = batch.composite
    logits = mask_predictor_logits(
        policy.model, c.input_ids.to(device), c.attention.to(device), position_ids=c.positions.to(device)
    )
    picked = logits[batch.token_row.to(device), batch.token_col.to(device)].float()
    ce = F.cross_entropy(picked, batch.targets.to(device), reduction="none")
    return (ce * batch.weights.to(device)).sum() / batch.completion_tokens
