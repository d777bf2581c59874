"""LoRA adapters on the policy (peft), and how an adapted policy looks to a plain model.

Which modules get adapters: every `nn.Linear` whose last name component is in `learner.lora.target_modules`
*and* that sits inside the repeated transformer blocks (some component of its name is a layer index). LLaDA
also calls its output head `ff_out` (`model.transformer.ff_out`), and peft matches target names by suffix, so
with the released recipe's list (which contains `ff_out`) peft would put an adapter on the vocabulary head
too. Here the head is left out on purpose: `LLaDAModelLM.forward` computes logits with
`F.linear(x, ff_out.weight)` instead of calling the module, so an adapter on the head would never enter the
forward pass; it would get no gradient, train nothing, yet still be merged and broadcast. Selecting by layer
index keeps the rule model-agnostic (Dream's `lm_head` is excluded the same way). Passing peft the explicit
full module names instead of suffixes makes the choice visible in one place.

Rollout workers hold a plain model, so the learner exposes merged weights `W + (alpha / r) * B @ A` under
the plain model's parameter names, in the plain model's `named_parameters` order. A checkpoint keeps both: the
merged model directory, and in its `adapter/` subdirectory the adapters as a PEFT adapter directory that
`PeftModel.from_pretrained(base, ".../model/adapter")` applies to the base (`save_adapter`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from common.config import LoraConfig
from common.errors import ConfigError

ADAPTER = "default"
ADAPTER_DIR = "adapter"  # the PEFT adapter's subdirectory of a checkpoint's model directory
_PEFT_PREFIX = "base_model.model."
_BASE_LAYER = ".base_layer."


def lora_module_names(model: nn.Module, targets: list[str]) -> list[str]:
    """Full names of the linear layers inside transformer blocks whose own name is a target."""
    wanted = set(targets)
    names = []
    for name, module in model.named_modules():
        parts = name.split(".")
        in_block = any(part.isdigit() for part in parts[:-1])
        if isinstance(module, nn.Linear) and parts[-1] in wanted and in_block:
            names.append(name)
    return names


def apply_lora(model: nn.Module, cfg: LoraConfig, seed: int = 0) -> PeftModel:
    """Wrap `model` with adapters; only adapter parameters keep `requires_grad`.

    peft draws `lora_A` from the global RNG; a fixed seed gives every rank (and a resumed run) the same
    adapters whatever the process did before. Call it before moving the model to a GPU so the draw is on CPU.
    """
    names = lora_module_names(model, cfg.target_modules)
    if not names:
        raise ConfigError(
            f"learner.lora.target_modules = {cfg.target_modules}: no linear layer inside the transformer "
            "blocks has one of these names"
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=names, bias="none"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, peft_cfg)


def is_adapter_param(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def plain_name(peft_name: str) -> str:
    """`base_model.model.x.q_proj.base_layer.weight` -> `x.q_proj.weight`, the name in the plain model."""
    return peft_name.removeprefix(_PEFT_PREFIX).replace(_BASE_LAYER, ".")


def lora_layers_by_weight(module: nn.Module) -> dict[int, LoraLayer]:
    """Map id(base weight) -> the LoRA layer that adapts it, to know which weights are merged."""
    return {
        id(layer.get_base_layer().weight): layer
        for layer in module.modules()
        if isinstance(layer, LoraLayer) and ADAPTER in layer.lora_A
    }


def save_adapter(model: PeftModel, adapters: dict[str, torch.Tensor], directory: Path, base: str | None) -> None:
    """`adapter_config.json` + `adapter_model.safetensors` of `adapters` (the trainable parameters under the peft
    model's own names, as `LearnerEngine.model_state` returns them: full tensors, also under ZeRO-3).

    `base` is the base model's directory, recorded as `base_model_name_or_path`; None for the built-in tiny
    model, which has no directory (it is rebuilt from `model.tiny` and the seed).
    """
    model.peft_config[ADAPTER].base_model_name_or_path = base
    model.save_pretrained(str(directory), state_dict=adapters, safe_serialization=True)
