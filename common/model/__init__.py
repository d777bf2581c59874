"""Mask predictors: the built-in LLaDA-architecture model and loading of checkpoint directories."""

from transformers import AutoConfig, AutoModel

from common.model.llada import LLaDAConfig, LLaDAModelLM
from common.model.tiny import build_tiny_model

AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)

from common.model.loading import Policy, load_policy, mask_predictor_logits, save_policy  # noqa: E402
from common.model.tokenizer import build_tiny_tokenizer  # noqa: E402

__all__ = [
    "LLaDAConfig",
    "LLaDAModelLM",
    "Policy",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "load_policy",
    "mask_predictor_logits",
    "save_policy",
]
