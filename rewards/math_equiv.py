r"""Equivalence of two LaTeX answers: string normalisation, exact rationals, then math-verify.

math-verify parses with SymPy, and SymPy evaluates integer powers, factorials and expansions eagerly:
`9^{9^{9^9}}`, `99999999!` or `(a+b+c+d+e+f+g+h)^{20}` run for minutes inside C calls that no
signal can interrupt, and math-verify's own signal-based timeout works only in a main thread. So
`equivalent` has no time bound of its own, and no list of patterns that refuses answers (such a list
also refused true answers like `(x+1)^{21}`). Every caller that grades untrusted text runs it in a
child process that is killed when an item exceeds its time limit: `rewards.grading` for accuracy, the
reward sandbox (`rewards.sandbox`) for training rewards. Only the length cap below is kept: no real
answer is that long (MATH-500's longest is 53 characters), and it keeps parsing cheap.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction

MAX_ANSWER_CHARS = 300
MAX_DIGIT_RUN = 50
"""Longest digit run read as an exact rational (Python refuses to parse ints past 4300 digits)."""

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

# math-verify warns, once per process, that its own timeouts are off; they are off on purpose (above),
# and every replaced grading child would print the warning again.
logging.getLogger("math_verify").setLevel(logging.ERROR)


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


def _math_verify_equal(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=None)
        pred_parsed = parse(f"${pred}$", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:
        return False


def equivalent(pred: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold answer; unbounded in time (see the module docstring)."""
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
    return _math_verify_equal(pred, gold)
