"""The semi-autoregressive diffusion sampler that produces exact trajectory records (ALGORITHM.md §1).

Blocks of the completion are sampled left to right. Each step gets the logits of the current block for
the rows being sampled from a `StepCache` (rollout/kv_cache.py): a full forward over the whole sequence (full
attention: future blocks stay MASK and are attended to), the current block run against the exact KV cache of a
block-causal model, or a window against an approximate (prefix / dual) cache of a full-attention model. It
draws a token at each still-masked position of the current block, scores the positions (`low_confidence`,
`random`, `entropy` or `leftmost`) and commits the best n of them: n follows the LLaDA schedule
(`unmask: fixed`) or the confidence threshold (`unmask: threshold`), rollout/unmasking.py. Each row counts its
own steps, so a row that needs fewer steps for a block (threshold decoding) is not run again until the next
block, and its record numbers only the steps it took. What is kept per committed position (its step, token,
log-prob, entropy and truncation set) is the compact record of common/record.py; intermediate states are
rebuilt from it.

Rows are left-padded to the longest prompt with an attention mask; the model counts positions over real
tokens only, so padding does not change a row's logits. The token distribution and its dtype path are
documented in rollout/distribution.py: the recorded log-prob and entropy come from the float32 logits the
step's forward produced (logits.float() -> banned -inf -> / T -> top-k/top-p -> log_softmax), i.e. the
distribution the token was drawn from (the behaviour policy, also under an approximate cache); float64 is
used only to choose the token (Gumbel-max), and `sampler.confidence_dtype` sets the precision that ranks
positions and meets the threshold.

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
from rollout.distribution import banned_tensor, confidence, draw, position_scores, token_stats, truncate
from rollout.kv_cache import LogitsFn, StepCache, step_cache
from rollout.unmasking import select_positions, steps_per_block, threshold_counts, transfer_counts

CONFIDENCE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class _Trace:
    """Per-row sampling state and the record under construction, kept on the model's device.

    `steps[b]` is the next step index of row b (the steps it has taken so far).
    """

    x: torch.Tensor
    attention: torch.Tensor
    prompt_width: int
    unmask_step: torch.Tensor
    logprob: torch.Tensor
    entropy: torch.Tensor
    filled: torch.Tensor
    steps: torch.Tensor
    allowed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def completion(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.x[rows, self.prompt_width + start : self.prompt_width + stop]

    def prompt_lengths(self, rows: torch.Tensor) -> torch.Tensor:
        return self.attention[rows, : self.prompt_width].sum(dim=1)


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
        steps=torch.zeros(b, dtype=torch.int16, device=device),
    )


def _exit_finished(
    trace: _Trace, active: torch.Tensor, block_start: int, block_length: int, eos_id: int
) -> torch.Tensor:
    """Fill rows whose previous block is all EOS with EOS from `block_start` on; return the other rows.

    The fill is stamped with the row's next step, later than any step that committed a sampled token of
    the row, so no state a loss term rebuilds ever contains a filled token.
    """
    done = (trace.completion(active, block_start - block_length, block_start) == eos_id).all(dim=1)
    rows = active[done]
    if rows.numel():
        trace.x[rows, trace.prompt_width + block_start :] = eos_id
        trace.unmask_step[rows, block_start:] = trace.steps[rows, None]
        trace.filled[rows, block_start:] = True
    return active[~done]


def _step(
    cache: StepCache,
    trace: _Trace,
    rows: torch.Tensor,
    block_start: int,
    cfg: SamplerConfig,
    count: int,
    banned: torch.Tensor,
    generator: torch.Generator,
) -> int:
    """One model call for `rows`, each committing `count` positions of its block (`unmask: fixed`) or as many as
    the confidence threshold allows (`unmask: threshold`, `count` unused); every row has an open position.

    Returns the vocabulary size, which only the model's logits reveal.
    """
    block_logits = cache.block_logits(trace.x, rows, block_start)
    open_ = trace.unmask_step[rows, block_start : block_start + cfg.block_length] < 0
    r_open, cols = open_.nonzero(as_tuple=True)
    cand = truncate(block_logits[r_open, cols].float(), banned, cfg.temperature, cfg.top_k, cfg.top_p)
    choice = draw(cand, cfg.temperature, generator)
    tokens = cand.token_ids(choice)
    logprob, entropy = token_stats(cand, choice)
    conf = None
    if cfg.remasking == "low_confidence" or cfg.unmask == "threshold":
        dtype = block_logits.dtype if cfg.confidence_dtype == "model" else CONFIDENCE_DTYPES[cfg.confidence_dtype]
        conf = confidence(cand, choice, dtype)
    score = position_scores(cfg.remasking, conf, entropy, cols, generator)

    scores = torch.full(open_.shape, float("-inf"), dtype=score.dtype, device=open_.device)
    scores[r_open, cols] = score
    if cfg.unmask == "threshold":
        assert conf is not None
        conf_matrix = torch.zeros(open_.shape, dtype=conf.dtype, device=open_.device)
        conf_matrix[r_open, cols] = conf
        counts = threshold_counts(conf_matrix, open_, cfg.threshold, cfg.max_unmask_per_step)
    else:
        counts = torch.full((rows.numel(),), count, dtype=torch.long, device=open_.device)
    lengths = trace.prompt_lengths(rows)
    picked = select_positions(scores, counts, cfg.tie_break, lengths + cfg.gen_length, lengths + block_start)
    which = torch.full(open_.shape, -1, dtype=torch.long, device=open_.device)
    which[r_open, cols] = torch.arange(r_open.numel(), device=open_.device)
    pr, pc = picked.nonzero(as_tuple=True)
    m = which[pr, pc]
    r = rows[pr]
    c = block_start + pc

    trace.x[r, trace.prompt_width + c] = tokens[m]
    trace.unmask_step[r, c] = trace.steps[r]
    trace.logprob[r, c] = logprob[m]
    trace.entropy[r, c] = entropy[m]
    trace.steps[rows] += 1
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


def _sample_block(
    cache: StepCache,
    trace: _Trace,
    active: torch.Tensor,
    block_start: int,
    cfg: SamplerConfig,
    banned: torch.Tensor,
    generator: torch.Generator,
    on_commit: Callable[[int], None] | None,
) -> int:
    """Every step of one block for the `active` rows; returns the vocabulary size (0 if nothing ran)."""
    vocab = 0
    block = slice(block_start, block_start + cfg.block_length)
    if cfg.unmask == "fixed":
        for count in transfer_counts(cfg.block_length, steps_per_block(cfg)):
            vocab = _step(cache, trace, active, block_start, cfg, count, banned, generator)
            if on_commit is not None:
                on_commit(count * active.numel())
        return vocab
    rows = active
    while rows.numel():
        before = int((trace.unmask_step[rows, block] >= 0).sum())
        vocab = _step(cache, trace, rows, block_start, cfg, 0, banned, generator)
        if on_commit is not None:
            on_commit(int((trace.unmask_step[rows, block] >= 0).sum()) - before)
        rows = rows[(trace.unmask_step[rows, block] < 0).any(dim=1)]
    return vocab


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
    on_commit: Callable[[int], None] | None = None,
) -> TrajectoryBatch:
    """Sample one completion per prompt and return its exact trajectory record.

    `generator` drives every random draw (Gumbel noise, then `random` scores, per step) and must live on
    the model's device; the same prompts, config and generator seed give an identical record.
    `banned_ids` are never sampled (MASK always is banned). `logits_fn` replaces `model(...).logits` of a
    full-attention model without a cache, e.g. for Dream-style models whose logits must be shifted back one
    position; a block-causal model, and a LLaDA model under `kv_cache: prefix | dual`, are always called
    through rollout/kv_cache.py with their masks. `on_commit(n)` is told how many completion positions were
    just committed or filled by the early exit (a progress bar; they add up to B * C).
    """
    if not prompts:
        raise ValueError("sample() needs at least one prompt")
    device = _model_device(model)
    trace = _start(prompts, cfg, mask_id, pad_id, device)
    cache = step_cache(model, logits_fn, cfg, trace.attention, trace.prompt_width)
    banned = banned_tensor(mask_id, banned_ids, device)
    active = torch.arange(len(prompts), device=device)
    vocab = 0
    for block in range(cfg.gen_length // cfg.block_length):
        block_start = block * cfg.block_length
        if block and cfg.early_exit and active.numel():
            kept = _exit_finished(trace, active, block_start, cfg.block_length, eos_id)
            if on_commit is not None and kept.numel() != active.numel():
                on_commit((active.numel() - kept.numel()) * (cfg.gen_length - block_start))
            active = kept
        if not active.numel():
            break
        cache.begin_block(trace.x, active, block_start)
        vocab = _sample_block(cache, trace, active, block_start, cfg, banned, generator, on_commit) or vocab
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
        forward_passes=cache.forward_passes.cpu().numpy(),
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

    The bar counts completion tokens committed over all chunks (on stderr, so stdout stays clean for results):
    the step count is not known in advance under threshold decoding, the token count always is.
    """
    if not prompts:
        raise ValueError("sample_batches() needs at least one prompt")
    chunks = [prompts[i : i + cfg.batch_size] for i in range(0, len(prompts), cfg.batch_size)]
    with tqdm(
        total=len(prompts) * cfg.gen_length, desc="sampling", unit="tok", file=sys.stderr, disable=not progress
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
                on_commit=bar.update,
            )
            for chunk in chunks
        ]
    return batches[0] if len(batches) == 1 else TrajectoryBatch.concat(batches)
