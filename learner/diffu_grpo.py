"""The diffu-GRPO baseline (d1, arXiv 2504.12216; ALGORITHM.md section 4).

d1 replaces the intractable sequence likelihood of a diffusion LM by a one-step estimate: mask the whole
completion and each prompt token with probability p (0.15), run ONE forward pass, and read every
completion token's log-prob off that single prediction. The GRPO loss then uses per-token ratios and
clipping against log-probs computed the same way (same mask seed) before the update, plus a k3 KL to a
reference, averaged over each sequence's completion tokens (up to and including the first EOS) and then
over sequences. It is cheap and biased: the one-step estimate is not the likelihood of the sampled
trajectory, which is what AGRPO fixes.

A fresh mask seed per inner iteration gives each of the mu updates a different prompt-mask view; the
caller runs the mu iterations and must compute old log-probs with the SAME seed (`diffu_grpo_logprobs`)
so the ratio is 1 on the first update. Scores use temperature 1 without truncation (as d1), with the
same banned ids as the sampler (MASK can never be sampled, so it is excluded from the softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from common.record import TrajectoryBatch
from learner.agrpo import (
    Backward,
    LossStats,
    clipped_surrogate,
    default_backward,
    k3_kl,
    model_device,
    pack,
)
from learner.correction import MismatchStats
from learner.logprobs import LogitsFn, banned_token_ids, left_pad, model_logits, truncated_logprobs


def completion_mask(batch: TrajectoryBatch) -> np.ndarray:
    """(B, C) positions that count in d1's loss: every token up to and including the first EOS."""
    is_eos = batch.completion_ids == batch.eos_id
    first = np.where(is_eos.any(axis=1), is_eos.argmax(axis=1), batch.gen_length - 1)
    return np.arange(batch.gen_length)[None, :] <= first[:, None]


def prompt_mask_pattern(batch: TrajectoryBatch, mask_seed: int, prob: float) -> list[np.ndarray]:
    """Per row, which prompt tokens are masked; drawn over prompt positions (not padded columns).

    Drawing on the unpadded prompt makes the pattern a function of (seed, row, position) alone, so old
    log-probs, new log-probs and any micro-batching of them see the identical masked input.
    """
    width = max(len(p) for p in batch.prompt_ids)
    gen = torch.Generator().manual_seed(int(mask_seed))
    noise = torch.rand((batch.size, width), generator=gen, dtype=torch.float64).numpy()
    return [noise[i, : len(p)] < prob for i, p in enumerate(batch.prompt_ids)]


