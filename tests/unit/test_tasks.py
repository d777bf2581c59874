"""The task registry: one module per task, found by entry point or module path, feeding the schema, the
data readers, the generators, the prompts, the reward plugins and the CLI."""

from __future__ import annotations

import json
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import cluster.cli as cli
from common.config import DataConfig, RewardsConfig, load_config
from common.errors import ConfigError, DataError
from common.task_names import registered_tasks
from rewards.data import load_items, load_task_items
from rewards.generators import generate
from rewards.perturb import wrong_completion
from rewards.registry import available_rewards, build_reward_fn
from rewards.tasks import load_task
from rewards.tasks.base import Option
from rewards.templates import render_prompt
from tests import toy_task

TOY = "tests.toy_task"
BUILT_IN = {
    "arithmetic": "rewards.tasks.arithmetic",
    "countdown": "rewards.tasks.countdown",
    "generic": "rewards.tasks.generic",
    "gsm8k": "rewards.tasks.gsm8k",
    "math": "rewards.tasks.math",
    "sudoku": "rewards.tasks.sudoku",
}


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the CLI from the two commands used here, whatever else it lists."""
    monkeypatch.setattr(cli, "COMMANDS", {"score": "cluster.commands.score", "generate": "cluster.commands.generate"})


def _clear_caches() -> None:
    registered_tasks.cache_clear()
    load_task.cache_clear()


def _install(root: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """An installed package (its metadata on the path) whose `agrpo.tasks` entry points are `entry_points`."""
    dist = root / "toy_tasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-tasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[agrpo.tasks]\n{entry_points}\n")
    monkeypatch.syspath_prepend(str(root))
    _clear_caches()


@pytest.fixture
def toy_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A package that registers the toy task as `toy`, exactly as a third party would."""
    _install(tmp_path, monkeypatch, f"toy = {TOY}")
    yield
    monkeypatch.undo()
    _clear_caches()


def test_a_name_registered_twice_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, monkeypatch, f"countdown = {TOY}")
    try:
        with pytest.raises(ConfigError, match="task 'countdown': registered twice, by .* and .*"):
            registered_tasks()
    finally:
        monkeypatch.undo()
        _clear_caches()


def installed_built_ins() -> dict[str, str]:
    """The built-in tasks as installed: an install of agrpo older than the `generic` entry point lacks it until
    agrpo is reinstalled (`pip install -e .`), and then reaches it by module path only."""
    registered = registered_tasks()
    assert registered in (BUILT_IN, {k: v for k, v in BUILT_IN.items() if k != "generic"})
    return registered


def test_the_built_in_tasks_are_entry_points_and_define_the_interface() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["agrpo.tasks"] == BUILT_IN
    registered = installed_built_ins()
    for name, module in BUILT_IN.items():
        task = load_task(name if name in registered else module)
        assert (task.module, task.reward_target) == (module, f"{module}:reward")
        assert set(task.prompts) == {"d1", "agrpo", "plain"}
    tasks = [load_task(module) for module in BUILT_IN.values()]
    generated = {t.module for t in tasks if t.generate is not None}
    assert generated == {t.module for t in tasks if t.perturb is not None}
    assert generated == {BUILT_IN[name] for name in ("arithmetic", "countdown", "sudoku")}


def test_the_schema_takes_a_registered_name_or_a_module_path() -> None:
    assert load_config(None, ["data.task=sudoku"]).data.task == "sudoku"
    assert load_config(None, [f"data.task={TOY}"]).data.task == TOY
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.task=chess"])
    names = ", ".join(installed_built_ins())  # arithmetic, countdown, generic, gsm8k, math, sudoku
    assert str(err.value) == (
        f"overrides: data.task = 'chess': unknown; registered tasks are {names} (or a module path package.module)"
    )


