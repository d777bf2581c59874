"""Seeds derived from integers, so every random stream of a run is a function of (seed, purpose, index)."""

from __future__ import annotations

import numpy as np


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, independent across parts (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
