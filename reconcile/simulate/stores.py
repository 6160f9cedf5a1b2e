"""Write a `Simulation` as the stores look in S3/SQS/CloudWatch (docs/design.md's table), plus the truth.

Event JSON is built here, per output object, by concatenating template pieces with pyarrow.compute (no json.dumps
per event): only one object's worth of JSON is in memory at a time. Every dynamic value is quote-free (ids, digits,
ISO times, vocabulary words), so the concatenation is valid JSON. Every file is written to a temp name and renamed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import uuid
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import atomic
from .generate import (CHANGES, COMMENT, CUSTOM, CUSTOM_FIELDS, CUSTOM_TYPES, FOREIGN, KINESIS, LEGACY, LEGACY_TYPES,
                       MALFORMED, NO_ID, WEBHOOK, WEBHOOK_TYPES, Simulation, iso_times)

ACCOUNT = "123456789012"
RULE_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/zendesk-to-kinesis"
KINESIS_ARN = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/zendesk-events"
LOGS_ARN = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/events/zendesk"
STREAM_NAME = "zendesk-events"
SEQ_PREFIX = "49" + "6543210987654321098765"  # Kinesis sequence numbers: 56 digits, increasing per shard
BLOCK_SIZE = 33_554_432
GZIP_LEVEL = 1  # the biggest store: level 1 is several times faster than the default, ~20% larger
# Records that are not Zendesk events (generate.MALFORMED, NO_ID, FOREIGN): a cut-off JSON document, one without
# "id" (SimParams.garbage_records), and a well-formed event of another producer (SimParams.bad_records).
MALFORMED_TEXT = '{"version":"0","id":"5e0f1c2a-3b4c-4d5e-8f60-7182930a4b5c","detail-type":"Support Ticket: Comm'
NO_ID_TEXT = ('{"version":"0","detail-type":"Support Ticket: Comment Created","source":"aws.partner/zendesk.com/'
              '9242270/default","account":"123456789012","time":"2026-01-01T00:00:00Z","region":"us-east-1",'
              '"resources":[],"detail":{}}')
FOREIGN_ID = "8c1f2e4a-6b3d-4f5e-9a70-1b2c3d4e5f60"
FOREIGN_SOURCE = "aws.events"
FOREIGN_TEXT = ('{"version":"0","id":"' + FOREIGN_ID + '","detail-type":"Scheduled Event","source":"' + FOREIGN_SOURCE
                + '","account":"123456789012","time":"2026-01-01T00:00:00Z","region":"us-east-1","resources":['
                '"arn:aws:events:us-east-1:123456789012:rule/nightly-export"],"detail":{}}')
BAD_TEXT = {MALFORMED: MALFORMED_TEXT, NO_ID: NO_ID_TEXT, FOREIGN: FOREIGN_TEXT}


def write_stores(sim: Simulation, out_dir: Path) -> dict:
    """Write `out_dir/stores/...` and `out_dir/truth.json` (+ truth.parquet); return what was written.

    `out_dir/stores` is replaced as a whole: names are random per seed, so stale objects would otherwise linger.
    """
    out_dir = Path(out_dir)
    stores = out_dir / "stores"
    if stores.exists():
        shutil.rmtree(stores)
    written = {
        "zendesk": _write_zendesk(sim, stores),
        "logs": _write_logs(sim, stores),
        "sink": _write_sink(sim, stores),
        "dlq": _write_dlq(sim, stores),
        "metrics": _write_metrics(sim, stores),
    }
    written["truth"] = _write_truth(sim, out_dir)
    return {"out_dir": str(out_dir), "stores": str(stores), **written}


# --- event JSON ------------------------------------------------------------------------------------------------------


def _join(*pieces) -> pa.Array:
    return pc.binary_join_element_wise(*pieces, "")


def _extras(r: pa.Table, comment: str, change_open: str, change_mid: str, change_close: str) -> pa.Array:
    kind = r["kind"].combine_chunks().to_numpy()
    change = np.isin(kind, CHANGES)
    ch = _join(change_open, pc.fill_null(r["previous"], ""), change_mid, pc.fill_null(r["value"], ""), change_close)
    # a custom field change names its field (PIPELINE.md §2; ZIS ticket events: custom_field {id, title, field_type})
    field = pa.array(r["field"].combine_chunks().to_numpy())
    custom = _join('"custom_field":{"id":', pc.take(pc.cast(pa.array(CUSTOM_FIELDS), pa.string()), field),
                   ',"title":"Field ', pc.cast(field, pa.string()), '","field_type":"',
                   pc.take(pa.array([t.lower() for t in CUSTOM_TYPES]), field), '"}')
    ch = pc.if_else(pa.array(kind == CUSTOM), _custom_change(custom, change_open, ch), ch)
    return pc.if_else(pa.array(change), ch, pc.if_else(pa.array(kind == COMMENT), comment, ""))


def _custom_change(custom: pa.Array, change_open: str, ch: pa.Array) -> pa.Array:
    """The change text with the custom_field object put before "previous" (legacy: trailing comma; webhook: leading)."""
    if change_open.startswith(","):
        return _join(",", custom, ch)
    return _join(custom, ",", ch)


def _legacy_type(r: pa.Table) -> pa.Array:
    """The legacy connector's type: a custom field change is "Custom Field Changed" (with custom_field.field_type)
    for some fields and a typed variant ("Custom Field Changed - Date", ...) for others, as the ZIS list names both."""
    kind = r["kind"].combine_chunks()
    field = r["field"].combine_chunks().to_numpy()
    typed = pc.take(pa.array([f"Custom Field Changed - {t}" for t in CUSTOM_TYPES]), pa.array(field))
    variant = pa.array((kind.to_numpy() == CUSTOM) & (field % 2 == 1))
    return pc.if_else(variant, typed, pc.take(pa.array(LEGACY_TYPES), kind))


def _common(r: pa.Table) -> dict:
    return {
        "eb": r["eb_id"], "tid": pc.cast(r["ticket_id"], pa.string()),
        "bus": iso_times(r["bus_ms"].to_numpy() // 1000, "s"),
        "pos": pc.cast(r["position"], pa.string()), "tot": pc.cast(r["total"], pa.string()),
        "seq": r["seq_id"],
    }


def _legacy_json(r: pa.Table, sim: Simulation) -> pa.Array:
    c = _common(r)
    typ = _legacy_type(r)
    occurred = iso_times(r["occurred_ns"].to_numpy(), "ns")
    extra = _extras(r, '"comment":{"is_public":true},', '"previous":"', '","current":"', '",')
    return _join(
        '{"version":"0","id":"', c["eb"], '","detail-type":"Support Ticket: ', typ, '","source":"',
        sim.params.legacy_source, f'","account":"{ACCOUNT}","time":"', c["bus"],
        '","region":"us-east-1","resources":["Support Ticket"],"detail":{"ticket_event":{"meta":{"version":"1.0",'
        '"occurred_at":"', occurred, '","sequence":{"id":"', c["seq"], '","position":', c["pos"], ',"total":',
        c["tot"], '},"actor_id":', pc.cast(r["actor_id"], pa.string()), '},"type":"', typ, '",', extra,
        '"ticket":{"id":', c["tid"], ',"updated_at":"', occurred, '"}}}}')


def _webhook_json(r: pa.Table, sim: Simulation) -> pa.Array:
    c = _common(r)
    typ = pc.take(pa.array(WEBHOOK_TYPES), r["kind"])
    extra = _extras(r, ',"comment":{"is_public":true}', ',"previous":"', '","current":"', '"')
    return _join(
        '{"version":"0","id":"', c["eb"], '","detail-type":"', sim.params.webhook_detail_type, '","source":"',
        sim.params.webhook_source, f'","account":"{ACCOUNT}","time":"', c["bus"],
        '","region":"us-east-1","resources":[],"detail":{"type":"zen:event-type:ticket.', typ,
        '","account_id":12514403,"id":"', pc.cast(r["zendesk_id"], pa.string()), '","time":"',
        iso_times(r["created_s"].to_numpy(), "s"), '","zendesk_event_version":"2022-11-06","subject":"zen:ticket:',
        c["tid"], '","detail":{"id":"', c["tid"], '"},"event":{"meta":{"sequence":{"id":"', c["seq"],
        '","position":', c["pos"], ',"total":', c["tot"], '}}', extra, '}}}')


def _scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """Put each part's values at its positions: parts' positions partition range(n)."""
    parts = [(pos, arr) for pos, arr in parts if len(pos)]
    inv = np.empty(n, dtype=np.int64)
    inv[np.concatenate([pos for pos, _ in parts])] = np.arange(n)
    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for _, a in parts]
    return pa.concat_arrays([a.cast(pa.string()) for a in arrays]).take(pa.array(inv))


def event_json(sim: Simulation, bus_idx: np.ndarray, replay: np.ndarray | None = None,
               bad: np.ndarray | None = None) -> pa.Array:
    """The EventBridge event JSON for rows `bus_idx` of `sim.bus` (replay rows get a top-level "replay-name";
    `bad`: 0 = the event, else a code of BAD_TEXT: generate.MALFORMED, NO_ID, FOREIGN)."""
    bus_idx = np.asarray(bus_idx)
    n = len(bus_idx)
    bad = np.zeros(n, dtype=np.int8) if bad is None else np.asarray(bad)
    fam = np.full(n, -1, dtype=np.int8)
    fam[bad == 0] = sim.bus["family"].to_numpy()[bus_idx[bad == 0]]
    parts = []
    for family, build in ((LEGACY, _legacy_json), (WEBHOOK, _webhook_json)):
        pos = np.flatnonzero(fam == family)
        if len(pos):
            parts.append((pos, build(sim.bus.take(pa.array(bus_idx[pos])), sim)))
    for code, text in BAD_TEXT.items():
        pos = np.flatnonzero(bad == code)
        parts.append((pos, pa.array([text] * len(pos), pa.string())))
    js = _scatter(n, parts)
    if replay is not None and np.any(replay):
        tagged = _join(f'{{"replay-name":"{sim.params.replay_name}",', pc.utf8_slice_codeunits(js, 1))
        js = pc.if_else(pa.array(np.asarray(replay)), tagged, js)
    return js


# --- writers ---------------------------------------------------------------------------------------------------------


# Temp names are dot-files: the stores' readers (Spark's, ours) skip them while they are written.

def _atomic_bytes(path: Path, data) -> int:
    return atomic.write_bytes(path, data, hidden=True).stat().st_size


def _atomic_parquet(table: pa.Table, path: Path, compression: str) -> int:
    with atomic.replacing(path, hidden=True) as tmp:
        pq.write_table(table, tmp, compression=compression)
    return path.stat().st_size


def _text_bytes(arr: pa.Array) -> memoryview:
    """The concatenation of a string array's values, straight from its data buffer."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    assert arr.null_count == 0, "a null piece made a null line"
    arr = arr.cast(pa.large_string())
    offs = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    return memoryview(arr.buffers()[2])[offs[0]:offs[-1]]


