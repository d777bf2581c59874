"""The driver: the single controller of a training run and the `ray job submit` entrypoint.

    python -m cluster.train --config deploy/recipes/tiny.yaml [key.sub=value ...] [--resume]

It reads top to bottom like the data flow of ARCHITECTURE.md: prompts are dispatched to rollout workers
(batch b is sampled with weight version max(0, b - max_staleness), so rollout of the next S batches overlaps
the learner update), groups are rewarded as they arrive, the staleness gate admits them, the learner group
updates, rank 0 broadcasts the new weights, and the driver records metrics and checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from cluster.pipeline import RolloutPipeline
from cluster.placement import create_placements, remove_placements
from cluster.progress import RunProgress
from cluster.prompts import PromptStream
from cluster.ray_setup import connect
from cluster.run_state import DriverState, find_checkpoint, restore_run, save_run
from cluster.staleness import StalenessGate
from cluster.sync import WeightSync
from common.checkpoint import latest_checkpoint
from common.config import Config, dump_config, load_config
from common.errors import UserError
from common.metrics import MetricsLog, RoleMetrics
from common.record import RolloutGroup
from learner.group import LearnerGroup
from rewards.data import load_task_items
from rewards.service import RewardService
from rollout.worker import RolloutWorker


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


def step_record(step: int, groups: list[RolloutGroup], ranks: list[dict[str, float]]) -> dict[str, Any]:
    """One metrics.jsonl line for the update at learner version `step` (the line says step + 1, done)."""
    rewards = np.concatenate([g.rewards for g in groups]) if groups else np.zeros(0)
    return {
        "step": step + 1,
        "prompts": [g.prompt_index for g in groups],
        "reward_mean": float(rewards.mean()) if rewards.size else float("nan"),
        "reward_std": float(rewards.std()) if rewards.size else float("nan"),
        "success_rate": float((rewards > 0).mean()) if rewards.size else float("nan"),
        "loss": float(np.mean([r["loss"] for r in ranks])),
        "grad_norm": ranks[0]["grad_norm"],
        "lr": ranks[0]["lr"],
        "clip_fraction": float(np.mean([r["clip_fraction"] for r in ranks])),
        "max_logprob_diff": float(max(r["max_logprob_diff"] for r in ranks)),
        "timesteps_per_s": float(sum(r["timesteps_per_s"] for r in ranks)),
        "staleness_mean": float(np.mean([step - g.weight_version for g in groups])) if groups else 0.0,
        "groups": len(groups),
    }


def train(config: Config) -> dict[str, Any]:
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    checkpoints = run_dir / "checkpoints"
    print(f"agrpo train: run directory {run_dir.resolve()}", file=sys.stderr)
    started_ray = not ray.is_initialized() and connect(config.cluster) == "local cluster"
    placements = create_placements(config)
    try:
        return _run(config, run_dir, checkpoints, placements)
    finally:
        remove_placements(placements)
        if started_ray:
            ray.shutdown()


def _run(config: Config, run_dir: Path, checkpoints: Path, placements: dict[str, Any]) -> dict[str, Any]:
    items = load_task_items(config.data, "train", config.seed)
    scorer = RewardService.from_config(config)
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
    start_time = time.perf_counter()
    sync = WeightSync(learners, workers)
    sync.check_layout()

    resume_from = find_checkpoint(config, checkpoints)
    state = restore_run(resume_from, config, learners) if resume_from else DriverState()
    log = MetricsLog(run_dir / "metrics.jsonl")
    log.truncate_after(state.step)
    gate = StalenessGate(config.rollout.max_staleness)
    if state.gate:
        gate.load_state_dict(state.gate)
    stream = PromptStream(items, config.seed, cursor=state.cursor)
    sync.rebuild()
    sync.broadcast()

    total, lag, per_step = config.learner.steps, config.rollout.max_staleness, config.learner.groups_per_step
    chunk = max(1, config.sampler.batch_size // config.algorithm.group_size)
    pipeline = RolloutPipeline(workers, scorer, chunk, on_restart=sync.recover)
    for batch, groups in state.ready.items():
        pipeline.add_ready(batch, groups)
    for batch in range(state.step, min(state.step + lag, total - 1) + 1):
        if batch not in state.ready:
            pipeline.dispatch(batch, stream.take(per_step))

    metrics = RoleMetrics()
    progress = RunProgress(total, state.step)
    loop_start = time.perf_counter()
    record: dict[str, float] = {}
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

        record = step_record(step, admitted, ranks)
        record.update(
            sync_seconds=synced["seconds"],
            sync_bytes_per_s=synced["bytes_per_s"],
            step_seconds=time.perf_counter() - t0,
            dropped_total=gate.dropped,
            accepted_total=gate.accepted,
        )
        if (step + 1) % config.metrics.log_every == 0 or step + 1 == total:
            log.write(record)
        metrics.set("agrpo_learner_step", step + 1)
        metrics.set("agrpo_reward_mean_by_task", record["reward_mean"], {"task": config.data.task})
        progress.update(step + 1, reward=record["reward_mean"], loss=record["loss"])

        stop = config.checkpoint.stop_at == step + 1
        if (step + 1) % config.checkpoint.every_steps == 0 or step + 1 == total or stop:
            ahead = range(step + 1, min(step + lag, total - 1) + 1)
            for batch in ahead:
                pipeline.wait_ready(batch)
            state = DriverState(
                step=step + 1,
                cursor=stream.cursor,
                gate=gate.state_dict(),
                counters=pipeline.counters.as_dict(),
                ready={b: pipeline.peek(b) for b in ahead},
            )
            save_run(checkpoints, config, learners, state)
        if stop:
            break
        if step + 1 + lag < total:
            pipeline.dispatch(step + 1 + lag, stream.take(per_step))
    progress.close()

    result = {
        "run_dir": str(run_dir.resolve()),
        "steps": record.get("step", state.step),
        "final": record,
        "gate": gate.state_dict(),
        "pipeline": pipeline.counters.as_dict(),
        "checksums": {
            "learner": ray.get(learners.ranks[0].checksum.remote()),
            "rollout": ray.get([w.checksum.remote() for w in workers]),
        },
        "weight_syncs": sync.history,
        "rollout_busy_seconds": ray.get([w.busy.remote() for w in workers]),
        "loop_seconds": time.perf_counter() - loop_start,
        "reward_stats": scorer.stats(),
        "wall_seconds": time.perf_counter() - start_time,
    }
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agrpo train", description="Run AGRPO training on Ray.")
    parser.add_argument("--config", default=None, help="YAML recipe (default: the built-in defaults).")
    parser.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint in run_dir.")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = [*args.overrides, *(["checkpoint.resume=auto"] if args.resume else [])]
        result = train(load_config(args.config, overrides))
    except UserError as err:
        print(f"agrpo train: error: {err}", file=sys.stderr)
        return 2
    final = result["final"]
    print(
        f"agrpo train: done {result['steps']} steps in {result['wall_seconds']:.0f} s, "
        f"reward {final.get('reward_mean', float('nan')):.3f}; outputs in {result['run_dir']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
