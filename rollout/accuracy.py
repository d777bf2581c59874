"""Held-out accuracy of a policy under the d1 evaluation protocol, at one sampler setting.

The d1 protocol samples one completion per item (in the papers: 256 tokens, block 32, gen_length/2
steps, `low_confidence` remasking, temperature 0), decodes it up to the first EOS without special tokens,
and grades it, which gives (numerator, denominator); the accuracy of the set is sum(numerators) /
sum(denominators), so Sudoku counts cells and the other tasks count items. Grading runs in the
time-limited grading child (`rewards.grading`) under either protocol: `agrpo` (our graders) or `d1`
(d1's own parser, which reads the whole completion window decoded with its special tokens, as d1's
eval.py hands it over).

`evaluate` has no printing and no file output: the `agrpo eval` command and the training driver's
periodic evaluation (inside a rollout worker) both call it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import ValidationError
from tqdm import tqdm

from common.config import SamplerConfig, format_validation_error
from common.errors import ConfigError
from common.model.loading import Policy, mask_predictor_logits
from common.text import decode_completion, encode_text
from rewards.grading import GRADE_TIMEOUT_S, grade_function, grade_items
from rewards.templates import render_prompt
from rollout.sampler import sample


def eval_sampler(
    gen_length: int,
    block_length: int,
    steps: int,
    remasking: str = "low_confidence",
    temperature: float = 0.0,
    batch_size: int = 64,
    top_k: int = 0,
    top_p: float = 1.0,
    kv_cache: str = "auto",
    **options: Any,
) -> SamplerConfig:
    """A validated sampler setting, or a one-line ConfigError naming the rule it breaks.

    `options` are further `SamplerConfig` fields (unmask, threshold, confidence_dtype, tie_break, ...).
    """
    try:
        return SamplerConfig(
            gen_length=gen_length,
            block_length=block_length,
            steps=steps,
            remasking=remasking,
            temperature=temperature,
            batch_size=batch_size,
            top_k=top_k,
            top_p=top_p,
            kv_cache=kv_cache,
            **options,
        )
    except ValidationError as err:
        problems = format_validation_error(err).split("; ")
        raise ConfigError("; ".join(f"sampler.{problem}" for problem in problems)) from None


def evaluate(
    policy: Policy,
    items: Sequence[dict[str, Any]],
    task: str,
    template: str,
    sampler_cfg: SamplerConfig,
    batch_size: int,
    seed: int,
    progress: bool = False,
    keep_outcomes: bool = False,
    protocol: str = "agrpo",
    grade_timeout_s: float = GRADE_TIMEOUT_S,
) -> dict[str, Any]:
    """Sample one completion per item, grade it, and return accuracy = sum(num) / sum(den).

    Returns accuracy, num, den, n (items), protocol, grading_timeouts and grading_errors (items graded
    wrong because their grading ran past `grade_timeout_s`, or raised or crashed its child), seconds
    (sampling, decoding and grading), tokens_per_s (completion positions produced per second, EOS padding
    included) and nfe (model forward passes per item, counted at every model call: the compute a step count
    stands for once caches, threshold decoding or early exits change it); with `keep_outcomes`, also
    `outcomes`: per item its completion text, num and den. The same seed gives the same completions.
    The model is put in eval mode for the call and restored afterwards.
    """
    if not items:
        raise ValueError("evaluate() needs at least one item")
    grade_function(task, protocol)  # an unknown task or protocol fails before any sampling
    tokenizer = policy.tokenizer
    prompts = [
        encode_text(tokenizer, render_prompt(task, item, template, tokenizer), f"{task} item {i} prompt")
        for i, item in enumerate(items)
    ]
    model = policy.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    num = den = 0.0
    timeouts = errors = passes = 0
    outcomes: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        with tqdm(
            total=len(items),
            desc=f"eval steps={sampler_cfg.steps}"
            if sampler_cfg.unmask == "fixed"
            else f"eval threshold={sampler_cfg.threshold}",
            unit="item",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            for lo in range(0, len(items), batch_size):
                chunk = prompts[lo : lo + batch_size]
                batch = sample(
                    model,
                    chunk,
                    sampler_cfg,
                    policy.mask_id,
                    policy.eos_id,
                    policy.pad_id,
                    generator,
                    banned_ids=policy.banned_ids,
                    logits_fn=lambda ids, mask: mask_predictor_logits(policy, ids, mask),
                )
                assert batch.forward_passes is not None
                passes += int(batch.forward_passes.sum())
                texts = [decode_completion(tokenizer, row, policy.eos_id) for row in batch.completion_ids]
                graded = texts if protocol == "agrpo" else [_d1_decoded(tokenizer, row) for row in batch.completion_ids]
                grades = grade_items(task, graded, items[lo : lo + len(chunk)], protocol, grade_timeout_s)
                for text, grade in zip(texts, grades, strict=True):
                    num, den, timeouts = num + grade.num, den + grade.den, timeouts + grade.timed_out
                    errors += grade.error is not None and not grade.timed_out
                    if keep_outcomes:
                        outcomes.append({"completion": text, "num": grade.num, "den": grade.den})
                bar.update(len(chunk))
                bar.set_postfix(accuracy=f"{num / den if den else 0.0:.3f}", refresh=False)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "accuracy": num / den if den else 0.0,
        "num": num,
        "den": den,
        "n": len(items),
        "protocol": protocol,
        "grading_timeouts": timeouts,
        "grading_errors": errors,
        "seconds": seconds,
        "tokens_per_s": len(items) * sampler_cfg.gen_length / seconds if seconds > 0 else 0.0,
        "nfe": passes / len(items),
    }
    if keep_outcomes:
        result["outcomes"] = outcomes
    return result


def _d1_decoded(tokenizer: Any, ids: Any) -> str:
    """The completion as d1's eval.py hands it to its parser: the whole window, special tokens kept."""
    return tokenizer.decode(ids.tolist(), skip_special_tokens=False)
