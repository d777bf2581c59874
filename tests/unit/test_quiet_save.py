"""A learner checkpoint writes no transformers progress bar into the driver's log."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers.utils import logging as hf_logging

from common.config import ModelConfig
from common.model.loading import load_policy, no_transformers_progress


def test_save_pretrained_draws_no_bar_and_the_switch_is_restored(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model = load_policy(ModelConfig(path="tiny")).model
    model.save_pretrained(tmp_path / "loud", safe_serialization=True)
    if "Writing model shards" not in capfd.readouterr().err:
        pytest.skip("this transformers version draws no bar in save_pretrained (4.x); nothing to silence")
    assert hf_logging.is_progress_bar_enabled()
    with no_transformers_progress():
        model.save_pretrained(tmp_path / "quiet", safe_serialization=True)
    assert "Writing model shards" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled(), "the switch is put back for the rest of the process"
    assert (tmp_path / "quiet" / "config.json").is_file()
