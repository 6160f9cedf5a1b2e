"""Build tiny ledgers for SQL tests: rows as dicts, times as 'HH:MM:SS[.fff]' on the test day or full ISO."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from reconcile import ledger

DAY = datetime(2026, 11, 23, tzinfo=timezone.utc)


def at(text: str) -> datetime:
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    h, m, s = text.split(":")
    return DAY + timedelta(hours=int(h), minutes=int(m), seconds=float(s))


def make(hop: str, rows: list[dict]) -> pa.Table:
    out = []
    for r in rows:
        r = dict(r, hop=hop)
        for k in ("event_time", "observed_at"):
            if isinstance(r.get(k), str):
                r[k] = at(r[k])
        out.append(r)
    if not out:
        return ledger.empty()
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in ledger.SCHEMA} for r in out], schema=ledger.SCHEMA)


def write(tmp: Path, hop: str, rows: list[dict]) -> Path:
    return ledger.write_atomic(make(hop, rows), tmp / f"{hop}.parquet")
