"""One Parquet file encoded a row group at a time on several threads, byte for byte the file one writer makes.

pyarrow's ParquetWriter encodes a file's row groups one after another on one core (it does not expose Arrow's
`use_threads` for writing). Each row group's column chunks depend only on its own rows, so here every row group is
written as a small Parquet file of its own, on a pool of threads, and the pieces are joined: the file's magic, each
piece's column chunks in order, and one footer -- the first piece's, listing every piece's row groups with their
offsets moved to where their chunks now lie. The footer is Thrift's compact encoding of parquet.thrift's
FileMetaData (https://github.com/apache/parquet-format/blob/master/src/main/thrift/parquet.thrift); it is decoded
into a generic tree that encodes back to the same bytes (checked on every piece), so no field is lost or reordered.
A piece whose footer holds a field the join does not know to move or leave (page indexes, bloom filters, encryption,
or one a later parquet-format adds) is refused (Unjoinable), as are pieces whose schema or metadata differ.
tests/test_rowgroups.py proves the joined file equal to one writer's.
"""

from __future__ import annotations

import struct
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"

# Thrift compact protocol types (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md)
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_INTS = (BYTE, I16, I32, I64)

# parquet.thrift field ids the join reads or moves
FILE_NUM_ROWS, FILE_ROW_GROUPS = 3, 4  # FileMetaData
GROUP_COLUMNS, GROUP_FILE_OFFSET, GROUP_ORDINAL = 1, 5, 7  # RowGroup
CHUNK_FILE_OFFSET, CHUNK_META = 2, 3  # ColumnChunk
META_OFFSETS = (9, 10, 11)  # ColumnMetaData: data, index and dictionary page offsets
# The fields the join knows to hold no offset into the file, or to move: any other (a page index's offsets, a bloom
# filter's, encryption, or a field a later parquet-format adds) makes the piece Unjoinable rather than wrong.
KNOWN = {
    "FileMetaData": set(range(1, 8)),  # version, schema, num_rows, row_groups, key_value_metadata, created_by, orders
    "RowGroup": set(range(1, 8)),  # columns, sizes, num_rows, sorting_columns, file_offset, ordinal
    "ColumnChunk": {1, 2, 3},  # file_path, file_offset, meta_data
    "ColumnMetaData": set(range(1, 14)) | {16, 17},  # ..., page offsets, statistics, encoding stats; size, geo stats
}


class Unjoinable(ValueError):
    """A piece the join cannot place (its footer holds something it does not move)."""


# -- Thrift compact encoding, generic: a struct is a list of [field id, type, value] ---------------------------------

def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(data: memoryview, pos: int, kind: int):
    if kind in (TRUE, FALSE):  # a bool inside a list or map: one byte
        return data[pos], pos + 1
    if kind == BYTE:
        return data[pos], pos + 1
    if kind in (I16, I32, I64):
        n, pos = _varint(data, pos)
        return _zigzag(n), pos
    if kind == DOUBLE:
        return bytes(data[pos:pos + 8]), pos + 8
    if kind == BINARY:
        n, pos = _varint(data, pos)
        return bytes(data[pos:pos + n]), pos + n
    if kind in (LIST, SET):
        head = data[pos]
        pos += 1
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(data, pos)
        items = []
        for _ in range(size):
            item, pos = _value(data, pos, elem)
            items.append(item)
        return (elem, items), pos
    if kind == MAP:
        size, pos = _varint(data, pos)
        if not size:
            return (0, 0, []), pos
        kv = data[pos]
        pos += 1
        pairs = []
        for _ in range(size):
            k, pos = _value(data, pos, kv >> 4)
            v, pos = _value(data, pos, kv & 0x0F)
            pairs.append((k, v))
        return (kv >> 4, kv & 0x0F, pairs), pos
    if kind == STRUCT:
        fields, last = [], 0
        while True:
            head = data[pos]
            pos += 1
            if head == STOP:
                return fields, pos
            kind_, delta = head & 0x0F, head >> 4
            if delta:
                fid = last + delta
            else:
                n, pos = _varint(data, pos)
                fid = _zigzag(n)
            if kind_ in (TRUE, FALSE):
                value = kind_ == TRUE
            else:
                value, pos = _value(data, pos, kind_)
            fields.append([fid, kind_, value])
            last = fid
    raise Unjoinable(f"Thrift type {kind} is not one parquet.thrift uses")


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put(out: bytearray, kind: int, value) -> None:
    if kind in (TRUE, FALSE, BYTE):
        out.append(value & 0xFF)
    elif kind in (I16, I32, I64):
        _put_varint(out, (value << 1) ^ (value >> 63))
    elif kind == DOUBLE:
        out += value
    elif kind == BINARY:
        _put_varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        elem, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | elem)
        else:
            out.append(0xF0 | elem)
            _put_varint(out, len(items))
        for item in items:
            _put(out, elem, item)
    elif kind == MAP:
        k, v, pairs = value
        _put_varint(out, len(pairs))
        if pairs:
            out.append(k << 4 | v)
        for a, b in pairs:
            _put(out, k, a)
            _put(out, v, b)
    else:  # STRUCT
        last = 0
        for fid, kind_, v in value:
            wire = (TRUE if v else FALSE) if kind_ in (TRUE, FALSE) else kind_
            if 0 < fid - last <= 15:
                out.append((fid - last) << 4 | wire)
            else:
                out.append(wire)
                _put_varint(out, (fid << 1) ^ (fid >> 63))
            if kind_ not in (TRUE, FALSE):
                _put(out, kind_, v)
            last = fid
        out.append(STOP)


