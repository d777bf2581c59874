"""Mask predictors: the built-in LLaDA-architecture model and loading of checkpoint directories."""

from transformers import AutoConfig, AutoModel

from common.model.llada import LLaDAConfig, LLaDAModelLM
from common.model.tiny import build_tiny_model

AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)

__all__ = ["LLaDAConfig", "LLaDAModelLM", "build_tiny_model"]
