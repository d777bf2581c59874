"""One policy update from a batch of rewarded trajectories, shared by every trainer.

The in-process trainer (plain torch) and the LearnerWorker (a DeepSpeed rank) differ only in how a
micro-batch's loss is back-propagated and how the optimizer steps, so both pass those two callables here.
`backward(loss, last)` is told which micro-batch closes an optimizer step, which DeepSpeed needs to know
when to reduce gradients; that is why all timesteps are drawn before the first forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from common.config import Config
from common.errors import ConfigError
from common.model.block_mask import block_spec
from common.record import TrajectoryBatch
from learner.agrpo import LossStats, agrpo_pairs_loss, draw_pairs, pack, pair_chunks
from learner.correction import Correction, MismatchStats
from learner.diffu_grpo import diffu_grpo_logprobs, diffu_grpo_loss
from learner.logprobs import LogitsFn, model_logits
from learner.old_policy import PairDraw, WeightVersions, recompute_old_logprobs

BoundaryBackward = Callable[[torch.Tensor, bool], None]
OptimizerStep = Callable[[], dict[str, float]]


class _Counter:
    """Calls `backward` with last=True on exactly the `total`-th micro-batch.

    `scale` is set per accumulation chunk to its share of the batch's trajectories: each chunk's loss is a mean
    over its own trajectories, so the weighted sum is the mean over the batch even when chunks differ in size.
    """

    def __init__(self, backward: BoundaryBackward, total: int) -> None:
        self.backward, self.total, self.scale, self.calls = backward, total, 1.0, 0

    def __call__(self, loss: torch.Tensor) -> None:
        self.calls += 1
        self.backward(loss * self.scale, self.calls == self.total)

    def check(self) -> None:
        if self.calls != self.total:
            raise RuntimeError(f"{self.calls} backward passes where {self.total} were planned")


def accumulation_chunks(batch: TrajectoryBatch, group_size: int, chunks: int) -> list[np.ndarray]:
    """Row indices of each gradient-accumulation chunk; every chunk holds whole groups."""
    groups = np.arange(batch.size).reshape(-1, group_size)
    return [c.reshape(-1) for c in np.array_split(groups, chunks) if c.size]


def summarize(stats: list[LossStats], steps: list[dict[str, float]], chunks: int) -> dict[str, float]:
    """Token-weighted means of the loss statistics, the mismatch sums, and the last step's grad norm and lr."""
    tokens = max(1, sum(s.tokens for s in stats))
    mismatch = MismatchStats()
    for s in stats:
        mismatch = mismatch.merge(s.mismatch)
    return {
        "loss": sum(s.loss for s in stats) / (chunks * len(steps)),
        "clip_fraction": sum(s.clip_fraction * s.tokens for s in stats) / tokens,
        "mean_ratio": sum(s.mean_ratio * s.tokens for s in stats) / tokens,
        **mismatch.summary(),
        "kl": sum(s.kl * s.tokens for s in stats) / tokens,
        "pairs": float(sum(s.pairs for s in stats)),
        "tokens": float(sum(s.tokens for s in stats)),
        "forward_passes": float(sum(s.forward_passes for s in stats)),
        "grad_norm": steps[-1]["grad_norm"],
        "lr": steps[0]["lr"],
    }


