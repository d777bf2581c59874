"""Reward plugins by name, resolved and checked once at start-up.

A reward is a function, a callable object, or a class whose instances are callable (created with no
arguments once per process that resolves the plugins), called as `fn(completion, reference, **kwargs)`
and returning a float or a `RewardResult`. Only what has been registered as a reward is accepted:

- a name given with `@reward("name")` in a module listed in `rewards.modules`;
- an entry point in the `agrpo.rewards` group of an installed package;
- a task's reward: every registered task (entry point group `agrpo.tasks`) is a name mapped to
  `<task module>:reward`, imported only when used, and so is `data.task` when it is a module path;
- a dotted path `package.module:attr` to an object marked with `@reward()` (the decorator sets
  `__agrpo_reward__ = True` on it, the one marker this module reads) or to a task's reward.

Anything else (`builtins:eval`, `shutil:rmtree`, any importable callable) is refused before it is
created or called. Everything that can be wrong with a plugin (unregistered, unknown or
twice-registered name, import failure, a signature that cannot take the completion, the reference and
the configured kwargs) is a one-line `ConfigError` from `build_reward_fn`, so a run fails before its
first rollout rather than at step 500; so is a plugin whose import or constructor hangs (`build_within`). The combined scorer pickles as its spec, and the receiving
process (a Ray actor, a sandbox child) resolves the names again itself: no function object or closure
has to survive pickling.
"""

from __future__ import annotations

import importlib
import inspect
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from common.config import RewardsConfig
from common.errors import ConfigError
from common.task_names import registered_tasks, task_module_path
from rewards.outcomes import PluginOutcome, call_plugin, combine, describe_exception
from rewards.tasks import load_task
from rewards.types import RewardResult

ENTRY_POINT_GROUP = "agrpo.rewards"
MARKER = "__agrpo_reward__"
HOW_TO_REGISTER = (
    "register it with @reward('name') in a module listed in rewards.modules or as an entry point in the "
    "agrpo.rewards group, or mark it with @reward() to name it by its dotted path"
)

T = TypeVar("T")
_DECORATED: dict[str, Any] = {}


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip() or ":" in name or name != name.strip():
        raise ConfigError(
            f"reward name {name!r}: must be a non-empty string without ':' or surrounding spaces "
            "(':' marks a dotted path package.module:function)"
        )


def reward(name: str | None = None) -> Callable[[T], T]:
    """Mark a reward function or class as a plugin and, given a `name`, register it under that name
    when its module is imported.

    Without a name the object is reachable only by its dotted path `package.module:attr`. Registering
    the same object again (a module reloaded) is harmless; a different object under a taken name is an
    error at import, naming both, so two plugins never silently shadow each other.
    """
    if name is not None:
        _check_name(name)

    def register(obj: T) -> T:
        setattr(obj, MARKER, True)
        if name is None:
            return obj
        previous = _DECORATED.get(name)
        if previous is not None and _origin(previous) != _origin(obj):
            raise ConfigError(f"reward name {name!r}: registered twice, by {_origin(previous)} and {_origin(obj)}")
        _DECORATED[name] = obj
        return obj

    return register


def is_marked(obj: Any) -> bool:
    """Whether `obj` carries the plugin marker itself (read statically: no `__getattr__` can fake it)."""
    return inspect.getattr_static(obj, MARKER, None) is True


@dataclass(frozen=True)
class _Source:
    """Where a name comes from: the target `module:attr` identifies it, `load` produces the object."""

    kind: str
    target: str
    load: Callable[[], Any]


def _load_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _add(table: dict[str, _Source], name: str, source: _Source) -> None:
    _check_name(name)
    previous = table.get(name)
    if previous is not None and previous.target != source.target:
        raise ConfigError(
            f"reward name {name!r}: registered twice, by {previous.kind} {previous.target} "
            f"and {source.kind} {source.target}"
        )
    table.setdefault(name, source)


def _task_reward(task: str) -> Callable[[], Any]:
    return lambda: load_task(task).reward


def task_reward_targets(task: str | None = None) -> dict[str, str]:
    """Task name -> `module:reward` of every registered task, and of `task` when it is a module path."""
    targets = {name: f"{module}:reward" for name, module in registered_tasks().items()}
    if task is not None and task not in targets:
        targets[task] = f"{task_module_path(task)}:reward"
    return targets


