"""One permission policy for what agrpo writes: files 0666 and directories 0777, less the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from common.checkpoint import current_umask, write_checkpoint, write_manifest
from common.config import ModelConfig, TinyModelConfig
from common.model import load_policy, save_policy


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def assert_policy(root: Path, mask: int) -> None:
    found = modes(root)
    for name, mode in found.items():
        expected = (0o777 if (root / name).is_dir() else 0o666) & ~mask
        assert mode == expected, f"{name}: {oct(mode)} != {oct(expected)}"


def test_the_umask_is_read_without_changing_it(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_a_checkpoint_follows_the_umask(tmp_path: Path, umask: int) -> None:
    def model_writer(directory: Path) -> None:  # as a learner writes model/: safetensors (0600), then a manifest
        save_file({"w": torch.zeros(3)}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text("{}")
        write_manifest(directory)

    final = write_checkpoint(
        tmp_path / "checkpoints",
        3,
        {"model": model_writer, "driver": {"step": 3, "weights": torch.ones(2)}},
    )
    assert (final / "driver.safetensors").is_file()
    assert_policy(final, umask)


def test_a_saved_model_directory_follows_the_umask(tmp_path: Path, umask: int) -> None:
    shape = TinyModelConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden_size=32)
    save_policy(load_policy(ModelConfig(path="tiny", tiny=shape)), tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert_policy(tmp_path / "model", umask)
