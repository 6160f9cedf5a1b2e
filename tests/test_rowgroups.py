"""reconcile/rowgroups.py: a Parquet file encoded a row group per thread and joined is, byte for byte, the file one
pyarrow writer makes of the same row groups; its footer's Thrift encoding survives decoding untouched; and what the
join cannot move is refused, not written wrong."""

import io
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reconcile import outputs, rowgroups


def table(rows: int = 25_000) -> pa.Table:
    """Dictionary and plain text, numbers, times, booleans, lists and nulls (verdicts.parquet's kinds of column)."""
    rng = np.random.default_rng(5)
    day = datetime(2026, 3, 1, tzinfo=timezone.utc)
    return pa.table({
        "source_id": pa.array([str(10**9 + i) for i in range(rows)]),
        "verdict": pa.array(rng.choice(["delivered", "lost_after_bus", "pending"], rows)),
        "ticket_id": pa.array(rng.integers(0, 10**6, rows)),
        "event_time": pa.array([None if i % 101 == 0 else day + timedelta(milliseconds=7 * i) for i in range(rows)],
                               pa.timestamp("us", tz="UTC")),
        "age_s": pa.array(rng.random(rows) * 1e5),
        "unlogged_at_bus": pa.array(rng.random(rows) < 0.3),
        "other_eb_ids": pa.array([[f"x{i}", "y"] if i % 13 == 0 else None for i in range(rows)],
                                 pa.list_(pa.string())),
        "cause": pa.array([None if i % 3 else "bus log read only in part" for i in range(rows)]),
    })


def one_writer(t: pa.Table, group_rows: int, **options) -> bytes:
    out = io.BytesIO()
    with pq.ParquetWriter(out, t.schema, **options) as w:
        for start in range(0, t.num_rows, group_rows):
            w.write_table(t.slice(start, group_rows).combine_chunks(), row_group_size=group_rows)
    return out.getvalue()


def joined(t: pa.Table, group_rows: int, threads: int, **options) -> bytes:
    out = io.BytesIO()
    groups = (t.slice(start, group_rows).combine_chunks() for start in range(0, t.num_rows, group_rows))
    rowgroups.write(groups, out, t.schema, threads, **options)
    return out.getvalue()


@pytest.mark.parametrize("options", [
    outputs.parquet_options(table().schema),  # the sorted export's
    {},  # pyarrow's defaults: snappy, dictionaries and statistics everywhere
    {"compression": "zstd", "use_dictionary": False, "data_page_size": 4096},  # many pages a chunk
])
def test_joined_file_is_one_writers_file(options):
    t = table()
    expected = one_writer(t, 3_000, **options)
    for threads in (1, 2, 3):
        assert joined(t, 3_000, threads, **options) == expected
    # and readers agree: Arrow and DuckDB read back the rows in order
    data = pa.py_buffer(expected)
    assert pq.read_table(data).equals(t)
    meta = pq.read_metadata(data)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3_000] * 8 + [1_000]


def test_duckdb_reads_the_joined_file(tmp_path):
    t = table()
    path = tmp_path / "j.parquet"
    path.write_bytes(joined(t, 4_000, 2, **outputs.parquet_options(t.schema)))
    con = duckdb.connect()
    got = con.sql("SELECT * FROM read_parquet($p)", params={"p": str(path)}).to_arrow_table()
    assert got.num_rows == t.num_rows
    assert got.column("source_id").to_pylist() == t.column("source_id").to_pylist()  # in the file's order
    assert con.sql("SELECT count(*), sum(ticket_id) FROM read_parquet($p)", params={"p": str(path)}).fetchall() == \
        [(t.num_rows, pa.compute.sum(t["ticket_id"]).as_py())]


def test_no_rows_gives_one_writers_empty_file():
    t = table().slice(0, 0)
    assert joined(t, 1_000, 2, compression="zstd") == one_writer(t, 1_000, compression="zstd")


def test_footer_encodes_back_to_its_bytes():
    raw = one_writer(table(), 2_500)
    size = int.from_bytes(raw[-8:-4], "little")
    footer = raw[-8 - size:-8]
    assert rowgroups.encode(rowgroups.decode(footer)) == footer
    # what real footers seldom hold: field ids more than 15 apart, long lists, negative numbers, booleans
    tree = [[1, rowgroups.I32, -5], [40, rowgroups.TRUE, True], [41, rowgroups.FALSE, False],
            [42, rowgroups.LIST, (rowgroups.I64, list(range(-20, 20)))], [43, rowgroups.BINARY, b"x" * 300],
            [44, rowgroups.STRUCT, [[2, rowgroups.I16, 7], [3, rowgroups.I64, 2**40]]],
            [45, rowgroups.MAP, (rowgroups.BINARY, rowgroups.I32, [(b"k", 1)])]]
    assert rowgroups.decode(rowgroups.encode(tree)) == tree


def test_page_indexes_are_refused():
    """A page index holds offsets into the file that the join does not move: refused, not written wrong."""
    with pytest.raises(rowgroups.Unjoinable, match="page index"):
        joined(table(5_000), 1_000, 2, write_page_index=True)
