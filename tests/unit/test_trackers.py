"""Experiment trackers: each one's files are read back with the tracker's own reader (TensorBoard's event
accumulator, MLflow's client, wandb's record protobufs), and a resumed run continues the same tracker runs.

wandb never touches the network here: WANDB_MODE=offline, and the run is written to files only.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.config import load_config
from common.errors import UserError
from common.record import RolloutGroup
from common.trackers import Trackers, check_trackers, completion_rows, markdown_table, scalars


def group(prompt: str, rewards: list[float], parts: list[dict[str, float]]) -> RolloutGroup:
    return RolloutGroup(
        prompt_index=0,
        trajectories=None,  # type: ignore[arg-type]  # the table reads texts and rewards only
        weight_version=0,
        seed=0,
        texts=[f"{prompt} answer {i}" for i in range(len(rewards))],
        rewards=np.asarray(rewards, dtype=np.float32),
        prompt=prompt,
        reward_components=parts,
    )


def test_scalars_keep_the_numbers_of_a_metrics_line() -> None:
    line = {"step": 3, "prompts": [1, 2], "reward_mean": 0.5, "skipped": "2 groups", "loss": float("nan"), "groups": 4}
    assert scalars(line) == {"train/reward_mean": 0.5, "train/groups": 4.0}
    assert scalars({"step": 0, "accuracy": 0.25}) == {"eval/accuracy": 0.25}


def test_completion_rows_hold_prompt_completion_rewards_and_the_learners_advantage() -> None:
    a = group("2+2?", [1.0, 0.0], [{"arithmetic": 1.0, "len": 0.0}, {"arithmetic": 0.0, "len": 0.0}])
    b = group("3+3?", [0.5, 0.5], [{"arithmetic": 0.5, "len": 0.0}] * 2)
    rows = completion_rows([a, b], ["arithmetic", "len"], scale_by_std=False, max_rows=3)
    assert len(rows) == 2  # whole groups only: the second does not fit
    assert rows[0] == {
        "prompt": "2+2?",
        "completion": "2+2? answer 0",
        "reward": 1.0,
        "reward/arithmetic": 1.0,
        "reward/len": 0.0,
        "advantage": 0.5,
    }
    assert rows[1]["advantage"] == -0.5
    scaled = completion_rows([a], ["arithmetic"], scale_by_std=True, max_rows=1)
    assert len(scaled) == 2 and scaled[0]["advantage"] > 0.7  # at least one group, even past max_rows
    assert markdown_table([{"prompt": "a|b\nc", "reward": 0.5}]).splitlines() == [
        "| prompt | reward |",
        "|---|---|",
        "| a\\|b c | 0.5 |",
    ]


def test_a_tracker_without_its_package_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import common.trackers

    monkeypatch.setattr(common.trackers.importlib.util, "find_spec", lambda name: None)
    config = load_config(None, ["metrics.loggers=[jsonl, wandb, mlflow]"])
    with pytest.raises(UserError) as err:
        check_trackers(config.metrics)
    assert str(err.value) == (
        "metrics.loggers = [jsonl, wandb, mlflow]: wandb and mlflow are not installed; pip install 'agrpo[trackers]'"
    )
    check_trackers(load_config(None, ["metrics.loggers=[jsonl]"]).metrics)


def wandb_history(run_file: Path) -> list[dict[str, Any]]:
    """The history rows of an offline wandb run: a LevelDB-style log (7-byte file header, 32 KiB blocks of chunks
    with a 7-byte header: crc, length, type) of `wandb_internal_pb2.Record` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            records.append(pending)
            pending = b""
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                *parents, leaf = item.nested_key or [item.key]
                node = row
                for parent in parents:
                    node = node.setdefault(parent, {})
                node[leaf] = json.loads(item.value_json)
            rows.append(row)
    return rows


def test_every_tracker_writes_what_a_reader_gets_back_and_a_resumed_run_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = load_config(
        None, [f"run_dir={run_dir}", "metrics.loggers=[jsonl, tensorboard, wandb, mlflow]", "metrics.project=p"]
    )
    rows = completion_rows([group("2+2?", [1.0, 0.0], [{"a": 1.0}, {"a": 0.0}])], ["a"], False, 8)

    trackers = Trackers(config, "exp", run_dir, start_step=0)
    trackers.log_metrics(0, {"step": 0, "accuracy": 0.25})
    for step in (1, 2, 3):
        trackers.log_metrics(step, {"step": step, "loss": 0.1 * step, "prompts": [0]})
    trackers.log_completions(2, rows)
    trackers.close()
    ids = json.loads((run_dir / "trackers.json").read_text())

    resumed = Trackers(config, "exp", run_dir, start_step=2)  # the interrupted run's step 3 is gone
    resumed.log_metrics(3, {"step": 3, "loss": 0.35})
    resumed.close()
    assert json.loads((run_dir / "trackers.json").read_text()) == ids

    # jsonl: the completion table, truncated at the resumed step
    lines = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert [(line["step"], line["completion"], line["reward/a"]) for line in lines] == [
        (2, "2+2? answer 0", 1.0),
        (2, "2+2? answer 1", 0.0),
    ]

    # TensorBoard: scalars per step, the resumed value of step 3 replacing the interrupted one, and the table
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")] == [(1, 0.1), (2, 0.2), (3, 0.35)]
    assert [(e.step, e.value) for e in events.Scalars("eval/accuracy")] == [(0, 0.25)]
    (text,) = events.Tensors("completions/text_summary")
    assert text.step == 2 and "2+2? answer 1" in text.tensor_proto.string_val[0].decode()

    # MLflow: one run, its metric history, the table as an artifact
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    run = client.get_run(ids["mlflow"])
    assert run.info.run_name == "exp" and run.info.status == "FINISHED"
    history = sorted((m.step, round(m.value, 4)) for m in client.get_metric_history(ids["mlflow"], "train/loss"))
    assert history == [(1, 0.1), (2, 0.2), (3, 0.3), (3, 0.35)]  # MLflow keeps both values of step 3
    table = json.loads(Path(client.download_artifacts(ids["mlflow"], "completions/step_00000002.json")).read_text())
    assert table["columns"][:3] == ["prompt", "completion", "reward"] and len(table["data"]) == 2

    # wandb (offline): the same run id twice, its history rows, and the table's file
    runs = sorted((run_dir / "wandb").glob(f"offline-run-*-{ids['wandb']}/run-{ids['wandb']}.wandb"))
    assert len(runs) == 2
    first = wandb_history(runs[0])  # a table's row comes once its file is written
    logged = sorted((row["step"], sorted(set(row) - {"step", "_step", "_runtime", "_timestamp"})) for row in first)
    assert logged == [
        (0, ["eval/accuracy"]),
        (1, ["train/loss"]),
        (2, ["completions"]),
        (2, ["train/loss"]),
        (3, ["train/loss"]),
    ]
    assert [row["train/loss"] for row in first if "train/loss" in row] == [0.1, 0.2, pytest.approx(0.3)]
    assert [row["completions"]["_type"] for row in first if "completions" in row] == ["table-file"]
    assert [(row["step"], row["train/loss"]) for row in wandb_history(runs[1])] == [(3, 0.35)]
    (table_file,) = runs[0].parent.glob("files/media/table/completions_*.table.json")
    assert json.loads(table_file.read_text())["data"][0][:3] == ["2+2?", "2+2? answer 0", 1.0]
