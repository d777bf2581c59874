"""Variants of the embedded default, several seeds each: AGRPO against diffu-GRPO, the block-causal tiny model
against the full-attention default, or a sweep over k.

Each run is the full `agrpo train` of a recipe (each recipe's cached SFT base is shared, so it is built once,
inside the first run of that recipe, whose wall time includes it). A run
whose directory already holds a `summary.json` for the same config is read back, not rerun, so an
interrupted benchmark resumes where it stopped. The script prints, side by side, base and final held-out
accuracy (mean of the last three evaluations), the gain's mean and spread over seeds, wall time and accuracy
gained per CPU-minute (wall time x CPUs).

    .venv/bin/python tests/benchmarks/bench_algorithms.py                      # AGRPO vs diffu-GRPO, 3 seeds
    .venv/bin/python tests/benchmarks/bench_algorithms.py --variants agrpo,block  # block-causal vs full attention
    .venv/bin/python tests/benchmarks/bench_algorithms.py --sweep-k 1,4,8,all  # k sweep of AGRPO
    .venv/bin/python tests/benchmarks/bench_algorithms.py --seeds 0 learner.steps=100   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cluster.train import train
from common.config import Config, dump_config, load_config

RECIPES = Path(__file__).resolve().parents[2] / "deploy" / "recipes"
VARIANTS = {
    "agrpo": ("tiny.yaml", []),
    "diffu-grpo": ("tiny-diffu-grpo.yaml", []),
    "block": ("tiny-block.yaml", []),
}
"""name -> (recipe, overrides): AGRPO on the full-attention default, the diffu-GRPO baseline, AGRPO on the
block-causal tiny model (exact KV-cached rollouts, composite-sequence learner)."""


def finished(config: Config) -> dict[str, Any] | None:
    """The summary of a finished run with exactly this config (a rerun of the benchmark skips it)."""
    run_dir = Path(config.run_dir)
    summary, saved = run_dir / "summary.json", run_dir / "config.yaml"
    if summary.is_file() and saved.is_file() and saved.read_text() == dump_config(config):
        return json.loads(summary.read_text())
    return None


def run(name: str, recipe: str, seed: int, root: Path, overrides: list[str]) -> dict[str, float]:
    # An unfinished run of the same settings is started over (checkpoint.overwrite).
    run_dir = root / name / f"seed-{seed}"
    config = load_config(
        RECIPES / recipe, [f"run_dir={run_dir}", f"seed={seed}", "checkpoint.overwrite=true", *overrides]
    )
    result = finished(config)
    if result is None:
        result = asdict(train(config))
    else:
        print(f"{config.run_dir}: finished before, read from its summary.json", file=sys.stderr)
    cpus = config.cluster.num_cpus or os.cpu_count() or 1
    gain = result["final_accuracy"] - result["base_accuracy"]
    return {
        "base": result["base_accuracy"],
        "final": result["final_accuracy"],
        "gain": gain,
        "wall_s": result["wall_seconds"],
        "gain_per_cpu_min": 100 * gain / (result["wall_seconds"] * cpus / 60),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--variants", default="agrpo,diffu-grpo", help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--sweep-k", default=None, help="sweep AGRPO's k instead, e.g. 1,4,8,all")
    parser.add_argument("--root", default="runs/bench-algorithms", help="where the runs are written")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.root)
    if args.sweep_k:
        variants = {f"agrpo k={k}": ("tiny.yaml", [f"algorithm.k={k}"]) for k in args.sweep_k.split(",")}
    else:
        unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
        if unknown:
            parser.error(f"--variants {args.variants}: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
        variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    results: dict[str, list[dict[str, float]]] = {}
    for name, (recipe, extra) in variants.items():
        results[name] = [run(name.replace(" ", "_"), recipe, s, root, [*extra, *args.overrides]) for s in seeds]
    print(f"\n{'variant':<16}{'base %':>8}{'final %':>9}{'gain (pts)':>16}{'wall s':>8}{'pts/CPU-min':>13}")
    for name, runs in results.items():
        gains = [100 * r["gain"] for r in runs]
        spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
        print(
            f"{name:<16}{100 * statistics.mean(r['base'] for r in runs):>8.1f}"
            f"{100 * statistics.mean(r['final'] for r in runs):>9.1f}"
            f"{statistics.mean(gains):>10.1f} ± {spread:<4.1f}"
            f"{statistics.mean(r['wall_s'] for r in runs):>8.0f}"
            f"{statistics.mean(r['gain_per_cpu_min'] for r in runs):>13.2f}"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
