"""Answer extraction and number parsing shared by the built-in tasks.

Every scan here is a linear `str.find` walk (braces are paired once, with a stack), never a
backtracking regex over the whole completion,
so a hostile completion (ten thousand unclosed tags, braces or digits) costs time proportional to
its length. Completions are also capped at `MAX_COMPLETION_CHARS` before any scan: real
completions are a few thousand characters, and the answer sits at the end of the kept part.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_COMPLETION_CHARS = 50_000
MAX_NUMBER_DIGITS = 100

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"

# A number as people write it: optional sign, digit groups with thousands commas, optional decimals.
NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")
_INTEGER_RE = re.compile(r"-?\d+")
# Trailing units ("dollars", "cm", "%") are stripped with `str.rstrip`, which cannot backtrack.
_UNIT_TAIL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.%\\ \t\n"
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def clip(text: str | None) -> str:
    """The completion as a string, cut to the length every scan is sized for."""
    if not isinstance(text, str):
        return ""
    return text[:MAX_COMPLETION_CHARS]


def tag_spans(text: str, open_tag: str, close_tag: str) -> list[str]:
    """Contents of every complete `open_tag ... close_tag` pair, left to right, non-overlapping."""
    spans: list[str] = []
    start = text.find(open_tag)
    while start != -1:
        body = start + len(open_tag)
        end = text.find(close_tag, body)
        if end == -1:
            break
        spans.append(text[body:end])
        start = text.find(open_tag, end + len(close_tag))
    return spans


def first_answer(text: str) -> str | None:
    """The first complete answer span, stripped (the d1 evaluation scripts' `re.search`)."""
    spans = tag_spans(text, ANSWER_OPEN, ANSWER_CLOSE)
    return spans[0].strip() if spans else None


def last_answer(text: str) -> str | None:
    """The last complete answer span, stripped (d1's Countdown and Sudoku training rewards)."""
    spans = tag_spans(text, ANSWER_OPEN, ANSWER_CLOSE)
    return spans[-1].strip() if spans else None


def d1_xml_answer(text: str) -> str:
    """d1's GSM8K training extraction: after the last `<answer>`, up to the next `</answer>`.

    Deliberately lenient like the original: a truncated answer (no closing tag) still counts, and
    a completion without any tag is taken whole.
    """
    tail = text.rsplit(ANSWER_OPEN, 1)[-1]
    return tail.split(ANSWER_CLOSE, 1)[0].strip()


BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_RE = re.compile(r"[{}]")


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each `{` that closes -> index of its `}`, from one left-to-right pass with a stack."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE_RE.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            pairs[stack.pop()] = match.start()
    return pairs


def _box_at(text: str, start: int, command: str, pairs: dict[int, int]) -> tuple[str | None, int]:
    """Content of the box whose command starts at `start` and the index of its `}`; None if it never closes."""
    i = start + len(command)
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{" and i in pairs:
        return text[i + 1 : pairs[i]], pairs[i]
    return None, start


def boxed_contents(text: str) -> list[str]:
    r"""Contents of every closed `\boxed{...}` / `\fbox{...}` left to right, braces matched (nested kept).

    An unclosed box is dropped, and so is a box nested in another one (its content is part of the outer
    box). Linear in the text: braces are paired in one pass, then each command is looked up.
    """
    starts = sorted((i, command) for command in BOX_COMMANDS for i in _find_all(text, command))
    if not starts:
        return []
    pairs = _brace_pairs(text)
    found: list[str] = []
    covered = -1
    for start, command in starts:
        if start < covered:
            continue  # inside the box found last
        content, covered = _box_at(text, start, command, pairs)
        if content is not None:
            found.append(content)
    return found


def _find_all(text: str, needle: str) -> list[int]:
    found = []
    start = text.find(needle)
    while start != -1:
        found.append(start)
        start = text.find(needle, start + len(needle))
    return found


def last_boxed(text: str) -> str | None:
    r"""d1's `last_boxed_only_string`: the last `\boxed` (else the last `\fbox`), or None if it is unclosed.

    A truncated final box is not replaced by an earlier, closed one: the model's final answer was cut off.
    """
    for command in BOX_COMMANDS:
        start = text.rfind(command)
        if start != -1:
            return _box_at(text, start, command, _brace_pairs(text))[0]
    return None


def strip_number_decorations(text: str) -> str:
    r"""Drop what surrounds a number in prose: `$`, `\$`, `\text{..}` units, trailing words and `%`."""
    s = text.strip()
    s = _TEXT_WRAP_RE.sub(lambda m: m.group(1), s)
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "")
    s = s.strip().rstrip(".").strip()
    return s.rstrip(_UNIT_TAIL_CHARS).strip()


def parse_number(text: str | None) -> Fraction | None:
    """The exact value of a lone number (`1,234`, `-7`, `18.0`, `$18`, `18 dollars`), else None."""
    if text is None or len(text) > 4 * MAX_NUMBER_DIGITS:
        return None
    s = strip_number_decorations(text)
    if not _PLAIN_NUMBER_RE.fullmatch(s):
        return None
    return _to_fraction(s)


def _to_fraction(s: str) -> Fraction | None:
    digits = s.replace(",", "").lstrip("+")
    if sum(c.isdigit() for c in digits) > MAX_NUMBER_DIGITS:
        return None
    if digits.endswith("."):
        digits = digits[:-1]
    return Fraction(digits)


def numbers_in(text: str) -> list[Fraction]:
    """Every number written in `text`, in order, with thousands commas understood."""
    values = []
    for match in NUMBER_RE.finditer(text):
        value = _to_fraction(match.group(0))
        if value is not None:
            values.append(value)
    return values


def is_integer_literal(text: str) -> bool:
    """Whether the answer is written as a whole number (commas and `$` allowed, no decimals)."""
    if len(text) > 4 * MAX_NUMBER_DIGITS:
        return False
    s = strip_number_decorations(text).replace(",", "")
    return bool(_INTEGER_RE.fullmatch(s))


def first_boxed_number(text: str) -> Fraction | None:
    r"""d1's GSM8K rule: the first `\boxed{}` that is a number, or else holds one (its first)."""
    for content in boxed_contents(text):
        body = content.strip()
        if not body or set(body) == {"."}:
            continue
        value = parse_number(body)
        if value is not None:
            return value
        found = numbers_in(body)
        if found:
            return found[0]
    return None


def answer_number(text: str) -> Fraction | None:
    """d1's GSM8K evaluation rule: first numeric box, else the (last) number in the answer tags."""
    value = first_boxed_number(text)
    if value is not None:
        return value
    answer = first_answer(text)
    if not answer:
        return None
    value = parse_number(answer)
    if value is not None:
        return value
    found = numbers_in(answer)
    return found[-1] if found else None
