"""The d1 grading protocol against a plain reading of d1's parser (tests/d1_oracle.py), on generated and
malformed completions, and the decisions in which it differs from our own graders."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from common.errors import UserError
from rewards import d1_protocol
from rewards.grading import TimedGrader, grade_function
from rewards.tasks import load_task
from tests import d1_oracle

SAMPLES = 3000
SUDOKU = ("3102200002100320", "3142243142131324")
COUNTDOWN = ([30, 100, 93], 23)

GSM8K_ANSWERS = [
    "18", "18.0", "-7", "1,234", "1234", "$18", "\\$18", "18 dollars", "1e3", "inf", "nan", "1_000", " 18 ", "...",
    "..", ".", "", "x", "\u0663", "18.5.2", "3/4", "\\frac{1}{2}", "0.5", "+5", "--3", "1.", ".5", "9" * 30,
]  # fmt: skip
MATH_ANSWERS = [
    "\\frac{1}{2}", "\\frac12", "\\dfrac{1}{2}", "\\tfrac{1}{2}", "0.5", ".5", " .5", "{.5}", "1/2", "x/2", "/5",
    "03/4", "+3/4", "\u0663/4", "\\sqrt3", "\\sqrt{3}", "\\sqrt", "\\sqrt\\sqrt{2}", "\\frac", "\\frac1", "\\frac1{2}",
    "10\\text{ cm}", "10\\text{ cm}\\text{ m}", "k = 5", "x=y=1", "abc=5", "90^\\circ", "90^{\\circ}", "50\\%", "\\$5",
    "\\left(1,2\\right)", "(1,2)", "\\!1", "\\\\frac{1}{2}", "a b", "16\\sqrt{3}", "16 \\sqrt{3}", "5", "", "\n5\n",
    "\\frac{\\sqrt{3}}{2}", "(3, \\frac{\\pi}{2})", "\\boxed{5}", "x^{2}", "\\infty",
]  # fmt: skip
MATH_GOLDS = ["\\frac{1}{2}", "16 \\sqrt{3}", "5", "(3, \\frac{\\pi}{2})", "90", "k=5", "1/2", "\\sqrt{3}"]
COUNTDOWN_EXTRA = [
    "93 - 100 + 30", "30 - (100 - 93)", "(93 - 100) + 30 = 23", "30 \\times 100 \\div 93", "30 \\cdot 100 - 93",
    "30 + 100 - 93 = 37", "100 - 93 + 30 = 23.0", "93 - 100 + 30 = 23", "030 + 100 - 93", "30 + 100 - 93 - 14",
    "30 / (100 - 100) + 93", "(30)(100)93", "30 + 100 + 93 + ...", "\u0663 + 100 - 93", "30 ** 0 + 100 - 93",
    "- - 30 + 100 - 93", "93 // 100 + 30", "30 + 100 - 93\n", "1e2", "",
]  # fmt: skip
SUDOKU_ANSWERS = [
    SUDOKU[1], "3142243142131321", "3142 2431 4213 1324", "3142\n2431\n4213\n1324", "[3,1,4,2,2,4,3,1]", "314224314213",
    "31422431421313241", "```\n3142\n2431\n4213\n1324\n```", "abc", "", "   ", "0000000000000000",
]  # fmt: skip
NOISE = [
    "<reasoning>", "</reasoning>", "\n", " ", "so 3 + 4 = 7. ", "{", "}", "$", "<|eot_id|>", "<|endoftext|>",
    "The answer is 12.", "```", "\\boxed{", "<answer>", "</answer>", "= 23", "1234123412341234",
]  # fmt: skip


def _wrapped(answer: str, rng: random.Random) -> str:
    return rng.choice(
        [
            "<answer>{}</answer>",
            "<answer>\n\\boxed{{{}}}\n</answer>",
            "\\boxed{{{}}}",
            "\\boxed{{{}",
            "\\boxed {} $",
            "\\fbox{{{}}}",
            "<answer>{}",
            "{}",
            "<answer>\n```\n{}\n```\n</answer>",
            "</answer> {}<|eot_id|>",
        ]
    ).format(answer)


def completions(answers: list[str], rng: random.Random, n: int = SAMPLES) -> list[str]:
    """Well-formed, truncated, multiply boxed, untagged and noisy completions around the given answers."""
    out = []
    for _ in range(n):
        parts = [_wrapped(rng.choice(answers), rng) if rng.random() < 0.6 else rng.choice(NOISE)]
        parts += [_wrapped(rng.choice(answers), rng) if rng.random() < 0.4 else rng.choice(NOISE) for _ in range(5)]
        text = "".join(parts[: rng.randint(1, 6)])
        if rng.random() < 0.25:
            text = text[: rng.randint(0, len(text))]
        out.append(text)
    return out


def _countdown_expressions(rng: random.Random) -> list[str]:
    """Expressions of the given numbers with random operators and brackets, at most one power (the oracle
    runs d1's own `eval`, which a power tower would keep busy for hours)."""
    numbers, _ = COUNTDOWN
    found = list(COUNTDOWN_EXTRA)
    for _ in range(300):
        a, b, c = rng.sample(numbers, 3)
        ops = [rng.choice(["+", "-", "*", "/", "//", "**"]) for _ in range(2)]
        if ops.count("**") > 1:
            ops[1] = "+"
        shape = rng.choice(["{a} {o} {b} {p} {c}", "({a} {o} {b}) {p} {c}", "{a} {o} ({b} {p} {c})"])
        found.append(shape.format(a=a, b=b, c=c, o=ops[0], p=ops[1]))
    return found


Grader = Callable[[str], tuple[float, float]]


def _differential_cases() -> dict[str, tuple[Grader, Grader, list[str]]]:
    """Per task (MATH: per gold answer), our d1 grader, the oracle, and the completions to compare them on."""
    rng = random.Random(13)
    numbers, target = COUNTDOWN
    puzzle, solution = SUDOKU
    cases: dict[str, tuple[Grader, Grader, list[str]]] = {
        "gsm8k": (
            lambda t: d1_protocol.grade_gsm8k(t, {"answer": "18"}),
            lambda t: d1_oracle.gsm8k(t, 18.0),
            completions(GSM8K_ANSWERS, rng),
        ),
        "countdown": (
            lambda t: d1_protocol.grade_countdown(t, {"numbers": numbers, "target": target}),
            lambda t: d1_oracle.countdown(t, numbers, target),
            completions(_countdown_expressions(rng), rng),
        ),
        "sudoku": (
            lambda t: d1_protocol.grade_sudoku(t, {"puzzle": puzzle, "solution": solution}),
            lambda t: d1_oracle.sudoku(t, puzzle, solution),
            completions(SUDOKU_ANSWERS, rng),
        ),
    }
    for gold in MATH_GOLDS:
        cases[f"math {gold}"] = (
            lambda t, g=gold: d1_protocol.grade_math(t, {"answer": g}),
            lambda t, g=gold: d1_oracle.math(t, g),
            completions(MATH_ANSWERS, rng, SAMPLES // 4),
        )
    return cases


CASES = _differential_cases()


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_d1_protocol_decides_as_d1s_parser(case: str) -> None:
    ours, oracle, texts = CASES[case]
    differ = [t for t in texts if ours(t) != oracle(t)]
    assert not differ, differ[:5]
    assert len({ours(t) for t in texts}) > 1, "the generated completions exercise more than one outcome"


LATEX_FRAGMENTS = [
    "\\frac", "\\dfrac", "\\sqrt", "{", "}", "1", "2", "12", "x", "/", "=", ".", " ", "\\text{ ", "\\left", "\\right",
    "\\!", "\\\\", "^\\circ", "^{\\circ}", "\\%", "\\$", "0.5", "\n", "(", ")", ",", "k", "-",
]  # fmt: skip


def _latex_strings(rng: random.Random, n: int) -> list[str]:
    return MATH_ANSWERS + ["".join(rng.choices(LATEX_FRAGMENTS, k=rng.randint(1, 8))) for _ in range(n)]


def _oracle_strip(text: str) -> str | None:
    try:
        return d1_oracle.strip_string(text)
    except Exception:
        return None


def _ours_strip(text: str) -> str | None:
    try:
        return d1_protocol.normalise(text)
    except d1_protocol._Unparsable:
        return None


def test_math_normaliser_is_d1s_strip_string() -> None:
    """Same normal form, and a failure exactly where d1's `strip_string` raises."""
    strings = _latex_strings(random.Random(5), SAMPLES)
    differ = [t for t in strings if _ours_strip(t) != _oracle_strip(t)]
    assert not differ, differ[:5]
    assert any(_oracle_strip(t) is None for t in strings) and any(_oracle_strip(t) for t in strings)


def test_math_equivalence_is_d1s_is_equiv() -> None:
    rng = random.Random(6)
    strings = _latex_strings(rng, SAMPLES)
    pairs = [(rng.choice(strings), rng.choice(strings)) for _ in range(SAMPLES)]
    pairs += [(a, a.replace(" ", "")) for a in strings] + [(a, " " + a) for a in strings]
    differ = [p for p in pairs if d1_protocol.equivalent(*p) != d1_oracle.is_equiv(*p)]
    assert not differ, differ[:5]
    assert len({d1_oracle.is_equiv(*p) for p in pairs}) == 2


def test_math_normaliser_fails_where_d1s_does_and_then_compares_raw_strings() -> None:
    for broken in ("\\sqrt", "\\frac", "x/2", "1\\text{ a}\\text{ b}"):
        with pytest.raises(Exception):  # noqa: B017  (d1 raises an IndexError, ValueError or AssertionError here)
            d1_oracle.strip_string(broken)
        assert d1_protocol.equivalent(broken, broken) and not d1_protocol.equivalent(broken, broken + " ")


@pytest.mark.parametrize(
    ("task", "completion", "reference", "d1", "ours"),
    [
        # GSM8K: d1 cuts a box at its first `}` and reads its first number; commas split numbers.
        ("gsm8k", "\\boxed{1,234}", {"answer": "1234"}, 0.0, 1.0),
        ("gsm8k", "\\boxed{\\frac{1}{2}}", {"answer": "0.5"}, 0.0, 0.0),
        ("gsm8k", "<answer>18 dollars</answer>", {"answer": "18"}, 1.0, 1.0),
        ("gsm8k", "<answer>1e3</answer>", {"answer": "1000"}, 1.0, 0.0),
        # MATH: without a box d1 compares the whole completion; ours reads the answer pair.
        ("math", "<answer>5</answer>", {"answer": "5"}, 0.0, 1.0),
        ("math", "\\boxed{} <answer>5</answer>", {"answer": "5"}, 1.0, 1.0),
        ("math", "The answer is 5", {"answer": "5"}, 0.0, 0.0),
        ("math", "\\fbox{5}", {"answer": "5"}, 0.0, 1.0),
        ("math", "\\boxed{x^{25}+1}", {"answer": "1+x^{25}"}, 0.0, 1.0),
        ("math", "\\boxed{\\frac{2}{4}}", {"answer": "\\frac{1}{2}"}, 0.0, 1.0),
        ("math", "\\boxed{10\\text{ cm}}", {"answer": "10"}, 1.0, 1.0),
        # Countdown: no box and no tags: d1 reads the first `expr = number` anywhere.
        ("countdown", "so 93 - 100 + 30 = 23 and done", {"numbers": [30, 100, 93], "target": 23}, 1.0, 0.0),
        ("countdown", "<answer>93 - 100 + 30 = 23</answer>", {"numbers": [30, 100, 93], "target": 23}, 1.0, 1.0),
        ("countdown", "<answer>93 - 100 + 30</answer>", {"numbers": [30, 100, 93], "target": 23}, 0.0, 1.0),
        ("countdown", "\\boxed{100 / 30 * 93 / 100 * 30 / 93 * 23}", {"numbers": [1], "target": 23}, 0.0, 0.0),
        # Sudoku: d1 compares characters as written; ours reads digits.
        (
            "sudoku",
            f"<answer>[{','.join(SUDOKU[1])}]</answer>",
            dict(zip(("puzzle", "solution"), SUDOKU, strict=True)),
            1.0,
            8.0,
        ),
    ],
)
def test_where_the_protocols_differ(task: str, completion: str, reference: dict, d1: float, ours: float) -> None:
    assert d1_protocol.GRADERS[task](completion, reference)[0] == d1
    assert load_task(task).grade(completion, reference)[0] == ours


def test_countdown_power_towers_are_invalid_instead_of_computed() -> None:
    assert d1_protocol.evaluate_equation("30 ** 100 ** 93") == math.inf
    assert d1_protocol.evaluate_equation("2 ** 10") == 1024
    assert d1_protocol.evaluate_equation("(100 - 93) ** 30 / 7 ** 29") == pytest.approx(7.0)
    assert d1_protocol.evaluate_equation("(-8) ** 0.5") == (-8) ** 0.5
    assert d1_protocol.evaluate_equation("-" * 500 + "1") == 1
    assert d1_protocol.evaluate_equation("-" * 5000 + "1") == math.inf  # d1's eval: RecursionError


def test_d1_protocol_through_the_time_limited_grader() -> None:
    numbers, target = COUNTDOWN
    texts = ["\\boxed{93 - 100 + 30}", "\\boxed{30 ** 100 ** 93}", "<answer>93 - 100 + 30 = 23</answer>"]
    with TimedGrader("countdown", "d1") as grader:
        grades = grader.grade(texts, [{"numbers": numbers, "target": target}] * 3)
    assert [(g.num, g.den, g.error) for g in grades] == [(1.0, 1.0, None), (0.0, 1.0, None), (1.0, 1.0, None)]


def test_d1_protocol_covers_d1s_four_tasks_only() -> None:
    assert grade_function("math", "d1") is d1_protocol.grade_math
    with pytest.raises(UserError, match=r"protocol 'd1' with task 'arithmetic': d1's evaluation parser grades only"):
        grade_function("arithmetic", "d1")
    with pytest.raises(UserError, match=r"protocol 'd2': unknown; choose agrpo or d1"):
        grade_function("math", "d2")
