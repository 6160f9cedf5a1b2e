"""DuckDB: binds the ledgers as views under fixed names, runs queries/*.sql in a declared order, returns results.

Values reach SQL only as `$name` parameters; files are bound through the relational API, never formatted into SQL.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import numpy as np
import pyarrow as pa

from . import emission, interrupt, ledger, resources
from .errors import ConfigError, QueryError

logger = logging.getLogger(__name__)

QUERY_DIR = resources.QUERY_DIR

# The order queries run in; each reads tables made by the ones before it. `rules` makes no table: it defines the
# macros (verdict cascade, hop-A candidate tests, ...) the others call, so it runs first.
QUERIES = (
    "rules",
    "reach",  # the bus log's and the sink's; once, on the whole ledgers (before partitioned judging splits them)
    "source_events",
    "bus_events",
    "replay_copies",  # recovery (issue 16): a replay's copies under new ids folded into the events they re-sent
    "hop_a",
    "sequences",
    "verdicts",
    "orphan_candidates",  # ids no link of the pass (or ticket partition) reaches; orphans settles them
    "settlements",
    "recovery_funnel",  # recovery (issue 16)
    "orphans",
    "zendesk_shortfall",  # a Zendesk read that ends before the window, though complete by its own account
    "verdict_facts",  # the verdicts counted once by every breakdown's keys: the next five and silent_losses sum it
    "verdict_counts",
    "funnel",
    "match_stats",
    "loss_by_hour",
    "loss_by_type",
    "dlq_causes",
    "duplicates",
    "latency_values",  # each hop's distinct latencies and their counts: latency and latency_histogram read it
    "latency",
    "metrics_check",
    "silent_losses",
    "latency_histogram",
    "pending_events",
    "orphan_causes",
    "unlogged_causes",
    "dlq_errors",
    "gaps",
    "trace_hints",
)

# Partitioned judging (reconcile/partition.py) runs these once per partition, each on its partition's rows only; every
# other query runs once, over the union. bus_events sums up each EventBridge id's records, so it is partitioned by
# that id; the queries after it link and judge Zendesk events ticket by ticket, so they are partitioned by ticket id.
BY_EB_ID = ("bus_events",)
# Queries that need every EventBridge id of the day at once (a replay's copy under a new id is paired with its
# original by ticket and time): a day with an archive replay among its recoveries is judged in one pass
# (reconcile/run.py judge), so in partitioned judging these find nothing to do and are skipped.
SINGLE_PASS = ("replay_copies",)
BY_TICKET = ("source_events", "hop_a", "sequences", "verdicts", "orphan_candidates")

# Small result tables handed to the summary and the report whole.
RESULT_TABLES = ("verdict_counts", "funnel", "match_stats", "loss_by_hour", "loss_by_type", "dlq_causes",
                 "duplicates", "latency", "metrics_check", "silent_losses", "latency_histogram", "pending_events",
                 "orphan_causes", "unlogged_causes", "dlq_errors", "trace_hints", "recovery_funnel")

# Engine memory a day needs per Zendesk event (or AWS record) to be judged without spilling: a 1 M-event day peaks at
# 1.8 GiB judged whole, and issue 17's prototype judged 10 M in 8 partitions within 3GB without spilling. Partitioned
# judging ("auto") gives each partition, and a sorted export each event-time slice, about memory_limit / this many
# rows (1.5 M at 3GB).
BYTES_PER_EVENT = 2_000

# The row number a sorted export's slice carries while DuckDB sorts its keys (Engine._sorted).
EXPORT_ROW = "export_row_"
EXPORT_BATCH = 100_000  # outputs.ROW_GROUP_ROWS: the sorted export's batches end where its row groups do
# Where DuckDB spills without [engine] temp_directory (its own default, `.tmp` in the working directory, is no place
# for a cron job's files).
DEFAULT_SPILL = Path(tempfile.gettempdir()) / "reconcile-spill"
# as_exported's own database: Arrow's default types out of DuckDB (no lossless conversion), rows kept in order. It
# only converts columns as they stream through, so it never spills; were it to, not into the working directory.
_CONVERT = duckdb.connect(config={"threads": 1, "temp_directory": str(DEFAULT_SPILL)})

_CREATE_AS = re.compile(r"^CREATE\s+OR\s+REPLACE\s+TABLE\s+\w+\s+AS\s+", re.I)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B", re.I)  # the sizes [engine] memory_limit takes (config.py)
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_COMMENT = re.compile(r"--[^\n]*")


def query_path(name: str) -> Path:
    return resources.query_file(f"{name}.sql")


def parameters_of(sql: str) -> set[str]:
    return set(_PARAM.findall(_COMMENT.sub("", sql)))


@dataclass
class Engine:
    """One DuckDB connection holding a run's ledgers and the tables the queries make."""

    con: duckdb.DuckDBPyConnection
    # A signal interrupts the running query (SIGTERM must not wait for a minute-long join to end).
    unwatch: Callable[[], object] = field(default=lambda: None, repr=False)
    # Folders of partitioned judging's files (the union views read them): removed when the engine closes. `held`:
    # the descriptors that lock them as in use (partition.scratch_folder), let go then too.
    scratch: list[Path] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    partitions: int = 1  # how many partitions the day was judged in (reconcile/partition.py)
    rows_in_memory: int = 1_500_000  # rows_within([engine] memory_limit)
    # Tables partitioned judging wrote in event-time slices (Arrow IPC files per slice, in time order; the last holds
    # the rows without an event time): a sorted export reads them one slice at a time.
    slices: dict[str, list[list[Path]]] = field(default_factory=dict)

    @classmethod
    def open(cls, *, memory_limit: str = "3GB", temp_directory: str | None = None,
             threads: int | None = None) -> "Engine":
        # Tables are kept uncompressed: compressing each table a query makes cost more CPU (a fifth of a partitioned
        # day's judging) than the memory it saves, now that a day too big for memory is judged in partitions.
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        # SET does not take prepared parameters: these values come from our own config, validated here.
        rows = rows_within(memory_limit)  # a ConfigError unless it is a size like 4GB
        con.execute(f"SET memory_limit = '{memory_limit}'")
        spill = temp_directory or str(DEFAULT_SPILL)
        con.execute(f"SET temp_directory = '{_quote(spill)}'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = false")
        con.register("verdict_vocab", emission.verdict_table())
        con.register("hop_vocab", emission.hop_table())
        con.register("match_vocab", emission.match_kind_table())
        con.register("journal_status_vocab", emission.journal_status_table())
        from . import recovered  # here: recovered imports state, which imports this module
        for name, table in recovered.empty().items():  # no recovery known until the caller binds the journal's
            con.register(name, uuid_ids(table))
        return cls(con, interrupt.on_stop(con.interrupt), rows_in_memory=rows)

    def bind_ledger(self, name: str, path: Path | None) -> None:
        """Bind a ledger Parquet file (or an empty ledger when the source was not configured) as view `name`."""
        if path is None:
            self.con.register(name, ledger.empty())
        else:
            self.con.read_parquet(str(path)).create_view(name, replace=True)

    def bind_table(self, name: str, table: pa.Table) -> None:
        self.con.register(name, uuid_ids(table, name))

    def run_query(self, name: str, params: dict[str, Any]) -> None:
        started = time.perf_counter()
        execute_file(self.con, query_path(name), params)
        logger.debug("%s took %.2f s", name, time.perf_counter() - started)

    def stream_query(self, name: str, params: dict[str, Any]) -> duckdb.DuckDBPyRelation:
        """The rows the query file's table would hold, as a relation to stream (execute_file's `stream`; read it
        through `streamed`, which names the query in an error and logs how long the rows took)."""
        logger.debug("%s streaming", name)
        return execute_file(self.con, query_path(name), params, stream=True)

    def run_all(self, params: dict[str, Any]) -> None:
        for name in QUERIES:
            self.run_query(name, params)

    def arrow(self, table: str) -> pa.Table:
        return self.con.table(table).to_arrow_table()

    def batches(self, table: str, order_by: str) -> pa.RecordBatchReader:
        """Stream a (possibly large) result table in a total order that starts with event_time, for exports.

        A table of more than `rows_in_memory` rows is sorted in event-time slices of about that many rows
        (queries/export/slices.sql), one after another, so the sort stays within memory however large the day: the
        rows come out in the same order as one sort of the whole table would give them."""
        if table in self.slices:
            return self._slice_files(table, order_by)
        self.con.table(table).create_view("export_in", replace=True)
        if self.count(table) <= self.rows_in_memory:
            return self.con.table(table).order(order_by).to_arrow_reader(100_000)
        ranges = execute_file(self.con, query_path("export/slices"), {"rows": self.rows_in_memory}).fetchall()
        schema = self.con.table(table).limit(0).to_arrow_table().schema

        def sliced():
            for lo, hi in ranges:
                self.con.table(table).create_view("export_in", replace=True)
                rel = execute_file(self.con, query_path("export/slice"), {"lo": lo, "hi": hi})
                yield from rel.order(order_by).to_arrow_reader(100_000)

        return pa.RecordBatchReader.from_batches(schema, sliced())

    def _slice_files(self, table: str, order_by: str) -> pa.RecordBatchReader:
        schema = self.con.table(table).limit(0).to_arrow_table().schema

        def sliced():
            done = 0
            for files in self.slices[table]:
                if files:  # one copy of the slice in one piece (taking from many chunks joins them per batch)
                    rows = pa.concat_tables([pa.ipc.open_file(f).read_all() for f in files]).combine_chunks()
                    yield from self._sorted(rows, order_by, schema, done)
                    done += rows.num_rows

        return pa.RecordBatchReader.from_batches(schema, sliced())

    def _sorted(self, rows: pa.Table, order_by: str, schema: pa.Schema, done: int = 0) -> Iterator[pa.RecordBatch]:
        """`rows` (a slice read from its files) in `order_by` order, with `schema`'s types. DuckDB sorts only the
        sort keys and each row's number (sorting whole rows and converting them back to Arrow cost twice as much);
        Arrow then puts the rows in that order, a batch at a time. Rows whose keys tie keep the order they were read
        in: the sort adds no dependence on the engine's threads (the order the split wrote them in may differ
        between runs; verdicts' keys do not tie, as each Zendesk event has its own id). Batches end on multiples of
        EXPORT_BATCH rows counted from the first slice (`done` rows came before this one), so a writer cutting row
        groups of that many rows takes each whole from one batch instead of joining two."""
        con = self.con
        con.register("export_slice", rows.append_column(EXPORT_ROW, pa.array(np.arange(rows.num_rows))))
        try:
            order = con.sql(f"SELECT {EXPORT_ROW} FROM export_slice ORDER BY {order_by}, {EXPORT_ROW}")
            order = order.to_arrow_table().column(0)
        finally:
            con.unregister("export_slice")
        # a batch at a time: the writer starts on the first
        cuts = [0, *range(-done % EXPORT_BATCH or EXPORT_BATCH, len(order), EXPORT_BATCH)] if len(order) else []
        for start, end in zip(cuts, [*cuts[1:], len(order)]):
            yield from as_exported(rows.take(order.slice(start, end - start)), schema).to_batches()

    def results(self) -> dict[str, list[dict[str, Any]]]:
        return {name: self.arrow(name).to_pylist() for name in RESULT_TABLES}

    def count(self, table: str, where: str | None = None) -> int:
        rel = self.con.table(table)
        if where:
            rel = rel.filter(where)
        return rel.aggregate("count(*)").fetchall()[0][0]

    def spill_bytes(self) -> int:
        """What DuckDB has spilled to [engine] temp_directory right now."""
        return self.con.sql("SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()").fetchall()[0][0]

    def close(self) -> None:
        self.unwatch()
        self.con.close()
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)
        for fd in self.held:
            os.close(fd)
        self.held.clear()


