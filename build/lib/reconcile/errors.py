"""Domain errors. The CLI turns each into one `Error: ...` line and the exit code below.

Messages say what to try next; they never contain secrets.
"""


class ReconcileError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 4


class ConfigError(ReconcileError):
    """The configuration, a flag or the environment is wrong."""


class SourceError(ReconcileError):
    """A store could not be read at all (missing bucket, access denied, bad URL)."""

    exit_code = 3


class QueryError(ReconcileError):
    """A query in queries/ failed or was called without a parameter it uses."""


class ReportError(ReconcileError):
    """The report or an export could not be written."""


class StateError(ReconcileError):
    """The run-state file is locked by another run or unreadable."""


class VerifyError(ReconcileError):
    """`reconcile verify`: a run does not match its evidence, or the inputs it read changed since."""

    exit_code = 5
