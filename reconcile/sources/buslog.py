"""What the bus received: the CloudWatch Logs copy of every event (PIPELINE.md §3), as the `bus` ledger.

Four ways in: a CloudWatch S3 export (`cwl-export`: gzip text, `<ISO ts> <event json>` a line), a Firehose
delivery of a subscription filter (`firehose`: concatenated CloudWatch JSON records in multi-member gzip), the same
delivery with Firehose's CloudWatch Logs decompression and message extraction (`firehose-messages`: the log events'
messages only, the event JSON back to back or one a line, gzip or not), or the live log group (`api`:
FilterLogEvents, for short windows). Archives are listed through `reconcile.aws`, so a
local folder and an S3 prefix take the same path; objects are read in threads (pyarrow, zlib and DuckDB all
release the GIL) and parsed in bulk, never a line at a time in Python.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import botocore.exceptions
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .. import interrupt, ledger
from ..aws import MID_READ_FAILURES, THROTTLE_CODES, error_code, list_files, make_client, store_error
from ..config import BUS_LOG_FORMATS as FORMATS
from ..config import AwsConfig, BusLogConfig, MatchConfig
from ..errors import ConfigError, SourceError
from ..ledger import SourceResult
from ..window import Window, parse_duration
from . import events, rawtext

NAME, HOP = "bus_log", "bus"
WRITE_TEST = "aws-logs-write-test"  # CloudWatch's permission probe at the export root
WORKERS = 4  # objects in flight: S3 latency hides behind the parsing of others (2 cores)
# Text inflated and parsed at a time per object: an export object's size is not documented (one log stream's events
# of the whole export), and one read whole took its text, line views and parse at once (a 3 GB object, about 10 GB).
PIECE = 64 << 20
# A record carried longer than this is no log record (an EventBridge event is at most 256 KB, a CloudWatch Logs record
# about 1 MB): the object is read no further, as if damaged there. Carried on, it had no bound (a gzipped file with no
# line end: all of it one record).
RECORD_LIMIT = 16 << 20


@dataclass
class _Piece:
    """What one object yielded."""

    ledger: pa.Table | None  # None once handed to the LedgerOut
    rejects: pa.Table
    fingerprint: dict
    problem: str | None = None
    counts: dict = field(default_factory=dict)


def read(cfg: BusLogConfig, window: Window, aws: AwsConfig, out: Path | None = None,
         match: MatchConfig | None = None) -> SourceResult:
    """Read the bus log copy into a SourceResult named "bus_log" (hop "bus").

    Missing or denied stores raise SourceError. complete=False (with a problem naming the object) for every listed
    object that could not be read whole: empty, not gzip, cut short or corrupt; for an archive with no log object at
    all; and for throttled API reads. With `out`, the ledger is streamed into that Parquet file object by object
    (events.LedgerOut) instead of being held in memory. `match`: events.parse's id and source rules.
    """
    if cfg.format not in FORMATS:
        raise ConfigError(f"Unknown bus_log.format {cfg.format!r}. Use one of: {', '.join(FORMATS)}.")
    if cfg.format == "api":
        result = _read_api(cfg, window, aws, match)
        if out is not None:
            sink = events.LedgerOut(out)
            sink.add(result.ledger)
            result.ledger = sink.result()
        return result
    if not cfg.uri:
        raise ConfigError("[bus_log] uri is not set. Set it in the config or with --set bus_log.uri=s3://bucket/prefix (or a local folder).")
    fs, root, files = list_files(cfg.uri, aws, f"bus log archive {cfg.uri}", "[bus_log] uri")
    skipped = [f for f in files if _skip(f, cfg.format)]
    files = [f for f in files if not _skip(f, cfg.format)]
    scheme = "s3://" if cfg.uri.startswith("s3://") else ""
    read_text = {"cwl-export": _read_export, "firehose": _read_firehose,
                 "firehose-messages": _read_messages}[cfg.format]

    def reader(text: bytes, key: str, first: int):
        return read_text(text, key, first, match)
    sink = events.LedgerOut(out)
    pieces = []
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            for p in events.ordered_map(pool, lambda f: _read_object(fs, f, scheme, reader, cfg.format), files,
                                        2 * WORKERS):
                sink.add(p.ledger)  # in object order, so the ledger's row order does not depend on thread timing
                p.ledger = None
                pieces.append(p)
        result = _combine(pieces, sink.result(), sink.rows)
    except BaseException:
        sink.abort()
        raise
    newest = max((f.mtime for f in files if f.mtime is not None), default=None)
    result.details.update(format=cfg.format, uri=cfg.uri, objects=len(files), skipped_objects=len(skipped),
                          newest_object_at=newest.astimezone(timezone.utc).isoformat() if newest else None)
    if not files:
        # Nothing listed is no proof that nothing happened: the export may not have run, or runs elsewhere.
        result.complete = False
        result.problems.append(f"No log objects under {cfg.uri} (format {cfg.format}). Check [bus_log] uri and that "
                               f"the export or Firehose delivery covers the window.")
    return result


def _skip(info: pafs.FileInfo, fmt: str) -> bool:
    base = info.base_name
    if base == WRITE_TEST or base.startswith((".", "_")):
        return True
    return fmt == "cwl-export" and not base.endswith(".gz")


def _combine(pieces: list[_Piece], led: pa.Table, records: int) -> SourceResult:
    rej = pa.concat_tables([p.rejects for p in pieces]) if pieces else ledger.REJECT_SCHEMA.empty_table()
    problems = [p.problem for p in pieces if p.problem]
    counts: dict[str, int] = {}
    for p in pieces:
        for k, v in p.counts.items():
            counts[k] = counts.get(k, 0) + v
    return SourceResult(
        name=NAME, ledger=led, rejects=rej, complete=not problems, problems=problems,
        fingerprints=[p.fingerprint for p in pieces],
        details=dict(counts, records=records, rejected=rej.num_rows, damaged_objects=len(problems)),
    )


def _read_object(fs: pafs.FileSystem, info: pafs.FileInfo, scheme: str, reader, fmt: str) -> _Piece:
    path = info.path
    key = path.split("/", 1)[1] if scheme else path  # S3: the object key inside the bucket
    where = scheme + path
    try:
        with fs.open_input_stream(path, compression=None) as f:
            data = f.read()
            meta = f.metadata() or {}
    except OSError as e:
        err = store_error(e, f"bus log object {where}", "[bus_log] uri")
        if err is not None:
            raise err from e
        raise SourceError(f"Could not read bus log object {where}: {e}. Check the object and retry.") from e
    fp = {"key": where, "size": info.size, "mtime": info.mtime.isoformat() if info.mtime else None}
    if meta.get("ETag"):
        fp["etag"] = meta["ETag"].decode().strip('"')
    unreadable = _not_an_archive(data, info.base_name, fmt)
    if unreadable:
        # Nothing in it can be read: one reject for the whole object, which may have held any number of events.
        rej = ledger.rejects_table(NAME, [key], [f"{where}: {unreadable}"], [bytes(data[:64]).hex()],
                                   kind="unreadable_unit")
        problem = (f"{where}: {unreadable}; none of its events could be read. Check the object (export or copy it "
                   f"again).")
        return _Piece(ledger.empty(), rej, fp, problem, {"bytes": len(data), "unreadable_objects": 1})
    leds, rejs, counts = [], [], {"bytes": len(data)}
    first, carry, damage = 1, b"", None

    def parse(text: bytes | memoryview) -> None:
        nonlocal first
        led, rej, more = reader(text, key, first)
        leds.append(led)
        rejs.append(rej)
        first += more.pop("records")
        for k, v in more.items():
            counts[k] = counts.get(k, 0) + v
    # a piece at a time (PIECE): the record a piece ends inside is carried into the next
    for text, damage in inflate_pieces(data, fmt, PIECE):
        text = carry + text if carry else text
        if fmt != "cwl-export":  # Firehose's records run together: split them first, or the cut would keep none
            text = split_records(text, fmt)
        cut = text.rfind(b"\n") + 1
        if damage and fmt != "cwl-export" and _whole_record(text[cut:], fmt):
            cut = len(text)  # the damage fell between records (a corrupt gzip member): the last one read is whole
        if cut:
            parse(memoryview(text)[:cut])  # a view: no copy of the piece
        carry = text[cut:]
        if len(carry) > RECORD_LIMIT and not damage:
            damage = (f"a record of more than {RECORD_LIMIT >> 20} MiB with no end (no log record is that long: "
                      f"not a log archive's text from there)")
            break
    if carry and not damage:  # the last record, with no newline after it
        parse(carry)
    led = pa.concat_tables(leds) if leds else ledger.empty()
    rej = pa.concat_tables(rejs) if rejs else ledger.REJECT_SCHEMA.empty_table()
    problem = None
    if damage:
        kept = first - 1  # records numbered: export lines, Firehose records (not their log events), messages
        rej = pa.concat_tables([rej, ledger.rejects_table(
            NAME, [f"{key}:end"], [f"{damage} in {where}: kept the {kept:,} records before the damage"],
            [carry[:4 * ledger.RAW_LIMIT].decode("utf-8", "backslashreplace")], kind="unreadable_unit")])
        problem = (f"{where}: {damage}; kept the {kept:,} records read before it. Check the object (copy or "
                   f"export it again): events after the damage are missing.")
    return _Piece(led, rej, fp, problem, counts)


def inflate(data: bytes, fmt: str) -> tuple[bytes, str | None]:
    """An archive object's text, and what cut it short (rawtext.gunzip), in one piece (inflate_pieces)."""
    return next(inflate_pieces(data, fmt))


