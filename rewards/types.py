"""What a reward plugin returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RewardResult:
    """A score with its named parts and, when scoring failed, why.

    Plugins may return a bare float; the service wraps it. `error` is set when the score is 0 because
    something went wrong (timeout, exception, non-finite value), so failures are counted, not hidden.
    """

    score: float
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None
