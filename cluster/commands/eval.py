"""`agrpo eval`: accuracy of a checkpoint at several sampling-step counts (the compute/quality frontier).

Settings come from one config like every command's: `--config`, else the config saved with the checkpoint (a
run's or a step's config, or the `sft_config.yaml` of an SFT output), else the schema's defaults; then
`key.sub=value` overrides and the flags, which are aliases of schema fields. The sampler is the held-out
evaluation's (`evaluation.*` on top of `sampler.*`), the items are the config's held-out split, so evaluating
a run directory repeats the run's own held-out evaluation at every `--steps`. Everything is checked before a
model is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cluster.commands.options import LOADING_ALIASES, Alias, add_config_options, block_settings, resolve_config

ALIASES = (
    Alias("--task", "data.task"),
    Alias("--template", "data.template"),
    Alias("--gen-length", "sampler.gen_length"),
    Alias("--block-length", "sampler.block_length"),
    Alias("--remasking", "evaluation.remasking"),
    Alias("--temperature", "evaluation.temperature"),
    Alias("--protocol", "evaluation.protocol"),
    Alias("--n", "evaluation.num_items"),
    Alias("--batch-size", "evaluation.batch_size"),
    Alias("--kv-cache", "sampler.kv_cache"),
    Alias("--seed", "seed"),
    *LOADING_ALIASES,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="Evaluate a checkpoint's accuracy at several sampling-step counts; writes eval.json and a plot.",
        description="Sample one completion per held-out item at each --steps value, grade it with the task's "
        "grader, and write eval.json plus accuracy_vs_steps.png (with --baseline: both curves). Settings: "
        "--config (default: the config saved with the checkpoint, else the built-in defaults), then KEY=VALUE "
        "overrides; each flag below sets one config field. Every key: `agrpo config show --describe`.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="What to evaluate: a run directory (its latest checkpoint), a checkpoint step-NNNNNNNN directory, a "
        "model directory, or `tiny` (the built-in model).",
    )
    parser.add_argument(
        "--steps",
        default=None,
        help="Comma-separated sampling-step counts, e.g. 8,16,32; each is evaluated as sampler.steps (default: "
        "evaluation.steps, else sampler.steps).",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="A local file (JSONL/JSON/CSV/parquet) whose rows are all evaluation items; default: the config's "
        "held-out split (data.path's or the generator's, as in training).",
    )
    parser.add_argument("--baseline", default=None, help="A second model (same forms) to draw on the same plot.")
    parser.add_argument("--output", default=None, help="Output directory (default <checkpoint>/eval-<task>).")
    parser.add_argument("--device", default="auto", help="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    add_config_options(
        parser,
        ALIASES,
        "YAML config whose data.*, sampler.*, evaluation.*, seed and model.* apply (default: the one saved with "
        "the checkpoint).",
        "evaluation.batch_size=32",
    )
    parser.set_defaults(func=run)


def parse_steps(text: str | None) -> list[int] | None:
    """Distinct step counts in increasing order, or None when not given."""
    from common.errors import UserError

    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--steps {text!r}: must be comma-separated integers, e.g. 8,16") from None
    if not values:
        raise UserError(f"--steps {text!r}: give at least one step count")
    if min(values) < 1:
        raise UserError(f"--steps {text!r}: every step count must be at least 1")
    return sorted(set(values))


def resolve(args: argparse.Namespace) -> tuple[Any, Any, Any, list[Any]]:
    """The config, the model and baseline sources, and the sampler of each step count; all checked, no model
    loaded. An evaluated step count replaces the sampler's (`sampler.steps`, with `evaluation.steps` cleared),
    so the schedule is checked against the completion and block lengths of the evaluation itself."""
    from cluster.commands.checkpoints import resolve_model
    from common.errors import UserError
    from rewards.grading import grade_function

    source = resolve_model("--checkpoint", args.checkpoint)
    counts = parse_steps(args.steps)
    blocks = block_settings(args, ALIASES, source.path, source.config)
    per_count = [blocks] if counts is None else [{**blocks, **_steps_settings(n)} for n in counts]
    configs = [resolve_config(args, ALIASES, source.config, source.config_source, settings=s) for s in per_count]
    config, args.config_source = configs[0]
    grade_function(config.data.task, config.evaluation.protocol)  # an unknown task, or d1 where d1 never graded
    samplers = [c.evaluation.sampler(c.sampler) for c, _ in configs]
    baseline = resolve_model("--baseline", args.baseline) if args.baseline else None
    if args.data and not Path(args.data).exists():
        raise UserError(f"--data {args.data}: not found")
    return config, source, baseline, samplers


def _steps_settings(count: int) -> dict[str, tuple[str, Any]]:
    return {"sampler.steps": ("--steps", count), "evaluation.steps": ("--steps", None)}


def load_eval_items(args: argparse.Namespace, config: Any) -> tuple[list[dict[str, Any]], str]:
    """The first evaluation.num_items items and where they came from: --data, else the config's held-out
    split, which training never sees (the same file split or generator options, and the same seed)."""
    from common.errors import UserError
    from rewards.data import load_items, load_task_items
    from rewards.tasks import load_task

    data, task = config.data, config.data.task
    if args.data:
        items = load_items(args.data, task, data.format, data.fields)
        source = str(args.data)
    else:
        if data.path is None and load_task(task).generate is None:
            raise UserError(f"data.task = {task!r}: has no generator, so give --data FILE or data.path")
        items = load_task_items(data, "eval", config.seed)
        if data.path:
            source = f"{data.path} (eval split, seed {config.seed})"
        else:
            source = f"generated {task} eval split (seed {config.seed}, options {data.generator or 'default'})"
    if not items:
        raise UserError(f"{source}: no valid {task} items")
    return items[: config.evaluation.num_items], source


def _evaluate_model(path: str, config: Any, items: list[dict[str, Any]], samplers: list[Any], device: str) -> list:
    from common.model.loading import load_policy
    from rollout.accuracy import evaluate

    policy = load_policy(config.model.model_copy(update={"path": path}), device=device, seed=config.seed)
    results = []
    for cfg in samplers:
        out = evaluate(
            policy,
            items,
            config.data.task,
            config.data.template,
            cfg,
            config.evaluation.batch_size,
            config.seed,
            progress=True,
            protocol=config.evaluation.protocol,
            grade_timeout_s=config.rewards.grade_timeout_s,
        )
        results.append({"steps": cfg.steps, **out})
    return results


def _print_results(label: str, results: list[dict[str, Any]]) -> None:
    print(f"{label}")
    print(f"  {'steps':>6} {'accuracy':>9} {'n':>6} {'seconds':>8} {'tokens/s':>9}")
    for r in results:
        print(f"  {r['steps']:>6} {r['accuracy']:>9.4f} {r['n']:>6} {r['seconds']:>8.2f} {r['tokens_per_s']:>9.1f}")
    timeouts = sum(r["grading_timeouts"] for r in results)
    errors = sum(r["grading_errors"] for r in results)
    if timeouts or errors:
        print(
            f"  warning: {timeouts} completions ran past the grading time limit and {errors} failed to grade; "
            "they count as wrong"
        )


def _output_dir(args: argparse.Namespace, task: str) -> Path:
    if args.output:
        return Path(args.output)
    if args.checkpoint == "tiny":
        return Path("runs") / f"eval-tiny-{task}"
    return Path(args.checkpoint) / f"eval-{task}"


def run(args: argparse.Namespace) -> int:
    from cluster.commands.sft import pick_device
    from common.plots import FRONTIER_PLOT, plot_accuracy_vs_steps
    from rewards.tasks import load_task

    config, source, baseline, samplers = resolve(args)
    device = pick_device(args.device)
    items, item_source = load_eval_items(args, config)
    sampler = samplers[0]
    print(f"evaluating {source.label} ({source.path}); config: {args.config_source}; items: {item_source}")
    report: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "model": source.path,
        "label": source.label,
        "config": args.config_source,
        "task": config.data.task,
        "accuracy_name": load_task(config.data.task).accuracy_name,
        "data": item_source,
        "template": config.data.template,
        "protocol": config.evaluation.protocol,
        "n": len(items),
        "settings": {
            "gen_length": sampler.gen_length,
            "block_length": sampler.block_length,
            "remasking": sampler.remasking,
            "temperature": sampler.temperature,
            "top_k": sampler.top_k,
            "top_p": sampler.top_p,
            "kv_cache": sampler.kv_cache,
            "batch_size": config.evaluation.batch_size,
            "seed": config.seed,
            "device": device,
            "grade_timeout_s": config.rewards.grade_timeout_s,
        },
        "results": _evaluate_model(source.path, config, items, samplers, device),
    }
    _print_results(source.label, report["results"])
    if baseline is not None:
        report["baseline"] = {
            "checkpoint": args.baseline,
            "model": baseline.path,
            "label": baseline.label,
            "results": _evaluate_model(baseline.path, config, items, samplers, device),
        }
        _print_results(f"baseline {baseline.label}", report["baseline"]["results"])

    out = _output_dir(args, config.data.task)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_accuracy_vs_steps(report, out / FRONTIER_PLOT)
    print(f"wrote {out / 'eval.json'} and {out / FRONTIER_PLOT}")
    return 0
