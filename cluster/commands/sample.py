"""`agrpo sample`: run the diffusion sampler on prompts; print the completions or write them as JSONL.

Settings are one config like every command's (`--config`, `key.sub=value` overrides, and flags that are
aliases of `sampler.*`, `model.*` and `seed`), validated by the same schema as training, so a bad value is the
same one-line error a config file would give; only the rules that concern RL training (e.g. temperature > 0)
are left out. Each output line holds the prompt, the decoded completion (cut at the first EOS) and the token
ids, so a user can look at what a checkpoint generates without starting a cluster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from cluster.commands.checkpoints import resolve_model
from cluster.commands.options import (
    LOADING_ALIASES,
    Alias,
    add_config_options,
    block_settings,
    check_output_file,
    merged_settings,
    resolve_config,
)
from common.errors import DataError, UserError
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
ALIASES = (
    Alias(
        "--model",
        "model.path",
        help="`tiny` (the built-in model), a model directory, a checkpoint step-NNNNNNNN directory or a run "
        "directory (its latest checkpoint).",
    ),
    Alias("--dtype", "model.dtype"),
    *(Alias(f"--{name.replace('_', '-')}", f"sampler.{name}") for name in SAMPLER_FLAGS),
    Alias("--no-early-exit", "sampler.early_exit", switch=False),
    Alias("--seed", "seed"),
    *LOADING_ALIASES,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sample",
        help="Sample completions for prompts with the diffusion sampler.",
        description="Sample one completion per prompt with the diffusion sampler and print them (or write JSONL "
        "with --output). Settings: --config (default: the built-in defaults), then KEY=VALUE overrides; each "
        "flag below sets one config field. Every key: `agrpo config show --describe`.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="Prompt text; repeat for several prompts.")
    source.add_argument(
        "--prompt-file",
        help="One prompt per line (blank lines skipped), or a .jsonl file whose lines hold a `prompt` field.",
    )
    parser.add_argument("--chat", action="store_true", help="Wrap each prompt in the tokenizer's chat template.")
    parser.add_argument("--device", default="auto", help="`auto` (CUDA if present), `cpu`, `cuda`, `cuda:1`...")
    parser.add_argument(
        "--output", default=None, help="JSONL file to write (parent folders are created); without it, print them."
    )
    add_config_options(parser, ALIASES, "YAML config whose model.*, sampler.* and seed apply.", "sampler.top_k=50")
    parser.set_defaults(func=run)


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
            f"sampler.gen_length = {gen_length}: longest prompt ({longest} tokens) + gen_length exceeds the "
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


def _completion_text(tokenizer: Any, ids: list[int], eos_id: int) -> tuple[str, int]:
    length = ids.index(eos_id) if eos_id in ids else len(ids)
    return tokenizer.decode(ids[:length], skip_special_tokens=True), length


def run(args: argparse.Namespace) -> int:
    path = merged_settings(args, ALIASES)[0].get("model", {}).get("path", "tiny")
    model_path = resolve_model("model.path", path).path
    config, _ = resolve_config(args, ALIASES, settings=block_settings(args, ALIASES, model_path))
    cfg = config.sampler
    model_cfg = config.model.model_copy(update={"path": model_path})
    texts = args.prompt if args.prompt is not None else read_prompts(Path(args.prompt_file))
    device = _device(args.device)
    output = check_output_file("--output", Path(args.output)) if args.output else None

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
        torch.Generator(device=device).manual_seed(config.seed),
        banned_ids=policy.banned_ids,
        logits_fn=lambda ids, mask: mask_predictor_logits(policy, ids, mask),
        progress=True,
    )
    rows = []
    for i, text in enumerate(texts):
        ids = record.completion_ids[i].tolist()
        completion, length = _completion_text(policy.tokenizer, ids, policy.eos_id)
        rows.append(
            {
                "prompt": text,
                "text": completion,
                "num_tokens": length,
                "prompt_ids": record.prompt_ids[i].tolist(),
                "completion_ids": ids,
            }
        )
    if output is None:
        for i, row in enumerate(rows, start=1):
            print(f"--- {i}/{len(rows)}: {row['prompt']!r} ({row['num_tokens']} tokens)")
            print(row["text"])
        return 0
    with output.open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"wrote {len(rows)} samples to {output}")
    return 0
