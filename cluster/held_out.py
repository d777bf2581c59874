"""Held-out evaluation during training, run on rollout worker 0 with the evaluation sampler settings.

The base policy is evaluated before the first update, then every `evaluation.every_steps` and at the end,
always on the same held-out items with the same settings, so base and final accuracy compare directly. The
reported final accuracy is the mean of the last three evaluations (one evaluation swings by a few points).
"""

from __future__ import annotations

import math
from typing import Any

import ray

from common.config import Config
from common.errors import ConfigError
from common.metrics import RoleMetrics
from rewards.data import load_task_items


def held_out_items(config: Config) -> list[dict[str, Any]]:
    """The items every evaluation of the run uses: `evaluation.num_items` of the eval split, or all of it.

    Loaded by `open_run` before Ray starts, so asking for more items than the split holds is refused in seconds
    (the schema can tell only for generated data; a file's split is known once it is read).
    """
    items = load_task_items(config.data, "eval", config.seed)
    wanted = config.evaluation.num_items
    if wanted is not None and wanted > len(items):
        source = config.data.path or "the generator"
        raise ConfigError(
            f"evaluation.num_items = {wanted}: more than the {len(items)} held-out items of {source}; lower it, or "
            "unset it to use the whole split"
        )
    return items[:wanted]


class HeldOutEvaluator:
    def __init__(
        self,
        config: Config,
        worker: Any,
        items: list[dict[str, Any]],
        metrics: RoleMetrics,
        history: list[list[float]] | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self.items = items
        self.sampler = config.evaluation.sampler(config.sampler).model_dump(mode="json")
        self.history: list[list[float]] = history or []
        self.metrics = metrics

    def due(self, step: int, last: bool) -> bool:
        every = self.config.evaluation.every_steps
        return last or (every > 0 and step % every == 0)

    def run(self, step: int) -> float:
        """Accuracy of the rollout policy (which holds the weights of version `step`)."""
        result = ray.get(self.worker.evaluate.remote(self.items, self.sampler, self.config.seed))
        # Nothing graded (the generic task's items without a ground truth grade as 0 of 0): no accuracy, NaN.
        accuracy = float(result["accuracy"]) if result["den"] else float("nan")
        self.history.append([step, accuracy])
        self.metrics.set("agrpo_accuracy", accuracy, {"task": self.config.data.task})
        return accuracy

    def base(self) -> float | None:
        if self.history and self.history[0][0] == 0 and math.isfinite(self.history[0][1]):
            return self.history[0][1]
        return None

    def final(self) -> float | None:
        """Mean of the last three evaluations after the base one (None when none of them graded anything)."""
        later = [acc for step, acc in self.history if step > 0 and math.isfinite(acc)][-3:]
        return sum(later) / len(later) if later else None
