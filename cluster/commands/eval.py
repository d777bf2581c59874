"""`agrpo eval`: accuracy of a checkpoint at several sampling-step counts (the compute/quality frontier).

Defaults follow the d1 protocol (temperature 0, `low_confidence`, block 32, steps = gen_length / 2),
with the block capped at gen_length for the short completions of the tiny task models, and positions ranked
as LLaDA's generate.py ranks them (`evaluation.confidence_dtype` / `evaluation.tie_break`). Every result
holds the forward passes per item that were counted (NFE) beside its step count. Every setting
is checked before a model is loaded, so a steps value that does not fit the schedule fails at once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cluster.commands import add_loading_flags, loading_overrides

DEFAULT_GEN_LENGTH = 32
DEFAULT_GENERATED_ITEMS = 500


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="Evaluate a checkpoint's accuracy at several sampling-step counts; writes eval.json and a plot.",
        description="Sample one completion per held-out item (d1 protocol) at each --steps value, grade it with "
        "the task's grader, and write eval.json plus accuracy_vs_steps.png (with --baseline: both curves).",
    )
    parser.add_argument("--checkpoint", required=True, help="Checkpoint directory, or `tiny` (the built-in model).")
    parser.add_argument(
        "--config",
        default=None,
        help="Training config (e.g. the sft_config.yaml saved with a checkpoint): its data.* section, seed, "
        "sampler.gen_length and data.template become the defaults, so the eval items are its held-out split.",
    )
    parser.add_argument("--task", default=None, help="gsm8k, math, countdown, sudoku or arithmetic.")
    parser.add_argument(
        "--data", default=None, help="Local data file (JSONL/JSON/CSV/parquet); default: the generator's eval split."
    )
    parser.add_argument("--template", default=None, help="Prompt template: plain, d1 or agrpo (default plain).")
    parser.add_argument(
        "--gen-length", type=int, default=None, help=f"Completion length in tokens (default {DEFAULT_GEN_LENGTH})."
    )
    parser.add_argument(
        "--block-length",
        type=int,
        default=None,
        help="Block length (default: a block-causal model's block size, else min(32, gen length)).",
    )
    parser.add_argument(
        "--steps", default=None, help="Comma-separated step counts, e.g. 8,16 (default gen length / 2)."
    )
    parser.add_argument("--remasking", default="low_confidence", help="low_confidence, random, entropy or leftmost.")
    parser.add_argument(
        "--unmask",
        default=None,
        help="fixed (the --steps schedule) or threshold (parallel decoding, sampler.threshold); default "
        "evaluation.unmask, else sampler.unmask of --config, else fixed.",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="Confidence threshold of --unmask threshold (default 0.9)."
    )
    parser.add_argument(
        "--protocol",
        default=None,
        help="Grading protocol: agrpo (our graders) or d1 (d1's eval/parse_and_get_acc.py, decision for decision); "
        "default evaluation.protocol of --config, else agrpo.",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature (0 = greedy).")
    parser.add_argument(
        "--n", type=int, default=None, help=f"Items (default: all of --data, {DEFAULT_GENERATED_ITEMS} generated)."
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed of the eval split and of sampling (default 0).")
    parser.add_argument("--batch-size", type=int, default=64, help="Items per sampler batch.")
    parser.add_argument(
        "--kv-cache",
        default="auto",
        help="auto (the exact cache of block-causal models), off (full forwards), or prefix / dual (approximate "
        "caches of full-attention LLaDA models).",
    )
    parser.add_argument("--baseline", default=None, help="A second checkpoint (or `tiny`) to draw on the same plot.")
    parser.add_argument("--output", default=None, help="Output directory (default <checkpoint>/eval-<task>).")
    parser.add_argument("--device", default="auto", help="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    add_loading_flags(parser)
    parser.set_defaults(func=run)


def parse_steps(text: str | None, gen_length: int) -> list[int]:
    """Distinct step counts in increasing order; the default is the d1 protocol's gen_length / 2."""
    from common.errors import UserError

    if text is None:
        return [max(1, gen_length // 2)]
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--steps {text!r}: must be comma-separated integers, e.g. 8,16") from None
    if not values:
        raise UserError(f"--steps {text!r}: give at least one step count")
    return sorted(set(values))


def _check_checkpoint(flag: str, path: str) -> None:
    from common.errors import UserError

    if path != "tiny" and not Path(path).expanduser().is_dir():
        raise UserError(f"{flag} {path}: directory not found (give a checkpoint directory or `tiny`)")


def resolve(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """Fill unset options from --config (else the built-in defaults) and check them all; no model is loaded.

    Returns the model section (its path is replaced per checkpoint), the data section to draw items from
    and the samplers.
    """
    from common.config import Config, load_config
    from common.errors import UserError
    from common.model.block_families import declared_block_size
    from rewards.grading import grade_function
    from rewards.tasks.base import TEMPLATES
    from rollout.accuracy import eval_sampler

    config = load_config(args.config) if args.config else Config()
    if args.task is None and args.config is None:
        raise UserError("--task: required (or --config FILE naming data.task)")
    args.task = args.task or config.data.task
    args.protocol = args.protocol or config.evaluation.protocol
    args.grade_timeout_s = config.rewards.grade_timeout_s
    grade_function(args.task, args.protocol)  # an unknown task, or d1 for a task d1 never graded
    args.template = args.template or config.data.template
    if args.template not in TEMPLATES:
        raise UserError(f"--template {args.template!r}: must be one of {', '.join(TEMPLATES)}")
    args.seed = config.seed if args.seed is None else args.seed
    args.gen_length = args.gen_length or (config.sampler.gen_length if args.config else DEFAULT_GEN_LENGTH)
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size), ("--gen-length", args.gen_length)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    model = config.model.model_copy(update={**loading_overrides(args), "path": args.checkpoint})
    args.block_length = args.block_length or declared_block_size(model) or min(32, args.gen_length)
    args.options = {
        "unmask": args.unmask or config.evaluation.unmask or config.sampler.unmask,
        "threshold": config.sampler.threshold if args.threshold is None else args.threshold,
        "max_unmask_per_step": config.sampler.max_unmask_per_step,
        "cache_refresh_steps": config.sampler.cache_refresh_steps,
        "confidence_dtype": config.evaluation.confidence_dtype,
        "tie_break": config.evaluation.tie_break,
    }
    samplers = [
        eval_sampler(
            args.gen_length,
            args.block_length,
            s,
            args.remasking,
            args.temperature,
            args.batch_size,
            kv_cache=args.kv_cache,
            **args.options,
        )
        for s in parse_steps(args.steps, args.gen_length)
    ]
    _check_checkpoint("--checkpoint", args.checkpoint)
    if args.baseline:
        _check_checkpoint("--baseline", args.baseline)
    if args.data and not Path(args.data).exists():
        raise UserError(f"--data {args.data}: not found")
    data = config.data.model_copy(update={"task": args.task, "template": args.template})
    return model, data, samplers


def load_eval_items(args: argparse.Namespace, data: Any) -> tuple[list[dict[str, Any]], str]:
    """The items and a description of where they came from: --data, else the config's or the generator's
    held-out split (the one training never sees, for the same seed and generator options)."""
    from common.errors import UserError
    from rewards.data import load_items, load_task_items
    from rewards.tasks import load_task

    if args.data:
        items = load_items(args.data, args.task, data.format if args.config else "auto", data.fields)
        source = str(args.data)
    elif data.path:
        items = load_task_items(data, "eval", args.seed)
        source = f"{data.path} (eval split, seed {args.seed})"
    else:
        if load_task(args.task).generate is None:
            raise UserError(f"--task {args.task}: has no generator, so --data FILE is required")
        # With a training config, stay inside the held-out split that training excluded.
        n = args.n or (min(DEFAULT_GENERATED_ITEMS, data.num_eval) if args.config else DEFAULT_GENERATED_ITEMS)
        items = load_task_items(data.model_copy(update={"num_eval": n}), "eval", args.seed)
        source = f"generated {args.task} eval split (seed {args.seed}, options {data.generator or 'default'})"
    if not items:
        raise UserError(f"{source}: no valid {args.task} items")
    return (items[: args.n] if args.n else items), source


def _evaluate_checkpoint(
    model: Any,
    checkpoint: str,
    items: list[dict[str, Any]],
    samplers: list[Any],
    args: argparse.Namespace,
    device: str,
) -> list[dict[str, Any]]:
    from common.model.loading import load_policy
    from rollout.accuracy import evaluate

    policy = load_policy(model.model_copy(update={"path": checkpoint}), device=device, seed=args.seed)
    results = []
    for cfg in samplers:
        out = evaluate(
            policy,
            items,
            args.task,
            args.template,
            cfg,
            args.batch_size,
            args.seed,
            progress=True,
            protocol=args.protocol,
            grade_timeout_s=args.grade_timeout_s,
        )
        results.append({"steps": cfg.steps, **out})
    return results


def _print_results(label: str, results: list[dict[str, Any]]) -> None:
    print(f"{label}")
    print(f"  {'steps':>6} {'accuracy':>9} {'n':>6} {'seconds':>8} {'tokens/s':>9} {'NFE':>7}")
    for r in results:
        print(
            f"  {r['steps']:>6} {r['accuracy']:>9.4f} {r['n']:>6} {r['seconds']:>8.2f} {r['tokens_per_s']:>9.1f} "
            f"{r['nfe']:>7.1f}"
        )
    timeouts = sum(r["grading_timeouts"] for r in results)
    errors = sum(r["grading_errors"] for r in results)
    if timeouts or errors:
        print(
            f"  warning: {timeouts} completions ran past the grading time limit and {errors} failed to grade; "
            "they count as wrong"
        )


def run(args: argparse.Namespace) -> int:
    from cluster.commands.sft import pick_device
    from common.plots import FRONTIER_PLOT, plot_accuracy_vs_steps

    model, data, samplers = resolve(args)
    device = pick_device(args.device)
    items, source = load_eval_items(args, data)
    report: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "task": args.task,
        "data": source,
        "template": args.template,
        "protocol": args.protocol,
        "n": len(items),
        "settings": {
            "gen_length": args.gen_length,
            "block_length": args.block_length,
            "remasking": args.remasking,
            "temperature": args.temperature,
            "batch_size": args.batch_size,
            "kv_cache": args.kv_cache,
            **args.options,
            "seed": args.seed,
            "device": device,
            "grade_timeout_s": args.grade_timeout_s,
        },
        "results": _evaluate_checkpoint(model, args.checkpoint, items, samplers, args, device),
    }
    _print_results(args.checkpoint, report["results"])
    if args.baseline:
        report["baseline"] = {
            "checkpoint": args.baseline,
            "results": _evaluate_checkpoint(model, args.baseline, items, samplers, args, device),
        }
        _print_results(f"baseline {args.baseline}", report["baseline"]["results"])

    if args.output:
        out = Path(args.output)
    elif args.checkpoint == "tiny":
        out = Path("runs") / f"eval-tiny-{args.task}"
    else:
        out = Path(args.checkpoint) / f"eval-{args.task}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_accuracy_vs_steps(report, out / FRONTIER_PLOT)
    print(f"wrote {out / 'eval.json'} and {out / FRONTIER_PLOT}")
    return 0