def test_a_module_path_task_works_in_every_part(tmp_path: Path) -> None:
    items = generate(TOY, 5, seed=1, length=4)
    assert all(len(item["digits"]) == 4 for item in items)
    assert generate(TOY, 5, seed=1, length=4) == items
    item = items[0]
    assert render_prompt(TOY, item, "plain") == f"{item['digits']}>"
    path = tmp_path / "toy.jsonl"
    path.write_text(json.dumps({"digits": " 407 ", "extra": 1}) + "\n" + json.dumps({"digits": "4x"}) + "\n")
    assert load_items(path, TOY) == [{"digits": "407", "extra": 1}]
    train = load_task_items(DataConfig(task=TOY, num_train=20, num_eval=5), "train", 0)
    assert len(train) == 20
    combined = build_reward_fn(RewardsConfig(), TOY)
    assert combined.labels == [TOY]
    assert combined("<answer>704</answer>", {"digits": "407"}).score == toy_task.CORRECT
    assert combined("<answer>407</answer>", {"digits": "407"}).score == toy_task.ATTEMPT
    assert available_rewards(TOY)[TOY].target == f"{TOY}:reward"
    by_path = build_reward_fn(RewardsConfig(plugins=[{"name": f"{TOY}:reward"}]), TOY)
    assert by_path.plugins[0].kwargs == {"scheme": "d1"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: render_prompt(TOY, {"digits": "1"}, "d1"),
            "task tests.toy_task: template 'd1' not defined; it has plain",
        ),
        (lambda: wrong_completion(TOY, {"digits": "1"}, random.Random(0)), "no wrong-answer perturbation"),
        (lambda: generate(TOY, 1, 0, size=3), "tests.toy_task generator: unknown option 'size'; options are length"),
        (lambda: generate(TOY, 1, 0, length="three"), "tests.toy_task generator option length = 'three': must be"),
        (
            lambda: build_reward_fn(RewardsConfig(plugins=[{"name": f"{TOY}:reward"}]), "countdown"),
            "not a reward plugin",
        ),
        (lambda: build_reward_fn(RewardsConfig(), "tests.plugins_for_tests"), "not a task, it lacks FIELDS"),
        (lambda: load_task("chess"), "task 'chess': unknown; registered tasks are arithmetic, countdown"),
        (lambda: load_task("no_such.module"), "task 'no_such.module': cannot import no_such.module (ModuleNotFound"),
        (
            lambda: load_task("tests.plugins_for_tests"),
            "task 'tests.plugins_for_tests' (module tests.plugins_for_tests): not a task, it lacks FIELDS, check_row, "
            "PROMPTS, grade (the interface is in rewards/tasks/base.py)",
        ),
    ],
)
def test_what_is_not_a_task_or_not_in_one_is_a_one_line_error(call, message: str) -> None:
    with pytest.raises((ConfigError, DataError)) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def _fake_task(monkeypatch: pytest.MonkeyPatch, name: str, **members: object) -> str:
    module = types.ModuleType(name)
    for member in ("FIELDS", "check_row", "PROMPTS", "reward", "grade", "OPTIONS", "generate", "item_key"):
        setattr(module, member, getattr(toy_task, member))
    for member, value in members.items():
        setattr(module, member, value)
    monkeypatch.setitem(sys.modules, name, module)
    return name


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"FIELDS": ["digits"]}, "FIELDS = ['digits']: must be a tuple of field names"),
        ({"PROMPTS": {"chat": toy_task.PROMPTS["plain"]}}, "PROMPTS must map some of d1, agrpo, plain"),
        ({"grade": 1.0}, "grade is not a function"),
        ({"item_key": None}, "has generate but no item_key(item)"),
        ({"OPTIONS": {"length": 3}}, "OPTIONS must map option names to rewards.tasks.base.Option"),
        ({"OPTIONS": {"width": Option(3, "w")}}, "generate(rng, **OPTIONS) does not fit its signature"),
    ],
)
def test_a_module_that_breaks_the_interface_is_refused_on_load(
    monkeypatch: pytest.MonkeyPatch, members: dict, message: str
) -> None:
    name = _fake_task(monkeypatch, f"fake_task_{abs(hash(message))}.task", **members)
    with pytest.raises(ConfigError) as err:
        load_task(name)
    assert message in str(err.value)


def test_a_task_reward_must_match_the_task_also_by_module_path() -> None:
    with pytest.raises(ConfigError, match="the built-in countdown reward needs countdown items"):
        load_config(None, [f"data.task={TOY}", "rewards.plugins=[{name: countdown}]"])
    same = load_config(None, ["data.task=rewards.tasks.countdown", "rewards.plugins=[{name: countdown}]"])
    assert same.data.task == "rewards.tasks.countdown"


def test_a_package_that_registers_a_task_adds_it_to_the_schema_the_rewards_and_the_cli(
    toy_registered: None, commands: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert registered_tasks()["toy"] == TOY
    assert load_config(None, ["data.task=toy"]).data.task == "toy"
    assert available_rewards()["toy"].target == f"{TOY}:reward"
    out = tmp_path / "toy.jsonl"
    assert cli.main(["generate", "--task", "toy", "--n", "3", "--length", "5", "--output", str(out)]) == 0
    assert [len(json.loads(line)["digits"]) for line in out.read_text().splitlines()] == [5, 5, 5]
    assert cli.main(["score", "--task", "toy", "--input", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy"] == 1.0


def test_generate_takes_any_option_by_name_and_keeps_its_flags(
    commands: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "t.jsonl"
    assert cli.main(["generate", "--task", TOY, "--n", "2", "--option", "length=6", "--output", str(out)]) == 0
    assert {len(json.loads(line)["digits"]) for line in out.read_text().splitlines()} == {6}
    flags = ["--num-numbers", "4", "--max-number", "9", "--max-target", "50"]
    assert cli.main(["generate", "--task", "countdown", "--n", "5", *flags, "--output", str(out)]) == 0
    assert all(len(json.loads(line)["numbers"]) == 4 for line in out.read_text().splitlines())
    forms = ["--forms", "a+b", "a*b-c", "--min-number", "2"]
    assert cli.main(["generate", "--task", "arithmetic", "--n", "5", *forms, "--output", str(out)]) == 0
    assert cli.main(["generate", "--task", "arithmetic", "--n", "1", "--max-number", "x", "--output", str(out)]) == 2
    assert "arithmetic generator option max_number = 'x': must be an integer" in capsys.readouterr().err