def policy_update(
    model: nn.Module,
    batch: TrajectoryBatch,
    advantages: torch.Tensor,
    config: Config,
    *,
    pad_id: int,
    banned_ids: Sequence[int],
    backward: BoundaryBackward,
    optimizer_step: OptimizerStep,
    generator: torch.Generator,
    mask_seeds: Sequence[int] = (),
    logits_fn: LogitsFn | None = None,
    ref_logits_fn: LogitsFn | None = None,
    sampled_with: WeightVersions | None = None,
) -> dict[str, float]:
    """AGRPO: one optimizer step. diffu-GRPO: one step per inner iteration (`mask_seeds`, one each).

    A block-causal model's AGRPO pairs are scored in composite sequences, one row per trajectory
    (learner/composite.py); full attention keeps one row per pair. `sampled_with` says which weight version
    sampled each trajectory (default: the weights being trained); pairs of older versions get their pi_old
    recomputed under those weights before the first backward (learner/old_policy.py), as
    `algorithm.rollout_correction` and `algorithm.measure_mismatch` ask.
    """
    algo, learner = config.algorithm, config.learner
    composite = block_spec(model) is not None
    chunks = accumulation_chunks(batch, algo.group_size, learner.grad_accumulation)
    mbs = learner.micro_batch_size
    shared = {"pad_id": pad_id, "banned_ids": banned_ids, "micro_batch_size": mbs, "ref_logits_fn": ref_logits_fn}
    stats: list[LossStats] = []
    steps: list[dict[str, float]] = []
    if algo.name == "agrpo":
        correction = Correction.from_config(algo)
        sampled_with = sampled_with or WeightVersions(np.zeros(batch.size, dtype=np.int64), 0)
        if not (correction.corrects or algo.measure_mismatch):
            sampled_with = dataclasses.replace(sampled_with, history=None)
        parts = [(batch.select(rows), advantages[rows], sampled_with.versions[rows]) for rows in chunks]
        draws = [draw_pairs(sub, algo, generator) for sub, _, _ in parts]
        olds = recompute_old_logprobs(
            model,
            logits_fn or model_logits(model),
            [PairDraw(sub, v, r.numpy(), t.numpy()) for (sub, _, v), (r, t, _) in zip(parts, draws, strict=True)],
            sampled_with,
            micro_batch_size=mbs,
            pad_id=pad_id,
            banned_ids=banned_ids,
        )
        whole = composite or correction.sequence
        planned = sum(len(pair_chunks(d[0].numpy(), mbs, whole)) for d in draws)
        counter = _Counter(backward, planned)
        for (sub, adv, _), (rows, t, coef), old in zip(parts, draws, olds, strict=True):
            counter.scale = sub.size / batch.size
            stats.append(
                agrpo_pairs_loss(
                    model,
                    sub,
                    adv,
                    rows,
                    t,
                    coef,
                    clip_eps=algo.clip_eps,
                    beta=algo.beta,
                    backward=counter,
                    logits_fn=logits_fn,
                    composite=composite,
                    correction=correction,
                    old_policy=old,
                    **shared,
                )
            )
        counter.check()
        steps.append(optimizer_step())
        return summarize(stats, steps, len(chunks))

    if composite:
        raise ConfigError("algorithm.name = 'diffu_grpo': the diffu-GRPO baseline runs on full-attention models only")
    settings = algo.diffu_grpo
    if len(mask_seeds) != settings.inner_iterations:
        raise ValueError(f"{len(mask_seeds)} mask seeds for {settings.inner_iterations} inner iterations")
    policy = logits_fn or model_logits(model)
    device = next(model.parameters()).device
    subs = [(batch.select(rows), advantages[rows]) for rows in chunks]
    # d1 computes every iteration's old log-probs before the first update, each with its own mask seed.
    with torch.no_grad():
        old = [
            [
                diffu_grpo_logprobs(
                    policy,
                    sub,
                    mask_seed=seed,
                    prompt_mask_prob=settings.prompt_mask_prob,
                    micro_batch_size=mbs,
                    pad_id=pad_id,
                    device=device,
                    banned_ids=banned_ids,
                )
                for sub, _ in subs
            ]
            for seed in mask_seeds
        ]
    for it, seed in enumerate(mask_seeds):
        counter = _Counter(backward, sum(len(pack(sub.size, mbs)) for sub, _ in subs))
        for c, (sub, adv) in enumerate(subs):
            counter.scale = sub.size / batch.size
            stats.append(
                diffu_grpo_loss(
                    model,
                    sub,
                    adv,
                    old[it][c],
                    mask_seed=seed,
                    prompt_mask_prob=settings.prompt_mask_prob,
                    clip_eps=algo.clip_eps,
                    beta=settings.beta,
                    backward=counter,
                    logits_fn=logits_fn,
                    **shared,
                )
            )
        counter.check()
        steps.append(optimizer_step())
    return summarize(stats, steps, len(chunks))
