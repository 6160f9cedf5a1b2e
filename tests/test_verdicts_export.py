"""verdicts.parquet's layout: the same bytes whatever DuckDB's and the writer's threads (today's streaming write cut
row groups where DuckDB's batches fell, which differ between one thread and several), and exactly the rows of one
ORDER BY."""

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from reconcile import engine, outputs
from reconcile.engine import Engine

ROWS = 300_000


def verdicts_like(rows: int = ROWS) -> pa.Table:
    """A verdicts-shaped table in no order: numeric and text ids, event times with many ties and some missing,
    nulls, lists, doubles, booleans; low- and high-cardinality text."""
    rnd = random.Random(17)
    day = datetime(2026, 3, 1, tzinfo=timezone.utc)
    ids = [str(1_000_000 + i) if i % 50 else f"evt-{i}" for i in range(rows)]
    rnd.shuffle(ids)
    times = [None if i % 997 == 0 else day + timedelta(seconds=rnd.randrange(3_600)) for i in range(rows)]
    verdicts = ["delivered", "lost_after_bus", "pending", "duplicated"]
    return pa.table({
        "source_id": pa.array(ids, pa.string()),
        "ticket_id": pa.array([rnd.randrange(10_000) for _ in range(rows)], pa.int64()),
        "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "eb_id": pa.array([None if i % 7 == 0 else f"{rnd.getrandbits(128):032x}" for i in range(rows)]),
        "other_eb_ids": pa.array([[f"x{i}"] if i % 11 == 0 else None for i in range(rows)], pa.list_(pa.string())),
        "verdict": pa.array([verdicts[rnd.randrange(4)] for _ in range(rows)]),
        "age_s": pa.array([rnd.random() * 1e5 for _ in range(rows)], pa.float64()),
        "unlogged_at_bus": pa.array([i % 3 == 0 for i in range(rows)]),
    })


def export(table: pa.Table, path, *, threads: int, group_rows: int, slice_rows: int | None = None) -> bytes:
    e = Engine.open(threads=threads)
    if slice_rows:  # what a smaller [engine] memory_limit gives: the sort in event-time slices of about this many rows
        e.rows_in_memory = slice_rows
    try:
        e.con.from_arrow(table).create("verdicts")
        # the writer's threads too: row groups are encoded on that many (reconcile/rowgroups.py)
        outputs.write_parquet_sorted(e.batches("verdicts", outputs.VERDICTS_ORDER), path, group_rows, threads)
        expected = e.con.table("verdicts").order(outputs.VERDICTS_ORDER).to_arrow_table()
    finally:
        e.close()
    assert pq.read_table(path).equals(expected)  # the rows of one ORDER BY, in its order, with the table's types
    return path.read_bytes()


@pytest.mark.parametrize("group_rows", [7_000, outputs.ROW_GROUP_ROWS])
def test_verdicts_file_is_byte_identical_across_threads(tmp_path, group_rows):
    table = verdicts_like()
    files = {threads: export(table, tmp_path / f"v-{threads}.parquet", threads=threads, group_rows=group_rows)
             for threads in (1, 2, 4)}
    assert files[1] == files[2] == files[4]
    meta = pq.read_metadata(tmp_path / "v-2.parquet")
    full, rest = divmod(ROWS, group_rows)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [group_rows] * full + [rest] * bool(rest)


@pytest.mark.parametrize("slice_rows", [25_000, 40])
def test_a_table_sorted_in_event_time_slices_is_the_same_file_as_one_sort(tmp_path, slice_rows):
    """A day larger than the engine's memory is sorted one event-time slice at a time: the same rows in the same
    order, so the same bytes. 40 rows is less than one second holds here (~83): each second is then a slice of its
    own. The rows without an event time come last, as one sort puts them."""
    table = verdicts_like(100_000)
    whole = export(table, tmp_path / "whole.parquet", threads=2, group_rows=7_000)
    assert export(table, tmp_path / "sliced.parquet", threads=2, group_rows=7_000, slice_rows=slice_rows) == whole
    assert pq.read_table(tmp_path / "sliced.parquet", columns=["event_time"])["event_time"][-1].as_py() is None