def inflate_pieces(data: bytes, fmt: str, size: int | None = None) -> Iterator[tuple[bytes, str | None]]:
    """An archive object's text in pieces of `size` bytes, the last with what cut it short (rawtext.gunzip_pieces).
    A Firehose delivery with GZIP compression over CloudWatch's own gzip is inflated twice (the outer layer whole: it
    is about as big as the object); one with message extraction may be stored uncompressed (as is)."""
    pieces = rawtext.gunzip_pieces(data, size)
    text, damage = next(pieces)
    if fmt == "firehose" and bytes(text[:2]) == b"\x1f\x8b":
        # Firehose's own GZIP compression over CloudWatch's gzipped records: inflated once, they are gzip still
        outer = [text]
        for text, damage in pieces:
            outer.append(text)
        inner = rawtext.gunzip_pieces(b"".join(outer), size)
        if not damage:
            yield from inner
            return
        # the outer layer cut short: the records inflated before the cut are read, the damage is the outer layer's
        last = next(inner)
        for piece in inner:
            yield last[0], None
            last = piece
        yield last[0], damage
        return
    yield text, damage
    yield from pieces


def _not_an_archive(data: bytes, name: str, fmt: str) -> str | None:
    """Why an object cannot be a log archive object at all, or None. CloudWatch exports are always gzip (and so is
    a Firehose object named .gz); an empty object holds nothing an export or delivery ever writes."""
    if len(data) == 0:
        return "empty object (0 bytes)"
    if (fmt == "cwl-export" or name.endswith(".gz")) and bytes(data[:2]) != b"\x1f\x8b":
        return "not gzip data (a CloudWatch export or Firehose .gz object always is)"
    return None


