"""EventBridge event JSON -> ledger columns, shared by the bus log, DLQ and sink sources.

Two payload families (PIPELINE.md §1): `detail.ticket_event` -> legacy connector, `detail.type` starting with
`zen:event-type:` -> webhook family. Parsing is one DuckDB query over an Arrow table (json_extract_string with a
list of paths parses each document once), never a Python loop per record: a day can hold ten million events.

Also here: the two helpers that keep a big day in bounded memory (ordered_map: a thread pool with bounded
look-ahead; LedgerOut: a ledger streamed to Parquet).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import interrupt, ledger
from ..config import MatchConfig
from ..errors import ConfigError

# One in-memory database for the process; each call takes its own cursor (a connection of its own, usable from
# its thread), which costs ~0.2 ms where a fresh duckdb.connect() costs ~20 ms -- per file, that adds up.
_DB = duckdb.connect()
# parse's own database: its EventBridge ids leave as Arrow's `uuid` (the ledger's type), which the setting gives for
# every cursor of a database, and which other queries (sums as HUGEINT, say) must not get.
_PARSE_DB = duckdb.connect()
_PARSE_DB.execute("SET arrow_lossless_conversion = true")
# A time to the millisecond (the ledger's unit), floored as date_trunc floors, but on its microseconds: date_trunc on a
# TIMESTAMPTZ goes through ICU's calendar (about 0.25 µs a value, and a bus log line has two), and it keeps
# ±infinity, which DuckDB reads from text ("infinity") and no millisecond timestamp holds: such a time is NULL here,
# so the record is rejected with its reason instead of failing the whole object when the ledger is conformed.
_PARSE_DB.execute("CREATE MACRO to_ms(t) AS make_timestamptz(epoch_us(t) - ((epoch_us(t) % 1000) + 1000) % 1000)")
# A time given as text -> the ledger's time, or NULL (then a reject) unless it has ledger.TIME_TEXT's shape: DuckDB
# alone would read "epoch" as 1970 and a bare date as its midnight. (A constant of ours, quoted as SQL text.)
_PARSE_DB.execute("CREATE MACRO time_ms(s) AS CASE WHEN regexp_full_match(s, '" + ledger.TIME_TEXT.replace("'", "''")
                  + "') THEN to_ms(try_cast(s AS TIMESTAMPTZ)) END")


def connect(db: duckdb.DuckDBPyConnection = _DB) -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB connection (cursor) in UTC; close it when done. Registrations and temp views are its own."""
    con = db.cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


# Ticket ids (the ledger's int64) and sequence positions and totals (int32) as text: digits only, as many as the
# type always holds. Anything else given for one is a reject, never a number read into it.
WHOLE_ID = f"[0-9]{{1,{ledger.ID_DIGITS}}}"
WHOLE_COUNT = "[0-9]{1,9}"

# Paths pulled from every event, in this order (DuckDB lists are 1-based: x[1] is $.id).
PATHS = [
    "$.id",  # 1  EventBridge id
    '$."replay-name"',  # 2
    "$.detail.ticket_event.ticket.id",  # 3  legacy
    "$.detail.ticket_event.type",  # 4
    "$.detail.ticket_event.meta.occurred_at",  # 5
    "$.detail.ticket_event.meta.sequence.id",  # 6
    "$.detail.ticket_event.meta.sequence.position",  # 7
    "$.detail.type",  # 8  webhook
    "$.detail.id",  # 9
    "$.detail.detail.id",  # 10
    "$.detail.subject",  # 11
    "$.detail.time",  # 12
    "$.source",  # 13  for reject reasons
    '$."detail-type"',  # 14
    "$.detail.ticket_event.meta.sequence.total",  # 15  legacy
    "$.detail.event.meta.sequence.id",  # 16  webhook
    "$.detail.event.meta.sequence.position",  # 17
    "$.detail.event.meta.sequence.total",  # 18
]

