"""Text to token ids and back, one rule for every role.

Prompts are encoded without special tokens (the chat template, when there is one, already wrote them).
A completion is decoded up to its first EOS with special tokens dropped, as TRL's GRPO trainer (which d1
trains with) decodes; the training reward and our held-out grader therefore read the same text. (d1's own
evaluation script decodes the whole window with special tokens; `--protocol d1` does that, rewards/grading.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import DataError


def encode_text(tokenizer: Any, text: str, where: str) -> list[int]:
    """Token ids of `text`; a text the tokenizer cannot encode (the tiny tokenizer knows only printable
    ASCII) is a one-line DataError naming `where`, not a traceback from inside the tokenizer."""
    try:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    except Exception as err:  # the Rust tokenizers raise a bare Exception for an unknown character
        raise DataError(f"{where}: cannot be tokenized ({str(err).strip().splitlines()[0]}): {text[:60]!r}") from None


def decode_completion(tokenizer: Any, ids: np.ndarray, eos_id: int) -> str:
    """The completion text up to its first EOS, special tokens dropped (as the d1 evaluation decodes)."""
    eos = np.flatnonzero(ids == eos_id)
    kept = ids[: eos[0]] if eos.size else ids
    return tokenizer.decode(kept.tolist(), skip_special_tokens=True)
