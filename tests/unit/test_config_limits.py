"""Values and files that used to pass validation, crash it with a traceback or hang it: each is one line now."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from cluster.cli import main
from common.config import Config, build_config, load_config
from common.config_file import MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES
from common.config_sections import MAX_ITEMS, Section
from common.errors import ConfigError, brief


def float_fields(model: type[Section] = Config, prefix: str = "") -> list[str]:
    """Dotted paths of every float field of the schema (in sections, lists of sections and tuples)."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, Section):
            found += float_fields(annotation, f"{prefix}{name}.")
        elif annotation is float or float in args:
            found.append(f"{prefix}{name}")
    return found


def test_the_schema_has_float_fields_to_check() -> None:
    fields = float_fields()
    for expected in (
        "learner.lr",
        "sampler.temperature",
        "algorithm.clip_eps",
        "learner.grad_clip",
        "rewards.timeout_s",
    ):
        assert expected in fields
    assert "learner.betas" in fields


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_no_float_field_takes_nan_or_infinity(value: str) -> None:
    for path in float_fields():
        override = f"{path}=[{value}, 0.5]" if path == "learner.betas" else f"{path}={value}"
        with pytest.raises(ConfigError, match="should be a finite number") as info:
            load_config(None, [override])
        assert f"{path}" in str(info.value), path


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=-1"], "seed = -1: Input should be greater than or equal to 0"),
        (["seed=9223372036854775808"], "seed = 9223372036854775808: Input should be less than or equal to"),
        (["learner.betas=[2, -1]"], "learner.betas = [2.0, -1.0]: each must be in [0, 1)"),
        (["learner.betas=[0.9, 1.0]"], "learner.betas = [0.9, 1.0]: each must be in [0, 1)"),
        (["learner.lr=1e30"], "learner.lr = 1e+30: must be at most 1"),
        (["sft.lr=2"], "sft.lr = 2: must be at most 1"),
        (
            ["sampler.gen_length=256", "sampler.block_length=256"],
            "sampler.gen_length = 256: must be below model.tiny.max_sequence_length = 256",
        ),
        (
            ["data.num_eval=100", "evaluation.num_items=101"],
            "evaluation.num_items = 101: more than the 100 generated held-out items",
        ),
        ([f"data.num_train={MAX_ITEMS + 1}"], f"data.num_train = {MAX_ITEMS + 1}: Input should be less than or equal"),
    ],
)
def test_values_that_used_to_pass_are_refused(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_limits_leave_ordinary_values_alone() -> None:
    config = load_config(
        None,
        ["seed=12345", "learner.betas=[0, 0.999]", "learner.lr=1", "data.num_eval=100", "evaluation.num_items=100"],
    )
    assert config.learner.betas == (0.0, 0.999)
    assert load_config().evaluation.num_items is None  # the whole held-out split
    assert load_config(None, ["model.path=/models/x", "sampler.gen_length=256", "sampler.block_length=256"])


def alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes of YAML that expand to 10**levels strings ("billion laughs")."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    lines.append(f"seed: *l{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("seed: 1\n".encode("utf-16"), r"not UTF-8 text \(it starts with a UTF-16 byte-order mark\)"),
        (bytes(range(256)) * 4, r"not UTF-8 text, byte 0x80 at offset 128"),
        (b"seed: 1\x00\n", r"not valid YAML \(unacceptable character"),
        (("seed: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply to parse"),
        (("a: " + "[" * 40 + "]" * 40 + "\n").encode(), f"nested more than {MAX_CONFIG_DEPTH} levels deep"),
        (alias_bomb().encode(), f"more than {MAX_CONFIG_VALUES} values"),
        (("seed: " + "1" * 5000 + "\n").encode(), r"not valid YAML \(an integer of more than \d+ digits\)"),
        (b"seed: 2024-13-01\n", r"not valid YAML \(month must be in 1..12\)"),
    ],
)
def test_hostile_config_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    assert main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.timeout(60)
def test_a_huge_value_is_cut_short_in_error_messages() -> None:
    """A value built in code (no YAML alias check on the way) still gets a bounded message."""
    bomb: list = ["x"] * 10
    for _ in range(8):
        bomb = [bomb] * 10  # 10**9 strings, shared
    text = brief(bomb)
    assert len(text) <= 160
    assert brief("abc") == "'abc'" and brief(1e-05) == "1e-05"
    with pytest.raises(ConfigError, match="more than"):
        build_config({"seed": bomb})
    with pytest.raises(ConfigError, match=r"algorithm.k = \[\[.*\.\.\..*must be an integer") as info:
        build_config({"algorithm": {"k": [[1] * 50] * 50}})
    assert len(str(info.value)) < 400
