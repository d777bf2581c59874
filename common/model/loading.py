"""Turn `model.*` config into a ready policy: the built-in tiny model, or a local checkpoint directory.

Four kinds of directory load:
- `model_type: "llada"` (the public LLaDA checkpoints, and everything `save_policy` writes for the tiny
  model, full or block-causal): into the native `LLaDAModelLM`, whether or not the directory ships LLaDA's
  own modeling code (never imported);
- block-diffusion checkpoints (SDAR, TraDo, Fast-dLLM v2, and block models we saved): into transformers'
  Qwen3 / Qwen2 classes, without their own code (common/model/block_families.py);
- a directory whose config.json has `auto_map` (e.g. Dream): its own modeling code, only with
  `model.trust_remote_code=true`, because importing it runs that code;
- any other model type transformers knows: through the Auto classes.
Loading never touches the network (`local_files_only`), reads weights from safetensors, and reads pickle
files (`.bin`, `.pt`) only with `model.allow_pickle=true`. Every problem with the directory is a
`CheckpointError` that names the path and what is wrong.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    MODEL_FOR_MASKED_LM_MAPPING,
    MODEL_MAPPING,
    AutoConfig,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging as hf_logging

from common.checkpoint import MANIFEST, verify_manifest
from common.config import ModelConfig
from common.errors import CheckpointError
from common.model.block_families import block_config, block_family, check_block_config
from common.model.block_mask import block_spec, plain_block_mask
from common.model.llada import LLaDAConfig, LLaDAModelLM, unsupported_settings
from common.model.saving import save_model_directory
from common.model.tiny import build_tiny_model
from common.model.tokenizer import build_tiny_tokenizer
from common.model.weight_files import (
    check_shard_index,
    first_line,
    pickle_files,
    read_config,
    read_pickles,
)

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# Keys whose absence from a LLaDA config.json would make the public code build a different network
# (its defaults are GPT-2-like: tied weights, 50304 embeddings, no RoPE, a non-llama block).
LLADA_REQUIRED_KEYS = (
    "d_model",
    "n_heads",
    "n_layers",
    "vocab_size",
    "embedding_size",
    "weight_tying",
    "block_type",
    "activation_type",
    "layer_norm_type",
    "rope",
)


@dataclass
class Policy:
    """A mask predictor with the token ids the sampler and the losses need."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    mask_id: int
    eos_id: int
    pad_id: int
    banned_ids: tuple[int, ...]  # never sampled: MASK (else a position can stay masked), and padding
    logits_shift: bool


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA (the released recipe's precision) and float32 on CPU (bf16 matmuls are slow
    there and the tests compare logits tightly)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_policy(
    model_cfg: ModelConfig,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
) -> Policy:
    """`seed` only matters for the tiny model: every process that builds it with one seed gets one model."""
    torch_dtype = resolve_dtype(model_cfg.dtype if dtype is None else dtype, device)
    if model_cfg.path == "tiny":
        tokenizer = build_tiny_tokenizer()
        model: PreTrainedModel = build_tiny_model(
            model_cfg.tiny,
            len(tokenizer),
            tokenizer.mask_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            seed,
        )
    else:
        model, tokenizer = _load_directory(Path(model_cfg.path).expanduser(), model_cfg, torch_dtype)
    model = model.to(device=device, dtype=torch_dtype)
    mask_id, eos_id, pad_id = _special_ids(model, tokenizer, model_cfg.path)
    banned = (mask_id,) if pad_id == eos_id else (mask_id, pad_id)
    spec = block_spec(model)
    shift = model_cfg.logits_shift or (spec is not None and spec.shift)
    return Policy(model, tokenizer, mask_id, eos_id, pad_id, banned, shift)


def save_policy(policy: Policy, directory: str | Path) -> None:
    """Model (safetensors, with its modeling code), tokenizer and a manifest of checksums in one directory, so
    `model.path` (or plain transformers) can point at it directly and a damaged copy is refused when it is loaded."""
    save_model_directory(policy.model, policy.tokenizer, directory)


