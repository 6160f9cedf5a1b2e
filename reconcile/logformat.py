"""How log records look on stderr: text for people, or one JSON object per line (`--log-format json`) for a log
shipper (CloudWatch Logs, Datadog, Loki).

A JSON line holds time (ISO-8601 UTC), level, logger and message, then every `extra=` field the call passed
(e.g. a source's records, rejected, complete, seconds), and the traceback as `exc_info` when there is one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson

from .console import inert

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# What every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line |= {k: v for k, v in vars(record).items() if k not in _STANDARD and k not in line}
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """TEXT, with what a record quotes from the stores (a reject reason, an error code) made inert for a terminal:
    an escape sequence or a carriage return in it cannot rewrite the lines around it (JSON escapes them itself)."""

    def __init__(self):
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record), keep_newlines=True)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()
