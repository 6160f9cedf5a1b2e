"""Domain errors. The CLI turns each into one `Error: ...` line and the exit code below.

Messages say what to try next; they never contain secrets.
"""

import errno
import signal


class ReconcileError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 4


class ConfigError(ReconcileError):
    """The configuration, a flag or the environment is wrong."""


class SourceError(ReconcileError):
    """A store could not be read at all (missing bucket, access denied, bad URL)."""

    exit_code = 3


class AccessDenied(SourceError):
    """A store refused the credentials, or the IAM policy denies the read: a retry will not help, so it is a
    configuration error (exit 4) and the run stops, instead of judging without that store (exit 3, "retry")."""

    exit_code = 4


class ReadDeadline(SourceError):
    """The AWS reads did not end within [aws] read_deadline: they were stopped, and the run has no result (exit 3)."""


class QueryError(ReconcileError):
    """A query in queries/ failed or was called without a parameter it uses."""


class ReportError(ReconcileError):
    """The report or an export could not be written."""


class StateError(ReconcileError):
    """The run-state file is locked by another run or unreadable."""


class NoState(StateError):
    """No state at the location yet: a reader has nothing to read (a first run creates it)."""


class StateInUse(StateError):
    """Another run (or collector) holds the lock: waiting is the answer, unlike a store that refuses it."""


class NotARun(ReconcileError):
    """A path given as a run is not one: no manifest.json (the run did not finish), not a bundle, nothing published
    at the prefix. A usage mistake (exit 4), not a difference in evidence."""


class Unverifiable(ReconcileError):
    """`reconcile verify` cannot judge an intact run: its manifest is of a format this version does not read. Not
    a difference in the evidence (exit 4, not 5): verify it with the version that made it."""


class VerifyError(ReconcileError):
    """`reconcile verify`: a run does not match its evidence, or the inputs it read changed since (never: the path
    is not a run at all, which is NotARun)."""

    exit_code = 5


class Interrupted(BaseException):
    """SIGTERM or SIGINT asked the run to stop (reconcile/interrupt.py); the CLI exits 128 + the signal number.

    A BaseException, like KeyboardInterrupt: no `except Exception` that handles a bad record or object may swallow
    it, so it unwinds through every `finally` (DLQ messages released, state lock let go, partial outputs removed).
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


# A write the disk (or a quota, a file-size limit) had no room for: freeing space and running again answers it.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error(e: OSError) -> tuple[int, str]:
    """(exit code, message) for a file the run could not write or read: the path and what to do, not "unexpected"."""
    where = e.filename or "a file"
    if e.errno in NO_ROOM:
        return 3, (f"{where}: {e.strerror}: no room to write it (a full disk, a quota or a file-size limit). Free "
                   f"space where the run writes (--out, [engine] temp_directory, the state's folder), or raise the "
                   f"limit, and run again (runs are idempotent).")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 4, (f"{where}: {e.strerror}: the run may not write there. Check --out, [engine] temp_directory and the "
                   f"state's folder.")
    return 4, f"unexpected {type(e).__name__}: {e} (run with -v -v for the traceback)"
