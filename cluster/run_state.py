"""Saving and restoring a whole run: learner ranks, driver counters, and batches sampled ahead.

With max_staleness S the batches of steps s+1..s+S were sampled with older weights than the checkpoint
holds, so they are stored in it (as records, not weights): a resumed run trains on exactly the groups the
uninterrupted run would have, which is what makes resume exact. The driver's part is read and checked before
Ray starts (`read_run`), so an incompatible resume is refused in seconds and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import yaml

from common.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint
from common.config import Config, dump_config
from common.errors import CheckpointError
from common.record import RolloutGroup, group_from_state, group_to_state
from learner.group import LearnerGroup

# Settings a checkpoint's optimizer and data state depend on; changing them makes resume impossible.
FROZEN_FIELDS = (
    "seed",
    "model",
    "algorithm.group_size",
    "learner.world_size",
    "learner.zero_stage",
    "learner.groups_per_step",
    "learner.lora",
    "rollout.max_staleness",
    "data",
)


@dataclass
class DriverState:
    """What the driver itself needs to continue a run exactly (the learners keep their own state)."""

    step: int = 0
    version: int = 0
    cursor: int = 0
    staleness: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    ready: dict[int, list[RolloutGroup]] = field(default_factory=dict)
    evals: list[list[float]] = field(default_factory=list)
    collapse: dict[str, Any] = field(default_factory=dict)


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


PARTITIONED_FIELDS = ("learner.world_size", "learner.zero_stage")
"""Each rank's optimizer state is its own ZeRO partition of the fp32 masters and moments, whose shapes these
decide; re-partitioning a saved state for another layout is not supported."""


def check_compatible(saved: dict[str, Any], config: Config, where: Path) -> None:
    current = config.model_dump(mode="json")
    changed = [f for f in FROZEN_FIELDS if _lookup(saved, f) != _lookup(current, f)]
    if not changed:
        return
    layout = [f for f in changed if f in PARTITIONED_FIELDS]
    why = ""
    if layout:
        was = ", ".join(f"{f} {_lookup(saved, f)}" for f in layout)
        why = (
            f" (it was {was}: the optimizer state is saved per rank as ZeRO partitions, and resuming with another "
            "world size or ZeRO stage is not supported; to go on with new ones, start a new run_dir with "
            f"model.path={where / 'model'}, which keeps the weights but not the optimizer state)"
        )
    raise CheckpointError(
        f"checkpoint {where} was written with different {', '.join(changed)}{why}; "
        "resume with the same settings or start a new run_dir"
    )


def find_checkpoint(config: Config, root: Path) -> Path | None:
    """`never` -> None; `auto` -> the latest complete checkpoint (None if none); a path -> that one."""
    mode = config.checkpoint.resume
    if mode == "never":
        return None
    if mode == "auto":
        return latest_checkpoint(root)
    path = Path(mode)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint.resume {mode}: directory not found")
    return path


def read_run(path: Path, config: Config) -> DriverState:
    """The driver's state of a verified checkpoint written with compatible settings."""
    parts = read_checkpoint(path, ["driver", "batches"])
    driver = parts["driver"]
    check_compatible(yaml.safe_load(driver["config"]), config, path)
    ready = {int(b): [group_from_state(g) for g in groups] for b, groups in parts["batches"].items()}
    return DriverState(
        step=int(driver["step"]),
        version=int(driver["version"]),
        cursor=int(driver["cursor"]),
        staleness=driver["staleness"],
        counters=driver["counters"],
        ready=ready,
        evals=driver["evals"],
        collapse=driver["collapse"],
    )


def load_learners(path: Path, learners: LearnerGroup, state: DriverState) -> None:
    """Weights, optimizer, scheduler and RNG state of every rank, and the weight version they reached."""
    learners.call("load_model", str(path / "model"))
    learners.wait([a.load_state.remote(str(path / f"learner-{r}")) for r, a in enumerate(learners.ranks)])
    learners.version = state.version


def save_run(root: Path, config: Config, learners: LearnerGroup, state: DriverState) -> Path:
    parts: dict[str, Any] = {
        "model": lambda d: learners.call("save_model", str(d)),
        "driver": {
            "step": state.step,
            "version": state.version,
            "cursor": state.cursor,
            "staleness": state.staleness,
            "counters": state.counters,
            "evals": state.evals,
            "collapse": state.collapse,
            "config": dump_config(config),
        },
        "batches": {str(b): [group_to_state(g) for g in groups] for b, groups in state.ready.items()},
    }
    for rank, actor in enumerate(learners.ranks):
        parts[f"learner-{rank}"] = lambda d, a=actor: ray.get(a.save_state.remote(str(d)))
    return write_checkpoint(root, state.step, parts, keep_last=config.checkpoint.keep_last)
