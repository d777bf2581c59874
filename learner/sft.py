"""Masked-diffusion supervised fine-tuning (LLaDA's SFT objective) of the policy on (prompt, completion) pairs.

Each pair is laid out as the sampler lays out a rollout: the prompt left-padded (attention mask over real
tokens), then the completion padded with EOS to `sampler.gen_length`. EOS positions are trained like any
other completion token: the sampler's early exit and the end of every answer depend on the model putting
EOS after it. Per sequence a mask ratio t ~ U(eps, 1) is drawn and each completion token is replaced by
MASK with probability t; the prompt is never masked. The loss is

    sum over masked positions of CE(logits, token) / t,   divided by (batch size x completion length),

the 1/t weighting that makes it an upper bound on the negative log-likelihood of the masked diffusion
model (LLaDA, arXiv 2502.09992, section 2.3; the completion length is the padded length, since the
EOS padding is part of the answer).

A block-causal model trains with the block-diffusion objective instead (learner/block_sft.py): noisy copies
of its completion blocks, each conditioned on the clean prefix, in one composite sequence.

With `sft.wrong_fraction` > 0 a fixed, seeded share of the examples carries a plausible wrong answer
(rewards/perturb.py): the base model then spreads its mass over right and near-miss answers, so RL has
something to sharpen.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.config import Config, SFTConfig, dump_config
from common.errors import ConfigError, DataError
from common.model.block_mask import block_spec
from common.model.loading import Policy, load_policy, mask_predictor_logits, save_policy
from common.text import encode_text
from learner.block_sft import block_sft_loss
from learner.optimizer import lr_factor
from rewards.data import load_task_items
from rewards.perturb import check_wrong_fraction, wrong_completion
from rewards.templates import render_prompt

MIN_MASK_RATIO = 1e-3
"""LLaDA's eps: t is drawn from U(eps, 1) so the 1/t weight stays bounded."""


@dataclass
class SFTExamples:
    """Tokenized training pairs; `wrong[i]` marks a completion with a deliberately wrong answer."""

    prompts: list[list[int]]
    completions: torch.Tensor
    texts: list[str]
    wrong: np.ndarray

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class TrainingBatch:
    """One noised batch: `input_ids` (B, W + C) with the completion part noised, targets (B, C)."""

    input_ids: torch.Tensor
    attention: torch.Tensor
    prompt_width: int
    targets: torch.Tensor
    masked: torch.Tensor
    t: torch.Tensor


@dataclass
class SFTResult:
    losses: list[float]
    grad_norms: list[float]
    output: Path | None = None


def build_examples(
    items: list[dict[str, Any]],
    task: str,
    template: str,
    policy: Policy,
    gen_length: int,
    wrong_fraction: float,
    seed: int,
) -> SFTExamples:
    """Prompt ids and EOS-padded completion ids; round(wrong_fraction * n) seeded examples get a wrong answer."""
    check_wrong_fraction(task, wrong_fraction)
    rng = random.Random(f"sft-wrong:{seed}")
    wrong = np.zeros(len(items), dtype=bool)
    wrong[rng.sample(range(len(items)), round(wrong_fraction * len(items)))] = True
    tokenizer = policy.tokenizer
    prompts, texts = [], []
    completions = torch.full((len(items), gen_length), policy.eos_id, dtype=torch.long)
    for i, item in enumerate(items):
        if not isinstance(item.get("completion"), str):
            raise DataError(f"{task} item {i}: no `completion` text to train on (generated items carry one)")
        text = wrong_completion(task, item, rng) if wrong[i] else item["completion"]
        ids = encode_text(tokenizer, text, f"{task} item {i} completion")
        if len(ids) > gen_length:
            raise ConfigError(
                f"sampler.gen_length = {gen_length}: {task} item {i} has a {len(ids)}-token completion "
                f"{text[:40]!r}; raise gen_length"
            )
        completions[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        prompts.append(
            encode_text(tokenizer, render_prompt(task, item, template, tokenizer), f"{task} item {i} prompt")
        )
        texts.append(text)
    return SFTExamples(prompts, completions, texts, wrong)


def training_batch(
    prompts: Sequence[Sequence[int]],
    completions: torch.Tensor,
    mask_id: int,
    pad_id: int,
    generator: torch.Generator,
    eps: float = MIN_MASK_RATIO,
) -> TrainingBatch:
    """Left-padded prompts followed by completions masked at a per-row ratio t ~ U(eps, 1)."""
    device = generator.device
    b, c = completions.shape
    width = max(len(p) for p in prompts)
    input_ids = torch.full((b, width + c), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width + c), dtype=torch.bool)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) : width] = torch.as_tensor(list(p), dtype=torch.long)
        attention[i, width - len(p) :] = True
    input_ids, attention = input_ids.to(device), attention.to(device)
    targets = completions.to(device)
    t = (1 - eps) * torch.rand(b, device=device, generator=generator) + eps
    masked = torch.rand((b, c), device=device, generator=generator) < t[:, None]
    input_ids[:, width:] = torch.where(masked, mask_id, targets)
    return TrainingBatch(input_ids, attention, width, targets, masked, t)


