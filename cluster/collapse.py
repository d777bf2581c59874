"""The collapse guard: stop a run whose training success rate falls far below its best, or whose learner diverged.

A too-high RL learning rate collapses a small policy within a few hundred steps (ALGORITHM.md section 7):
the success rate of its own samples drops towards 0 and never recovers. Averaging over a window keeps
single noisy steps from tripping the guard; requiring a best of at least `min_best` keeps it quiet while a
policy is still at its starting level.

A far too high one (or a numerical fault) diverges at once: the loss or the gradient norm is no longer a
finite number, the weights are NaN after that step, and every later step is wasted. `divergence` says so at
the first such step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DIVERGENCE_KEYS = ("loss", "grad_norm")


def divergence(line: Mapping[str, Any]) -> str | None:
    """Why a step's metrics line shows a diverged learner (a non-finite loss or gradient norm), or None."""
    bad = [f"{key} = {line[key]}" for key in DIVERGENCE_KEYS if key in line and not math.isfinite(line[key])]
    return f"the learner diverged ({', '.join(bad)})" if bad else None


@dataclass
class CollapseGuard:
    window: int
    ratio: float
    min_best: float = 0.05
    recent: deque[float] = field(default_factory=deque)
    best: float = 0.0

    def update(self, success_rate: float) -> str | None:
        """Add one step's success rate; return why the run collapsed, or None while it is healthy."""
        if self.window <= 0:
            return None
        self.recent.append(success_rate)
        if len(self.recent) > self.window:
            self.recent.popleft()
        if len(self.recent) < self.window:
            return None
        mean = sum(self.recent) / self.window
        self.best = max(self.best, mean)
        if self.best >= self.min_best and mean < self.ratio * self.best:
            return (
                f"training success rate collapsed: mean over the last {self.window} steps is {mean:.3f}, "
                f"below {self.ratio:g} x its best {self.best:.3f}"
            )
        return None

    def state_dict(self) -> dict[str, object]:
        return {"recent": list(self.recent), "best": self.best}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.recent = deque(float(v) for v in state["recent"])  # type: ignore[union-attr]
        self.best = float(state["best"])  # type: ignore[arg-type]
