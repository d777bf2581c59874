"""The one config schema of agrpo.

Every field has a default that runs on a 2-core CPU machine and a description; validators state the
rule they enforce so that a bad value produces one line naming the field path, the value and the rule.
`load_config` reads a YAML file (common/config_file.py) and applies `key.sub=value` overrides on top of it; the
sections are in common/config_sections.py (model and training) and common/config_run.py (the run around it).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, model_validator
from pydantic.fields import FieldInfo

from common.config_file import check_document, read_yaml
from common.config_run import (
    CheckpointConfig,
    ClusterConfig,
    DataConfig,
    EvalConfig,
    MetricsConfig,
    RewardPluginConfig,
    RewardsConfig,
    SFTConfig,
)
from common.config_sections import (
    AlgorithmConfig,
    DiffuGRPOConfig,
    LearnerConfig,
    LoraConfig,
    ModelConfig,
    RolloutConfig,
    SamplerConfig,
    Section,
    TinyModelConfig,
)
from common.errors import ConfigError, brief
from common.task_names import registered_tasks, task_module_path

__all__ = [
    "DEFAULT_RECIPE",
    "AlgorithmConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DiffuGRPOConfig",
    "EvalConfig",
    "LearnerConfig",
    "LoraConfig",
    "MetricsConfig",
    "ModelConfig",
    "RewardPluginConfig",
    "RewardsConfig",
    "RolloutConfig",
    "SFTConfig",
    "SamplerConfig",
    "Section",
    "TinyModelConfig",
    "apply_overrides",
    "build_config",
    "dump_config",
    "format_validation_error",
    "load_config",
    "parse_override",
    "read_yaml",
    "schema_default",
    "schema_field",
    "section_in",
    "set_value",
]


DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "deploy" / "recipes" / "tiny.yaml"
"""What `agrpo train` and `agrpo config show` use without --config: the embedded default run."""

MAX_SEED = 2**63 - 1
"""Seeds feed numpy's SeedSequence (non-negative only) and torch generators (at most 64 bits)."""