def available_rewards(task: str | None = None) -> dict[str, _Source]:
    """Every registered name (task rewards, entry points, decorators), rejecting a name claimed twice.

    `task` is the configured `data.task`; when it is a module path, its reward is listed under it too.
    """
    table: dict[str, _Source] = {}
    for name, target in task_reward_targets(task).items():
        kind = "built-in" if name in registered_tasks() else "task"
        _add(table, name, _Source(kind, target, _task_reward(name)))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f" (package {ep.dist.name})" if ep.dist is not None else ""
        _add(table, ep.name, _Source(f"entry point{dist}", ep.value, ep.load))
    for name, obj in _DECORATED.items():
        _add(table, name, _Source("@reward", _origin(obj), lambda o=obj: o))
    return dict(sorted(table.items()))


Stage = Callable[[str], None]
"""Told what `resolve` starts next (`rewards.plugins[0].name = 'x'`), so a build that hangs can be named."""


def _ignore(_what: str) -> None:
    """The default `Stage`: nobody is watching."""


def import_modules(modules: tuple[str, ...] | list[str], stage: Stage = _ignore) -> None:
    """Import `rewards.modules` so their `@reward` decorators run."""
    for index, module in enumerate(modules):
        stage(f"rewards.modules[{index}] = {module!r}")
        try:
            importlib.import_module(module)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"rewards.modules[{index}] = {module!r}: cannot import ({describe_exception(exc)})"
            ) from None


@dataclass(frozen=True)
class PluginSpec:
    """One configured plugin, as plain data that pickles anywhere."""

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardSpec:
    """Everything needed to rebuild the combined scorer in another process: names, not objects.

    `task` is `data.task`: its reward is a plugin name even when the task is given by module path.
    """

    plugins: tuple[PluginSpec, ...]
    scheme: str = "d1"
    modules: tuple[str, ...] = ()
    task: str | None = None

    @classmethod
    def from_config(cls, cfg: RewardsConfig, task: str | None = None) -> RewardSpec:
        """The spec of `rewards`; `plugins: null` there means the reward of `task` (`data.task`)."""
        if cfg.plugins is not None:
            plugins = tuple(PluginSpec(p.name, p.weight, dict(p.kwargs)) for p in cfg.plugins)
        elif task is not None:
            plugins = (PluginSpec(task),)
        else:
            raise ConfigError("rewards.plugins = None: the reward of data.task needs the task; none was given")
        return cls(plugins=plugins, scheme=cfg.scheme, modules=tuple(cfg.modules), task=task)


@dataclass(frozen=True)
class ResolvedPlugin:
    """A plugin ready to call: its label in components and metrics, weight, kwargs and callable."""

    label: str
    weight: float
    kwargs: dict[str, Any]
    fn: Callable[..., Any]


def _as_callable(where: str, obj: Any) -> Callable[..., Any]:
    if inspect.isclass(obj):
        try:
            return obj()
        except Exception as exc:
            raise ConfigError(
                f"{where}: class {obj.__qualname__} cannot be created without arguments ({describe_exception(exc)})"
            ) from None
    if not callable(obj):
        raise ConfigError(f"{where}: is a {type(obj).__name__}, not a function or a class with __call__")
    return obj


def _check_not_async(where: str, fn: Callable[..., Any]) -> None:
    """An async plugin would return a coroutine per call, so every sample would fail at scoring time."""
    calls = [fn, *(vars(klass).get("__call__") for klass in type(fn).__mro__)]
    if any(inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c) for c in calls if c is not None):
        raise ConfigError(
            f"{where}: is async; reward plugins are called synchronously (return a float, not a coroutine)"
        )


def _check_signature(where: str, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a C callable without introspectable signature: nothing to check it against
    try:
        signature.bind("completion", {}, **kwargs)
    except TypeError as exc:
        keywords = "".join(f", {key}=..." for key in kwargs)
        bare = signature.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
        raise ConfigError(
            f"{where}: cannot be called as f(completion, reference{keywords}): {exc}; its signature is {bare}"
        ) from None


def _resolve(index: int, plugin: PluginSpec, table: Mapping[str, _Source], spec: RewardSpec) -> ResolvedPlugin:
    where = f"rewards.plugins[{index}].name = {plugin.name!r}"
    task_targets = {target: task for task, target in task_reward_targets(spec.task).items()}
    if plugin.name in task_targets:  # a task's reward by its dotted path: loaded, and checked, as the task's
        target, load = plugin.name, _task_reward(task_targets[plugin.name])
    elif ":" in plugin.name:
        module_name, _, attr = plugin.name.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"{where}: a dotted path must look like package.module:function")
        target, load = plugin.name, lambda: _load_target(plugin.name)
    elif plugin.name in table:
        target, load = table[plugin.name].target, table[plugin.name].load
    else:
        available = ", ".join(table) or "none"
        raise ConfigError(
            f"{where}: unknown reward; available: {available} (or a dotted path package.module:function "
            "to an object marked with @reward())"
        )
    try:
        obj = load()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {target} ({describe_exception(exc)})") from None
    if ":" in plugin.name and target not in task_targets and not is_marked(obj):
        raise ConfigError(f"{where}: not a reward plugin; {HOW_TO_REGISTER}")
    kwargs = dict(plugin.kwargs)
    if target in task_targets:  # by task name or by its dotted path
        kwargs.setdefault("scheme", spec.scheme)
    fn = _as_callable(where, obj)
    _check_not_async(where, fn)
    _check_signature(where, fn, kwargs)
    if not math.isfinite(plugin.weight):
        raise ConfigError(f"rewards.plugins[{index}].weight = {plugin.weight}: must be a finite number")
    return ResolvedPlugin(label=plugin.name, weight=float(plugin.weight), kwargs=kwargs, fn=fn)


