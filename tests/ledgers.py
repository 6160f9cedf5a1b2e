"""Build tiny ledgers for SQL tests: rows as dicts, times as 'HH:MM:SS[.fff]' on the test day or full ISO, EventBridge
ids as short labels ("A", "eb-x") that uid() turns into the UUIDs a ledger holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import re
import uuid

import pyarrow as pa

from reconcile import ledger

DAY = datetime(2026, 11, 23, tzinfo=timezone.utc)
# where a run's sink read starts ($sink_read_start): far enough back for every carried event of the tests
SINK_FROM = DAY - timedelta(days=7)
# The queries' parameters for DAY judged by hand (run.params makes a run's): as of 02:00 the next day, horizon 3 h,
# hop-A grace 5 min, tolerance 10 s, every store read whole. stream_retention 0: the stream keeps nothing past
# EventBridge's retries, so the sink's reach holds no loss (rules.sql beyond_sink; its own tests give a retention).
PARAMS = dict(window_start=DAY, window_end=DAY + timedelta(days=1), as_of=DAY + timedelta(hours=26),
              horizon=timedelta(hours=3), hop_a_grace=timedelta(minutes=5), tolerance_s=10.0, both_families=False,
              kinesis_target=":kinesis:", bucket_s=3600, unsettled_zendesk_to_bus=None, unsettled_bus_to_sink=None,
              dlq_reach=None, dlq_in_part=None, bus_log_covered=None, unexpired_files=[], sink_read_start=SINK_FROM,
              bus_read_start=DAY - timedelta(hours=1), outside_log="expired", stream_retention=timedelta(0))


def at(text: str) -> datetime:
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    h, m, s = text.split(":")
    return DAY + timedelta(hours=int(h), minutes=int(m), seconds=float(s))


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def uid(label: str | None) -> str | None:
    """The UUID a test's EventBridge id label stands for (a UUID stays itself). Labels of up to 16 bytes are spelled
    out in hex, so ids sort as their labels do; longer ones are hashed."""
    if label is None or _UUID.fullmatch(label):
        return label
    raw = label.encode()
    return str(uuid.UUID(bytes=raw.ljust(16, b"\0")) if len(raw) <= 16 else uuid.uuid5(uuid.NAMESPACE_URL, label))


def label(text):
    """The label a UUID made by uid() stands for (anything else is returned as it is): tests compare results
    against their labels."""
    if isinstance(text, uuid.UUID):
        text = str(text)
    if not isinstance(text, str) or not _UUID.fullmatch(text):
        return text
    raw = uuid.UUID(text).bytes.rstrip(b"\0")
    return raw.decode() if raw and all(32 < b < 127 for b in raw) else text


def labels(column) -> list:
    """A ledger's (or an output's) eb_id column as the test's labels."""
    return [label(v) for v in column.to_pylist()]


def make(hop: str, rows: list[dict]) -> pa.Table:
    out = []
    for r in rows:
        r = dict(r, hop=hop)
        if r.get("eb_id") is not None:
            r["eb_id"] = uid(r["eb_id"])
        for k in ("event_time", "observed_at"):
            if isinstance(r.get(k), str):
                r[k] = at(r[k])
        out.append(r)
    if not out:
        return ledger.empty()
    text = pa.schema([f.with_type(pa.string()) if f.name == "eb_id" else f for f in ledger.SCHEMA])
    return ledger.conform(pa.Table.from_pylist([{f.name: r.get(f.name) for f in ledger.SCHEMA} for r in out],
                                               schema=text))


def write(tmp: Path, hop: str, rows: list[dict]) -> Path:
    return ledger.write_atomic(make(hop, rows), tmp / f"{hop}.parquet")