class Config(Section):
    """A whole run."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of every random stream (data, sampler, timesteps, init).")
    run_dir: str = Field("runs/tiny", description="Directory for config, metrics, plots and checkpoints.")
    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description=SamplerConfig.__doc__)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig, description=AlgorithmConfig.__doc__)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description=RolloutConfig.__doc__)
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description=LearnerConfig.__doc__)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig, description=RewardsConfig.__doc__)
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description=ClusterConfig.__doc__)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description=CheckpointConfig.__doc__)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description=MetricsConfig.__doc__)
    evaluation: EvalConfig = Field(default_factory=EvalConfig, description=EvalConfig.__doc__)
    sft: SFTConfig = Field(default_factory=SFTConfig, description=SFTConfig.__doc__)

    @model_validator(mode="after")
    def _cross_section(self, info: ValidationInfo) -> Config:
        try:
            self.evaluation.sampler(self.sampler)
        except ValidationError as err:
            raise ValueError(f"evaluation.steps = {self.evaluation.steps}: {format_validation_error(err)}") from None
        if (info.context or {}).get("training", True):
            self._training_rules()
        return self

    def _training_rules(self) -> None:
        """Rules about RL training only; commands that just sample or evaluate (`agrpo sample`, `agrpo eval`)
        validate without them, so that e.g. greedy sampling (temperature 0) is not refused there."""
        k = self.algorithm.k
        if isinstance(k, int) and k > self.sampler.steps:
            raise ValueError(
                f"algorithm.k = {k}: must be at most sampler.steps = {self.sampler.steps} (use `all` for the exact sum)"
            )
        if self.algorithm.name == "agrpo" and self.sampler.temperature == 0:
            raise ValueError(
                "sampler.temperature = 0: training rollouts need temperature > 0 (greedy has no log-probs)"
            )
        tiny = self.model.tiny
        builds_tiny = self.model.path == "tiny" or self.model.build_if_missing == "sft"
        if builds_tiny and tiny.attention == "block_causal" and self.sampler.block_length != tiny.block_size:
            # The sampler's blocks must be the model's attention blocks, or no cache can be exact.
            raise ValueError(
                f"sampler.block_length = {self.sampler.block_length}: must equal model.tiny.block_size = "
                f"{tiny.block_size} for a block_causal model"
            )
        _check_task_rewards(self)
        tiny = self.model.tiny.max_sequence_length
        if self.model.path == "tiny" and self.sampler.gen_length >= tiny:
            raise ValueError(
                f"sampler.gen_length = {self.sampler.gen_length}: must be below model.tiny.max_sequence_length = "
                f"{tiny}, which holds the prompt and the completion"
            )
        num_items = self.evaluation.num_items
        if self.data.path is None and num_items is not None and num_items > self.data.num_eval:
            raise ValueError(
                f"evaluation.num_items = {num_items}: more than the {self.data.num_eval} generated held-out items "
                "(data.num_eval); lower it, unset it (the whole split), or raise data.num_eval"
            )
        if self.sampler.top_p < 1.0 and self.sampler.top_k == 0:
            # The record keeps each committed token's allowed set, padded to the widest one of the batch; a
            # single flat distribution would make that up to vocab-sized for every token of the batch.
            raise ValueError(
                f"sampler.top_p = {self.sampler.top_p}: training with top-p needs sampler.top_k > 0 too, to bound "
                "the allowed-token sets the trajectory record keeps (e.g. top_k 150 as the LLaDA recipes)"
            )


def _section_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the schema allows in the section at `loc` (list indices skipped), for 'did you mean'."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = section_in(getattr(field, "annotation", None))
        if model is None:
            return []
    return list(model.model_fields)


def _closest_key(name: str, keys: list[str]) -> str | None:
    """The key meant by a misspelt or decorated one: a key it extends (`lr_max` -> `lr`), else the nearest."""
    extended = [k for k in keys if name.startswith(f"{k}_") or k.startswith(f"{name}_")]
    if extended:
        return max(extended, key=len)
    close = difflib.get_close_matches(name, keys, n=1)
    return close[0] if close else None


def section_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `Section`, `list[Section] | None` or `dict[str, Section]`."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = section_in(arg)
        if found is not None:
            return found
    return None


def _task_of_reward(name: str) -> str | None:
    """The registered task whose reward the plugin `name` is (by task name or by `module:reward`), if any."""
    for task, module in registered_tasks().items():
        if name in (task, f"{module}:reward"):
            return task
    return None


def _check_task_rewards(config: Config) -> None:
    """A task's reward reads its own task's reference fields (countdown: numbers and target; gsm8k:
    answer...), so on another task's items every sample would score 0 with a KeyError, for the whole run."""
    for index, plugin in enumerate(config.rewards.plugins or []):
        task = _task_of_reward(plugin.name)
        if task is not None and task_module_path(task) != task_module_path(config.data.task):
            raise ValueError(
                f"rewards.plugins.{index}.name = {plugin.name!r}: the built-in {task} reward needs {task} items, "
                f"but data.task = {config.data.task!r} (use the {config.data.task!r} reward, or unset "
                "rewards.plugins, e.g. rewards.plugins=null, to get it)"
            )


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `field.path = value: rule`."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = _closest_key(str(e["loc"][-1]), _section_keys(e["loc"][:-1]))
            hint = f" (did you mean {close}?)" if close else ""
            lines.append(f"{path} = {brief(e.get('input'))}: unknown key{hint}")
        elif e["type"] == "value_error":
            # Validators phrase their message as `field = value: rule`; a field validator's location
            # already ends in that field, a model validator's location is the section holding it.
            loc = [str(p) for p in e["loc"]]
            if loc and msg.startswith(f"{loc[-1]} = "):
                loc = loc[:-1]
            prefix = ".".join(loc) + "." if loc else ""
            lines.append(f"{prefix}{msg}" if " = " in msg else f"{path}: {msg}")
        else:
            lines.append(f"{path} = {brief(e.get('input'))}: {msg}")
    return "; ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into a key path and a YAML-parsed value (a list item is `a.b.0.c=value`)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `key.sub=value` in a nested dict, creating sections as needed."""
    for text in overrides:
        path, value = parse_override(text)
        set_value(data, path, value, f"override {text!r}")
    return data


