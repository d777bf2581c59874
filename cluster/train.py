"""The driver: the single controller of a training run and the `ray job submit` entrypoint.

    python -m cluster.train [--config deploy/recipes/tiny.yaml] [key.sub=value ...] [--resume]

It reads top to bottom like the data flow of ARCHITECTURE.md: prompts are dispatched to rollout workers
(batch b is sampled with weight version max(0, b - max_staleness), so rollout of the next S batches overlaps
the learner update), groups are rewarded as they arrive, the staleness gate admits them, the learner group
updates, rank 0 broadcasts the new weights, and the driver records metrics, evaluates and checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from cluster.collapse import CollapseGuard
from cluster.held_out import HeldOutEvaluator
from cluster.pipeline import RolloutPipeline
from cluster.placement import create_placements, remove_placements
from cluster.progress import RunProgress
from cluster.prompts import PromptStream
from cluster.ray_setup import connect
from cluster.run_state import DriverState, find_checkpoint, restore_run, save_run
from cluster.staleness import StalenessGate
from cluster.sync import WeightSync
from common.checkpoint import latest_checkpoint
from common.config import DEFAULT_RECIPE, Config, dump_config, load_config
from common.errors import UserError
from common.metrics import MetricsLog, RoleMetrics
from common.record import RolloutGroup
from rewards.data import load_task_items
from rewards.registry import CombinedReward, build_reward_fn
from rewards.service import RewardService
from rewards.tasks import load_task
from rollout.worker import RolloutWorker

if TYPE_CHECKING:
    from learner.group import LearnerGroup


class TrainingCollapsed(UserError):
    """The collapse guard stopped the run."""


def ensure_base_model(config: Config) -> None:
    """With `model.build_if_missing: sft`, build the base policy at model.path once; later runs reuse it."""
    path = Path(config.model.path)
    if config.model.build_if_missing != "sft" or config.model.path == "tiny" or (path / "config.json").is_file():
        return
    from learner.sft import run_sft

    print(f"agrpo train: no base model at {path}; building it with agrpo sft (cached for later runs)", file=sys.stderr)
    sft = config.model_copy(
        update={
            "model": config.model.model_copy(update={"path": "tiny"}),
            "sft": config.sft.model_copy(update={"output": str(path)}),
        }
    )
    run_sft(sft, progress=True)


def create_rollout_workers(config: Config, placement: Any) -> list[Any]:
    """Named `rollout-<i>`; Ray restarts a dead worker, the driver then re-syncs and re-dispatches."""
    remote = ray.remote(max_restarts=-1, max_task_retries=0)(RolloutWorker)
    payload = config.model_dump(mode="json")
    return [
        remote.options(
            name=f"rollout-{i}", scheduling_strategy=placement.strategy(i), **placement.actor_resources(i)
        ).remote(payload, i)
        for i in range(config.rollout.num_workers)
    ]


def success_rate(task: str, groups: list[RolloutGroup]) -> float:
    """Accuracy of the training samples themselves under the task's grader (the collapse guard's signal)."""
    grade = load_task(task).grade
    parts = [grade(text, g.reference) for g in groups for text in g.texts]
    den = sum(d for _, d in parts)
    return sum(n for n, _ in parts) / den if den else float("nan")


def step_record(step: int, task: str, groups: list[RolloutGroup], ranks: list[dict[str, float]]) -> dict[str, Any]:
    """One metrics.jsonl line for the update at learner version `step` (the line says step + 1, done)."""
    rewards = np.concatenate([g.rewards for g in groups]) if groups else np.zeros(0)
    return {
        "step": step + 1,
        "prompts": [g.prompt_index for g in groups],
        "reward_mean": float(rewards.mean()) if rewards.size else float("nan"),
        "reward_std": float(rewards.std()) if rewards.size else float("nan"),
        "success_rate": success_rate(task, groups),
        "loss": float(np.mean([r["loss"] for r in ranks])),
        "grad_norm": ranks[0]["grad_norm"],
        "lr": ranks[0]["lr"],
        "clip_fraction": float(np.mean([r["clip_fraction"] for r in ranks])),
        "kl": float(np.mean([r["kl"] for r in ranks])),
        "max_logprob_diff": float(max(r["max_logprob_diff"] for r in ranks)),
        "timesteps_per_s": float(sum(r["timesteps_per_s"] for r in ranks)),
        "staleness_mean": float(np.mean([step - g.weight_version for g in groups])) if groups else 0.0,
        "groups": len(groups),
    }


def train(config: Config) -> dict[str, Any]:
    # Reward plugins and training data are checked first: a typo in either fails in a second, not after
    # an SFT build and a cluster start.
    reward_fn = build_reward_fn(config.rewards, config.data.task)
    items = load_task_items(config.data, "train", config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    print(f"agrpo train: run directory {run_dir.resolve()}", file=sys.stderr)
    start = time.perf_counter()
    ensure_base_model(config)
    started_ray = not ray.is_initialized() and connect(config.cluster) == "local cluster"
    placements = create_placements(config)
    try:
        result = _run(config, run_dir, placements, items, reward_fn)
    finally:
        remove_placements(placements)
        if started_ray:
            ray.shutdown()
    result["wall_seconds"] = time.perf_counter() - start
    keys = ("steps", "base_accuracy", "final_accuracy", "evaluations", "wall_seconds", "run_dir")
    (run_dir / "summary.json").write_text(json.dumps({k: result.get(k) for k in keys}, indent=2) + "\n")
    if config.metrics.plots:
        from common.plots import plot_run

        result["plots"] = [str(p) for p in plot_run(run_dir)[0]]
    return result


def _run(
    config: Config, run_dir: Path, placements: dict[str, Any], items: list[dict[str, Any]], reward_fn: CombinedReward
) -> dict[str, Any]:
    # Imported here, not at the top: importing DeepSpeed prints an accelerator warning, which would come
    # before the one-line message of a config or data error.
    from learner.group import LearnerGroup

    checkpoints = run_dir / "checkpoints"
    scorer = RewardService.from_config(config, reward_fn)
    learners = LearnerGroup(
        config.model_dump(mode="json"), placements["learner"], lambda: str(latest_checkpoint(checkpoints) or "")
    )
    workers = create_rollout_workers(config, placements["rollout"])
    try:
        return _loop(config, run_dir, checkpoints, items, scorer, learners, workers)
    finally:
        scorer.close()
        for actor in [*learners.ranks, *workers]:
            ray.kill(actor, no_restart=True)


def _loop(
    config: Config,
    run_dir: Path,
    checkpoints: Path,
    items: list[dict[str, Any]],
    scorer: RewardService,
    learners: LearnerGroup,
    workers: list[Any],
) -> dict[str, Any]:
    sync = WeightSync(learners, workers)
    sync.check_layout()

    resume_from = find_checkpoint(config, checkpoints)
    state = restore_run(resume_from, config, learners) if resume_from else DriverState()
    log = MetricsLog(run_dir / "metrics.jsonl")
    log.truncate_after(state.step)
    gate = StalenessGate(config.rollout.max_staleness)
    guard = CollapseGuard(config.metrics.collapse_window, config.metrics.collapse_ratio)
    if resume_from:
        gate.load_state_dict(state.gate)
        guard.load_state_dict(state.collapse)
    stream = PromptStream(items, config.seed, cursor=state.cursor)
    sync.rebuild()
    sync.broadcast()
    evaluator = HeldOutEvaluator(config, workers[0], state.evals)
    total, lag, per_step = config.learner.steps, config.rollout.max_staleness, config.learner.groups_per_step
    task = config.data.task
    progress = RunProgress(total, state.step)
    if state.step == 0:
        progress.phase_note("evaluating the base policy")
        log.write({"step": 0, "accuracy": evaluator.run(0)})

    chunk = max(1, config.sampler.batch_size // config.algorithm.group_size)
    pipeline = RolloutPipeline(workers, scorer, chunk, on_restart=sync.recover)
    for batch, groups in state.ready.items():
        pipeline.add_ready(batch, groups)
    for batch in range(state.step, min(state.step + lag, total - 1) + 1):
        if batch not in state.ready:
            pipeline.dispatch(batch, stream.take(per_step))

    metrics = RoleMetrics()
    loop_start = time.perf_counter()
    record: dict[str, Any] = {}
    for step in range(state.step, total):
        t0 = time.perf_counter()
        groups = pipeline.take(step)
        admitted = [g for g in groups if gate.admit(step, g.weight_version)]
        for g in groups:
            metrics.observe("agrpo_staleness", step - g.weight_version)
        metrics.inc("agrpo_staleness_dropped_groups_total", len(groups) - len(admitted))

        update = learners.train_step(admitted, step)
        while len(ray.wait(update, num_returns=len(update), timeout=0)[0]) < len(update):
            pipeline.poll()
        ranks = learners.wait(update)

        pipeline.wait_sampled(step + lag)
        synced = sync.broadcast()

        done = step + 1
        record = step_record(step, task, admitted, ranks)
        record.update(
            sync_seconds=synced["seconds"],
            sync_bytes_per_s=synced["bytes_per_s"],
            step_seconds=time.perf_counter() - t0,
            dropped_total=gate.dropped,
            accepted_total=gate.accepted,
        )
        stop = config.checkpoint.stop_at == done
        if evaluator.due(done, last=done == total or stop):
            record["accuracy"] = evaluator.run(done)
        if done % config.metrics.log_every == 0 or done == total or "accuracy" in record:
            log.write(record)
        metrics.set("agrpo_learner_step", done)
        metrics.set("agrpo_reward_mean_by_task", record["reward_mean"], {"task": task})
        progress.update(
            done, reward=record["reward_mean"], success=record["success_rate"], accuracy=record.get("accuracy")
        )
        collapsed = guard.update(record["success_rate"])

        if done % config.checkpoint.every_steps == 0 or done == total or stop or collapsed:
            ahead = range(done, min(step + lag, total - 1) + 1)
            for batch in ahead:
                pipeline.wait_ready(batch)
            state = DriverState(
                step=done,
                cursor=stream.cursor,
                gate=gate.state_dict(),
                counters=pipeline.counters.as_dict(),
                ready={b: pipeline.peek(b) for b in ahead},
                evals=evaluator.history,
                collapse=guard.state_dict(),
            )
            save_run(checkpoints, config, learners, state)
        if collapsed:
            progress.close()
            raise TrainingCollapsed(
                f"{collapsed} at step {done} (learner.lr = {config.learner.lr:g}); lower learner.lr, or "
                f"inspect {run_dir / 'metrics.jsonl'}; the checkpoint of step {done} is in {checkpoints}"
            )
        if stop:
            break
        if done + lag < total:
            pipeline.dispatch(done + lag, stream.take(per_step))
    progress.close()

    return {
        "run_dir": str(run_dir.resolve()),
        "steps": record.get("step", state.step),
        "final": record,
        "base_accuracy": evaluator.base(),
        "final_accuracy": evaluator.final(),
        "evaluations": evaluator.history,
        "gate": gate.state_dict(),
        "pipeline": pipeline.counters.as_dict(),
        "checksums": {
            "learner": ray.get(learners.ranks[0].checksum.remote()),
            "rollout": ray.get([w.checksum.remote() for w in workers]),
        },
        "weight_syncs": sync.history,
        "reward_stats": scorer.stats(),
        "rollout_busy_seconds": ray.get([w.busy.remote() for w in workers]),
        "loop_seconds": time.perf_counter() - loop_start,
    }


def summary(result: dict[str, Any]) -> str:
    """The lines printed at the end of a run."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    base, final = result["base_accuracy"], result["final_accuracy"]
    gain = "" if base is None or final is None else f" ({100 * (final - base):+.1f} points)"
    return "\n".join(
        [
            f"agrpo train: done {result['steps']} steps in {result['wall_seconds']:.0f} s",
            f"  held-out accuracy: base {pct(base)} -> final {pct(final)}{gain} (final = mean of last 3 evaluations)",
            f"  run directory: {result['run_dir']}",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agrpo train", description="Run AGRPO training on Ray.")
    parser.add_argument("--config", default=None, help=f"YAML recipe (default: {DEFAULT_RECIPE.name}).")
    parser.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint in run_dir.")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = [*args.overrides, *(["checkpoint.resume=auto"] if args.resume else [])]
        result = train(load_config(args.config or DEFAULT_RECIPE, overrides))
    except UserError as err:
        print(f"agrpo train: error: {err}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
