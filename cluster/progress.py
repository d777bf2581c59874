"""Progress of a training run: a live bar on a terminal, one plain line per step in job logs."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


class RunProgress:
    """Shows phase, step, mean reward, accuracy (when evaluated), steps per second and ETA."""

    def __init__(self, total: int, start: int, phase: str = "train", stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.total, self.done, self.phase = total, start, phase
        self.started = time.perf_counter()
        self.first = start
        self.bar = tqdm(total=total, initial=start, desc=phase, unit="step", file=self.stream, disable=not self.live)

    def update(self, step: int, **fields: float | None) -> None:
        self.done = step
        shown = {k: f"{v:.3g}" for k, v in fields.items() if v is not None}
        if self.live:
            self.bar.set_description_str(self.phase, refresh=False)
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        elapsed = time.perf_counter() - self.started
        rate = (step - self.first) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = " ".join(f"{k}={v}" for k, v in shown.items())
        print(
            f"[{self.phase}] step {step}/{self.total} {parts} {rate:.2f} step/s eta {eta:.0f}s",
            file=self.stream,
            flush=True,
        )

    def warn(self, text: str) -> None:
        """A warning line that stays on screen (above the live bar, which redraws below it)."""
        if self.live:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def phase_note(self, note: str) -> None:
        """A one-off line about what the run is doing (e.g. an evaluation that takes a while)."""
        if self.live:
            self.bar.set_description_str(f"{self.phase} ({note})")
        else:
            print(f"[{self.phase}] {note}", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
