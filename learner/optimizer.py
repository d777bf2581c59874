"""Optimizer and learning-rate schedule of every trainer (DeepSpeed ranks and the in-process trainer).

Linear warmup over ceil(warmup_ratio * steps) updates, the first of them at lr 0 (the HF/TRL convention of
the released recipe), then cosine decay to 0 at `steps`, or constant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from common.config import LearnerConfig


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for the update number `step` (0-based)."""
    if step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(cfg: LearnerConfig) -> int:
    return math.ceil(cfg.warmup_ratio * cfg.steps)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: LearnerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    factor = functools.partial(lr_factor, total=cfg.steps, warmup=warmup_steps(cfg), schedule=cfg.schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(params: Sequence[nn.Parameter], cfg: LearnerConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
