"""Which sink rows the bus log already explains, so that their payloads need not be parsed (issue 17).

A sink row's EventBridge id comes from a column (the Kinesis partition key), not from its payload. When the bus log
holds a copy of that id *with the same payload bytes*, the row's payload would parse exactly as that copy did: into
the same fields, passing the same rules. queries/bus_events.sql takes the event's Zendesk fields from the log copy
and reads nothing from the sink row but its own columns (arrival, sequence number, commit flag) and its
`replay-name`. Such a row is *explained*: its payload is not parsed (events.parse `explained`), which is most of
the sink's time. Every other row is parsed as before: ids the bus log lacks, payloads that differ from every copy
the log holds of their id (a payload damaged in the sink alone is parsed, so it is a reject), ids that are not
canonical UUID text, rows without a payload and rows whose payload names a replay.

"The same bytes" is a 64-bit digest (the ledger's `payload_digest`, DuckDB's hash() of the event JSON as read). A
pair is keyed as (the id's first 64 bits, its last 64 bits XOR the digest), so a row passes for a bus copy it is
not with a chance of about 2^-64 (its id's first half equal, and the rest a coincidence). DuckDB's hash is not a
cryptographic one: a payload crafted to collide, sent under a real id, could pass; that is outside what a
reconciliation of one's own pipeline defends against.
Only a bus log read whole explains anything ([sink] parse_payloads = "unexplained", the default); with an
incomplete one, or `parse_payloads = "all"`, or an id read from the payload (`id_path`), every payload is parsed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import events

# The name of EventBridge's replay field. Any payload holding this text is parsed, whatever its id: the sink's
# replay-name marks a duplicate's cause (queries/bus_events.sql `replayed`), and the bus log's copy cannot say which
# of the sink's rows came from the replay.
REPLAY_KEY = b"replay-name"

_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_DASHES = np.array([8, 13, 18, 23])
_DIGITS = np.setdiff1d(np.arange(36), _DASHES)


def uuid_keys(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Ids as text -> (an (n, 2) uint64 array, the big-endian halves of each UUID; a mask of the rows that are
    canonical 8-4-4-4-12 hex text, either case). Other rows' keys are 0 and never looked up: they are parsed."""
    arr = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    arr = arr.cast(pa.string())
    n = len(arr)
    keys = np.zeros((n, 2), np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4)
    ok = np.diff(offsets) == 36
    if arr.null_count:
        ok &= arr.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(ok)
    if not len(rows):
        return keys, ok
    data = np.frombuffer(arr.buffers()[2], np.uint8)
    if len(rows) == n:  # the usual case: every id 36 bytes, back to back
        chars = data[offsets[0]:offsets[-1]].reshape(n, 36)
    else:
        chars = data[offsets[rows][:, None] + np.arange(36)]
    nibbles = _HEX[chars[:, _DIGITS]]
    good = (chars[:, _DASHES] == ord("-")).all(axis=1) & (nibbles != 255).all(axis=1)
    ok[rows[~good]] = False
    raw = (nibbles[good, 0::2] << 4) | nibbles[good, 1::2]
    keys[rows[good]] = np.ascontiguousarray(raw).view(">u8").astype(np.uint64)
    return keys, ok


class BusIds:
    """The (EventBridge id, payload digest) pairs a ledger holds, for membership tests of many pairs at once.

    A pair is keyed as (the id's first 64 bits, its last 64 bits XOR the digest): exact for the id's first half,
    and as good as the digest for the rest. Keys are held in a hash index on their first 64 bits (pandas, built
    once); the rare keys that share those bits with another are kept apart, sorted, and searched in full."""

    def __init__(self, ids: pa.ChunkedArray | pa.Array, digests: pa.ChunkedArray | pa.Array):
        """`ids`: a ledger's `eb_id` column (Arrow `uuid`); `digests`: its `payload_digest` (rows with a null in
        either are left out)."""
        keep = pc.and_(pc.is_valid(ids), pc.is_valid(digests))
        ids, digests = ids.filter(keep), digests.filter(keep)
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        if isinstance(ids, pa.ExtensionArray):
            ids = ids.storage
        both = np.frombuffer(ids.buffers()[1], np.uint8, len(ids) * 16, ids.offset * 16).view(">u8")
        keys = keyed(both.reshape(-1, 2).astype(np.uint64), digests.to_numpy(zero_copy_only=False))
        # First 64 bits held once (nearly every id): the index. Held more than once (an id the log copied twice,
        # rarely two ids): the sorted rest.
        shared = _held_twice(keys[:, 0])
        self._index = pd.Index(keys[~shared, 0])
        # pandas builds an index's hash table at its first lookup, without a lock; the sink's threads share this
        # object, so the table is built here, before any of them looks up
        self._index.get_indexer(keys[:1, 0])
        self._low = keys[~shared, 1]
        self._rest = np.unique(_as_bytes(keys[shared]))

    @classmethod
    def of_ledger(cls, path) -> BusIds:
        t = pq.read_table(path, columns=["eb_id", "payload_digest"])
        return cls(t["eb_id"], t["payload_digest"])

    def holds(self, keys: np.ndarray) -> np.ndarray:
        """Per key (`keyed`), whether the set holds it."""
        at = self._index.get_indexer(keys[:, 0])
        found = at >= 0
        found[found] = self._low[at[found]] == keys[found, 1]
        if len(self._rest):
            left = np.flatnonzero(~found)
            want = _as_bytes(keys[left])
            pos = np.minimum(np.searchsorted(self._rest, want), len(self._rest) - 1)
            found[left] = self._rest[pos] == want
        return found


