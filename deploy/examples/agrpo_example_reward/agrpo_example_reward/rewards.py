"""A reward that discourages rambling: 0 up to `max_chars`, then down linearly to -1 at twice that.

It needs nothing from agrpo: a plugin is any callable taking the completion and the sample's
reference fields, so a plugin package can be tested and versioned on its own.
"""

from __future__ import annotations

from typing import Any


def length_penalty(completion: str, reference: dict[str, Any], max_chars: int = 200) -> float:
    """Penalty in [-1, 0] for characters beyond `max_chars`; combine it with a correctness reward."""
    if max_chars <= 0:
        raise ValueError(f"max_chars = {max_chars}: must be positive")
    excess = max(0, len(completion) - max_chars)
    return -min(1.0, excess / max_chars)
