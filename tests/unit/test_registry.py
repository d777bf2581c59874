"""The reward plugin registry: three ways to register, weights, and start-up errors (no Ray)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest

from common.config import DEFAULT_RECIPE, RewardsConfig, dump_config, load_config
from common.errors import ConfigError, UserError
from rewards import registry
from rewards.registry import available_rewards, build_reward_fn, reward
from rewards.types import RewardResult
from tests import plugins_for_tests

TEST_MODULE = "tests.plugins_for_tests"
EXAMPLE_INSTALL = "pip install --no-deps --no-build-isolation -e deploy/examples/agrpo_example_reward"


def _example_installed() -> bool:
    try:
        distribution("agrpo-example-reward")
    except PackageNotFoundError:
        return False
    return True


needs_example = pytest.mark.skipif(
    not _example_installed(), reason=f"example plugin package not installed; run `{EXAMPLE_INSTALL}`"
)


def config(*plugins: dict[str, Any], modules: tuple[str, ...] = (TEST_MODULE,), scheme: str = "d1") -> RewardsConfig:
    return RewardsConfig.model_validate({"plugins": list(plugins), "modules": list(modules), "scheme": scheme})


def build_error(cfg: RewardsConfig) -> str:
    with pytest.raises(ConfigError) as info:
        build_reward_fn(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decorations made by a test are undone after it."""
    monkeypatch.setattr(registry, "_DECORATED", dict(registry._DECORATED))


def test_decorated_function_with_kwargs() -> None:
    scorer = build_reward_fn(config({"name": "test_char_count", "kwargs": {"scale": 2.0}}))
    result = scorer("abcd", {})
    assert result == RewardResult(score=8.0, components={"test_char_count": 8.0})


def test_decorated_class_is_instantiated_once_and_keeps_its_components() -> None:
    scorer = build_reward_fn(config({"name": "test_exact_match"}))
    assert isinstance(scorer.plugins[0].fn, plugins_for_tests.ExactMatch)
    assert scorer("42", {"answer": "42"}) == RewardResult(
        score=1.5, components={"test_exact_match": 1.5, "test_exact_match/correct": 1.0}
    )
    assert scorer("41", {"answer": "42"}).score == 0.0


@needs_example
def test_entry_point_package() -> None:
    source = available_rewards()["length_penalty"]
    assert source.kind == "entry point (package agrpo-example-reward)"
    assert source.target == "agrpo_example_reward.rewards:length_penalty"
    scorer = build_reward_fn(config({"name": "length_penalty", "kwargs": {"max_chars": 4}}, modules=()))
    assert scorer("abcd", {}).score == 0.0
    assert scorer("abcdef", {}).score == -0.5
    assert scorer("a" * 100, {}).score == -1.0


def test_a_marked_object_is_reached_by_its_dotted_path() -> None:
    scorer = build_reward_fn(config({"name": f"{TEST_MODULE}:unnamed_length"}, modules=()))
    assert scorer("abc", {}).score == 3.0
    assert scorer.labels == [f"{TEST_MODULE}:unnamed_length"]
    assert registry.is_marked(plugins_for_tests.unnamed_length)
    assert not registry.is_marked(plugins_for_tests.unmarked_length)


