"""Data files that used to end `agrpo score` and `agrpo train` in a traceback: one line, or one skipped row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import cluster.cli as cli
from common.errors import DataError
from rewards.data import read_items

GOOD = {"completion": "<answer>3</answer>", "answer": "3", "question": "1+2"}


@pytest.fixture(autouse=True)
def only_score(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {"score": "cluster.commands.score"})


def lines_of_json(*texts: str) -> str:
    return "".join(t + "\n" for t in texts)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("binary.jsonl", b"\x01\x02" + bytes(range(128, 256)) * 20, r"not UTF-8 JSONL text \(byte 0x80 at offset 2\)"),
        ("nul.jsonl", b'{"a": 1}\n\x00\x00\x00', r"binary or UTF-16, not JSONL text \(a NUL byte at offset 9\)"),
        ("utf16.csv", "completion,answer\nx,3\n".encode("utf-16"), "binary or UTF-16, not CSV text"),
        (
            "deep.json",
            ("[{" + '"a": ' + "[" * 100000 + "]" * 100000 + "}]").encode(),
            r"deep.json:1: .*nested too deeply",
        ),
        ("garbage.parquet", b"PAR1 not a parquet file PAR1", "not a readable parquet file"),
    ],
)
def test_unreadable_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_items(path, "arithmetic", require=("completion",))
    assert cli.main(["score", "--task", "arithmetic", "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rows").mkdir()
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        read_items(tmp_path / "rows", "arithmetic")
    with pytest.raises(DataError, match="is a directory, data.format jsonl needs a jsonl file"):
        read_items(tmp_path / "rows", "arithmetic", format="jsonl")
    with pytest.raises(DataError, match="is a file, data.format hf_disk needs a directory"):
        read_items(Path(__file__), "arithmetic", format="hf_disk")
    assert cli.main(["score", "--task", "arithmetic", "--input", str(tmp_path / "rows")]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"completion": "x", "answer": ' + "[" * 100000 + "]" * 100000 + "}", r"not valid JSON \(nested too deeply\)"),
        ('{"completion": "x", "answer": ' + "1" * 5000 + "}", r"not valid JSON \(an integer of more than \d+ digits\)"),
        (b'{"completion": "\xff"}', r"not UTF-8 text \(byte 0xff at column 17\)"),
    ],
)
def test_a_bad_jsonl_row_is_skipped_with_its_line(tmp_path: Path, bad: str | bytes, reason: str) -> None:
    path = tmp_path / "rows.jsonl"
    bad_line = bad if isinstance(bad, bytes) else bad.encode()
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad_line + b"\n" + json.dumps(GOOD).encode() + b"\n")
    loaded = read_items(path, "arithmetic", require=("completion",))
    assert loaded.lines == [1, 3]
    assert len(loaded.skipped) == 1
    assert loaded.skipped[0].startswith(f"{path}:2: ")
    assert re.search(reason, loaded.skipped[0])


def test_a_csv_field_past_the_limit_is_one_skipped_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("completion,answer,question\n" + "x" * 200_000 + ",3,1+2\n<answer>3</answer>,3,1+2\n")
    loaded = read_items(path, "arithmetic", require=("completion",))
    assert [item["completion"] for item in loaded.items] == ["<answer>3</answer>"]
    assert loaded.lines == [3]
    assert loaded.skipped == [f"{path}:2: not valid CSV (field larger than field limit (131072))"]
