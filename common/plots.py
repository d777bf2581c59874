"""PNG plots of a run directory (metrics.jsonl, eval.json) and the accuracy-vs-sampling-steps frontier.

Figures are drawn on `matplotlib.figure.Figure` objects, never through pyplot, so no global backend
or figure registry is touched: plotting is safe inside a training driver, a Ray actor or a test.
A metric a run did not record is drawn as an empty panel that says so, so every run directory gets
the same set of files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from common.errors import DataError

RUN_PLOTS = ("reward_accuracy.png", "loss.png", "staleness.png", "weight_sync.png")
FRONTIER_PLOT = "accuracy_vs_steps.png"
SMOOTH_ABOVE = 20


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


def _draw(ax: Axes, records: Sequence[dict[str, Any]], key: str, label: str, color: str, scale: float = 1.0) -> bool:
    """A raw line, plus a moving average when the curve is long enough to be noisy; False when absent."""
    steps, values = series(records, key)
    if not steps:
        return False
    values = [v * scale for v in values]
    if len(values) > SMOOTH_ABOVE:
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
        window = max(2, len(values) // SMOOTH_ABOVE)
        ax.plot(steps, moving_average(values, window), color=color, label=f"{label} (mean of {window})")
    else:
        ax.plot(steps, values, color=color, marker=".", label=label)
    return True


def _panel(ax: Axes, records: Sequence[dict[str, Any]], key: str, label: str, color: str, scale: float = 1.0) -> None:
    if _draw(ax, records, key, label, color, scale):
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_reward_accuracy(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Mean training reward (left axis) with held-out accuracy and success rate (right axis, 0-1)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    has_reward = _draw(ax, records, "reward_mean", "mean reward", "tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    has_success = _draw(right, records, "success_rate", "success rate", "tab:green")
    steps, accuracy = series(records, "accuracy")
    if steps:
        right.plot(steps, accuracy, color="tab:red", marker="o", label="held-out accuracy")
    right.set_ylabel("accuracy / success rate")
    right.set_ylim(-0.02, 1.02)
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    if handles[0] or more[0]:
        ax.legend(handles[0] + more[0], handles[1] + more[1], loc="best", fontsize=8)
    if not (has_reward or has_success or steps):
        ax.text(0.5, 0.5, "no reward or accuracy recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("reward and accuracy")
    return _save(fig, path)


def plot_loss(records: Sequence[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 6))
    loss_ax, norm_ax = fig.subplots(2, 1, sharex=True)
    _panel(loss_ax, records, "loss", "loss", "tab:purple")
    _panel(norm_ax, records, "grad_norm", "grad norm (before clipping)", "tab:orange")
    norm_ax.set_xlabel("step")
    loss_ax.set_title("learner")
    return _save(fig, path)


def plot_staleness(records: Sequence[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    _panel(ax, records, "staleness_mean", "mean staleness (versions)", "tab:brown")
    ax.set_xlabel("step")
    ax.set_title("policy lag of the groups trained on")
    return _save(fig, path)


def plot_weight_sync(records: Sequence[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 6))
    seconds_ax, rate_ax = fig.subplots(2, 1, sharex=True)
    _panel(seconds_ax, records, "sync_seconds", "seconds per broadcast", "tab:cyan")
    _panel(rate_ax, records, "sync_bytes_per_s", "MB/s", "tab:olive", scale=1e-6)
    rate_ax.set_xlabel("step")
    seconds_ax.set_title("weight broadcast")
    return _save(fig, path)


def plot_accuracy_vs_steps(report: dict[str, Any], path: str | Path) -> Path:
    """The compute/quality frontier: accuracy against sampling steps, the checkpoint and its baseline if any.

    `report` is the content of eval.json (`agrpo eval`): `results` and optionally `baseline.results`,
    each a list of {steps, accuracy} and, from `evaluate()`, `nfe`: then a second panel draws accuracy against
    the forward passes per sample that were counted (caches, threshold decoding and early exits make them
    differ from the steps).
    """
    curves = [(report.get("checkpoint", "checkpoint"), report.get("results", []), "tab:red")]
    if report.get("baseline"):
        base = report["baseline"]
        curves.append((f"baseline {base.get('checkpoint', '')}", base.get("results", []), "tab:gray"))
    has_nfe = any("nfe" in r for _, results, _ in curves for r in results)
    fig = Figure(figsize=(12 if has_nfe else 7, 4.5))
    ax = fig.add_subplot(1, 2 if has_nfe else 1, 1)
    all_steps: set[int] = set()
    for label, results, color in curves:
        points = sorted((r["steps"], 100.0 * r["accuracy"]) for r in results)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", color=color, label=Path(str(label)).name or str(label))
            all_steps.update(xs)
    if all_steps and min(all_steps) > 0 and max(all_steps) >= 4 * min(all_steps):
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_steps))
    ax.set_xticklabels([str(s) for s in sorted(all_steps)])
    settings = report.get("settings", {})
    ax.set_title(
        f"{report.get('task', '')}: accuracy vs sampling steps "
        f"(gen {settings.get('gen_length', '?')}, block {settings.get('block_length', '?')}, n {report.get('n', '?')})"
    )
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if has_nfe:
        _draw_nfe(fig.add_subplot(1, 2, 2), curves)
    return _save(fig, Path(path))


def _draw_nfe(ax: Axes, curves: Sequence[tuple[str, Sequence[dict[str, Any]], str]]) -> None:
    """Accuracy against the measured forward passes per sample (NFE) of each evaluated setting."""
    for label, results, color in curves:
        points = sorted((r["nfe"], 100.0 * r["accuracy"]) for r in results if "nfe" in r)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", color=color, label=Path(str(label)).name or str(label))
    ax.set_title("accuracy vs forward passes (measured)")
    ax.set_xlabel("forward passes per sample (NFE)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def plot_run(run_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Write RUN_DIR/plots/*.png from metrics.jsonl (and eval.json when present); return paths and skipped lines."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"run directory {root}: not found")
    records, skipped = read_metrics(root / "metrics.jsonl")
    if not records:
        raise DataError(f"metrics file {root / 'metrics.jsonl'}: no records with a `step`")
    records.sort(key=lambda r: r["step"])
    out = root / "plots"
    out.mkdir(exist_ok=True)
    drawers = (plot_reward_accuracy, plot_loss, plot_staleness, plot_weight_sync)
    paths = [draw(records, out / name) for draw, name in zip(drawers, RUN_PLOTS, strict=True)]
    eval_file = root / "eval.json"
    if eval_file.is_file():
        try:
            report = json.loads(eval_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"eval file {eval_file}: not valid JSON ({err.msg})") from None
        paths.append(plot_accuracy_vs_steps(report, out / FRONTIER_PLOT))
    return paths, skipped
