"""PNG plots of a run directory (metrics.jsonl, eval.json) and the accuracy-vs-sampling-steps frontier.

Figures are drawn on `matplotlib.figure.Figure` objects, never through pyplot, so no global backend
or figure registry is touched: plotting is safe inside a training driver, a Ray actor or a test.
A metric a run did not record is drawn as an empty panel that says so, so every run directory gets
the same set of files. Every figure names the run and its task; quantities of one unit share one axis
(fractions, nats, seconds), and no axis mixes units.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from common.errors import DataError

RUN_PLOTS = ("reward_accuracy.png", "loss.png", "staleness.png", "weight_sync.png", "time.png")
FRONTIER_PLOT = "accuracy_vs_steps.png"
SMOOTH_ABOVE = 20
Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""
NOTE = "solid:"
NOTE_HEIGHT = 0.02
"""Share of a figure's height kept under the plots for the smoothing note."""
DODGE = 0.04
"""Relative horizontal offset between the curves of the frontier plot."""
STEP_MODEL = re.compile(r"step-(\d{8})$")

Series = tuple[str, str]
"""(metrics key, legend label)."""


@dataclass(frozen=True)
class RunName:
    """What every figure of a run says it shows: the run, its task, and what the task's accuracy counts."""

    run: str
    task: str | None = None
    accuracy: str = "accuracy"

    def title(self, what: str) -> str:
        return f"{self.run} ({self.task}): {what}" if self.task else f"{self.run}: {what}"


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a metrics.jsonl with a `step`, plus `file:line: reason` for each line skipped.

    A line is skipped rather than fatal because a running job may be midway through writing the last one.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"metrics file {p}: not found")
    records, skipped = [], []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            skipped.append(f"{p}:{lineno}: not valid JSON ({err.msg})")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
            skipped.append(f"{p}:{lineno}: not an object with a numeric `step`")
            continue
        records.append(record)
    return records, skipped


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records holding a finite number under `key` (e.g. accuracy: eval steps only)."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(record["step"]))
            values.append(float(value))
    return steps, values


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values, so the smoothed curve starts at the first point."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:cyan", "tab:olive")


