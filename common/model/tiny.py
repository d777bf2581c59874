"""The built-in tiny dLLM: a small LLaDAModelLM (full or block-causal attention) with a given vocabulary and ids."""

from __future__ import annotations

import torch

from common.config import TinyModelConfig
from common.model.llada import LLaDAConfig, LLaDAModelLM


def build_tiny_model(
    shape: TinyModelConfig,
    vocab_size: int,
    mask_id: int,
    eos_id: int,
    pad_id: int | None = None,
    seed: int = 0,
) -> LLaDAModelLM:
    """A randomly initialised model; the seed makes the initial weights reproducible across processes."""
    config = LLaDAConfig(
        d_model=shape.d_model,
        n_heads=shape.n_heads,
        n_kv_heads=shape.n_kv_heads,
        n_layers=shape.n_layers,
        mlp_hidden_size=shape.mlp_hidden_size,
        vocab_size=vocab_size,
        max_sequence_length=shape.max_sequence_length,
        mask_token_id=mask_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id if pad_id is None else pad_id,
        attention=shape.attention,
        block_size=shape.block_size if shape.attention == "block_causal" else None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LLaDAModelLM(config)
