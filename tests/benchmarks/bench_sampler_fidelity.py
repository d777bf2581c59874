"""Sampler fidelity on the embedded default's SFT base model: ranking precision, bf16 batch invariance, mismatch.

Three measurements, each in float32 and in bfloat16 (the dtype LLaDA-8B runs in on GPUs), all on CPU:

1. Greedy `low_confidence` sampling of held-out Sudoku prompts (the d1 protocol at the task's length: C = 20,
   one block, 10 steps), batched (`--batch`) against one prompt at a time, under each ranking option
   (`sampler.confidence_dtype`, `sampler.tie_break`): rows whose completion or commit order differs between the
   two, and rows that differ from LLaDA's generate.py (one prompt at a time, ranked in the model's dtype with
   torch.topk's ties: `model` + `reference` alone, which tests/unit/test_sampler.py checks against the oracle).
2. Held-out accuracy of `evaluate()` under that protocol at several evaluation batch sizes.
3. Rollout/learner log-prob mismatch: the training sampler's recorded log-probs against the learner's
   recomputation (same weights, same dtype, its own batch layout), mean and max over every sampled token; for
   exact rollouts and for the approximate ones of `sampler.kv_cache: dual` + `sampler.unmask: threshold`.

    .venv/bin/python tests/benchmarks/bench_sampler_fidelity.py [--model runs/base-sudoku] [--items 500]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.config import ModelConfig, SamplerConfig, load_config
from common.model.loading import Policy, load_policy, mask_predictor_logits
from common.record import TrajectoryBatch
from common.text import encode_text
from rewards.data import load_task_items
from rewards.templates import render_prompt
from rollout.accuracy import evaluate
from rollout.sampler import sample
from tests.logprob_mismatch import mismatch

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "recipes" / "tiny.yaml"
RANKINGS = [("float64", "position"), ("float32", "position"), ("model", "position"), ("model", "reference")]
"""(confidence_dtype, tie_break): the training default, the two cheap fixes, and LLaDA's generate.py."""


def _sample(policy: Policy, prompts: list[list[int]], cfg: SamplerConfig, seed: int = 0) -> TrajectoryBatch:
    chunks = [prompts[i : i + cfg.batch_size] for i in range(0, len(prompts), cfg.batch_size)]
    generator = torch.Generator().manual_seed(seed)
    records = [
        sample(
            policy.model,
            chunk,
            cfg,
            policy.mask_id,
            policy.eos_id,
            policy.pad_id,
            generator,
            banned_ids=policy.banned_ids,
            logits_fn=lambda ids, mask: mask_predictor_logits(policy, ids, mask),
        )
        for chunk in chunks
    ]
    return TrajectoryBatch.concat(records)


def _rows(record: TrajectoryBatch) -> list[tuple[Any, ...]]:
    return [
        (tuple(c), tuple(s)) for c, s in zip(record.completion_ids.tolist(), record.unmask_step.tolist(), strict=True)
    ]


