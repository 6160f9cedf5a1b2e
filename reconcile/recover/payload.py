"""The original events, read again from where the run's evidence says they are: read-only, nothing consumed.

A bus log copy is re-read from its object and line (`cwl-export`: `<key>:<line>`, `firehose`: `<key>#<log event
id>`, `firehose-messages`: `<key>:<record>`), its object inflated and split as the bus log source does
(sources/buslog); a DLQ message from its archive line (`<object>:<line>`) or, for a live queue, by MessageId from a
read of the queue that releases every message and deletes none (sources/dlq.messages). Each payload is checked to
be the whole EventBridge event: a log target behind an input transformer receives something else, never re-sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from ..aws import filesystem
from ..config import Config
from ..errors import SourceError
from ..ledger import canonical_eb_id, time_ms
from ..sources import buslog as buslog_source
from ..sources import dlq as dlq_source
from ..sources import rawtext

logger = logging.getLogger(__name__)

# The fields every EventBridge event carries (https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html).
ENVELOPE = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")


@dataclass
class Payload:
    """What one place held for an event: the event's exact text, or why it cannot be re-sent from there."""

    data: str | None
    problem: str | None = None


def whole_event(text: str | None, eb_id: str, where: str) -> Payload:
    """`text` when it is the whole EventBridge event `eb_id`; otherwise why not (an input transformer's output)."""
    if text is None:
        return Payload(None, f"{where}: not found")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Payload(None, f"{where}: not JSON")
    if not isinstance(doc, dict):
        return Payload(None, f"{where}: not a JSON object")
    missing = [k for k in ENVELOPE if k not in doc]
    if missing:
        return Payload(None, f"{where}: not the whole EventBridge event (no {', '.join(missing)}): the target "
                             f"received an input transformer's output, which is not the event the rule sends "
                             f"to Kinesis")
    if not isinstance(doc.get("id"), str) or canonical_eb_id(doc["id"]) != canonical_eb_id(eb_id):
        return Payload(None, f"{where}: holds event {doc.get('id')!r}, not {eb_id}")
    return Payload(text)


def sent_time(text: str | None) -> datetime | None:
    """The event's own `time` (the envelope's, which StartReplay selects events by), from its exact text; None when
    there is no text or the time does not read as one (ledger.TIME_TEXT)."""
    if text is None:
        return None
    try:
        at = orjson.loads(text).get("time")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    ms = time_ms(at) if isinstance(at, str) else None
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)


def _object(cfg: Config, uri_root: str, ref_key: str, fmt: str | None = None) -> tuple[bytes, str]:
    """The (gunzipped) bytes of the object a ledger's source_ref names, and its full name; a bus log object (its
    [bus_log] format `fmt`) inflated as the bus log source inflates it."""
    fs, root = filesystem(uri_root, cfg.aws)
    if uri_root.startswith("s3://"):
        path = root.split("/", 1)[0] + "/" + ref_key  # S3 refs are keys inside the store's bucket
        where = "s3://" + path
    else:
        path = where = ref_key
    try:
        with fs.open_input_stream(path, compression=None) as f:
            data = f.read()
    except OSError as e:
        raise SourceError(f"Cannot re-read {where} (named by the run's evidence): {e}. The plan needs the original "
                          f"events: check the store is still there and readable.") from e
    text, damage = buslog_source.inflate(data, fmt) if fmt else rawtext.gunzip(data)
    if damage:
        logger.warning("%s: %s; reading the lines before it", where, damage)
    return text, where


