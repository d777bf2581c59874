"""How many tokens each sampling step commits (the LLaDA linear-schedule rule).

LLaDA's noise schedule is linear, so the expected number of tokens revealed per step is constant: a
block of BL masked positions sampled in S steps commits BL // S tokens per step and the first
BL % S steps commit one more. The learner needs the same counts to know how many tokens a step's
action holds, so the rule lives here rather than inside the sampling loop.
"""

from __future__ import annotations

import numpy as np

from common.config import SamplerConfig


def steps_per_block(cfg: SamplerConfig) -> int:
    """Steps spent on each block; the config guarantees that the blocks share the steps evenly."""
    return cfg.steps // (cfg.gen_length // cfg.block_length)


def transfer_counts(masked: int, steps: int) -> list[int]:
    """Tokens committed at each of `steps` steps when `masked` positions must all be committed."""
    base, extra = divmod(masked, steps)
    return [base + 1 if s < extra else base for s in range(steps)]


def step_counts(cfg: SamplerConfig) -> np.ndarray:
    """(N,) tokens committed at every global step of a full-length sample (no early exit)."""
    per_block = transfer_counts(cfg.block_length, steps_per_block(cfg))
    return np.tile(np.asarray(per_block, dtype=np.int64), cfg.gen_length // cfg.block_length)
