"""Your own data and reward: a verl-style parquet (chat-turn prompts, nested ground truth, extra columns) with the
generic task and a reward plugin registered by another distribution's entry point trains end to end.

The distribution is created on the fly (its dist-info on PYTHONPATH before Ray starts, so the driver, the
rollout workers, the reward actors and their sandbox children all see the entry point), as a package
installed with `pip install` would be.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from cluster.train import open_run, run_steps
from common.config import load_config
from tests.small_run import RECIPE, SMALL_RUN

GENERIC = "rewards.tasks.generic"
PLUGIN = "verl_sum"


def write_verl_parquet(path: Path, pairs: list[tuple[int, int]], split: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": "toy/sums",
            "prompt": [{"role": "user", "content": f"{a}+{b}="}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"split": split, "index": index},
        }
        for index, (a, b) in enumerate(pairs)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="module")
def plugin_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray cluster whose processes see the `verl-sum-reward` distribution and its entry point."""
    root = tmp_path_factory.mktemp("site")
    dist = root / "verl_sum_reward-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: verl-sum-reward\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[agrpo.rewards]\n{PLUGIN} = tests.verl_reward:sum_reward\n")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), saved) if p)
    sys.path.insert(0, str(root))
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, namespace="agrpo")
    try:
        yield
    finally:
        ray.shutdown()
        sys.path.remove(str(root))
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved


def test_a_verl_parquet_with_an_entry_point_reward_trains_end_to_end(plugin_ray: None, tmp_path: Path) -> None:
    steps, groups, group_size = 2, 4, 4
    write_verl_parquet(tmp_path / "train.parquet", [(a, b) for a in range(5) for b in range(4)], "train")
    write_verl_parquet(tmp_path / "test.parquet", [(a, 5) for a in range(4)], "test")
    config = load_config(
        RECIPE,
        [
            f"run_dir={tmp_path / 'run'}",
            *SMALL_RUN,
            f"data.task={GENERIC}",
            f"data.path={tmp_path}/{{split}}.parquet",
            "data.eval_split=test",
            "evaluation.num_items=4",
            f"rewards.plugins=[{{name: {PLUGIN}}}]",
            f"learner.steps={steps}",
        ],
    )
    with open_run(config) as run:
        run_steps(run)
        scored = run.rewards.service.stats()["plugins"][PLUGIN]
    assert scored["calls"] == steps * groups * group_size
    assert scored["errors"] == scored["timeouts"] == 0  # every row reached the plugin with all its columns
    assert run.rewards.counters.reward_errors == 0
    assert run.last_step == steps
    # The held-out split is test.parquet's 4 rows, graded against their ground truth.
    assert len(run.evaluator.items) == 4
    assert run.evaluator.base() is not None and run.evaluator.final() is not None
