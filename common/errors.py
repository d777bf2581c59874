"""User-facing errors.

Anything a user can cause (a bad config value, a missing checkpoint, a malformed data row) raises a
`UserError`. The CLI prints its message as one line and exits non-zero, without a traceback, so the
user sees what to fix instead of where in our code the problem surfaced.
"""


class UserError(Exception):
    """A problem with the user's input, reported as a single line."""


class ConfigError(UserError):
    """A config value that breaks a rule; the message names the field path, the value and the rule."""


class CheckpointError(UserError):
    """A checkpoint directory that is missing, incomplete, corrupt or incompatible."""


class DataError(UserError):
    """A data file or row that cannot be read; the message names the file and line."""
