"""verdicts.parquet's layout: the same bytes whatever DuckDB's threads or the ranges it is sorted in, and exactly the
rows of one ORDER BY over the table."""

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reconcile import outputs
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


def export(table: pa.Table, path, *, threads: int, range_rows: int, group_rows: int) -> bytes:
    e = Engine.open(threads=threads)
    try:
        e.con.from_arrow(table).create("verdicts")
        outputs.write_parquet_sorted(e.sorted_ranges("verdicts", outputs.VERDICTS_ORDER, "event_time", range_rows,
                                                     batch_rows=10_000), path, group_rows)
        expected = e.con.table("verdicts").order(outputs.VERDICTS_ORDER).to_arrow_table()
    finally:
        e.close()
    assert pq.read_table(path).equals(expected)  # the rows of one ORDER BY, in its order, with the table's types
    return path.read_bytes()


def test_verdicts_file_is_byte_identical_across_threads_and_ranges(tmp_path):
    table = verdicts_like()
    files = {(threads, range_rows): export(table, tmp_path / f"v-{threads}-{range_rows}.parquet", threads=threads,
                                           range_rows=range_rows, group_rows=7_000)
             for threads, range_rows in ((1, ROWS), (2, ROWS), (4, ROWS), (1, 40_000), (2, 40_000), (4, 25_000))}
    assert len(set(files.values())) == 1, {k: len(v) for k, v in files.items()}
    meta = pq.read_metadata(tmp_path / "v-2-40000.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [7_000] * 42 + [ROWS - 42 * 7_000]


def test_per_event_columns_have_no_dictionary(tmp_path):
    export(verdicts_like(20_000), tmp_path / "v.parquet", threads=2, range_rows=5_000, group_rows=20_000)
    rg = pq.read_metadata(tmp_path / "v.parquet").row_group(0)
    encodings = {rg.column(i).path_in_schema: rg.column(i).encodings for i in range(rg.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["source_id"] and "RLE_DICTIONARY" not in encodings["age_s"]
    assert "RLE_DICTIONARY" in encodings["verdict"]


def test_empty_table_writes_an_empty_file(tmp_path):
    table = verdicts_like(10).slice(0, 0)
    export(table, tmp_path / "v.parquet", threads=2, range_rows=5, group_rows=7)
    assert pq.read_table(tmp_path / "v.parquet").num_rows == 0


def test_a_failing_range_fails_the_write_and_leaves_no_file(tmp_path):
    def readers():
        yield pa.table({"a": [1, 2]}).to_reader()
        raise RuntimeError("the engine stopped")

    with pytest.raises(RuntimeError, match="engine stopped"):
        outputs.write_parquet_sorted(readers(), tmp_path / "v.parquet")
    assert list(tmp_path.iterdir()) == []