# The view `events` (built by _view) has: raw (VARCHAR event JSON or NULL), raw_fallback (what a reject shows),
# raw_missing, pre_reason (a reject reason found before JSON parsing), observed_at (TIMESTAMPTZ), eb_override,
# skip_payload (rows whose JSON is not parsed: parse's `explained`), source_ref and the caller's extra columns.
_SQL = """
WITH x AS (
    SELECT *, CASE WHEN NOT skip_payload THEN try(json_extract_string(raw, $paths)) END AS x FROM events
), f AS (
    SELECT *,
           CASE WHEN x[3] IS NOT NULL OR x[4] IS NOT NULL OR x[5] IS NOT NULL THEN 'legacy'
                WHEN starts_with(x[8], 'zen:event-type:') THEN 'webhook' END AS family,
           CASE WHEN x[3] IS NOT NULL OR x[4] IS NOT NULL OR x[5] IS NOT NULL THEN x[5] ELSE x[12] END AS time_text
    FROM x
), t AS (
    SELECT *, time_ms(time_text) AS event_time,
           -- the numbers a match rests on, as given: a whole number or a reject (a cast alone reads "35436.6" as
           -- 35437 and "0x2" as 2). A webhook names its ticket in detail.id only for ticket event types; subject
           -- zen:ticket:<id> names it for any type.
           CASE family WHEN 'legacy' THEN x[3]
                WHEN 'webhook' THEN coalesce(CASE WHEN starts_with(x[8], 'zen:event-type:ticket.') THEN x[10] END,
                                             nullif(regexp_extract(x[11], '^zen:ticket:(.*)$', 1), ''))
           END AS ticket_text,
           CASE family WHEN 'legacy' THEN x[7] ELSE x[17] END AS position_text,
           CASE family WHEN 'legacy' THEN x[15] ELSE x[18] END AS total_text,
           -- another producer's well-formed event: JSON with an id and a `source` that is not Zendesk's, carrying
           -- neither Zendesk payload (queries/reject_kinds.csv `not_zendesk`: it cannot hide a Zendesk event)
           coalesce(NOT raw_missing AND pre_reason IS NULL AND x IS NOT NULL AND family IS NULL
                    AND coalesce(eb_override, x[$id_at]) IS NOT NULL
                    AND NOT regexp_matches(x[13], $zendesk_source), false) AS foreign_event
    FROM f
), r AS (
    -- the rules a skip_payload row still meets here are those parse's `aside` test knows of: keep the two together
    SELECT *, CASE
        WHEN raw_missing THEN 'no event JSON (empty record)'
        WHEN pre_reason IS NOT NULL THEN pre_reason
        WHEN NOT skip_payload AND raw IS NULL THEN 'not UTF-8 text'
        WHEN NOT skip_payload AND x IS NULL THEN 'not JSON'
        WHEN coalesce(eb_override, x[$id_at]) IS NULL THEN $no_id
        WHEN foreign_event THEN 'not a Zendesk event: source "' || x[13] || '" (not matched by [match] '
             || 'zendesk_source_pattern), detail-type ' || coalesce('"' || x[14] || '"', 'missing')
        WHEN NOT skip_payload AND family IS NULL THEN 'unknown event shape: no detail.ticket_event and detail.type '
             || coalesce('"' || x[8] || '"', 'missing') || ' does not start with zen:event-type: (source '
             || coalesce('"' || x[13] || '"', 'missing') || ', detail-type ' || coalesce('"' || x[14] || '"', 'missing')
             || ')'
        -- EventBridge ids are UUIDs (ledger.UUID_TEXT, docs/design.md): ledgers keep them as 16-byte UUIDs
        WHEN NOT regexp_full_match(coalesce(eb_override, x[$id_at]), $uuid_text)
             THEN 'EventBridge id "' || left(coalesce(eb_override, x[$id_at]), 80) || '" is not a UUID (8-4-4-4-12 hex '
             || 'digits, as every EventBridge id is)'
        WHEN $id_pattern <> '' AND NOT regexp_full_match(coalesce(eb_override, x[$id_at]), $id_pattern)
             THEN 'EventBridge id "' || left(coalesce(eb_override, x[$id_at]), 80) || '" does not have the expected '
             || 'shape ([match] eb_id_pattern)'
        -- an id column (the sink's partitionKey) that is not the event's own id keys the row to another event: the
        -- Kinesis target's PartitionKeyPath names another field (a UUID one; a ticket id fails the shape above)
        WHEN NOT skip_payload AND eb_override IS NOT NULL AND x[1] IS NOT NULL AND lower(eb_override) <> lower(x[1])
             THEN 'the id column holds "' || left(eb_override, 80) || '", not the event''s own id "' || left(x[1], 80)
             || '": the Kinesis target''s PartitionKeyPath names another field. Set [sink] id_path = "$.id"'
        WHEN NOT skip_payload AND event_time IS NULL
             THEN 'bad event time ' || coalesce('"' || left(time_text, 80) || '"', 'missing') || ' at '
             || CASE family WHEN 'legacy' THEN 'detail.ticket_event.meta.occurred_at' ELSE 'detail.time' END
             || CASE WHEN time_text IS NOT NULL THEN ' (not an ISO-8601 date and time)' ELSE '' END
        WHEN NOT skip_payload AND NOT regexp_full_match(ticket_text, $whole_id)
             THEN 'bad ticket id "' || left(ticket_text, 80) || '" at ' || CASE
                 WHEN family = 'legacy' THEN 'detail.ticket_event.ticket.id'
                 WHEN ticket_text IS NOT DISTINCT FROM x[10] THEN 'detail.detail.id' ELSE 'detail.subject' END
             || ' (not a whole number)'
        WHEN NOT skip_payload AND NOT regexp_full_match(position_text, $whole_count)
             THEN 'bad sequence position "' || left(position_text, 80) || '" at detail.'
             || CASE family WHEN 'legacy' THEN 'ticket_event' ELSE 'event' END || '.meta.sequence.position (not a '
             || 'whole number)'
        WHEN NOT skip_payload AND NOT regexp_full_match(total_text, $whole_count)
             THEN 'bad sequence total "' || left(total_text, 80) || '" at detail.'
             || CASE family WHEN 'legacy' THEN 'ticket_event' ELSE 'event' END || '.meta.sequence.total (not a '
             || 'whole number)'
    END AS reason
    FROM t
)
SELECT
    source_ref,
    reason,
    CASE WHEN foreign_event THEN 'not_zendesk' WHEN reason IS NOT NULL THEN 'unparseable' END AS kind,
    CASE WHEN reason IS NOT NULL THEN coalesce(raw_fallback, raw) END AS raw,
    -- a kept record's id matched UUID_TEXT above: as a UUID it leaves as the ledger's type, checked once
    CASE WHEN reason IS NULL THEN CAST(coalesce(eb_override, x[$id_at]) AS UUID) END AS eb_id,
    -- the bytes as read, hashed as sources/explained.py digests() hashes a sink payload
    CASE WHEN reason IS NULL AND raw IS NOT NULL THEN hash(raw) END AS payload_digest,
    CASE family WHEN 'webhook' THEN x[9] END AS zendesk_key,
    try_cast(ticket_text AS BIGINT) AS ticket_id,  -- a kept record's: whole numbers only (`reason`)
    CASE family WHEN 'legacy' THEN x[4] ELSE x[8] END AS event_type,
    family,
    event_time,
    observed_at,
    CASE family WHEN 'legacy' THEN x[6] ELSE x[16] END AS sequence_id,
    try_cast(position_text AS INTEGER) AS sequence_position,
    try_cast(total_text AS INTEGER) AS sequence_total,
    x[2] AS replay_name,
    $hop AS hop,
    * EXCLUDE (source_ref, raw, raw_fallback, raw_missing, pre_reason, x, family, time_text, event_time,
               eb_override, observed_at, reason, foreign_event, skip_payload, ticket_text, position_text, total_text)
FROM r
"""

