"""Pipeline overlap: step time and rollout-worker busy fraction with max_staleness 0 against 1.

Both runs use the same recipe, seed and local Ray cluster, one after the other in one process, with a
shape where sampling and the learner update take similar time (one rollout worker and one learner rank,
each on its own core). Prints mean step time (first steps excluded as warm-up), the rollout worker's busy
fraction and the ratio. Run: `.venv/bin/python tests/benchmarks/bench_pipeline.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import time

import ray

from cluster.train import open_run, run_steps
from common.config import load_config

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "recipes" / "tiny.yaml"


def run(staleness: int, steps: int, root: Path, extra: list[str]) -> dict[str, float]:
    run_dir = root / f"staleness-{staleness}"
    config = load_config(
        RECIPE,
        [
            f"run_dir={run_dir}",
            f"rollout.max_staleness={staleness}",
            f"learner.steps={steps}",
            "checkpoint.every_steps=100000",
            "data.num_train=2000",
            "data.num_eval=100",
            "model.path=tiny",
            "model.build_if_missing=never",
            "evaluation.every_steps=0",
            "evaluation.num_items=16",
            *extra,
        ],
    )
    with open_run(config) as training:
        start = time.perf_counter()
        run_steps(training)
        loop_seconds = time.perf_counter() - start
        sampling = sum(ray.get([w.seconds_sampling.remote() for w in training.workers]))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_seconds = [line["step_seconds"] for line in lines if "prompts" in line][3:]
    return {"step_s": statistics.mean(step_seconds), "busy": sampling / loop_seconds, "wall_s": loop_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    args = parser.parse_args()
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, namespace="agrpo")
    with tempfile.TemporaryDirectory() as root:
        results = {s: run(s, args.steps, Path(root), args.overrides) for s in (0, 1)}
    ray.shutdown()
    print(f"{'max_staleness':<15}{'step s':>9}{'busy':>7}{'loop s':>9}")
    for s, r in results.items():
        print(f"{s:<15}{r['step_s']:>9.3f}{r['busy']:>7.2f}{r['wall_s']:>9.1f}")
    print(f"step time ratio staleness 1 / 0: {results[1]['step_s'] / results[0]['step_s']:.2f}")


if __name__ == "__main__":
    main()
