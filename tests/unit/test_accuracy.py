"""`evaluate()` and the `agrpo sft` -> `agrpo eval` round trip on a tiny arithmetic setting."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cluster.cli as cli
from common.config import DataConfig, ModelConfig, load_config
from common.errors import ConfigError, DataError, UserError
from common.model.loading import load_policy, save_policy
from rewards.data import load_task_items
from rewards.tasks import load_task
from rollout.accuracy import eval_sampler, evaluate
from tests.unit.model_helpers import write_toy_remote_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETTING = {
    "seed": 4,
    "model": {"tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128}},
    "sampler": {"gen_length": 8, "block_length": 8, "steps": 4},
    "data": {"task": "arithmetic", "num_train": 150, "num_eval": 40, "generator": {"forms": ["a+b", "a*b"]}},
    "sft": {"steps": 200, "batch_size": 32, "lr": 0.003},
}


@pytest.fixture(autouse=True)
def only_my_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {name: f"cluster.commands.{name}" for name in ("sft", "eval", "plot")})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `agrpo sft` run shared by the tests below (the CLI is called directly, not through a shell)."""
    root = tmp_path_factory.mktemp("sft")
    config = root / "sft.yaml"
    config.write_text(yaml.safe_dump({**SETTING, "run_dir": str(root / "runs" / "tiny")}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "COMMANDS", {"sft": "cluster.commands.sft"})
        assert cli.main(["sft", "--config", str(config), "--device", "cpu"]) == 0
    out = root / "runs" / "base-arithmetic"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "sft_config.yaml"):
        assert (out / name).is_file(), name
    return out


