"""Block-diffusion checkpoints: SDAR / TraDo and Fast-dLLM v2 load into transformers' Qwen classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Qwen2ForCausalLM, Qwen3ForCausalLM

from common.config import ModelConfig, TinyModelConfig
from common.errors import CheckpointError
from common.model.block_families import declared_block_size
from common.model.block_mask import BlockSpec, block_spec
from common.model.loading import load_policy, mask_predictor_logits, save_policy
from tests.unit.block_helpers import write_fast_dllm_dir, write_sdar_dir


def sdar_reference_mask(length: int, size: int) -> torch.Tensor:
    """The mask SDAR's generate.py builds: tril over blocks, repeated to tokens (whole blocks, no padding)."""
    blocks = length // size
    return torch.tril(torch.ones(blocks, blocks)).repeat_interleave(size, 0).repeat_interleave(size, 1).bool()


@torch.no_grad()
def test_sdar_directory_loads_into_qwen3_without_its_own_code(tmp_path: Path) -> None:
    reference = write_sdar_dir(tmp_path)
    policy = load_policy(ModelConfig(path=str(tmp_path)))
    assert isinstance(policy.model, Qwen3ForCausalLM)
    assert block_spec(policy.model) == BlockSpec(size=4, shift=False)  # SDAR's trained block size, unshifted
    assert policy.mask_id == policy.tokenizer.mask_token_id and not policy.logits_shift
    ids = torch.randint(0, 100, (2, 12))
    expected = reference(ids, attention_mask=sdar_reference_mask(12, 4)[None, None]).logits
    torch.testing.assert_close(mask_predictor_logits(policy, ids), expected, atol=1e-6, rtol=0)


@torch.no_grad()
def test_fast_dllm_directory_loads_into_qwen2_shifted_with_its_mask_token(tmp_path: Path) -> None:
    reference = write_fast_dllm_dir(tmp_path)
    policy = load_policy(ModelConfig(path=str(tmp_path)))
    assert isinstance(policy.model, Qwen2ForCausalLM)
    assert block_spec(policy.model) == BlockSpec(size=4, shift=True)  # bd_size, and the AR token shift
    assert policy.mask_id == policy.tokenizer.get_vocab()["|<MASK>|"] and policy.logits_shift
    ids = torch.randint(0, 100, (1, 8))
    raw = reference(ids, attention_mask=sdar_reference_mask(8, 4)[None, None]).logits
    shifted = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)  # Fast-dLLM v2's generate() realignment
    torch.testing.assert_close(mask_predictor_logits(policy, ids), shifted, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("writer", "overrides", "message"),
    [
        (write_sdar_dir, {"model_type": "sdar_moe"}, "mixture-of-experts"),
        (write_sdar_dir, {"use_sliding_window": True}, "use_sliding_window = true"),
        (write_sdar_dir, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling = "),
        (write_sdar_dir, {"block_size": 0}, "block_size = 0"),
        (write_fast_dllm_dir, {"bd_size": "32"}, "bd_size = '32'"),
        (write_fast_dllm_dir, {"use_relay": True}, "use_relay = true"),
        (write_sdar_dir, {"model_type": "llama", "attention": "block_causal"}, "block_causal attention loads for"),
    ],
)
def test_unfit_block_configs_are_refused_with_the_reason(
    tmp_path: Path, writer: Any, overrides: dict[str, Any], message: str
) -> None:
    writer(tmp_path, **overrides)
    with pytest.raises(CheckpointError, match=message):
        load_policy(ModelConfig(path=str(tmp_path)))


def test_missing_qwen_keys_are_named(tmp_path: Path) -> None:
    write_sdar_dir(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["num_hidden_layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unsupported SDAR / TraDo config.json: num_hidden_layers is missing"):
        load_policy(ModelConfig(path=str(tmp_path)))


@torch.no_grad()
@pytest.mark.parametrize("writer", [write_sdar_dir, write_fast_dllm_dir], ids=["sdar", "fast-dllm-v2"])
def test_saved_block_models_load_back_the_same(tmp_path: Path, writer: Any) -> None:
    writer(tmp_path / "public")
    policy = load_policy(ModelConfig(path=str(tmp_path / "public")))
    save_policy(policy, tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["attention"] == "block_causal" and saved["model_type"] in ("qwen3", "qwen2")
    again = load_policy(ModelConfig(path=str(tmp_path / "saved")))
    assert block_spec(again.model) == block_spec(policy.model)
    assert (again.mask_id, again.logits_shift) == (policy.mask_id, policy.logits_shift)
    ids = torch.randint(0, 100, (2, 8))
    torch.testing.assert_close(mask_predictor_logits(again, ids), mask_predictor_logits(policy, ids))
    assert declared_block_size(ModelConfig(path=str(tmp_path / "saved"))) == 4


@torch.no_grad()
def test_tiny_block_model_saves_its_attention_and_reloads(tmp_path: Path) -> None:
    model_cfg = ModelConfig(tiny=TinyModelConfig(attention="block_causal", block_size=8))
    policy = load_policy(model_cfg)
    assert block_spec(policy.model) == BlockSpec(size=8, shift=False)
    save_policy(policy, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["attention"] == "block_causal"
    again = load_policy(ModelConfig(path=str(tmp_path)))
    ids = torch.randint(3, 100, (2, 20))
    torch.testing.assert_close(again.model(ids).logits, policy.model(ids).logits)
    assert declared_block_size(model_cfg) == declared_block_size(ModelConfig(path=str(tmp_path))) == 8
    assert declared_block_size(ModelConfig()) is None


def test_declared_block_size_reads_the_families_keys(tmp_path: Path) -> None:
    write_sdar_dir(tmp_path / "sdar")
    write_fast_dllm_dir(tmp_path / "fast", bd_size=32)
    assert declared_block_size(ModelConfig(path=str(tmp_path / "sdar"))) == 4
    assert declared_block_size(ModelConfig(path=str(tmp_path / "fast"))) == 32
    assert declared_block_size(ModelConfig(path=str(tmp_path / "missing"))) is None
