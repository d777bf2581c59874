"""RewardHealth: a warning naming a plugin that keeps failing, and a stop when every sample of a step failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.reward_health import RewardHealth
from common.checkpoint import load_state, save_state
from common.config import SamplerConfig
from common.record import RolloutGroup, TrajectoryBatch, group_from_state, group_to_state
from rewards.outcomes import PluginOutcome, combine


def group(*samples: dict[str, str]) -> RolloutGroup:
    """A scored group whose sample i failed in the plugins `samples[i]` names (label -> error)."""
    errors = ["; ".join(f"{k}: {v}" for k, v in s.items()) or None for s in samples]
    trajectories: Any = None  # RewardHealth reads only the reward fields
    return RolloutGroup(0, trajectories, 0, 0, reward_errors=errors, plugin_errors=[dict(s) for s in samples])


OK: dict[str, str] = {}
BAD = {"format": "KeyError: 'solution'"}


def health(stop: bool = True) -> RewardHealth:
    return RewardHealth(["format", "correct"], window=5, warn_rate=0.5, stop_when_all_fail=stop)


def test_combine_keeps_each_failed_plugins_error_apart() -> None:
    outcomes = [PluginOutcome.failed("timeout", timed_out=True), PluginOutcome(1.0, 0.0), PluginOutcome.failed("x")]
    result = combine(["a", "b", "c"], [1.0, 1.0, 1.0], outcomes)
    assert result.score == 0.0
    assert result.plugin_errors == {"a": "timeout", "c": "x"}
    assert result.error == "a: timeout; c: x"
    assert combine(["a"], [1.0], [PluginOutcome(1.0, 0.0)]).plugin_errors == {}


def test_healthy_plugins_and_occasional_failures_stay_quiet() -> None:
    watch = health()
    for step in range(1, 11):
        verdict = watch.update(step, [group(OK, OK, OK, BAD if step % 3 == 0 else OK)])
        assert verdict.warnings == [] and verdict.stop is None


def test_a_plugin_past_the_rate_is_named_with_its_last_error_once_a_window() -> None:
    watch = health()
    warned = []
    for step in range(1, 12):
        verdict = watch.update(step, [group(BAD, BAD, OK, {"format": f"ValueError: step {step}"})])
        assert verdict.stop is None  # some samples scored
        warned += [(step, w) for w in verdict.warnings]
    assert [step for step, _ in warned] == [1, 6, 11]
    step, text = warned[1]
    assert text == (
        "reward plugin 'format' failed on 75% of its calls over the last 5 steps (up to step 6); "
        "last error: ValueError: step 6"
    )


def test_a_plugin_that_recovers_and_fails_again_is_named_again() -> None:
    watch = RewardHealth(["format"], window=2, warn_rate=0.5, stop_when_all_fail=True)
    pattern = [[OK, BAD], [OK, OK], [OK, OK], [OK, BAD], [BAD, BAD]]
    warned = [step for step, samples in enumerate(pattern, 1) if watch.update(step, [group(*samples)]).warnings]
    assert warned == [1, 5]


def test_a_step_where_every_sample_failed_stops_unless_opted_out() -> None:
    both = {"format": "KeyError: 'solution'", "correct": "timeout"}
    verdict = health().update(3, [group(both, BAD), group(BAD, BAD)])
    assert verdict.stop is not None
    assert verdict.stop.startswith(
        "every one of the 4 samples of step 3 failed to score (format: KeyError: 'solution')"
    )
    assert "rewards.stop_when_all_fail=false" in verdict.stop
    assert any("reward plugin 'format' failed on 100%" in w for w in verdict.warnings)
    on = health(stop=False).update(3, [group(both, BAD), group(BAD, BAD)])
    assert on.stop is None
    assert any(w.startswith("every one of the 4 samples of step 3 failed") for w in on.warnings)


@pytest.mark.parametrize("groups", [[], [group()]])
def test_a_step_without_samples_is_not_a_total_failure(groups: list[RolloutGroup]) -> None:
    assert health().update(1, groups).stop is None


def test_a_failure_no_plugin_owns_still_counts_as_a_failed_sample() -> None:
    combined = group(OK)
    combined.reward_errors = ["combined: non-finite score (inf)"]
    verdict = health().update(2, [combined])
    assert verdict.stop is not None and "(combined: non-finite score (inf))" in verdict.stop


def test_a_checkpoint_keeps_each_samples_plugin_errors(tmp_path: Path) -> None:
    sampler = SamplerConfig(gen_length=4, block_length=4, steps=4)
    batch = TrajectoryBatch(
        prompt_ids=[np.array([5, 6])] * 2,
        completion_ids=np.zeros((2, 4), dtype=np.int64),
        unmask_step=np.zeros((2, 4), dtype=np.int16),
        logprob=np.zeros((2, 4), dtype=np.float32),
        entropy=np.zeros((2, 4), dtype=np.float32),
        filled=np.zeros((2, 4), dtype=bool),
        allowed_ids=None,
        sampler=sampler,
        mask_id=0,
        eos_id=1,
    )
    scored = RolloutGroup(3, batch, 0, 0, texts=["a", "b"], rewards=np.zeros(2, dtype=np.float32))
    scored.reward_errors, scored.plugin_errors = ["format: timeout", None], [{"format": "timeout"}, {}]
    save_state(tmp_path, "batches", [group_to_state(scored)])
    restored = group_from_state(load_state(tmp_path, "batches")[0])
    assert restored.plugin_errors == [{"format": "timeout"}, {}]
    assert restored.reward_errors == ["format: timeout", None]
    older = group_to_state(scored)
    del older["plugin_errors"]  # a checkpoint written before plugin errors were kept
    assert group_from_state(older).plugin_errors == []
