"""Generators: determinism, valid solutions, unique Sudoku, disjoint splits, clear option errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from common.errors import ConfigError
from rewards.generators import generate, generate_split, write_jsonl
from rewards.safe_expr import evaluate, uses_exactly
from rewards.tasks import load_task
from rewards.tasks.sudoku import count_solutions


@pytest.mark.parametrize("task", ["countdown", "sudoku", "arithmetic"])
def test_same_seed_same_items(task: str) -> None:
    assert generate(task, 20, seed=7) == generate(task, 20, seed=7)
    assert generate(task, 20, seed=7) != generate(task, 20, seed=8)


def test_countdown_solution_reaches_target_with_each_number_once() -> None:
    items = generate("countdown", 200, seed=0, num_numbers=[3, 4], max_number=50, max_target=500)
    assert Counter(len(i["numbers"]) for i in items).keys() == {3, 4}
    for item in items:
        result = evaluate(item["expression"])
        assert result.value == item["target"]
        assert uses_exactly(result.literals, item["numbers"])
        assert 1 <= item["target"] <= 500
        assert all(1 <= n <= 50 for n in item["numbers"])
        assert load_task("countdown").grade(item["completion"], item) == (1.0, 1.0)


def test_sudoku_has_unique_solution_and_chosen_blanks() -> None:
    for item in generate("sudoku", 60, seed=1, min_blanks=9, max_blanks=12):
        puzzle = [int(c) for c in item["puzzle"]]
        assert 9 <= puzzle.count(0) <= 12
        assert count_solutions(puzzle) == 1
        assert all(p in ("0", s) for p, s in zip(item["puzzle"], item["solution"], strict=True))
        solved = [int(c) for c in item["solution"]]
        assert count_solutions(solved) == 1 and 0 not in solved
        correct, empty = load_task("sudoku").grade(item["completion"], item)
        assert correct == empty == puzzle.count(0)


def test_count_solutions_sees_ambiguity() -> None:
    assert count_solutions([0] * 16) == 2
    assert count_solutions([1, 1] + [0] * 14) == 0


def test_arithmetic_answers_are_right() -> None:
    for item in generate("arithmetic", 50, seed=2, forms=["a*b-c", "a+b*c"]):
        assert evaluate(item["question"]).value == int(item["answer"])
        assert load_task("arithmetic").grade(item["completion"], item) == (1.0, 1.0)


@pytest.mark.parametrize("task", ["countdown", "sudoku", "arithmetic"])
def test_split_is_disjoint_and_eval_is_stable(task: str) -> None:
    train, evaluation = generate_split(task, 60, 20, seed=3)
    key = load_task(task).item_key
    assert len(train) == 60 and len(evaluation) == 20
    assert len({key(i) for i in train}) == 60
    assert not {key(i) for i in train} & {key(i) for i in evaluation}
    assert generate_split(task, 10, 20, seed=3)[1] == evaluation


def test_option_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="unknown option 'blanks'"):
        generate("sudoku", 1, 0, blanks=3)
    with pytest.raises(ConfigError, match="max_blanks <= 12"):
        generate("sudoku", 1, 0, max_blanks=13)
    with pytest.raises(ConfigError, match="only 1 of 5 distinct"):
        generate("arithmetic", 5, 0, min_number=1, max_number=1, forms=["a+b"])
    with pytest.raises(ConfigError, match="no generator"):
        generate("gsm8k", 1, 0)


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    items = generate("countdown", 5, 0)
    path = write_jsonl(items, tmp_path / "sub" / "c.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == items
