"""Block-diffusion checkpoints that load into transformers' own Qwen3 / Qwen2 classes.

SDAR and TraDo (config.json `model_type: "sdar"`) are Qwen3 networks; Fast-dLLM v2 (`"Fast_dLLM_Qwen"`) is a
Qwen2.5 network. Their own modeling files differ from transformers' classes only in how attention is masked
(block-causal, built by the caller) and, for training, in the noisy/clean sequence layout; the parameter names
and the math of every layer are Qwen's (docs/models.md lists what was checked). So they load, without
`trust_remote_code`, into `Qwen3ForCausalLM` / `Qwen2ForCausalLM` with a config that records the block facts
the sampler and the learner need: `attention: "block_causal"`, `block_size`, `logits_shift` and the mask id.
A model we save keeps those keys in its config.json (model_type `qwen3` / `qwen2`), so it loads back the same
way. Settings the Qwen classes would build differently from the public code are refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, Qwen2ForCausalLM, Qwen3ForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from common.config import ModelConfig
from common.errors import CheckpointError

ARCHITECTURES: dict[str, type[PreTrainedModel]] = {"qwen3": Qwen3ForCausalLM, "qwen2": Qwen2ForCausalLM}
REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# Keys that describe the public code's own classes or our block facts, not the Qwen network.
FAMILY_KEYS = ("model_type", "auto_map", "architectures", "attention", "block_size", "bd_size", "logits_shift")


@dataclass(frozen=True)
class BlockFamily:
    """How one family's config.json maps onto a Qwen class and the block facts."""

    name: str
    architecture: str
    block_size_key: str
    default_block_size: int | None
    logits_shift: bool
    mask_token: str | None


FAMILIES: dict[str, BlockFamily] = {
    # SDAR's generate.py takes the mask id from the tokenizer's mask token (<|MASK|>, 151669); SGLang and
    # JetEngine default to blocks of 4, the size SDAR and TraDo are trained and evaluated with.
    "sdar": BlockFamily("SDAR / TraDo", "qwen3", "block_size", 4, False, "<|MASK|>"),
    # Fast-dLLM v2 keeps the AR layout (output i predicts token i+1) and names its mask |<MASK>| (151665).
    "Fast_dLLM_Qwen": BlockFamily("Fast-dLLM v2", "qwen2", "bd_size", 32, True, "|<MASK>|"),
}
REFUSED_TYPES = {
    "sdar_moe": "the SDAR mixture-of-experts models (sdar_moe) have no transformers class here; the dense SDAR and "
    "TraDo models (model_type sdar) load",
}


def block_family(path: Path, raw: dict[str, Any]) -> BlockFamily | None:
    """The family of a config.json, None for a model that is not block-causal (or the native LLaDA class)."""
    model_type = raw.get("model_type")
    if model_type in REFUSED_TYPES:
        raise CheckpointError(f"model.path {path}: {REFUSED_TYPES[model_type]}")
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if raw.get("attention", "full") == "full" or model_type == "llada":
        return None
    if raw.get("attention") != "block_causal" or model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"model.path {path}: config.json attention = {raw.get('attention')!r} with model_type {model_type!r}: "
            f"block_causal attention loads for llada, {' and '.join(ARCHITECTURES)} models"
        )
    # A block model we saved: its config.json already holds the block facts.
    return BlockFamily(f"block-causal {model_type}", model_type, "block_size", None, False, None)


def check_block_config(path: Path, raw: dict[str, Any], family: BlockFamily) -> int:
    """The block size of a family config.json, or a CheckpointError naming every setting that does not fit.

    Checked before anything else reads the file (transformers' tokenizer loading parses config.json too)."""
    problems = [f"{key} is missing" for key in REQUIRED_KEYS if key not in raw]
    if raw.get("use_sliding_window"):
        problems.append("use_sliding_window = true (supported: false; SDAR applies the window only under flash-attn)")
    if raw.get("rope_scaling") not in (None, {}):
        problems.append(f"rope_scaling = {raw['rope_scaling']!r} (supported: null)")
    if raw.get("use_relay"):
        problems.append("use_relay = true (a relay extension outside Fast-dLLM v2; supported: false)")
    size = raw.get(family.block_size_key, family.default_block_size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        problems.append(f"{family.block_size_key} = {size!r} (must be a positive integer)")
    if problems:
        raise CheckpointError(f"model.path {path}: unsupported {family.name} config.json: {'; '.join(problems)}")
    return size


def block_config(
    path: Path, raw: dict[str, Any], family: BlockFamily, tokenizer: PreTrainedTokenizerBase, logits_shift: bool
) -> tuple[type[PreTrainedModel], PretrainedConfig]:
    """The Qwen class and its config for a block-diffusion directory, or a CheckpointError saying why not."""
    size = check_block_config(path, raw, family)
    # rope_scaling is null here (checked above); transformers 5 deprecates the key in favour of rope_parameters.
    values = {key: value for key, value in raw.items() if key not in FAMILY_KEYS and key != "rope_scaling"}
    try:
        config = CONFIG_MAPPING[family.architecture](**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"model.path {path}: invalid {family.name} config.json: {err}") from err
    model_class = ARCHITECTURES[family.architecture]
    config.architectures = [model_class.__name__]
    config.attention = "block_causal"
    config.block_size = size
    config.logits_shift = bool(raw.get("logits_shift", family.logits_shift)) or logits_shift
    if getattr(config, "mask_token_id", None) is None and tokenizer.mask_token_id is None and family.mask_token:
        mask_id = tokenizer.get_vocab().get(family.mask_token)
        if mask_id is not None:
            config.mask_token_id = mask_id
    return model_class, config


def declared_block_size(model_cfg: ModelConfig) -> int | None:
    """The attention block size `model.*` names, read from config.json without loading weights (None: full
    attention, or no readable config). Commands use it to default the sampler's block length."""
    if model_cfg.path == "tiny":
        tiny = model_cfg.tiny
        return tiny.block_size if tiny.attention == "block_causal" else None
    config_file = Path(model_cfg.path).expanduser() / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    family = FAMILIES.get(raw.get("model_type", ""))
    if family is not None:
        size = raw.get(family.block_size_key, family.default_block_size)
    else:
        size = raw.get("block_size") if raw.get("attention") == "block_causal" else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None
