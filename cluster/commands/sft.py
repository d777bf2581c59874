"""`agrpo sft`: masked-diffusion supervised fine-tuning of the base policy (learner/sft.py)."""

from __future__ import annotations

import argparse
import sys

from cluster.commands.options import Alias, add_config_options, resolve_config

ALIASES = (Alias("--output", "sft.output"),)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sft",
        help="Masked-diffusion SFT of the policy on the task's training items; saves a checkpoint directory.",
        description="Fine-tune model.path (tiny or a checkpoint directory) with LLaDA's masked-diffusion SFT "
        "loss on the train split of data.*, then save it (safetensors + tokenizer). Settings: the sft.* "
        "section of the config (`agrpo config show`).",
    )
    parser.add_argument("--device", default="auto", help="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    add_config_options(parser, ALIASES, "YAML config (default: the built-in defaults).", "sft.steps=200")
    parser.set_defaults(func=run)


def pick_device(name: str) -> str:
    """`auto` means the GPU when there is one; an unavailable CUDA device is a user error."""
    import torch

    from common.errors import UserError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device {name!r}: must be auto, cpu, cuda or cuda:N")
    return name


def run(args: argparse.Namespace) -> int:
    from learner.sft import run_sft

    config, _ = resolve_config(args, ALIASES, training=True)
    result = run_sft(config, device=pick_device(args.device), progress=True)
    tail = result.losses[-20:]
    print(f"sft: {len(result.losses)} steps, final loss {sum(tail) / len(tail):.4f}", file=sys.stderr)
    print(f"saved the fine-tuned policy to {result.output}")
    return 0
