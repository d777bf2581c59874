"""The AGRPO loss (ALGORITHM.md section 3) over a batch of trajectory records.

Per (trajectory i, step t) pair the term is the clipped PPO surrogate summed over the tokens committed
at t, optionally minus beta times a k3 KL to a reference. Pairs come from `learner.timesteps` with
coefficients that make the batch loss an unbiased estimate of

    (1/B) sum_i (1/(L_i+1)) sum_{t<=L_i} [ -surrogate_i(t) + beta * KL_i(t) ]

(the spec's "divide by k*G" is the 1/k inside coef and the 1/B here). Pairs are packed into micro-batches,
one forward/backward each: for full attention one row per pair, up to `micro_batch_size` rows; for a
block-causal model one composite row per trajectory holding all its pairs (learner/composite.py), whole
trajectories up to `micro_batch_size` pairs. `backward` receives each micro-batch's share of the loss, so
the accumulated gradient is the full-batch gradient whatever the packing (DeepSpeed passes `engine.backward`).

The PPO ratio's old policy is the rollout's recorded (behaviour) log-prob under `algorithm.rollout_correction =
none`, or the rollout weights' exact log-prob with a truncated importance weight or mask under the correcting
modes (learner/correction.py); either way every call measures the rollout/learner mismatch and the policy drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from common.config import AlgorithmConfig
from common.model.block_mask import BlockSpec, block_spec
from common.record import TrajectoryBatch
from learner.composite import CompositeTokens, build_composite_tokens, composite_token_logprobs, trajectory_chunks
from learner.correction import Correction, MismatchStats, OldPolicy, importance_weights, measure
from learner.logprobs import LogitsFn, StepTokens, build_step_tokens, model_logits, step_token_logprobs
from learner.timesteps import sample_timesteps

Backward = Callable[[torch.Tensor], None]


def default_backward(loss: torch.Tensor) -> None:
    loss.backward()


@dataclass
class LossStats:
    """What one loss evaluation reports; `mismatch` holds the rollout/learner numerics and the policy drift."""

    loss: float
    clip_fraction: float
    mean_ratio: float
    kl: float
    pairs: int
    tokens: int
    forward_passes: int
    mismatch: MismatchStats = field(default_factory=MismatchStats)


def pack(num_pairs: int, micro_batch_size: int) -> list[slice]:
    """Consecutive chunks of at most `micro_batch_size` pairs: ceil(num_pairs / size) forward passes."""
    return [slice(s, min(s + micro_batch_size, num_pairs)) for s in range(0, num_pairs, micro_batch_size)]


def pair_chunks(rows: np.ndarray, micro_batch_size: int, whole_trajectories: bool) -> list[slice]:
    """The micro-batches of a loss call: `pack` for one row per pair; whole trajectories for composite rows and
    for a sequence-level correction (one ratio per trajectory needs all its tokens in one micro-batch)."""
    return trajectory_chunks(rows, micro_batch_size) if whole_trajectories else pack(len(rows), micro_batch_size)


class PairScorer:
    """Builds a chunk's inputs and scores its committed tokens, in the layout the model calls for."""

    def __init__(self, block: BlockSpec | None, composite: bool, pad_id: int) -> None:
        if composite and block is None:
            raise ValueError("composite sequences need a block-causal model")
        self.block, self.composite, self.pad_id = block, composite, pad_id

    def build(self, batch: TrajectoryBatch, rows: np.ndarray, steps: np.ndarray) -> StepTokens | CompositeTokens:
        if self.composite:
            assert self.block is not None
            return build_composite_tokens(batch, rows, steps, self.pad_id, self.block)
        return build_step_tokens(batch, rows, steps, self.pad_id)

    def logprobs(
        self,
        logits_fn: LogitsFn,
        tokens: StepTokens | CompositeTokens,
        batch: TrajectoryBatch,
        banned_ids: Sequence[int],
        device: torch.device,
    ) -> torch.Tensor:
        if isinstance(tokens, CompositeTokens):
            return composite_token_logprobs(logits_fn, tokens, batch, banned_ids, device)
        return step_token_logprobs(logits_fn, tokens, batch, banned_ids, device, self.block)