def decode(data: bytes) -> list:
    """A Thrift compact struct (a Parquet footer) as a tree encode() gives back as the same bytes."""
    tree, end = _value(memoryview(data), 0, STRUCT)
    if end != len(data):
        raise Unjoinable(f"footer has {len(data) - end} bytes after its end")
    return tree


def encode(tree: list) -> bytes:
    out = bytearray()
    _put(out, STRUCT, tree)
    return bytes(out)


def _field(fields: list, fid: int):
    return next((f for f in fields if f[0] == fid), None)


# -- the join ---------------------------------------------------------------------------------------------------------

def _piece(data) -> tuple[memoryview, list]:
    """A one-file Parquet piece (bytes or a buffer): its column chunks (without the leading magic) and its decoded
    footer, every field of which the join knows (KNOWN)."""
    data = memoryview(data)
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise Unjoinable("not a Parquet file")
    size = struct.unpack("<I", data[-8:-4])[0]
    raw = bytes(data[-8 - size:-8])
    try:
        footer = decode(raw)
    except IndexError as e:
        raise Unjoinable("footer cut short") from e
    if encode(footer) != raw:  # a footer we would not write back as it was: leave it alone
        raise Unjoinable("footer does not encode back to the same bytes")
    _known(footer, "FileMetaData")
    groups = _field(footer, FILE_ROW_GROUPS)
    for group in (groups[2][1] if groups else []):
        _known(group, "RowGroup")
        for chunk in _field(group, GROUP_COLUMNS)[2][1]:
            _known(chunk, "ColumnChunk")
            meta = _field(chunk, CHUNK_META)
            if meta:
                _known(meta[2], "ColumnMetaData")
    return data[4:-8 - size], footer


def _known(fields: list, struct_name: str) -> None:
    unknown = [f[0] for f in fields if f[0] not in KNOWN[struct_name]]
    if unknown:  # e.g. a page index or bloom filter: offsets into the file the join does not move
        raise Unjoinable(f"{struct_name} field(s) {unknown} (a page index, bloom filter, encryption or a field newer "
                         f"than this join) hold what the join cannot move")


def _move(group: list, by: int, ordinal: int) -> None:
    """Shift a RowGroup's file offsets by `by` bytes and give it its place in the file."""
    for f in group:
        if f[0] == GROUP_FILE_OFFSET:
            f[2] += by
        elif f[0] == GROUP_ORDINAL:
            f[2] = ordinal
        elif f[0] == GROUP_COLUMNS:
            for chunk in f[2][1]:
                for c in chunk:
                    if c[0] == CHUNK_FILE_OFFSET and c[2]:  # deprecated: Arrow writes 0, which is no offset
                        c[2] += by
                    elif c[0] == CHUNK_META:
                        for m in c[2]:
                            if m[0] in META_OFFSETS:
                                m[2] += by


def _apart_from_rows(footer: list) -> list:
    return [f for f in footer if f[0] not in (FILE_NUM_ROWS, FILE_ROW_GROUPS)]


class Joiner:
    """Writes pieces (one-file Parquet, each holding row groups) to `out` as one Parquet file, in the order added."""

    def __init__(self, out: BinaryIO):
        self.out, self.at, self.footer, self.groups, self.rows = out, len(MAGIC), None, [], 0
        out.write(MAGIC)

    def add(self, data) -> None:
        chunks, footer = _piece(data)
        groups = _field(footer, FILE_ROW_GROUPS)
        for group in (groups[2][1] if groups else []):
            _move(group, self.at - len(MAGIC), len(self.groups))
            self.groups.append(group)
        self.rows += _field(footer, FILE_NUM_ROWS)[2]
        if self.footer is None:
            self.footer = footer
        elif _apart_from_rows(footer) != _apart_from_rows(self.footer):  # schema, metadata, writer: one file's
            raise Unjoinable("pieces differ in schema, metadata or writer")
        self.out.write(chunks)
        self.at += len(chunks)

    def close(self) -> None:
        fields = []
        for f in self.footer:
            if f[0] == FILE_NUM_ROWS:
                f = [f[0], f[1], self.rows]
            elif f[0] == FILE_ROW_GROUPS:
                f = [f[0], f[1], (STRUCT, self.groups)]
            fields.append(f)
        raw = encode(fields)
        self.out.write(raw + struct.pack("<I", len(raw)) + MAGIC)


def encode_group(table: pa.Table, **options) -> pa.Buffer:
    """`table` as a one-file Parquet piece holding it as one row group (pq.ParquetWriter's `options`)."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, **options) as w:
        w.write_table(table, row_group_size=max(1, table.num_rows))
    return sink.getvalue()


def write(groups: Iterator[pa.Table], out: BinaryIO, schema: pa.Schema, threads: int = 2, **options) -> int:
    """Write `groups` (each a row group) to `out` as one Parquet file, encoding `threads` of them at once (at most
    `threads` more held, encoded, for their turn) with pq.ParquetWriter's `options`, which must not ask for page
    indexes, bloom filters or encryption (Unjoinable). On an error, the encodes not yet started are dropped. Returns
    the file's rows."""
    joiner = Joiner(out)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="parquet-encode")
    try:
        pending: list[Future] = []
        for group in groups:
            pending.append(pool.submit(encode_group, group, **options))
            while len(pending) > threads:
                joiner.add(pending.pop(0).result())
        for f in pending:
            joiner.add(f.result())
    finally:
        pool.shutdown(cancel_futures=True)
    if joiner.footer is None:  # no rows: the footer one writer makes of none
        _, joiner.footer = _piece(empty_file(schema, **options))
    joiner.close()
    return joiner.rows


def empty_file(schema: pa.Schema, **options) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, **options):
        pass
    return sink.getvalue()
