"""The exact semi-autoregressive diffusion sampler that produces trajectory records (ALGORITHM.md §1).

Blocks of the completion are sampled left to right. Each step gets the logits of the current block for
every row still being sampled from a `StepCache` (rollout/kv_cache.py): a full forward over the whole
sequence (full attention: future blocks stay MASK and are attended to), or, for a block-causal model, the
current block run against the exact KV cache of the prompt and committed blocks. It draws a token at each
still-masked position of the current block, scores the positions (`low_confidence`,
`random` or `entropy`) and commits the best n_t of them, n_t following the LLaDA schedule
(rollout/unmasking.py). What is kept per committed position (its step, token, log-prob, entropy and
truncation set) is the compact record of common/record.py; intermediate states are rebuilt from it.

Rows are left-padded to the longest prompt with an attention mask; the model counts positions over real
tokens only, so padding does not change a row's logits. The token distribution and its dtype path are
documented in rollout/distribution.py: the recorded log-prob and entropy come from the float32 logits of
the model at state x_t (logits.float() -> banned -inf -> / T -> top-k/top-p -> log_softmax), so the
learner can recompute them; float64 is used only to choose the token (Gumbel-max) and, for
`low_confidence`, to rank positions.

The model is used as it is: the caller puts it in eval mode (dropout would break determinism).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.config import SamplerConfig
from common.record import NO_TOKEN, TrajectoryBatch
from rollout.distribution import banned_tensor, draw, position_scores, token_stats, truncate
from rollout.kv_cache import LogitsFn, StepCache, step_cache
from rollout.unmasking import steps_per_block, transfer_counts


@dataclass
class _Trace:
    """Per-row sampling state and the record under construction, kept on the model's device."""

    x: torch.Tensor
    attention: torch.Tensor
    prompt_width: int
    unmask_step: torch.Tensor
    logprob: torch.Tensor
    entropy: torch.Tensor
    filled: torch.Tensor
    allowed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def completion(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.x[rows, self.prompt_width + start : self.prompt_width + stop]


def _model_device(model: nn.Module | None) -> torch.device:
    params = [] if model is None else list(model.parameters())
    return params[0].device if params else torch.device("cpu")


def _start(prompts: list[Sequence[int]], cfg: SamplerConfig, mask_id: int, pad_id: int, device: torch.device) -> _Trace:
    """Left-pad prompts, append C masks, and allocate the record (nothing committed: step -1)."""
    width = max(len(p) for p in prompts)
    b, c = len(prompts), cfg.gen_length
    x = torch.full((b, width + c), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width + c), dtype=torch.bool)
    for i, p in enumerate(prompts):
        x[i, width - len(p) : width] = torch.as_tensor(list(p), dtype=torch.long)
        attention[i, width - len(p) :] = True
    x[:, width:] = mask_id
    return _Trace(
        x=x.to(device),
        attention=attention.to(device),
        prompt_width=width,
        unmask_step=torch.full((b, c), -1, dtype=torch.int16, device=device),
        logprob=torch.zeros((b, c), dtype=torch.float32, device=device),
        entropy=torch.zeros((b, c), dtype=torch.float32, device=device),
        filled=torch.zeros((b, c), dtype=torch.bool, device=device),
    )


def _exit_finished(
    trace: _Trace, active: torch.Tensor, block_start: int, block_length: int, step: int, eos_id: int
) -> torch.Tensor:
    """Fill rows whose previous block is all EOS with EOS from `block_start` on; return the other rows.

    The fill is stamped with the current step, later than any step that committed a sampled token of
    the row, so no state a loss term rebuilds ever contains a filled token.
    """
    done = (trace.completion(active, block_start - block_length, block_start) == eos_id).all(dim=1)
    rows = active[done]
    if rows.numel():
        trace.x[rows, trace.prompt_width + block_start :] = eos_id
        trace.unmask_step[rows, block_start:] = step
        trace.filled[rows, block_start:] = True
    return active[~done]


def _step(
    cache: StepCache,
    trace: _Trace,
    active: torch.Tensor,
    block_start: int,
    cfg: SamplerConfig,
    count: int,
    step: int,
    banned: torch.Tensor,
    generator: torch.Generator,
) -> int:
    """One model call for the active rows, committing `count` positions of their block.

    Returns the vocabulary size, which only the model's logits reveal.
    """
    block_logits = cache.block_logits(trace.x, active, block_start)
    open_ = trace.unmask_step[active, block_start : block_start + cfg.block_length] < 0
    rows, cols = open_.nonzero(as_tuple=True)
    cand = truncate(block_logits[rows, cols].float(), banned, cfg.temperature, cfg.top_k, cfg.top_p)
    choice = draw(cand, cfg.temperature, generator)
    tokens = cand.token_ids(choice)
    logprob, entropy = token_stats(cand, choice)
    score = position_scores(cfg.remasking, cand, choice, entropy, generator)

    confidence = torch.full(open_.shape, float("-inf"), dtype=torch.float64, device=open_.device)
    confidence[rows, cols] = score
    which = torch.full(open_.shape, -1, dtype=torch.long, device=open_.device)
    which[rows, cols] = torch.arange(rows.numel(), device=open_.device)
    picked = confidence.topk(count, dim=1).indices
    m = which.gather(1, picked).reshape(-1)
    r = active[:, None].expand(-1, count).reshape(-1)
    c = (block_start + picked).reshape(-1)

    trace.x[r, trace.prompt_width + c] = tokens[m]
    trace.unmask_step[r, c] = step
    trace.logprob[r, c] = logprob[m]
    trace.entropy[r, c] = entropy[m]
    if cand.ids is not None:
        ids = cand.ids[m]
        if cfg.top_k == 0:
            ids = ids[:, : int((ids != NO_TOKEN).sum(dim=1).max())]
        trace.allowed.append((r, c, ids))
    return int(block_logits.shape[-1])


