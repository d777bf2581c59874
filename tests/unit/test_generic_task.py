"""The generic task: prompts and every other column from the data, grading against an optional ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from common.config import DataConfig, RewardsConfig
from common.model import build_tiny_tokenizer
from rewards.data import load_items, load_task_items
from rewards.registry import build_reward_fn
from rewards.tasks import load_task
from rewards.tasks.generic import grade, reward
from rewards.templates import render_prompt

GENERIC = "rewards.tasks.generic"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+4="}]


def verl_rows() -> list[dict[str, Any]]:
    """Rows as verl's data preprocessing writes them (examples/data_preprocess/gsm8k.py's layout)."""
    return [
        {
            "data_source": "toy/sums",
            "prompt": [{"role": "user", "content": f"{a}+{b}="}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"split": "train", "index": a},
        }
        for a, b in ((1, 2), (3, 4), (5, 6), (7, 1))
    ]


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_a_verl_parquet_loads_with_every_column(tmp_path: Path) -> None:
    items = load_items(write_parquet(tmp_path / "train.parquet", verl_rows()), GENERIC)
    first = items[0]
    assert first["prompt"] == [{"role": "user", "content": "1+2="}]
    assert first["ground_truth"] == "3"  # read from reward_model.ground_truth by default
    assert (first["data_source"], first["ability"], first["extra_info"]) == (
        "toy/sums",
        "math",
        {"split": "train", "index": 1},
    )
    assert first["reward_model"] == {"style": "rule", "ground_truth": "3"}


def test_prompts_are_text_as_it_is_or_chat_turns_through_the_template() -> None:
    plain = build_tiny_tokenizer()
    chat = build_tiny_tokenizer()
    chat.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"
    text_item, chat_item = {"prompt": "3+4="}, {"prompt": CHAT}
    for template in ("plain", "d1", "agrpo"):  # the wording is the data's under every template
        assert render_prompt(GENERIC, text_item, template, chat) == "3+4="
        assert render_prompt(GENERIC, chat_item, template, chat) == "[system]Be brief.[user]3+4=[assistant]"
        assert render_prompt(GENERIC, chat_item, template, plain) == "Be brief.\n\n3+4="


def test_bad_rows_are_reported_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [
        {"prompt": "fine", "score_me": {"any": ["thing"]}},
        {"prompt": "  "},
        {"messages": [{"role": "user", "content": "also fine"}]},
        {"prompt": [{"role": "robot", "content": "x"}]},
        {"prompt": 7},
        {"question": "no prompt"},
        {"prompt": "ok", "ground_truth": {"a": 1}},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    items = load_items(path, GENERIC)
    assert [item["prompt"] for item in items] == ["fine", [{"role": "user", "content": "also fine"}]]
    assert items[0]["score_me"] == {"any": ["thing"]} and "ground_truth" not in items[0]
    err = capsys.readouterr().err
    assert f"{path}:2: prompt is empty" in err
    assert f"{path}:4: prompt turn 0 " in err and "must be {role: system|user|assistant, content: text}" in err
    assert f"{path}:5: prompt '7': must be a text or a non-empty list of chat turns" in err
    assert f"{path}:6: missing field 'prompt' (column 'prompt' or 'messages')" in err
    assert f"{path}:7: ground_truth " in err


@pytest.mark.parametrize(
    ("completion", "truth", "expected"),
    [
        ("<answer>7</answer>", "7", (1.0, 1.0)),
        ("so \\boxed{1,234} <answer>9</answer>", "1234", (1.0, 1.0)),  # a closed box first, numbers as numbers
        ("<answer>seven</answer><answer>18.0</answer>", "$18", (1.0, 1.0)),  # the last answer pair
        ("  Paris \n", "paris", (0.0, 1.0)),  # the whole completion; text compared exactly, up to whitespace
        ("  New   York ", "New York", (1.0, 1.0)),
        ("<answer>8</answer>", "7", (0.0, 1.0)),
        ("<answer>7</answer>", None, (0.0, 0.0)),  # no ground truth: not graded
    ],
)
def test_grade_compares_the_answer_with_the_ground_truth(completion: str, truth: str | None, expected: tuple) -> None:
    reference = {"prompt": "q"} if truth is None else {"prompt": "q", "ground_truth": truth}
    assert grade(completion, reference) == expected


def test_its_own_reward_needs_a_ground_truth_and_plugins_replace_it() -> None:
    assert reward("<answer>7</answer>", {"ground_truth": "7"}).score == 1.0
    with pytest.raises(ValueError, match="no ground_truth to compare with: name your reward plugins"):
        reward("<answer>7</answer>", {"prompt": "q"})
    scorer = build_reward_fn(RewardsConfig(plugins=[{"name": "length_penalty", "kwargs": {"max_chars": 4}}]), GENERIC)
    assert scorer.labels == ["length_penalty"]
    assert scorer("<answer>7</answer>", {"prompt": "q"}).error is None


def test_per_split_files_with_the_hub_split_name(tmp_path: Path) -> None:
    rows = verl_rows()
    write_parquet(tmp_path / "train.parquet", rows[:3])
    write_parquet(tmp_path / "test.parquet", rows[3:])
    cfg = DataConfig(task=GENERIC, path=str(tmp_path / "{split}.parquet"), eval_split="test")
    assert [i["ground_truth"] for i in load_task_items(cfg, "eval", 0)] == ["8"]
    assert len(load_task_items(cfg, "train", 0)) == 3
    task = load_task(GENERIC)
    assert task.generate is None and set(task.prompts) == {"plain", "d1", "agrpo"}


class _Worker:
    """A rollout worker stand-in whose evaluation grades nothing (as for items without a ground truth)."""

    class evaluate:  # the actor method, with its `.remote`
        @staticmethod
        def remote(*_: object) -> dict[str, float]:
            return {"accuracy": 0.0, "den": 0.0}


def test_an_evaluation_that_grades_nothing_has_no_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.held_out as held_out
    from common.config import load_config
    from common.metrics import RoleMetrics

    write_parquet(tmp_path / "rows.parquet", [{"prompt": f"{k}+1="} for k in range(10)])  # no ground truth
    config = load_config(None, [f"data.task={GENERIC}", f"data.path={tmp_path / 'rows.parquet'}", "data.num_eval=3"])
    monkeypatch.setattr(held_out.ray, "get", lambda value: value)
    items = held_out.held_out_items(config)
    evaluator = held_out.HeldOutEvaluator(config, _Worker(), items, RoleMetrics("test"))
    assert all(grade("<answer>1</answer>", item) == (0.0, 0.0) for item in evaluator.items)
    assert math.isnan(evaluator.run(0)) and math.isnan(evaluator.run(1))
    assert (evaluator.base(), evaluator.final()) == (None, None)  # printed as n/a, not 0%
    evaluator.history.append([2, 0.5])
    assert evaluator.final() == 0.5


def test_a_ground_truth_column_of_another_name_is_mapped(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "6*7=", "answer": "42", "topic": "times"}) + "\n")
    assert "ground_truth" not in load_items(path, GENERIC)[0]  # `answer` is any other column unless mapped
    item = load_items(path, GENERIC, fields={"ground_truth": "answer"})[0]
    assert (item["ground_truth"], item["topic"]) == ("42", "times")
    assert grade("<answer>42</answer>", item) == (1.0, 1.0)
