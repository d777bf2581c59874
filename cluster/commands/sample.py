"""`agrpo sample`: run the diffusion sampler on prompts and write the completions as JSONL.

The settings go through the same `SamplerConfig` schema as training, so a bad value is the same
one-line error a config file would give. Each output line holds the prompt, the decoded completion
(cut at the first EOS) and the token ids, so a user can look at what a checkpoint generates without
starting a cluster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from cluster.commands import add_loading_flags, loading_overrides
from common.config import ModelConfig, SamplerConfig, format_validation_error
from common.errors import ConfigError, DataError, UserError
from common.model.block_families import declared_block_size
from common.model.loading import load_policy, mask_predictor_logits
from rollout.sampler import sample_batches

SAMPLER_FLAGS = (
    "gen_length",
    "block_length",
    "steps",
    "temperature",
    "top_k",
    "top_p",
    "remasking",
    "batch_size",
    "kv_cache",
)


def register(sub: argparse._SubParsersAction) -> None:
    defaults = SamplerConfig()
    parser = sub.add_parser("sample", help="Sample completions for prompts with the diffusion sampler.")
    parser.add_argument("--model", default="tiny", help="`tiny` (built-in, seed 0) or a checkpoint directory.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="Prompt text; repeat for several prompts.")
    source.add_argument(
        "--prompt-file",
        help="One prompt per line (blank lines skipped), or a .jsonl file whose lines hold a `prompt` field.",
    )
    parser.add_argument("--chat", action="store_true", help="Wrap each prompt in the tokenizer's chat template.")
    for name in SAMPLER_FLAGS:
        kind = str if name in ("remasking", "kv_cache") else type(getattr(defaults, name))
        default, text = getattr(defaults, name), SamplerConfig.model_fields[name].description
        if name == "block_length":
            default, text = None, f"{text} Default: a block-causal model's block size, else --gen-length (one block)."
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=text)
    parser.add_argument("--no-early-exit", action="store_true", help="Sample every block even after all-EOS.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampler's random draws.")
    parser.add_argument("--device", default="auto", help="`auto` (CUDA if present), `cpu`, `cuda`, `cuda:1`...")
    parser.add_argument("--dtype", default="auto", help="Parameter dtype: auto, float32, bfloat16 or float16.")
    add_loading_flags(parser)
    parser.add_argument("--output", required=True, help="JSONL file to write (parent folders are created).")
    parser.set_defaults(func=run)


def _validated(schema: type[SamplerConfig] | type[ModelConfig], section: str, values: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise ConfigError(f"{section}: {format_validation_error(err)}") from None


def read_prompts(path: Path) -> list[str]:
    """Prompts of a text file (one per non-blank line) or of a .jsonl file (`prompt` field per line)."""
    if not path.is_file():
        raise DataError(f"--prompt-file {path}: not found")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise DataError(f"{path}:{number}: expected an object with a string `prompt` field")
        prompts.append(row["prompt"])
    if not prompts:
        raise DataError(f"--prompt-file {path}: holds no prompts")
    return prompts


def _encode(tokenizer: Any, prompts: list[str], chat: bool) -> list[list[int]]:
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UserError("--chat: this model's tokenizer has no chat template")
    encoded = []
    for index, text in enumerate(prompts):
        if chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        try:
            encoded.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        except Exception as err:  # tokenizers raises a bare Exception for text outside its vocabulary
            raise DataError(f"prompt {index + 1} ({text[:40]!r}): cannot be tokenized: {err}") from None
    return encoded


def _check_length(model: Any, prompts: list[list[int]], gen_length: int) -> None:
    """Positions past the trained length would give silently degraded logits, so refuse them."""
    limit = getattr(model.config, "max_sequence_length", None) or getattr(model.config, "max_position_embeddings", None)
    longest = max(len(p) for p in prompts)
    if limit is not None and longest + gen_length > limit:
        raise UserError(
            f"--gen-length {gen_length}: longest prompt ({longest} tokens) + gen_length exceeds the "
            f"model's max_sequence_length = {limit}"
        )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def _writable(output: Path) -> Path:
    """Fail before minutes of sampling, not after, when the output cannot be written."""
    if output.is_dir():
        raise UserError(f"--output {output}: is a directory, expected a file path")
    blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"--output {output}: {blocker} is a file, not a folder")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        existed = output.exists()
        with output.open("a", encoding="utf-8"):
            pass
    except OSError as err:
        raise UserError(f"--output {output}: cannot be written ({err.strerror})") from None
    if not existed:
        output.unlink()
    return output


def _completion_text(tokenizer: Any, ids: list[int], eos_id: int) -> tuple[str, int]:
    length = ids.index(eos_id) if eos_id in ids else len(ids)
    return tokenizer.decode(ids[:length], skip_special_tokens=True), length


def run(args: argparse.Namespace) -> int:
    sampler_values = {name: getattr(args, name) for name in SAMPLER_FLAGS}
    sampler_values["early_exit"] = not args.no_early_exit
    model_cfg = _validated(ModelConfig, "model", {"path": args.model, "dtype": args.dtype, **loading_overrides(args)})
    if args.block_length is None:
        sampler_values["block_length"] = declared_block_size(model_cfg) or args.gen_length
    cfg = _validated(SamplerConfig, "sampler", sampler_values)
    texts = args.prompt if args.prompt is not None else read_prompts(Path(args.prompt_file))
    device = _device(args.device)
    output = _writable(Path(args.output))

    policy = load_policy(model_cfg, device=device)
    policy.model.eval()
    prompts = _encode(policy.tokenizer, texts, args.chat)
    _check_length(policy.model, prompts, cfg.gen_length)
    record = sample_batches(
        policy.model,
        prompts,
        cfg,
        policy.mask_id,
        policy.eos_id,
        policy.pad_id,
        torch.Generator(device=device).manual_seed(args.seed),
        banned_ids=policy.banned_ids,
        logits_fn=lambda ids, mask: mask_predictor_logits(policy, ids, mask),
        progress=True,
    )
    with output.open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            ids = record.completion_ids[i].tolist()
            completion, length = _completion_text(policy.tokenizer, ids, policy.eos_id)
            row = {
                "prompt": text,
                "text": completion,
                "num_tokens": length,
                "prompt_ids": record.prompt_ids[i].tolist(),
                "completion_ids": ids,
            }
            out.write(json.dumps(row) + "\n")
    print(f"wrote {len(texts)} samples to {output}")
    return 0
