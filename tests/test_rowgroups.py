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
    # what real footers seldom hold: field ids more than 15 apart or going back, long lists, negative numbers,
    # booleans (as fields and as list elements)
    tree = [[1, rowgroups.I32, -5], [40, rowgroups.TRUE, True], [41, rowgroups.FALSE, False], [3, rowgroups.I16, -1],
            [39, rowgroups.LIST, (rowgroups.TRUE, [1, 2, 1])],
            [42, rowgroups.LIST, (rowgroups.I64, list(range(-20, 20)))], [43, rowgroups.BINARY, b"x" * 300],
            [44, rowgroups.STRUCT, [[2, rowgroups.I16, 7], [3, rowgroups.I64, 2**40]]],
            [45, rowgroups.MAP, (rowgroups.BINARY, rowgroups.I32, [(b"k", 1)])]]
    assert rowgroups.decode(rowgroups.encode(tree)) == tree


def test_page_indexes_are_refused():
    """A page index holds offsets into the file that the join does not move: refused, not written wrong."""
    with pytest.raises(rowgroups.Unjoinable, match="page index"):
        joined(table(5_000), 1_000, 2, write_page_index=True)


def test_pieces_of_other_files_or_cut_short_are_refused():
    t = table(2_000)
    joiner = rowgroups.Joiner(io.BytesIO())
    joiner.add(rowgroups.encode_group(t))
    with pytest.raises(rowgroups.Unjoinable, match="differ"):
        joiner.add(rowgroups.encode_group(t.drop_columns(["cause"])))
    piece = rowgroups.encode_group(t).to_pybytes()
    size = int.from_bytes(piece[-8:-4], "little")
    cut = piece[:-8 - size] + piece[-8 - size:-8][: size // 2] + (size // 2).to_bytes(4, "little") + b"PAR1"
    with pytest.raises(rowgroups.Unjoinable, match="cut short|encode back"):
        joiner.add(cut)


def test_the_sorted_export_is_one_writers_file(tmp_path):
    """verdicts.parquet as a run writes it (tinyday's: every column of the verdicts), through write_parquet_sorted,
    on 1 and 3 threads, row groups of 4 rows: the bytes one pyarrow writer makes of the same row groups."""
    from tinyday import produce

    produce(tmp_path)
    rows = pq.read_table(tmp_path / "verdicts.parquet")
    assert rows.num_rows > 8
    expected = one_writer(rows, 4, **outputs.parquet_options(rows.schema))
    for threads in (1, 3):
        path = tmp_path / f"again-{threads}.parquet"
        reader = pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches(max_chunksize=3))
        assert outputs.write_parquet_sorted(reader, path, 4, threads) == rows.num_rows
        assert path.read_bytes() == expected


def test_a_read_failing_with_encodes_in_flight_leaves_no_file_and_no_threads(tmp_path):
    import threading

    t = table(5_000)

    def batches():
        yield from t.to_batches(max_chunksize=500)  # ten row groups of 500 rows: encodes in flight
        raise RuntimeError("the engine stopped")

    with pytest.raises(RuntimeError, match="engine stopped"):
        outputs.write_parquet_sorted(pa.RecordBatchReader.from_batches(t.schema, batches()), tmp_path / "v.parquet",
                                     500, 2)
    assert list(tmp_path.iterdir()) == []
    assert not [th for th in threading.enumerate() if th.name.startswith(("parquet-encode", "parquet-prefetch"))]