def _write_zendesk(sim: Simulation, stores: Path) -> dict:
    path = stores / "zendesk" / "ticket_events.parquet"
    _atomic_parquet(sim.audits, path, "zstd")
    children = pc.list_value_length(sim.audits["child_events"])
    return {"path": str(path), "audits": sim.audits.num_rows, "child_events": int(pc.sum(children).as_py() or 0)}


def _write_logs(sim: Simulation, stores: Path) -> dict:
    """CloudWatch Logs S3 export: exports/<random folder>/<logStream>/000000.gz, one `<ISO ts> <json>` a line."""
    root = stores / "logs-archive" / "exports"
    _atomic_bytes(root / "aws-logs-write-test", b"Permission Check Successful")
    log = sim.log
    stream = log["stream"].to_numpy()
    objects, lines = [], 0
    step = sim.params.log_object_lines
    for s in range(sim.params.log_streams):
        rows = np.flatnonzero(stream == s)
        for k, lo in enumerate(range(0, len(rows), step)):
            chunk = log.take(pa.array(rows[lo:lo + step]))
            ts = iso_times(chunk["ts_ms"].to_numpy(), "ms")
            js = event_json(sim, chunk["bus_idx"].to_numpy(), chunk["replay"].to_numpy(), chunk["bad"].to_numpy())
            text = _join(ts, " ", js, "\n")
            path = root / sim.names["folders"][s] / sim.names["streams"][s] / f"{k:06d}.gz"
            _atomic_bytes(path, gzip.compress(_text_bytes(text), compresslevel=GZIP_LEVEL, mtime=0))
            objects.append(str(path))
            lines += chunk.num_rows
    return {"root": str(root), "objects": objects, "lines": lines, "streams": sim.params.log_streams}


