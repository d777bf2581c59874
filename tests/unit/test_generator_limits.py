"""Generators with options or sizes that used to run for minutes with no output: refused, or visibly working."""

from __future__ import annotations

import pytest

import rewards.generators as generators
from common.config_sections import MAX_ITEMS
from common.errors import ConfigError
from rewards.generators import generate
from rewards.tasks import load_task


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("task", "options", "expected"),
    [
        ("countdown", {"num_numbers": 100000}, "countdown generator option num_numbers = 100000: must be in 2..16"),
        ("countdown", {"num_numbers": [3, 100000]}, "num_numbers = 100000: must be in 2..16"),
        ("countdown", {"num_numbers": list(range(2, 40))}, "num_numbers = .*: takes at most 16 values"),
        ("countdown", {"max_number": 10**10}, "max_number = 10000000000: must be in 0..999999999"),
        ("countdown", {"min_target": -5}, "min_target = -5: must be in 0..999999999999"),
        ("arithmetic", {"max_number": "99999999999"}, "max_number = 99999999999: must be in 0..999999999"),
    ],
)
def test_options_out_of_their_range_are_refused(task: str, options: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        generate(task, 10, 0, **options)


def test_every_integer_option_of_the_built_in_generators_has_a_range() -> None:
    for task in ("countdown", "arithmetic"):
        for name, option in load_task(task).options.items():
            if option.type is int:
                assert option.low is not None and option.high is not None, f"{task}.{name}"


def test_too_many_items_are_refused_before_any_is_made() -> None:
    with pytest.raises(ConfigError, match=f"{MAX_ITEMS + 1} items asked for, at most {MAX_ITEMS}"):
        generate("countdown", MAX_ITEMS + 1, 0)


def test_a_long_generation_reports_its_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(generators, "PROGRESS_EVERY_S", 0.0)
    assert len(generate("arithmetic", 30, 0)) == 30
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("arithmetic generator: ") and " of 30 items after " in line for line in lines)