# The readers of a piece of an object's text (its records one a line: split_records), numbered from `first`: each
# returns the ledger, the rejects and counts, `records` among them (how many the numbering took).

def _read_export(text: bytes, key: str, first: int, match: MatchConfig | None = None
                 ) -> tuple[pa.Table, pa.Table, dict]:
    line, stamp, event = rawtext.export_lines(text)
    refs = rawtext.refs(key, len(line), first=first)
    led, rej = events.parse(event, refs, hop=HOP, source=NAME, extra={"source_id": refs}, export_line=(stamp, line),
                            match=match)
    return led, rej, {"records": len(line), "lines": len(line)}


# Firehose records are CloudWatch Logs JSON objects written back to back. Every record starts with
# `{"messageType":"`, a sequence that cannot occur inside a JSON string (its quotes would be escaped), so a newline
# put before it splits the records safely (PIPELINE.md §3).
_RECORD_START = b'{"messageType":'

_FIREHOSE_SQL = """
WITH r AS (
    SELECT rec, line, try(json_extract_string(line, ['$.messageType', '$.logGroup', '$.logStream'])) AS h
    FROM records
)
SELECT rec, line, h[1] AS message_type,
       CASE WHEN CASE WHEN h IS NULL THEN starts_with(line, '{"version":')  -- events back to back
                      ELSE h[1] IS NULL AND json_exists(line, '$."detail-type"') END
                 THEN 'Firehose record is an event, not a CloudWatch Logs record: a delivery with message '
                      || 'extraction is [bus_log] format = "firehose-messages"'
            WHEN h IS NULL THEN 'Firehose record is not JSON'
            WHEN h[1] IS NULL THEN 'Firehose record has no messageType'
            -- CONTROL_MESSAGE: CloudWatch's check that the destination is reachable, which holds no log events
            WHEN h[1] NOT IN ('DATA_MESSAGE', 'CONTROL_MESSAGE')
                 THEN 'Firehose record has an unknown messageType "' || left(h[1], 40) || '"'
            WHEN h[1] = 'DATA_MESSAGE' AND json_type(line, '$.logEvents') IS DISTINCT FROM 'ARRAY'
                 THEN 'Firehose DATA_MESSAGE without a logEvents list' END AS reason,
       CASE WHEN h[1] = 'DATA_MESSAGE' THEN try(json_extract(line, '$.logEvents[*]')) END AS evs
FROM r
"""

