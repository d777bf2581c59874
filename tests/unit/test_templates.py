"""Prompt templates: published wording, compact form, chat-template application, missing fields."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import DataError
from rewards.templates import render_prompt

COUNTDOWN = {"numbers": [3, 5, 7], "target": 22}


class ChatTokenizer:
    chat_template = "{{ messages }}"

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, str]], dict[str, Any]]] = []

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        self.calls.append((messages, kwargs))
        return "|".join(f"{m['role']}:{m['content']}" for m in messages)


def test_plain_prompts_are_compact() -> None:
    assert render_prompt("countdown", COUNTDOWN, "plain") == "3 5 7 = 22"
    assert render_prompt("sudoku", {"puzzle": "3102200002100320"}, "plain") == "3102200002100320"
    assert render_prompt("arithmetic", {"question": "3*4-5"}, "plain") == "3*4-5="


def test_d1_wording() -> None:
    math = render_prompt("math", {"question": "What is 1+1?"}, "d1")
    assert math.startswith("You are a math expert.")
    assert "<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>" in math
    assert math.endswith("What is 1+1?")
    countdown = render_prompt("countdown", COUNTDOWN, "d1")
    assert (
        "Using only the numbers [3, 5, 7], create an arithmetic expression that evaluates to exactly 22." in countdown
    )
    sudoku = render_prompt("sudoku", {"puzzle": "3102200002100320"}, "d1")
    assert sudoku.endswith("Solve the following Sudoku puzzle: 3102200002100320\n")


def test_agrpo_uses_system_and_user_turns_through_the_chat_template() -> None:
    tokenizer = ChatTokenizer()
    text = render_prompt("countdown", COUNTDOWN, "agrpo", tokenizer)
    messages, kwargs = tokenizer.calls[0]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "final expression = target" in messages[0]["content"]
    assert messages[1]["content"] == "Target: 22\nNumbers: [3, 5, 7]"
    assert kwargs == {"tokenize": False, "add_generation_prompt": True}
    assert text.startswith("system:")
    gsm = render_prompt("gsm8k", {"question": "q"}, "agrpo")
    assert "enclosing your reasoning process in <think> tags" in gsm and gsm.endswith("\n\nq")


def test_tokenizer_without_chat_template_gets_plain_text() -> None:
    class Bare:
        chat_template = None

    assert render_prompt("countdown", COUNTDOWN, "plain", Bare()) == "3 5 7 = 22"


def test_missing_field_and_unknown_template() -> None:
    with pytest.raises(DataError, match="'question'"):
        render_prompt("gsm8k", {"answer": "1"}, "d1")
    with pytest.raises(DataError, match="template 'fancy'"):
        render_prompt("gsm8k", {"question": "q"}, "fancy")
