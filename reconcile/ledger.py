"""The one normalized observation schema every source writes.

A ledger is a Parquet file of observations: one row per record a store holds (a Zendesk child event, a bus log
line, a DLQ message, a Spark output row). Sources fill the columns they know and leave the rest null; they never
decide verdicts. Records that cannot be parsed go to a rejects file with the reason, never nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .atomic import replacing

TS = pa.timestamp("ms", tz="UTC")

SCHEMA = pa.schema(
    [
        ("hop", pa.string()),  # zendesk | bus | dlq | sink
        ("source_id", pa.string()),  # id native to the store (API child event id, log event id, MessageId, ...)
        ("eb_id", pa.uuid()),  # EventBridge event id, a UUID (16 bytes; null on the zendesk hop): docs/design.md
        ("zendesk_key", pa.string()),  # Zendesk event id where the record carries one (API child id, webhook id)
        ("ticket_id", pa.int64()),
        ("event_type", pa.string()),  # API: Create | Comment | Change:<field>; bus: the payload's type
        ("family", pa.string()),  # api | legacy | webhook
        ("event_time", TS),  # when Zendesk says the event happened
        ("observed_at", TS),  # when this store recorded it
        ("source_ref", pa.string()),  # object key / page and line / MessageId: where to look
        ("audit_id", pa.int64()),  # zendesk: the audit (ticket update) the child event belongs to
        ("sequence_id", pa.string()),  # meta.sequence.id (legacy detail.ticket_event.meta, webhook detail.event.meta)
        ("sequence_position", pa.int32()),  # meta.sequence.position (1-based within the ticket update)
    ("sequence_total", pa.int32()),  # meta.sequence.total: how many events the connector emitted for the update
        ("replay_name", pa.string()),  # EventBridge replay-name, when the event came from a replay
        # dlq
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("target_arn", pa.string()),
        ("rule_arn", pa.string()),
        ("retry_condition", pa.string()),
        ("retry_attempts", pa.int32()),
        # sink
        ("sequence_number", pa.string()),
        ("committed", pa.bool_()),  # false: the file is not in _spark_metadata's commit log
        # AWS stores: DuckDB's hash() of the record's event JSON as read. Within one run, two records with the same
        # digest hold the same bytes (but for a 2^-64 chance): the sink does not parse a payload the bus log parsed
        # (sources/explained.py). Not comparable across DuckDB versions.
        ("payload_digest", pa.uint64()),
    ]
)

# Columns with few distinct values: dictionary-encoded in Parquet. Ids and times are not (dictionaries of millions
# of distinct values cost time and are dropped by the writer anyway).
FEW_VALUES = ["hop", "event_type", "family", "replay_name", "error_code", "error_message", "target_arn", "rule_arn",
              "retry_condition"]

# Columns of ids with no order in a ledger (written in the order objects were read): a row group's min and max of them
# span nearly every value, so their statistics prune nothing for a reader (the engine's joins and trace's lookups
# read them whole either way), and computing them is a fifth of writing a ledger. Times and ticket ids keep theirs.
NO_STATISTICS = frozenset({"source_id", "eb_id", "zendesk_key", "source_ref", "sequence_id", "sequence_number",
                           "payload_digest"})
STATISTICS = [f.name for f in SCHEMA if f.name not in NO_STATISTICS]
# How a ledger file is encoded, streamed (sources/events.py LedgerOut) or written whole (write_atomic's options).
PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": FEW_VALUES, "write_statistics": STATISTICS}

REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_ref", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),  # the offending record, cut to RAW_LIMIT characters
        ("kind", pa.string()),  # a kind from queries/reject_kinds.csv: whether it can hide an event (completeness.py)
    ]
)
# A reject whose kind is not given is taken as one that may hide an event: the safe side (reconcile/completeness.py).
DEFAULT_REJECT_KIND = "unparseable"
RAW_LIMIT = 4096

# EventBridge metrics are counters, not observations of events: their own small schema (PIPELINE.md §5).
METRIC_SCHEMA = pa.schema(
    [
        ("metric", pa.string()),  # Invocations, FailedInvocations, InvocationsSentToDlq, ...
        ("timestamp", TS),  # start of the period
        ("period_s", pa.int32()),
        ("value", pa.float64()),  # Sum over the period
    ]
)


# What an EventBridge id is: a UUID in its 8-4-4-4-12 text (docs/design.md, "Event identity"). The one statement of
# the rule: sources reject any other id (sources/events.py), and the state's ids are read by it (uuids()).
UUID_TEXT = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_RX = re.compile(UUID_TEXT)

# How many digits a Zendesk id (ticket, audit, child event) may have: as many as the ledger's int64 always holds. The
# AWS side reads them as text of digits (sources/events.py WHOLE_ID), the API side as JSON integers (zendesk/audits.py
# whole).
ID_DIGITS = 18


# What a time given as text is: ISO-8601's date and time of day (to the minute at least, fractions of a second
# allowed), with a UTC offset or `Z`, or none (then read as UTC), as every time in Zendesk's payloads and AWS's
# records is written (PIPELINE.md). Parsers are lenient beyond it -- DuckDB reads "epoch" as 1970, a bare date as its
# midnight; Python a bare date too -- and such a time put on an event moves it hours or decades: a record whose time
# has another shape is rejected with its reason instead. The one statement of the rule: sources/events.py (DuckDB),
# time_ms() here (the Zendesk audits and the metrics).
# Years 0001-9999, hours 00-23, minutes and seconds 00-59, offsets within a day: what both parsers read alike (DuckDB
# alone reads hour 24 as the next midnight, an offset of +99:00 as 99 hours, year 0000 as 1 BC; Python none of them).
TIME_TEXT = (r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]"
             r"(:[0-5][0-9](\.[0-9]+)?)?(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?")
_TIME_RX = re.compile(TIME_TEXT)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def time_ms(text: str) -> int | None:
    """A time given as text (TIME_TEXT) -> milliseconds since the epoch, floored; None for any other text."""
    if not _TIME_RX.fullmatch(text):
        return None
    head, frac, tail = re.fullmatch(r"([^.]*)(?:\.([0-9]+))?(.*)", text).groups()
    try:  # fractions cut to microseconds (Python's precision; DuckDB cuts them there too), `Z` as +00:00
        when = datetime.fromisoformat(head + (f".{frac[:6]:0<6}" if frac else "") + tail.replace("Z", "+00:00"))
    except ValueError:  # the shape, but no such day or hour (2019-02-30, 25:00)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - _EPOCH) // timedelta(milliseconds=1)


def canonical_eb_id(text: str) -> str:
    """An id as the outputs show it: a UUID in lower case (EventBridge's ids are; upper-case hex is accepted on
    read), any other text as it is (a Zendesk id given to `trace`)."""
    return text.lower() if _UUID_RX.fullmatch(text) else text


# Arrow out of this database gives UUIDs as Arrow's `uuid` type (Parquet's UUID logical type, DuckDB's UUID on
# read); a database of its own, as the setting holds for every cursor of a database.
_UUIDS = duckdb.connect()
_UUIDS.execute("SET arrow_lossless_conversion = true")


def uuids(ids: pa.Array | pa.ChunkedArray, *, strict: bool = True) -> tuple[pa.ChunkedArray, int]:
    """EventBridge ids as text (UUID_TEXT) -> (Arrow `uuid`, how many were not UUIDs). Strict: an id that is not a
    UUID is a ValueError (a source's ledger: sources reject such records before, sources/events.py); otherwise it
    becomes null and is counted (ids kept by an older version in the state, where any id was allowed)."""
    if isinstance(ids.type, pa.UuidType):
        return (ids if isinstance(ids, pa.ChunkedArray) else pa.chunked_array([ids])), 0
    con = _UUIDS.cursor()
    try:
        con.register("ids", pa.table({"id": ids.cast(pa.string())}))
        out = con.sql("SELECT CASE WHEN regexp_full_match(id, $uuid) THEN id::UUID END AS u, "
                      "CASE WHEN u IS NULL AND id IS NOT NULL THEN id END AS bad FROM ids",
                      params={"uuid": UUID_TEXT}).to_arrow_table()
    finally:
        con.close()
    bad = len(out) - out["bad"].null_count
    if bad and strict:
        first = pc.drop_null(out["bad"])[0].as_py()
        raise ValueError(f"EventBridge id {first[:80]!r} is not a UUID (EventBridge ids are UUIDs: docs/design.md)")
    return out["u"], bad


def conform(table: pa.Table) -> pa.Table:
    """Return `table` with exactly the ledger columns, in order, missing ones as nulls, types cast (eb_id text to
    UUID)."""
    n = table.num_rows
    cols = []
    for f in SCHEMA:
        if f.name == "eb_id" and f.name in table.column_names:
            cols.append(uuids(table[f.name])[0])
        elif f.name in table.column_names:
            cols.append(table[f.name].cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def empty() -> pa.Table:
    return SCHEMA.empty_table()


def rejects_table(source: str, refs, reasons, raws, kind=DEFAULT_REJECT_KIND) -> pa.Table:
    """Rejected records (lists or Arrow arrays of equal length), `raw` cut to RAW_LIMIT characters. `kind` (one for
    all, or one per record) says whether such a reject can hide an event (queries/reject_kinds.csv; completeness.py
    applies it)."""
    n = len(refs)
    raws = raws if isinstance(raws, (pa.Array, pa.ChunkedArray)) else pa.array(raws, pa.string())
    if isinstance(kind, str):
        kind = pa.array([kind] * n, pa.string())
    return pa.table(
        {
            "source": pa.array([source] * n, pa.string()),
            "source_ref": refs,
            "reason": reasons,
            "raw": pc.utf8_slice_codeunits(raws.cast(pa.string()), 0, RAW_LIMIT),
            "kind": kind,
        },
        schema=REJECT_SCHEMA,
    )


@dataclass
class SourceResult:
    """What one source read: its ledger, its rejects and whether the read was complete.

    `complete=False` means some of the store could not be read; `problems` says what and what to check.
    `fingerprints` lists every raw input read (key, size, etag/sha256, ...), for the manifest and auditors.

    `ledger` is the rows in memory, as a store's module returns them. Once the ledger is on disk (sources.Source.read
    writes it to evidence/<hop>.parquet), `ledger` is None, `path` names the file and `rows` is its row count.
    """

    name: str
    ledger: pa.Table | None
    rejects: pa.Table = field(default_factory=lambda: REJECT_SCHEMA.empty_table())
    complete: bool = True
    problems: list[str] = field(default_factory=list)
    fingerprints: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # source-specific facts for the report (coverage, counts)
    path: Path | None = None  # where the ledger lies on disk, once written
    rows: int | None = None  # the row count of the ledger at `path`

    @property
    def records(self) -> int:
        return self.rows if self.ledger is None else self.ledger.num_rows

    @property
    def rejected(self) -> int:
        return self.rejects.num_rows


def write_atomic(table: pa.Table, path: Path, **options) -> Path:
    """Write Parquet to a temp name and rename, so a reader never sees half a file (zstd, or pq.write_table's
    `options`: a ledger's are PARQUET_OPTIONS)."""
    with replacing(path) as tmp:
        pq.write_table(table, tmp, **(options or {"compression": "zstd"}))
    return path