def _differ(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> str:
    """`completions / commit orders` that differ between two runs of the same prompts."""
    tokens = sum(x[0] != y[0] for x, y in zip(a, b, strict=True))
    order = sum(x[1] != y[1] for x, y in zip(a, b, strict=True))
    return f"{tokens} / {order}"


def batch_invariance(
    policy: Policy, prompt_sets: dict[str, list[list[int]]], greedy: SamplerConfig, batch: int
) -> None:
    """Section 1: rows that differ between batched and one-at-a-time sampling, and from the reference."""
    for label, rows in prompt_sets.items():
        print(f"  {label}: batched (batch {batch}) against one at a time, {len(rows)} prompts")
        alone_cfg = greedy.model_copy(update={"confidence_dtype": "model", "tie_break": "reference", "batch_size": 1})
        reference = _rows(_sample(policy, rows, alone_cfg))
        print(
            f"  {'confidence_dtype':>16} {'tie_break':>9} {'batched != alone':>16} {'batched != ref':>16} "
            f"{'alone != ref':>16}   (rows: completions / commit orders)"
        )
        for conf, tie in RANKINGS:
            cfg = greedy.model_copy(update={"confidence_dtype": conf, "tie_break": tie})
            batched = _rows(_sample(policy, rows, cfg.model_copy(update={"batch_size": batch})))
            alone = _rows(_sample(policy, rows, cfg.model_copy(update={"batch_size": 1})))
            print(
                f"  {conf:>16} {tie:>9} {_differ(batched, alone):>16} {_differ(batched, reference):>16} "
                f"{_differ(alone, reference):>16}",
                flush=True,
            )


def accuracy_by_batch(policy: Policy, items: list[dict[str, Any]], greedy: SamplerConfig, sizes: list[int]) -> None:
    """Section 2: held-out accuracy of evaluate() at each evaluation batch size, per ranking option."""
    config = load_config(RECIPE)
    task, template = config.data.task, config.data.template
    print(f"  {'confidence_dtype':>16} {'tie_break':>9} " + " ".join(f"{'batch ' + str(b):>10}" for b in sizes))
    for conf, tie in RANKINGS:
        cfg = greedy.model_copy(update={"confidence_dtype": conf, "tie_break": tie})
        accuracy = [100 * evaluate(policy, items, task, template, cfg, b, config.seed)["accuracy"] for b in sizes]
        print(f"  {conf:>16} {tie:>9} " + " ".join(f"{a:>10.2f}" for a in accuracy), flush=True)


def rollout_mismatch(policy: Policy, prompt_sets: dict[str, list[list[int]]], sampler: SamplerConfig, n: int) -> None:
    """Section 3: recorded against recomputed log-probs of training rollouts, exact and dual + threshold."""
    print(f"  {'prompts':>28} {'sampler':>20} {'mean':>9} {'max':>9} {'NFE':>6}")
    for label, prompts in prompt_sets.items():
        rollouts = [prompts[i % len(prompts)] for i in range(n)]
        for name, update in (
            ("exact", {}),
            ("dual + threshold 0.9", {"kv_cache": "dual", "unmask": "threshold", "threshold": 0.9}),
        ):
            record = _sample(policy, rollouts, sampler.model_copy(update=update), seed=1)
            mean, worst = mismatch(policy.model, record, policy.pad_id, policy.banned_ids)
            assert record.forward_passes is not None
            print(
                f"  {label:>28} {name:>20} {mean:>9.2e} {worst:>9.2e} {record.forward_passes.mean():>6.2f}", flush=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/base-sudoku", help="The embedded default's SFT base, or `tiny`.")
    parser.add_argument("--sections", default="1,2,3", help="Which measurements to run.")
    parser.add_argument("--prompts", type=int, default=200, help="Held-out prompts for the batch-invariance count.")
    parser.add_argument("--batch", type=int, default=64, help="Batch size of the batched sampling.")
    parser.add_argument("--items", type=int, default=500, help="Held-out items for the accuracy figures.")
    parser.add_argument("--eval-batches", default="1,16,256", help="Evaluation batch sizes.")
    parser.add_argument("--rollouts", type=int, default=256, help="Training rollouts for the mismatch figures.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = {int(x) for x in args.sections.split(",")}
    if args.model != "tiny" and not Path(args.model).is_dir():
        print(f"{args.model} not found (`make train` builds it): measuring the untrained built-in tiny model instead")
        args.model = "tiny"
    config = load_config(RECIPE)
    items = load_task_items(config.data, "eval", config.seed)[: max(args.prompts, args.items)]
    greedy = config.evaluation.sampler(config.sampler).model_copy(
        update={"temperature": 0.0, "remasking": "low_confidence", "steps": config.sampler.gen_length // 2}
    )
    print(
        f"model {args.model} (the SFT base of {RECIPE.name}, seed {config.seed}, or the untrained built-in `tiny`); "
        f"task {config.data.task}; greedy low_confidence, C {greedy.gen_length}, block {greedy.block_length}, "
        f"{greedy.steps} steps; threads={args.threads}"
    )
    for dtype in ("float32", "bfloat16"):
        policy = load_policy(ModelConfig(path=args.model), dtype=dtype)
        policy.model.eval()
        tok = policy.tokenizer
        prompts = [
            encode_text(tok, render_prompt(config.data.task, item, config.data.template, tok), "prompt")
            for item in items[: args.prompts]
        ]
        # The task's prompts all have one length; cutting 0-7 leading tokens gives a batch that needs padding.
        cuts = np.random.default_rng(0).integers(0, 8, size=len(prompts))
        prompt_sets = {
            "the task's prompts": prompts,
            "prompts cut to mixed lengths": [p[c:] for p, c in zip(prompts, cuts, strict=True)],
        }
        if 1 in sections:
            print(f"\n[{dtype}] 1. batch invariance of greedy sampling")
            batch_invariance(policy, prompt_sets, greedy, args.batch)
        if 2 in sections:
            print(f"\n[{dtype}] 2. held-out accuracy (%) of {args.items} items by evaluation batch size")
            accuracy_by_batch(policy, items[: args.items], greedy, [int(b) for b in args.eval_batches.split(",")])
        if 3 in sections:
            print(f"\n[{dtype}] 3. rollout/learner log-prob mismatch, {args.rollouts} training rollouts (T=1, random)")
            rollout_mismatch(policy, prompt_sets, config.sampler, args.rollouts)


if __name__ == "__main__":
    main()
