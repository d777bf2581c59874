"""Building the reward plugins is bounded by `rewards.startup_timeout_s`: a hang is named, never waited out."""

from __future__ import annotations

import pytest

from common.config import RewardsConfig
from common.errors import ConfigError
from rewards.registry import build_reward_fn

LIMIT = "did not finish within 0.5 s \\(rewards.startup_timeout_s\\)"


@pytest.mark.timeout(15)
def test_a_plugin_whose_constructor_hangs_is_named() -> None:
    cfg = RewardsConfig(
        plugins=[{"name": "test_char_count"}, {"name": "tests.plugins_for_tests:HangsWhileBuilt"}],
        modules=["tests.plugins_for_tests"],
        startup_timeout_s=0.5,
    )
    with pytest.raises(
        ConfigError, match=rf"^rewards.plugins\[1\].name = 'tests.plugins_for_tests:HangsWhileBuilt': .*{LIMIT}"
    ):
        build_reward_fn(cfg)


@pytest.mark.timeout(15)
def test_a_module_whose_import_hangs_is_named() -> None:
    cfg = RewardsConfig(
        plugins=[{"name": "arithmetic"}], modules=["tests.plugins_hanging_import"], startup_timeout_s=0.5
    )
    with pytest.raises(ConfigError, match=rf"^rewards.modules\[0\] = 'tests.plugins_hanging_import': .*{LIMIT}"):
        build_reward_fn(cfg)


def test_errors_inside_the_bounded_build_reach_the_caller_unchanged() -> None:
    cfg = RewardsConfig(plugins=[{"name": "no_such_reward"}], startup_timeout_s=30)
    with pytest.raises(ConfigError, match=r"rewards.plugins\[0\].name = 'no_such_reward': unknown reward"):
        build_reward_fn(cfg)
    with pytest.raises(ConfigError, match=r"rewards.modules\[0\] = 'no_such_module_xyz': cannot import"):
        build_reward_fn(RewardsConfig(plugins=[{"name": "arithmetic"}], modules=["no_such_module_xyz"]))
    assert build_reward_fn(RewardsConfig(plugins=[{"name": "arithmetic"}])).labels == ["arithmetic"]
