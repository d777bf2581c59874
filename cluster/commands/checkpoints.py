"""Which model directory a command-line path means: a model directory, a checkpoint step, or a whole run.

A training run writes `run_dir/checkpoints/step-NNNNNNNN/model/` (docs/training.md), so a user holding a run
directory or a step directory should not have to spell the model folder inside it. Each form also brings the
config it was trained with, which `agrpo eval` uses so that it evaluates the run's own held-out split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError

BUILT_IN = "tiny"


@dataclass(frozen=True)
class ModelSource:
    """A model to load, the name plots and tables give it, and the config saved with it (if any)."""

    path: str
    label: str
    config: dict[str, Any] | None = None
    config_source: str | None = None


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _step_config(step: Path) -> dict[str, Any] | None:
    """The resolved config a checkpoint was written with (the driver part keeps it as YAML text)."""
    try:
        driver = json.loads((step / "driver.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    text = driver.get("config") if isinstance(driver, dict) else None
    if not isinstance(text, str):
        return None
    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else None


def _run_name(step: Path) -> str:
    parent = step.parent
    return parent.parent.name if parent.name == "checkpoints" else parent.name


def _from_step(step: Path) -> ModelSource:
    from common.checkpoint import STEP_DIR

    match = STEP_DIR.match(step.name)
    number = int(match.group(1)) if match else None
    label = f"{_run_name(step)} step {number}" if number is not None else step.name
    config = _step_config(step)
    return ModelSource(str(step / "model"), label, config, f"{step / 'driver.json'}" if config else None)


def resolve_model(flag: str, given: str) -> ModelSource:
    """`tiny`, a model directory (config.json), a step directory (model/ inside) or a run directory (the
    latest complete step of its checkpoints/); anything else is a one-line error that lists the forms."""
    from common.checkpoint import STEP_DIR, latest_checkpoint

    if given == BUILT_IN:
        return ModelSource(BUILT_IN, "tiny (built-in)")
    path = Path(given).expanduser()
    if not path.is_dir():
        raise UserError(f"{flag} {given}: directory not found (give a model, checkpoint or run directory, or `tiny`)")
    if (path / "config.json").is_file():
        if path.name == "model" and STEP_DIR.match(path.parent.name):
            return _from_step(path.parent)
        saved = path / "sft_config.yaml"
        config = _read_config(saved) if saved.is_file() else None
        return ModelSource(str(path), path.resolve().name, config, str(saved) if config else None)
    if (path / "model" / "config.json").is_file():
        return _from_step(path)
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir():
        step = latest_checkpoint(checkpoints)
        if step is None:
            raise UserError(f"{flag} {given}: a run directory without a complete checkpoint in {checkpoints} yet")
        source = _from_step(step)
        run_config = path / "config.yaml"
        if source.config is None and run_config.is_file():
            config = _read_config(run_config)
            return ModelSource(source.path, source.label, config, str(run_config) if config else None)
        return source
    raise UserError(
        f"{flag} {given}: not a model directory (no config.json), a checkpoint (step-NNNNNNNN/ with model/) "
        "or a run directory (with checkpoints/)"
    )
