"""What a reward plugin returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RewardResult:
    """A score with its named parts and, when scoring failed, why.

    Plugins may return a bare float; the service wraps it. `error` is set when the score is 0 because
    something went wrong (timeout, exception, non-finite value), so failures are counted, not hidden.
    `plugin_errors` holds the same failures per plugin (its label -> its own error), for the plugins that
    failed on this sample, so the driver can tell which plugin fails how often without parsing `error`.
    """

    score: float
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    plugin_errors: dict[str, str] = field(default_factory=dict)
