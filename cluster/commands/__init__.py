"""The `agrpo` subcommands, one module each."""

from __future__ import annotations

import argparse

LOADING_FLAGS = ("trust_remote_code", "logits_shift", "allow_pickle")


def add_loading_flags(parser: argparse.ArgumentParser) -> None:
    """The `model.*` switches a checkpoint directory may need; set, each turns its config field on."""
    from common.config import ModelConfig

    for name in LOADING_FLAGS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            action="store_true",
            default=None,
            help=f"Set model.{name}: {ModelConfig.model_fields[name].description}",
        )


def loading_overrides(args: argparse.Namespace) -> dict[str, bool]:
    """The `model.*` fields the loading flags set (only those given on the command line)."""
    return {name: True for name in LOADING_FLAGS if getattr(args, name)}
