"""A training run's actors and state: set up in data-flow order on enter, torn down in reverse on exit.

Setup: Ray (a new local loopback cluster unless `cluster.address` or `ray job submit` names one), placement
groups, the RewardService pool, the DeepSpeed learner group, the rollout workers, the weight broadcaster (layout
check, first broadcast), then the driver's own state, restored from a checkpoint when resuming, and the trackers. Teardown runs in reverse whatever happened, so an
error or an interrupt never leaves actors or placement groups behind.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.collapse import CollapseGuard
from cluster.held_out import HeldOutEvaluator
from cluster.placement import RolePlacement, create_placements, remove_placements
from cluster.progress import RunProgress
from cluster.prompts import PromptStream
from cluster.ray_setup import ray_cluster
from cluster.reward_health import RewardHealth, RewardsFailed
from cluster.reward_queue import RewardCounters, RewardQueue
from cluster.rollout_dispatch import WORKER_FAILURES, DispatchCounters, RolloutDispatcher
from cluster.run_state import DriverState, load_learners, save_run
from cluster.staleness import StalenessManager
from cluster.step_metrics import StalenessExport
from cluster.weight_broadcaster import WeightBroadcaster
from common.checkpoint import latest_checkpoint
from common.config import Config
from common.metrics import MetricsLog, RoleMetrics, run_label
from common.record import RolloutGroup
from common.trackers import Trackers, completion_rows
from learner.group import LearnerGroup
from rewards.registry import CombinedReward
from rewards.service import RewardService
from rollout.worker import RolloutWorker

EVALUATION_ATTEMPTS = 3


def create_rollout_workers(config: Config, placement: RolePlacement) -> list[Any]:
    """Named `rollout-<i>`; Ray restarts a dead worker, the driver then re-syncs and re-dispatches."""
    remote = ray.remote(max_restarts=-1, max_task_retries=0)(RolloutWorker)
    payload = config.model_dump(mode="json")
    return [
        remote.options(name=f"rollout-{i}", **placement.actor_options(i)).remote(payload, i)
        for i in range(config.rollout.num_workers)
    ]


def kill_actors(actors: list[Any]) -> None:
    for actor in actors:
        ray.kill(actor, no_restart=True)


class TrainingRun:
    """Everything a run holds while it trains; use as `with TrainingRun(...) as run:`."""

    def __init__(
        self,
        config: Config,
        reward: CombinedReward,
        items: list[dict[str, Any]],
        held_out: list[dict[str, Any]],
        resume_from: Path | None,
        state: DriverState,
    ) -> None:
        self.config = config
        self.reward = reward
        self.items = items
        self.held_out = held_out
        self.resume_from = resume_from
        self.state = state
        self.run_dir = Path(config.run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self.name = run_label(config)
        rewards = config.rewards
        self.reward_health = RewardHealth(
            reward.labels, rewards.error_window, rewards.error_warn_rate, rewards.stop_when_all_fail
        )

    def __enter__(self) -> TrainingRun:
        config, state = self.config, self.state
        with ExitStack() as stack:
            stack.enter_context(ray_cluster(config.cluster))
            self.metrics = RoleMetrics(self.name)
            placements = create_placements(config)
            stack.callback(remove_placements, placements)
            service = RewardService.from_config(config, self.reward)
            stack.callback(service.close)
            self.rewards = RewardQueue(service)
            self.learners = LearnerGroup(
                config.model_dump(mode="json"),
                [placements["learner"].actor_options(r) for r in range(config.learner.world_size)],
                lambda: str(latest_checkpoint(self.checkpoints) or ""),
            )
            stack.callback(kill_actors, self.learners.ranks)
            self.workers = create_rollout_workers(config, placements["rollout"])
            stack.callback(kill_actors, self.workers)
            self.broadcaster = WeightBroadcaster(self.learners, self.workers, self.metrics)
            self.broadcaster.check_layout()
            if self.resume_from is not None:
                load_learners(self.resume_from, self.learners, state)
            self.broadcaster.broadcast()

            self.staleness = StalenessManager(config.rollout.max_staleness, config.learner.steps)
            self.rollouts = RolloutDispatcher(
                self.workers, config.sampler.batch_size // config.algorithm.group_size, self.metrics
            )
            if self.resume_from is not None:
                self.staleness.load_state_dict(state.staleness)
                self.rollouts.counters = DispatchCounters(**state.counters["dispatch"])
                self.rewards.counters = RewardCounters(**state.counters["rewards"])
            for batch, groups in state.ready.items():
                self.rollouts.restore(batch, groups)
            self.prompts = PromptStream(self.items, config.seed, cursor=state.cursor)
            self.evaluator = HeldOutEvaluator(config, self.workers[0], self.held_out, self.metrics, state.evals)
            self.guard = CollapseGuard(config.metrics.collapse_window, config.metrics.collapse_ratio)
            if state.collapse:
                self.guard.load_state_dict(state.collapse)
            self.log = MetricsLog(self.run_dir / "metrics.jsonl")
            # An evaluation cut short by a crash runs again, so its accuracy line (if any) must go too.
            self.log.truncate_after(state.step, drop_accuracy=self.evaluation_pending(state.step))
            self.last_step = state.step
            self.exported = StalenessExport(self.metrics, self.staleness)
            self.metrics.set("agrpo_learner_step", state.step)  # from the start: the base evaluation shows step 0
            self.metrics.zero("agrpo_rollout_worker_restarts_total")
            self.trackers = Trackers(config, self.name, self.run_dir, state.step)
            stack.callback(self.trackers.close)
            self.progress = RunProgress(config.learner.steps, state.step)
            stack.callback(self.progress.close)
            self._teardown = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._teardown.close()

    def dispatch(self, step: int) -> None:
        """Send out every batch the staleness rule allows now that the learner is at `step`."""
        for batch in self.staleness.dispatchable(step):
            self.rollouts.dispatch(batch, self.prompts.take(self.config.learner.groups_per_step))

    def stream(self, recover: bool) -> None:
        """One poll of the rollout side: sampled groups go to the reward service as they arrive. With `recover`,
        restarted workers get the current weights and their lost chunks go out again; never while a learner
        update runs, or rank 0 would send the new weights to every worker in the middle of a batch."""
        self.rewards.submit(self.rollouts.collect())
        if recover and self.rollouts.lost:
            self.broadcaster.broadcast()
            self.rollouts.resubmit_lost()

    def sampled(self, batch: int) -> list[RolloutGroup]:
        """The groups of `batch` in prompt order, once all are sampled (lost chunks restarted)."""
        while not self.rollouts.complete(batch):
            self.stream(recover=True)
        return self.rollouts.take(batch)

    def drain(self) -> None:
        """Wait until no chunk is sampling, so a weight broadcast lands between batches."""
        while not self.rollouts.idle():
            self.stream(recover=True)

    def _sampled_ahead(self, batch: int) -> list[RolloutGroup]:
        while not self.rollouts.complete(batch):
            self.stream(recover=True)
        return self.rewards.scored(self.rollouts.groups(batch))

    def check_rewards(self, step: int, groups: list[RolloutGroup]) -> None:
        """Warn about a reward plugin that keeps failing; stop (`RewardsFailed`) when every sample of `step`
        failed, before the learner trains on them."""
        verdict = self.reward_health.update(step, groups)
        for warning in verdict.warnings:
            self.progress.warn(f"warning: {warning}")
        if verdict.stop:
            raise RewardsFailed(verdict.stop)

    def log_step(self, line: dict[str, Any], groups: list[RolloutGroup]) -> None:
        """A step's metrics line to metrics.jsonl, the trackers, the progress bar and the Ray metrics; every
        `metrics.completions_every` steps a table of the step's completions to the trackers."""
        cfg = self.config
        done = int(line["step"])
        if done % cfg.metrics.log_every == 0 or done == cfg.learner.steps:
            self.log.write(line)
            self.trackers.log_metrics(done, line)
        if cfg.metrics.completions_every and done % cfg.metrics.completions_every == 0:
            rows = completion_rows(
                groups, self.reward.labels, cfg.algorithm.scale_advantages, cfg.metrics.completions_rows
            )
            self.trackers.log_completions(done, rows)
        self.last_step = done
        self.metrics.set("agrpo_learner_step", done)
        self.metrics.set("agrpo_reward_mean_by_task", line["reward_mean"], {"task": cfg.data.task})
        self.exported.update()
        self.progress.update(done, reward=line["reward_mean"], success=line["success_rate"])

    def evaluation_pending(self, step: int) -> bool:
        """Whether held-out accuracy at `step` is due (always at step 0) and not measured yet."""
        cfg = self.config
        due = step == 0 or self.evaluator.due(step, last=step in (cfg.learner.steps, cfg.checkpoint.stop_at))
        return due and all(int(s) != step for s, _ in self.evaluator.history)

    def evaluate_if_pending(self, step: int) -> None:
        if not self.evaluation_pending(step):
            return
        self.progress.phase_note("evaluating the base policy" if step == 0 else f"evaluating step {step}")
        accuracy = self.evaluate(step)
        self.log.write({"step": step, "accuracy": accuracy})
        self.trackers.log_metrics(step, {"accuracy": accuracy})
        self.progress.update(step, accuracy=accuracy)

    def evaluate(self, step: int) -> float:
        """Held-out accuracy of the weights of version `step`; a worker that dies meanwhile is restarted,
        re-synced and asked again."""
        for attempt in range(1, EVALUATION_ATTEMPTS + 1):
            try:
                return self.evaluator.run(step)
            except (*WORKER_FAILURES, RayActorError):
                if attempt == EVALUATION_ATTEMPTS:
                    raise
                self.rollouts.counters.worker_restarts += 1
                self.broadcaster.broadcast()
        raise AssertionError("unreachable")

    def checkpoint(self, step: int) -> Path:
        """Save the run after `step` updates, with the batches sampled ahead (completed first)."""
        ahead = range(step, self.staleness.next_batch)
        state = DriverState(
            step=step,
            version=self.learners.version,
            cursor=self.prompts.cursor,
            staleness=self.staleness.state_dict(),
            counters={"dispatch": vars(self.rollouts.counters), "rewards": vars(self.rewards.counters)},
            ready={b: self._sampled_ahead(b) for b in ahead},
            evals=self.evaluator.history,
            collapse=self.guard.state_dict(),
        )
        return save_run(self.checkpoints, self.config, self.learners, state)