COMPACT_INTERVAL = 10  # spark.sql.streaming.fileSink.log.compactInterval's default


def spark_log(entries: dict[int, list[str]]) -> dict[str, bytes]:
    """Spark's file-sink commit log (PIPELINE.md §6) for the entry lines each batch id committed: one file per batch
    id, consecutive, and every COMPACT_INTERVAL batches an `N.compact` holding all entries so far instead. The stream
    ran before the simulated days: the compact just before the first batch stands for that history (files out of
    range, so it lists none)."""
    first = min(entries, default=0)
    so_far: list[str] = []
    out = {}
    for batch in range(first - first % COMPACT_INTERVAL - 1 if first >= COMPACT_INTERVAL else 0,
                       max(entries, default=-1) + 1):
        so_far += entries.get(batch, [])
        compact = (batch + 1) % COMPACT_INTERVAL == 0
        body = "".join(["v1"] + ["\n" + e for e in (so_far if compact else entries.get(batch, []))])
        out[f"{batch}.compact" if compact else str(batch)] = body.encode()
    return out


def spark_log_entries(files: dict[str, bytes]) -> dict[int, list[str]]:
    """The entry lines each batch committed, from a log spark_log wrote (file name -> content): a compact's own batch
    gets the entries no earlier file listed."""
    out: dict[int, list[str]] = {}
    seen: set[str] = set()
    for name in sorted(files, key=lambda n: int(n.split(".")[0])):
        lines = [line for line in files[name].decode().split("\n")[1:] if line]
        out[int(name.split(".")[0])] = [x for x in lines if x not in seen] if name.endswith(".compact") else lines
        seen.update(lines)
    return out


