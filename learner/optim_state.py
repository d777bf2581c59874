"""One learner rank's optimizer state as plain tensors, ints, floats, strings, lists and dicts.

DeepSpeed's own `save_checkpoint` pickles (loss scaler objects, whole state dicts through `torch.save`), so
the learner captures what an exact resume needs by hand, per rank, for the optimizer DeepSpeed put around the
torch AdamW:

- ZeRO 0, float32: the torch optimizer itself; its state dict is all there is.
- ZeRO 1/2 (`DeepSpeedZeroOptimizer`): this rank's fp32 master partitions `single_partition_of_fp32_groups`,
  plus the base AdamW state dict (moments of those flat partitions, step counts, param groups).
- ZeRO 3 (`DeepSpeedZeroOptimizer_Stage3`): the fp32 flat partitions `fp32_partitioned_groups_flat`, plus the
  base AdamW state dict; the base optimizer's param groups are empty outside `step()`, so they are filled
  for the duration of `state_dict()` / `load_state_dict()` exactly as DeepSpeed's own checkpointing does.
- ZeRO 0 with bf16 (`FP16_Optimizer` in bf16 mode, GPU only) and ZeRO 1 with bf16 and fp32 accumulation
  (`BF16_Optimizer`, GPU only): `fp32_groups_flat` / `fp32_groups_flat_partition` plus the base state.

Partitions depend on world size and stage, so a state loads only into an engine with the same rank, world
size and stage; the check names what differs. Masters are overwritten *after* `load_model_state` refreshed
them from the (rounded) model weights, so bf16 runs resume from the exact fp32 masters.

These attributes are DeepSpeed's internals, not its API: pyproject.toml pins DeepSpeed to the minor release
that is tested (`TESTED_DEEPSPEED`), and a wrapper that has none of them is refused when a checkpoint is
written, rather than saved without its masters (which would make resume silently inexact).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from common.errors import CheckpointError

TESTED_DEEPSPEED = "0.19"
"""The DeepSpeed minor release this module's reading of private state is tested with (pyproject.toml pins it)."""

_MASTER_ATTRS = (
    "single_partition_of_fp32_groups",
    "fp32_partitioned_groups_flat",
    "fp32_groups_flat_partition",
    "fp32_groups_flat",
)


def _snapshot(node: Any) -> Any:
    """A deep copy with every tensor cloned to CPU, so later optimizer steps cannot change it."""
    if isinstance(node, torch.Tensor):
        return node.detach().to("cpu", copy=True)
    if isinstance(node, dict):
        return {k: _snapshot(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return type(node)(_snapshot(v) for v in node)
    return node


def masters(optimizer: Any) -> list[torch.Tensor] | None:
    """The fp32 master tensors DeepSpeed keeps for this rank, or None for a bare torch optimizer."""
    for attr in _MASTER_ATTRS:
        if hasattr(optimizer, attr):
            return list(getattr(optimizer, attr))
    return None


def base_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else optimizer.optimizer


@contextmanager
def _stage3_param_groups(optimizer: Any) -> Iterator[None]:
    """ZeRO-3 empties the base optimizer's param groups between steps; fill them while state moves."""
    stage3 = hasattr(optimizer, "_set_fp32_optimizer_param_groups")
    if stage3:
        optimizer._set_fp32_optimizer_param_groups()
    try:
        yield
    finally:
        if stage3:
            optimizer._clear_fp32_optimizer_param_groups()


def _check_known(optimizer: Any) -> None:
    """A DeepSpeed wrapper must hold its fp32 masters and the wrapped optimizer where this module reads them."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return
    if masters(optimizer) is None or not isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        import deepspeed

        raise CheckpointError(
            f"cannot save the optimizer state of DeepSpeed {deepspeed.__version__}'s {type(optimizer).__name__}: it "
            f"has none of {', '.join(_MASTER_ATTRS)} or no wrapped torch optimizer; learner/optim_state.py reads "
            f"these private attributes and is tested with deepspeed {TESTED_DEEPSPEED}.x (install that version)"
        )


def capture(optimizer: Any) -> dict[str, Any]:
    """Masters (if any) and the base optimizer state dict, as CPU copies."""
    _check_known(optimizer)
    with _stage3_param_groups(optimizer):
        base = base_optimizer(optimizer).state_dict()
    own = masters(optimizer)
    return {
        "wrapper": type(optimizer).__name__,
        "masters": [] if own is None else _snapshot(own),
        "base": _snapshot(base),
    }


def restore(optimizer: Any, state: dict[str, Any], where: str) -> None:
    """Inverse of `capture` on an engine built the same way (same stage, world size and rank)."""
    wrapper = type(optimizer).__name__
    if state.get("wrapper") != wrapper:
        raise CheckpointError(
            f"{where}: saved with optimizer wrapper {state.get('wrapper')}, this engine uses {wrapper}"
        )
    own = masters(optimizer) or []
    saved = state["masters"]
    shapes = [tuple(t.shape) for t in own]
    if [tuple(t.shape) for t in saved] != shapes:
        raise CheckpointError(
            f"{where}: fp32 partitions {[tuple(t.shape) for t in saved]} differ from this engine's {shapes} "
            "(saved with another world size, ZeRO stage or model)"
        )
    with torch.no_grad():
        for current, value in zip(own, saved, strict=True):
            current.copy_(value.to(current.device))
    with _stage3_param_groups(optimizer):
        # torch keeps loaded tensors that already match dtype and device; a copy keeps `state` the caller's.
        base_optimizer(optimizer).load_state_dict(_snapshot(state["base"]))
