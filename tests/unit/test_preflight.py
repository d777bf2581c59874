"""Mistakes `open_run` finds before Ray starts (each used to surface late, or as a traceback from an actor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cluster.cli as cli
import cluster.train
from cluster.train import open_run
from common.config import load_config
from common.errors import CheckpointError, ConfigError, DataError, UserError


def config_for(run_dir: Path, *overrides: str):
    return load_config(None, [f"run_dir={run_dir}", "data.num_train=8", "data.num_eval=4", *overrides])


@pytest.fixture(autouse=True)
def no_base_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.train, "ensure_base_model", lambda _config: None)


def model_dir(path: Path, weights: bool = True, **config: object) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llada", **config}))
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        (
            ["model.path={tmp}/missing"],
            CheckpointError,
            r"model.path .*/missing: directory not found \(model.build_if_missing = never\)",
        ),
        (["model.path={tmp}/no_config"], CheckpointError, "config.json is missing"),
        (["model.path={tmp}/no_weights"], CheckpointError, "no weights"),
        (
            ["model.path={tmp}/short", "sampler.gen_length=64", "sampler.block_length=64"],
            ConfigError,
            r"sampler.gen_length = 64: must be below the model's 64 positions \(max_sequence_length in .*short/config.json\)",
        ),
        (
            ["model.path={tmp}/to_build", "model.build_if_missing=sft", "model.tiny.max_sequence_length=32"],
            ConfigError,
            r"gen_length = 32: must be below the model's 32 positions \(model.tiny.max_sequence_length \(the shape of the SFT",
        ),
        (["data.task=gsm8k", "data.path={tmp}/nothing.jsonl"], DataError, r"data file .*nothing.jsonl: not found"),
        (
            ["data.task=gsm8k", "data.path={tmp}/{{split}}.jsonl", "evaluation.num_items=5"],
            ConfigError,
            r"evaluation.num_items = 5: more than the 2 held-out items of .*\{split\}.jsonl; lower it, or unset it",
        ),
        (["checkpoint.resume={tmp}/no_checkpoint"], CheckpointError, "checkpoint.resume .*: directory not found"),
        (["rewards.modules=[no_such_plugin_module]"], ConfigError, r"rewards.modules\[0\] = 'no_such_plugin_module'"),
        (
            [
                "rewards.modules=[tests.plugins_for_tests]",
                "rewards.plugins=[{{name: 'tests.plugins_for_tests:HangsWhileBuilt'}}]",
                "rewards.startup_timeout_s=0.5",
            ],
            ConfigError,
            r"HangsWhileBuilt': importing and building the reward plugins did not finish within 0.5 s",
        ),
    ],
)
def test_found_before_ray_starts_and_nothing_is_written(
    tmp_path: Path, overrides: list[str], error: type[UserError], expected: str
) -> None:
    model_dir(tmp_path / "short", max_sequence_length=64)
    model_dir(tmp_path / "no_weights", weights=False)
    (tmp_path / "no_config").mkdir()
    for split, n in (("train", 3), ("eval", 2)):
        rows = [{"question": f"{i}+1?", "answer": str(i + 1)} for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    config = config_for(run_dir, *(o.format(tmp=tmp_path) for o in overrides))
    with pytest.raises(error, match=expected) as info:
        open_run(config)
    assert "\n" not in str(info.value)
    assert not run_dir.exists()


def test_a_model_directory_that_fits_passes(tmp_path: Path) -> None:
    model_dir(tmp_path / "model", max_position_embeddings=4096)
    run = open_run(config_for(tmp_path / "run", f"model.path={tmp_path / 'model'}"))  # not entered: no Ray
    assert len(run.held_out) == 4
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_agrpo_train_with_a_missing_model_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {"train": "cluster.commands.train"})
    code = cli.main(
        ["train", f"run_dir={tmp_path / 'run'}", f"model.path={tmp_path / 'gone'}", "model.build_if_missing=never"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("agrpo train: error: model.path ")
    assert not (tmp_path / "run").exists()
