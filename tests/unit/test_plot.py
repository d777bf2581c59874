"""`agrpo plot` and common/plots.py on synthetic run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import cluster.cli as cli
from common.errors import DataError
from common.plots import (
    RUN_PLOTS,
    RunName,
    curve_labels,
    frontier_figure,
    learner_figure,
    model_label,
    moving_average,
    plot_run,
    read_metrics,
    reward_accuracy_figure,
    run_name,
    series,
    time_figure,
    wilson_interval,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def only_plot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {"plot": "cluster.commands.plot"})


def _write_metrics(run_dir: Path, steps: int = 60, keys: tuple[str, ...] | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, steps + 1):
        record = {
            "step": step,
            "reward_mean": 0.1 + 0.5 * step / steps + 0.05 * math.sin(step),
            "success_rate": 0.1 + 0.4 * step / steps,
            "loss": 1.0 / step,
            "grad_norm": 2.0 + math.cos(step),
            "staleness_mean": step % 2,
            "sync_seconds": 0.01 * (1 + step % 3),
            "sync_bytes_per_s": 5e8,
            "lr": 2e-4 * min(1.0, step / 5),
            "clip_fraction": 0.02 * (step % 4),
            "zero_variance_fraction": 0.5 - 0.3 * step / steps,
            "kl": 0.001 * step,
            "rollout_mismatch_max": 1e-3 * (1 + math.sin(step)),
            "policy_drift_max": 0.3 + 0.1 * math.sin(step),
            "reward_std": 0.3 + 0.05 * math.cos(step),
            "completion_length": 18.0 - 4 * step / steps,
            "timesteps_per_s": 400.0 + 10 * math.sin(step),
            "step_seconds": 2.0 + 0.1 * (step % 5),
            "seconds_rollout": 0.4,
            "seconds_reward": 0.05,
            "seconds_learner": 1.3,
            "seconds_weight_sync": 0.02,
        }
        if step % 10 == 0:
            record["accuracy"] = 0.2 + 0.5 * step / steps
        if keys is not None:
            record = {k: v for k, v in record.items() if k == "step" or k in keys}
        lines.append(json.dumps(record))
    lines.insert(5, json.dumps({"step": 5.5, "reward_mean": float("nan")}))
    path = run_dir / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_synthetic_metrics_give_every_png(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "run")
    paths, skipped = plot_run(tmp_path / "run")
    assert [p.name for p in paths] == list(RUN_PLOTS)
    assert skipped == []
    for path in paths:
        assert path.parent == tmp_path / "run" / "plots"
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000


def test_eval_json_adds_the_frontier_plot(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "run", steps=5)
    report = {
        "checkpoint": "runs/trained",
        "task": "countdown",
        "n": 10,
        "settings": {"gen_length": 16, "block_length": 16},
        "results": [{"steps": 4, "accuracy": 0.2}, {"steps": 16, "accuracy": 0.4}],
        "baseline": {"checkpoint": "tiny", "results": [{"steps": 4, "accuracy": 0.1}, {"steps": 16, "accuracy": 0.1}]},
    }
    (tmp_path / "run" / "eval.json").write_text(json.dumps(report))
    paths, _ = plot_run(tmp_path / "run")
    assert paths[-1].name == "accuracy_vs_steps.png" and paths[-1].read_bytes().startswith(PNG_MAGIC)


def test_measured_nfe_adds_a_panel_beside_the_steps(tmp_path: Path) -> None:
    from common.plots import plot_accuracy_vs_steps

    def width(path: Path) -> int:
        return int.from_bytes(path.read_bytes()[16:20], "big")  # the PNG header's IHDR width

    results = [{"steps": 4, "accuracy": 0.2}, {"steps": 16, "accuracy": 0.4}]
    steps_only = plot_accuracy_vs_steps({"results": results}, tmp_path / "steps.png")
    measured = [{**r, "nfe": n} for r, n in zip(results, (3.5, 9.2), strict=True)]
    both = plot_accuracy_vs_steps({"results": measured}, tmp_path / "both.png")
    assert width(both) > 1.5 * width(steps_only)


def test_runs_missing_some_metrics_still_get_every_plot(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "run", steps=3, keys=("loss",))
    paths, _ = plot_run(tmp_path / "run")
    assert [p.name for p in paths] == list(RUN_PLOTS) and all(p.is_file() for p in paths)


def test_series_keeps_finite_numbers_only(tmp_path: Path) -> None:
    path = _write_metrics(tmp_path / "run", steps=20)
    records, _ = read_metrics(path)
    steps, values = series(records, "accuracy")
    assert steps == [10.0, 20.0] and values == pytest.approx([0.45, 0.7])
    assert 5.5 not in series(records, "reward_mean")[0]
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_bad_lines_are_reported_not_dropped_silently(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write_metrics(tmp_path / "run", steps=3)
    with path.open("a") as f:
        f.write('{"step": 4, "loss"\n["no step"]\n')
    assert cli.main(["plot", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert f"{path}:5: not valid JSON" in captured.err and f"{path}:6: not an object" in captured.err
    assert f"wrote {len(RUN_PLOTS)} plots to {tmp_path / 'run' / 'plots'}" in captured.out


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("none", "run directory {run}: not found"),
        ("empty_dir", "metrics file {run}/metrics.jsonl: not found"),
        ("empty_file", "metrics file {run}/metrics.jsonl: no records with a `step`"),
        ("bad_eval", "eval file {run}/eval.json: not valid JSON"),
    ],
)
def test_plot_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, setup: str, message: str) -> None:
    run = tmp_path / "run"
    if setup != "none":
        run.mkdir()
    if setup == "empty_file":
        (run / "metrics.jsonl").write_text("\n")
    if setup == "bad_eval":
        _write_metrics(run, steps=2)
        (run / "eval.json").write_text("{")
    assert cli.main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"agrpo plot: error: {message.format(run=run)}") and err.count("\n") == 1


def test_read_metrics_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_plot_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", "--help"])
    assert exit_info.value.code == 0 and "RUN_DIR" in capsys.readouterr().out


def _legend(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def test_figures_name_the_run_and_task_and_keep_one_unit_per_axis(tmp_path: Path) -> None:
    path = _write_metrics(tmp_path / "gsm-lr3")
    (tmp_path / "gsm-lr3" / "config.yaml").write_text("data:\n  task: sudoku\n")
    records, _ = read_metrics(path)
    name = run_name(tmp_path / "gsm-lr3", "cell accuracy")
    assert name == RunName("gsm-lr3", "sudoku", "cell accuracy")

    fig = reward_accuracy_figure(records, name)
    left = fig.axes[0]
    assert left.get_title() == "gsm-lr3 (sudoku): reward and accuracy"
    assert (left.get_ylabel(), fig.axes[1].get_ylabel()) == ("reward", "fraction")
    assert "held-out cell accuracy" in _legend(left)

    fig = learner_figure(records, name)
    assert fig._suptitle.get_text() == "gsm-lr3 (sudoku): learner"
    units = {ax.get_ylabel(): _legend(ax) for ax in fig.axes}
    assert units["fraction"] == ["clipped tokens", "zero-variance groups"]
    assert units["nats per token"] == ["KL to the reference", "rollout/learner mismatch (max)", "policy drift (max)"]
    assert units["reward"] == ["reward mean", "reward std"]
    assert units["tokens"] == ["completion length (before EOS)"]
    assert {"loss", "gradient norm", "learning rate", "timesteps per second"} <= set(units)

    fig = time_figure(records, name)
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "seconds"
    assert _legend(fig.axes[0]) == [
        "whole step",
        "rollout (waiting for the batch)",
        "reward",
        "learner update",
        "weight sync",
    ]


def test_a_run_without_config_is_named_by_its_directory(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "plain", steps=3)
    assert run_name(tmp_path / "plain") == RunName("plain", None, "accuracy")
    assert RunName("plain").title("learner") == "plain: learner"


def test_wilson_interval() -> None:
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0.0, 20)[0] == 0.0 and wilson_interval(0.0, 20)[1] > 0.1
    assert wilson_interval(1.0, 20)[1] == 1.0 and wilson_interval(1.0, 20)[0] < 0.9
    wide, narrow = wilson_interval(0.3, 10), wilson_interval(0.3, 1000)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def test_models_are_labelled_by_run() -> None:
    assert model_label("runs/gsm/checkpoints/step-00000200/model") == "gsm step 200"
    assert model_label("runs/gsm/checkpoints/step-00000200") == "gsm step 200"
    assert model_label("runs/base-sudoku") == "base-sudoku"
    assert model_label("tiny") == "tiny"


def test_two_runs_with_the_same_name_are_told_apart_by_their_folders() -> None:
    same = [
        {"checkpoint": "runs/fast/dual/seed-0", "label": "seed-0 step 100"},
        {"checkpoint": "runs/fast/exact/seed-0"},
    ]
    same[1]["label"] = "seed-0 step 100"
    assert curve_labels(same) == ["dual/seed-0 step 100", "exact/seed-0 step 100"]
    assert curve_labels([{"label": "a"}, {"label": "b"}]) == ["a", "b"]
    assert curve_labels([{"checkpoint": "x/run", "label": "run"}, {"checkpoint": "x/run", "label": "run"}]) == [
        "run (1)",
        "run (2)",
    ]


def test_frontier_labels_runs_shows_intervals_and_says_cell_accuracy() -> None:
    report = {
        "checkpoint": "runs/gsm/checkpoints/step-00000200/model",
        "task": "sudoku",
        "accuracy_name": "cell accuracy",
        "n": 50,
        "settings": {"gen_length": 32, "block_length": 32},
        "results": [{"steps": 4, "accuracy": 0.2, "n": 50}, {"steps": 16, "accuracy": 0.6, "n": 50}],
        "baseline": {"label": "base-sudoku", "results": [{"steps": 4, "accuracy": 0.1, "n": 50}]},
    }
    ax = frontier_figure(report).axes[0]
    assert _legend(ax) == ["gsm step 200", "base-sudoku"]
    assert ax.get_ylabel() == "cell accuracy (%)" and ax.get_title().startswith("sudoku: cell accuracy vs")
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == 2
    segments = bars[0].lines[2][0].get_segments()
    low, high = wilson_interval(0.2, 50)
    assert segments[0][0][1] == pytest.approx(100 * low) and segments[0][1][1] == pytest.approx(100 * high)
