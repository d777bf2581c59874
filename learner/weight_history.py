"""The trained weights of recent versions, kept so that stale groups are scored under the weights that sampled them.

With `rollout.max_staleness` S, a group trained at version v was sampled with a version in v-S..v. Its exact pi_old
(learner/correction.py) needs those weights, which the learner has moved past. `WeightHistory` keeps a CPU copy of
the *trainable* parameters of each version in v-S..v (LoRA: only the adapters, a small fraction of the model; full
fine-tuning: one model copy per version) and swaps a version into the live model for a no-grad pass, restoring the
current weights bit for bit afterwards. Only the module's parameters change; DeepSpeed's fp32 master weights and
optimizer state are never touched, so the update that follows is the one it would have been.

`capture` and `load` read and write the trainable parameters; under ZeRO-3 both are collectives, so every rank
records and swaps the same versions in the same order (`collective`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

State = dict[str, torch.Tensor]


class WeightHistory:
    """Versions current-keep .. current of the trainable weights (`record` adds the live ones)."""

    def __init__(
        self, capture: Callable[[], State], load: Callable[[State], None], keep: int, collective: bool
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep = {keep}: a weight history holds at least one older version")
        self._capture, self._load = capture, load
        self.keep, self.collective = keep, collective
        self._states: dict[int, State] = {}
        self.current: int | None = None

    def record(self, version: int) -> None:
        """Copy the live weights as `version` (the one about to be trained); forget versions it no longer needs."""
        self._states[version] = self._capture()
        self.current = version
        self._states = {v: s for v, s in self._states.items() if v >= version - self.keep}

    def has(self, version: int) -> bool:
        return version in self._states

    @property
    def versions(self) -> list[int]:
        return sorted(self._states)

    @contextmanager
    def use(self, version: int) -> Iterator[None]:
        """Inside, the model holds the weights of `version`; on exit, the recorded current ones again."""
        if self.current is None:
            raise RuntimeError("WeightHistory.use before record: the current weights are not kept yet")
        if version == self.current:
            yield
            return
        if version not in self._states:
            raise KeyError(f"weight version {version} is not kept (kept: {self.versions})")
        self._load(self._states[version])
        try:
            yield
        finally:
            self._load(self._states[self.current])

    def state(self, model_version: int) -> dict[str, State]:
        """The kept versions a run whose model is at `model_version` may still need, for a checkpoint."""
        return {str(v): s for v, s in self._states.items() if model_version - self.keep <= v < model_version}

    def load_state(self, state: dict[str, State]) -> None:
        """Restore `state()` output; the next `record` adds the live weights as the current version."""
        self._states = {int(v): s for v, s in state.items()}
        self.current = None