def rows_within(memory_limit: str) -> int:
    """About how many events' rows the engine can work on at once within `memory_limit` (BYTES_PER_EVENT each)."""
    return max(1, size_bytes(memory_limit) // BYTES_PER_EVENT)


def size_bytes(size: str) -> int:
    m = _SIZE.fullmatch(size.strip())
    if not m:
        raise ConfigError(f"engine.memory_limit {size!r} is not a size like 4GB or 512MB.")
    number, unit, binary = m.groups()
    return int(float(number) * (1024 if binary else 1000) ** ("KMGT".index(unit.upper()) + 1 if unit else 0))


def uuid_ids(table: pa.Table, what: str = "a table") -> pa.Table:
    """`table` with its `eb_id` column (text in the state, the journal and the outputs) as the UUID the ledgers and
    every engine table keep it as: EventBridge ids enter the engine as UUIDs and leave it as text (Arrow out of the
    engine gives a UUID as its text). An id that is no UUID (kept by a version that allowed any id) can match no
    ledger record: its link is dropped, with a warning, rather than failing every run until the row ages out."""
    if "eb_id" not in table.column_names or isinstance(table.schema.field("eb_id").type, pa.UuidType):
        return table
    i = table.column_names.index("eb_id")
    ids, bad = ledger.uuids(table["eb_id"], strict=False)
    if bad:
        logger.warning("%s: %d EventBridge id(s) are not UUIDs (written by an older version, when [match] "
                       "eb_id_pattern allowed any id); no ledger record can match them, so they are read as no id.",
                       what, bad)
    return table.set_column(i, pa.field("eb_id", pa.uuid()), ids)


def as_exported(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s column types, where they differ converted as DuckDB converts them when it hands a
    table to Arrow (a UUID as its text, a list of UUIDs as a list of texts): the split keeps EventBridge ids as
    UUIDs (partition._write_parts), the exports give them as text."""
    differ = [f.name for f in schema if table.schema.field(f.name).type != f.type]
    if differ:
        con = _CONVERT.cursor()
        try:
            converted = con.from_arrow(table.select(differ)).to_arrow_table()  # in order: insertion order kept
        finally:
            con.close()
        for name in differ:
            table = table.set_column(table.column_names.index(name), name, converted[name])
    return pa.Table.from_arrays([table[f.name].cast(f.type) for f in schema], schema=schema)


def statements(sql: str) -> list[str]:
    """Split a query file into statements (our files keep ';' out of strings and comments)."""
    return [part.strip() for part in _COMMENT.sub("", sql).split(";") if part.strip()]


def execute_file(con: duckdb.DuckDBPyConnection, path: Path, params: dict[str, Any], *, stream: bool = False):
    """Run every statement of a query file, each with just the parameters it uses; returns the last result. With
    `stream`, the last statement (`CREATE OR REPLACE TABLE t AS <query>`) is run as its query: the caller streams
    the rows instead of DuckDB keeping them as a table."""
    name = f"{path.parent.name}/{path.name}"
    sql = path.read_text()
    missing = sorted(parameters_of(sql) - set(params))
    if missing:
        raise QueryError(f"{name} uses ${', $'.join(missing)} but the engine did not supply it.")
    result = None
    todo = statements(sql)
    if stream:
        query = _CREATE_AS.sub("", todo[-1], count=1)
        if query == todo[-1]:
            raise QueryError(f"{name} cannot be streamed: its last statement does not make a table.")
        todo[-1] = query
    for stmt in todo:
        used = parameters_of(stmt)
        logger.debug("running %s with %s\n%s", name, sorted(used), stmt)
        values = {k: params[k] for k in used}
        try:
            # A trailing query comes back as a relation, so callers can stream it as Arrow without a copy.
            is_query = (stream and stmt is todo[-1]) or stmt.lstrip("(").upper().startswith(("SELECT", "WITH"))
            result = con.sql(stmt, params=values) if is_query else con.execute(stmt, values)
        except duckdb.Error as e:
            raise failed(con, name, e) from e
    return result


def failed(con: duckdb.DuckDBPyConnection, name: str, error: Exception) -> QueryError:
    """The error to raise for a query that failed: what to try when it ran out of room."""
    if isinstance(error, duckdb.OutOfMemoryException) or "Out of Memory" in str(error):
        return QueryError(f"{name} ran out of room: {_room(con)} ({error})")
    return QueryError(f"{name} failed: {error}")


def streamed(con: duckdb.DuckDBPyConnection, rows: duckdb.DuckDBPyRelation, name: str,
             batch_rows: int = 100_000) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A relation's rows as Arrow batches. Its query runs as they are read, so an error comes up then (from Arrow's
    reader as an OSError): it is raised as execute_file raises one, naming the query and what to try."""
    try:
        reader = rows.to_arrow_reader(batch_rows)
    except duckdb.Error as e:
        raise failed(con, name, e) from e

    def batches() -> Iterator[pa.RecordBatch]:
        it = iter(reader)
        started, rows_read = time.perf_counter(), 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                logger.debug("%s streamed %d rows in %.2f s (and the caller's work on them)", name, rows_read,
                             time.perf_counter() - started)
                return
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                reader.close()  # the connection is free again: the caller's clean-up may use it
                raise failed(con, name, e) from e
            rows_read += batch.num_rows
            yield batch

    return reader.schema, batches()


def _room(con: duckdb.DuckDBPyConnection) -> str:
    """What to try when DuckDB can neither keep nor spill what a query needs."""
    # fetchall, not fetchone: a result left unfinished keeps the connection busy for the caller's clean-up
    settings = "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    limit, spill = con.execute(settings).fetchall()[0]
    try:
        free = f"{shutil.disk_usage(spill).free / 2**30:.1f} GiB free"
    except OSError:
        free = "free space unknown"
    return (f"DuckDB keeps up to [engine] memory_limit ({limit}) in memory and spills the rest to [engine] "
            f"temp_directory ({spill}, {free}). Point temp_directory at a larger disk, raise memory_limit, or "
            f"judge a shorter window (--start/--end)")


def _quote(text: str) -> str:
    return text.replace("'", "''")
