"""Data loading: every format, field mapping, malformed rows (file:line, skip or fail), splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import DataConfig
from common.errors import ConfigError, DataError
from rewards.data import load_items, load_task_items, read_items
from tests.unit.reward_helpers import shared_file

ROWS = [
    {"question": "1+1?", "answer": "2"},
    {"question": "2+2?", "answer": 4},
    {"question": "GSM style", "answer": "so 3 #### 1,000"},
]


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_normalises_answers(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [json.dumps(r) for r in ROWS])
    items = load_items(path, "gsm8k")
    assert [i["answer"] for i in items] == ["2", "4", "1,000"]
    assert items[0]["question"] == "1+1?"


def test_malformed_rows_are_reported_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [json.dumps(ROWS[0]), "{not json", "", json.dumps({"question": "q"}), json.dumps({"answer": "two"}), "[1]"],
    )
    items = load_items(path, "gsm8k")
    assert len(items) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: not valid JSON" in err
    assert f"{path}:4: missing field 'answer'" in err
    assert f"{path}:5: answer 'two' is not a number" in err
    assert f"{path}:6: not an object" in err
    assert "skipped 4 malformed rows of 5" in err
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid JSON"):
        load_items(path, "gsm8k", on_malformed="fail")


def test_json_array_rows_report_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n  {"answer": "1"},\n  {"question": "no answer"},\n  {"answer": "3"}\n]\n')
    result = read_items(path, "math")
    assert [i["answer"] for i in result.items] == ["1", "3"]
    assert result.skipped == [f"{path}:3: missing field 'answer' (column 'answer')"]
    path.write_text('{"answer": "1"}')
    with pytest.raises(DataError, match="JSON array"):
        load_items(path, "math")


def test_csv_with_benchmark_columns_and_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "Puzzle,Solution\n3102200002100320,3142243142131324\n3102,3142243142131324\n"
        "3102200002100320\n1102200002100320,3142243142131324\n"
    )
    result = read_items(path, "sudoku")
    assert result.items == [{"puzzle": "3102200002100320", "solution": "3142243142131324"}]
    assert result.skipped[0].startswith(f"{path}:3: puzzle '3102' is not 16 digits")
    assert result.skipped[1] == f"{path}:4: fewer fields than the header"
    assert result.skipped[2].startswith(f"{path}:5: solution disagrees")


def test_countdown_benchmark_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [json.dumps({"input": "30,100,93", "output": "23"})])
    assert load_items(path, "countdown") == [{"numbers": [30, 100, 93], "target": 23}]


def test_field_mapping(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "m.jsonl", [json.dumps({"problem_text": "p", "gold": "\\frac12", "answer": "x"})])
    items = load_items(path, "math", fields={"answer": "gold", "question": "problem_text"})
    assert items == [{"question": "p", "answer": "\\frac12"}]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"nums": [[3, 5, 7], [1]], "target": [22, -1]}), path)
    assert load_items(path, "countdown") == [
        {"numbers": [3, 5, 7], "target": 22},
        {"numbers": [1], "target": -1},
    ]


def test_save_to_disk_dataset_and_dataset_dict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import datasets

    data = datasets.Dataset.from_list([{"puzzle": "3102200002100320", "solution": "3142243142131324"}] * 2)
    data.save_to_disk(str(tmp_path / "ds"))
    assert len(load_items(tmp_path / "ds", "sudoku")) == 2
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_items(tmp_path / "dd", "sudoku", format="hf_disk")) == 2
    bad = datasets.Dataset.from_list([{"puzzle": "31", "solution": "3142243142131324"}])
    bad.save_to_disk(str(tmp_path / "bad"))
    assert load_items(tmp_path / "bad", "sudoku") == []
    assert f"{tmp_path / 'bad'}:1: puzzle '31'" in capsys.readouterr().err


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: not found"):
        load_items(tmp_path / "nope.jsonl", "gsm8k")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_items(tmp_path / "d.txt", "gsm8k")


def test_generated_splits_are_disjoint() -> None:
    cfg = DataConfig(task="countdown", num_train=30, num_eval=10, generator={"max_number": 20})
    train, evaluation = load_task_items(cfg, "train", 3), load_task_items(cfg, "eval", 3)
    assert len(train) == 30 and len(evaluation) == 10
    keys = {(tuple(sorted(i["numbers"])), i["target"]) for i in evaluation}
    assert not keys & {(tuple(sorted(i["numbers"])), i["target"]) for i in train}
    assert load_task_items(cfg, "eval", 3) == evaluation


def test_file_splits(tmp_path: Path) -> None:
    rows = [json.dumps({"answer": str(k)}) for k in range(10)]
    _jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(task="gsm8k", path=str(tmp_path / "d.jsonl"), num_eval=3)
    train, evaluation = load_task_items(cfg, "train", 0), load_task_items(cfg, "eval", 0)
    assert len(evaluation) == 3 and len(train) == 7
    assert {i["answer"] for i in train} | {i["answer"] for i in evaluation} == {str(k) for k in range(10)}
    _jsonl(tmp_path / "p_train.jsonl", rows[:4])
    _jsonl(tmp_path / "p_eval.jsonl", rows[4:6])
    per_split = DataConfig(task="gsm8k", path=str(tmp_path / "p_{split}.jsonl"))
    assert len(load_task_items(per_split, "train", 0)) == 4
    assert len(load_task_items(per_split, "eval", 0)) == 2
    with pytest.raises(DataError, match="num_eval"):
        load_task_items(DataConfig(task="gsm8k", path=str(tmp_path / "p_eval.jsonl"), num_eval=5), "eval", 0)
    with pytest.raises(ConfigError, match="no generator"):
        load_task_items(DataConfig(task="math"), "train", 0)


def test_shared_benchmark_files_load_completely() -> None:
    assert len(load_items(shared_file("countdown_cd3_test.jsonl"), "countdown")) == 256
    assert len(load_items(shared_file("sudoku_4x4_test.csv"), "sudoku")) == 500
    assert len(load_items(shared_file("gsm8k_test.jsonl"), "gsm8k")) == 1128
    assert len(load_items(shared_file("math500_test.jsonl"), "math")) == 500


def test_nested_columns_by_dotted_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """verl's layout: the answer inside `reward_model`, the question inside `extra_info`; a row without the nested
    value keeps its file:row report. The nested columns stay in the item beside the fields read from them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "verl.parquet"
    rows = [
        {"reward_model": {"style": "rule", "ground_truth": "72"}, "extra_info": {"question": "8*9?", "index": 0}},
        {"reward_model": {"style": "rule", "ground_truth": None}, "extra_info": {"question": "1+1?", "index": 1}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    fields = {"answer": "reward_model.ground_truth", "question": "extra_info.question"}
    items = load_items(path, "gsm8k", fields=fields)
    assert [(i["answer"], i["question"], i["extra_info"]["index"]) for i in items] == [("72", "8*9?", 0)]
    assert items[0]["reward_model"]["style"] == "rule"
    assert f"{path}:2: missing field 'answer' (column 'reward_model.ground_truth')" in capsys.readouterr().err
    dotted = tmp_path / "dotted.jsonl"  # a column whose own name has a dot wins over the path
    _jsonl(dotted, [json.dumps({"a.b": "5", "a": {"b": "6"}})])
    assert load_items(dotted, "gsm8k", fields={"answer": "a.b"})[0]["answer"] == "5"


def test_split_names_fill_the_path_and_pick_dataset_dict_splits(tmp_path: Path) -> None:
    import datasets

    rows = [json.dumps({"answer": str(k)}) for k in range(6)]
    _jsonl(tmp_path / "gsm8k-train.jsonl", rows[:4])
    _jsonl(tmp_path / "gsm8k-test.jsonl", rows[4:])
    hub = DataConfig(task="gsm8k", path=str(tmp_path / "gsm8k-{split}.jsonl"), eval_split="test")
    assert [i["answer"] for i in load_task_items(hub, "eval", 0)] == ["4", "5"]
    assert len(load_task_items(hub, "train", 0)) == 4
    with pytest.raises(DataError, match=r"gsm8k-eval\.jsonl: not found"):
        load_task_items(hub.model_copy(update={"eval_split": "eval"}), "eval", 0)

    splits = {"train": [{"answer": "1"}] * 3, "test": [{"answer": "2"}] * 2}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(tmp_path / "dd")
    named = DataConfig(task="gsm8k", path=str(tmp_path / "dd"), eval_split="test", num_eval=1)
    assert [i["answer"] for i in load_task_items(named, "eval", 0)] == ["2", "2"]
    assert [i["answer"] for i in load_task_items(named, "train", 0)] == ["1", "1", "1"]
    unnamed = named.model_copy(update={"eval_split": "eval"})
    with pytest.raises(DataError, match=r"holds splits train, test; name the two to use in data.train_split"):
        load_task_items(unnamed, "eval", 0)
    with pytest.raises(DataError, match=r"has no split 'validation'; it holds train, test"):
        load_items(tmp_path / "dd", "gsm8k", split="validation")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.eval_split=a/b", "data.eval_split = 'a/b': must be a non-empty name without '/', '{' or padding"),
        ("data.train_split=", "data.train_split = '': must be a non-empty name without '/', '{' or padding"),
        ("data.eval_split=train", "data.eval_split = 'train': must differ from train_split"),
    ],
)
def test_split_names_are_checked(override: str, message: str) -> None:
    from common.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == f"overrides: {message}"