@pytest.mark.parametrize(
    "name", ["builtins:eval", "builtins:exec", "shutil:rmtree", "subprocess:run", f"{TEST_MODULE}:unmarked_length"]
)
def test_an_importable_callable_that_is_not_registered_is_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`builtins:eval` once ran completions as code. Resolving must neither call nor create such an object: the real
    one is swapped for a spy that fails if touched."""

    def touched(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} was called while being resolved")

    monkeypatch.setattr(name.replace(":", "."), touched)
    message = build_error(config({"name": name}, modules=()))
    assert message == (
        f"rewards.plugins[0].name = {name!r}: not a reward plugin; register it with @reward('name') in a module "
        "listed in rewards.modules or as an entry point in the agrpo.rewards group, or mark it with @reward() to "
        "name it by its dotted path"
    )


def test_the_marker_cannot_be_faked_by_an_object_that_answers_every_attribute() -> None:
    from unittest import mock

    assert not registry.is_marked(mock.sentinel.anything)
    assert not registry.is_marked(mock.MagicMock())
    assert registry.is_marked(plugins_for_tests.ExactMatch())  # an instance of a marked class is marked


def test_weights_combine_and_components_are_per_plugin() -> None:
    scorer = build_reward_fn(
        config(
            {"name": "test_char_count", "weight": 2.0},
            {"name": "test_exact_match", "weight": -0.5},
            {"name": f"{TEST_MODULE}:unnamed_length", "weight": 0.0},
        )
    )
    result = scorer("7", {"answer": "7"})
    assert result.error is None
    assert result.score == pytest.approx(2.0 * 1 - 0.5 * 1.5)
    assert result.components == {
        "test_char_count": 1.0,
        "test_exact_match": 1.5,
        "test_exact_match/correct": 1.0,
        f"{TEST_MODULE}:unnamed_length": 1.0,
    }


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("raise", "test_chaos: ValueError: bad completion 'xy'"),
        ("nan", "test_chaos: non-finite score (nan)"),
        ("inf", "test_chaos: non-finite score (inf)"),
        ("huge", "test_chaos: non-finite score (inf)"),
    ],
)
def test_a_failed_plugin_scores_the_sample_zero_with_its_reason(mode: str, error: str) -> None:
    scorer = build_reward_fn(config({"name": "test_chaos"}, {"name": "test_char_count"}))
    result = scorer("xy", {"mode": mode})
    assert result == RewardResult(
        score=0.0,
        components={"test_chaos": 0.0, "test_char_count": 2.0},
        error=error,
        plugin_errors={"test_chaos": error.removeprefix("test_chaos: ")},
    )
    assert scorer("xy", {"mode": "ok"}).score == pytest.approx(1.02 + 2.0)


def test_a_non_number_return_is_an_error() -> None:
    scorer = build_reward_fn(config({"name": f"{TEST_MODULE}:returns_text"}))
    result = scorer("hello", {})
    assert result.score == 0.0
    assert result.error == f"{TEST_MODULE}:returns_text: returned str, expected a float or RewardResult"


def test_scorer_pickles_as_names_and_rebuilds() -> None:
    scorer = build_reward_fn(config({"name": "test_char_count", "weight": 3.0}, {"name": "test_exact_match"}))
    payload = pickle.dumps(scorer)
    assert b"ExactMatch" not in payload
    clone = pickle.loads(payload)
    assert clone.spec == scorer.spec
    assert clone("5", {"answer": "5"}) == scorer("5", {"answer": "5"})


def test_decorator_rejects_a_second_object_under_a_taken_name(scratch_registry: None) -> None:
    def first(completion: str, reference: dict) -> float:
        return 1.0

    def second(completion: str, reference: dict) -> float:
        return 2.0

    reward("test_twice")(first)
    reward("test_twice")(first)
    with pytest.raises(ConfigError, match=r"reward name 'test_twice': registered twice, by .*first and .*second"):
        reward("test_twice")(second)


def test_decorator_rejects_a_name_that_looks_like_a_dotted_path() -> None:
    with pytest.raises(ConfigError, match=r"reward name 'a:b': must be a non-empty string without ':'"):
        reward("a:b")


def test_decorator_clashing_with_a_builtin_is_rejected_at_build(scratch_registry: None) -> None:
    reward("countdown")(plugins_for_tests.unnamed_length)
    message = build_error(config({"name": "test_char_count"}))
    assert message == (
        "reward name 'countdown': registered twice, by built-in rewards.tasks.countdown:reward "
        f"and @reward {TEST_MODULE}:unnamed_length"
    )


@needs_example
def test_decorator_clashing_with_an_entry_point_is_rejected(scratch_registry: None) -> None:
    reward("length_penalty")(plugins_for_tests.unnamed_length)
    message = build_error(config({"name": "test_char_count"}))
    assert message.startswith("reward name 'length_penalty': registered twice, by entry point")
    assert "agrpo_example_reward.rewards:length_penalty" in message


def test_a_plugin_listed_twice_is_rejected() -> None:
    message = build_error(config({"name": "test_char_count"}, {"name": "test_char_count", "weight": 2}))
    assert message == (
        "rewards.plugins[1].name = 'test_char_count': listed twice (also rewards.plugins[0]); use one entry per plugin"
    )


def test_unknown_name_lists_the_available_ones() -> None:
    message = build_error(config({"name": "countdwn"}))
    assert message.startswith("rewards.plugins[0].name = 'countdwn': unknown reward; available: ")
    for name in ("arithmetic", "countdown", "gsm8k", "math", "sudoku", "test_char_count", "test_chaos"):
        assert name in message
    assert message.endswith("(or a dotted path package.module:function to an object marked with @reward())")


def test_wrong_signature_is_rejected() -> None:
    message = build_error(config({"name": f"{TEST_MODULE}:one_argument"}))
    assert message.startswith(f"rewards.plugins[0].name = '{TEST_MODULE}:one_argument': cannot be called as ")
    assert "too many positional arguments" in message
    assert message.endswith("its signature is (completion)")


@pytest.mark.parametrize("name", ["async_reward", "AsyncCall"])
def test_async_plugins_are_rejected(name: str) -> None:
    message = build_error(config({"name": f"{TEST_MODULE}:{name}"}))
    assert message == f"rewards.plugins[0].name = '{TEST_MODULE}:{name}': is async; reward plugins are called " + (
        "synchronously (return a float, not a coroutine)"
    )


def test_unknown_keyword_argument_is_rejected() -> None:
    message = build_error(config({"name": "test_char_count", "kwargs": {"scal": 2}}))
    assert "cannot be called as f(completion, reference, scal=...)" in message
    assert "unexpected keyword argument 'scal'" in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "no_such_package.rewards:score",
            "cannot import no_such_package.rewards:score (ModuleNotFoundError: No module named 'no_such_package')",
        ),
        (
            f"{TEST_MODULE}:missing",
            f"cannot import {TEST_MODULE}:missing (AttributeError: module '{TEST_MODULE}' has no attribute 'missing')",
        ),
        ("no_function:", "a dotted path must look like package.module:function"),
        (
            f"{TEST_MODULE}:NeedsArguments",
            "class NeedsArguments cannot be created without arguments (TypeError: "
            "NeedsArguments.__init__() missing 1 required positional argument: 'threshold')",
        ),
    ],
)
def test_plugin_that_cannot_be_loaded(name: str, expected: str) -> None:
    assert build_error(config({"name": name})) == f"rewards.plugins[0].name = {name!r}: {expected}"


def test_an_entry_point_to_something_not_callable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point is a registration, so it needs no marker; what it points at is still checked."""
    target = f"{TEST_MODULE}:NOT_CALLABLE"
    fake = EntryPoint("test_not_callable", target, registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [fake] if group == registry.ENTRY_POINT_GROUP else [])
    message = build_error(config({"name": "test_not_callable"}, modules=()))
    assert message == "rewards.plugins[0].name = 'test_not_callable': is a int, not a function or a class with __call__"


