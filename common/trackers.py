"""Experiment trackers: where the driver logs each step's metrics line and, every n steps, sample completions.

`metrics.loggers` picks them: jsonl (always: metrics.jsonl is written by `MetricsLog`, the completion tables go
to completions.jsonl), TensorBoard event files in run_dir/tensorboard, wandb (offline when there is no network)
and MLflow (a local file store in run_dir/mlruns unless `metrics.mlflow_tracking_uri` names a server). The
completion table has one row per completion: prompt, completion, reward, the reward of each plugin, advantage,
as TRL's `log_completions`. A resumed run continues the same tracker runs (their ids are kept in
run_dir/trackers.json) and TensorBoard drops what the interrupted run logged past the checkpoint.

The packages are an extra (`pip install 'agrpo[trackers]'`) and are imported only when configured; a configured
tracker whose package is missing is refused at start, before anything else (`check_trackers`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import netrc
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import torch

from common.config import Config, MetricsConfig
from common.errors import UserError
from common.metrics import MetricsLog
from common.record import RolloutGroup, group_advantages

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
IDS_FILE = "trackers.json"
WANDB_PROBE_TIMEOUT_S = 3.0


def check_trackers(metrics: MetricsConfig) -> None:
    """Refuse a configured tracker whose package is not installed, in one line."""
    missing = [
        name for name in metrics.loggers if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None
    ]
    if missing:
        raise UserError(
            f"metrics.loggers = [{', '.join(metrics.loggers)}]: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed; pip install 'agrpo[trackers]'"
        )


def scalars(line: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line by tracker name: `eval/accuracy` for held-out accuracy, `train/<key>`
    for the rest (lists such as `prompts`, strings such as `skipped`, and `step` itself are left out)."""
    out = {}
    for key, value in line.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        out["eval/accuracy" if key == "accuracy" else f"train/{key}"] = float(value)
    return out


def completion_rows(
    groups: Sequence[RolloutGroup], labels: Sequence[str], scale_by_std: bool, max_rows: int
) -> list[dict[str, Any]]:
    """One row per completion of the first groups that fit in `max_rows` (at least one, whole groups): the
    advantage is the learner's own (`group_advantages`), the plugin rewards are each plugin's score."""
    rows: list[dict[str, Any]] = []
    for group in groups:
        if group.rewards is None or (rows and len(rows) + len(group.texts) > max_rows):
            break
        rewards = np.asarray(group.rewards, dtype=np.float32)
        advantages = group_advantages(torch.from_numpy(rewards)[None], scale_by_std)[0].tolist()
        for i, text in enumerate(group.texts):
            parts = group.reward_components[i] if i < len(group.reward_components) else {}
            rows.append(
                {
                    "prompt": group.prompt,
                    "completion": text,
                    "reward": float(rewards[i]),
                    **{f"reward/{label}": float(parts.get(label, float("nan"))) for label in labels},
                    "advantage": float(advantages[i]),
                }
            )
    return rows