def set_value(data: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    """Set `path` in the nested config dict `data`; a numeric part indexes a list (`rewards.plugins.0.weight`).

    A list the file does not hold is taken from the schema's default first (`learner.betas.1=0.95`), so an
    index means the same item whether or not the file spells the list out. `what` names the setting in errors.
    """
    node: Any = data
    for depth, part in enumerate(path):
        where = ".".join(path[:depth])
        if isinstance(node, list):
            index = _list_index(part, node, where, what)
            if depth == len(path) - 1:
                node[index] = value
                return
            node = _step_into(node, index, path[: depth + 1], what)
            continue
        if depth == len(path) - 1:
            node[part] = value
            return
        if part not in node:
            node[part] = _default_container(path[: depth + 1], path[depth + 1], what)
        node = _step_into(node, part, path[: depth + 1], what)


def _list_index(part: str, items: list[Any], where: str, what: str) -> int:
    if not part.isdigit():
        raise ConfigError(f"{what}: {where} is a list; index it with 0..{len(items) - 1}, not {part!r}")
    index = int(part)
    if index >= len(items):
        raise ConfigError(
            f"{what}: {where} has {len(items)} item(s), so no item {index} (set the whole list to add items)"
        )
    return index


def _step_into(node: Any, key: str | int, path: list[str], what: str) -> Any:
    child = node[key]
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"{what}: {'.'.join(path)} is a value, not a section or a list")
    return child


def _default_container(path: list[str], next_part: str, what: str) -> dict[str, Any] | list[Any]:
    """What a key the file does not hold starts as when the override reaches inside it: a copy of the schema's
    default list when that is a list, else a new section."""
    default = schema_default(path)
    if isinstance(default, (list, tuple)):
        items = [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in default]
        _list_index(next_part, items, ".".join(path), what)
        return items
    if not next_part.isdigit():
        return {}
    if default is None:
        raise ConfigError(
            f"{what}: {'.'.join(path)} is none, so it has no item {next_part}; set the whole list, "
            f"e.g. {'.'.join(path)}=[...]"
        )
    raise ConfigError(f"{what}: {'.'.join(path)} is a value, not a section or a list")


def schema_field(path: list[str]) -> FieldInfo | None:
    """The schema's field at a dotted key path (list indices skipped), or None for a key it does not have."""
    model: Any = Config
    field = None
    for part in path:
        if part.isdigit():
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = section_in(field.annotation)
    return field


def schema_default(path: list[str]) -> Any:
    """The schema's default at a dotted key path, or None for a key it does not have."""
    field = schema_field(path)
    return None if field is None else field.get_default(call_default_factory=True)


def build_config(data: dict[str, Any], source: str = "config", training: bool = True) -> Config:
    """Validate a nested dict into a Config, or raise ConfigError with every problem on one line.

    `training=False` leaves out the rules that only RL training needs (see `Config._training_rules`).
    """
    check_document(data, source)
    try:
        return Config.model_validate(data, context={"training": training})
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, training: bool = True) -> Config:
    """Defaults, then the YAML file (if any), then the overrides."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    parts = ([str(path)] if path else []) + (["overrides"] if overrides else [])
    return build_config(data, source=" + ".join(parts) or "config", training=training)


def dump_config(config: Config) -> str:
    """The resolved config as YAML, the form saved in every run directory and checkpoint."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
