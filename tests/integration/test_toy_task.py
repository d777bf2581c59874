"""Adding a task is one new file: tests/toy_task.py, named only by its module path, trains end to end.

The rollout workers render its prompts and grade the held-out split, the reward actors' sandbox
children score with its reward: each process imports the task by path, since nothing registers it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml

from cluster.train import open_run, run_steps
from common.config import load_config
from tests.small_run import RECIPE, SMALL_RUN

TOY = "tests.toy_task"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, namespace="agrpo")
    yield
    ray.shutdown()


def test_a_task_given_by_module_path_trains_end_to_end(local_ray, tmp_path: Path) -> None:
    steps, groups, group_size = 2, 4, 4
    config = load_config(
        RECIPE,
        [f"run_dir={tmp_path}", *SMALL_RUN, f"data.task={TOY}", "rewards.plugins=null", f"learner.steps={steps}"],
    )
    assert (config.learner.groups_per_step, config.algorithm.group_size) == (groups, group_size)
    with open_run(config) as run:
        run_steps(run)
        scored = run.rewards.service.stats()["plugins"][TOY]
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (saved["data"]["task"], saved["rewards"]["plugins"]) == (TOY, None)
    assert scored["calls"] == steps * groups * group_size
    assert scored["errors"] == scored["timeouts"] == 0
    assert run.rewards.counters.reward_errors == 0
    assert run.last_step == steps
    assert run.evaluator.base() is not None and run.evaluator.final() is not None
