r"""Equivalence of two LaTeX answers: string normalisation, exact rationals, then math-verify.

math-verify parses with SymPy, and SymPy evaluates integer powers and factorials eagerly, so an
answer such as `9^{9^{9^9}}` or `10**10**10` would compute a number with billions of digits inside
one C call that no signal can interrupt. Answers are therefore cut at `MAX_ANSWER_CHARS`, and any
answer with one of these is compared by normalised string and exact rational value only: a power
tower; an effective exponent over `MAX_POWER` (nested bases multiply), or over `MAX_SYMBOLIC_POWER`
once the answer has a letter or a command; a large factorial or binomial; a long digit run; a sum or
product; a Gamma or hyperbolic function; more than two elementary functions. math-verify's own
signal-based timeout only works in the main thread; elsewhere it is disabled and the RewardService's
per-call process timeout is the backstop.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

MAX_ANSWER_CHARS = 300
MAX_POWER = 1000
MAX_SYMBOLIC_POWER = 20
"""Exponent cap once an answer has a symbol or command: SymPy expands or evaluates `(x+1)^{999}` and
`\\sin(1)^{60}` to high precision for seconds (the latter never returned in a thread)."""
MAX_FACTORIAL = 100
MAX_DIGIT_RUN = 50
MATH_VERIFY_TIMEOUT_S = 1

_REMOVE = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\$", "$")
_DEGREES = ("^{\\circ}", "^\\circ", "°", "\\%", "%")
_TRAILING_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z ]*\}$")
_TEXT_WRAP = re.compile(r"\\(?:text|mbox|mathrm|textbf)\{([^{}]*)\}")
_SHORT_FRAC = re.compile(r"\\frac(\d)(\d)")
_SHORT_FRAC_ARG = re.compile(r"\\frac\{([^{}]*)\}(\d)")
_SHORT_SQRT = re.compile(r"\\sqrt(\d+)")
_ASSIGNMENT = re.compile(r"^[A-Za-z]=")
_RATIONAL = re.compile(r"(-?)(\d+(?:\.\d*)?|\.\d+)(?:/(\d+))?")
_LATEX_FRAC = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DIGIT_RUN = re.compile(rf"\d{{{MAX_DIGIT_RUN + 1},}}")
# SymPy evaluates Gamma of an integer exactly (Gamma(Gamma(20)) never ends) and chains of elementary
# functions or hyperbolics of huge arguments numerically to high precision (about 1 s for four nested tans).
_UNBOUNDED_FUNCTIONS = ("\\Gamma", "\\operatorname", "\\cosh", "\\sinh", "\\tanh", "\\coth")
_ELEMENTARY_FUNCTION = re.compile(r"\\(?:a?r?c?(?:sin|cos|tan|sec|csc|cot)|exp|ln|log)(?![a-z])")
MAX_FUNCTIONS = 2


def normalise(answer: str) -> str:
    r"""A canonical spelling: no spaces, `\left`/`\right`, degrees, dollars, text units or `x=`."""
    s = answer.strip()
    for token in _REMOVE + _DEGREES:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.strip().rstrip(".").strip()
    unit = _TRAILING_UNIT.search(s)
    if unit and unit.start() > 0:
        s = s[: unit.start()]
    s = _TEXT_WRAP.sub(lambda m: m.group(1), s)
    s = "".join(s.split())
    s = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", s)
    s = _SHORT_FRAC_ARG.sub(r"\\frac{\1}{\2}", s)
    s = _SHORT_SQRT.sub(r"\\sqrt{\1}", s)
    s = _ASSIGNMENT.sub("", s)
    if s.startswith("."):
        s = "0" + s
    return s.rstrip(".")


def as_rational(normalised: str) -> Fraction | None:
    r"""The exact value of a plain number, `a/b` or `\frac{a}{b}` (signed), else None."""
    text = normalised.replace(",", "") if _GROUPED.fullmatch(normalised) else normalised
    if _DIGIT_RUN.search(text):
        return None
    match = _RATIONAL.fullmatch(text) or _LATEX_FRAC.fullmatch(text)
    if match is None:
        return None
    sign, num, den = match.groups()
    value = Fraction(num)
    if den is not None:
        if Fraction(den) == 0:
            return None
        value /= Fraction(den)
    return -value if sign else value


def _group_end(text: str, start: int) -> int:
    """Index after the exponent token starting at `start`: a brace/paren group, digits, a command or a char."""
    if start >= len(text):
        return start
    opener = text[start]
    if opener in "{(":
        closer = "}" if opener == "{" else ")"
        depth = 0
        for i in range(start, len(text)):
            depth += (text[i] == opener) - (text[i] == closer)
            if depth == 0:
                return i + 1
        return len(text)
    end = start + 1
    if opener.isdigit():
        while end < len(text) and text[end].isdigit():
            end += 1
    elif opener == "\\":
        while end < len(text) and text[end].isalpha():
            end += 1
    return end


def _power_positions(text: str) -> list[tuple[int, int]]:
    """(operator start, exponent start) of every `^` and `**`."""
    found, i = [], 0
    while i < len(text):
        if text.startswith("**", i):
            found.append((i, i + 2))
            i += 2
        elif text[i] == "^":
            found.append((i, i + 1))
            i += 1
        else:
            i += 1
    return found


def _exponent_weight(exponent: str) -> int:
    """Product of the numbers written in an exponent: a bound on how much it multiplies digits."""
    weight = 1
    for run in re.findall(r"\d+", exponent):
        weight *= max(1, int(run))
    return weight


def _base_group(text: str, op_start: int) -> str:
    """The bracketed base just before a power operator (`(a^b)` in `(a^b)^c`), or ""."""
    if op_start == 0 or text[op_start - 1] not in ")}":
        return ""
    closer = text[op_start - 1]
    opener = "(" if closer == ")" else "{"
    depth = 0
    for i in range(op_start - 1, -1, -1):
        depth += (text[i] == closer) - (text[i] == opener)
        if depth == 0:
            return text[i + 1 : op_start - 1]
    return ""


def _largest_power(text: str) -> int | None:
    """The largest effective exponent (nested bases multiply: `(a^b)^c = a^(bc)`); None for a tower."""
    largest = 1
    for op_start, exp_start in _power_positions(text):
        end = _group_end(text, exp_start)
        exponent = text[exp_start:end]
        if "^" in exponent or "**" in exponent or text.startswith(("^", "**"), end):
            return None
        base = _base_group(text, op_start)
        inner = _largest_power(base) if base else 1
        if inner is None:
            return None
        largest = max(largest, inner * _exponent_weight(exponent))
    return largest


def safe_for_sympy(answer: str) -> bool:
    """Whether SymPy can parse and evaluate the answer without computing a gigantic number."""
    s = answer.replace(" ", "")
    if len(s) > MAX_ANSWER_CHARS or _DIGIT_RUN.search(s):
        return False
    if "\\sum" in s or "\\prod" in s or "__" in s:
        return False
    if any(name in s for name in _UNBOUNDED_FUNCTIONS) or len(_ELEMENTARY_FUNCTION.findall(s)) > MAX_FUNCTIONS:
        return False
    if ("binom" in s or "choose" in s) and re.search(r"\d{4,}", s):
        return False
    largest = _largest_power(s)
    symbolic = any(c.isalpha() or c == "\\" for c in s)
    if largest is None or largest > (MAX_SYMBOLIC_POWER if symbolic else MAX_POWER):
        return False
    for match in re.finditer(r"(\d+|[)}])!", s):
        operand = match.group(1)
        if not operand.isdigit() or int(operand) > MAX_FACTORIAL:
            return False
    return True


def _math_verify_equal(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${pred}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:
        return False


def equivalent(pred: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold answer; bounded in time for any input."""
    if pred is None or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    a, b = normalise(pred), normalise(gold)
    if not a:
        return False
    if a == b:
        return True
    ra, rb = as_rational(a), as_rational(b)
    if ra is not None and rb is not None:
        return ra == rb
    if not (safe_for_sympy(pred) and safe_for_sympy(gold)):
        return False
    return _math_verify_equal(pred, gold)
