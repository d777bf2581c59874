"""User-facing errors.

Anything a user can cause (a bad config value, a missing checkpoint, a malformed data row) raises a
`UserError`. The CLI prints its message as one line and exits non-zero, without a traceback, so the
user sees what to fix instead of where in our code the problem surfaced.
"""

from __future__ import annotations

import reprlib
import sys


class UserError(Exception):
    """A problem with the user's input, reported as a single line."""


class ConfigError(UserError):
    """A config value that breaks a rule; the message names the field path, the value and the rule."""


class CheckpointError(UserError):
    """A checkpoint directory that is missing, incomplete, corrupt or incompatible."""


class DataError(UserError):
    """A data file or row that cannot be read; the message names the file and line."""


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict = 2, 4, 4, 4
_BRIEF.maxset, _BRIEF.maxfrozenset, _BRIEF.maxdeque = 4, 4, 4
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 80, 80, 40
BRIEF_MAX_CHARS = 160


def value_problem(exc: BaseException) -> str:
    """Why a parser (YAML, JSON) could not build a value, on one line and bounded; Python's refusal of an
    integer past its digit limit is said as such, without its advice to raise the limit."""
    text = " ".join(str(exc).split())
    if "integer string conversion" in text:
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return text[:200]


def brief(value: object) -> str:
    """`repr(value)` cut to a line, in time bounded whatever the value holds.

    An error message quotes what the user gave; a YAML alias bomb or a deeply nested value would make
    a plain `repr` run for minutes (or overflow the stack) while the message is being formatted.
    """
    text = _BRIEF.repr(value)
    return text if len(text) <= BRIEF_MAX_CHARS else text[: BRIEF_MAX_CHARS - 3] + "..."