def k3_kl(ref_logprob: torch.Tensor, logprob: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator exp(r - l) - (r - l) - 1 of KL(policy || reference); >= 0, 0 iff r == l."""
    delta = ref_logprob - logprob
    return torch.exp(delta) - delta - 1.0


def clipped_surrogate(
    logprob: torch.Tensor, old_logprob: torch.Tensor, advantage: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token min(rho*A, clip(rho)*A), the ratio rho, and where the clipped branch is the active one."""
    ratio = torch.exp(logprob - old_logprob)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = torch.minimum(ratio * advantage, clipped * advantage)
    active = ((ratio < 1.0 - clip_eps) & (advantage < 0)) | ((ratio > 1.0 + clip_eps) & (advantage > 0))
    return surrogate, ratio, active


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def agrpo_pairs_loss(
    model: nn.Module,
    batch: TrajectoryBatch,
    advantages: torch.Tensor,
    rows: torch.Tensor,
    steps: torch.Tensor,
    coef: torch.Tensor,
    *,
    clip_eps: float,
    micro_batch_size: int,
    pad_id: int,
    beta: float = 0.0,
    banned_ids: Sequence[int] = (),
    backward: Backward = default_backward,
    ref_logits_fn: LogitsFn | None = None,
    logits_fn: LogitsFn | None = None,
    composite: bool | None = None,
    correction: Correction | None = None,
    old_policy: OldPolicy | None = None,
) -> LossStats:
    """Loss and gradient of the given pairs: sum_pairs coef * term / B, packed into micro-batches.

    `logits_fn` replaces `model(...).logits` (a DeepSpeed engine's forward, a shifted Dream model); `model`
    then tells the device and whether attention is block-causal. `composite` (default: for block-causal
    models) scores each trajectory's pairs in one composite row instead of one row per pair; both give the
    same loss and gradient. `correction` and `old_policy` say how the rollout/learner mismatch is corrected
    (learner/correction.py; default: `none`, every trajectory sampled with the weights being trained).
    """
    if beta > 0 and ref_logits_fn is None:
        raise ValueError(f"beta = {beta}: a KL term needs ref_logits_fn (the reference policy)")
    if advantages.shape != (batch.size,):
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({batch.size},)")
    device = model_device(model)
    policy = logits_fn or model_logits(model)
    block = block_spec(model)
    composite = block is not None if composite is None else composite
    scorer = PairScorer(block, composite, pad_id)
    correction = correction or Correction()
    old_policy = old_policy or OldPolicy.all_fresh(batch.size)
    rows_np, steps_np = rows.cpu().numpy(), steps.cpu().numpy()
    adv = advantages.to(device, torch.float32)
    weights = coef.to(device, torch.float32)
    loss_sum = clipped = ratio_sum = kl_sum = 0.0
    mismatch = MismatchStats()
    tokens = passes = 0
    for chunk in pair_chunks(rows_np, micro_batch_size, composite or correction.sequence):
        step_tokens = scorer.build(batch, rows_np[chunk], steps_np[chunk])
        if step_tokens.num_tokens == 0:
            continue
        logprob = scorer.logprobs(policy, step_tokens, batch, banned_ids, device)
        behaviour = step_tokens.behaviour_logprob.to(device)
        pair = step_tokens.token_pair.to(device)
        trajectory = rows[chunk].to(device)[pair]
        old = old_policy.for_tokens(logprob.detach(), trajectory, pair + chunk.start, step_tokens.token_pos)
        known = ~torch.isnan(old)
        anchor = torch.where(known, old, behaviour) if correction.corrects else behaviour
        weight, adjusted = importance_weights(old - behaviour, known, trajectory, correction)
        surrogate, ratio, active = clipped_surrogate(logprob, anchor, adv[trajectory], clip_eps)
        per_token = -weight * surrogate
        if beta > 0:
            with torch.no_grad():
                ref = scorer.logprobs(ref_logits_fn, step_tokens, batch, banned_ids, device)  # type: ignore[arg-type]
            kl = k3_kl(ref, logprob)
            per_token = per_token + beta * kl
            kl_sum += float(kl.detach().sum())
        loss = (weights[chunk][pair] * per_token).sum() / batch.size
        backward(loss)
        loss_sum += float(loss.detach())
        clipped += float(active.sum())
        ratio_sum += float(ratio.detach().sum())
        mismatch = mismatch.merge(measure(logprob, old, behaviour, known, adjusted))
        tokens += step_tokens.num_tokens
        passes += 1
    total = max(tokens, 1)
    return LossStats(
        loss=loss_sum,
        clip_fraction=clipped / total,
        mean_ratio=ratio_sum / total if tokens else 1.0,
        kl=kl_sum / total,
        pairs=len(rows_np),
        tokens=tokens,
        forward_passes=passes,
        mismatch=mismatch,
    )


def draw_pairs(
    batch: TrajectoryBatch, algorithm: AlgorithmConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (row, step, coef) pairs of one update, drawn as `algorithm` says (k, low-discrepancy, entropy IS)."""
    last_step = torch.from_numpy(batch.last_step())
    entropy = torch.from_numpy(batch.step_entropy()) if algorithm.importance_sampling == "entropy" else None
    return sample_timesteps(
        last_step, algorithm.k, algorithm.timestep_sampling, algorithm.importance_sampling, entropy, generator
    )
