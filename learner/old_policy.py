"""pi_old for pairs sampled with older weights: one no-grad forward under the weights that sampled them.

With `rollout.max_staleness` S >= 1 a group may have been sampled with weight version w older than v, the
version being trained. Its pi_old is the policy of version w, exactly: `WeightHistory` (learner/weight_history.py)
keeps the trained weights of the last S versions and swaps them into the model for this pass. Trajectories of
version v need no pass: their pi_old is the loss pass's own forward, detached (`OldPolicy`, learner/correction.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.model.block_mask import block_spec
from common.record import TrajectoryBatch
from learner.agrpo import PairScorer, model_device, pair_chunks
from learner.correction import OldPolicy
from learner.logprobs import LogitsFn
from learner.weight_history import WeightHistory


@dataclass
class WeightVersions:
    """Which weights sampled each trajectory of a batch, and where older weights are kept.

    `visit` lists the older versions every learner rank steps through, in that order, whether or not its own
    share holds one: swapping weights is a collective under ZeRO-3. By default, the batch's own older versions.
    Without a `history` (none kept), older trajectories keep the behaviour log-probs and are not measured.
    """

    versions: np.ndarray
    current: int
    history: WeightHistory | None = None
    visit: Sequence[int] | None = None

    def older(self) -> list[int]:
        if self.visit is not None:
            return sorted(int(v) for v in self.visit)
        return sorted({int(v) for v in self.versions if v != self.current})


@dataclass
class PairDraw:
    """One loss call's trajectories, the weight version of each, and its drawn (row, step) pairs."""

    batch: TrajectoryBatch
    versions: np.ndarray
    rows: np.ndarray
    steps: np.ndarray


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """The rollout samples without dropout, so pi_old is scored in eval mode."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def recompute_old_logprobs(
    model: nn.Module,
    logits_fn: LogitsFn,
    draws: Sequence[PairDraw],
    weights: WeightVersions,
    *,
    micro_batch_size: int,
    pad_id: int,
    banned_ids: Sequence[int],
) -> list[OldPolicy]:
    """The `OldPolicy` of each draw: older pairs recomputed under their own weights wherever those are kept."""
    olds = []
    for d in draws:
        fresh = d.versions == weights.current
        stale = not bool(fresh[d.rows].all())
        olds.append(OldPolicy(fresh, torch.full((len(d.rows), d.batch.gen_length), float("nan")) if stale else None))
    history = weights.history
    if history is None:
        return olds
    block = block_spec(model)
    scorer = PairScorer(block, block is not None, pad_id)
    device = model_device(model)
    for version in weights.older():
        if not history.has(version):
            continue
        wanted = [np.flatnonzero(d.versions[d.rows] == version) for d in draws]
        if not history.collective and not any(w.size for w in wanted):
            continue
        with history.use(version), _evaluating(model), torch.no_grad():
            for d, pairs, old in zip(draws, wanted, olds, strict=True):
                if pairs.size:
                    _score(scorer, logits_fn, d, pairs, old, micro_batch_size, banned_ids, device)
    return olds


def _score(
    scorer: PairScorer,
    logits_fn: LogitsFn,
    draw: PairDraw,
    pairs: np.ndarray,
    old: OldPolicy,
    micro_batch_size: int,
    banned_ids: Sequence[int],
    device: torch.device,
) -> None:
    """Fill `old.logprob` for `pairs` (indices into the draw), in micro-batches of the loss's own layout."""
    assert old.logprob is not None
    for chunk in pair_chunks(draw.rows[pairs], micro_batch_size, scorer.composite):
        picked = pairs[chunk]
        tokens = scorer.build(draw.batch, draw.rows[picked], draw.steps[picked])
        if tokens.num_tokens == 0:
            continue
        logprob = scorer.logprobs(logits_fn, tokens, draw.batch, banned_ids, device).float().cpu()
        old.logprob[torch.from_numpy(picked)[tokens.token_pair], tokens.token_pos] = logprob