# _SQL with the JSON extraction unguarded, tried first: try() costs ~0.6 µs a payload when nothing fails (a tenth of
# the bus log's parse), and a payload that is not JSON makes this query fail rather than give nulls, on which parse
# runs _SQL itself. The results are _SQL's either way.
_SQL_UNGUARDED = _SQL.replace("try(json_extract_string(raw, $paths))", "json_extract_string(raw, $paths)")
if _SQL_UNGUARDED == _SQL:
    raise RuntimeError("events._SQL no longer extracts with try(json_extract_string(raw, $paths)): mend _SQL_UNGUARDED")

_TEXT = ("string", "large_string", "string_view")
_BIN = ("binary", "large_binary")


def _view(raw_type: pa.DataType, observed_type: pa.DataType, export_lines: bool) -> str:
    """SQL for the `events` view over `events_in`. Only fixed fragments are chosen here, never values."""
    kind = str(raw_type)
    if kind in _BIN:
        # Binary payloads (Spark's `data`) are decoded here; bytes that are not UTF-8 become a reject shown as hex.
        text, fallback = "try(decode(raw))", "hex(raw)"
    elif kind in _TEXT:
        text, fallback = "raw", "NULL::VARCHAR"
    else:
        raise TypeError(f"event JSON must be string or binary, not {raw_type}")
    obs_is_text = str(observed_type) in _TEXT
    if export_lines:
        # CloudWatch export lines `<ISO-8601 timestamp> <event json>`, split at the first space by
        # rawtext.export_lines(): raw is the event part, stamp the timestamp part (both null when the line has no
        # space), line the whole.
        return """CREATE TEMP VIEW events AS
            SELECT * EXCLUDE (raw, stamp, line, observed_at, ts), raw, line AS raw_fallback,
                   line IS NULL AS raw_missing, ts AS observed_at,
                   CASE WHEN line IS NOT NULL AND ts IS NULL
                        THEN 'not a CloudWatch export line (<ISO-8601 timestamp> <event json>)' END AS pre_reason
            FROM (SELECT *, time_ms(stamp) AS ts FROM events_in)"""
    if obs_is_text:  # the text read once (ts), as the export lines' timestamps above
        obs = ("ts AS observed_at, CASE WHEN observed_at IS NOT NULL AND ts IS NULL "
               "THEN 'bad timestamp \"' || left(observed_at, 80) || '\" where the store records when it saw the event' "
               "END AS pre_reason")
        rows = "(SELECT *, time_ms(observed_at) AS ts FROM events_in)"
    else:
        obs, rows = "observed_at, NULL::VARCHAR AS pre_reason", "(SELECT *, NULL AS ts FROM events_in)"
    return (f"CREATE TEMP VIEW events AS SELECT * EXCLUDE (raw, observed_at, ts), raw IS NULL AS raw_missing, "
            f"{text} AS raw, {fallback} AS raw_fallback, {obs} FROM {rows}")


