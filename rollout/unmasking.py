"""How many positions a sampling step commits, and which.

`unmask: fixed` follows LLaDA's linear schedule: its expected number of tokens revealed per step is constant,
so a block of BL masked positions sampled in S steps commits BL // S tokens per step and the first BL % S
steps commit one more. The learner needs the same counts to know how many tokens a step's action holds, so the
rule lives here rather than inside the sampling loop.

`unmask: threshold` is Fast-dLLM's parallel decoding (its `get_transfer_index` with a threshold): a step
commits every open position of the block whose confidence reaches tau, and always at least the most confident
one; `max_unmask_per_step` caps the count. The count comes from the confidence, the choice of positions from
the remasking score, so `low_confidence` gives Fast-dLLM's rule exactly and `random` / `leftmost` pick that
many positions their own way. The number of steps then varies from row to row; the record still identifies
every state by its step (each row counts its own steps).

Which positions: the `count` best scores of each row. Exact ties are decided by `tie_break`: `position`
prefers the leftmost (a rule that no batch layout, device or library version changes), `reference` does what
LLaDA's generate.py does, `torch.topk` over the row's own unpadded sequence with -inf everywhere but the open
positions of the block, whose choice among tied values depends on that tensor's length and device.
"""

from __future__ import annotations

import numpy as np
import torch

from common.config import SamplerConfig


def steps_per_block(cfg: SamplerConfig) -> int:
    """Steps spent on each block by `unmask: fixed`; the config guarantees that the blocks share the steps evenly."""
    return cfg.steps // (cfg.gen_length // cfg.block_length)


def transfer_counts(masked: int, steps: int) -> list[int]:
    """Tokens committed at each of `steps` steps when `masked` positions must all be committed."""
    base, extra = divmod(masked, steps)
    return [base + 1 if s < extra else base for s in range(steps)]


def step_counts(cfg: SamplerConfig) -> np.ndarray:
    """(N,) tokens committed at every global step of a full-length `unmask: fixed` sample (no early exit)."""
    per_block = transfer_counts(cfg.block_length, steps_per_block(cfg))
    return np.tile(np.asarray(per_block, dtype=np.int64), cfg.gen_length // cfg.block_length)


def threshold_counts(conf: torch.Tensor, open_: torch.Tensor, threshold: float, cap: int) -> torch.Tensor:
    """(R,) positions to commit: the open ones whose confidence reaches `threshold`, clamped to [1, cap].

    `conf` (R, BL) holds the confidences of the open positions (`open_`), compared in float64; cap 0 = none.
    Every row must have an open position.
    """
    reached = (conf.double() >= threshold) & open_
    counts = reached.sum(dim=1).clamp(min=1)
    if cap:
        counts = counts.clamp(max=cap)
    return counts


def select_positions(
    score: torch.Tensor,
    counts: torch.Tensor,
    tie_break: str,
    row_length: torch.Tensor | None = None,
    block_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """(R, BL) bool: the `counts[r]` highest scores of each row (closed positions score -inf).

    `position` keeps the leftmost of tied scores. `reference` redoes each row whose selection boundary falls
    inside a tie the way LLaDA's generate.py selects: `torch.topk` over a 1-D tensor of the row's unpadded length
    (`row_length`, prompt + completion) in the score's dtype, -inf except the block, which starts at
    `block_offset`. Rows without a tie at the boundary select the same set either way.
    """
    ordered, order = torch.sort(score, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    picked = rank < counts[:, None]
    if tie_break == "position":
        return picked
    if tie_break != "reference":
        raise ValueError(f"tie_break = {tie_break!r}: must be position or reference")
    assert row_length is not None and block_offset is not None
    inside = counts < score.shape[1]
    last = ordered.gather(1, (counts - 1).clamp(min=0)[:, None]).squeeze(1)
    after = ordered.gather(1, counts.clamp(max=score.shape[1] - 1)[:, None]).squeeze(1)
    for r in torch.nonzero(inside & (last == after) & torch.isfinite(last)).flatten().tolist():
        full = score.new_full((int(row_length[r]),), float("-inf"))
        lo = int(block_offset[r])
        full[lo : lo + score.shape[1]] = score[r]
        index = torch.topk(full, int(counts[r])).indices - lo
        picked[r] = False
        picked[r, index] = True
    return picked
