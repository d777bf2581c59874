"""Model directories that plain transformers loads, with any transformers version agrpo supports.

Every model directory agrpo writes (`save_policy`, the learner's checkpoints, `agrpo sft`) goes through
`save_model_directory`, so each one is self-contained:

- weights (safetensors) and config.json; for the native LLaDA class (and a model loaded with its own code)
  also the modeling files and `auto_map`, so `AutoModel.from_pretrained(dir, trust_remote_code=True)` works
  without agrpo (common/model/llada.py registers its classes for that);
- `tie_word_embeddings` always written: transformers 5 leaves it out unless the config class declares it, and
  4.x then assumes true and ties any `lm_head` to the input embeddings, replacing the trained head;
- the tokenizer, under a class name both transformers majors know: transformers 5 saves a fast tokenizer
  as `TokenizersBackend`, a name 4.x does not have, while both read `PreTrainedTokenizerFast` (the name 4.x
  saved, and 5.x's alias of the same class);
- `manifest.json`, the SHA-256 of every file, written last and checked when agrpo loads the directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.checkpoint import write_manifest

CONFIG, TOKENIZER_CONFIG = "config.json", "tokenizer_config.json"
# Tokenizer classes transformers 5 writes that 4.x cannot import -> the name both read for the same tokenizer.
PORTABLE_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def save_model_directory(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Model, tokenizer and manifest in `directory`; `state_dict` replaces the model's own weights (the learner's
    full, merged weights under ZeRO-3 or LoRA). Anything already in the directory is covered by the manifest."""
    directory = Path(directory)
    model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
    explicit_tying(model, directory)
    tokenizer.save_pretrained(directory)
    portable_tokenizer_config(directory)
    write_manifest(directory)


def explicit_tying(model: PreTrainedModel, directory: Path) -> None:
    """Write `tie_word_embeddings` into config.json when absent: whether the output head is the input embedding."""
    path = directory / CONFIG
    values = json.loads(path.read_text())
    if "tie_word_embeddings" in values:
        return
    head = model.get_output_embeddings()
    values["tie_word_embeddings"] = head is not None and head.weight is model.get_input_embeddings().weight
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def portable_tokenizer_config(directory: Path) -> None:
    """Rename a tokenizer class only transformers 5 knows to the one every version since 4.x reads."""
    path = directory / TOKENIZER_CONFIG
    if not path.is_file():
        return
    values = json.loads(path.read_text())
    portable = PORTABLE_TOKENIZER_CLASSES.get(values.get("tokenizer_class"))
    if portable is not None:
        values["tokenizer_class"] = portable
        path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n")
