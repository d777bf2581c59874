"""A deterministic, endless, resumable order over the training items.

Position p of the stream is item perm_e[p mod N] with e = p // N and perm_e a permutation seeded by
(seed, e); the group sampled for position p gets its own seed derived from (seed, p). The whole stream is
therefore a function of the seed and the cursor, which is all a checkpoint needs to store.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.seeding import derived_seed


class PromptStream:
    def __init__(self, items: list[dict[str, Any]], seed: int, cursor: int = 0) -> None:
        self.items = items
        self.seed = seed
        self.cursor = cursor
        self._epoch = -1
        self._perm = np.arange(0)

    def _item(self, position: int) -> dict[str, Any]:
        epoch, offset = divmod(position, len(self.items))
        if epoch != self._epoch:
            rng = np.random.default_rng(derived_seed(self.seed, epoch))
            self._perm, self._epoch = rng.permutation(len(self.items)), epoch
        return self.items[int(self._perm[offset])]

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next n requests {index, item, seed} for rollout workers."""
        out = [
            {"index": p, "item": self._item(p), "seed": derived_seed(self.seed, 1, p)}
            for p in range(self.cursor, self.cursor + n)
        ]
        self.cursor += n
        return out
