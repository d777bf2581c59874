"""The driver: the single controller of a training run, and the `ray job submit` entrypoint.

    python -m cluster.train [--config deploy/recipes/tiny.yaml] [--resume] [key.sub=value ...]

`run_steps` is the whole streaming loop, one line per stage in the order of ARCHITECTURE.md's data flow; what
each stage does lives behind the named call (cluster/training_run.py sets the actors up and tears them down).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.base_model import ensure_base_model
from cluster.collapse import divergence
from cluster.held_out import held_out_items
from cluster.preflight import check_model
from cluster.run_state import DriverState, find_checkpoint, read_run
from cluster.step_metrics import StageTimer, step_line
from cluster.training_run import TrainingRun
from common.checkpoint import latest_checkpoint
from common.config import Config, dump_config
from common.errors import UserError
from common.trackers import check_trackers
from rewards.data import load_task_items
from rewards.registry import build_reward_fn


class TrainingCollapsed(UserError):
    """The collapse guard stopped the run."""


class TrainingDiverged(UserError):
    """The loss or gradient norm of a step is not finite: the weights are lost, the run stops before saving them."""


@dataclass
class RunSummary:
    """What summary.json holds and `agrpo train` prints at the end."""

    run_dir: str
    steps: int
    base_accuracy: float | None
    final_accuracy: float | None
    evaluations: list[list[float]]
    wall_seconds: float = 0.0
    plots: list[str] = field(default_factory=list)


RUN_OUTPUTS = (
    *("metrics.jsonl", "summary.json", "checkpoints", "plots"),
    *("completions.jsonl", "trackers.json", "tensorboard", "wandb", "mlruns"),  # common/trackers.py
)


def claim_run_dir(run_dir: Path, config: Config) -> None:
    """Write config.yaml into run_dir, which must not hold another run's outputs unless resuming or overwriting."""
    found = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if found and config.checkpoint.resume == "never" and not config.checkpoint.overwrite:
        raise UserError(
            f"run_dir {run_dir} already holds a run ({', '.join(found)}): continue it with --resume, start over "
            "with --overwrite (deletes them), or choose another run_dir"
        )
    try:
        for name in found if config.checkpoint.resume == "never" else []:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(config))
    except OSError as err:
        raise UserError(f"run_dir {run_dir}: cannot write there ({err.strerror or err})") from None


def open_run(config: Config) -> TrainingRun:
    """Check everything a user can get wrong before anything slow starts, then the run to enter.

    The model directory (and that the completion fits it), reward plugins (their build bounded by
    `rewards.startup_timeout_s`), training and held-out data, and a checkpoint to resume from are checked in
    seconds, before an SFT build or a cluster start, and nothing is written until they pass.
    """
    check_model(config)
    reward = build_reward_fn(config.rewards, config.data.task)
    check_trackers(config.metrics)
    items = load_task_items(config.data, "train", config.seed)
    held_out = held_out_items(config)
    run_dir = Path(config.run_dir)
    resume_from = find_checkpoint(config, run_dir / "checkpoints")
    state = read_run(resume_from, config) if resume_from else DriverState()
    claim_run_dir(run_dir, config)
    print(f"agrpo train: run directory {run_dir.resolve()}", file=sys.stderr)
    ensure_base_model(config)
    return TrainingRun(config, reward, items, held_out, resume_from, state)


def run_steps(run: TrainingRun) -> None:
    """Train from the run's current step to `learner.steps` (or `checkpoint.stop_at`)."""
    cfg, total = run.config, run.config.learner.steps
    run.evaluate_if_pending(run.state.step)  # the base policy at step 0; after a resume, an evaluation cut short
    run.dispatch(run.state.step)
    for step in range(run.state.step, total):
        timer = StageTimer(run.metrics)
        with timer("rollout"):
            groups = run.sampled(step)  # RolloutWorkers: G completions of each prompt, streamed as they finish
        with timer("reward"):
            groups = run.rewards.scored(groups)  # RewardService pool; most were scored while streaming
        run.check_rewards(step + 1, groups)  # warns about a failing plugin; stops when every sample failed
        version = run.learners.version  # the weights the admitted groups are compared with
        admitted = run.staleness.admit(version, groups)  # too-stale groups are dropped and counted
        with timer("learner"):
            update = run.learners.update(admitted, step)  # AGRPO over k timesteps per trajectory, DeepSpeed
            while not update.done():
                run.stream(recover=False)  # the next batches keep sampling and scoring meanwhile
            ranks = update.stats()
        with timer("weight_sync"):
            run.drain()  # no chunk is mid-batch when the weights swap
            synced = run.broadcaster.broadcast()  # learner rank 0 -> every RolloutWorker
        steps_done = step + 1
        last = steps_done in (total, cfg.checkpoint.stop_at)
        line = step_line(step, cfg, admitted, ranks, update.skipped, synced, run.staleness, version, timer)
        collapsed = run.guard.update(line["success_rate"])
        run.log_step(line, admitted)
        diverged = divergence(line)
        if diverged:  # no checkpoint: it would hold NaN weights and push a good one out of keep_last
            raise TrainingDiverged(
                f"{diverged} at step {steps_done} (learner.lr = {cfg.learner.lr:g}); lower learner.lr and continue "
                f"from the last checkpoint with --resume ({latest_checkpoint(run.checkpoints) or 'none yet'})"
            )
        if steps_done % cfg.checkpoint.every_steps == 0 or last or collapsed:
            run.checkpoint(steps_done)
        run.evaluate_if_pending(steps_done)
        if collapsed:
            raise TrainingCollapsed(
                f"{collapsed} at step {steps_done} (learner.lr = {cfg.learner.lr:g}); lower learner.lr, or inspect "
                f"{run.log.path}; the checkpoint of step {steps_done} is in {run.checkpoints}"
            )
        if last:
            break
        run.dispatch(steps_done)


def train(config: Config) -> RunSummary:
    """A whole run: checks, the loop, then summary.json and the plots."""
    start = time.perf_counter()
    with open_run(config) as run:
        run_steps(run)
    summary = RunSummary(
        run_dir=str(run.run_dir.resolve()),
        steps=run.last_step,
        base_accuracy=run.evaluator.base(),
        final_accuracy=run.evaluator.final(),
        evaluations=run.evaluator.history,
        wall_seconds=time.perf_counter() - start,
    )
    fields = asdict(summary)
    del fields["plots"]
    (run.run_dir / "summary.json").write_text(json.dumps(fields, indent=2) + "\n")
    if config.metrics.plots:
        from common.plots import plot_run
        from rewards.tasks import load_task

        accuracy = load_task(config.data.task).accuracy_name
        summary.plots = [str(p) for p in plot_run(run.run_dir, accuracy)[0]]
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.train ...` is `agrpo train ...` (the form `ray job submit` runs)."""
    from cluster.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
