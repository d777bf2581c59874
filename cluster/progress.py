"""Progress of a training run: a live bar on a terminal, one plain line per step in job logs."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

BAR_FORMAT = "{desc} {n_fmt}/{total_fmt}{postfix} [eta {remaining}, {rate_fmt}] |{bar}|"
"""Most important first, the bar last: the bar takes what the terminal width leaves, and a line wider than
the terminal is cut at its end, so a narrow terminal loses the bar and then the timing, never the reward or
accuracy. The width follows the terminal (dynamic_ncols), not the width the bar started with."""

PERCENT = ("success", "accuracy")


def _shown(name: str, value: float) -> str:
    return f"{name} {value:.1%}" if name in PERCENT else f"{name} {value:.3f}"


class RunProgress:
    """Shows phase, step, mean reward, success rate, the last accuracy, steps per second and ETA.

    A field keeps its last value until it is given again, so the accuracy of the last evaluation stays on the
    bar between evaluations.
    """

    def __init__(self, total: int, start: int, phase: str = "train", stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.total, self.done, self.phase = total, start, phase
        self.started = time.perf_counter()
        self.first = start
        self.fields: dict[str, str] = {}
        self.bar = tqdm(
            total=total,
            initial=start,
            desc=phase,
            unit="step",
            file=self.stream,
            disable=not self.live,
            dynamic_ncols=True,
            bar_format=BAR_FORMAT,
        )

    def update(self, step: int, **fields: float | None) -> None:
        self.done = step
        self.fields.update({k: _shown(k, v) for k, v in fields.items() if v is not None})
        text = ", ".join(self.fields.values())
        if self.live:
            self.bar.set_description_str(self.phase, refresh=False)
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)
            self.bar.refresh()
            return
        elapsed = time.perf_counter() - self.started
        rate = (step - self.first) / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total - step) / rate:.0f}s" if rate > 0 else "?"
        print(
            f"[{self.phase}] step {step}/{self.total} {text} {rate:.2f} step/s eta {eta}",
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
        """A one-off line about what the run is doing (e.g. an evaluation that takes a while); the next
        `update` puts the plain phase back."""
        if self.live:
            self.bar.set_description_str(f"{self.phase} ({note})")
        else:
            print(f"[{self.phase}] {note}", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
