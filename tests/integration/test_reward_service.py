"""The sandbox and the RewardService pool against misbehaving plugins, on a local Ray.

Every sample must come back with a score and, where it failed, a reason; the pool must keep serving;
the counters must match what was sent; a killed actor must be replaced without losing its group.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import time
from collections.abc import Iterator

import pytest
import ray

from common.config import Config, RewardsConfig
from rewards.registry import CombinedReward, build_reward_fn
from rewards.sandbox import SandboxedScorer
from rewards.service import RewardService
from tests.local_reward_scorer import LocalRewardScorer, create_reward_scorer

TIMEOUT_S = 2.0
CHAOS = "test_chaos"
COUNT = "test_char_count"


def chaos_scorer() -> CombinedReward:
    return build_reward_fn(
        RewardsConfig.model_validate(
            {
                "plugins": [{"name": CHAOS}, {"name": COUNT, "weight": 0.5}],
                "modules": ["tests.plugins_for_tests"],
                "timeout_s": TIMEOUT_S,
            }
        )
    )


def group(*modes: str, text: str = "ab") -> tuple[list[str], list[dict]]:
    return [text] * len(modes), [{"mode": mode} for mode in modes]


def counters(stats: dict, label: str) -> tuple[int, int, int]:
    plugin = stats["plugins"][label]
    return plugin["calls"], plugin["timeouts"], plugin["errors"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False)
    yield
    ray.shutdown()


def test_sandbox_keeps_earlier_samples_and_retries_later_ones_in_a_fresh_process() -> None:
    sandbox = SandboxedScorer(chaos_scorer(), timeout_s=TIMEOUT_S)
    try:
        completions, references = group("pid", "pid", "pid", "hang", "pid", "pid")
        outcomes = sandbox.score(list(zip(completions, references, strict=True)))
    finally:
        sandbox.close()
    chaos = [sample[0] for sample in outcomes]
    assert [o.error for o in chaos] == [None, None, None, "timeout", None, None]
    assert chaos[3].timed_out and chaos[3].score == 0.0
    first_pid, second_pid = chaos[0].score, chaos[4].score
    assert [o.score for o in chaos] == [first_pid] * 3 + [0.0] + [second_pid] * 2
    assert first_pid != second_pid
    assert sandbox.replacements == 1
    assert all(sample[1].score == 2.0 and sample[1].error is None for sample in outcomes)


def test_every_failure_gets_score_zero_and_a_reason_and_the_pool_keeps_serving(local_ray: None) -> None:
    service = RewardService(chaos_scorer(), pool_size=2, timeout_s=TIMEOUT_S, name_prefix="reward-chaos")
    try:
        modes = ("ok", "hang", "ok", "raise", "nan", "exit", "sigkill", "inf", "ok")
        results = service.score_group(*group(*modes)).result(timeout=120)
        errors = [r.error for r in results]
        assert errors == [
            None,
            "test_chaos: timeout",
            None,
            "test_chaos: ValueError: bad completion 'ab'",
            "test_chaos: non-finite score (nan)",
            "test_chaos: worker died (exit code 3)",
            "test_chaos: worker died (exit code -9, SIGKILL)",
            "test_chaos: non-finite score (inf)",
            None,
        ]
        ok_score = 1.02 + 0.5 * 2
        assert [r.score for r in results] == pytest.approx([ok_score if e is None else 0.0 for e in errors])
        assert all(r.components[COUNT] == 2.0 for r in results)
        assert counters(service.stats(), CHAOS) == (9, 1, 5)
        assert counters(service.stats(), COUNT) == (9, 0, 0)

        followups = [service.score_group(*group("ok", "ok", "ok", text="abcd")) for _ in range(4)]
        for future in followups:
            assert [r.score for r in future.result(timeout=60)] == pytest.approx([1.04 + 0.5 * 4] * 3)
        stats = service.stats()
        assert counters(stats, CHAOS) == (21, 1, 5)
        assert stats["plugins"][CHAOS]["mean_score"] == pytest.approx((3 * 1.02 + 12 * 1.04) / 21)
        assert stats["actor_replacements"] == 0

        per_actor = service.actor_stats()
        assert len(per_actor) == 2
        assert sum(a["plugins"][CHAOS]["calls"] for a in per_actor if a["plugins"]) == 21
        assert sum(a["sandbox_replacements"] for a in per_actor) == 3
    finally:
        service.close()


def test_a_killed_actor_is_replaced_and_its_group_scored_once(local_ray: None) -> None:
    service = RewardService(chaos_scorer(), pool_size=1, timeout_s=5.0, name_prefix="reward-kill")
    try:
        completions = ["abc"] * 4
        references = [{"mode": "slow", "seconds": 0.5}] * 4
        future = service.score_group(completions, references)
        time.sleep(1.0)
        killed = service.actors[0]
        ray.kill(killed, no_restart=True)
        results = future.result(timeout=120)
        assert [r.error for r in results] == [None] * 4
        assert [r.score for r in results] == pytest.approx([1.03 + 0.5 * 3] * 4)
        stats = service.stats()
        assert counters(stats, CHAOS) == (4, 0, 0)
        assert stats["actor_replacements"] == 1
        replacement = service.actors[0]
        assert replacement._actor_id != killed._actor_id
        assert ray.get_actor("reward-kill-0")._actor_id == replacement._actor_id
        after = service.score_group(*group("ok")).result(timeout=60)
        assert after[0].error is None
    finally:
        service.close()


def test_a_group_whose_actor_keeps_dying_still_gets_scores_and_reasons(local_ray: None) -> None:
    service = RewardService(chaos_scorer(), pool_size=1, timeout_s=5.0, name_prefix="reward-giveup", max_attempts=1)
    try:
        future = service.score_group(["abc"] * 2, [{"mode": "slow", "seconds": 5.0}] * 2)
        time.sleep(1.0)
        ray.kill(service.actors[0], no_restart=True)
        results = future.result(timeout=60)
        reason = "reward actor died on all 1 attempts to score this group"
        assert [(r.score, r.error) for r in results] == [(0.0, f"{CHAOS}: {reason}; {COUNT}: {reason}")] * 2
        assert counters(service.stats(), CHAOS) == (2, 0, 2)
    finally:
        service.close()


def test_in_process_scorer_matches_the_pool_and_is_chosen_by_config(local_ray: None) -> None:
    completions, references = group("ok", "raise", "nan", "ok", text="xyz")
    local = LocalRewardScorer(chaos_scorer())
    service = RewardService(chaos_scorer(), pool_size=1, timeout_s=TIMEOUT_S, name_prefix="reward-same")
    try:
        assert local.score_group(completions, references).result() == service.score_group(
            completions, references
        ).result(timeout=60)
        for label in (CHAOS, COUNT):
            assert counters(local.stats(), label) == counters(service.stats(), label)
    finally:
        service.close()
        local.close()
    config = Config.model_validate({"rewards": {"plugins": [{"name": COUNT}], "modules": ["tests.plugins_for_tests"]}})
    scorer = create_reward_scorer(config, in_process=True)
    assert isinstance(scorer, LocalRewardScorer)
    assert scorer.score_group(["abcd"], [{}]).result()[0].score == 4.0
