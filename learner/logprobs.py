"""Log-probs of the tokens committed at a step, recomputed from the rebuilt state.

The on-policy ratio is exactly 1 only if the learner scores a committed token under the same
distribution the rollout sampled it from: the same state x_t (rebuilt from `unmask_step`), the same
banned ids, the same temperature and the same truncation set. This module is that one recipe:

    logits.float() -> banned ids (incl. MASK) = -inf -> / T -> keep only the allowed ids -> log_softmax

A record sampled at temperature 0 is scored at temperature 1 (greedy has no log-probs of its own).
Rows are left-padded, so each micro-batch may pad differently from the rollout; the mask predictor counts
positions over real tokens only, which keeps the logits identical. A block-causal model is called with the
same block-causal mask the sampler used (common/model/block_mask.py); learner/composite.py scores all of a
trajectory's timesteps in one sequence instead of one row per timestep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.model.block_mask import BlockSpec, plain_block_mask
from common.record import TrajectoryBatch

LogitsFn = Callable[..., torch.Tensor]
"""The policy or the reference (e.g. adapters off) as `(input_ids, attention_mask, position_ids=None) -> logits`.

With a (R, S) real-token mask it returns (R, S, V) logits with row j scoring the token at position j (a
Dream-style shift already applied). With a (R, 1, Q, K) block mask it returns the model's logits as they are,
for the positions `position_ids` names; the caller, which laid the tokens out, realigns shifted ones."""


def model_logits(model: nn.Module) -> LogitsFn:
    """The forward pass of a mask predictor as a LogitsFn."""

    def forward(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

    return forward


def sequence_logits(
    logits_fn: LogitsFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    gen_length: int,
    block: BlockSpec | None,
) -> torch.Tensor:
    """Logits of left-padded [prompt, completion] rows (the completion ends every row), aligned as the sampler
    sees them: a block-causal model gets the sampler's block mask (completion blocks from its first token)."""
    if block is None:
        return logits_fn(input_ids, attention_mask)
    completion_start = input_ids.shape[1] - gen_length
    mask, positions = plain_block_mask(attention_mask.bool(), completion_start, block.size)
    logits = logits_fn(input_ids, mask, position_ids=positions)
    if block.shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    return logits


def left_pad(prompts: Sequence[np.ndarray], completions: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [pad.., prompt, completion] and their attention mask; completions end every row."""
    rows = len(prompts)
    width = max(len(p) for p in prompts)
    gen = completions.shape[1]
    ids = np.full((rows, width + gen), pad_id, dtype=np.int64)
    mask = np.zeros((rows, width + gen), dtype=np.int64)
    for r, prompt in enumerate(prompts):
        ids[r, width - len(prompt) : width] = prompt
        mask[r, width - len(prompt) :] = 1
    ids[:, width:] = completions
    return ids, mask


def sampling_temperature(batch: TrajectoryBatch) -> float:
    """The temperature tokens are scored at: the rollout's, or 1 for a greedy (T = 0) record."""
    t = float(batch.sampler.temperature)
    return t if t > 0 else 1.0


def banned_token_ids(batch: TrajectoryBatch, banned_ids: Sequence[int]) -> list[int]:
    """The ids the rollout could never sample: the caller's list plus MASK, checked against the record.

    Banning a different set than the sampler did changes every normaliser, so the ratio would not be 1
    on-policy; that is a wiring mistake, raised here rather than trained through.
    """
    given = {int(i) for i in banned_ids} - {int(batch.mask_id)}
    if batch.banned_ids is not None and given != set(batch.banned_ids):
        raise ValueError(
            f"banned_ids {sorted(given)}: the rollout banned {list(batch.banned_ids)} (besides MASK); the learner "
            "must ban the same ids, or its log-probs are not those of the sampled distribution"
        )
    return sorted(given | {int(batch.mask_id)})


def truncated_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    banned_ids: Sequence[int],
    allowed_ids: torch.Tensor | None,
) -> torch.Tensor:
    """log p(target) for each row of (n, V) logits under the tempered, truncated distribution.

    `allowed_ids` is (n, K) with NO_TOKEN (-1) padding, or None when the rollout did not truncate.
    """
    scores = logits.float()
    if banned_ids:
        scores = scores.index_fill(-1, torch.as_tensor(list(banned_ids), device=scores.device), float("-inf"))
    scores = scores / temperature
    if allowed_ids is not None:
        keep = torch.zeros_like(scores, dtype=torch.bool)
        ids = allowed_ids.to(scores.device).long()
        keep.scatter_(1, ids.clamp(min=0), ids >= 0)
        scores = scores.masked_fill(~keep, float("-inf"))
    logp = torch.log_softmax(scores, dim=-1)
    return logp.gather(1, targets.to(scores.device).long()[:, None]).squeeze(1)