_FIREHOSE_EVENTS_SQL = """
SELECT json_extract_string(ev, '$.id') AS id,
       try_cast(json_extract_string(ev, '$.timestamp') AS BIGINT) AS ts,
       json_extract_string(ev, '$.message') AS message
FROM (SELECT unnest(evs) AS ev FROM parsed WHERE evs IS NOT NULL)
"""


# With message extraction, Firehose writes each log event's message alone: the event JSON, back to back unless the
# stream appends a newline to each record. In JSON text `}{"` occurs only between two objects, or inside a string
# that ends in `}{` (its closing quote is then followed by `,` `:` `}` `]` or white space, never by a key's first
# character): a newline put there splits the messages and nothing else.
_MESSAGE_START = re.compile(rb'\}\{"(?=[^,:}\]\s])')


def _whole_record(text: bytes, fmt: str) -> bool:
    """Whether `text` is one whole Firehose record (a JSON object that parses), not one cut short."""
    try:
        return (text.startswith(_RECORD_START if fmt == "firehose" else b"{")
                and isinstance(orjson.loads(text), dict))
    except orjson.JSONDecodeError:
        return False


def split_records(text: bytes, fmt: str) -> bytes:
    """A Firehose delivery's records one to a line (a record already on a line of its own stays as it is)."""
    if fmt == "firehose-messages":
        return _MESSAGE_START.sub(b'}\n{"', text)
    return text.replace(b"}" + _RECORD_START, b"}\n" + _RECORD_START)


def _read_firehose(text: bytes, key: str, first: int, match: MatchConfig | None = None
                   ) -> tuple[pa.Table, pa.Table, dict]:
    lines = rawtext.lines(text)
    records = pa.table({"rec": pa.array(np.arange(first, first + len(lines), dtype=np.int64)), "line": lines})
    con = events.connect()
    try:
        con.register("records", records)
        parsed = con.sql(_FIREHOSE_SQL).to_arrow_table()
        con.register("parsed", parsed)
        evs = con.sql(_FIREHOSE_EVENTS_SQL).to_arrow_table()
    finally:
        con.close()
    bad = parsed.filter(pc.is_valid(parsed["reason"]))
    rec_rejects = ledger.rejects_table(
        NAME, pc.binary_join_element_wise(pa.scalar(key), bad["rec"].cast(pa.string()), "#record ").to_pylist(),
        bad["reason"].to_pylist(), bad["line"].to_pylist())
    ids = evs["id"]
    refs = pc.binary_join_element_wise(pa.scalar(key), pc.fill_null(ids, "?"), "#")
    observed = pc.cast(evs["ts"], pa.timestamp("ms", tz="UTC"))
    led, rej = events.parse(evs["message"], refs, hop=HOP, source=NAME,
                            extra={"source_id": ids, "observed_at": observed}, match=match)
    mt = parsed["message_type"]
    counts = {"records": len(lines), "records_data": pc.sum(pc.equal(mt, "DATA_MESSAGE")).as_py() or 0,
              "records_control": pc.sum(pc.equal(mt, "CONTROL_MESSAGE")).as_py() or 0,
              "log_events": evs.num_rows}
    return led, pa.concat_tables([rec_rejects, rej]), counts


def _read_messages(text: bytes, key: str, first: int, match: MatchConfig | None = None
                   ) -> tuple[pa.Table, pa.Table, dict]:
    """A delivery with message extraction: each record an event, `<key>:<record>` its place; no log event id or
    timestamp is left in it, so the bus log gives no time the bus received the event (its latencies are unknown)."""
    message = rawtext.lines(text)
    refs = rawtext.refs(key, len(message), first=first)
    led, rej = events.parse(message, refs, hop=HOP, source=NAME, extra={"source_id": refs}, match=match)
    return led, rej, {"records": len(message)}


_LOG_EVENT = pa.schema([("logStreamName", pa.string()), ("timestamp", pa.int64()), ("message", pa.string()),
                        ("eventId", pa.string())])


