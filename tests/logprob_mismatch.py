"""Rollout/learner log-prob mismatch of a record: what the sampler recorded against an exact recomputation.

Every sampled token of a record is scored again by the learner's recipe (learner/logprobs.py): the state it was
committed in is rebuilt from `unmask_step`, one full forward of the model gives its exact logits, and the same
temperature, banned ids and truncation set give the log-prob. Under an exact sampler the two agree to float
rounding; under an approximate cache, or with other numerics (bf16, another batch layout), the difference is
the mismatch the learner's rollout correction has to absorb. Used by tests and benchmarks alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from common.model.block_mask import block_spec
from common.record import TrajectoryBatch
from learner.logprobs import build_step_tokens, model_logits, step_token_logprobs


@torch.no_grad()
def recorded_and_exact(
    model: nn.Module, record: TrajectoryBatch, pad_id: int, banned_ids: Sequence[int], pairs_per_call: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(recorded, exact) float64 log-probs of every sampled token (EOS fills excluded), in the same order."""
    last = record.row_steps() - 1
    rows = np.repeat(np.arange(record.size), np.maximum(last + 1, 0))
    steps = np.concatenate([np.arange(n + 1) for n in last]) if rows.size else np.zeros(0, dtype=np.int64)
    device = next(model.parameters()).device
    recorded, exact = [], []
    for lo in range(0, rows.size, pairs_per_call):
        tokens = build_step_tokens(record, rows[lo : lo + pairs_per_call], steps[lo : lo + pairs_per_call], pad_id)
        logp = step_token_logprobs(model_logits(model), tokens, record, banned_ids, device, block_spec(model))
        recorded.append(tokens.behaviour_logprob.double().numpy())
        exact.append(logp.double().cpu().numpy())
    return np.concatenate(recorded), np.concatenate(exact)


def mismatch(model: nn.Module, record: TrajectoryBatch, pad_id: int, banned_ids: Sequence[int]) -> tuple[float, float]:
    """Mean and max of |recorded - exact| log-prob over every sampled token."""
    recorded, exact = recorded_and_exact(model, record, pad_id, banned_ids)
    diff = np.abs(recorded - exact)
    return float(diff.mean()), float(diff.max())
