"""Tiny block-diffusion models and checkpoint directories in the public formats, built without downloads.

`write_sdar_dir` writes what an SDAR / TraDo directory holds (config.json with model_type `sdar`, its auto_map
and Qwen3 keys, Qwen3 weight names, a tokenizer with a mask token); `write_fast_dllm_dir` what a Fast-dLLM v2
directory holds (model_type `Fast_dLLM_Qwen`, `bd_size`, tied Qwen2 weights, a tokenizer whose `|<MASK>|`
token is not declared as its mask token). Both return the in-memory model whose weights they saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from common.config import TinyModelConfig
from common.model import build_tiny_model
from common.model.tokenizer import build_tiny_tokenizer

VOCAB, MASK, EOS, PAD = 48, 47, 46, 45
PROMPTS = [[3, 14, 15, 9, 2], [7], [26, 5, 35, 8, 9, 7, 9, 3, 2], [38, 4, 6]]
QWEN_SHAPE: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
}


def block_model(
    seed: int = 0, block_size: int = 4, shift: bool = False, sharp: bool = True, eos_boost: float = 1.0
) -> nn.Module:
    """The tiny model with block-causal attention; `sharp` scales the head by 20 so confidences are well
    separated, and `eos_boost` scales the EOS row of the head (7 sharp or 60 not sharp make some rows of
    PROMPTS * 2 end early at temperature 1, others not)."""
    shape = TinyModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        mlp_hidden_size=64,
        attention="block_causal",
        block_size=block_size,
    )
    model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=seed).eval()
    model.config.logits_shift = shift
    with torch.no_grad():
        head = model.model.transformer["ff_out"].weight
        if sharp:
            head.mul_(20)
        head[EOS] *= eos_boost
    return model


def _save(model: nn.Module, path: Path, config: dict[str, Any], tokenizer: Any) -> None:
    model.save_pretrained(path, safe_serialization=True)
    (path / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(path)


def write_sdar_dir(path: Path, seed: int = 0, **overrides: Any) -> nn.Module:
    """An SDAR-format directory: model_type `sdar`, auto_map to its own code, Qwen3 weights."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tokenizer), head_dim=8, **QWEN_SHAPE)).eval()
    config = {
        "model_type": "sdar",
        "architectures": ["SDARForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_sdar.SDARConfig",
            "AutoModel": "modeling_sdar.SDARModel",
            "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
        },
        "vocab_size": len(tokenizer),
        "head_dim": 8,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
        "tie_word_embeddings": False,
        "rope_scaling": None,
        "fuse_cross_entropy": True,
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **QWEN_SHAPE,
        **overrides,
    }
    _save(model, path, config, tokenizer)
    return model


def write_fast_dllm_dir(path: Path, seed: int = 0, **overrides: Any) -> nn.Module:
    """A Fast-dLLM v2-format directory: model_type `Fast_dLLM_Qwen`, `bd_size`, tied Qwen2 weights, and a
    `|<MASK>|` token that the tokenizer does not name as its mask token."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(["|<MASK>|"], special_tokens=True)
    torch.manual_seed(seed)
    shape = {**QWEN_SHAPE, "tie_word_embeddings": True}
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), **shape)).eval()
    config = {
        "model_type": "Fast_dLLM_Qwen",
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
            "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
        },
        "vocab_size": len(tokenizer),
        "hidden_act": "silu",
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
        "attention_dropout": 0.0,
        "bd_size": 4,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **shape,
        **overrides,
    }
    _save(model, path, config, tokenizer)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings.pop("mask_token", None)
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    return model
