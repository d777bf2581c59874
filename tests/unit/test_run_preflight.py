"""What `agrpo train` checks before anything slow starts, and what it refuses to overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

import cluster.train
from cluster.train import open_run
from common.checkpoint import write_checkpoint
from common.config import dump_config, load_config
from common.errors import CheckpointError, UserError


def config_for(run_dir: Path, *overrides: str):
    return load_config(None, [f"run_dir={run_dir}", "data.num_train=8", "data.num_eval=4", *overrides])


@pytest.fixture(autouse=True)
def no_base_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.train, "ensure_base_model", lambda _config: None)


def test_a_run_dir_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 20}\n')
    (tmp_path / "checkpoints" / "step-00000020").mkdir(parents=True)
    with pytest.raises(UserError, match=r"already holds a run \(metrics.jsonl, checkpoints\).*--resume.*--overwrite"):
        open_run(config_for(tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 20}\n'
    assert not (tmp_path / "config.yaml").exists()


def test_overwrite_deletes_the_old_outputs_first(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 20}\n')
    (tmp_path / "checkpoints" / "step-00000020").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    open_run(config_for(tmp_path, "checkpoint.overwrite=true"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "notes.txt"]


def test_an_unwritable_run_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"run_dir .*file/run: cannot write there"):
        open_run(config_for(tmp_path / "file" / "run"))


def test_a_refused_resume_changes_nothing(tmp_path: Path) -> None:
    """The checkpoint's settings are compared before Ray starts and before config.yaml is written."""
    saved = config_for(tmp_path)
    (tmp_path / "config.yaml").write_text(dump_config(saved))
    write_checkpoint(tmp_path / "checkpoints", 2, {"driver": {"step": 2, "config": dump_config(saved)}, "batches": {}})
    with pytest.raises(CheckpointError, match="different algorithm.group_size"):
        open_run(config_for(tmp_path, "checkpoint.resume=auto", "algorithm.group_size=4"))
    assert (tmp_path / "config.yaml").read_text() == dump_config(saved)