def mask_predictor_logits(
    policy_or_model: Policy | torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    logits_shift: bool | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
) -> torch.Tensor:
    """Logits (B, S, V) where row j scores the token at position j, for any loaded model.

    Dream-style models are initialised from an autoregressive LM and keep its layout: the output at i
    predicts token i+1. Dream's own sampler realigns them with `cat([logits[:, :1], logits[:, :-1]], 1)`,
    i.e. out[:, j] = logits[:, j-1] for j >= 1 and out[:, 0] = logits[:, 0] (position 0 is always a prompt
    token and never predicted). `logits_shift` applies exactly that; by default it comes from the policy
    (`model.logits_shift`) and is off for a bare model.

    `attention_mask` (B, S) marks real tokens. The native model takes it as is. Other models get it in the
    form Dream's sampler passes: a boolean (B, 1, S, S) mask and positions that count real tokens. Each query
    may see every real key, so padded rows stay finite (an all-false row would make SDPA return NaN); a
    block-causal model sees blocks from position 0 instead (common/model/block_mask.py).

    A (B, 1, Q, K) boolean mask goes to the model unchanged, with `position_ids` and an optional KV `cache`
    (rollout/kv_cache.py): the caller has laid out the tokens (a cache window, a composite sequence), so the
    logits come back unshifted and the caller realigns them.
    """
    if isinstance(policy_or_model, Policy):
        model = policy_or_model.model
        shift = policy_or_model.logits_shift if logits_shift is None else logits_shift
    else:
        model, shift = policy_or_model, bool(logits_shift)
    if attention_mask is not None and attention_mask.dim() == 4:
        if cache is None:
            return model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        return model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
        ).logits
    spec = block_spec(model)
    if getattr(getattr(model, "config", None), "model_type", None) == "llada":
        logits = model(input_ids, attention_mask=attention_mask).logits
    elif spec is not None:
        keys = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        mask, positions = plain_block_mask(keys, None, spec.size)
        logits = model(input_ids, attention_mask=mask, position_ids=positions).logits
    elif attention_mask is None or bool(attention_mask.all()):
        logits = model(input_ids).logits
    else:
        keys = attention_mask.bool()
        size = input_ids.shape[1]
        mask = keys[:, None, None, :].expand(-1, 1, size, size)
        positions = (keys.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids, attention_mask=mask, position_ids=positions).logits
    if shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    return logits


def _load_directory(
    path: Path, model_cfg: ModelConfig, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not path.is_dir():
        raise CheckpointError(f"model.path {path}: directory not found")
    if (path / MANIFEST).is_file():  # written by agrpo: the weights must be the ones it wrote
        try:
            verify_manifest(path, "model.path")
        except CheckpointError as err:
            raise CheckpointError(
                f"{err}; agrpo wrote this directory with a {MANIFEST} of checksums: if you changed its files on "
                f"purpose, delete {MANIFEST}"
            ) from None
    raw = read_config(path)
    check_shard_index(path)
    pickles = pickle_files(path, model_cfg.allow_pickle)
    model_type = raw.get("model_type")
    family = block_family(path, raw)
    if family is not None:
        check_block_config(path, raw, family)
    remote = model_type != "llada" and family is None and "auto_map" in raw
    if remote and not model_cfg.trust_remote_code:
        raise CheckpointError(
            f"model.path {path}: config.json has auto_map, so the model needs the directory's own Python "
            "code, which runs on import; set model.trust_remote_code=true (`--trust-remote-code` on agrpo sample "
            "and agrpo eval) if you trust this directory"
        )
    if model_type != "llada" and family is None and not remote and model_type not in CONFIG_MAPPING:
        raise CheckpointError(
            f"model.path {path}: config.json model_type {model_type!r} is not an architecture transformers "
            "knows, and the directory ships no modeling code (no auto_map in config.json)"
        )
    tokenizer = _load_tokenizer(path, model_cfg.trust_remote_code)
    state_dict = read_pickles(path, pickles) if pickles else None
    try:
        if family is not None:
            model_class, config = block_config(path, raw, family, tokenizer, model_cfg.logits_shift)
        else:
            model_class, config = _model_class(path, raw, remote)
        # With pickle weights the state dict is already in memory; transformers then takes no path.
        # Shape mismatches are collected (not raised) so that `_check_loading_info` can name the tensors;
        # transformers' own multi-line load report is silenced, the check below says what matters.
        with _quiet_transformers():
            model, info = model_class.from_pretrained(
                None if state_dict is not None else path,
                config=config,
                state_dict=state_dict,
                dtype=dtype,
                local_files_only=True,
                use_safetensors=state_dict is None,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
            )
    except (OSError, ValueError, RuntimeError, KeyError, ImportError, SafetensorError) as err:
        raise CheckpointError(f"model.path {path}: cannot load the model: {first_line(err)}") from err
    _check_loading_info(path, info, strict=model_type == "llada" or family is not None)
    return model, tokenizer


def _model_class(path: Path, raw: dict[str, Any], remote: bool) -> tuple[type[PreTrainedModel], Any]:
    """The class to instantiate and its config. A registered type prefers its masked-LM head class, since a
    bare AutoModel of a standard architecture returns hidden states, not logits."""
    if raw.get("model_type") == "llada":
        return LLaDAModelLM, _llada_config(path, raw)
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=remote)
    if remote:
        reference = raw["auto_map"].get("AutoModel")
        if reference is None:
            raise CheckpointError(f"model.path {path}: config.json auto_map has no AutoModel entry")
        model_class = get_class_from_dynamic_module(reference, str(path), local_files_only=True)
        # As transformers' Auto classes do: saving the model then copies its code along (common/model/saving.py).
        model_class.register_for_auto_class("AutoModel")
        return model_class, config
    if type(config) in MODEL_FOR_MASKED_LM_MAPPING:
        return MODEL_FOR_MASKED_LM_MAPPING[type(config)], config
    return MODEL_MAPPING[type(config)], config


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' multi-line load reports and deprecation notes about the checkpoint's own keys (e.g.
    that a block family's model_type is not the Qwen class it loads into, or SDAR's `rope_scaling: null`); the
    checks here say what matters, in one line."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_tokenizer(path: Path, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"model.path {path}: no tokenizer (expected one of {', '.join(TOKENIZER_FILES)}); save it next to the model"
        )
    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"model.path {path}: cannot load the tokenizer: {first_line(err)}") from err