@dataclass(frozen=True)
class Explained:
    """Rows whose payload is not parsed (a sink row whose bytes the bus log parsed under the same id,
    sources/explained.py), and what is known of every row without its payload: where `rows` is true, `eb_id` is the
    row's id as a UUID and `digest` its payload's digest."""

    rows: np.ndarray  # bool per row
    eb_id: pa.Array  # Arrow uuid per row
    digest: pa.Array  # uint64 per row


def parse(
    raw: pa.Array | pa.ChunkedArray,
    source_ref: pa.Array | pa.ChunkedArray,
    *,
    hop: str,
    source: str,
    extra: dict[str, pa.Array | pa.ChunkedArray] | None = None,
    eb_id: pa.Array | pa.ChunkedArray | None = None,
    no_id_reason: str = "event has no id",
    export_line: tuple[pa.ChunkedArray, pa.ChunkedArray] | None = None,
    id_path: str | None = None,
    match: MatchConfig | None = None,
    explained: Explained | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Parse event JSON (string or binary) into (ledger rows conformed to ledger.SCHEMA, REJECT_SCHEMA rows).

    `extra` columns pass through to the ledger by name (source_id, observed_at, error_code, ...); an `observed_at`
    given as text is read as ISO-8601 and a record whose text does not parse is rejected. With
    `export_line` = (stamp, line) from rawtext.export_lines(), `raw` is the event part of CloudWatch export lines
    and the timestamp part becomes observed_at. `eb_id`, when given, is the EventBridge id (a sink's partitionKey)
    instead of the event's own `id`; a null one is rejected with `no_id_reason`. Rejects carry `source`, the ref, the reason,
    the raw text (hex for bytes that are not UTF-8) and a kind (queries/reject_kinds.csv): `not_zendesk` for another
    producer's well-formed event (`match.zendesk_source_pattern`), `unparseable` for everything else.
    `match.eb_id_pattern` is the shape every EventBridge id must have; without `match` (a direct call, not a run)
    ids are not checked for that shape. Every id must be a UUID (8-4-4-4-12 hex digits): the ledger keeps it as one.
    `explained` (with `eb_id`): rows whose payload is not parsed. They keep their id, digest, the `extra` columns and
    every rule about those; their Zendesk fields stay null, and the payload's rules (UTF-8, JSON, shape, event time,
    another producer) are not applied again.
    """
    n = len(raw)
    if str(raw.type) in _BIN:
        try:
            raw = raw.cast(pa.large_string() if str(raw.type) == "large_binary" else pa.string())  # no copy
        except pa.ArrowInvalid:
            pass  # some bytes are not UTF-8: DuckDB decodes row by row, rejecting those rows
    extra = dict(extra or {})
    observed = extra.pop("observed_at", None)
    rules = match or MatchConfig(eb_id_pattern="")
    # the default pattern is the UUID rule itself, which every id meets anyway: not matched twice
    pattern = "" if rules.eb_id_pattern == ledger.UUID_TEXT else rules.eb_id_pattern
    if explained is not None and eb_id is None:
        raise ValueError("explained rows need their ids (eb_id): the rows' own ids are what the bus log explains")
    # An explained row's id is UUID text (sources/explained.py). With no other shape asked of ids and no store
    # timestamp given as text, no rule of _SQL is left that could reject it (`reason` below): it is not even sent to
    # the query. A rule that _SQL applies to skip_payload rows must be added to this test too.
    aside = (explained is not None and bool(explained.rows.any()) and export_line is None and not pattern
             and (observed is None or str(observed.type) not in _TEXT))
    rows = np.arange(n, dtype=np.int64)
    skip = pa.array(explained.rows) if explained is not None else pa.array(np.zeros(n, bool))
    raw_in, eb_in, observed_in = raw, eb_id, observed
    if aside:  # only the rows that are not explained go to the query
        rows = np.flatnonzero(~explained.rows)
        raw_in, skip = raw.take(rows), pa.array(np.zeros(len(rows), bool))
        eb_in, observed_in = eb_id.take(rows), observed.take(rows) if observed is not None else None
    # The refs and the pass-through columns stay in Arrow: inside DuckDB `source_ref` is the row number, and the
    # long strings are put back by it afterwards (carrying them through the query cost a quarter of its time).
    kept = {"source_ref": source_ref, **extra}
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "source_ref": pa.array(rows),
        "raw": raw_in,
        "eb_override": eb_in if eb_in is not None else pa.nulls(len(rows), pa.string()),
        "observed_at": observed_in if observed_in is not None else pa.nulls(len(rows), ledger.TS),
        "skip_payload": skip,
    }
    if export_line is not None:
        cols["stamp"], cols["line"] = export_line
    con = connect(_PARSE_DB)
    try:
        con.register("events_in", pa.table(cols))
        con.execute(_view(raw.type, cols["observed_at"].type, export_line is not None))
        paths, id_at = (PATHS + [id_path], len(PATHS) + 1) if id_path else (PATHS, 1)
        check_patterns(rules, con)
        values = {"paths": paths, "no_id": no_id_reason, "id_at": id_at, "hop": hop, "id_pattern": pattern,
                  "uuid_text": ledger.UUID_TEXT, "zendesk_source": rules.zendesk_source_pattern,
                  "whole_id": WHOLE_ID, "whole_count": WHOLE_COUNT}
        try:
            out = con.sql(_SQL_UNGUARDED, params=values).to_arrow_table()
        except duckdb.InvalidInputException:  # a payload that is not JSON: all of them again, each under try()
            out = con.sql(_SQL, params=values).to_arrow_table()
    finally:
        con.close()
    if out["reason"].null_count == out.num_rows:
        # The usual case: nothing rejected. Filtering would copy every column of every row (most of parse's time).
        good, rejects = out.drop_columns(["reason", "raw", "kind"]), ledger.REJECT_SCHEMA.empty_table()
    else:
        bad = pc.is_valid(out["reason"])
        rej = out.filter(bad)
        rejects = ledger.rejects_table(source, _put_back(rej, {"source_ref": source_ref})["source_ref"],
                                       rej["reason"], rej["raw"], kind=rej["kind"])
        good = out.filter(pc.invert(bad)).drop_columns(["reason", "raw", "kind"])
    parsed = ledger.conform(_put_back(good, kept))
    if not aside:
        return parsed, rejects
    # the explained rows as they are, the parsed ones between them, in the input's order
    known = ledger.conform(pa.table({"hop": pa.repeat(pa.scalar(hop), n), "eb_id": explained.eb_id,
                                     "payload_digest": explained.digest, **kept,
                                     **({"observed_at": observed} if observed is not None else {})}))
    return _in_order(known, explained.rows, parsed, good["source_ref"].to_numpy(), tuple(kept)), rejects


_RUNS = 256  # past this many runs of explained and parsed rows, one take puts them in order, not so many slices


def _in_order(known: pa.Table, rows: np.ndarray, parsed: pa.Table, at: np.ndarray,
              aligned: tuple[str, ...]) -> pa.Table:
    """`known`'s rows where `rows` is true and `parsed`'s rows (row `at[i]` of the input), as one table in the
    input's order (rows in neither, the rejected ones, left out). The parsed rows are usually few: the table is then
    `known`'s runs and theirs as slices, copying nothing; past _RUNS runs (or should `at` not increase), one take
    puts the other columns in that order. `aligned` names the columns `known` holds for every input row, parsed or not
    (the refs and the other pass-through columns, parsed's being the same rows of them): those are taken from `known`
    alone, by input row, and not at all when every row is kept. They are the long strings (a sink row's object path
    twice, ~150 bytes each): copying them was most of the take."""
    label = np.where(rows, 0, -1)
    label[at] = 1
    cuts = np.flatnonzero(np.diff(label)) + 1
    if len(cuts) >= _RUNS or bool((np.diff(at) <= 0).any()):
        keep = label >= 0
        order = np.full(len(label), -1, np.int64)
        order[rows] = np.flatnonzero(rows)
        order[at] = len(known) + np.arange(len(at))
        merged = [c for c in known.column_names if c not in aligned]
        both = pa.concat_tables([known.select(merged), parsed.select(merged)]).take(order[keep])
        kept_rows = None if keep.all() else pa.array(np.flatnonzero(keep))
        columns = [both[c] if c in merged else known[c] if kept_rows is None else known[c].take(kept_rows)
                   for c in known.column_names]
        return pa.Table.from_arrays(columns, schema=known.schema)
    pieces = []
    for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(label)]):
        if label[start] == 0:
            pieces.append(known.slice(start, end - start))
        elif label[start] == 1:
            first = int(np.searchsorted(at, start))
            pieces.append(parsed.slice(first, end - start))
    return pa.concat_tables(pieces) if pieces else known.slice(0, 0)


def _put_back(out: pa.Table, kept: dict[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    """`out` with its row-number `source_ref` replaced by the `kept` columns' rows (by reference when `out` holds
    every row in order, the usual case)."""
    rows = out["source_ref"].to_numpy()
    whole = len(rows) == len(next(iter(kept.values()))) and bool((rows == np.arange(len(rows))).all())
    out = out.drop_columns(["source_ref"])
    for name, col in kept.items():
        col = col if whole else col.take(rows)
        out = out.set_column(out.num_columns, name, col) if name not in out.column_names else \
            out.set_column(out.column_names.index(name), name, col)
    return out


def check_patterns(match: MatchConfig, con=None) -> None:
    """A pattern DuckDB (RE2) cannot compile is a config error naming the key, not a failed query."""
    cur = con or connect()
    try:
        for key in ("eb_id_pattern", "zendesk_source_pattern"):
            pattern = getattr(match, key)
            try:
                cur.execute("SELECT regexp_matches('', $p)", {"p": pattern}).fetchall()
            except duckdb.InvalidInputException as e:
                raise ConfigError(f"[match] {key} = {pattern!r} is not a valid RE2 regular expression ({e}). "
                                  f"Fix it in the config.") from None
    finally:
        if con is None:
            cur.close()


def ordered_map(pool, fn, items, ahead: int):
    """`pool.map(fn, items)` with at most `ahead` items in flight: results come back in order, and a slow consumer
    (or a slow object) never lets finished results pile up in memory the way pool.map's eager submission does."""
    items = iter(items)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            interrupt.check()  # after SIGTERM/SIGINT: no new object is started
            result = pending.popleft().result()
            for item in items:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        for f in pending:  # stopped early (a signal, an error): objects not started yet never will be
            f.cancel()


class LedgerOut:
    """Where a source's ledger goes: kept in memory (path None, the default), or streamed piece by piece into a
    Parquet file at `path` (temp name, renamed on close), so a day of ten million records is never held at once.

    `result()` is then the ledger to put in the SourceResult: the whole table in memory, or -- when streamed -- a
    table of no columns whose num_rows is the file's (the rows themselves are in the file, which the engine reads).
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.pieces: list[pa.Table] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp = self.path.with_name(self.path.name + ".tmp") if self.path is not None else None

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.path is None:
            self.pieces.append(table)
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, ledger.SCHEMA, **ledger.PARQUET_OPTIONS)
        if table.num_rows:
            self._writer.write_table(ledger.conform(table), row_group_size=256_000)

    def result(self) -> pa.Table:
        if self.path is None:
            return pa.concat_tables(self.pieces) if self.pieces else ledger.empty()
        if interrupt.STOP.is_set():
            # a read stopped (a signal, [aws] read_deadline) that came unstuck late writes no ledger: the run has no
            # result, and its folder may hold the finished run put back by then
            self.abort()
            interrupt.check()
        if self._writer is None:
            ledger.write_atomic(ledger.empty(), self.path, **ledger.PARQUET_OPTIONS)
        else:
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.path)
        return pq.read_table(self.path, columns=[])

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._tmp.unlink(missing_ok=True)
