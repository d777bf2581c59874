"""Wrong-answer perturbations: well-formed, near the right answer, and graded wrong."""

from __future__ import annotations

import random

import pytest

from common.errors import DataError
from rewards.answers import first_answer, parse_number
from rewards.generators import generate
from rewards.perturb import wrong_completion
from rewards.safe_expr import evaluate, uses_exactly
from rewards.tasks import countdown, load_task, sudoku


@pytest.mark.parametrize("options", [{}, {"max_number": 10, "num_numbers": [2, 3, 4]}])
def test_countdown_wrong_answers_are_valid_expressions_that_miss(options: dict) -> None:
    rng = random.Random(0)
    for item in generate("countdown", 200, 1, **options):
        wrong = wrong_completion("countdown", item, rng)
        answer = first_answer(wrong)
        result = evaluate(answer)
        assert uses_exactly(result.literals, item["numbers"])
        assert result.value != item["target"]
        assert wrong.startswith("<answer>") and wrong.endswith("</answer>")
        assert countdown.grade(wrong, item) == (0.0, 1.0)
        assert countdown.reward(wrong, item, "d1").components["attempt"] == countdown.D1_ATTEMPT


def test_countdown_keeps_the_claimed_target_and_prefers_whole_numbers() -> None:
    wrong = countdown.wrong_answer("(7+5)*2 = 24", [7, 5, 2], 24, random.Random(3))
    lhs, rhs = wrong.split("=")
    assert rhs == " 24"
    value = evaluate(lhs).value
    assert value != 24 and value.denominator == 1
    assert not countdown.check_answer(wrong, [7, 5, 2], 24)[0]


def test_countdown_without_any_wrong_neighbour_is_an_error() -> None:
    with pytest.raises(DataError, match="no well-formed wrong expression"):
        countdown.wrong_answer("0*0", [0, 0], 0, random.Random(0))


def test_sudoku_wrong_grids_keep_givens_and_digit_counts() -> None:
    rng = random.Random(0)
    for item in generate("sudoku", 100, 2):
        wrong = wrong_completion("sudoku", item, rng)
        grid = first_answer(wrong)
        assert len(grid) == 16 and set(grid) <= set("1234")
        changed = [i for i in range(16) if grid[i] != item["solution"][i]]
        assert changed and all(item["puzzle"][i] == "0" for i in changed)
        assert sorted(grid) == sorted(item["solution"])
        num, den = sudoku.grade(wrong, item)
        assert num == den - len(changed)
        assert sudoku.agrpo_format(grid, item["puzzle"]) == 1.0


def test_sudoku_with_one_blank_changes_that_cell() -> None:
    solution = "1234341221434321"
    puzzle = "0" + solution[1:]
    wrong = sudoku.wrong_grid(solution, puzzle, random.Random(0))
    assert wrong[1:] == solution[1:] and wrong[0] != solution[0] and wrong[0] in "1234"


def test_arithmetic_answers_are_off_by_a_little() -> None:
    rng = random.Random(0)
    offsets = set()
    for item in generate("arithmetic", 200, 3):
        wrong = wrong_completion("arithmetic", item, rng)
        delta = parse_number(first_answer(wrong)) - parse_number(item["answer"])
        offsets.add(int(delta))
        assert load_task("arithmetic").grade(wrong, item) == (0.0, 1.0)
    assert offsets == {-2, -1, 1, 2}


def test_only_the_first_answer_pair_changes() -> None:
    item = {"numbers": [3, 4], "target": 7, "completion": "<think>3+4</think>\n<answer>\n3+4\n</answer>"}
    wrong = wrong_completion("countdown", item, random.Random(0))
    assert wrong.startswith("<think>3+4</think>\n<answer>\n") and wrong.endswith("\n</answer>")
    assert first_answer(wrong) in {"3-4", "3*4", "3/4"}


def test_same_seed_same_perturbations() -> None:
    items = generate("countdown", 30, 5)
    first = [wrong_completion("countdown", it, random.Random(9)) for it in items]
    again = [wrong_completion("countdown", it, random.Random(9)) for it in items]
    assert first == again


@pytest.mark.parametrize(
    ("task", "item", "message"),
    [
        ("gsm8k", {"answer": "3", "completion": "<answer>3</answer>"}, "no wrong-answer perturbation"),
        ("arithmetic", {"answer": "3"}, "no `completion` text"),
        ("arithmetic", {"answer": "3", "completion": "3"}, "no <answer>"),
        ("arithmetic", {"answer": "3", "completion": "<answer>three</answer>"}, "not a number"),
        ("sudoku", {"puzzle": "0" * 16, "completion": "<answer>123</answer>"}, "not a 16-digit grid"),
    ],
)
def test_unusable_items_raise_one_line_errors(task: str, item: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        wrong_completion(task, item, random.Random(0))
    assert "\n" not in str(err.value)