def _write_sink(sim: Simulation, stores: Path) -> dict:
    """Spark's Parquet output by arrival hour, one file per (micro-batch, task), and the _spark_metadata log."""
    root = stores / "spark-output" / "events"
    sink = sim.sink.sort_by([("batch_id", "ascending"), ("copy", "ascending"), ("part", "ascending"),
                             ("arrival_ms", "ascending")])
    key = (sink["batch_id"].to_numpy().astype(np.int64) * 1_000_000 + sink["copy"].to_numpy().astype(np.int64) * 1000
           + sink["part"].to_numpy())
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1, [len(key)]])
    eb = sim.bus["eb_id"]
    bad_key = str(uuid.UUID(hashlib.md5(f"bad-sink-{sim.params.seed}".encode()).hexdigest()))
    commits: dict[int, list[dict]] = {}
    files, uncommitted = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        t = sink.slice(lo, hi - lo)
        bus_idx = t["bus_idx"].to_numpy()
        bad = _bad_codes(bus_idx)
        data = event_json(sim, np.maximum(bus_idx, 0), t["replay"].to_numpy(), bad)
        key_col = pc.if_else(pa.array(bad == 0), pc.take(eb, pa.array(np.maximum(bus_idx, 0))),
                             pc.if_else(pa.array(bad == FOREIGN), FOREIGN_ID, bad_key))
        table = pa.table({
            "data": data.cast(pa.binary()),
            "streamName": pa.repeat(pa.scalar(STREAM_NAME), t.num_rows),
            "partitionKey": key_col,
            "sequenceNumber": _join(SEQ_PREFIX, pc.utf8_lpad(pc.cast(t["seq"], pa.string()), 32, "0")),
            "approximateArrivalTimestamp": t["arrival_ms"].cast(pa.timestamp("ms", tz="UTC")),
        })
        rel = t["path"][0].as_py()
        path = root / rel
        size = _atomic_parquet(table, path, "snappy")
        files.append(str(path))
        if t["committed"][0].as_py():
            commits.setdefault(int(t["batch_id"][0].as_py()), []).append({
                "path": f"s3://spark-output/events/{rel}", "size": size, "isDir": False,
                "modificationTime": int(t["commit_ms"][0].as_py()), "blockReplication": 1, "blockSize": BLOCK_SIZE,
                "action": "add"})
        else:
            uncommitted.append(str(path))
    meta = []
    lines = {b: [orjson.dumps(e).decode() for e in entries] for b, entries in commits.items()}
    for name, body in spark_log(lines).items():
        path = root / "_spark_metadata" / name
        _atomic_bytes(path, body)
        meta.append(str(path))
    return {"root": str(root), "files": files, "rows": sink.num_rows, "uncommitted_files": uncommitted,
            "metadata": meta}