def _draw(ax: Axes, records: Sequence[dict[str, Any]], key: str, label: str, color: str, scale: float = 1.0) -> int:
    """A raw line, plus a moving average when the curve is long enough to be noisy.

    Returns the averaging window (1: drawn raw), or 0 when the run never recorded `key`.
    """
    steps, values = series(records, key)
    if not steps:
        return 0
    values = [v * scale for v in values]
    if len(values) <= SMOOTH_ABOVE:
        ax.plot(steps, values, color=color, marker=".", label=label)
        return 1
    window = max(2, len(values) // SMOOTH_ABOVE)
    ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
    ax.plot(steps, moving_average(values, window), color=color, label=label)
    return window


def _smoothing_note(ax: Axes, windows: Sequence[int]) -> None:
    """Says once per figure, under the plots, what the solid and the faint lines are (not in every legend
    entry, and not over the data)."""
    fig = ax.get_figure()
    if max(windows, default=0) <= 1 or fig is None or any(t.get_text().startswith(NOTE) for t in fig.texts):
        return
    text = f"{NOTE} trailing mean of {max(windows)} steps; faint: every step"
    fig.text(0.995, 0.005, text, ha="right", va="bottom", fontsize=7, color="gray")


def _panel(
    ax: Axes,
    records: Sequence[dict[str, Any]],
    lines: Sequence[Series],
    unit: str,
    scale: float = 1.0,
    legend: dict[str, Any] | None = None,
) -> None:
    """Every series of one unit on one axis; a panel whose series were never recorded says so."""
    windows = [_draw(ax, records, key, label, COLORS[i % len(COLORS)], scale) for i, (key, label) in enumerate(lines)]
    if any(windows):
        ax.legend(**(legend or {"loc": "best"}), fontsize=7)
        _smoothing_note(ax, windows)
    else:
        names = " or ".join(key for key, _ in lines)
        ax.text(0.5, 0.5, f"no {names} recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout(rect=(0, NOTE_HEIGHT, 1, 1))
    fig.savefig(path, dpi=110)
    return path


def reward_accuracy_figure(records: Sequence[dict[str, Any]], name: RunName) -> Figure:
    """Mean training reward (left axis, reward units) with held-out accuracy and the training success rate
    (right axis, fractions 0-1)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    reward = _draw(ax, records, "reward_mean", "mean reward", "tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    success = _draw(right, records, "success_rate", "training success rate", "tab:green")
    steps, accuracy = series(records, "accuracy")
    if steps:
        right.plot(steps, accuracy, color="tab:red", marker="o", label=f"held-out {name.accuracy}")
    right.set_ylabel("fraction")
    right.set_ylim(-0.02, 1.02)
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    if handles[0] or more[0]:
        ax.legend(handles[0] + more[0], handles[1] + more[1], loc="best", fontsize=8)
    if not (reward or success or steps):
        ax.text(0.5, 0.5, "no reward or accuracy recorded", ha="center", va="center", transform=ax.transAxes)
    _smoothing_note(ax, [reward, success])
    ax.set_title(name.title("reward and accuracy"))
    return fig


LEARNER_PANELS: tuple[tuple[str, tuple[Series, ...]], ...] = (
    ("loss", (("loss", "loss"),)),
    ("gradient norm", (("grad_norm", "grad norm (before clipping)"),)),
    ("learning rate", (("lr", "learning rate"),)),
    ("fraction", (("clip_fraction", "clipped tokens"), ("zero_variance_fraction", "zero-variance groups"))),
    (
        "nats per token",
        (
            ("kl", "KL to the reference"),
            ("rollout_mismatch_max", "rollout/learner mismatch (max)"),
            ("policy_drift_max", "policy drift (max)"),
        ),
    ),
    ("reward", (("reward_mean", "reward mean"), ("reward_std", "reward std"))),
    ("tokens", (("completion_length", "completion length (before EOS)"),)),
    ("timesteps per second", (("timesteps_per_s", "learner timesteps per second"),)),
)
"""The learner figure, one panel per unit."""


def learner_figure(records: Sequence[dict[str, Any]], name: RunName) -> Figure:
    fig = Figure(figsize=(11, 11))
    axes = fig.subplots(4, 2, sharex=True).flatten()
    for ax, (unit, lines) in zip(axes, LEARNER_PANELS, strict=True):
        _panel(ax, records, lines, unit)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[3].set_ylim(-0.02, 1.02)
    for ax in axes[-2:]:
        ax.set_xlabel("step")
    fig.suptitle(name.title("learner"))
    return fig


def staleness_figure(records: Sequence[dict[str, Any]], name: RunName) -> Figure:
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    _panel(ax, records, (("staleness_mean", "mean staleness"),), "versions behind the learner")
    ax.set_xlabel("step")
    ax.set_title(name.title("policy lag of the groups trained on"))
    return fig


def weight_sync_figure(records: Sequence[dict[str, Any]], name: RunName) -> Figure:
    fig = Figure(figsize=(8, 6))
    seconds_ax, rate_ax = fig.subplots(2, 1, sharex=True)
    _panel(seconds_ax, records, (("sync_seconds", "seconds per broadcast"),), "seconds")
    _panel(rate_ax, records, (("sync_bytes_per_s", "broadcast bandwidth"),), "MB/s", scale=1e-6)
    rate_ax.set_xlabel("step")
    seconds_ax.set_title(name.title("weight broadcast"))
    return fig


STAGES: tuple[Series, ...] = (
    ("step_seconds", "whole step"),
    ("seconds_rollout", "rollout (waiting for the batch)"),
    ("seconds_reward", "reward"),
    ("seconds_learner", "learner update"),
    ("seconds_weight_sync", "weight sync"),
)


def time_figure(records: Sequence[dict[str, Any]], name: RunName) -> Figure:
    """Wall seconds of each step and of its stages (cluster/step_metrics.py), all on one seconds axis."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.add_subplot()
    _panel(ax, records, STAGES, "seconds", legend={"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)})
    ax.set_xlabel("step")
    ax.set_title(name.title("time per step and stage"))
    return fig


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: unlike accuracy ± z·SE it stays inside [0, 1] and is
    not empty at 0 % or 100 %."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def model_label(path: str) -> str:
    """How a plot names a model: `<run> step <n>` for a training checkpoint, else its directory's name."""
    p = Path(path)
    if p.name == "model":
        p = p.parent
    match = STEP_MODEL.search(p.name)
    if match:
        run = p.parent.parent.name if p.parent.name == "checkpoints" else p.parent.name
        return f"{run} step {int(match.group(1))}"
    return p.name or path


def curve_labels(entries: Sequence[dict[str, Any]]) -> list[str]:
    """Each curve's label; two that would read the same (`seed-0 step 100` of two runs under different folders)
    are told apart by the nearest folder of their paths that differs (`exact/seed-0 step 100`)."""
    labels = [entry.get("label") or model_label(str(entry.get("checkpoint", "checkpoint"))) for entry in entries]
    if len(set(labels)) == len(labels):
        return labels
    paths = [Path(str(entry.get("checkpoint", ""))).parts for entry in entries]
    for depth in range(1, min(len(parts) for parts in paths) + 1):
        names = [parts[-depth] for parts in paths]
        if len(set(names)) == len(names):
            return [f"{name}/{label}" for name, label in zip(names, labels, strict=True)]
    return [f"{label} ({index + 1})" for index, label in enumerate(labels)]


def plot_accuracy_vs_steps(report: dict[str, Any], path: str | Path) -> Path:
    """`frontier_figure(report)` as a PNG at `path`."""
    return _save(frontier_figure(report), Path(path))


def frontier_figure(report: dict[str, Any]) -> Figure:
    """The compute/quality frontier: accuracy against sampling steps, the checkpoint and its baseline if any,
    each point with its 95% Wilson interval over the n items.

    `report` is the content of eval.json (`agrpo eval`): `results` and optionally `baseline.results`, each a
    list of {steps, accuracy, n}. For a task graded in parts (Sudoku cells) the interval still counts items, not
    parts: the parts of one item are not independent trials, so items are the conservative count. Results that
    hold `nfe` (the forward passes per item `evaluate()` counted) get a second panel: accuracy against NFE, since
    caches, threshold decoding and early exits make the steps say little about what a setting costs.
    """
    curves = [entry for entry in (report, report.get("baseline")) if entry and entry.get("results")]
    has_nfe = any("nfe" in r for entry in curves for r in entry["results"])
    fig = Figure(figsize=(13.5 if has_nfe else 7.5, 4.8))
    ax = fig.add_subplot(1, 2 if has_nfe else 1, 1)
    all_steps = sorted({r["steps"] for entry in curves for r in entry["results"]})
    labels = curve_labels(curves)
    for index, (entry, color, label) in enumerate(zip(curves, ("tab:red", "tab:gray"), labels, strict=False)):
        points = sorted((r["steps"], r["accuracy"], int(r.get("n", report.get("n", 0)))) for r in entry["results"])
        dodge = 1.0 + DODGE * (index - (len(curves) - 1) / 2)  # overlapping bars of two curves stay readable
        xs = [x * dodge for x, _, _ in points]
        ys = [100.0 * y for _, y, _ in points]
        bounds = [wilson_interval(y, n) for _, y, n in points]
        errors = [
            [y - 100.0 * lo for y, (lo, _) in zip(ys, bounds, strict=True)],
            [100.0 * hi - y for y, (_, hi) in zip(ys, bounds, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=errors, marker="o", color=color, capsize=4, label=label)
    if all_steps and min(all_steps) > 0 and max(all_steps) >= 4 * min(all_steps):
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_steps)
    ax.set_xticklabels([str(s) for s in all_steps])
    accuracy = report.get("accuracy_name", "accuracy")
    settings = report.get("settings", {})
    ax.set_title(
        f"{report.get('task', '')}: {accuracy} vs sampling steps\n(gen {settings.get('gen_length', '?')}, block "
        f"{settings.get('block_length', '?')}, n {report.get('n', '?')} items; bars: 95% Wilson intervals)",
        fontsize=10,
    )
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"{accuracy} (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if has_nfe:
        _nfe_panel(fig.add_subplot(1, 2, 2), curves, labels, accuracy)
    return fig


def _nfe_panel(ax: Axes, curves: Sequence[dict[str, Any]], labels: Sequence[str], accuracy: str) -> None:
    """Accuracy against the measured forward passes per item (NFE) of each evaluated setting."""
    for entry, color, label in zip(curves, ("tab:red", "tab:gray"), labels, strict=False):
        points = sorted((r["nfe"], 100.0 * r["accuracy"]) for r in entry["results"] if "nfe" in r)
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", color=color, label=label)
    ax.set_title(f"{accuracy} vs forward passes (measured)", fontsize=10)
    ax.set_xlabel("forward passes per item (NFE)")
    ax.set_ylabel(f"{accuracy} (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def run_name(root: Path, accuracy: str = "accuracy") -> RunName:
    """The run directory's name and, from its config.yaml, its task."""
    task = None
    config = root / "config.yaml"
    if config.is_file():
        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            task = data["data"].get("task")
    return RunName(root.resolve().name, task if isinstance(task, str) else None, accuracy)


def plot_run(run_dir: str | Path, accuracy_name: str = "accuracy") -> tuple[list[Path], list[str]]:
    """Write RUN_DIR/plots/*.png from metrics.jsonl (and eval.json when present); return paths and skipped lines.

    `accuracy_name` is what the run's task calls its accuracy (`cell accuracy` for Sudoku)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"run directory {root}: not found")
    records, skipped = read_metrics(root / "metrics.jsonl")
    if not records:
        raise DataError(f"metrics file {root / 'metrics.jsonl'}: no records with a `step`")
    records.sort(key=lambda r: r["step"])
    out = root / "plots"
    out.mkdir(exist_ok=True)
    name = run_name(root, accuracy_name)
    figures = (reward_accuracy_figure, learner_figure, staleness_figure, weight_sync_figure, time_figure)
    paths = [_save(figure(records, name), out / file) for figure, file in zip(figures, RUN_PLOTS, strict=True)]
    eval_file = root / "eval.json"
    if eval_file.is_file():
        try:
            report = json.loads(eval_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"eval file {eval_file}: not valid JSON ({err.msg})") from None
        paths.append(plot_accuracy_vs_steps(report, out / FRONTIER_PLOT))
    return paths, skipped
