"""The terminal: text from the stores made inert before it reaches one, and the CLI's stdout when its reader goes
away (`reconcile trace ID | head -1`).

Results nobody reads any more are dropped quietly and the command ends with its own exit code, so a closed pipe
never turns into a BrokenPipeError traceback, nor changes what a run's exit code says about the events.
"""

from __future__ import annotations

import io
import os
import sys
import unicodedata
from contextlib import contextmanager
from typing import Any, Iterator

# Control and format characters: an escape sequence, a carriage return or a bidi override in a DLQ error code or an
# event type would rewrite what a terminal (or the report) shows around it.
_ACTING = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def inert(value: Any, keep_newlines: bool = False) -> str:
    """Text from the outside world as inert, visible text: control and format characters shown as <U+XXXX> instead
    of acting; a newline or tab as a space (kept, with `keep_newlines`, where our own text spans lines: logs)."""
    text = "" if value is None else str(value)
    if text.isascii() and text.isprintable():  # the usual case, at once
        return text
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(ch if keep_newlines else " ")
        elif unicodedata.category(ch) in _ACTING:
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    return "".join(out)


class _ReaderGone(io.RawIOBase):
    """fd 1, written until a write fails with EPIPE; after that every write is dropped."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd
        self.gone = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, b) -> int:
        if self.gone:
            return len(b)
        try:
            return os.write(self._fd, b)
        except BrokenPipeError:
            self.gone = True
            return len(b)


@contextmanager
def tolerate_closed_stdout() -> Iterator[None]:
    """Inside the block, sys.stdout drops what it cannot write because the reading end of its pipe was closed."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (click's CliRunner, pytest's capture)
        yield
        return
    original = sys.stdout
    try:
        original.flush()
    except BrokenPipeError:
        pass
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ReaderGone(fd)), encoding=original.encoding,
                                  errors=original.errors, line_buffering=original.line_buffering)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = original
