"""Variants of the embedded default, several seeds each: AGRPO against diffu-GRPO, the block-causal tiny model
against the full-attention default, approximate rollouts with and without the mismatch correction, or a sweep
over k.

Each run is the full `agrpo train` of a recipe (each recipe's cached SFT base is shared, so it is built once,
inside the first run of that recipe, whose wall time includes it). A run
whose directory already holds a `summary.json` for the same config is read back, not rerun, so an
interrupted benchmark resumes where it stopped. The script prints, side by side, base and final held-out
accuracy (mean of the last three evaluations), the gain's mean and spread over seeds, wall time and accuracy
gained per CPU-minute (wall time x CPUs), then, for runs whose metrics.jsonl measured it, the rollout/learner
mismatch over the run (mean of the steps' mean |log pi_old - log pi_behaviour|, the largest step maximum, the
mean k3 KL, the mean fraction of tokens capped or masked) and the mean policy drift (docs/learner.md).

    .venv/bin/python tests/benchmarks/bench_algorithms.py                      # AGRPO vs diffu-GRPO, 3 seeds
    .venv/bin/python tests/benchmarks/bench_algorithms.py --variants agrpo,block  # block-causal vs full attention
    .venv/bin/python tests/benchmarks/bench_algorithms.py --sweep-k 1,4,8,all  # k sweep of AGRPO
    .venv/bin/python tests/benchmarks/bench_algorithms.py --seeds 0 learner.steps=100   # quicker
    .venv/bin/python tests/benchmarks/bench_algorithms.py --variants exact,dual-threshold,dual-threshold-tis
        # approximate rollouts (dual cache + threshold decoding) with `none` and with `tis`, against exact ones
"""

from __future__ import annotations

import argparse
import json
import math
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
APPROXIMATE = [
    "sampler.kv_cache=dual",
    "sampler.unmask=threshold",
    "evaluation.kv_cache=off",
    "evaluation.unmask=fixed",
]
"""Rollouts with the dual cache and threshold decoding; held-out accuracy is still measured with the exact sampler,
as for every other variant, so that the gain is the policy's, not its decoder's."""
VARIANTS = {
    "agrpo": ("tiny.yaml", []),
    "diffu-grpo": ("tiny-diffu-grpo.yaml", []),
    "block": ("tiny-block.yaml", []),
    "exact": ("tiny.yaml", ["algorithm.rollout_correction=none"]),
    "exact-tis": ("tiny.yaml", ["algorithm.rollout_correction=tis"]),
    "dual-threshold": ("tiny.yaml", [*APPROXIMATE, "algorithm.rollout_correction=none"]),
    "dual-threshold-tis": ("tiny.yaml", [*APPROXIMATE, "algorithm.rollout_correction=tis"]),
}
"""name -> (recipe, overrides): AGRPO on the full-attention default, the diffu-GRPO baseline, AGRPO on the
block-causal tiny model (exact KV-cached rollouts, composite-sequence learner); exact rollouts with `none` and
`tis` (the weights must read 1, the mismatch float rounding), and approximate rollouts (the dual KV cache with
confidence-threshold decoding, docs/sampler.md) trained with `none` and with `tis`."""

MISMATCH = ("rollout_mismatch_mean", "rollout_mismatch_max", "rollout_mismatch_kl", "rollout_correction_fraction")


def mismatch_figures(run_dir: Path) -> dict[str, float]:
    """The run's mismatch over its steps (empty when metrics.jsonl does not have it): means of the per-step
    means, KL, corrected fraction and drift; the largest per-step maximum."""
    path = run_dir / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    steps = [line for line in lines if "prompts" in line and math.isfinite(line.get("rollout_mismatch_mean", math.nan))]
    if not steps:
        return {}
    return {
        "mismatch_mean": statistics.mean(line["rollout_mismatch_mean"] for line in steps),
        "mismatch_max": max(line["rollout_mismatch_max"] for line in steps),
        "mismatch_kl": statistics.mean(line["rollout_mismatch_kl"] for line in steps),
        "corrected": statistics.mean(line["rollout_correction_fraction"] for line in steps),
        "drift_mean": statistics.mean(line["policy_drift_mean"] for line in steps),
    }


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
        **mismatch_figures(run_dir),
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
    print(f"\n{'variant':<20}{'base %':>8}{'final %':>9}{'gain (pts)':>16}{'wall s':>8}{'pts/CPU-min':>13}")
    for name, runs in results.items():
        gains = [100 * r["gain"] for r in runs]
        spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
        print(
            f"{name:<20}{100 * statistics.mean(r['base'] for r in runs):>8.1f}"
            f"{100 * statistics.mean(r['final'] for r in runs):>9.1f}"
            f"{statistics.mean(gains):>10.1f} ± {spread:<4.1f}"
            f"{statistics.mean(r['wall_s'] for r in runs):>8.0f}"
            f"{statistics.mean(r['gain_per_cpu_min'] for r in runs):>13.2f}"
        )
    measured = {name: runs for name, runs in results.items() if all("mismatch_mean" in r for r in runs)}
    if measured:
        print(f"\n{'variant':<20}{'mismatch mean':>14}{'max':>10}{'k3 KL':>10}{'capped/masked':>15}{'drift mean':>12}")
        for name, runs in measured.items():
            print(
                f"{name:<20}{statistics.mean(r['mismatch_mean'] for r in runs):>14.2e}"
                f"{max(r['mismatch_max'] for r in runs):>10.2e}"
                f"{statistics.mean(r['mismatch_kl'] for r in runs):>10.2e}"
                f"{100 * statistics.mean(r['corrected'] for r in runs):>14.2f}%"
                f"{statistics.mean(r['drift_mean'] for r in runs):>12.3f}"
            )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
