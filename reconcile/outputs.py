"""Atomic, deterministic output files: summary.json, gaps.csv, manifest.json.

Everything is written to a temp name and renamed, so a reader never sees half a file and a re-run replaces. CSV text
that a spreadsheet would run as a formula is written inert (FORMULA_LEADS).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import atomic, rowgroups

GAPS_ORDER = "event_time, verdict, source_id, eb_id"
# Zendesk ids are numbers: sorting them as numbers reads naturally and sorts ten million rows ~20 % faster than text.
VERDICTS_ORDER = "event_time, try_cast(source_id AS BIGINT), source_id"
# The carried events a run settled, by their own window (a Zendesk event id belongs to one window: a total order)
SETTLEMENTS_ORDER = "window_key, event_time, try_cast(source_id AS BIGINT), source_id"
# Every row group holds exactly this many rows of the sorted table (the last one the rest): the file's layout follows
# from its rows alone, not from how DuckDB's threads happened to hand them over.
ROW_GROUP_ROWS = 100_000
# Row groups encoded at once: the machine's cores (the file is the same for any number; tests/test_rowgroups.py).
ENCODE_THREADS = min(8, len(os.sched_getaffinity(0)))
# Columns that hold a new value on almost every row (ids, instants, measures): a dictionary for them costs a third of
# the encoding and makes the file bigger (Parquet falls back to plain values once the dictionary is full). The
# others (verdicts, kinds, causes, counts) keep theirs. A column not named here gets a dictionary.
NO_DICTIONARY = frozenset({
    "source_id", "zendesk_key", "source_ref", "expected_id", "eb_id", "other_eb_ids", "ticket_id", "audit_id",
    "event_time", "bus_at", "sink_at", "dlq_at", "recovery_sent_at",
    "age_s", "bus_latency_s", "sink_latency_s", "end_to_end_s", "recovery_lag_s",
})
# Long ids with no order in a file sorted by time: a row group's min and max of them span nearly every value, so
# their statistics prune nothing for a reader, and computing them costs an eighth of the encoding. Every other column
# keeps its statistics (event_time's let a reader skip to a time).
NO_STATISTICS = frozenset({"source_id", "zendesk_key", "source_ref", "expected_id", "eb_id", "other_eb_ids"})


# A CSV cell starting with one of these is run as a formula when the file is opened in Excel, LibreOffice or Google
# Sheets (OWASP, "CSV Injection"), and our CSVs carry text from the stores (an orphan's event type, a DLQ's error
# code). Such a cell is written with a leading `'`, which spreadsheets show as text and never evaluate. A cell that
# starts with `'` itself gets one too, so reading back is exact: drop one leading `'` (unguard_sql).
FORMULA_LEADS = "=+-@\t\r'"
_FORMULA_LEAD = "^[" + FORMULA_LEADS.replace("-", r"\-") + "]"


def guard_cell(value: Any) -> Any:
    """A CSV cell as written: text a spreadsheet would run as a formula behind a `'`; anything else as it is."""
    return "'" + value if isinstance(value, str) and value[:1] and value[0] in FORMULA_LEADS else value


def guard_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """guard_cell on every text column of a batch, in Arrow (the batch as it is when no cell needs it)."""
    columns = list(batch.columns)
    for i, col in enumerate(columns):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
            risky = pc.match_substring_regex(col, _FORMULA_LEAD)
            if pc.any(risky).as_py():
                columns[i] = pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col).cast(col.type)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def unguard_sql(column: str) -> str:
    """A DuckDB expression reading a column of our CSVs back as it was before guard_cell."""
    return f"CASE WHEN starts_with({column}, '''') THEN {column}[2:] ELSE {column} END"


def read_guarded(con, paths: str | list[str]):
    """Our CSVs (gaps.csv) as a DuckDB relation of text columns, each cell as it was before guard_cell (what trace
    and calibrate read; `con` a DuckDB connection)."""
    rows = con.read_csv(paths, header=True, all_varchar=True)
    return rows.project(", ".join(unguard_sql(f'"{c}"') + f' AS "{c}"' for c in rows.columns))


def write_bytes(path: Path, data: bytes) -> Path:
    return atomic.write_bytes(path, data)


def _default(value: Any) -> Any:
    # DuckDB returns SUM() of integers as DECIMAL/HUGEINT; they are whole numbers here.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def dumps(obj: Any) -> bytes:
    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC
    return orjson.dumps(obj, default=_default, option=options) + b"\n"


def write_json(path: Path, obj: Any) -> Path:
    return write_bytes(path, dumps(obj))


def write_gaps_csv(reader: pa.RecordBatchReader, path: Path) -> int:
    """Stream the gaps table to CSV (all of it; the report shows only the first rows), formulas inert (guard_batch)."""
    n = 0
    with atomic.replacing(path) as tmp, pacsv.CSVWriter(tmp, reader.schema) as w:
        for batch in reader:
            w.write_batch(guard_batch(batch))
            n += batch.num_rows
    return n


def write_parquet_sorted(reader: pa.RecordBatchReader, path: Path, row_group_rows: int = ROW_GROUP_ROWS,
                         threads: int = ENCODE_THREADS) -> int:
    """Write a sorted result (Engine.batches) as Parquet, byte for byte the same whatever the engine's threads and
    the writer's: row groups of exactly `row_group_rows` rows in the reader's order, each encoded from one contiguous
    array per column on one of `threads` threads (each holding one more, encoded, for its turn: about 40 MB a
    100,000-row group of verdicts) and joined into one file (reconcile/rowgroups.py), dictionaries and
    statistics only where they pay (NO_DICTIONARY, NO_STATISTICS). The reader is drained on another thread, so DuckDB
    and Arrow make the next rows while row groups are encoded."""
    batches = _prefetched(reader)
    try:
        with atomic.replacing(path) as tmp, open(tmp, "wb") as out:
            return rowgroups.write(_groups(batches, reader.schema, row_group_rows), out, reader.schema, threads,
                                   **parquet_options(reader.schema))
    finally:
        batches.close()


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How the sorted export's columns are encoded (pq.ParquetWriter's options)."""
    return dict(compression="zstd", use_dictionary=[f.name for f in schema if f.name not in NO_DICTIONARY],
                write_statistics=[f.name for f in schema if f.name not in NO_STATISTICS])


def _groups(batches: Iterator[pa.RecordBatch], schema: pa.Schema, row_group_rows: int) -> Iterator[pa.Table]:
    """The batches' rows as tables of exactly `row_group_rows` rows (the last the rest), each in one piece."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= row_group_rows:
            group = pa.Table.from_batches(pending, schema)
            rest = group.slice(row_group_rows)
            pending, held = rest.to_batches(), rest.num_rows
            yield group.slice(0, row_group_rows).combine_chunks()
    if held:
        yield pa.Table.from_batches(pending, schema).combine_chunks()


_DONE = object()


def _prefetched(reader: pa.RecordBatchReader, depth: int = 4) -> Iterator[pa.RecordBatch]:
    """The reader's batches, read ahead on a thread (at most `depth` held). An error on the reading side (a DuckDB
    interrupt, say) is raised here; when the consumer stops early, the reading stops too."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def drain() -> None:
        try:
            for batch in reader:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)

    t = threading.Thread(target=drain, name="parquet-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(root: Path, paths: list[Path]) -> list[dict[str, Any]]:
    paths = sorted(paths)
    with ThreadPoolExecutor(2) as pool:  # hashlib releases the GIL on megabyte chunks: a gigabyte on both cores
        digests = list(pool.map(sha256_file, paths))
    return [{"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": d}
            for p, d in zip(paths, digests)]