def _eval(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(["eval", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sft_then_eval_round_trip(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ev"
    config = str(checkpoint / "sft_config.yaml")
    args = ["--checkpoint", str(checkpoint), "--config", config, "--steps", "2,4,8", "--output", str(out)]
    code, stdout, _ = _eval(args, capsys)
    assert code == 0 and f"wrote {out / 'eval.json'}" in stdout
    report = json.loads((out / "eval.json").read_text())
    assert report["checkpoint"] == str(checkpoint) and report["task"] == "arithmetic"
    assert report["n"] == 40 and report["settings"]["gen_length"] == 8 and report["settings"]["block_length"] == 8
    assert [r["steps"] for r in report["results"]] == [2, 4, 8]
    for r in report["results"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] == 40 and r["den"] == 40
        assert r["accuracy"] == r["num"] / r["den"] and r["seconds"] > 0 and r["tokens_per_s"] > 0
    assert "baseline" not in report
    assert (out / "accuracy_vs_steps.png").read_bytes().startswith(PNG_MAGIC)


def test_baseline_adds_a_second_curve(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ev"
    args = ["--checkpoint", str(checkpoint), "--task", "arithmetic", "--gen-length", "8", "--steps", "4,8"]
    code, stdout, _ = _eval([*args, "--n", "10", "--baseline", "tiny", "--output", str(out)], capsys)
    assert code == 0 and "baseline tiny" in stdout
    report = json.loads((out / "eval.json").read_text())
    assert report["baseline"]["checkpoint"] == "tiny"
    assert [r["steps"] for r in report["baseline"]["results"]] == [4, 8]
    assert [r["steps"] for r in report["results"]] == [4, 8]
    assert (out / "accuracy_vs_steps.png").read_bytes().startswith(PNG_MAGIC)


def test_tiny_checkpoint_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ev"
    code, _, _ = _eval(
        ["--checkpoint", "tiny", "--task", "countdown", "--steps", "4,8", "--n", "6", "--output", str(out)], capsys
    )
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["block_length"] == 32 and [r["steps"] for r in report["results"]] == [4, 8]
    assert report["data"].startswith("generated countdown eval split")
    assert (out / "accuracy_vs_steps.png").stat().st_size > 5000


def test_data_file(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "items.jsonl"
    rows = [{"question": f"{a}+{b}", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 5), (2, 7), (0, 6)]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"question": "1+1"}\n')
    out = tmp_path / "ev"
    args = ["--checkpoint", str(checkpoint), "--task", "arithmetic", "--data", str(data), "--gen-length", "8"]
    code, _, err = _eval([*args, "--steps", "4", "--output", str(out)], capsys)
    assert code == 0 and f"{data}:6: missing field 'answer'" in err
    report = json.loads((out / "eval.json").read_text())
    assert report["n"] == 5 and report["data"] == str(data) and report["results"][0]["den"] == 5


def test_evaluate_matches_grading_its_completions(checkpoint: Path) -> None:
    """On training items (which the model has seen) so that some, not all, completions are right."""
    config = load_config(checkpoint / "sft_config.yaml")
    policy = load_policy(ModelConfig(path=str(checkpoint)))
    policy.model.train()
    items = load_task_items(config.data, "train", config.seed)[:48]
    cfg = eval_sampler(8, 8, 4)
    result = evaluate(policy, items, "arithmetic", "plain", cfg, batch_size=20, seed=0, keep_outcomes=True)
    assert policy.model.training, "evaluate restores the caller's mode"
    grade = load_task("arithmetic").grade
    regraded = [grade(o["completion"], item) for o, item in zip(result["outcomes"], items, strict=True)]
    assert [(o["num"], o["den"]) for o in result["outcomes"]] == regraded
    assert result["n"] == 48 and result["den"] == 48
    assert result["accuracy"] == sum(n for n, _ in regraded) / 48
    assert 0.0 < result["accuracy"] < 1.0, result["accuracy"]
    assert sum("<answer>" in o["completion"] for o in result["outcomes"]) >= 40
    again = evaluate(policy, items, "arithmetic", "plain", cfg, batch_size=20, seed=0, keep_outcomes=True)
    assert again["outcomes"] == result["outcomes"]


def test_sudoku_accuracy_counts_cells() -> None:
    policy = load_policy(ModelConfig(path="tiny"))
    items = load_task_items(DataConfig(task="sudoku", num_eval=4), "eval", 0)
    result = evaluate(policy, items, "sudoku", "plain", eval_sampler(32, 32, 8), 4, 0)
    assert result["den"] == sum(item["puzzle"].count("0") for item in items)
    assert 0.0 <= result["accuracy"] <= 1.0 and "outcomes" not in result


def test_eval_sampler_rejects_a_schedule_that_does_not_divide() -> None:
    with pytest.raises(ConfigError, match=r"sampler.steps = 3: must be divisible by the number of blocks"):
        eval_sampler(16, 8, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "/nonexistent/ckpt", "--task", "countdown"], "--checkpoint /nonexistent/ckpt: directory"),
        (["--checkpoint", "tiny", "--task", "chess"], "data.task = 'chess': unknown"),
        (["--checkpoint", "tiny", "--n", "4", "evaluation.num_items=5"], "--n and evaluation.num_items=5: both set"),
        (["--checkpoint", "tiny", "--steps", "4", "sampler.steps=8"], "--steps and sampler.steps=8: both set"),
        (
            [
                "--checkpoint",
                "tiny",
                "--task",
                "countdown",
                "--gen-length",
                "16",
                "--block-length",
                "8",
                "--steps",
                "3",
            ],
            "sampler.steps = 3: must be divisible by the number of blocks",
        ),
        (["--checkpoint", "tiny", "--task", "countdown", "--steps", "4,x"], "--steps '4,x': must be"),
        (["--checkpoint", "tiny", "--task", "countdown", "--steps", "0,4"], "--steps '0,4': every step count"),
        (["--checkpoint", "tiny", "--task", "countdown", "--template", "chat"], "data.template = 'chat'"),
        (["--checkpoint", "tiny", "--task", "gsm8k"], "data.task = 'gsm8k': has no generator"),
        (["--checkpoint", "tiny", "--task", "countdown", "--baseline", "/nonexistent/b"], "--baseline /nonexistent/b"),
        (["--checkpoint", "tiny", "--task", "countdown", "--data", "/nonexistent.jsonl"], "--data /nonexistent.jsonl"),
    ],
)
def test_eval_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _eval(args, capsys)
    assert code == 2
    assert err.startswith("agrpo eval: error: ") and message in err
    assert err.count("\n") == 1


def test_help_of_every_command(capsys: pytest.CaptureFixture) -> None:
    for name in ("sft", "eval", "plot"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: agrpo {name}" in capsys.readouterr().out


def test_command_modules_import_no_heavy_libraries() -> None:
    code = (
        "import sys, cluster.commands.sft, cluster.commands.eval, cluster.commands.plot; "
        "print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_untokenizable_prompt_is_a_one_line_data_error() -> None:
    policy = load_policy(ModelConfig(path="tiny"))
    items = [{"question": "Janet’s ducks", "answer": "3"}]
    with pytest.raises(DataError, match=r"gsm8k item 0 prompt: cannot be tokenized") as err:
        evaluate(policy, items, "gsm8k", "plain", eval_sampler(8, 8, 4), 1, 0)
    assert "\n" not in str(err.value)


def test_remote_code_checkpoint_evaluates_with_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model_dir = tmp_path / "remote"
    model_dir.mkdir()
    write_toy_remote_dir(model_dir)
    args = ["--checkpoint", str(model_dir), "--task", "arithmetic", "--gen-length", "8", "--steps", "4", "--n", "4"]
    args += ["--block-length", "8"]
    code, _, err = _eval([*args, "--output", str(tmp_path / "ev")], capsys)
    assert code == 2 and "set model.trust_remote_code=true" in err
    code, _, _ = _eval([*args, "--output", str(tmp_path / "ev"), "--trust-remote-code", "--logits-shift"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["results"][0]["n"] == 4


def test_evaluate_grades_under_the_chosen_protocol() -> None:
    """d1's Sudoku parser reads the whole window with its special tokens; the count is over the same cells."""
    policy = load_policy(ModelConfig(path="tiny"))
    items = load_task_items(DataConfig(task="sudoku", num_eval=4), "eval", 0)
    ours = evaluate(policy, items, "sudoku", "plain", eval_sampler(32, 32, 8), 4, 0)
    theirs = evaluate(policy, items, "sudoku", "plain", eval_sampler(32, 32, 8), 4, 0, protocol="d1")
    assert (ours["protocol"], theirs["protocol"]) == ("agrpo", "d1")
    assert ours["den"] == theirs["den"] == sum(item["puzzle"].count("0") for item in items)
    assert ours["grading_timeouts"] == theirs["grading_timeouts"] == 0
    assert ours["grading_errors"] == theirs["grading_errors"] == 0


def test_a_protocol_without_the_task_fails_before_sampling(capsys: pytest.CaptureFixture) -> None:
    policy = load_policy(ModelConfig(path="tiny"))
    with pytest.raises(UserError, match=r"protocol 'd1' with task 'arithmetic'"):
        evaluate(
            policy,
            [{"question": "1+1", "answer": "2"}],
            "arithmetic",
            "plain",
            eval_sampler(8, 8, 4),
            1,
            0,
            protocol="d1",
        )
    code, _, err = _eval(["--checkpoint", "tiny", "--task", "arithmetic", "--protocol", "d1"], capsys)
    assert code == 2 and "d1's evaluation parser grades only" in err and err.count("\n") == 1


def test_block_checkpoint_evaluates_in_its_own_blocks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model_dir = tmp_path / "block"
    policy = load_policy(ModelConfig(tiny={"attention": "block_causal", "block_size": 4}))
    save_policy(policy, model_dir)
    args = ["--checkpoint", str(model_dir), "--task", "arithmetic", "--gen-length", "8", "--steps", "4", "--n", "4"]
    code, _, _ = _eval([*args, "--output", str(tmp_path / "ev")], capsys)
    assert code == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["settings"]["block_length"] == 4 and report["settings"]["kv_cache"] == "auto"
    assert report["results"][0]["n"] == 4


def _fake_run(root: Path, checkpoint: Path, steps: tuple[int, ...]) -> Path:
    """A run directory as training leaves it: config.yaml and checkpoints/step-N/{model/, driver.json, manifest}."""
    config = yaml.safe_load((checkpoint / "sft_config.yaml").read_text())
    run = root / "myrun"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for step in steps:
        step_dir = run / "checkpoints" / f"step-{step:08d}"
        shutil.copytree(checkpoint, step_dir / "model")
        (step_dir / "driver.json").write_text(json.dumps({"step": step, "config": yaml.safe_dump(config)}))
        (step_dir / "manifest.json").write_text("{}")
    (run / "checkpoints" / f"step-{max(steps) + 1:08d}").mkdir()  # half-written: no manifest, never chosen
    return run


def test_run_and_step_directories_evaluate_their_checkpoint(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = _fake_run(tmp_path, checkpoint, (2, 4))
    step = run / "checkpoints" / "step-00000002"
    for given, label, model in ((run, "myrun step 4", "step-00000004"), (step, "myrun step 2", "step-00000002")):
        out = tmp_path / f"ev-{label[-1]}"
        code, stdout, _ = _eval(["--checkpoint", str(given), "--steps", "4", "--n", "5", "--output", str(out)], capsys)
        assert code == 0, stdout
        report = json.loads((out / "eval.json").read_text())
        assert report["label"] == label and Path(report["model"]) == run / "checkpoints" / model / "model"
        assert report["config"] == str(run / "checkpoints" / model / "driver.json")
        assert report["task"] == "arithmetic" and report["settings"]["gen_length"] == 8  # the run's own config
        assert report["n"] == 5 and f"evaluating {label}" in stdout


def test_a_run_directory_without_a_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    code, _, err = _eval(["--checkpoint", str(tmp_path / "run")], capsys)
    assert code == 2 and "a run directory without a complete checkpoint" in err and err.count("\n") == 1
    code, _, err = _eval(["--checkpoint", str(tmp_path)], capsys)
    assert code == 2 and "not a model directory (no config.json), a checkpoint" in err
