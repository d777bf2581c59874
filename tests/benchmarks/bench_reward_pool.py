"""Reward scoring throughput: the RewardService pool (n actors) against in-process calls.

Scores the same 10,000 generated Countdown completions (a third correct, a third wrong, a third
without an answer) with the built-in `countdown` reward, in groups of 8, four ways side by side:
plain in-process calls, one in-process sandbox child (the isolation cost without Ray), and the
pool with 1 and 2 actors. Prints scores per second and each as a ratio of the in-process rate, and
checks that every way gives the same scores. Process and actor start-up are excluded (one warm-up
group first); what remains is the per-sample cost of isolation (pipe round trip per call) and of
Ray (one task per group).

A Countdown score costs about 20 µs, so that run measures isolation overhead. `--work-ms X` adds X ms
of CPU work to every call (a stand-in for math-verify or a small reward model): then the reward itself
dominates and the pool's actors score in parallel, up to the number of cores.

    .venv/bin/python tests/benchmarks/bench_reward_pool.py [--samples 10000] [--group 8] [--pools 1 2]
        [--work-ms 0]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402

from common.config import RewardsConfig  # noqa: E402
from rewards.registry import CombinedReward, build_reward_fn, reward  # noqa: E402
from rewards.service import RewardScorer, RewardService  # noqa: E402
from rewards.tasks import countdown  # noqa: E402
from rewards.types import RewardResult  # noqa: E402
from tests.local_reward_scorer import LocalRewardScorer  # noqa: E402

TIMEOUT_S = 5.0


@reward()  # named by its dotted path below
def costly_countdown(completion: str, reference: dict, work_ms: float = 0.0) -> RewardResult:
    """The countdown reward after `work_ms` of busy CPU work (imported by name in actors and children)."""
    deadline = time.perf_counter() + work_ms / 1000
    while time.perf_counter() < deadline:
        pass
    return countdown.reward(completion, reference, "d1")


def make_samples(count: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """Completions with a mix of correct, wrong and missing answers, plus their references."""
    rng = random.Random(f"bench-reward-pool-{seed}")
    options = {**{name: option.default for name, option in countdown.OPTIONS.items()}, "num_numbers": [3, 4]}
    completions, references = [], []
    for i in range(count):
        item = countdown.generate(rng, **options)
        reasoning = f"<reasoning>\nTry combining {', '.join(map(str, item['numbers']))}.\n</reasoning>\n"
        if i % 3 == 0:
            answer = f"<answer>\n{item['expression']} = {item['target']}\n</answer>\n"
        elif i % 3 == 1:
            answer = f"<answer>\n{' + '.join(map(str, item['numbers']))}\n</answer>\n"
        else:
            answer = "I am not sure."
        completions.append(reasoning + answer)
        references.append({"numbers": item["numbers"], "target": item["target"]})
    return completions, references


def run(scorer: RewardScorer, completions: list[str], references: list[dict], group: int) -> tuple[float, list]:
    """Submit every group, then wait for all: the way the driver streams groups to the pool."""
    scorer.score_group(completions[:group], references[:group]).result()
    start = time.perf_counter()
    futures = [
        scorer.score_group(completions[i : i + group], references[i : i + group])
        for i in range(0, len(completions), group)
    ]
    scores = [r.score for future in futures for r in future.result()]
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work-ms", type=float, default=0.0, help="CPU work added to every reward call.")
    args = parser.parse_args()

    completions, references = make_samples(args.samples)
    plugin = (
        {"name": "tests.benchmarks.bench_reward_pool:costly_countdown", "kwargs": {"work_ms": args.work_ms}}
        if args.work_ms > 0
        else {"name": "countdown"}
    )
    reward_fn: CombinedReward = build_reward_fn(RewardsConfig(plugins=[plugin]))
    os.chdir(ROOT)  # Ray puts the driver's working directory on its workers' import path
    ray.init(num_cpus=max(2, max(args.pools)), object_store_memory=100 * 1024**2, include_dashboard=False)

    ways: list[tuple[str, RewardScorer]] = [
        ("in-process calls", LocalRewardScorer(reward_fn)),
        ("in-process sandbox child", LocalRewardScorer(reward_fn, timeout_s=TIMEOUT_S)),
    ]
    ways += [
        (f"pool, {n} actor{'s' if n > 1 else ''}", RewardService(reward_fn, n, TIMEOUT_S, name_prefix=f"bench-{n}"))
        for n in args.pools
    ]
    rows, reference_scores = [], None
    for label, scorer in ways:
        seconds, scores = run(scorer, completions, references, args.group)
        scorer.close()
        if reference_scores is None:
            reference_scores = scores
        elif scores != reference_scores:
            raise SystemExit(f"{label}: scores differ from in-process calls")
        rows.append((label, seconds, len(scores) / seconds))
    ray.shutdown()

    base = rows[0][2]
    work = f", {args.work_ms:g} ms of CPU work per call" if args.work_ms > 0 else ""
    print(f"{args.samples} countdown completions, groups of {args.group}{work}, {os.cpu_count()} CPUs")
    print(f"{'way':<28}{'seconds':>10}{'scores/s':>12}{'ratio':>9}")
    for label, seconds, rate in rows:
        print(f"{label:<28}{seconds:>10.2f}{rate:>12.0f}{rate / base:>9.3f}")


if __name__ == "__main__":
    main()
