"""What `open_run` checks about the model directory before Ray starts, in milliseconds.

The learner and the rollout workers load the model only once the cluster is up; a wrong `model.path` would
then surface after a minute, as a Ray traceback from inside an actor. These checks read no weights: the
directory, its config.json, that it holds weights at all, and the longest sequence the model takes. The
loader (common/model/loading.py) still checks everything else when it loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.config import Config
from common.errors import CheckpointError, ConfigError
from common.model.weight_files import PICKLE_PATTERNS, SAFETENSORS_FILES

LENGTH_KEYS = ("max_sequence_length", "max_position_embeddings", "n_positions")
"""Where a config.json states the longest sequence: LLaDA's key, then the usual transformers ones."""


def _config_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"model.path {path}: config.json cannot be read ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"model.path {path}: config.json must hold a JSON object")
    return raw


def model_length_limit(config: Config) -> tuple[int, str] | None:
    """The longest prompt + completion the configured model takes, and where that number comes from.

    A missing `model.path` is refused here unless `model.build_if_missing: sft` will build it (with the
    `model.tiny` shape); None when the model's config.json names no limit.
    """
    model = config.model
    if model.path == "tiny":
        return model.tiny.max_sequence_length, "model.tiny.max_sequence_length"
    path = Path(model.path)
    if not (path / "config.json").is_file():
        if model.build_if_missing == "sft":
            return (
                model.tiny.max_sequence_length,
                "model.tiny.max_sequence_length (the shape of the SFT base built there)",
            )
        if not path.is_dir():
            raise CheckpointError(
                f"model.path {path}: directory not found (model.build_if_missing = never); point it at a model "
                "directory, or set model.build_if_missing=sft to build a base policy there"
            )
        raise CheckpointError(f"model.path {path}: config.json is missing (not a model directory)")
    raw = _config_json(path)
    has_weights = any((path / name).is_file() for name in SAFETENSORS_FILES) or any(
        f.is_file() for pattern in PICKLE_PATTERNS for f in path.glob(pattern)
    )
    if not has_weights:
        raise CheckpointError(
            f"model.path {path}: no weights (expected model.safetensors or model.safetensors.index.json)"
        )
    for key in LENGTH_KEYS:
        if isinstance(raw.get(key), int) and not isinstance(raw[key], bool) and raw[key] > 0:
            return raw[key], f"{key} in {path / 'config.json'}"
    return None


def check_model(config: Config) -> None:
    """`model.path` can be loaded (or built), and a completion of `sampler.gen_length` fits the model."""
    found = model_length_limit(config)
    if found is None:
        return
    limit, source = found
    if config.sampler.gen_length >= limit:
        raise ConfigError(
            f"sampler.gen_length = {config.sampler.gen_length}: must be below the model's {limit} positions "
            f"({source}), which hold the prompt and the completion"
        )
