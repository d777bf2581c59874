"""The tiny character-level tokenizer: fixed ids, whole-token tags, exact round trips, save and reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from common.model.tokenizer import CHARACTERS, TAG_TOKENS, build_tiny_tokenizer


def test_ids_are_fixed_by_construction_order() -> None:
    tok = build_tiny_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(list(TAG_TOKENS)) == list(range(3, 9))
    assert tok.convert_tokens_to_ids([" ", "0", "A", "~", "\n"]) == [9, 25, 42, 103, 104]
    assert len(tok) == 105 == 9 + len(CHARACTERS)
    assert build_tiny_tokenizer().get_vocab() == tok.get_vocab()


def test_tags_are_single_tokens() -> None:
    tok = build_tiny_tokenizer()
    ids = tok("<answer>3*5</answer>")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<answer>", "3", "*", "5", "</answer>"]
    assert len(tok("<think>a</think><reasoning>b</reasoning>")["input_ids"]) == 6


def test_decode_round_trips_text_exactly() -> None:
    tok = build_tiny_tokenizer()
    text = "Q: 12 + 30 = ?\n <think> add  them </think><answer>42</answer>"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text) - sum(len(t) - 1 for t in ("<think>", "</think>", "<answer>", "</answer>"))
    assert tok.decode(ids) == text


def test_skipping_special_tokens_keeps_tags() -> None:
    tok = build_tiny_tokenizer()
    ids = tok("<answer>7</answer>")["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "<answer>7</answer>"
    assert tok.decode(ids) == "<answer>7</answer><|eos|><|pad|>"


def test_unknown_character_raises_instead_of_dropping() -> None:
    with pytest.raises(Exception, match="UNK"):
        build_tiny_tokenizer()("café")


def test_prompts_pad_on_the_left() -> None:
    batch = build_tiny_tokenizer()(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0]
    assert batch["attention_mask"][0] == [0, 0, 1, 1]


def test_saved_tokenizer_reloads_with_auto_tokenizer(tmp_path: Path) -> None:
    tok = build_tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "<answer>3*5</answer>\n(1 + 2) / 4"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.mask_token_id) == (0, 1, 2)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.padding_side == "left"