@dataclass
class CommittedTokens:
    """The tokens a chunk of (row, step) pairs committed, as every learner layout lists them: the pair each belongs
    to, its completion position, its id, the log-prob the rollout recorded for it (the behaviour policy's,
    learner/correction.py) and its allowed-token set under top-k/top-p."""

    token_pair: torch.Tensor
    token_pos: torch.Tensor
    token_ids: torch.Tensor
    behaviour_logprob: torch.Tensor
    allowed_ids: torch.Tensor | None

    @property
    def num_tokens(self) -> int:
        return int(self.token_pair.shape[0])


@dataclass
class StepTokens(CommittedTokens):
    """A packed micro-batch of (row, step) pairs: `input_ids`/`attention_mask` hold one left-padded [prompt, x_t]
    row per pair, and the committed tokens' fields say which of its logits to score."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def build_step_tokens(batch: TrajectoryBatch, rows: np.ndarray, steps: np.ndarray, pad_id: int) -> StepTokens:
    """Rebuild x_t for each pair and list the tokens committed at t (EOS early-exit fills excluded)."""
    rows = np.asarray(rows, dtype=np.int64)
    steps = np.asarray(steps, dtype=np.int64)
    states = batch.state_at(rows, steps)
    ids, mask = left_pad([batch.prompt_ids[r] for r in rows], states, pad_id)
    _, _, committed = committed_tokens(batch, rows, steps)
    return StepTokens(**vars(committed), input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))


def committed_tokens(
    batch: TrajectoryBatch, rows: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, CommittedTokens]:
    """The tokens committed at each (row, step) pair, EOS early-exit fills excluded, with their pair index and
    completion position as arrays too (the composite layout maps them to logit columns)."""
    committed = (batch.unmask_step[rows].astype(np.int64) == steps[:, None]) & ~batch.filled[rows]
    pair, pos = np.nonzero(committed)
    src = rows[pair]
    allowed = None if batch.allowed_ids is None else torch.from_numpy(batch.allowed_ids[src, pos].astype(np.int64))
    tokens = CommittedTokens(
        token_pair=torch.from_numpy(pair),
        token_pos=torch.from_numpy(pos),
        token_ids=torch.from_numpy(batch.completion_ids[src, pos].astype(np.int64)),
        behaviour_logprob=torch.from_numpy(batch.logprob[src, pos].astype(np.float32)),
        allowed_ids=allowed,
    )
    return pair, pos, tokens


def step_token_logprobs(
    logits_fn: LogitsFn,
    tokens: StepTokens,
    batch: TrajectoryBatch,
    banned_ids: Sequence[int],
    device: torch.device | str = "cpu",
    block: BlockSpec | None = None,
) -> torch.Tensor:
    """One forward over the micro-batch; (num_tokens,) log-probs of the committed tokens, on `device`."""
    gen = batch.gen_length
    logits = sequence_logits(logits_fn, tokens.input_ids.to(device), tokens.attention_mask.to(device), gen, block)
    pair = tokens.token_pair.to(device)
    pos = tokens.token_pos.to(device) + (logits.shape[1] - gen)
    return truncated_logprobs(
        logits[pair, pos],
        tokens.token_ids,
        sampling_temperature(batch),
        banned_token_ids(batch, banned_ids),
        tokens.allowed_ids,
    )
