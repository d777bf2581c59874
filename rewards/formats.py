"""Format terms of the d1 and AGRPO reward schemes.

The d1 terms restate the regexes of d1's GSM8K reward (soft format, strict format, XML count) as
linear scans with the same accept/reject decisions, so a hostile completion cannot make them
backtrack. The AGRPO terms reward a complete think pair and a complete answer pair.
"""

from __future__ import annotations

from rewards.answers import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    REASONING_CLOSE,
    REASONING_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    tag_spans,
)

D1_FORMAT_WEIGHT = 0.5
AGRPO_TAG_WEIGHT = 0.5


def strict_format(text: str) -> float:
    """0.5 when the whole completion is `<reasoning>\\n..\\n</reasoning>\\n<answer>\\n..\\n</answer>\\n`.

    As d1's regex ends in `\\n$`, and `$` also matches before a final newline, one extra `\\n` is allowed.
    """
    head, middle, tail = "<reasoning>\n", "\n</reasoning>\n<answer>\n", "\n</answer>\n"
    if text.endswith(tail + "\n"):
        text = text[:-1]
    if not (text.startswith(head) and text.endswith(tail)):
        return 0.0
    split = text.find(middle, len(head))
    ok = split != -1 and split + len(middle) <= len(text) - len(tail)
    return D1_FORMAT_WEIGHT if ok else 0.0


def soft_format(text: str) -> float:
    """0.5 when the completion starts with a reasoning pair followed (after spaces) by an answer pair."""
    if not text.startswith(REASONING_OPEN):
        return 0.0
    last_close = text.rfind(ANSWER_CLOSE)
    pos = text.find(REASONING_CLOSE, len(REASONING_OPEN))
    while pos != -1:
        after = pos + len(REASONING_CLOSE)
        while after < len(text) and text[after].isspace():
            after += 1
        if text.startswith(ANSWER_OPEN, after) and last_close >= after + len(ANSWER_OPEN):
            return D1_FORMAT_WEIGHT
        pos = text.find(REASONING_CLOSE, pos + 1)
    return 0.0


def xml_count(text: str) -> float:
    """d1's XML count: 0.125 per tag written once on its own line, minus 0.001 per character after the
    closing answer tag (so trailing text is discouraged); at most 0.5."""
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += 0.125
    if text.count("\n</reasoning>\n") == 1:
        score += 0.125
    if text.count("\n<answer>\n") == 1:
        score += 0.125
        score -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        score += 0.125
        score -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return score


def d1_format_terms(text: str) -> dict[str, float]:
    return {"soft_format": soft_format(text), "strict_format": strict_format(text), "xml_count": xml_count(text)}


def has_pair(text: str, open_tag: str, close_tag: str) -> bool:
    """A complete pair, tags matched case-insensitively as AGRPO's regexes do."""
    return bool(tag_spans(text.lower(), open_tag, close_tag))


def agrpo_format_terms(text: str) -> dict[str, float]:
    """AGRPO's 0.5 for a complete think pair plus 0.5 for a complete answer pair."""
    return {
        "think_format": AGRPO_TAG_WEIGHT if has_pair(text, THINK_OPEN, THINK_CLOSE) else 0.0,
        "answer_format": AGRPO_TAG_WEIGHT if has_pair(text, ANSWER_OPEN, ANSWER_CLOSE) else 0.0,
    }
