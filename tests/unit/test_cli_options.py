"""The form every command shares: --config, overrides and alias flags; and the model paths commands accept."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from cluster.commands.checkpoints import resolve_model
from cluster.commands.options import LOADING_ALIASES, Alias, add_config_options, resolve_config
from common.config import Config, load_config
from common.errors import ConfigError, UserError

ALIASES = (
    Alias("--batch-size", "evaluation.batch_size"),
    Alias("--forms", "data.generator.forms", several=True),
    Alias("--no-early-exit", "sampler.early_exit", switch=False),
    *LOADING_ALIASES,
)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_options(parser, ALIASES, "config", "seed=1")
    return parser.parse_args(argv)


def test_an_alias_is_the_override_it_names(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("evaluation:\n  batch_size: 16\nseed: 3\n")
    by_flag, _ = resolve_config(
        _parse(["--config", str(recipe), "--batch-size", "8", "--forms", "a+b", "a*b"]), ALIASES
    )
    by_key, _ = resolve_config(
        _parse(["--config", str(recipe), "evaluation.batch_size=8", "data.generator.forms=[a+b, a*b]"]), ALIASES
    )
    assert by_flag == by_key
    assert by_flag.evaluation.batch_size == 8 and by_flag.data.generator == {"forms": ["a+b", "a*b"]}
    assert by_flag.seed == 3


def test_an_alias_not_given_leaves_the_config_value(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("evaluation:\n  batch_size: 16\n")
    config, source = resolve_config(_parse(["--config", str(recipe)]), ALIASES)
    assert config.evaluation.batch_size == 16 and source == str(recipe)
    config, source = resolve_config(_parse([]), ALIASES)
    assert config.evaluation.batch_size == Config().evaluation.batch_size == 256 and source == "built-in defaults"


def test_saved_config_is_the_default_and_config_wins(tmp_path: Path) -> None:
    saved = {"seed": 7, "evaluation": {"batch_size": 4}}
    config, source = resolve_config(_parse([]), ALIASES, saved, "run/config.yaml")
    assert (config.seed, config.evaluation.batch_size, source) == (7, 4, "run/config.yaml")
    assert saved == {"seed": 7, "evaluation": {"batch_size": 4}}, "the saved dict is not modified"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 1\n")
    config, source = resolve_config(_parse(["--config", str(recipe)]), ALIASES, saved, "run/config.yaml")
    assert (config.seed, config.evaluation.batch_size, source) == (1, 256, str(recipe))


def test_switches_and_training_rules() -> None:
    config, _ = resolve_config(_parse(["--no-early-exit", "--trust-remote-code", "sampler.temperature=0"]), ALIASES)
    assert config.sampler.early_exit is False and config.model.trust_remote_code is True
    with pytest.raises(ConfigError, match="training rollouts need temperature > 0"):
        resolve_config(_parse(["sampler.temperature=0"]), ALIASES, training=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "8", "evaluation.batch_size=4"], "--batch-size and evaluation.batch_size=4: both set"),
        (["--batch-size", "0"], "overrides: evaluation.batch_size = 0: Input should be greater than 0"),
        (["--batch-size", "x: y"], "evaluation.batch_size = {'x': 'y'}: Input should be a valid integer"),
    ],
)
def test_alias_errors_name_the_field(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(_parse(argv), ALIASES)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_alias_help_names_the_field_and_its_built_in_default() -> None:
    text = Alias("--batch-size", "evaluation.batch_size").describe()
    assert text.startswith("Sets evaluation.batch_size: Sequences per evaluation forward pass.")
    assert text.endswith("(default: the config's; built in: 256)")
    assert LOADING_ALIASES[0].describe().startswith("Sets model.trust_remote_code=true: ")


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _step(run: Path, step: int, config: dict | None = None, manifest: bool = True) -> Path:
    step_dir = run / "checkpoints" / f"step-{step:08d}"
    _model_dir(step_dir / "model")
    if config is not None:
        (step_dir / "driver.json").write_text(json.dumps({"step": step, "config": yaml.safe_dump(config)}))
    if manifest:
        (step_dir / "manifest.json").write_text("{}")
    return step_dir


def test_model_forms(tmp_path: Path) -> None:
    assert resolve_model("--m", "tiny").path == "tiny"
    plain = _model_dir(tmp_path / "base-sudoku")
    source = resolve_model("--m", str(plain))
    assert (source.path, source.label, source.config) == (str(plain), "base-sudoku", None)
    (plain / "sft_config.yaml").write_text("seed: 5\n")
    source = resolve_model("--m", str(plain))
    assert source.config == {"seed": 5} and source.config_source == str(plain / "sft_config.yaml")

    run = tmp_path / "runs" / "gsm"
    (run).mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 9\n")
    _step(run, 50, {"seed": 1})
    latest = _step(run, 100, {"seed": 2})
    _step(run, 150, manifest=False)  # half-written
    source = resolve_model("--m", str(run))
    assert (source.path, source.label) == (str(latest / "model"), "gsm step 100")
    assert source.config == {"seed": 2} and source.config_source == str(latest / "driver.json")
    for given in (latest, latest / "model"):
        assert resolve_model("--m", str(given)) == source
    without_driver = _step(tmp_path / "runs" / "old", 3)
    assert resolve_model("--m", str(without_driver)).config is None


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "directory not found (give a model, checkpoint or run directory, or `tiny`)"),
        ("empty_run", "a run directory without a complete checkpoint"),
        ("other", "not a model directory (no config.json), a checkpoint (step-NNNNNNNN/ with model/) or a run"),
    ],
)
def test_model_path_errors(tmp_path: Path, layout: str, message: str) -> None:
    given = tmp_path / "x"
    if layout == "empty_run":
        (given / "checkpoints").mkdir(parents=True)
    elif layout == "other":
        given.mkdir()
    with pytest.raises(UserError) as info:
        resolve_model("--checkpoint", str(given))
    assert str(info.value).startswith(f"--checkpoint {given}: {message}")


def test_run_config_is_used_when_the_step_has_none(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(load_config(None, ["seed=4"]).model_dump(mode="json")))
    _step(run, 1)
    source = resolve_model("--m", str(run))
    assert source.config is not None and source.config["seed"] == 4 and source.config_source == str(run / "config.yaml")


def test_train_help_says_where_the_keys_are_documented(capsys: pytest.CaptureFixture[str]) -> None:
    from cluster.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "agrpo config show --describe" in text and "docs/config-mapping.md" in text
    root = Path(__file__).resolve().parents[2]
    for doc in ("config-mapping.md", "cli.md", "training.md"):
        assert (root / "docs" / doc).is_file(), doc
