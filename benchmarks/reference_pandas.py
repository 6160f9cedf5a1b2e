"""The plain pandas script a user would otherwise write for the same joins: the reference bench.py compares with.

    .venv/bin/python benchmarks/reference_pandas.py bench-out/sim-1000000/stores

Reads every store with pandas (the bus log line by line with gzip + json.loads, the sink's `data` and the DLQ's
`Body` with json.loads), links Zendesk child events to EventBridge ids (webhook family on the Zendesk event id;
legacy connector events on ticket, kind and time within 10 s, via merge), and counts per verdict: duplicated,
delivered, dead-lettered, lost after the bus, lost before it. It skips what a quick script would skip (pending
horizons, sequence positions, ambiguity, commit logs, rejects): it is the lower bound of what such a script costs,
not a second implementation of the verdict rules.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import pandas as pd

TOLERANCE_S = 10
EXCLUDED = {"Notification"}
KIND_MAP = Path(__file__).resolve().parents[1] / "queries" / "emission_model.csv"


def reconcile(stores: Path) -> dict:
    # Zendesk: one row per child event
    audits = pd.read_parquet(stores / "zendesk" / "ticket_events.parquet",
                             columns=["id", "ticket_id", "created_at", "child_events"])
    audits = audits.explode("child_events").dropna(subset=["child_events"])
    child = pd.DataFrame(audits["child_events"].tolist(), index=audits.index)
    zd = pd.DataFrame({"source_id": child["id"].astype("int64"), "ticket_id": audits["ticket_id"],
                       "event_time": pd.to_datetime(audits["created_at"], utc=True)})
    zd["kind"] = child["event_type"].where(~((child["event_type"] == "Change") & child["field_name"].notna()),
                                           "Change:" + child["field_name"].fillna(""))
    day = zd["event_time"].dt.floor("D").mode()[0]
    zd = zd[(zd["event_time"] >= day) & (zd["event_time"] < day + pd.Timedelta(days=1))]
    zd = zd[~zd["kind"].isin(EXCLUDED)]

    # bus log: `<ts> <json>` lines in gzip objects
    rows = []
    for path in sorted((stores / "logs-archive" / "exports").rglob("*.gz")):
        with gzip.open(path, "rt") as f:
            for line in f:
                ts, _, body = line.partition(" ")
                try:
                    ev = json.loads(body)
                except ValueError:
                    continue
                rows.append(_fields(ev))
    bus = pd.DataFrame(rows).dropna(subset=["eb_id"])

    # sink: Spark's parquet output, `data` is the event JSON
    sink_raw = pd.read_parquet(stores / "spark-output" / "events", columns=["data", "partitionKey"])
    sink = pd.DataFrame([_fields(_loads(d)) for d in sink_raw["data"]])
    sink["eb_id"] = sink_raw["partitionKey"].values

    # DLQ archive: one SQS message a line
    dlq_raw = pd.read_json(stores / "dlq-archive" / "messages.jsonl", lines=True)
    dlq = pd.DataFrame([_fields(_loads(b)) for b in dlq_raw["Body"]])
    dlq["target"] = [m["TARGET_ARN"]["StringValue"] for m in dlq_raw["MessageAttributes"]]
    dlq = dlq[dlq["target"].str.contains(":kinesis:")]

    # hop A: exact on the Zendesk event id (webhook), composite key otherwise (legacy)
    aws = pd.concat([bus, sink, dlq[bus.columns]]).drop_duplicates("eb_id")
    aws["event_time"] = pd.to_datetime(aws["event_time"], utc=True, format="ISO8601")
    kinds = pd.read_csv(KIND_MAP).dropna(subset=["bus_type"])[["api_kind", "bus_type"]]
    webhook = aws[aws["family"] == "webhook"]
    exact = zd.merge(webhook[["zendesk_key", "eb_id"]].assign(source_id=lambda d: pd.to_numeric(d["zendesk_key"])),
                     on="source_id")[["source_id", "eb_id"]]
    legacy = aws[aws["family"] == "legacy"].merge(kinds, left_on="event_type", right_on="bus_type")
    rest = zd[~zd["source_id"].isin(exact["source_id"])]
    cand = rest.merge(legacy, left_on=["ticket_id", "kind"], right_on=["ticket_id", "api_kind"],
                      suffixes=("", "_bus"))
    cand = cand[(cand["event_time_bus"] - cand["event_time"]).abs() <= pd.Timedelta(seconds=TOLERANCE_S)]
    cand = cand.drop_duplicates("source_id").drop_duplicates("eb_id")
    links = pd.concat([exact, cand[["source_id", "eb_id"]]])

    # verdicts
    sink_rows = sink["eb_id"].value_counts()
    links["sink_rows"] = links["eb_id"].map(sink_rows).fillna(0)
    links["dlq"] = links["eb_id"].isin(dlq["eb_id"])
    per = links.groupby("source_id").agg(sink_rows=("sink_rows", "sum"), dlq=("dlq", "any"),
                                         eb_ids=("eb_id", "count"))
    verdict = pd.Series("lost_before_bus", index=zd["source_id"].values)
    v = per.reindex(verdict.index)
    verdict[v["eb_ids"].notna()] = "lost_after_bus"
    verdict[v["dlq"].fillna(False).astype(bool)] = "dead_lettered"
    verdict[v["sink_rows"] == 1] = "delivered"
    verdict[(v["sink_rows"] > 1) | (v["eb_ids"] > 1)] = "duplicated"
    return {k: int(n) for k, n in verdict.value_counts().items()}


def _loads(data):
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        return {}


def _fields(ev: dict) -> dict:
    detail = ev.get("detail") or {}
    te = detail.get("ticket_event")
    if te:
        return {"eb_id": ev.get("id"), "family": "legacy", "zendesk_key": None, "ticket_id": te["ticket"]["id"],
                "event_type": te.get("type"), "event_time": te["meta"]["occurred_at"]}
    subject = detail.get("subject") or ""
    return {"eb_id": ev.get("id"), "family": "webhook", "zendesk_key": detail.get("id"),
            "ticket_id": int(subject.rsplit(":", 1)[-1]) if subject[-1:].isdigit() else None,
            "event_type": detail.get("type"),
            "event_time": detail.get("time")}


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(stores: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    verdicts = reconcile(stores)
    return {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3),
            "rss_peak_mb": round(_peak_rss() / 2**20, 1), "verdicts": verdicts}


if __name__ == "__main__":
    print(measure(Path(sys.argv[1])))