class Tracker(Protocol):
    def log_metrics(self, step: int, values: dict[str, float]) -> None: ...

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class JsonlTracker:
    """Completion tables as lines of run_dir/completions.jsonl, `{"step": s, **row}`."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.log = MetricsLog(run_dir / "completions.jsonl")
        self.log.truncate_after(start_step)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        """metrics.jsonl is the run's own record, written by the driver whatever the trackers."""

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.log.write({"step": step, **row})

    def close(self) -> None:
        pass


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """TensorBoard's text plugin renders markdown; cells lose their newlines and pipes."""
    columns = list(rows[0])

    def cell(value: Any) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class TensorBoardTracker:
    """Scalars, and completion tables as markdown text, in run_dir/tensorboard."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run hides what the interrupted one logged after its checkpoint (steps past start_step).
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        self.writer.add_text("completions", markdown_table(rows), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_mode(setting: str) -> tuple[str, str]:
    """(mode, why): `metrics.wandb_mode`, else WANDB_MODE, else online only with an API key and a server
    that answers now; wandb would otherwise retry for minutes before giving up."""
    if setting != "auto":
        return setting, "metrics.wandb_mode"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not logged_in:
        return "offline", "no wandb API key (`wandb login`)"
    try:
        with socket.create_connection((host, 443), timeout=WANDB_PROBE_TIMEOUT_S):
            return "online", f"{host} answers"
    except OSError:
        return "offline", f"{host} unreachable"


class WandbTracker:
    """A wandb run in run_dir/wandb; offline runs are uploaded later with `wandb sync`."""

    def __init__(self, config: Config, name: str, run_dir: Path, run_id: str | None) -> None:
        import wandb

        mode, why = wandb_mode(config.metrics.wandb_mode)
        self.wandb = wandb
        self.run = wandb.init(
            project=config.metrics.project,
            name=name,
            id=run_id,
            resume="allow" if run_id else None,
            dir=str(run_dir),
            mode=mode,
            config=config.model_dump(mode="json"),
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        # Every row carries the training step as `step`, the x axis of every chart: wandb's own step must only
        # grow, and a step logs twice (its metrics line, then held-out accuracy or a completion table).
        for pattern in ("train/*", "eval/*", "completions"):
            self.run.define_metric(pattern, step_metric="step")
        self.id = self.run.id
        print(f"agrpo: wandb {mode} ({why}): run {self.run.dir}", file=sys.stderr)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "step": step})

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        columns = list(rows[0])
        table = self.wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
        self.run.log({"completions": table, "step": step})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run: metrics, and each completion table as the artifact completions/step_<n>.json."""

    def __init__(self, config: Config, name: str, run_dir: Path, run_id: str | None) -> None:
        import mlflow

        uri = config.metrics.mlflow_tracking_uri or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked; a local run needs no database or server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(config.metrics.project)
            experiment_id = (
                experiment.experiment_id if experiment else self.client.create_experiment(config.metrics.project)
            )
            run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.id = run_id
        self.client.log_dict(run_id, config.model_dump(mode="json"), "config.json")
        print(f"agrpo: MLflow run {run_id} at {uri}", file=sys.stderr)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        columns = {c: [row[c] for row in rows] for c in rows[0]}
        self.client.log_table(self.id, data=columns, artifact_file=f"completions/step_{step:08d}.json")

    def close(self) -> None:
        self.client.set_terminated(self.id)


class Trackers:
    """Every configured tracker; a call goes to each. The ids of wandb and MLflow runs are kept in
    run_dir/trackers.json so that a resumed run logs to the same runs."""

    def __init__(self, config: Config, name: str, run_dir: Path, start_step: int) -> None:
        check_trackers(config.metrics)
        ids_path = run_dir / IDS_FILE
        ids = json.loads(ids_path.read_text()) if start_step > 0 and ids_path.is_file() else {}
        self.trackers: list[Tracker] = [JsonlTracker(run_dir, start_step)]
        loggers = config.metrics.loggers
        try:
            if "tensorboard" in loggers:
                self.trackers.append(TensorBoardTracker(run_dir, start_step))
            if "wandb" in loggers:
                wandb_run = WandbTracker(config, name, run_dir, ids.get("wandb"))
                self.trackers.append(wandb_run)
                ids["wandb"] = wandb_run.id
            if "mlflow" in loggers:
                mlflow_run = MlflowTracker(config, name, run_dir, ids.get("mlflow"))
                self.trackers.append(mlflow_run)
                ids["mlflow"] = mlflow_run.id
        except Exception:
            self.close()
            raise
        if ids:
            ids_path.write_text(json.dumps(ids, indent=2) + "\n")

    def log_metrics(self, step: int, line: dict[str, Any]) -> None:
        values = scalars(line)
        for tracker in self.trackers:
            tracker.log_metrics(step, values)

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        if rows:
            for tracker in self.trackers:
                tracker.log_completions(step, rows)

    def close(self) -> None:
        """Close every tracker, even when one fails (the first failure is raised after the rest are closed)."""
        errors = []
        for tracker in reversed(self.trackers):
            try:
                tracker.close()
            except Exception as err:
                errors.append(err)
        self.trackers = []
        if errors:
            raise errors[0]