def masked_inputs(
    batch: TrajectoryBatch, rows: np.ndarray, patterns: list[np.ndarray], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [prompt with masked tokens, all-MASK completion] rows and their attention mask."""
    prompts = [np.where(patterns[r], batch.mask_id, batch.prompt_ids[r]) for r in rows]
    completion = np.full((len(rows), batch.gen_length), batch.mask_id, dtype=np.int64)
    ids, mask = left_pad(prompts, completion, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _chunk_logprobs(
    logits_fn: LogitsFn,
    batch: TrajectoryBatch,
    rows: np.ndarray,
    patterns: list[np.ndarray],
    pad_id: int,
    banned: list[int],
    device: torch.device,
) -> torch.Tensor:
    """(len(rows), C) one-step log-probs of the completion tokens of `rows`."""
    ids, mask = masked_inputs(batch, rows, patterns, pad_id)
    logits = logits_fn(ids.to(device), mask.to(device))[:, -batch.gen_length :]
    targets = torch.from_numpy(batch.completion_ids[rows].astype(np.int64)).reshape(-1)
    flat = truncated_logprobs(logits.reshape(-1, logits.shape[-1]), targets, 1.0, banned, None)
    return flat.view(len(rows), batch.gen_length)


@torch.no_grad()
def diffu_grpo_logprobs(
    logits_fn: LogitsFn,
    batch: TrajectoryBatch,
    *,
    mask_seed: int,
    prompt_mask_prob: float,
    micro_batch_size: int,
    pad_id: int,
    device: torch.device | str = "cpu",
    banned_ids: Sequence[int] = (),
) -> torch.Tensor:
    """(B, C) log-probs without gradient: the old (or reference) side of one inner iteration."""
    patterns = prompt_mask_pattern(batch, mask_seed, prompt_mask_prob)
    banned = banned_token_ids(batch, banned_ids)
    order = np.arange(batch.size)
    parts = [
        _chunk_logprobs(logits_fn, batch, order[c], patterns, pad_id, banned, torch.device(device))
        for c in pack(batch.size, micro_batch_size)
    ]
    return torch.cat(parts)


def diffu_grpo_loss(
    model: nn.Module,
    batch: TrajectoryBatch,
    advantages: torch.Tensor,
    old_logprob: torch.Tensor,
    *,
    mask_seed: int,
    prompt_mask_prob: float,
    clip_eps: float,
    micro_batch_size: int,
    pad_id: int,
    beta: float = 0.0,
    banned_ids: Sequence[int] = (),
    backward: Backward = default_backward,
    ref_logits_fn: LogitsFn | None = None,
    logits_fn: LogitsFn | None = None,
) -> LossStats:
    """One inner iteration: loss = mean_i [ sum_j m_ij (-surrogate_ij + beta*KL_ij) / sum_j m_ij ].

    Its old log-probs are the learner's own, recomputed before the first update, so `mismatch` holds only the
    policy drift (new against old); the rollout's log-probs are never read.

    `logits_fn` replaces `model(...).logits` (e.g. a DeepSpeed engine's forward); `model` then only tells
    the device.
    """
    if beta > 0 and ref_logits_fn is None:
        raise ValueError(f"beta = {beta}: a KL term needs ref_logits_fn (the reference policy)")
    if old_logprob.shape != (batch.size, batch.gen_length):
        raise ValueError(f"old_logprob has shape {tuple(old_logprob.shape)}, expected {(batch.size, batch.gen_length)}")
    device = model_device(model)
    policy = logits_fn or model_logits(model)
    patterns = prompt_mask_pattern(batch, mask_seed, prompt_mask_prob)
    banned = banned_token_ids(batch, banned_ids)
    weights = torch.from_numpy(completion_mask(batch).astype(np.float32)).to(device)
    weights = weights / weights.sum(dim=1, keepdim=True)
    adv = advantages.to(device, torch.float32)
    old_all = old_logprob.to(device, torch.float32)
    order = np.arange(batch.size)
    loss_sum = clipped = ratio_sum = kl_sum = 0.0
    drift = MismatchStats()
    passes = 0
    for chunk in pack(batch.size, micro_batch_size):
        rows = order[chunk]
        logprob = _chunk_logprobs(policy, batch, rows, patterns, pad_id, banned, device)
        old = old_all[chunk]
        w = weights[chunk]
        counted = w > 0
        surrogate, ratio, active = clipped_surrogate(logprob, old, adv[chunk][:, None], clip_eps)
        per_token = -surrogate
        if beta > 0:
            with torch.no_grad():
                ref = _chunk_logprobs(ref_logits_fn, batch, rows, patterns, pad_id, banned, device)  # type: ignore[arg-type]
            kl = k3_kl(ref, logprob)
            per_token = per_token + beta * kl
            kl_sum += float(kl.detach()[counted].sum())
        loss = (w * per_token).sum() / batch.size
        backward(loss)
        loss_sum += float(loss.detach())
        clipped += float(active[counted].sum())
        ratio_sum += float(ratio.detach()[counted].sum())
        diff = (logprob.detach() - old)[counted].abs()
        drift = drift.merge(
            MismatchStats(drift_tokens=diff.numel(), drift_sum=float(diff.sum()), drift_max=float(diff.max()))
        )
        passes += 1
    tokens = int(completion_mask(batch).sum())
    return LossStats(
        loss=loss_sum,
        clip_fraction=clipped / tokens,
        mean_ratio=ratio_sum / tokens,
        kl=kl_sum / tokens,
        pairs=batch.size,
        tokens=tokens,
        forward_passes=passes,
        mismatch=drift,
    )