def from_bus_log(cfg: Config, refs: dict[str, str]) -> dict[str, Payload]:
    """eb_id -> the bus log copy named by `refs` (eb_id -> source_ref)."""
    out: dict[str, Payload] = {}
    fmt = cfg.bus_log.format
    if fmt == "api" or not cfg.bus_log.uri:
        for eb_id in refs:
            out[eb_id] = Payload(None, "bus log read through the API ([bus_log] format = api): no object to "
                                       "re-read the event from")
        return out
    sep = "#" if fmt == "firehose" else ":"
    by_key: dict[str, dict[str, str]] = {}
    for eb_id, ref in refs.items():
        key, _, pos = ref.rpartition(sep)
        by_key.setdefault(key, {})[eb_id] = pos
    for key, wanted in by_key.items():
        text, where = _object(cfg, cfg.bus_log.uri, key, fmt)
        if fmt != "firehose":
            lines = (text if fmt == "cwl-export" else buslog_source.split_records(text, fmt)).split(b"\n")
            for eb_id, pos in wanted.items():
                n = int(pos) if pos.isdigit() else 0
                # a line ends at \n or \r\n, as the source cut it (rawtext.lines): the event re-sent is the one logged
                line = lines[n - 1].removesuffix(b"\r").decode("utf-8", "replace") if 0 < n <= len(lines) else None
                if fmt == "cwl-export" and line is not None:
                    line = line.partition(" ")[2]  # `<ISO timestamp> <message>`
                what = "line" if fmt == "cwl-export" else "record"
                out[eb_id] = whole_event(line, eb_id, f"bus log {where} {what} {pos}")
        else:
            found = _firehose_messages(text, set(wanted.values()))
            for eb_id, log_id in wanted.items():
                out[eb_id] = whole_event(found.get(log_id), eb_id, f"bus log {where} log event {log_id}")
    return out


def _firehose_messages(text: bytes, ids: set[str]) -> dict[str, str]:
    """log event id -> message, for the wanted ids of a Firehose object (concatenated CloudWatch Logs records)."""
    out = {}
    for rec in buslog_source.split_records(text, "firehose").split(b"\n"):
        try:
            doc = orjson.loads(rec)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("messageType") == "DATA_MESSAGE":
            for ev in doc.get("logEvents") or []:
                if ev.get("id") in ids:
                    out[ev["id"]] = ev.get("message")
    return out


def from_dlq(cfg: Config, refs: dict[str, str]) -> dict[str, Payload]:
    """eb_id -> the DLQ message body named by `refs` (eb_id -> source_ref: archive `<object>:<line>` or MessageId)."""
    out: dict[str, Payload] = {}
    if not refs:
        return out
    if cfg.dlq.uri:
        by_key: dict[str, dict[str, str]] = {}
        for eb_id, ref in refs.items():
            key, _, pos = ref.rpartition(":")
            by_key.setdefault(key, {})[eb_id] = pos
        for key, wanted in by_key.items():
            ref_key = key.removeprefix("s3://").split("/", 1)[1] if key.startswith("s3://") else key
            text, where = _object(cfg, cfg.dlq.uri, ref_key)
            lines = text.split(b"\n")
            for eb_id, pos in wanted.items():
                n = int(pos) if pos.isdigit() else 0
                body = None
                if 0 < n <= len(lines):
                    try:
                        body = orjson.loads(lines[n - 1]).get("Body")
                    except (orjson.JSONDecodeError, AttributeError):
                        body = None
                out[eb_id] = whole_event(body, eb_id, f"DLQ archive {where} line {pos}")
        return out
    held, problems = dlq_source.messages(cfg.dlq, cfg.aws)
    for eb_id, message_id in refs.items():
        m = held.get(message_id)
        where = f"DLQ message {message_id}"
        if m is None:
            why = "not in the queue any more" + (f" ({'; '.join(problems)})" if problems else "")
            out[eb_id] = Payload(None, f"{where}: {why}")
        else:
            out[eb_id] = whole_event(m.get("Body"), eb_id, where)
    return out


def partition_key(data: str, eb_id: str, path: str | None) -> tuple[str | None, str | None]:
    """The partition key the rule would use: the event id, or the value at its PartitionKeyPath ($.a.b)."""
    if not path:
        return eb_id, None
    value = orjson.loads(data)
    for step in path.split(".")[1:]:
        value = value.get(step) if isinstance(value, dict) else None
    if value is None or value == "":
        return None, f"[recover] partition_key_path {path} is not in the event"
    return (value if isinstance(value, str) else orjson.dumps(value).decode()), None
