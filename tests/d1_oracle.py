r"""A plain reading of d1's evaluation parser (github.com/dllm-reasoning/d1, `eval/parse_and_get_acc.py`
and the helpers of `eval/parser_helper.py` it imports), the test oracle for `rewards.d1_protocol`.

Written as literally as the script reads, one function per decision, with no care for speed or
safety: it calls `eval` on Countdown expressions as d1 does (after d1's character check, which leaves
no names to call), so feed it only test-generated text with no huge powers. Each function takes one
completion and the reference fields, and returns what the script adds to its (correct, processed)
totals for that completion.
"""

from __future__ import annotations

import re
from typing import Any


def gsm8k(generation: str, ground_truth: float) -> tuple[float, float]:
    parsed = None
    for content in re.findall(r"\\boxed{(.*?)}", generation):
        content = content.strip()
        if content and content != "..." and not re.match(r"^\.+$", content):
            try:
                parsed = float(content)
                break
            except ValueError:
                numbers = re.findall(r"-?\d+\.?\d*", content)
                if numbers:
                    try:
                        parsed = float(numbers[0])
                        break
                    except ValueError:
                        pass
    if parsed is None:
        match = re.search(r"<answer>(.*?)</answer>", generation, re.DOTALL)
        if match:
            text = match.group(1).strip()
            if text:
                try:
                    parsed = float(text)
                except ValueError:
                    numbers = re.findall(r"-?\d+\.?\d*", text)
                    if numbers:
                        parsed = float(numbers[-1])
    return (1.0 if parsed is not None and parsed == ground_truth else 0.0), 1.0


def last_boxed_only_string(string: str) -> str | None:
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    idx = string.rfind("\\boxed")
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return string
    open_braces = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            open_braces += 1
        if string[i] == "}":
            open_braces -= 1
            if open_braces == 0:
                return string[idx : i + 1]
    return None


def remove_boxed(s: str) -> str:
    if "\\boxed " in s:
        assert s.startswith("\\boxed ")
        return s[len("\\boxed ") :]
    try:
        assert s[: len("\\boxed{")] == "\\boxed{"
        assert s[-1] == "}"
        return s[len("\\boxed{") : -1]
    except (AssertionError, IndexError):
        return s


def fix_fracs(string: str) -> str:
    pieces = string.split("\\frac")
    result = pieces[0]
    for piece in pieces[1:]:
        result += "\\frac"
        if piece[0] == "{":
            result += piece
        else:
            if len(piece) < 2:
                return string
            a, b = piece[0], piece[1]
            if b != "{":
                result += "{" + a + "}{" + b + "}" + piece[2:]
            else:
                result += "{" + a + "}" + b + piece[2:]
    return result


def remove_right_units(string: str) -> str:
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        assert len(splits) == 2
        return splits[0]
    return string


def fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    result = splits[0]
    for split in splits[1:]:
        if split[0] != "{":
            result += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            result += "\\sqrt" + split
    return result


def fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a, b = string.split("/")
    a, b = int(a), int(b)
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def strip_string(string: str) -> str:
    string = string.replace("\n", "")
    string = string.replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac")
    string = string.replace("dfrac", "frac")
    string = string.replace("\\left", "")
    string = string.replace("\\right", "")
    string = string.replace("^{\\circ}", "")
    string = string.replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = remove_right_units(string)
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.")
    string = string.replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = fix_sqrt(string)
    string = string.replace(" ", "")
    string = fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return fix_a_slash_b(string)


def is_equiv(str1: str, str2: str) -> bool:
    try:
        return strip_string(str1) == strip_string(str2)
    except Exception:
        return str1 == str2


def math(generation: str, ground_truth: str) -> tuple[float, float]:
    try:
        parsed = remove_boxed(last_boxed_only_string(generation))  # type: ignore[arg-type]
    except Exception:
        parsed = None
    if not parsed:
        match = re.search(r"<answer>(.*?)</answer>", generation, re.DOTALL)
        if match:
            parsed = match.group(1).strip()
    return (1.0 if parsed is not None and is_equiv(parsed, ground_truth) else 0.0), 1.0


def countdown(generation: str, numbers: list[int], target: int) -> tuple[float, float]:
    try:
        equation = remove_boxed(last_boxed_only_string(generation))  # type: ignore[arg-type]
    except Exception:
        match = re.search(r"<answer>(.*?)</answer>", generation, re.DOTALL)
        equation = match.group(1).strip() if match else generation
    equation = equation.replace(r"\div", "/").replace(r"\times", "*").replace(r"\cdot", "*")
    match = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", equation)
    if match:
        equation = match.group(1).strip()
    try:
        valid = sorted(int(n) for n in re.findall(r"\d+", equation)) == sorted(numbers)
    except Exception:
        valid = False
    if not valid:
        return 0.0, 1.0
    try:
        if not re.match(r"^[\d+\-*/().\s]+$", equation):
            raise ValueError("Invalid characters in equation.")
        result: Any = eval(equation.strip(), {"__builtins__": None}, {})
    except Exception:
        result = float("inf")
    return (1.0 if abs(result - target) < 1e-5 else 0.0), 1.0


SUDOKU_PATTERNS = [
    r"<answer>.*?```\s*([\d\s]+)```",
    r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
    r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
    r".*?(\d{16})\s*</answer>",
    r"\b(\d{16})\b",
]


def sudoku(generation: str, puzzle: str, solution: str) -> tuple[float, float]:
    empty = [i for i in range(16) if puzzle[i] == "0"]
    found = ""
    for pattern in SUDOKU_PATTERNS:
        if found:
            break
        match = re.search(pattern, generation, re.DOTALL)
        if match and match.group(1).strip():
            found = match.group(1).strip()
    found = re.sub(r"\s", "", found)
    if not found:
        return 0.0, float(len(empty))
    if len(found) < 16:
        found = found + "0" * (16 - len(found))
    elif len(found) > 16:
        found = found[:16]
    return float(sum(1 for i in empty if found[i] == solution[i])), float(len(empty))
