"""A checkpoint directory that ships its own modeling code (as Dream does), for loading and CLI tests."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from common.model.tokenizer import build_tiny_tokenizer

TOY_MODELING = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class ToyConfig(PretrainedConfig):
    model_type = "agrpo_toy_remote"

    def __init__(self, vocab_size=105, hidden=8, **kwargs):
        self.vocab_size = vocab_size
        self.hidden = hidden
        super().__init__(**kwargs)


class ToyModel(PreTrainedModel):
    """Each position mixes in the mean of the keys it may see, so masks and positions both matter."""

    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden)
        self.positions = nn.Embedding(64, config.hidden)
        self.lm_head = nn.Linear(config.hidden, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        b, s = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(s).expand(b, s)
        if attention_mask is None:
            attention_mask = torch.ones(b, 1, s, s, dtype=torch.bool)
        h = self.embed_tokens(input_ids) + self.positions(position_ids)
        weights = attention_mask[:, 0].float()
        mixed = weights @ h / weights.sum(-1, keepdim=True)
        return MaskedLMOutput(logits=self.lm_head(torch.tanh(h + mixed)))
'''


def write_toy_remote_dir(path: Path) -> torch.nn.Module:
    """Write modeling code, config.json with auto_map, weights and tokenizer; return the model they hold."""
    (path / "modeling_toy.py").write_text(TOY_MODELING)
    spec = importlib.util.spec_from_file_location(f"agrpo_test_toy_{abs(hash(path))}", path / "modeling_toy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.ToyModel(module.ToyConfig(eos_token_id=1, pad_token_id=0))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    config = model.config.to_dict()
    config["auto_map"] = {"AutoConfig": "modeling_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"}
    (path / "config.json").write_text(json.dumps(config))
    build_tiny_tokenizer().save_pretrained(path)
    return model
