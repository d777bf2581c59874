"""The config schema: defaults, YAML + overrides, and one-line errors that name field, value and rule."""

from pathlib import Path

import pytest

from cluster.cli import main
from common.config import Config, dump_config, load_config
from common.errors import ConfigError


def test_defaults_validate_and_every_field_is_described() -> None:
    config = load_config()
    assert config.sampler.gen_length % config.sampler.block_length == 0

    def walk(model: type) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Config.__mro__[1]):
                walk(annotation)

    walk(Config)


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\nsampler:\n  gen_length: 64\n  block_length: 16\n  steps: 32\n")
    config = load_config(path, ["sampler.temperature=0.6", "algorithm.k=all", "learner.lr=1e-5"])
    assert config.seed == 3
    assert config.sampler.gen_length == 64
    assert config.sampler.temperature == 0.6
    assert config.algorithm.k == "all"
    assert config.learner.lr == 1e-5


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["sampler.top_k=5", "learner.lora.enabled=true"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["sampler.block_length=7"], "sampler.block_length = 7: must divide gen_length = 32"),
        (
            ["sampler.block_length=8", "sampler.steps=6"],
            "sampler.steps = 6: must be divisible by the number of blocks",
        ),
        (["algorithm.k=40"], "algorithm.k = 40: must be at most sampler.steps = 16"),
        (["sampler.gen_length=abc"], "sampler.gen_length = 'abc': Input should be a valid integer"),
        (["sampler.colour=red"], "sampler.colour = 'red': unknown key"),
        (["sampler.stepz=4"], "sampler.stepz = 4: unknown key (did you mean steps?)"),
        (["learner.lr_max=0.1"], "learner.lr_max = 0.1: unknown key (did you mean lr?)"),
        (
            ["rewards.plugins=[{name: sudoku, wieght: 1}]"],
            "rewards.plugins.0.wieght = 1: unknown key (did you mean weight?)",
        ),
        (["learner.lr=-1"], "learner.lr = -1: Input should be greater than 0"),
        (["algorithm.k=0"], "algorithm.k = 0: must be an integer of at least 1, or `all`"),
        (["algorithm.k=abc"], "algorithm.k = 'abc': must be an integer of at least 1, or `all`"),
        (["algorithm.k=1.5"], "algorithm.k = 1.5: must be an integer of at least 1, or `all`"),
        (["sampler.remasking=best"], "sampler.remasking = 'best': Input should be"),
        (["learner.world_size=3"], "learner.groups_per_step = 16: must be divisible by world_size"),
        (["sampler.temperature=0"], "sampler.temperature = 0: training rollouts need temperature > 0"),
        (["nokey"], "expected key.sub=value"),
        (["sampler.top_p=0.9"], "sampler.top_p = 0.9: training with top-p needs sampler.top_k > 0 too"),
        (
            ["model.tiny.attention=block_causal", "model.tiny.block_size=4"],
            "sampler.block_length = 32: must equal model.tiny.block_size = 4 for a block_causal model",
        ),
        (["model.tiny.attention=causal"], "model.tiny.attention = 'causal': Input should be 'full' or 'block_causal'"),
        (["sampler.kv_cache=dual"], "sampler.kv_cache = 'dual': Input should be 'auto' or 'off'"),
    ],
)
def test_bad_values_name_field_value_and_rule(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(.* at line \d+, column \d+\)$") as info:
        load_config(bad)
    assert "\n" not in str(info.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_cli_show_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "sampler.steps=8"]) == 0
    assert "steps: 8" in capsys.readouterr().out
    good = tmp_path / "good.yaml"
    good.write_text("learner:\n  steps: 3\n")
    assert main(["config", "validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  block_length: 5\n")
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "sampler.block_length = 5" in err
    assert "Traceback" not in err


def test_overrides_index_lists(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rewards:\n  plugins:\n    - name: countdown\n    - name: countdown\n      weight: 2.0\n")
    config = load_config(recipe, ["rewards.plugins.1.weight=0.5", "rewards.plugins.0.kwargs.x=1"])
    assert [p.weight for p in config.rewards.plugins] == [1.0, 0.5]
    assert config.rewards.plugins[0].kwargs == {"x": 1}
    # A list the file does not spell out starts as the schema's default, so an index means the same item.
    config = load_config(None, ["learner.betas.1=0.95", "learner.lora.target_modules.0=wq"])
    assert config.learner.betas == (0.9, 0.95)
    assert config.learner.lora.target_modules[:2] == ["wq", "k_proj"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "rewards.plugins.0.weight=1",
            "rewards.plugins is none, so it has no item 0; set the whole list, e.g. rewards.plugins=[...]",
        ),
        ("learner.betas.2=0.5", "learner.betas has 2 item(s), so no item 2 (set the whole list to add items)"),
        ("learner.betas.first=0.5", "learner.betas is a list; index it with 0..1, not 'first'"),
        ("seed.0=1", "seed is a value, not a section or a list"),
    ],
)
def test_list_index_errors_are_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == f"override {override!r}: {expected}"
    assert "\n" not in str(info.value)


def test_describe_writes_every_description_and_loads_back(tmp_path: Path) -> None:
    from common.config import DEFAULT_RECIPE
    from common.config_describe import describe_config

    config = load_config(DEFAULT_RECIPE)
    text = describe_config(config)
    comments = " ".join(line.strip().removeprefix("#").strip() for line in text.splitlines() if "#" in line)

    def walk(model: type) -> None:
        for field in model.model_fields.values():
            first = " ".join(field.description.split())[:40]
            assert first in " ".join(comments.split()), first
            inner = field.annotation
            if isinstance(inner, type) and issubclass(inner, Config.__mro__[1]):
                walk(inner)

    walk(Config)
    path = tmp_path / "described.yaml"
    path.write_text(text)
    assert load_config(path) == config
    assert max(len(line) for line in text.splitlines()) <= 100


def test_cli_show_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--describe", "learner.lr=1e-5"]) == 0
    out = capsys.readouterr().out
    assert "  # Peak AdamW learning rate (at most 1).\n  lr: 1.0e-05\n" in out
    assert "# - weight: Weight in the combined reward." in out


def test_training_rules_apply_to_training_only() -> None:
    with pytest.raises(ConfigError, match="training rollouts need temperature > 0"):
        load_config(None, ["sampler.temperature=0"])
    assert load_config(None, ["sampler.temperature=0", "algorithm.k=40"], training=False).sampler.temperature == 0
    with pytest.raises(ConfigError, match="sampler.block_length = 7"):
        load_config(None, ["sampler.block_length=7"], training=False)