def _llada_config(path: Path, raw: dict[str, Any]) -> LLaDAConfig:
    """The native config from a public LLaDA config.json (the same keys; the directory's auto_map, which names
    LLaDA's own modeling_llada.py, gives way to the native class's, whose code a saved copy carries)."""
    missing = [key for key in LLADA_REQUIRED_KEYS if key not in raw]
    if missing:
        raise CheckpointError(
            f"model.path {path}: LLaDA config.json lacks {', '.join(missing)} (LLaDA-format configs carry them)"
        )
    problems = unsupported_settings(raw)
    if problems:
        raise CheckpointError(f"model.path {path}: unsupported LLaDA settings: {'; '.join(problems)}")
    values = {key: value for key, value in raw.items() if key not in ("auto_map", "model_type")}
    try:
        return LLaDAConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"model.path {path}: invalid LLaDA config.json: {err}") from err


def _check_loading_info(path: Path, info: dict[str, Any], strict: bool) -> None:
    """Missing weights would silently stay at random init; for the native model an unexpected tensor means
    the config describes a different network than the weights."""
    mismatched = [
        f"{key} ({tuple(saved)} in the checkpoint, {tuple(expected)} from config.json)"
        for key, saved, expected in sorted(info.get("mismatched_keys") or [])
    ]
    problems = {"wrongly shaped": mismatched, "missing": sorted(str(key) for key in info.get("missing_keys") or [])}
    unexpected = sorted(str(key) for key in info.get("unexpected_keys") or [])
    if strict:
        problems["unexpected"] = unexpected
    elif unexpected:
        logger.warning(
            "model.path %s: %d weight tensor(s) not used by the model, e.g. %s",
            path,
            len(unexpected),
            ", ".join(unexpected[:3]),
        )
    for kind, keys in problems.items():
        if keys:
            raise CheckpointError(f"model.path {path}: {len(keys)} {kind} weight tensor(s), e.g. {', '.join(keys[:3])}")


def _special_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str) -> tuple[int, int, int]:
    """Config ids first: a model's config names the ids it was trained with (for LLaDA the config's EOS,
    126081, is the token completions are padded with, which is what early exit looks for)."""
    config = model.config

    def first(*values: Any) -> int | None:
        for value in values:
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        return None

    mask_id = first(getattr(config, "mask_token_id", None), tokenizer.mask_token_id)
    if mask_id is None:
        raise CheckpointError(
            f"model.path {where}: no mask token id: set mask_token_id in config.json or a mask_token in the tokenizer"
        )
    eos_id = first(getattr(config, "eos_token_id", None), tokenizer.eos_token_id)
    if eos_id is None:
        raise CheckpointError(
            f"model.path {where}: no EOS token id: set eos_token_id in config.json or an eos_token in the tokenizer"
        )
    pad_id = first(getattr(config, "pad_token_id", None), tokenizer.pad_token_id)
    if pad_id is None:
        pad_id = eos_id
    rows = model.get_input_embeddings().num_embeddings
    for name, value in (("mask", mask_id), ("eos", eos_id), ("pad", pad_id)):
        if not 0 <= value < rows:
            raise CheckpointError(
                f"model.path {where}: {name} token id {value} is outside the model's {rows} embeddings"
            )
    return mask_id, eos_id, pad_id


@contextmanager
def no_transformers_progress() -> Iterator[None]:
    """transformers draws its own bars ("Writing model shards" in `save_pretrained`, "Loading weights" in
    `from_pretrained`); from a Ray actor they reach the driver's log as lines of their own and break the
    training bar at every checkpoint and every worker restart."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