def _read_api(cfg: BusLogConfig, window: Window, aws: AwsConfig, match: MatchConfig | None = None) -> SourceResult:
    if not cfg.log_group:
        raise ConfigError("[bus_log] format = \"api\" needs [bus_log] log_group (--set bus_log.log_group=NAME).")
    start_ms = int(window.read_start.timestamp() * 1000)
    end_ms = int(window.read_end.timestamp() * 1000) - 1  # FilterLogEvents' endTime is inclusive
    client = make_client("logs", aws)
    pages: list[pa.Table] = []
    problems: list[str] = []

    def cut_short(how: str) -> str:  # a read stopped after botocore's retries: what was read so far is kept
        return (f"FilterLogEvents on {cfg.log_group} {how}; read {sum(p.num_rows for p in pages):,} events. Re-run "
                f"later or read an S3 export ([bus_log] format = \"cwl-export\").")
    ask = {"logGroupName": cfg.log_group, "startTime": start_ms, "endTime": end_ms}
    # A page of events under a nextToken given before, or starting with an event a page began with before, means the
    # API does not move on: a repeat ended the run as botocore's "unexpected" PaginationError, and pages cycling (or
    # repeating under fresh tokens) piled up in memory until the read deadline. An empty page may repeat its token:
    # CloudWatch Logs is still searching (the read deadline bounds that).
    given: set[str] = set()
    began: set[str] = set()
    try:
        while True:
            interrupt.check()
            page = client.filter_log_events(**ask)
            found = page.get("events", [])
            token = page.get("nextToken")
            first = found[0].get("eventId") if found else None
            if found and (ask.get("nextToken") in given or first in began):
                again = ask.get("nextToken", "")[:40]
                problems.append(cut_short(f"gave a page it had given before (nextToken {again!r}, first event "
                                          f"{str(first)[:40]!r}): it does not move on"))
                break
            if found:
                given.add(ask.get("nextToken"))
                began.add(first)
            pages.append(pa.Table.from_pylist(found, schema=_LOG_EVENT))
            if not token:
                break
            ask["nextToken"] = token
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code in THROTTLE_CODES:
            # botocore's standard retry mode already backed off; what is read so far is kept.
            problems.append(cut_short(f"was throttled ({code}) after retries"))
        else:
            err = store_error(e, f"log group {cfg.log_group}",
                              "[bus_log] log_group and the region ([aws] region, --region)")
            raise (err or SourceError(f"FilterLogEvents on {cfg.log_group} failed ({code}): {e}")) from e
    except botocore.exceptions.EndpointConnectionError as e:
        raise SourceError(f"Cannot reach CloudWatch Logs ({e}). Check --region and AWS_ENDPOINT_URL.") from e
    except MID_READ_FAILURES as e:
        problems.append(cut_short(f"failed after retries ({type(e).__name__}: {e})"))
    table = pa.concat_tables(pages) if pages else _LOG_EVENT.empty_table()
    refs = pc.binary_join_element_wise(pa.scalar(cfg.log_group), pc.fill_null(table["logStreamName"], "?"), "/")
    refs = pc.binary_join_element_wise(refs, pc.fill_null(table["eventId"], "?"), "#")
    led, rej = events.parse(table["message"], refs, hop=HOP, source=NAME,
                            extra={"source_id": table["eventId"],
                                   "observed_at": pc.cast(table["timestamp"], pa.timestamp("ms", tz="UTC"))},
                            match=match)
    return SourceResult(
        name=NAME, ledger=led, rejects=rej, complete=not problems, problems=problems,
        fingerprints=[{"log_group": cfg.log_group, "start_ms": start_ms, "end_ms": end_ms, "pages": len(pages),
                       "events": table.num_rows}],
        details={"format": "api", "log_group": cfg.log_group, "pages": len(pages), "log_events": table.num_rows,
                 "records": led.num_rows, "rejected": rej.num_rows},
    )


# How long after the bus received an event its log copy may still lack it, by format (PIPELINE.md §3): an S3 export
# holds what was exportable when it ran ("data can take up to 12 h to become exportable"); a Firehose delivery
# buffers up to 900 s. [bus_log] export_lag overrides. FilterLogEvents (format api) reads the group as it is.
EXPORT_LAG = {"cwl-export": timedelta(hours=12), "firehose": timedelta(minutes=15),
              "firehose-messages": timedelta(minutes=15)}


def covered(details: dict, cfg: BusLogConfig) -> datetime | None:
    """Up to when the bus log read is proven to hold what the bus received (queries/reach.sql): its newest
    object's time less the export lag. None for a live read (format api) or no object."""
    newest = details.get("newest_object_at")
    lag = parse_duration(cfg.export_lag) if cfg.export_lag else EXPORT_LAG.get(details.get("format") or cfg.format)
    return datetime.fromisoformat(newest) - lag if newest and lag is not None else None