def test_per_event_columns_have_no_dictionary_and_long_ids_no_statistics(tmp_path):
    export(verdicts_like(20_000), tmp_path / "v.parquet", threads=2, group_rows=20_000)
    rg = pq.read_metadata(tmp_path / "v.parquet").row_group(0)
    encodings = {rg.column(i).path_in_schema: rg.column(i).encodings for i in range(rg.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["source_id"] and "RLE_DICTIONARY" not in encodings["age_s"]
    assert "RLE_DICTIONARY" in encodings["verdict"]
    stats = {rg.column(i).path_in_schema: rg.column(i).statistics for i in range(rg.num_columns)}
    assert stats["source_id"] is None and stats["eb_id"] is None  # min/max of unordered ids prune nothing
    assert stats["event_time"].has_min_max and stats["verdict"].has_min_max and stats["age_s"].has_min_max


def test_empty_table_writes_an_empty_file(tmp_path):
    table = verdicts_like(10).slice(0, 0)
    export(table, tmp_path / "v.parquet", threads=2, group_rows=7)
    assert pq.read_table(tmp_path / "v.parquet").num_rows == 0


def test_a_failing_read_fails_the_write_and_leaves_no_file(tmp_path):
    schema = pa.schema([("a", pa.int64())])

    def batches():
        yield pa.record_batch([pa.array([1, 2])], schema=schema)
        raise RuntimeError("the engine stopped")

    with pytest.raises(RuntimeError, match="engine stopped"):
        outputs.write_parquet_sorted(pa.RecordBatchReader.from_batches(schema, batches()), tmp_path / "v.parquet")
    assert list(tmp_path.iterdir()) == []


def test_every_column_kept_without_a_dictionary_is_a_column_of_the_verdicts(tmp_path):
    """outputs.NO_DICTIONARY and NO_STATISTICS name columns by hand: a renamed or dropped column must not linger there unnoticed."""
    from tinyday import produce

    produce(tmp_path)
    columns = set(pq.read_schema(tmp_path / "verdicts.parquet").names)
    assert outputs.NO_DICTIONARY <= columns, sorted(outputs.NO_DICTIONARY - columns)
    assert outputs.NO_STATISTICS <= columns, sorted(outputs.NO_STATISTICS - columns)


# verdicts.parquet's columns, in order: what readers of the export (and verify's digests) rely on. A new column is a
# change of the export's contract: add it here on purpose, never by accident (a query's helper column leaking out).
VERDICT_COLUMNS = [
    "source_id", "zendesk_key", "ticket_id", "kind", "event_time", "audit_id", "position", "source_ref", "expected_id",
    "model_kind", "emission", "sequence_id", "sequence_total", "sequence_position", "sequence_complete", "match_kind",
    "eb_id", "other_eb_ids", "bus_type", "eb_ids", "log_copies", "sink_rows", "sink_sequences", "uncommitted_rows",
    "dlq_kinesis", "dlq_other", "error_code", "retry_condition", "dlq_target", "bus_at", "sink_at", "dlq_at",
    "recovery_route", "recovery_sent_at", "age_s", "verdict", "would_be", "cause", "unlogged_at_bus", "bus_latency_s",
    "sink_latency_s", "end_to_end_s", "recovery_lag_s"]


def test_the_verdicts_file_has_exactly_its_columns(tmp_path):
    from tinyday import produce

    produce(tmp_path)
    assert pq.read_schema(tmp_path / "verdicts.parquet").names == VERDICT_COLUMNS


def test_every_ledger_column_named_by_hand_is_a_ledger_column(tmp_path):
    """ledger.FEW_VALUES and NO_STATISTICS likewise; and a streamed ledger keeps statistics on its times, not its ids."""
    from reconcile import ledger
    from reconcile.sources import events

    assert set(ledger.FEW_VALUES) <= set(ledger.SCHEMA.names)
    assert ledger.NO_STATISTICS <= set(ledger.SCHEMA.names), sorted(ledger.NO_STATISTICS - set(ledger.SCHEMA.names))
    out = events.LedgerOut(tmp_path / "bus.parquet")
    out.add(pa.table({"hop": ["bus"], "source_id": ["a"], "event_time": pa.array([0], ledger.TS)}))
    out.result()
    group = pq.read_metadata(tmp_path / "bus.parquet").row_group(0)
    kept = {group.column(i).path_in_schema for i in range(group.num_columns) if group.column(i).is_stats_set}
    assert "event_time" in kept and "source_id" not in kept


def with_uuid_ids(table: pa.Table) -> pa.Table:
    """`table` with its EventBridge ids as the UUIDs partitioned judging's files keep (partition._write_parts)."""
    def uuids(values):
        return pa.ExtensionArray.from_storage(pa.uuid(), pa.array(values, pa.binary(16)))
    rnd = random.Random(5)
    n = table.num_rows
    ids = uuids([None if i % 7 == 0 else rnd.getrandbits(128).to_bytes(16, "big") for i in range(n)])
    others = [[rnd.getrandbits(128).to_bytes(16, "big"), None] if i % 11 == 0 else None for i in range(n)]
    flat = uuids([v for o in others if o for v in o])
    offsets = pa.array(np.cumsum([0] + [len(o) if o else 0 for o in others]), pa.int32())
    lists = pa.ListArray.from_arrays(offsets, flat, mask=pa.array([o is None for o in others]))
    return table.set_column(table.column_names.index("eb_id"), "eb_id", ids) \
        .set_column(table.column_names.index("other_eb_ids"), "other_eb_ids", lists)


def test_slices_read_from_files_give_one_order_by_with_ties_in_the_order_read(tmp_path, monkeypatch):
    """Partitioned judging's verdicts are sorted one event-time slice at a time from its files (Engine._sorted):
    the rows of one ORDER BY with the engine's types (UUIDs as text), rows whose sort keys tie in the order the
    files hold them, the same bytes whatever the threads."""
    table = with_uuid_ids(verdicts_like(60_000))
    ties = table.take([1] * 50)  # 50 rows with the same event time and id: only their age_s tells them apart
    ties = ties.set_column(0, "source_id", pa.array(["dup"] * 50)).set_column(
        ties.column_names.index("age_s"), "age_s", pa.array(np.arange(50.0)))
    table = pa.concat_tables([table.slice(0, 30_000), ties, table.slice(30_000)])
    # three 20-minute slices of the hour, then the rows without an event time; each slice in two files
    minutes = pc.fill_null(table["event_time"].cast(pa.int64()), -1).to_numpy() // 60_000_000 % 60
    part = np.where(pc.is_null(table["event_time"]).to_numpy(zero_copy_only=False), 3, minutes // 20)
    slices, read = [], []
    for i in range(4):
        rows = table.filter(pa.array(part == i))
        files = []
        for j, piece in enumerate((rows.slice(0, rows.num_rows // 2), rows.slice(rows.num_rows // 2))):
            files.append(tmp_path / f"slice{i}-{j}.arrow")
            with pa.ipc.new_file(files[-1], table.schema) as w:
                w.write_table(piece, max_chunksize=7_000)
            read.append(piece)
        slices.append(files)
    read = pa.concat_tables(read)

    monkeypatch.setattr(engine, "EXPORT_BATCH", 7_000)  # rows are taken in order a batch at a time: many batches
    files = {}
    for threads in (1, 2, 4):
        e = Engine.open(threads=threads)
        try:
            e.con.register("verdicts", table)
            e.slices["verdicts"] = slices
            path = tmp_path / f"v-{threads}.parquet"
            outputs.write_parquet_sorted(e.batches("verdicts", outputs.VERDICTS_ORDER), path, 7_000)
            e.con.register("read_order", read.append_column("r", pa.array(np.arange(read.num_rows))))
            expected = e.con.sql(f"SELECT * EXCLUDE r FROM read_order ORDER BY {outputs.VERDICTS_ORDER}, r")
            expected = expected.to_arrow_table()
        finally:
            e.close()
        got = pq.read_table(path)
        assert got.num_rows == 60_050
        assert got.schema.field("eb_id").type == pa.string()
        assert got.schema.field("other_eb_ids").type == pa.list_(pa.string())
        assert got.equals(expected)
        dup = got.filter(pc.equal(got["source_id"], "dup"))
        assert dup["age_s"].to_pylist() == list(np.arange(50.0))  # tied keys: in the order the files hold them
        files[threads] = path.read_bytes()
    assert files[1] == files[2] == files[4]

    # the batches end on every multiple of EXPORT_BATCH counted from the first row, and where a slice ends: the writer
    # takes each row group whole from one batch (it joins two only where a slice ended)
    e = Engine.open(threads=2)
    try:
        e.con.register("verdicts", table)
        e.slices["verdicts"] = slices
        ends = np.cumsum([b.num_rows for b in e.batches("verdicts", outputs.VERDICTS_ORDER)]).tolist()
    finally:
        e.close()
    slice_ends = np.cumsum([sum(pa.ipc.open_file(f).read_all().num_rows for f in files) for files in slices]).tolist()
    assert [end for end in ends if end % 7_000] == [end for end in slice_ends if end % 7_000]
    assert [end for end in ends if end % 7_000 == 0] == list(range(7_000, 60_050, 7_000))
