"""The files of a checkpoint directory: config.json, the safetensors shard index, pickle weights (only when allowed).

Every problem is a one-line `CheckpointError` naming the path and what is wrong; loading.py builds the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from common.errors import CheckpointError

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth")


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"model.path {path}: config.json is missing")
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"model.path {path}: config.json is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"model.path {path}: config.json must hold a JSON object")
    return raw


def check_shard_index(path: Path) -> None:
    """A sharded checkpoint's index must be a JSON object with a weight_map (transformers' own error for a
    damaged one names neither the file nor the problem)."""
    index = path / SAFETENSORS_FILES[1]
    if not index.is_file():
        return
    try:
        raw = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"model.path {path}: {index.name} is not valid JSON: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("weight_map"), dict):
        raise CheckpointError(f"model.path {path}: {index.name} has no weight_map object")


def pickle_files(path: Path, allow_pickle: bool) -> list[Path]:
    """Empty when safetensors weights are there; else the pickle weight files, if the user allowed them."""
    if any((path / name).is_file() for name in SAFETENSORS_FILES):
        return []
    pickles = sorted({f for pattern in PICKLE_PATTERNS for f in path.glob(pattern) if f.is_file()})
    if not pickles:
        raise CheckpointError(
            f"model.path {path}: no weights (expected model.safetensors or model.safetensors.index.json)"
        )
    if not allow_pickle:
        raise CheckpointError(
            f"model.path {path}: only pickle weights ({', '.join(f.name for f in pickles)}); unpickling can "
            "run arbitrary code, so they are refused: convert them to safetensors, or set "
            "model.allow_pickle=true if you trust this directory"
        )
    return pickles


def read_pickles(path: Path, pickles: list[Path]) -> dict[str, torch.Tensor]:
    state_dict: dict[str, torch.Tensor] = {}
    for file in pickles:
        try:
            # weights_only keeps the unpickler to tensors and containers even when pickle is allowed.
            part = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several unrelated types for an unreadable pickle
            # torch's message goes on to suggest weights_only=False, which would run the file's code: cut it.
            reason = first_line(err).split(" In PyTorch 2.6", 1)[0]
            raise CheckpointError(
                f"model.path {path}: cannot read {file.name}: {reason} (not a state dict of tensors, or damaged)"
            ) from err
        if not isinstance(part, dict):
            raise CheckpointError(f"model.path {path}: {file.name} does not hold a state dict")
        state_dict.update(part)
    return state_dict


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