def resolve(spec: RewardSpec, stage: Stage = _ignore) -> list[ResolvedPlugin]:
    """Import modules, look up every plugin and check it; the first problem is a ConfigError."""
    if not spec.plugins:
        raise ConfigError("rewards.plugins = []: at least one reward plugin is needed")
    seen: dict[str, int] = {}
    for index, plugin in enumerate(spec.plugins):
        if plugin.name in seen:
            raise ConfigError(
                f"rewards.plugins[{index}].name = {plugin.name!r}: listed twice "
                f"(also rewards.plugins[{seen[plugin.name]}]); use one entry per plugin"
            )
        seen[plugin.name] = index
    import_modules(spec.modules, stage)
    stage("listing the registered rewards (entry points and tasks)")
    table = available_rewards(spec.task)
    resolved = []
    for index, plugin in enumerate(spec.plugins):
        stage(f"rewards.plugins[{index}].name = {plugin.name!r}")
        resolved.append(_resolve(index, plugin, table, spec))
    return resolved


class CombinedReward:
    """The configured plugins as one scorer: `scorer(completion, reference) -> RewardResult`.

    Calls run in the caller's process without a timeout; the sandbox calls `call` per plugin instead,
    so that it can bound each call and attribute a hang or a crash to the plugin that caused it.
    """

    def __init__(self, spec: RewardSpec, plugins: list[ResolvedPlugin]) -> None:
        self.spec = spec
        self.plugins = plugins
        self.labels = [p.label for p in plugins]
        self.weights = [p.weight for p in plugins]

    def call(self, index: int, completion: str, reference: Mapping[str, Any]) -> PluginOutcome:
        plugin = self.plugins[index]
        return call_plugin(plugin.fn, completion, reference, plugin.kwargs)

    def combine(self, outcomes: list[PluginOutcome]) -> RewardResult:
        return combine(self.labels, self.weights, outcomes)

    def __call__(self, completion: str, reference: Mapping[str, Any]) -> RewardResult:
        return self.combine([self.call(i, completion, reference) for i in range(len(self.plugins))])

    def __reduce__(self) -> tuple[Callable[[RewardSpec], CombinedReward], tuple[RewardSpec]]:
        return build_from_spec, (self.spec,)


def build_from_spec(spec: RewardSpec) -> CombinedReward:
    return CombinedReward(spec, resolve(spec))


def build_within(spec: RewardSpec, timeout_s: float) -> CombinedReward:
    """`build_from_spec`, given up after `timeout_s` with a ConfigError naming the module or plugin it was at.

    A plugin module's import or a class plugin's constructor is the user's code and may hang (a lock, a
    network call, a model that never loads). The build runs in a daemon thread, which cannot be stopped but
    need not be waited for: the caller (the driver, before anything else starts) reports the error and exits.
    """
    at = ["starting"]
    done: list[CombinedReward | BaseException] = []

    def build() -> None:
        try:
            done.append(CombinedReward(spec, resolve(spec, at.append)))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            done.append(exc)

    thread = threading.Thread(target=build, name="agrpo-reward-build", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not done:
        raise ConfigError(
            f"{at[-1]}: importing and building the reward plugins did not finish within {timeout_s:g} s "
            "(rewards.startup_timeout_s); its import or constructor hangs, or needs longer (then raise the limit)"
        )
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def build_reward_fn(rewards_cfg: RewardsConfig, task: str | None = None) -> CombinedReward:
    """The combined, picklable scorer of `rewards.plugins` (none: the reward of `task`, i.e. `data.task`);
    call it at start-up to fail early. Bounded by `rewards.startup_timeout_s` (`build_within`)."""
    return build_within(RewardSpec.from_config(rewards_cfg, task), rewards_cfg.startup_timeout_s)