def masked_diffusion_loss(
    logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """sum over masked positions of CE / t, over (batch x completion length); logits (B, C, V) in float32."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    weighted = torch.where(masked, ce / t[:, None], torch.zeros_like(ce))
    return weighted.sum() / targets.numel()


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Indices of each step's batch: seeded epochs, each a fresh permutation, read in consecutive slices."""
    rng = np.random.default_rng(seed)
    needed = batch_size * steps
    stream = np.concatenate([rng.permutation(n) for _ in range(-(-needed // n))])
    return [stream[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def train_sft(policy: Policy, examples: SFTExamples, cfg: SFTConfig, seed: int, progress: bool = False) -> SFTResult:
    """AdamW with warmup + cosine and gradient clipping; returns the loss and gradient norm of every step.

    Every random draw (batch order, mask ratios, masks) comes from `seed`, so a run is reproducible.
    """
    model = policy.model
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, total=cfg.steps, warmup=warmup, schedule="cosine")
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    block = block_spec(model)
    result = SFTResult([], [])
    model.train()
    bar = tqdm(
        batch_order(len(examples), cfg.batch_size, cfg.steps, seed),
        desc="sft",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    for rows in bar:
        prompts = [examples.prompts[i] for i in rows]
        if block is not None:
            loss = block_sft_loss(policy, prompts, examples.completions[rows], block, generator, MIN_MASK_RATIO)
        else:
            batch = training_batch(prompts, examples.completions[rows], policy.mask_id, policy.pad_id, generator)
            logits = mask_predictor_logits(policy, batch.input_ids, batch.attention.long())[:, batch.prompt_width :]
            loss = masked_diffusion_loss(logits, batch.targets, batch.masked, batch.t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        result.losses.append(loss.item())
        result.grad_norms.append(float(norm))
        bar.set_postfix(loss=f"{np.mean(result.losses[-20:]):.4f}", refresh=False)
    model.eval()
    return result


def default_output(config: Config) -> Path:
    """`base-<task>` next to the run directory, where the train command looks for a cached base policy."""
    if config.sft.output:
        return Path(config.sft.output)
    return Path(config.run_dir).parent / f"base-{config.data.task}"


def training_items(config: Config) -> list[dict[str, Any]]:
    """The train split (never the held-out one), cut to `sft.num_items`."""
    data = config.data
    if config.sft.num_items is not None and not data.path:
        data = data.model_copy(update={"num_train": config.sft.num_items})
    items = load_task_items(data, "train", config.seed)
    return items[: config.sft.num_items] if config.sft.num_items is not None else items


def run_sft(config: Config, device: str | torch.device = "cpu", progress: bool = False) -> SFTResult:
    """Load the policy (float32 unless `model.dtype` says otherwise), fine-tune it, save it with its config."""
    check_wrong_fraction(config.data.task, config.sft.wrong_fraction)
    items = training_items(config)
    dtype = torch.float32 if config.model.dtype == "auto" else config.model.dtype
    policy = load_policy(config.model, device=device, dtype=dtype, seed=config.seed)
    examples = build_examples(
        items,
        config.data.task,
        config.data.template,
        policy,
        config.sampler.gen_length,
        config.sft.wrong_fraction,
        config.seed,
    )
    result = train_sft(policy, examples, config.sft, config.seed, progress)
    output = default_output(config)
    save_policy(policy, output)
    (output / "sft_config.yaml").write_text(dump_config(config))
    result.output = output
    return result