def test_module_that_cannot_be_imported() -> None:
    message = build_error(config({"name": "test_char_count"}, modules=(TEST_MODULE, "no_such_module")))
    assert message == (
        "rewards.modules[1] = 'no_such_module': cannot import (ModuleNotFoundError: No module named 'no_such_module')"
    )


def test_empty_plugin_list_and_non_finite_weight_are_rejected() -> None:
    with pytest.raises(ValueError, match="List should have at least 1 item"):
        config()  # the schema refuses it, so `agrpo config validate` does
    with pytest.raises(ConfigError, match=r"rewards.plugins = \[\]: at least one reward plugin is needed"):
        registry.build_from_spec(registry.RewardSpec(plugins=()))  # a spec built in code is checked too
    with pytest.raises(ValueError, match="Input should be a finite number"):
        config({"name": "test_char_count", "weight": math.inf})  # the schema refuses it; a spec built in code:
    with pytest.raises(ConfigError) as info:
        registry.build_from_spec(
            registry.RewardSpec(plugins=(registry.PluginSpec("test_char_count", math.inf),), modules=(TEST_MODULE,))
        )
    assert str(info.value) == "rewards.plugins[0].weight = inf: must be a finite number"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["rewards.plugins=[{name: no_such_reward}]"], "unknown reward; available:"),
        (["data.path=/nonexistent/train.jsonl"], "/nonexistent/train.jsonl"),
    ],
)
def test_training_checks_rewards_and_data_before_building_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], expected: str
) -> None:
    import cluster.train

    def must_not_run(_config: object) -> None:
        raise AssertionError("the base model was built before the rewards and data were checked")

    monkeypatch.setattr(cluster.train, "ensure_base_model", must_not_run)
    config = load_config(None, [f"run_dir={tmp_path / 'run'}", *overrides])
    with pytest.raises(UserError, match=expected):
        cluster.train.train(config)
    assert not (tmp_path / "run").exists()


