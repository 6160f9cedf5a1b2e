"""Raw text every event source reads before parsing: gzip inflated with damage kept, and text cut into lines.

Bus log, sink and DLQ archives read text the same way through here. Lines are Arrow string views into the inflated
text: a day's archive is gigabytes, and finding newlines is one vectorised pass that copies nothing.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib  # zlib's API and format, inflating about 1.4x faster (Intel ISA-L)

BAD_BYTES = "reconcile-bad-bytes"  # the decode error handler lines() uses for bytes that are not UTF-8


def _bad_bytes(e: UnicodeDecodeError) -> tuple[str, int]:
    """Each undecodable byte as U+0001 and `\\xNN`: visible in a reject, and never valid JSON (see lines())."""
    return "".join(f"\x01\\x{b:02x}" for b in e.object[e.start:e.end]), e.end


codecs.register_error(BAD_BYTES, _bad_bytes)


def gunzip(data: bytes | pa.Buffer) -> tuple[bytes, str | None]:
    """Decompress gzip (any number of members). Returns (text, None) or, for a truncated or corrupt stream,
    (everything decompressed before the damage, what went wrong). Plain (non-gzip) data is returned as is."""
    return next(gunzip_pieces(data))


FEED = 256 << 10  # compressed bytes handed to the inflater at a time after its first call (gunzip_pieces)


def gunzip_pieces(data: bytes | pa.Buffer, size: int | None = None) -> Iterator[tuple[bytes, str | None]]:
    """gunzip() a piece at a time: the text in pieces of `size` bytes (the last shorter; cut anywhere, even inside a
    line), each (text, None) but the last, which comes with what cut the stream short (or None); with no `size`, one
    piece. So an object of any size is never held inflated whole. The compressed input goes in whole at first (one
    call inflates an object of one member up to `size`, nothing copied), then FEED bytes at a time: the inflater
    copies the input it has not taken, and a Firehose object is thousands of members."""
    data = memoryview(data)
    if bytes(data[:2]) != b"\x1f\x8b":  # plain data, as it is
        step = size or max(1, len(data))
        for at in range(0, max(1, len(data)), step):
            yield bytes(data[at:at + step]), None
        return
    out: list[bytes] = []
    held = pos = 0
    d = isal_zlib.decompressobj(wbits=31)
    while True:
        if pos >= len(data):
            out.append(d.flush())
            damage = "truncated gzip stream (the object ends mid-member)"
            break
        part = data[pos:pos + (FEED if pos else len(data))]
        try:
            # Inflating releases the GIL, so objects decompress in parallel threads.
            out.append(d.decompress(part, size - held if size else 0))
        except isal_zlib.error as e:
            damage = f"corrupt gzip data ({e})"
            break
        pos += len(part) - len(d.unconsumed_tail)  # what a full piece left untaken goes in again
        held += len(out[-1])
        if d.eof:  # a member ends: another follows, or the data ends (some writers pad the last member with zeros)
            pos -= len(d.unused_data)
            if bytes(data[pos:pos + 2]) != b"\x1f\x8b" and not bytes(data[pos:]).strip(b"\x00"):
                damage = None
                break
            d = isal_zlib.decompressobj(wbits=31)
        if size and held >= size:
            yield b"".join(out), None
            out, held = [], 0
    rest = b"".join(out)
    whole = max(0, len(rest) - 1) // size if size else 0  # what a stream cut short flushed may be more than a piece
    for i in range(whole):
        yield rest[i * size:(i + 1) * size], None
    yield rest[whole * size:] if whole else rest, damage


def lines(text: bytes | memoryview, *, buffer_limit: int = 2**31 - 1) -> pa.ChunkedArray:
    """Split text into one string per line (line i of the file is element i - 1; `\\n` or `\\r\\n` ends a line).

    The strings are views into `text` itself (Arrow string_view): finding the newlines is one vectorised pass and
    nothing is copied, which matters at gigabytes a day. Views address their buffer with int32 offsets, so text
    longer than `buffer_limit` is cut at a newline into chunks. Text that is not UTF-8 falls back to a plain split
    with each undecodable byte written as U+0001 and a `\\xNN` escape: line numbers stay true, and the bad line can
    never parse as JSON (a raw control character is no JSON inside a string or out), so it is rejected downstream
    with its reason -- never read as an id holding U+FFFD -- rather than taking the whole object with it.
    """
    return _split(memoryview(text), buffer_limit, at_space=False)[0]


def export_lines(text: bytes | memoryview, *, buffer_limit: int = 2**31 - 1) -> list[pa.ChunkedArray]:
    """Lines as lines() does, each also cut at its first space: [line, before the space, after it] (the last two
    null for a line with no space). CloudWatch export lines are `<ISO-8601 timestamp> <event json>`; cutting them
    here, as views, spares the parser a copy of every event."""
    return _split(memoryview(text), buffer_limit, at_space=True)


_STAMP = len("2026-11-23T10:00:00.000Z")  # CloudWatch's export timestamp
_STAMP_WIDTH = 40  # no ISO-8601 timestamp is longer


def _cut_at_space(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[tuple]:
    """Spans before and after each line's first space. Nearly every line has it right after a 24-character
    timestamp; the others are searched in their first _STAMP_WIDTH bytes (a line with no space there is no export
    line either way, and is rejected as one)."""
    first = starts + _STAMP
    has = first < ends
    has[has] = buf[first[has]] == 32
    odd = np.flatnonzero(~has)
    if len(odd):
        head = np.concatenate([buf, np.zeros(_STAMP_WIDTH, np.uint8)])[starts[odd, None] + np.arange(_STAMP_WIDTH)]
        at = np.argmax(head == 32, axis=1)
        found = (head[np.arange(len(odd)), at] == 32) & (starts[odd] + at < ends[odd])
        has[odd], first[odd] = found, starts[odd] + at
    first = np.where(has, first, ends)
    return [(starts, first, has), (np.minimum(first + 1, ends), ends, has)]


def _split(text: memoryview, limit: int, at_space: bool) -> list[pa.ChunkedArray]:
    buf = np.frombuffer(text, np.uint8)
    if len(buf) > limit:
        newlines = np.flatnonzero(buf[:limit] == 10)
        cut = int(newlines[-1]) + 1 if len(newlines) else limit  # a 2 GiB line is cut (and rejected)
        head, tail = _split(text[:cut], limit, at_space), _split(text[cut:], limit, at_space)
        return [pa.chunked_array(h.chunks + t.chunks, pa.string_view()) for h, t in zip(head, tail)]
    # newline positions, a megabyte at a time (in cache: twice as fast as one pass over the whole buffer)
    nl = np.concatenate([np.flatnonzero(buf[a:a + (1 << 20)] == 10) + a for a in range(0, len(buf), 1 << 20)]
                        or [np.empty(0, np.int64)])
    starts = np.concatenate(([0], nl + 1))
    ends = np.append(nl, len(buf))
    if starts[-1] == len(buf):  # a final newline ends the last line; it does not start an empty one
        starts, ends = starts[:-1], ends[:-1]
    if len(buf):
        ends -= (ends > starts) & (buf[ends - 1] == 13)
    spans = [(starts, ends, None)]
    if at_space:
        spans += _cut_at_space(buf, starts, ends)
    utf8 = _is_utf8(text)
    return [pa.chunked_array([_strings(text, buf, a, b, valid, utf8)], pa.string_view()) for a, b, valid in spans]


def _is_utf8(text: memoryview) -> bool:
    """Whether all of `text` is UTF-8 (one check; pieces of it cut at ASCII bytes are then UTF-8 too)."""
    whole = pa.Array.from_buffers(pa.binary(), 1, [None, pa.py_buffer(np.array([0, len(text)], np.int32)),
                                                   pa.py_buffer(text)])
    try:
        whole.cast(pa.string())
        return True
    except pa.ArrowInvalid:
        return False


def _strings(text: memoryview, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, valid: np.ndarray | None,
             utf8: bool) -> pa.Array:
    """text[starts[i]:ends[i]] as a string_view array (null where `valid` is False), without copying when the
    text is UTF-8; otherwise each piece decoded with undecodable bytes escaped (`\\xNN`: see lines())."""
    if not utf8:
        ok = [True] * len(starts) if valid is None else valid.tolist()
        parts = [bytes(text[a:b]).decode("utf-8", BAD_BYTES) if v else None
                 for a, b, v in zip(starts.tolist(), ends.tolist(), ok)]
        return pa.array(parts, pa.string_view())
    views = _views(buf, starts, (ends - starts).astype(np.int32))
    mask = None if valid is None else pa.array(valid, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(pa.string_view(), len(starts), [mask, pa.py_buffer(views), pa.py_buffer(text)])


def _views(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Arrow's 16-byte view per string: its length, then its bytes inline when it has at most 12, else a 4-byte
    prefix, buffer 0 and the offset into that buffer."""
    views = np.zeros((len(starts), 4), np.int32)
    views[:, 0] = lens
    long_ = lens > 12
    # The 4-byte prefix of every long string, gathered a byte at a time as whole columns (a 2-D fancy index per
    # string was a third of the split's time); rows that are not long are overwritten below or stay zero.
    at = np.where(long_, starts, 0)
    prefix = np.zeros(len(starts), np.uint32)
    for k in range(4):
        prefix |= buf[np.minimum(at + k, len(buf) - 1)].astype(np.uint32) << np.uint32(8 * k)
    views[:, 1] = np.where(long_, prefix.view(np.int32), 0)
    views[:, 3] = np.where(long_, starts, 0)
    raw = views.view(np.uint8)
    short = np.flatnonzero((lens > 0) & (lens <= 12))
    if len(short):
        inside = np.arange(12) < lens[short, None]
        raw[short, 4:16] = np.where(inside, buf[np.where(inside, starts[short, None] + np.arange(12), 0)], 0)
    return views


def refs(key: str, n: int, sep: str = ":", first: int = 1) -> pa.Array:
    """`<key><sep><number>` for records first .. first + n - 1 of an object (where to look), built in Arrow."""
    nums = pa.array(np.arange(first, first + n, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(key), nums, sep)