def _bad_codes(bus_idx: np.ndarray) -> np.ndarray:
    """A sink row's or DLQ message's BAD_TEXT code: its bus_idx is -code when it is no bus event."""
    return np.where(bus_idx < 0, -bus_idx, 0).astype(np.int8)


def _write_dlq(sim: Simulation, stores: Path) -> dict:
    """An S3 archive of the DLQ: one SQS ReceiveMessage message a line (PIPELINE.md §4)."""
    dlq = sim.dlq
    bus_idx = dlq["bus_idx"].to_numpy()
    bad = _bad_codes(bus_idx)
    bodies = event_json(sim, np.maximum(bus_idx, 0), None, bad).to_pylist() if dlq.num_rows else []
    cols = {k: dlq[k].to_pylist() for k in ("message_id", "sent_ms", "target", "error_code", "error_message",
                                             "condition", "attempts")}
    out = bytearray()
    for i, body in enumerate(bodies):  # the DLQ is small: a loop is fine here
        mid = cols["message_id"][i]
        handle = "AQEB" + base64.b64encode(hashlib.sha256(mid.encode()).digest() * 3).decode()

        def attr(v):
            return {"DataType": "String", "StringValue": str(v)}

        out += orjson.dumps({
            "MessageId": mid, "ReceiptHandle": handle, "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
            "Body": body,
            "Attributes": {"SentTimestamp": str(cols["sent_ms"][i]), "ApproximateReceiveCount": "1"},
            "MessageAttributes": {
                "RULE_ARN": attr(RULE_ARN),
                "TARGET_ARN": attr(KINESIS_ARN if cols["target"][i] == KINESIS else LOGS_ARN),
                "ERROR_CODE": attr(cols["error_code"][i]), "ERROR_MESSAGE": attr(cols["error_message"][i]),
                "EXHAUSTED_RETRY_CONDITION": attr(cols["condition"][i]), "RETRY_ATTEMPTS": attr(cols["attempts"][i]),
            },
        }) + b"\n"
    path = stores / "dlq-archive" / "messages.jsonl"
    _atomic_bytes(path, bytes(out))
    return {"path": str(path), "messages": len(bodies)}


def _write_metrics(sim: Simulation, stores: Path) -> dict:
    path = stores / "metrics" / "get-metric-data.json"
    _atomic_bytes(path, orjson.dumps(sim.metrics, option=orjson.OPT_INDENT_2))
    return {"path": str(path), "series": len(sim.metrics["MetricDataResults"])}


def _write_truth(sim: Simulation, out_dir: Path) -> dict:
    pq_path = out_dir / "truth.parquet"
    _atomic_parquet(sim.truth, pq_path, "zstd")
    doc = orjson.dumps(sim.summary)
    if sim.params.truth_json and sim.truth.num_rows:
        doc = doc[:-1] + b',"events":{' + _truth_events(sim.truth) + b"}}"
    json_path = out_dir / "truth.json"
    _atomic_bytes(json_path, doc)
    return {"json": str(json_path), "parquet": str(pq_path), "events": sim.truth.num_rows}


def _truth_events(t: pa.Table) -> bytes:
    """`"<source_id>":{"verdict":…,"fate":…,"eb_id":…,"cause":…,"faults":[…]}` joined by commas, built
    column-wise (values are ids and vocabulary words: nothing to escape)."""
    def quoted(col):
        return pc.fill_null(_join('"', t[col], '"'), "null")

    faults = pc.binary_join(t["faults"], '","')
    faults = pc.if_else(pc.equal(pc.list_value_length(t["faults"]), 0), "[]", _join('["', faults, '"]'))
    entries = _join('"', t["source_id"], '":{"verdict":', quoted("verdict"), ',"fate":', quoted("fate"),
                    ',"eb_id":', quoted("eb_id"), ',"cause":', quoted("cause"), ',"faults":', faults, "},")
    return bytes(_text_bytes(entries))[:-1]