def _spec_names(config: Any) -> list[str]:
    return [p.name for p in registry.RewardSpec.from_config(config.rewards, config.data.task).plugins]


def test_reward_plugins_default_to_the_task_and_must_match_it() -> None:
    gsm8k = load_config(None, ["data.task=gsm8k"])
    assert gsm8k.rewards.plugins is None  # the schema keeps what it was given ...
    assert "  plugins: null\n" in dump_config(gsm8k)
    assert _spec_names(gsm8k) == ["gsm8k"]  # ... and the reward spec resolves "none" to the task's reward
    assert _spec_names(load_config(None, ["data.task=math"])) == ["math"]
    with pytest.raises(ConfigError, match="the reward of data.task needs the task"):
        registry.RewardSpec.from_config(gsm8k.rewards)
    with pytest.raises(ConfigError, match=r"rewards.plugins.0.name = 'countdown': the built-in countdown reward"):
        load_config(None, ["data.task=gsm8k", "rewards.plugins=[{name: countdown}]"])
    with pytest.raises(ConfigError, match=r"'rewards.tasks.countdown:reward': the built-in countdown reward needs"):
        load_config(None, ["data.task=gsm8k", "rewards.plugins=[{name: 'rewards.tasks.countdown:reward'}]"])
    with pytest.raises(ConfigError, match=r"rewards.plugins = \[\]: List should have at least 1 item"):
        load_config(None, ["rewards.plugins=[]"])
    recipe = load_config(DEFAULT_RECIPE, ["data.task=countdown", "rewards.plugins=null"])
    assert recipe.rewards.plugins is None and _spec_names(recipe) == ["countdown"]
    mixed = load_config(None, ["data.task=gsm8k", "rewards.plugins=[{name: gsm8k}, {name: test_char_count}]"])
    assert _spec_names(mixed) == ["gsm8k", "test_char_count"]


def test_a_builtin_by_dotted_path_gets_the_scheme_too() -> None:
    scorer = build_reward_fn(config({"name": "rewards.tasks.countdown:reward"}, modules=(), scheme="agrpo"))
    assert scorer.plugins[0].kwargs == {"scheme": "agrpo"}


def test_sandbox_startup_timeout_comes_from_the_config() -> None:
    from tests.local_reward_scorer import LocalRewardScorer

    scorer = LocalRewardScorer.from_config(load_config(None, ["rewards.startup_timeout_s=7.5"]), isolate=True)
    try:
        assert scorer._sandbox is not None and scorer._sandbox.startup_timeout_s == 7.5
    finally:
        scorer.close()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.path=/nonexistent/train.jsonl"], "agrpo train: error: data file /nonexistent/train.jsonl: not found"),
        (["sampler.stepz=4"], "sampler.stepz = 4: unknown key (did you mean steps?)"),
    ],
)
def test_train_user_errors_are_one_line(tmp_path: Path, overrides: list[str], expected: str) -> None:
    """Nothing (no library's import-time warning) is printed before the error line."""
    command = [sys.executable, "-m", "cluster.cli", "train", f"run_dir={tmp_path / 'run'}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
