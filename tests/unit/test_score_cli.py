"""`agrpo score` and `agrpo generate` through the real CLI dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cluster.cli as cli


@pytest.fixture(autouse=True)
def only_these_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the parser from the two commands under test, whatever else the CLI lists."""
    monkeypatch.setattr(cli, "COMMANDS", {"score": "cluster.commands.score", "generate": "cluster.commands.generate"})


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_then_score_the_generated_completions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c.jsonl"
    assert cli.main(["generate", "--task", "countdown", "--n", "30", "--seed", "4", "--output", str(out)]) == 0
    assert "wrote 30 countdown items" in capsys.readouterr().out
    assert cli.main(["score", "--task", "countdown", "--input", str(out), "--scheme", "agrpo", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "task": "countdown",
        "scheme": "agrpo",
        "protocol": "agrpo",
        "accuracy": 1.0,
        "mean_reward": 3.0,
        "n": 30,
        "errors": 0,
        "timeouts": 0,
        "correct": 30.0,
        "total": 30.0,
    }


def test_score_text_output_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _rows(
        tmp_path / "g.jsonl",
        [
            {"completion": "<answer>18</answer>", "answer": "18"},
            {"completion": "<answer>17</answer>", "answer": 18},
            {"completion": "<answer>1</answer>"},
            {"answer": "3"},
            {"completion": 5, "answer": "5"},
        ],
    )
    assert cli.main(["score", "--task", "gsm8k", "--input", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["n"] == 2 and summary["errors"] == 3
    assert summary["accuracy"] == 0.5
    assert summary["mean_reward"] == pytest.approx((2.5 + 0.5) / 2)
    assert f"{path}:3: missing field 'answer'" in captured.err
    assert f"{path}:4: missing field 'completion'" in captured.err
    assert f"{path}:5: not scored (completion is int, not text)" in captured.err
    assert "3 of 5 rows not scored (above); accuracy and mean reward are over the 2 scored rows" in captured.err
    assert cli.main(["score", "--task", "gsm8k", "--input", str(path)]) == 0
    assert "gsm8k: accuracy 0.5000 (1/2), mean reward (d1) 1.5000, n 2, errors 3" in capsys.readouterr().out


def test_sudoku_accuracy_is_over_cells(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    puzzle, solution = "3102200002100320", "3142243142131324"
    wrong = "3142243142131321"  # last blank wrong
    path = _rows(
        tmp_path / "s.jsonl",
        [
            {"completion": f"<answer>{solution}</answer>", "puzzle": puzzle, "solution": solution},
            {"completion": f"<answer>{wrong}</answer>", "puzzle": puzzle, "solution": solution},
        ],
    )
    assert cli.main(["score", "--task", "sudoku", "--input", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(15 / 16)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "--task", "gsm8k", "--input", "missing.jsonl"], "missing.jsonl: not found"),
        (["generate", "--task", "sudoku", "--n", "2", "--output", "x.jsonl", "--min-number", "1"], "--min-number"),
        (["generate", "--task", "sudoku", "--n", "2", "--output", "x.jsonl", "--max-blanks", "14"], "max_blanks"),
        (["generate", "--task", "countdown", "--n", "0", "--output", "x.jsonl"], "--n 0"),
        (["generate", "--task", "countdown", "--n", "3", "--n-eval", "5", "--output", "x.jsonl"], "--n-eval: only"),
        (["generate", "--split", "eval", "--n", "3000", "--output", "x.jsonl"], "holds data.num_eval = 2000 items"),
        (["generate", "--output", "x.jsonl"], "--n: required without --split"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert not (tmp_path / "x.jsonl").exists()
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_no_scorable_rows_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _rows(tmp_path / "e.jsonl", [{"answer": "1"}])
    assert cli.main(["score", "--task", "math", "--input", str(path)]) == 2
    assert "no scorable rows" in capsys.readouterr().err


def test_generate_splits_are_disjoint(tmp_path: Path) -> None:
    common = ["generate", "--task", "sudoku", "--seed", "5"]
    assert (
        cli.main([*common, "--n", "40", "--split", "train", "--n-eval", "10", "--output", str(tmp_path / "t.jsonl")])
        == 0
    )
    assert cli.main([*common, "--n", "10", "--split", "eval", "--output", str(tmp_path / "e.jsonl")]) == 0
    train = {json.loads(line)["puzzle"] for line in (tmp_path / "t.jsonl").read_text().splitlines()}
    evaluation = {json.loads(line)["puzzle"] for line in (tmp_path / "e.jsonl").read_text().splitlines()}
    assert len(train) == 40 and len(evaluation) == 10 and not train & evaluation


def test_grading_past_the_time_limit_is_scored_wrong_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _rows(
        tmp_path / "m.jsonl",
        [
            {"completion": "\\boxed{x^{25}+1}", "answer": "1+x^{25}"},
            {"completion": "\\boxed{9^{9^{9^{9}}}}", "answer": "1"},
            {"completion": "\\boxed{\\frac12}", "answer": "0.5"},
        ],
    )
    argv = ["score", "--task", "math", "--input", str(path), "--grade-timeout", "0.5", "--json"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["n"], summary["errors"], summary["timeouts"]) == (3, 0, 1)
    assert (summary["correct"], summary["total"]) == (2.0, 3.0)
    assert f"{path}:2: grading ran past 0.5 s; scored as wrong" in captured.err
    assert "1 of 3 rows ran past the 0.5 s grading limit" in captured.err


def test_protocol_d1_reads_as_d1s_parser(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """No box: d1 compares the whole completion (wrong), ours reads the answer pair (right)."""
    path = _rows(tmp_path / "m.jsonl", [{"completion": "<answer>5</answer>", "answer": "5"}])
    accuracy = {}
    for protocol in ("agrpo", "d1"):
        assert cli.main(["score", "--task", "math", "--input", str(path), "--protocol", protocol, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["protocol"] == protocol
        accuracy[protocol] = summary["accuracy"]
    assert accuracy == {"agrpo": 1.0, "d1": 0.0}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "arithmetic", "--protocol", "d1"], "d1's evaluation parser grades only gsm8k, math, countdown"),
        (["--task", "gsm8k", "--grade-timeout", "0"], "rewards.grade_timeout_s = 0: Input should be greater than 0"),
        (["--task", "gsm8k", "--grade-timeout", "nan"], "rewards.grade_timeout_s = 'nan': Input should be a finite"),
    ],
)
def test_bad_protocol_or_limit_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    path = _rows(tmp_path / "a.jsonl", [{"completion": "<answer>1</answer>", "answer": "1"}])
    assert cli.main(["score", "--input", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_output_has_a_score_and_a_reason_for_every_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _rows(
        tmp_path / "g.jsonl",
        [
            {"completion": "<answer>18</answer>", "answer": "18"},
            {"completion": "<answer>17</answer>", "answer": 18},
            {"completion": "<answer>1</answer>"},
            {"completion": 5, "answer": "5"},
        ],
    )
    out = tmp_path / "scores.jsonl"
    assert cli.main(["score", "--task", "gsm8k", "--input", str(path), "--output", str(out)]) == 0
    assert f"wrote a score and a reason for each of 4 rows to {out}" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["row"], r["line"], r["status"]) for r in rows] == [
        (f"{path}:1", 1, "correct"),
        (f"{path}:2", 2, "wrong"),
        (f"{path}:3", 3, "skipped"),
        (f"{path}:4", 4, "error"),
    ]
    assert rows[0]["correct"] == rows[0]["total"] == 1.0 and rows[0]["reward"] == 2.5
    assert rows[0]["reason"].startswith("correct: 1 of 1 under the agrpo grader; reward 2.5 (")
    assert rows[1]["correct"] == 0.0 and rows[1]["reason"].startswith("wrong: 0 of 1 under the agrpo grader")
    assert rows[2]["reason"].startswith("not scored (missing field 'answer'") and rows[2]["reward"] is None
    assert rows[3]["reason"] == "not scored (completion is int, not text)"


def test_sudoku_rows_are_partial(tmp_path: Path) -> None:
    puzzle, solution = "3102200002100320", "3142243142131324"
    path = _rows(
        tmp_path / "s.jsonl",
        [{"completion": f"<answer>{solution[:-1]}1</answer>", "puzzle": puzzle, "solution": solution}],
    )
    out = tmp_path / "o.jsonl"
    assert cli.main(["score", "--task", "sudoku", "--input", str(path), "--output", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["status"] == "partial" and (row["correct"], row["total"]) == (7.0, 8.0)
    assert row["reason"].startswith("partial: 7 of 8 under the agrpo grader")


def test_generate_split_matches_training(tmp_path: Path) -> None:
    """--split with a recipe writes exactly the items of that split a training run with the recipe uses."""
    from common.config import DEFAULT_RECIPE, load_config
    from rewards.data import load_task_items

    config = load_config(DEFAULT_RECIPE, ["data.num_eval=30", "data.num_train=50"], training=False)
    argv = ["generate", "--config", str(DEFAULT_RECIPE), "data.num_eval=30", "data.num_train=50"]
    for split, n in (("eval", None), ("train", None), ("eval", 7)):
        out = tmp_path / f"{split}-{n}.jsonl"
        assert cli.main([*argv, "--split", split, *(["--n", str(n)] if n else []), "--output", str(out)]) == 0
        written = [json.loads(line) for line in out.read_text().splitlines()]
        expected = load_task_items(config.data, split, config.seed)
        assert written == expected[: n or len(expected)]
