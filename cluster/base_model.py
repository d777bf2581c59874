"""The base policy a recipe starts from: built once with `agrpo sft` when the recipe asks for it, then reused."""

from __future__ import annotations

import sys
from pathlib import Path

from common.config import Config


def ensure_base_model(config: Config) -> None:
    """With `model.build_if_missing: sft`, build the base policy at model.path once; later runs reuse it."""
    path = Path(config.model.path)
    if config.model.build_if_missing != "sft" or config.model.path == "tiny" or (path / "config.json").is_file():
        return
    from learner.sft import run_sft

    print(f"agrpo train: no base model at {path}; building it with agrpo sft (cached for later runs)", file=sys.stderr)
    sft = config.model_copy(
        update={
            "model": config.model.model_copy(update={"path": "tiny"}),
            "sft": config.sft.model_copy(update={"output": str(path)}),
        }
    )
    run_sft(sft, progress=True)
