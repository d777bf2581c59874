"""`agrpo sample` in-process with the tiny model: JSONL output, prompt files, one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import main
from common.model.tokenizer import build_tiny_tokenizer
from tests.unit.block_helpers import write_sdar_dir
from tests.unit.model_helpers import write_toy_remote_dir

FAST = ["--gen-length", "16", "--block-length", "8", "--steps", "4", "--device", "cpu"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_line_per_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "deep" / "out.jsonl"
    argv = ["sample", "--model", "tiny", "--prompt", "3 5 7 = 22", "--prompt", "1+1="]
    code = main([*argv, *FAST, "--temperature", "1.0", "--top-k", "20", "--seed", "3", "--output", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert f"wrote 2 samples to {out}" in captured.out
    assert "sampling" in captured.err  # the progress bar
    rows = _rows(out)
    tokenizer = build_tiny_tokenizer()
    eos = tokenizer.eos_token_id
    assert [r["prompt"] for r in rows] == ["3 5 7 = 22", "1+1="]
    for row in rows:
        ids = row["completion_ids"]
        assert len(ids) == 16
        assert tokenizer.mask_token_id not in ids
        assert row["prompt_ids"] == tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert row["num_tokens"] == (ids.index(eos) if eos in ids else 16)
        assert row["text"] == tokenizer.decode(ids[: row["num_tokens"]], skip_special_tokens=True)

    again = tmp_path / "again.jsonl"
    main([*argv, *FAST, "--temperature", "1.0", "--top-k", "20", "--seed", "3", "--output", str(again)])
    assert _rows(again) == rows


def test_prompt_files_text_and_jsonl(tmp_path: Path):
    text = tmp_path / "prompts.txt"
    text.write_text("first prompt\n\nsecond prompt\n")
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": "first prompt", "id": 1}) + "\n" + json.dumps({"prompt": "second prompt"}))
    outs = []
    for source in (text, jsonl):
        out = tmp_path / f"{source.suffix[1:]}.out.jsonl"
        greedy = ["--temperature", "0", "--remasking", "low_confidence"]
        assert main(["sample", "--prompt-file", str(source), *FAST, *greedy, "--output", str(out)]) == 0
        outs.append(_rows(out))
    assert [r["prompt"] for r in outs[0]] == ["first prompt", "second prompt"]
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--block-length", "5"], "block_length = 5: must divide gen_length = 16"),
        (["--top-p", "1.5"], "overrides: sampler.top_p = 1.5"),
        (["--remasking", "best"], "overrides: sampler.remasking = 'best'"),
        (["--dtype", "float8"], "overrides: model.dtype = 'float8'"),
        (["--model", "/nonexistent/model"], "model.path /nonexistent/model: directory not found"),
        (["--block-length", "8", "sampler.block_length=4"], "--block-length and sampler.block_length=4: both set"),
        (["--device", "gpu"], "--device gpu: not a device name"),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
):
    out = tmp_path / "out.jsonl"
    code = main(["sample", "--prompt", "x", *FAST, *extra, "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and err.startswith("agrpo sample: error:")
    assert expected in err
    assert not out.exists()


def test_bad_prompt_file_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    assert main(["sample", "--prompt-file", str(bad), *FAST, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad}:2: expected an object with a string `prompt` field" in capsys.readouterr().err


def test_unwritable_output_fails_before_sampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "out.jsonl"
    assert main(["sample", "--prompt", "x", *FAST, "--output", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"--output {out}: {blocker} is a file, not a folder" in captured.err
    assert "sampling" not in captured.err  # refused before the progress bar started


def test_remote_code_directory_needs_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    model_dir = tmp_path / "remote"
    model_dir.mkdir()
    write_toy_remote_dir(model_dir)
    out = tmp_path / "out.jsonl"
    argv = ["sample", "--model", str(model_dir), "--prompt", "1+1=", *FAST, "--output", str(out)]
    assert main(argv) == 2
    assert "set model.trust_remote_code=true" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv, "--trust-remote-code", "--logits-shift"]) == 0
    assert len(_rows(out)[0]["completion_ids"]) == 16


def test_block_checkpoint_samples_in_its_own_blocks_with_and_without_the_cache(tmp_path: Path):
    """An SDAR-format directory: the block length defaults to the model's block size (4); the exact cache and
    full forwards give the same greedy completions."""
    model_dir = tmp_path / "sdar"
    write_sdar_dir(model_dir)
    argv = ["sample", "--model", str(model_dir), "--prompt", "3 5 7 = 22", "--prompt", "1+1="]
    greedy = ["--gen-length", "16", "--steps", "8", "--temperature", "0", "--remasking", "low_confidence"]
    outs = []
    for cache in ("auto", "off"):
        out = tmp_path / f"{cache}.jsonl"
        assert main([*argv, *greedy, "--kv-cache", cache, "--device", "cpu", "--output", str(out)]) == 0
        outs.append(_rows(out))
    assert outs[0] == outs[1]
    assert all(len(r["completion_ids"]) == 16 for r in outs[0])
    code = main([*argv, *greedy, "--block-length", "8", "--device", "cpu", "--output", str(tmp_path / "x.jsonl")])
    assert code == 2


def test_without_output_the_completions_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", "--prompt", "1+1=", "--prompt", "2+2=", *FAST, "--seed", "3"]
    assert main([*argv, "--output", str(tmp_path / "o.jsonl")]) == 0
    rows = _rows(tmp_path / "o.jsonl")
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    for i, row in enumerate(rows, start=1):
        assert f"--- {i}/2: {row['prompt']!r} ({row['num_tokens']} tokens)\n{row['text']}\n" in out
    assert "wrote 2 samples" not in out and [p.name for p in tmp_path.iterdir()] == ["o.jsonl"]


def test_a_config_file_and_greedy_sampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Temperature 0 is refused for training rollouts, not for sampling; the file's values are the defaults."""
    config = tmp_path / "c.yaml"
    config.write_text("sampler:\n  gen_length: 16\n  block_length: 8\n  steps: 4\n  temperature: 0\n")
    out = tmp_path / "o.jsonl"
    argv = [
        "sample",
        "--config",
        str(config),
        "--prompt",
        "1+1=",
        "--device",
        "cpu",
        "sampler.remasking=low_confidence",
    ]
    assert main([*argv, "--output", str(out)]) == 0
    again = tmp_path / "again.jsonl"
    assert main([*argv, "--seed", "9", "--output", str(again)]) == 0
    assert _rows(out) == _rows(again), "greedy sampling does not depend on the seed"
    assert len(_rows(out)[0]["completion_ids"]) == 16