def _held_twice(values: np.ndarray) -> np.ndarray:
    """Per value, whether another holds it too (pandas' duplicated(keep=False)), found by sorting the values and
    looking the few repeated ones up: a third of the time of hashing every value, on the path from the bus log to
    the sink."""
    ordered = np.sort(values)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(repeated):
        return np.zeros(len(values), bool)
    return pd.Index(repeated).get_indexer(values) >= 0


def keyed(ids: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 ids (uuid_keys) and n digests -> the (n, 2) keys BusIds holds."""
    keys = ids.copy()
    keys[:, 1] ^= digests.astype(np.uint64)
    return keys


def digests(payloads: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each payload's digest, in order, as events.parse writes it to `payload_digest` (DuckDB's hash() of its
    bytes; null payloads are never looked up)."""
    con = events.connect()
    try:
        con.execute("SET preserve_insertion_order = true")  # the default, relied on: row i's digest is row i's
        con.register("payloads", pa.table({"p": payloads.cast(pa.binary())}))
        out = con.sql("SELECT hash(p) AS d FROM payloads").to_arrow_table()["d"]
    finally:
        con.close()
    return out.to_numpy()


def _as_bytes(keys: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 keys as 16-byte strings that sort as the keys do (big-endian)."""
    return np.ascontiguousarray(keys.astype(">u8")).view("S16").ravel()


def explained(ids: pa.Array | pa.ChunkedArray, payloads: pa.Array | pa.ChunkedArray, bus: BusIds) -> events.Explained:
    """Per sink row, whether the bus log explains it: canonical id text, a payload without replay-name, and the
    pair (id, payload digest) held by the bus ledger (module docstring); with the id as a UUID and the digest, which
    events.parse then needs not work out again for those rows."""
    keys, ok = uuid_keys(ids)
    chunks = payloads.chunks if isinstance(payloads, pa.ChunkedArray) else [payloads]
    ok &= payloads.is_valid().to_numpy(zero_copy_only=False)
    ok &= ~np.concatenate([_holding(c, REPLAY_KEY) for c in chunks] or [np.zeros(0, bool)])
    rows = np.flatnonzero(ok)
    found = np.zeros(len(ok), bool)
    every = digests(payloads) if len(rows) else np.zeros(len(ok), np.uint64)
    if len(rows):  # every payload is hashed, in place: gathering the candidates first would copy nearly all
        found[rows] = bus.holds(keyed(keys[rows], every[rows]))
    return events.Explained(found, as_uuids(keys), pa.array(every, pa.uint64()))


def as_uuids(keys: np.ndarray) -> pa.Array:
    """(n, 2) uint64 keys (uuid_keys) -> Arrow `uuid`, the ledger's type (all zeros where the text was no UUID)."""
    raw = pa.py_buffer(np.ascontiguousarray(keys.astype(">u8")).tobytes())
    return pa.ExtensionArray.from_storage(pa.uuid(), pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(keys),
                                                                                          [None, raw]))


def _holding(data: pa.Array, marker: bytes) -> np.ndarray:
    """Per value of a binary or string array, whether `marker` may occur in it: one search of the whole value
    buffer, taken as one Arrow value and split at the marker (the pieces' lengths place the matches). Arrow searches
    without the GIL, so the sink's threads search side by side (Python's re held it: most of the sink's time under
    the GIL), and faster than a search per value. A match across two values marks both (more parsing, never less)."""
    n = len(data)
    if data.type not in (pa.binary(), pa.string(), pa.large_binary(), pa.large_string()):
        raise TypeError(f"payloads must be binary or string with offsets, not {data.type}")
    wide = data.type in (pa.large_binary(), pa.large_string())
    offsets = np.frombuffer(data.buffers()[1], np.int64 if wide else np.int32, n + 1, data.offset * (8 if wide else 4))
    found = np.zeros(n, bool)
    lo, hi = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
    if hi == lo:
        return found
    bounds = pa.py_buffer(np.array([0, hi - lo], np.int64 if wide else np.int32))
    whole = pa.Array.from_buffers(pa.large_binary() if wide else pa.binary(), 1,
                                  [None, bounds, data.buffers()[2].slice(lo, hi - lo)])
    pieces = pc.binary_length(pc.list_flatten(pc.split_pattern(whole, marker))).to_numpy()  # one more than matches
    hits = lo + np.cumsum(pieces[:-1], dtype=np.int64) + len(marker) * np.arange(len(pieces) - 1, dtype=np.int64)
    if len(hits):
        found[np.searchsorted(offsets, hits, "right") - 1] = True
        found[np.searchsorted(offsets, hits + len(marker) - 1, "right") - 1] = True
    return found
