"""Checkpoints: pickle-free round trip of nested states, atomic publication, refusal of corrupt ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import (
    flatten_state,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    unflatten_state,
    write_checkpoint,
)
from common.errors import CheckpointError


def optimizer_state() -> dict:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


def test_nested_states_round_trip_exactly() -> None:
    state = {
        **optimizer_state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state()[1].tolist(),
        },
        "cursor": 17,
        "tags": ["a", None, 1.5],
    }
    skeleton, tensors = flatten_state(state)
    json.dumps(skeleton)
    restored = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert restored["cursor"] == 17 and restored["tags"] == ["a", None, 1.5]
    assert torch.equal(restored["rng"]["torch"], state["rng"]["torch"])
    assert restored["rng"]["python"] == state["rng"]["python"]
    exp_avg = state["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(restored["optimizer"]["state"][0]["exp_avg"], exp_avg)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.load_state_dict(restored["optimizer"])


def test_unstorable_object_is_named() -> None:
    with pytest.raises(CheckpointError, match="cannot store a object at s.bad without pickle"):
        flatten_state({"bad": object()})


def test_write_read_latest_and_keep_last(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        write_checkpoint(
            tmp_path,
            step,
            {"counters": {"step": step}, "w": {"x": torch.full((3,), float(step))}},
            keep_last=2,
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000006"]
    latest = latest_checkpoint(tmp_path)
    parts = read_checkpoint(latest, ["counters", "w"])
    assert parts["counters"] == {"step": 6}
    assert torch.equal(parts["w"]["x"], torch.full((3,), 6.0))


def test_writer_parts_and_half_written_directories(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 1, {"model": lambda d: (d / "weights.bin").write_bytes(b"abc")})
    (tmp_path / ".tmp-step-00000002-crashed").mkdir()
    (tmp_path / "step-00000003").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    read_checkpoint(tmp_path / "step-00000001", [])


def test_failed_write_leaves_no_checkpoint(tmp_path: Path) -> None:
    def boom(directory: Path) -> None:
        (directory / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path, 5, {"model": boom})
    assert latest_checkpoint(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_corrupt_or_incomplete_checkpoints_are_refused(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, 3, {"w": {"x": torch.zeros(4)}})
    data = bytearray((path / "w.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "w.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"w.safetensors is corrupt \(checksum mismatch\)"):
        read_checkpoint(path, ["w"])
    (path / "w.json").unlink()
    with pytest.raises(CheckpointError, match="missing w.json"):
        read_checkpoint(path, ["w"])
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        read_checkpoint(path, ["w"])


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    """A reused run directory holds an older run's higher step numbers; the new checkpoint must survive."""
    for step in (40, 50):
        write_checkpoint(tmp_path, step, {"c": {"step": step}}, keep_last=2)
    written = write_checkpoint(tmp_path, 10, {"c": {"step": 10}}, keep_last=2)
    assert written.is_dir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010", "step-00000050"]
    write_checkpoint(tmp_path, 20, {"c": {"step": 20}}, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000020"]


def test_directories_left_by_a_killed_writer_are_removed_by_the_next_write(tmp_path: Path) -> None:
    (tmp_path / ".tmp-step-00000002-killed").mkdir()
    (tmp_path / ".tmp-step-00000002-killed" / "model.safetensors").write_bytes(b"half")
    write_checkpoint(tmp_path, 3, {"c": {"step": 3}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003"]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ('{"step": 3, "files": {}}', "lists no files"),
        ("[1, 2]", "lists no files"),
        ('{"step": 3}', "lists no files"),
        ("not json", "not valid JSON"),
    ],
)
def test_vacuous_or_malformed_manifests_are_refused(tmp_path: Path, manifest: str, message: str) -> None:
    path = write_checkpoint(tmp_path, 3, {"w": {"x": torch.zeros(2)}})
    (path / "manifest.json").write_text(manifest)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path, ["w"])


def test_a_part_missing_from_the_manifest_is_refused(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, 3, {"w": {"x": torch.zeros(2)}})
    with pytest.raises(CheckpointError, match="does not list driver.json"):
        read_checkpoint(path, ["driver"])
