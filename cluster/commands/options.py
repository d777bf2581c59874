"""The one form of every command: `--config FILE`, `key.sub=value` overrides, and a few flags that are aliases.

An alias is the override it names and nothing else: `--batch-size 8` is `evaluation.batch_size=8`, its value
read as YAML like an override's, so its default is the config's (the schema's without a file), never one of
its own. A field given both ways is refused rather than settled by a precedence rule nobody remembers.
Settings the schema has no field for (the checkpoint to evaluate, the prompts to sample, output paths) stay
plain arguments of their command.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from common.config import build_config, parse_override, read_yaml, schema_default, schema_field, set_value
from common.errors import ConfigError, UserError

if TYPE_CHECKING:
    from common.config import Config

BUILT_IN = "built-in defaults"
OVERRIDES = "overrides"
"""How an error names the values that came from the command line (overrides and aliases alike), as
`load_config` does."""


@dataclass(frozen=True)
class Alias:
    """A flag that sets one config field. `switch` makes it a flag without a value that sets `switch`;
    `several` collects one or more values into a list."""

    flag: str
    key: str
    switch: Any = None
    several: bool = False
    help: str | None = None

    @property
    def dest(self) -> str:
        return "alias_" + self.key.replace(".", "__")

    def describe(self) -> str:
        """The flag's help: the field it sets, the field's description and the built-in default."""
        path = self.key.split(".")
        target = self.key if self.switch is None else f"{self.key}={_shown(self.switch)}"
        field = schema_field(path)
        text = self.help or ((field.description or "") if field is not None else "")
        if self.switch is None and field is not None:
            text += f" (default: the config's; built in: {_shown(schema_default(path))})"
        return f"Sets {target}: {text}".replace("%", "%%")


def _shown(value: Any) -> str:
    """A value as YAML on one line (`true`, `[0.9, 0.99]`), as an override would spell it."""
    if value is None:
        return "none"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


LOADING_ALIASES = (
    Alias("--trust-remote-code", "model.trust_remote_code", switch=True),
    Alias("--logits-shift", "model.logits_shift", switch=True),
    Alias("--allow-pickle", "model.allow_pickle", switch=True),
)
"""The `model.*` switches a checkpoint directory may need (docs/models.md)."""


def add_config_options(
    parser: argparse.ArgumentParser, aliases: tuple[Alias, ...], config_help: str, example: str
) -> None:
    """`--config FILE`, the alias flags, and the `KEY=VALUE` overrides (last, as positional arguments);
    `example` is an override the command's help shows."""
    parser.add_argument("--config", default=None, metavar="FILE", help=config_help)
    for alias in aliases:
        if alias.switch is not None:
            parser.add_argument(alias.flag, dest=alias.dest, action="store_const", const=True, help=alias.describe())
        else:
            parser.add_argument(
                alias.flag,
                dest=alias.dest,
                metavar=alias.key.rsplit(".", 1)[-1].upper(),
                nargs="+" if alias.several else None,
                help=alias.describe(),
            )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"Any config field, e.g. {example} (a list item by its index: rewards.plugins.0.weight=0.5); every "
        "key with its description: `agrpo config show --describe`.",
    )


def _read(raw: str, alias: Alias) -> Any:
    return parse_override(f"{alias.key}={raw}")[1]


def _given(args: argparse.Namespace, aliases: tuple[Alias, ...]) -> list[tuple[Alias, Any]]:
    given = []
    for alias in aliases:
        raw = getattr(args, alias.dest, None)
        if raw is None:
            continue
        if alias.switch is not None:
            given.append((alias, alias.switch))
        elif alias.several:
            given.append((alias, [_read(item, alias) for item in raw]))
        else:
            given.append((alias, _read(raw, alias)))
    return given


def given_aliases(args: argparse.Namespace, aliases: tuple[Alias, ...]) -> dict[str, Any]:
    """Config key -> value for each alias flag on the command line."""
    return {alias.key: value for alias, value in _given(args, aliases)}


def merged_settings(
    args: argparse.Namespace,
    aliases: tuple[Alias, ...],
    saved: dict[str, Any] | None = None,
    saved_source: str | None = None,
    settings: dict[str, tuple[str, Any]] | None = None,
) -> tuple[dict[str, Any], str, bool]:
    """The unvalidated config dict of a command (see `resolve_config`), where it came from, and whether the
    command line changed it."""
    if args.config:
        data, source = read_yaml(args.config), str(args.config)
    elif saved is not None:
        data, source = copy.deepcopy(saved), saved_source or "saved config"
    else:
        data, source = {}, BUILT_IN
    overridden = {}
    for text in args.overrides:
        path, value = parse_override(text)
        set_value(data, path, value, f"override {text!r}")
        overridden[".".join(path)] = text
    flags = {alias.key: (alias.flag, value) for alias, value in _given(args, aliases)}
    for key, (flag, value) in {**flags, **(settings or {})}.items():
        if key in overridden:
            raise ConfigError(f"{flag} and {overridden[key]}: both set {key}; give it once")
        set_value(data, key.split("."), value, flag)
    return data, source, bool(args.overrides or flags or settings)


def resolve_config(
    args: argparse.Namespace,
    aliases: tuple[Alias, ...],
    saved: dict[str, Any] | None = None,
    saved_source: str | None = None,
    training: bool = False,
    settings: dict[str, tuple[str, Any]] | None = None,
) -> tuple[Config, str]:
    """The config of a command and where it came from: `--config` (else `saved`, else the schema's defaults),
    then the overrides, then the aliases and the command's own `settings` (key -> (flag, value)). Commands
    that do not train validate without the training-only rules."""
    data, source, changed = merged_settings(args, aliases, saved, saved_source, settings)
    parts = ([] if source == BUILT_IN else [source]) + ([OVERRIDES] if changed else [])
    return build_config(data, " + ".join(parts) or "config", training=training), source


def is_given(args: argparse.Namespace, aliases: tuple[Alias, ...], key: str) -> bool:
    """Whether the command line or `--config` sets `key` (a saved config does not count)."""
    if key in given_aliases(args, aliases) or any(".".join(parse_override(t)[0]) == key for t in args.overrides):
        return True
    node: Any = read_yaml(args.config) if args.config else {}
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node is not None


def block_settings(
    args: argparse.Namespace,
    aliases: tuple[Alias, ...],
    model_path: str,
    saved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A block-causal model samples in its own attention blocks: unless `sampler.block_length` is given, it is
    the model's block size (a different one given explicitly is refused by the sampler). Only the `model`
    section is read here, so the rest of the config is validated once, with the block length in place."""
    from common.config import ModelConfig
    from common.model.block_families import declared_block_size  # transformers: imported only when needed

    data, _, _ = merged_settings(args, aliases, saved)
    try:
        model = ModelConfig.model_validate({**(data.get("model") or {}), "path": model_path})
    except ValueError:
        return {}  # the full validation names the problem
    size = declared_block_size(model)
    if size is None or is_given(args, aliases, "sampler.block_length"):
        return {}
    return {"sampler.block_length": ("the model's block size", size)}


def check_output_file(flag: str, output: Path) -> Path:
    """Fail before minutes of work, not after, when an output file cannot be written."""
    if output.is_dir():
        raise UserError(f"{flag} {output}: is a directory, expected a file path")
    blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{flag} {output}: {blocker} is a file, not a folder")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        existed = output.exists()
        with output.open("a", encoding="utf-8"):
            pass
    except OSError as err:
        raise UserError(f"{flag} {output}: cannot be written ({err.strerror})") from None
    if not existed:
        output.unlink()
    return output
