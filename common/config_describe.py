"""The resolved config with every field's description: what `agrpo config show --describe` prints.

The descriptions come from the schema itself (each field's `description`, each section's docstring), so they
cannot drift from the code; they are YAML comments, so the output loads back as the same config.
"""

from __future__ import annotations

import textwrap

import yaml
from pydantic import BaseModel

from common.config import Config, section_in

DESCRIBE_WIDTH = 100


def describe_config(config: Config) -> str:
    """The resolved config as YAML with every field's description as a comment above it.

    It loads back to the same config (comments are YAML comments), so it can be saved and edited as a recipe.
    """
    lines: list[str] = []
    _describe_section(config, 0, lines)
    return "\n".join(lines) + "\n"


def _comment(text: str, indent: int, lines: list[str], hang: str = "") -> None:
    pad = " " * indent
    width = DESCRIBE_WIDTH - indent - 2
    for line in textwrap.wrap(" ".join(text.split()), width=width, subsequent_indent=hang):
        lines.append(f"{pad}# {line}")


def _describe_section(section: BaseModel, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    dumped = section.model_dump(mode="json")
    for name, field in type(section).model_fields.items():
        _comment(field.description or "", indent, lines)
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _describe_section(value, indent + 2, lines)
            continue
        item = section_in(field.annotation)
        if item is not None:
            for key, sub in item.model_fields.items():
                _comment(f"- {key}: {sub.description}", indent, lines, hang="  ")
        text = yaml.safe_dump({name: dumped[name]}, sort_keys=False, width=DESCRIBE_WIDTH - indent)
        lines.extend(f"{pad}{line}" for line in text.splitlines())