def _allowed_array(trace: _Trace, cfg: SamplerConfig, vocab: int) -> np.ndarray | None:
    """(B, C, W) int32 truncation sets: W = top_k (capped at the vocabulary) or the widest nucleus."""
    if cfg.top_k == 0 and cfg.top_p >= 1.0:
        return None
    b, c = trace.unmask_step.shape
    width = min(cfg.top_k, vocab) if cfg.top_k else max((ids.shape[1] for _, _, ids in trace.allowed), default=1)
    out = np.full((b, c, width), NO_TOKEN, dtype=np.int32)
    for r, col, ids in trace.allowed:
        out[r.cpu().numpy(), col.cpu().numpy(), : ids.shape[1]] = ids.cpu().numpy()
    return out


@torch.inference_mode()
def sample(
    model: nn.Module | None,
    prompts: list[Sequence[int]],
    cfg: SamplerConfig,
    mask_id: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator,
    banned_ids: Sequence[int] = (),
    logits_fn: LogitsFn | None = None,
    on_step: Callable[[], None] | None = None,
) -> TrajectoryBatch:
    """Sample one completion per prompt and return its exact trajectory record.

    `generator` drives every random draw (Gumbel noise, then `random` scores, per step) and must live on
    the model's device; the same prompts, config and generator seed give an identical record.
    `banned_ids` are never sampled (MASK always is banned). `logits_fn` replaces `model(...).logits` of a
    full-attention model, e.g. for Dream-style models whose logits must be shifted back one position; a
    block-causal model is always called through rollout/kv_cache.py (`sampler.kv_cache`), with its block mask.
    `on_step` is called after every global step (a progress bar), including steps no row needed after an
    early exit.
    """
    if not prompts:
        raise ValueError("sample() needs at least one prompt")
    device = _model_device(model)
    trace = _start(prompts, cfg, mask_id, pad_id, device)
    cache = step_cache(model, logits_fn, cfg, trace.attention, trace.prompt_width)
    banned = banned_tensor(mask_id, banned_ids, device)
    per_block = steps_per_block(cfg)
    counts = transfer_counts(cfg.block_length, per_block)
    active = torch.arange(len(prompts), device=device)
    vocab = 0
    for block in range(cfg.gen_length // cfg.block_length):
        block_start = block * cfg.block_length
        if block and cfg.early_exit and active.numel():
            active = _exit_finished(trace, active, block_start, cfg.block_length, block * per_block, eos_id)
        if active.numel():
            cache.begin_block(trace.x, active, block_start)
        for s, count in enumerate(counts):
            if active.numel():
                step = block * per_block + s
                vocab = _step(cache, trace, active, block_start, cfg, count, step, banned, generator)
            if on_step is not None:
                on_step()
        if active.numel():
            cache.end_block(trace.x, active, block_start)
    return TrajectoryBatch(
        prompt_ids=[np.asarray(list(p), dtype=np.int32) for p in prompts],
        completion_ids=trace.x[:, trace.prompt_width :].to(torch.int32).cpu().numpy(),
        unmask_step=trace.unmask_step.cpu().numpy(),
        logprob=trace.logprob.cpu().numpy(),
        entropy=trace.entropy.cpu().numpy(),
        filled=trace.filled.cpu().numpy(),
        allowed_ids=_allowed_array(trace, cfg, vocab),
        sampler=cfg,
        mask_id=mask_id,
        eos_id=eos_id,
        banned_ids=tuple(sorted({int(i) for i in banned_ids} - {int(mask_id)})),
    )


def sample_batches(
    model: nn.Module | None,
    prompts: list[Sequence[int]],
    cfg: SamplerConfig,
    mask_id: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator,
    banned_ids: Sequence[int] = (),
    logits_fn: LogitsFn | None = None,
    progress: bool = False,
) -> TrajectoryBatch:
    """`sample` over chunks of `cfg.batch_size` prompts, in order, with an optional progress bar.

    The bar counts sampler steps over all chunks (on stderr, so stdout stays clean for results).
    """
    if not prompts:
        raise ValueError("sample_batches() needs at least one prompt")
    chunks = [prompts[i : i + cfg.batch_size] for i in range(0, len(prompts), cfg.batch_size)]
    with tqdm(
        total=len(chunks) * cfg.steps, desc="sampling", unit="step", file=sys.stderr, disable=not progress
    ) as bar:
        batches = [
            sample(
                model,
                chunk,
                cfg,
                mask_id,
                eos_id,
                pad_id,
                generator,
                banned_ids=banned_ids,
                logits_fn=logits_fn,
                on_step=bar.update,
            )
            for chunk in chunks
        ]
    return batches[0] if len(batches) == 1 else TrajectoryBatch.concat(batches)
