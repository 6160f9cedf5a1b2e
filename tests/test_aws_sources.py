"""AWS sources (bus log, sink, DLQ, metrics) against moto's server over HTTP, and the same readers on local paths."""

from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from isal import igzip

from reconcile import completeness, summary
from reconcile.aws import make_client, session, store_error
from reconcile.config import AwsConfig, BusLogConfig, DlqConfig, MetricsConfig, SinkConfig
from reconcile.errors import SourceError
from reconcile.simulate.aws_load import load_stores, start_moto
from reconcile.sources import buslog, dlq, events, metrics, sink

from ledgers import label, labels, uid
from busevents import HOUR0, NOW, WINDOW, dlq_attrs, fill_queue, iso, legacy, queue_count, webhook

LOCAL = AwsConfig()


def reasons(result) -> list[str]:
    return result.rejects["reason"].to_pylist()


def s3_put(aws, bucket, files: dict[str, bytes]):
    s3 = make_client("s3", aws)
    s3.create_bucket(Bucket=bucket)
    for k, v in files.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    return s3


def write_local(root, files: dict[str, bytes]):
    for k, v in files.items():
        p = root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(v)


def place(where, request, tmp_path, bucket: str, files: dict[str, bytes], path: str):
    """Put `files` in moto's S3 bucket or in a local folder; return (uri of `path` there, AwsConfig)."""
    if where == "s3":
        aws = request.getfixturevalue("aws_cfg")
        s3_put(aws, bucket, files)
        return f"s3://{bucket}/{path}", aws
    write_local(tmp_path, files)
    return str(tmp_path / path), LOCAL


# ---------------------------------------------------------------- events.py


def test_events_parse_both_families_and_rejects():
    raw = pa.array([legacy("L1"), webhook("W1", "901", 8), "not json", json.dumps({"detail": {}}),
                    json.dumps({"id": "X", "source": "aws.s3", "detail": {}}),
                    json.dumps({"id": uid("T"), "detail": {"type": "zen:event-type:a", "time": "soon"}})])
    led, rej = events.parse(raw, pa.array([f"r{i}" for i in range(6)]), hop="bus", source="bus_log")
    rows = {label(r["eb_id"]): r for r in led.to_pylist()}
    assert rows["L1"]["family"] == "legacy" and rows["L1"]["ticket_id"] == 35436
    assert rows["L1"]["event_type"] == "Comment Created" and rows["L1"]["sequence_id"] == "SEQ1"
    assert rows["L1"]["sequence_position"] == 2 and rows["L1"]["zendesk_key"] is None
    assert rows["L1"]["event_time"] == NOW + timedelta(milliseconds=123)
    assert rows["W1"]["family"] == "webhook" and rows["W1"]["zendesk_key"] == "901" and rows["W1"]["ticket_id"] == 8
    assert rej["source_ref"].to_pylist() == ["r2", "r3", "r4", "r5"]
    r = rej["reason"].to_pylist()
    assert r[0] == "not JSON" and r[1] == "event has no id"
    assert r[2].startswith("not a Zendesk event") and '"aws.s3"' in r[2]
    assert r[3] == 'bad event time "soon" at detail.time (not an ISO-8601 date and time)'
    assert rej["raw"][0].as_py() == "not json"


# ---------------------------------------------------------------- bus log: CloudWatch export


def test_bus_log_export_written_by_moto_create_export_task(aws_cfg):
    s3 = s3_put(aws_cfg, "logs-archive", {"exports/aws-logs-write-test": b"Permission Check Successful"})
    logs = make_client("logs", aws_cfg)
    logs.create_log_group(logGroupName="/aws/events/zendesk")
    logs.create_log_stream(logGroupName="/aws/events/zendesk", logStreamName="s1")
    t0 = int(NOW.timestamp() * 1000)
    msgs = [legacy("L1"), webhook("W1"), "not json at all", json.dumps({"detail": {"type": "zen:event-type:x"}})]
    logs.put_log_events(logGroupName="/aws/events/zendesk", logStreamName="s1",
                        logEvents=[{"timestamp": t0 + i, "message": m} for i, m in enumerate(msgs)])
    logs.create_export_task(logGroupName="/aws/events/zendesk", fromTime=t0 - 1000, to=t0 + 1000,
                            destination="logs-archive", destinationPrefix="exports")
    res = buslog.read(BusLogConfig(uri="s3://logs-archive/exports"), WINDOW, aws_cfg)
    assert res.name == "bus_log" and res.complete, res.problems
    assert sorted(labels(res.ledger["eb_id"])) == ["L1", "W1"]
    assert set(res.ledger["hop"].to_pylist()) == {"bus"}
    key = [o["Key"] for o in s3.list_objects_v2(Bucket="logs-archive")["Contents"] if o["Key"].endswith(".gz")][0]
    assert res.ledger["source_id"].to_pylist() == [f"{key}:1", f"{key}:2"]
    assert res.ledger["observed_at"][0].as_py().replace(microsecond=0) == NOW
    assert reasons(res) == ["not JSON", "event has no id"]
    assert res.rejects["source_ref"].to_pylist() == [f"{key}:3", f"{key}:4"]
    assert res.details["objects"] == 1 and res.details["skipped_objects"] == 1
    assert res.fingerprints[0]["key"] == f"s3://logs-archive/{key}" and res.fingerprints[0]["etag"]
    # what the export proves: what was exportable when its newest object was written (12 h lag, or the config's)
    written = datetime.fromisoformat(res.details["newest_object_at"])
    assert abs(written - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert buslog.covered(res.details, BusLogConfig()) == written - timedelta(hours=12)
    assert buslog.covered(res.details, BusLogConfig(export_lag="1h")) == written - timedelta(hours=1)
    assert buslog.covered({"format": "api"}, BusLogConfig(format="api")) is None


def export_gz(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_bus_log_truncated_gzip_keeps_lines_before_damage(tmp_path):
    good = export_gz([f"{iso(NOW)} {legacy('A1')}", f"{iso(NOW)} {legacy('A2')}"])
    big = export_gz([f"{iso(NOW)} {legacy(f'B{i}')}" for i in range(2000)])
    write_local(tmp_path, {"t1/s/000000.gz": good, "t1/s/000001.gz": big[: len(big) // 2]})
    res = buslog.read(BusLogConfig(uri=str(tmp_path)), WINDOW, LOCAL)
    assert not res.complete
    assert "000001.gz" in res.problems[0] and "truncated" in res.problems[0]
    ids = labels(res.ledger["eb_id"])
    assert ids[:2] == ["A1", "A2"] and 10 < len(ids) - 2 < 2000  # the lines before the damage are kept
    assert ids[2:] == [f"B{i}" for i in range(len(ids) - 2)]
    assert any("000001.gz" in r and "truncated" in r for r in reasons(res))


def test_bus_log_lines_not_json_and_without_id_local(tmp_path):
    write_local(tmp_path, {"x/s/000000.gz": export_gz(
        [f"{iso(NOW)} {webhook('W1')}", f"{iso(NOW)} {{broken", "no timestamp here", f"{iso(NOW)} {{}}"])})
    res = buslog.read(BusLogConfig(uri=str(tmp_path)), WINDOW, LOCAL)
    assert res.complete and labels(res.ledger["eb_id"]) == ["W1"]
    assert reasons(res) == ["not JSON", "not a CloudWatch export line (<ISO-8601 timestamp> <event json>)",
                            "event has no id"]


# ---------------------------------------------------------------- bus log: Firehose


def firehose_object(records: list[dict]) -> bytes:
    # Firehose concatenates records with no separator; CloudWatch gzips each one: a multi-member gzip.
    return b"".join(gzip.compress(json.dumps(r, separators=(",", ":")).encode()) for r in records)


def data_record(events_: list[tuple[str, int, str]]) -> dict:
    return {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/events/zendesk",
            "logStream": "s1", "subscriptionFilters": ["to-firehose"],
            "logEvents": [{"id": i, "timestamp": t, "message": m} for i, t, m in events_]}


@pytest.mark.parametrize("where", ["s3", "local"])
def test_bus_log_firehose_multi_member_with_control_message(where, request, tmp_path):
    t0 = int(NOW.timestamp() * 1000)
    control = {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "",
               "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": t0, "message": "CWL CONTROL MESSAGE"}]}
    obj = firehose_object([control, data_record([("e1", t0, legacy("L1")), ("e2", t0 + 5, webhook("W1"))]),
                           data_record([("e3", t0 + 9, "}{not json")])])
    # Two records in one gzip member too, back to back.
    obj += gzip.compress(json.dumps(data_record([("e4", t0, webhook("W2"))])).encode()
                         + json.dumps(data_record([("e5", t0, webhook("W3"))])).encode())
    uri, aws = place(where, request, tmp_path, "fh-bucket", {"2026/11/23/05/stream-1-2026-11-23-05-00-00-abc": obj},
                     "2026")
    res = buslog.read(BusLogConfig(uri=uri, format="firehose"), WINDOW, aws)
    assert res.complete, res.problems
    assert labels(res.ledger["eb_id"]) == ["L1", "W1", "W2", "W3"]
    assert res.ledger["source_id"].to_pylist() == ["e1", "e2", "e4", "e5"]
    assert res.ledger["observed_at"][1].as_py() == datetime.fromtimestamp((t0 + 5) / 1000, timezone.utc)
    assert reasons(res) == ["not JSON"] and res.rejects["source_ref"][0].as_py().endswith("#e3")
    assert res.details["records_control"] == 1 and res.details["records_data"] == 4


def test_a_firehose_object_with_a_corrupt_member_keeps_every_record_before_it(tmp_path):
    """Records CloudWatch gzipped one by one, then a corrupt member: the damage falls between records, so the last
    record before it is whole and kept (the cut at the last newline put it with the damage: "kept 2" of 3)."""
    t0 = int(NOW.timestamp() * 1000)
    good = firehose_object([data_record([(f"e{i}", t0, legacy(f"L{i}"))]) for i in range(3)])
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc").write_bytes(good + b"\x1f\x8b\x08\x00garbage-not-deflate")
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose"), WINDOW, AwsConfig())
    assert not res.complete
    assert labels(res.ledger["eb_id"]) == ["L0", "L1", "L2"]
    assert any("kept the 3 records read before it" in p for p in res.problems), res.problems


def test_a_firehose_delivery_compressed_by_firehose_too_is_read(tmp_path):
    """A delivery stream with GZIP compression gzips the object whose records CloudWatch gzipped already: two layers.
    One inflated left gzip bytes, every record rejected as "not JSON" and the read incomplete."""
    t0 = int(NOW.timestamp() * 1000)
    inner = firehose_object([data_record([("e1", t0, legacy("L1"))]), data_record([("e2", t0, webhook("W1"))])])
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc.gz").write_bytes(gzip.compress(inner))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose"), WINDOW, AwsConfig())
    assert res.complete and res.rejects.num_rows == 0, res.problems
    assert labels(res.ledger["eb_id"]) == ["L1", "W1"]


def test_a_firehose_object_gzipped_twice_and_cut_short_keeps_the_records_before_the_cut(tmp_path):
    """Firehose's GZIP over CloudWatch's, the outer layer cut short: the records inflated before the cut are read
    (the still-compressed bytes were parsed as text: thousands of binary 'not JSON' rejects, no event kept, and
    'kept N records' counting them)."""
    t0 = int(NOW.timestamp() * 1000)
    records = [data_record([(f"e{i}-{j}", t0, legacy(f"R{i}-{j}")) for j in range(5)]) for i in range(400)]
    inner = firehose_object(records)
    outer = gzip.compress(inner)
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc").write_bytes(outer[: len(outer) * 3 // 4])
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose"), WINDOW, AwsConfig())
    assert not res.complete
    got = labels(res.ledger["eb_id"])
    records_kept = len(got) // 5
    assert 100 < records_kept < 400 and got == [f"R{i}-{j}" for i in range(records_kept) for j in range(5)]
    assert reasons(res)[:-1] == [] and res.rejects["kind"].to_pylist() == ["unreadable_unit"]
    assert f"kept the {records_kept:,} records read before it" in res.problems[0], res.problems


def test_a_firehose_object_cut_short_counts_the_records_it_kept_not_their_log_events(tmp_path):
    """Records of five log events each, the ninth member corrupt: eight records kept (it said 40)."""
    t0 = int(NOW.timestamp() * 1000)
    members = [gzip.compress(json.dumps(data_record([(f"e{i}-{j}", t0, legacy(f"C{i}-{j}")) for j in range(5)]),
                                        separators=(",", ":")).encode()) for i in range(12)]
    members[8] = members[8][:10] + b"\xff" * 40  # a valid header, then no deflate stream
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc").write_bytes(b"".join(members))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose"), WINDOW, AwsConfig())
    assert not res.complete and res.ledger.num_rows == 40
    assert "kept the 8 records read before it" in res.problems[0], res.problems


def test_firehose_records_that_can_hold_events_but_show_none_are_rejects(tmp_path):
    """A DATA_MESSAGE without its logEvents list, or a messageType CloudWatch does not write, may have held events:
    each is a reject naming the record, never a record read as empty (a CONTROL_MESSAGE holds none: it is skipped)."""
    t0 = int(NOW.timestamp() * 1000)
    no_list = {k: v for k, v in data_record([("e9", t0, legacy("L9"))]).items() if k != "logEvents"}
    other = dict(data_record([("e8", t0, legacy("L8"))]), messageType="DATA_MESSAGE_V2")
    obj = firehose_object([data_record([("e1", t0, legacy("L1"))]), no_list, other])
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc").write_bytes(obj)
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose"), WINDOW, AwsConfig())
    assert labels(res.ledger["eb_id"]) == ["L1"]
    assert reasons(res) == ["Firehose DATA_MESSAGE without a logEvents list",
                            'Firehose record has an unknown messageType "DATA_MESSAGE_V2"']


@pytest.mark.parametrize("fmt", ["firehose", "firehose-messages"])
def test_a_firehose_object_cut_short_keeps_the_records_before_the_cut(fmt, tmp_path):
    """Firehose records run together with no newline (CloudWatch's records, or the events alone with message
    extraction): the cut at the damage must fall between records, not at the last newline (there is none), which
    kept nothing and said so wrongly."""
    t0 = int(NOW.timestamp() * 1000)
    whole = b"".join((json.dumps(data_record([(f"e{i}", t0, legacy(f"L{i}"))]), separators=(",", ":"))
                      if fmt == "firehose" else compact(legacy(f"L{i}"))).encode() for i in range(5))
    obj = gzip.compress(whole)
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc").write_bytes(obj[: len(obj) - 12])
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format=fmt), WINDOW, AwsConfig())
    assert not res.complete
    assert labels(res.ledger["eb_id"]) == [f"L{i}" for i in range(4)]
    assert any("kept the 4 records read before it" in p for p in res.problems), res.problems


# ---------------------------------------------------------------- bus log: Firehose with message extraction

# A comment whose text holds `}{"` and ends in `}{`: the only places the sequence can stand inside a message.
TRICKY = json.dumps({"version": "0", "id": uid("T1"), "detail-type": "Support Ticket: Comment Created",
                     "source": "aws.partner/zendesk.com/1/default", "time": iso(NOW), "account": "123456789012",
                     "region": "us-east-1", "resources": [],
                     "detail": {"ticket_event": {"type": "Comment Created", "ticket": {"id": 5},
                                                 "comment": {"body": 'a }{"b": 1} and }{'},
                                                 "meta": {"occurred_at": iso(NOW)}}}}, separators=(",", ":"))


def compact(event: str) -> str:
    return json.dumps(json.loads(event), separators=(",", ":"))  # as EventBridge writes it: no white space


@pytest.mark.parametrize("where", ["s3", "local"])
@pytest.mark.parametrize("delimiter", ["", "\n"], ids=["back-to-back", "newline"])
@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "uncompressed"])
def test_a_firehose_delivery_with_message_extraction_is_read(where, delimiter, gzipped, request, tmp_path):
    """Firehose's CloudWatch Logs decompression with message extraction delivers each log event's message alone
    (the event JSON), back to back or one a line (AppendDelimiterToRecord), compressed by the stream or not. Each
    event is read, by its place `<key>:<record>`; no log timestamp is left, so none is made up."""
    messages = [compact(legacy("L1")), TRICKY, compact(webhook("W1")), compact(legacy("L2", when=NOW))]
    body = "".join(m + delimiter for m in messages).encode()
    key = "2026/11/23/05/stream-1-2026-11-23-05-00-00-abc" + (".gz" if gzipped else "")
    uri, aws = place(where, request, tmp_path, "fh-messages", {key: gzip.compress(body) if gzipped else body}, "2026")
    res = buslog.read(BusLogConfig(uri=uri, format="firehose-messages"), WINDOW, aws)
    assert res.complete and res.rejects.num_rows == 0, (res.problems, reasons(res))
    assert labels(res.ledger["eb_id"]) == ["L1", "T1", "W1", "L2"]
    assert [r.rsplit(":", 1)[1] for r in res.ledger["source_id"].to_pylist()] == ["1", "2", "3", "4"]
    assert res.ledger["observed_at"].null_count == 4
    assert res.details["records"] == 4


def test_a_message_extraction_delivery_read_as_firehose_records_names_the_format(tmp_path):
    """Read with format = "firehose", such a delivery's events are rejects whose reason names the format to set."""
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc.gz").write_bytes(gzip.compress(
        (compact(legacy("L1")) + compact(legacy("L2")) + "\n" + compact(webhook("W1")) + "\n").encode()))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose"), WINDOW, AwsConfig())
    assert res.ledger.num_rows == 0
    assert reasons(res) == 2 * ['Firehose record is an event, not a CloudWatch Logs record: a delivery with message '
                            'extraction is [bus_log] format = "firehose-messages"']


def test_a_message_that_is_no_event_is_a_reject_naming_its_record(tmp_path):
    """A log target behind an input transformer, or another writer to the group: its messages are rejects, and the
    read is incomplete, never taken as an empty bus."""
    body = (compact(legacy("L1")) + "\n" + "ticket 35436 changed\n" + compact(legacy("L2")) + "\n").encode()
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "stream-1-2026-11-23-05-00-00-abc").write_bytes(body)
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "fh"), format="firehose-messages"), WINDOW, AwsConfig())
    assert labels(res.ledger["eb_id"]) == ["L1", "L2"]
    assert reasons(res) == ["not JSON"] and res.rejects["source_ref"][0].as_py().endswith("-abc:2")
    assert not completeness.decide(res, others_have_records=True).complete


# ---------------------------------------------------------------- bus log: an object bigger than a piece

def _many(n: int) -> tuple[list[str], list[str]]:
    """n distinct EventBridge events (their ids, and the events as EventBridge writes them)."""
    template = compact(legacy("BIG"))
    ids = [str(uuid.UUID(int=(7 << 96) + i)) for i in range(n)]
    return ids, [template.replace(uid("BIG"), i) for i in ids]


def _big_object(fmt: str, events_: list[str]) -> bytes:
    """One archive object of `fmt` holding every event: an export's lines, Firehose's records of 50 log events each
    (a gzip member each), or the events back to back (message extraction, not compressed)."""
    if fmt == "cwl-export":
        return igzip.compress("".join(f"{iso(NOW)} {e}\n" for e in events_).encode(), 1)
    if fmt == "firehose":
        t0 = int(NOW.timestamp() * 1000)
        return b"".join(igzip.compress(json.dumps(data_record([(f"e{i + j}", t0, e) for j, e in
                                                               enumerate(events_[i:i + 50])]),
                                                  separators=(",", ":")).encode(), 1)
                        for i in range(0, len(events_), 50))
    return "".join(events_).encode()


@pytest.mark.parametrize("fmt", ["cwl-export", "firehose", "firehose-messages"])
def test_an_object_bigger_than_a_piece_is_read_a_piece_at_a_time_and_whole(fmt, tmp_path):
    """An object of 1.1 pieces (buslog.PIECE of text): every event is read once, in order, at its place; the records
    the cut between pieces falls inside are carried into the next piece, not lost or rejected."""
    ids, evs = _many(int(1.1 * buslog.PIECE / len(evs_one := compact(legacy("BIG")))) + 1)
    assert sum(map(len, evs)) > buslog.PIECE > len(evs_one)
    (tmp_path / "log").mkdir()
    name = "000000.gz" if fmt == "cwl-export" else "stream-1-2026-11-23-05-00-00-abc"
    (tmp_path / "log" / name).write_bytes(_big_object(fmt, evs))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "log"), format=fmt), WINDOW, AwsConfig())
    assert res.complete and res.rejects.num_rows == 0, (res.problems, reasons(res)[:3])
    assert [str(u) for u in res.ledger["eb_id"].to_pylist()] == ids
    where = res.ledger["source_ref"].to_pylist() if fmt != "firehose" else res.ledger["source_id"].to_pylist()
    at = ("#e" if fmt == "firehose" else ":")
    assert where == [f"{tmp_path / 'log' / name}:{i}" if at == ":" else f"e{i - 1}" for i in range(1, len(ids) + 1)]


def test_an_object_bigger_than_a_piece_cut_short_keeps_every_line_before_the_cut(tmp_path):
    """The damage is in the last piece: the lines of the pieces before it and of the last up to the cut are kept
    (numbered on from the pieces before), the line the cut falls in is the reject."""
    ids, evs = _many(int(1.05 * buslog.PIECE / len(compact(legacy("BIG")))))
    obj = _big_object("cwl-export", evs)
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "000000.gz").write_bytes(obj[:len(obj) - 1000])
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "log"), format="cwl-export"), WINDOW, AwsConfig())
    kept = res.ledger.num_rows
    assert not res.complete and len(ids) - 2000 < kept < len(ids)
    assert [str(u) for u in res.ledger["eb_id"].to_pylist()] == ids[:kept]
    assert res.ledger["source_ref"][-1].as_py().endswith(f"000000.gz:{kept}")
    assert reasons(res) == [f"truncated gzip stream (the object ends mid-member) in {tmp_path / 'log' / '000000.gz'}: "
                            f"kept the {kept:,} records before the damage"]
    assert evs[kept].startswith(res.rejects["raw"][0].as_py().partition(" ")[2])


# ---------------------------------------------------------------- bus log: live API


def test_bus_log_filter_log_events(aws_cfg):
    logs = make_client("logs", aws_cfg)
    logs.create_log_group(logGroupName="g")
    t0 = int(NOW.timestamp() * 1000)
    for stream, msg in (("a", legacy("L1")), ("b", webhook("W1"))):
        logs.create_log_stream(logGroupName="g", logStreamName=stream)
        logs.put_log_events(logGroupName="g", logStreamName=stream, logEvents=[{"timestamp": t0, "message": msg}])
    res = buslog.read(BusLogConfig(format="api", log_group="g"), WINDOW, aws_cfg)
    assert res.complete and sorted(labels(res.ledger["eb_id"])) == ["L1", "W1"]
    assert all(r.startswith("g/") for r in res.ledger["source_ref"].to_pylist())
    with pytest.raises(SourceError, match="does not exist"):
        buslog.read(BusLogConfig(format="api", log_group="nope"), WINDOW, aws_cfg)


# ---------------------------------------------------------------- missing stores, denied, empty window


def test_missing_bucket_and_prefix(aws_cfg, tmp_path):
    with pytest.raises(SourceError, match=r"does not exist.*\[bus_log\] uri"):
        buslog.read(BusLogConfig(uri="s3://no-such-bucket/exports"), WINDOW, aws_cfg)
    s3_put(aws_cfg, "logs-archive", {"other/x.gz": b""})
    with pytest.raises(SourceError, match=r"does not exist.*\[bus_log\] uri"):
        buslog.read(BusLogConfig(uri="s3://logs-archive/exports"), WINDOW, aws_cfg)
    with pytest.raises(SourceError, match=r"does not exist.*\[sink\] uri"):
        sink.read(SinkConfig(uri=str(tmp_path / "nope")), WINDOW, LOCAL)
    with pytest.raises(SourceError, match="does not exist"):
        dlq.read(DlqConfig(queue_url=aws_cfg.endpoint_url + "/123456789012/nope"), WINDOW, aws_cfg)


def test_access_denied_from_moto_enforcing_iam(moto_server):  # moto_server: for the fake credentials
    """moto enforces IAM when INITIAL_NO_AUTH_ACTION_COUNT is set: a user with no policy is denied for real."""
    server = start_moto(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        admin = AwsConfig(endpoint_url=server.endpoint, region="us-east-1")
        s3_put(admin, "locked-bucket", {"exports/a.gz": export_gz([])})  # 2 unauthenticated actions
        iam = make_client("iam", admin)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        mp = pytest.MonkeyPatch()
        for k, v in creds.items():
            mp.setenv(k, v)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_SECURITY_TOKEN", raising=False)
        try:
            # A config unlike admin's, so the cached session picks up the user's credentials.
            denied = AwsConfig(endpoint_url=server.endpoint, region="us-east-2")
            s3 = make_client("s3", denied)
            with pytest.raises(botocore.exceptions.ClientError) as e:
                s3.list_objects_v2(Bucket="locked-bucket")
            err = store_error(e.value, "bus log archive", "[bus_log] uri")
            assert e.value.response["Error"]["Code"] == "AccessDenied"
            assert isinstance(err, SourceError) and "denied (AccessDenied)" in str(err)
            with pytest.raises(SourceError, match=r"denied .*\[bus_log\] uri"):
                buslog.read(BusLogConfig(uri="s3://locked-bucket/exports"), WINDOW, denied)
        finally:
            mp.undo()
    finally:
        server.stop()


def test_empty_window_reads_nothing_and_is_complete(tmp_path, aws_cfg):
    old = "dt=2020-01-01/hr=00/part-0.parquet"
    write_local(tmp_path, {old: b"not even parquet"})
    res = sink.read(SinkConfig(uri=str(tmp_path)), WINDOW, LOCAL)
    assert res.complete and res.records == 0 and res.details["partitions_skipped"] == 1
    logs = make_client("logs", aws_cfg)
    logs.create_log_group(logGroupName="g")
    res = buslog.read(BusLogConfig(format="api", log_group="g"), WINDOW, aws_cfg)
    assert res.complete and res.records == 0 and res.rejected == 0


# ---------------------------------------------------------------- sink


def spark_table(ids: list[str], payloads: list[str], id_col: str = "partitionKey") -> pa.Table:
    t0 = NOW
    return pa.table({
        "data": pa.array([p.encode() for p in payloads], pa.binary()),
        "streamName": ["zendesk"] * len(ids),
        id_col: [uid(i) for i in ids],
        "sequenceNumber": [f"4959{i:04d}" for i in range(len(ids))],
        "approximateArrivalTimestamp": pa.array([t0 + timedelta(seconds=i) for i in range(len(ids))],
                                                pa.timestamp("us", tz="UTC")),
    })


def parquet_bytes(t: pa.Table) -> bytes:
    sink_ = pa.BufferOutputStream()
    pq.write_table(t, sink_)
    return sink_.getvalue().to_pybytes()


def part(dt: datetime) -> str:
    return f"dt={dt:%Y-%m-%d}/hr={dt:%H}"


def commit_log(**sizes: int) -> bytes:
    """Batch 0 of a commit log adding the files named (their path under the output: `name=len(data)`)."""
    return ("v1\n" + "\n".join(json.dumps({"path": f"s3://spark-output/events/{n}", "size": size, "isDir": False,
                                           "modificationTime": 1, "blockReplication": 1, "blockSize": 1,
                                           "action": "add"}) for n, size in sizes.items())).encode()


@pytest.mark.parametrize("where", ["s3", "local"])
def test_sink_parquet_with_commit_log_flags_uncommitted_when_not_honoured(where, request, tmp_path):
    p = part(NOW)
    files = {
        f"events/{p}/part-00000-a.c000.snappy.parquet": parquet_bytes(spark_table(["L1", "W1"],
                                                                                  [legacy("L1"), webhook("W1")])),
        f"events/{p}/part-00001-b.c000.snappy.parquet": parquet_bytes(spark_table(["L1"], [legacy("L1")])),
        f"events/{part(NOW - timedelta(days=5))}/part-00000-old.c000.snappy.parquet": b"skipped: outside window",
        f"events/{p}/_SUCCESS": b"",
    }
    committed = f"{p}/part-00000-a.c000.snappy.parquet"
    files["events/_spark_metadata/0"] = commit_log(**{committed: len(files[f"events/{committed}"])})
    uri, aws = place(where, request, tmp_path, "spark-output", files, "events")
    res = sink.read(SinkConfig(uri=uri, honour_commit_log=False), WINDOW, aws)
    assert res.name == "sink" and res.complete, res.problems
    rows = res.ledger.to_pylist()
    assert [(label(r["eb_id"]), r["committed"]) for r in rows] == [("L1", True), ("W1", True), ("L1", False)]
    assert rows[0]["sequence_number"] == "49590000" and rows[1]["observed_at"] == NOW + timedelta(seconds=1)
    assert rows[1]["zendesk_key"] == "900" and rows[0]["ticket_id"] == 35436 and rows[0]["hop"] == "sink"
    assert rows[2]["source_ref"].endswith("part-00001-b.c000.snappy.parquet#0")
    assert res.details["uncommitted_files"] == [f"{uri}/{p}/part-00001-b.c000.snappy.parquet"]
    assert res.details["partitions_skipped"] == 1 and res.details["commit_log"] is True


def test_sink_rows_whose_id_column_is_not_the_event_s_id_are_rejects(tmp_path):
    """A Kinesis target whose PartitionKeyPath names another UUID field puts that in partitionKey: keyed by it, the row
    would land another event (a false loss and an orphan). A row whose payload says otherwise is a reject naming
    [sink] id_path, so the read is not whole; with id_path = $.id it reads."""
    t = spark_table(["W9", "L1"], [webhook("W1"), legacy("L1")])
    write_local(tmp_path, {f"{part(NOW)}/part-0.parquet": parquet_bytes(t)})
    res = sink.read(SinkConfig(uri=str(tmp_path)), WINDOW, LOCAL)
    assert labels(res.ledger["eb_id"]) == ["L1"] and res.rejected == 1
    assert "not the event's own id" in res.rejects["reason"][0].as_py()
    assert 'Set [sink] id_path = "$.id"' in res.rejects["reason"][0].as_py()
    fixed = sink.read(SinkConfig(uri=str(tmp_path), id_path="$.id"), WINDOW, LOCAL)
    assert labels(fixed.ledger["eb_id"]) == ["W1", "L1"] and fixed.rejected == 0


def test_sink_without_commit_log_leaves_committed_unknown(tmp_path):
    write_local(tmp_path, {f"{part(NOW)}/part-0.parquet": parquet_bytes(spark_table(["W1"], [webhook("W1")]))})
    res = sink.read(SinkConfig(uri=str(tmp_path)), WINDOW, LOCAL)
    assert res.ledger["committed"].to_pylist() == [None] and res.details["uncommitted_files"] == []


def test_sink_id_via_json_path(tmp_path):
    t = spark_table(["k1", "k2"], [webhook("W1"), json.dumps({"detail": {"type": "zen:event-type:x"}})])
    write_local(tmp_path, {f"{part(NOW)}/part-0.parquet": parquet_bytes(t)})
    res = sink.read(SinkConfig(uri=str(tmp_path), id_path="$.id"), WINDOW, LOCAL)
    assert labels(res.ledger["eb_id"]) == ["W1"]
    assert reasons(res) == ["no EventBridge id at $.id in data"]


def test_sink_schema_drift_renamed_id_column(tmp_path):
    write_local(tmp_path, {
        f"{part(NOW)}/part-0.parquet": parquet_bytes(spark_table(["W1"], [webhook("W1")])),
        f"{part(NOW)}/part-1.parquet": parquet_bytes(spark_table(["W2", "W3"], [webhook("W2"), webhook("W3")],
                                                                 id_col="partition_key")),
    })
    res = sink.read(SinkConfig(uri=str(tmp_path)), WINDOW, LOCAL)
    assert not res.complete and labels(res.ledger["eb_id"]) == ["W1"]
    assert res.rejected == 2 and all("'partitionKey' not found" in r and "[sink] id_column" in r
                                     and "[sink] id_path" in r for r in reasons(res))
    assert "part-1.parquet" in res.problems[0]
    ok = sink.read(SinkConfig(uri=str(tmp_path), id_path="$.id"), WINDOW, LOCAL)
    assert ok.complete and labels(ok.ledger["eb_id"]) == ["W1", "W2", "W3"]


@pytest.mark.parametrize("where", ["s3", "local"])
def test_sink_corrupt_parquet(where, request, tmp_path):
    good = parquet_bytes(spark_table(["W1"], [webhook("W1")]))
    files = {f"out/{part(NOW)}/part-0.parquet": good, f"out/{part(NOW)}/part-1.parquet": good[:40]}
    uri, aws = place(where, request, tmp_path, "spark-output", files, "out")
    res = sink.read(SinkConfig(uri=uri), WINDOW, aws)
    assert not res.complete and labels(res.ledger["eb_id"]) == ["W1"]
    assert res.rejected == 1 and "part-1.parquet" in reasons(res)[0] and "part-1.parquet" in res.problems[0]


def test_sink_json_lines_data_as_object_text_and_base64(tmp_path):
    rows = [
        {"data": json.loads(webhook("W1")), "partitionKey": uid("W1"), "sequenceNumber": "1",
         "approximateArrivalTimestamp": iso(NOW)},
        {"data": legacy("L1"), "partitionKey": uid("L1"), "sequenceNumber": "2", "approximateArrivalTimestamp": iso(NOW)},
        {"data": base64.b64encode(webhook("W2").encode()).decode(), "partitionKey": uid("W2"), "sequenceNumber": "3",
         "approximateArrivalTimestamp": iso(NOW)},
    ]
    text = ("\n".join(json.dumps(r) for r in rows) + "\nnot json\n").encode()
    write_local(tmp_path, {f"{part(NOW)}/part-0.json": text,
                           "_spark_metadata/0": commit_log(**{f"{part(NOW)}/part-0.json": len(text)})})
    res = sink.read(SinkConfig(uri=str(tmp_path), format="json"), WINDOW, LOCAL)
    assert labels(res.ledger["eb_id"]) == ["W1", "L1", "W2"]
    assert res.ledger["committed"].to_pylist() == [True] * 3
    assert res.ledger["observed_at"][0].as_py() == NOW
    assert res.rejected == 1 and res.rejects["source_ref"][0].as_py().endswith("part-0.json#3")


# ---------------------------------------------------------------- DLQ


def test_dlq_live_queue_is_read_without_consuming(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [legacy(f"L{i}") for i in range(7)] + ["not json"])
    visible = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    res = dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    after = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert after["ApproximateNumberOfMessages"] == visible["ApproximateNumberOfMessages"] == "8"  # nothing deleted
    assert res.name == "dlq" and res.complete, res.problems
    assert res.details["read"] == 8 and res.details["approx_total"] == 8
    assert res.details["coverage"] == "read 8 of ~8" and res.details["sampled"] is False
    assert res.records == 7 and reasons(res) == ["not JSON"]
    row = res.ledger.to_pylist()[0]
    assert row["error_code"] == "THROTTLING" and row["retry_attempts"] == 185 and row["hop"] == "dlq"
    assert row["retry_condition"] == "MaximumRetryAttempts" and ":kinesis:" in row["target_arn"]
    assert row["rule_arn"].endswith("rule/zendesk-to-kinesis") and row["observed_at"] is not None
    assert row["source_id"] == row["source_ref"] and row["ticket_id"] == 35436


def test_dlq_larger_than_one_receive(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(f"W{i}", str(i)) for i in range(24)])
    # Visibility timeout 0: moto hands back the same ten messages every time -> a sample, marked incomplete.
    res = dlq.read(DlqConfig(queue_url=url, visibility_timeout=0), WINDOW, aws_cfg)
    assert not res.complete and res.details["coverage"] == "read 10 of ~24" and "visibility_timeout" in res.problems[-1]
    assert queue_count(sqs, url) == 24
    # A visibility timeout (by default sized to the queue) lets received messages step aside: all 24 read, all still
    # in the queue.
    res = dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    assert res.complete and res.records == 24 and queue_count(sqs, url) == 24


def test_dlq_queue_with_redrive_policy_is_refused_unless_the_risk_is_accepted(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    target = sqs.create_queue(QueueName="dlq-of-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="zendesk-dlq", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "50"})})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=webhook("W1"), MessageAttributes=dlq_attrs())
    sqs.send_message(QueueUrl=url, MessageBody=webhook("W2"), MessageAttributes=dlq_attrs())
    hidden = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)["Messages"]
    with pytest.raises(SourceError, match="redrive policy .*accept_redrive_risk"):
        dlq.read(DlqConfig(queue_url=url, empty_receives=2), WINDOW, aws_cfg)
    res = dlq.read(DlqConfig(queue_url=url, empty_receives=2, accept_redrive_risk=True), WINDOW, aws_cfg)
    assert str(res.details["redrive_policy"]["maxReceiveCount"]) == "50"
    assert not res.complete and res.details["read"] == 1 and res.details["approx_total"] == 2
    assert labels(res.ledger["eb_id"]) != [hidden[0]["MessageId"]]


@pytest.mark.parametrize("where", ["s3", "local"])
def test_dlq_archive(where, request, tmp_path):
    lines = [json.dumps({"MessageId": "m1", "Body": webhook("W1"), "MessageAttributes": dlq_attrs(code="NO_RESOURCE"),
                         "Attributes": {"SentTimestamp": str(int(NOW.timestamp() * 1000))}}),
             "{broken", json.dumps({"Body": webhook("W2")})]
    body = ("\n".join(lines) + "\n").encode()
    # an archiver's marker beside the messages: left out, and counted
    uri, aws = place(where, request, tmp_path, "dlq-archive", {"day/messages.jsonl": body, "day/_SUCCESS": b""}, "day")
    res = dlq.read(DlqConfig(uri=uri), WINDOW, aws)
    assert res.complete and res.details["sampled"] is False
    assert res.details["files"] == 1 and res.details["skipped_objects"] == 1
    assert res.details["skipped_shown"][0].endswith("day/_SUCCESS")
    assert [dict(r, eb_id=label(r["eb_id"]))
            for r in res.ledger.select(["source_id", "eb_id", "error_code", "observed_at"]).to_pylist()] == [
        {"source_id": "m1", "eb_id": "W1", "error_code": "NO_RESOURCE", "observed_at": NOW}]
    assert reasons(res) == ["DLQ message is not JSON", "DLQ message has no MessageId"]
    assert res.rejects["source_ref"][0].as_py() == f"{uri}/messages.jsonl:2"


# ---------------------------------------------------------------- metrics


def test_metrics_put_metric_data_read_back(aws_cfg, tmp_path):
    cw = make_client("cloudwatch", aws_cfg)
    t = HOUR0 - timedelta(minutes=30)
    cw.put_metric_data(Namespace="AWS/Events", MetricData=[
        {"MetricName": "Invocations", "Dimensions": [{"Name": "RuleName", "Value": "zendesk-to-kinesis"}],
         "Timestamp": t, "Value": 10.0},
        {"MetricName": "Invocations", "Dimensions": [{"Name": "RuleName", "Value": "zendesk-to-kinesis"}],
         "Timestamp": t + timedelta(seconds=10), "Value": 5.0},
        {"MetricName": "FailedInvocations", "Dimensions": [{"Name": "RuleName", "Value": "zendesk-to-kinesis"}],
         "Timestamp": t, "Value": 1.0},
        {"MetricName": "Invocations", "Dimensions": [{"Name": "RuleName", "Value": "other-rule"}],
         "Timestamp": t, "Value": 99.0}])
    res = metrics.read(MetricsConfig(rule="zendesk-to-kinesis"), WINDOW, aws_cfg)
    assert res.name == "metrics" and res.complete and res.details["partial"] == []
    assert res.ledger.schema.equals(__import__("reconcile.ledger", fromlist=["x"]).METRIC_SCHEMA)
    assert res.details["totals"]["Invocations"] == 15.0 and res.details["totals"]["FailedInvocations"] == 1.0
    saved = {"MetricDataResults": [
        {"Id": "m0", "Label": "Invocations", "Timestamps": [iso(t)], "Values": [4.0], "StatusCode": "PartialData"}]}
    (tmp_path / "m.json").write_text(json.dumps(saved))
    res = metrics.read(MetricsConfig(uri=str(tmp_path / "m.json")), WINDOW, LOCAL)
    assert res.complete and res.details["partial"] == ["Invocations"] and "PartialData" in res.problems[0]
    assert res.ledger.to_pylist() == [{"metric": "Invocations", "timestamp": t, "period_s": 300, "value": 4.0}]
    assert res.details["read_whole"] == []


def test_metrics_read_over_pages_are_whole_and_a_silent_metric_is_zero(tmp_path):
    """Every page of a paginated GetMetricData answer but the last says PartialData (NextToken: more follows): the
    read is whole when the last page says Complete. EventBridge sends FailedInvocations and the like only when they
    are not 0, so a metric read whole with no point is 0 in the check: "0 against 3 lost after the bus" shows, where
    "not available" hid it."""
    t = HOUR0 - timedelta(minutes=30)
    pages = [{"MetricDataResults": [
                 {"Id": "m0", "Label": "Invocations", "Timestamps": [iso(t)], "Values": [4.0],
                  "StatusCode": "PartialData"},
                 {"Id": "m1", "Label": "FailedInvocations", "Timestamps": [], "Values": [],
                  "StatusCode": "PartialData"}],
              "NextToken": "more"},
             {"MetricDataResults": [
                 {"Id": "m0", "Label": "Invocations", "Timestamps": [iso(t + timedelta(minutes=5))], "Values": [2.0],
                  "StatusCode": "Complete"},
                 {"Id": "m1", "Label": "FailedInvocations", "Timestamps": [], "Values": [], "StatusCode": "Complete"}]}]
    (tmp_path / "m.json").write_text(json.dumps(pages))
    res = metrics.read(MetricsConfig(uri=str(tmp_path / "m.json")), WINDOW, LOCAL)
    assert res.details["partial"] == [] and not res.problems
    assert res.details["read_whole"] == ["FailedInvocations", "Invocations"] and res.details["totals"] == {
        "Invocations": 6.0}
    rows = [{"metric": m, "metric_value": None, "datapoints": 0, "per_event_value": 3, "per_event_basis": "x",
             "ord": 1} for m in ("FailedInvocations", "ThrottledRules")]
    shown = [summary.metric_row(r, set(res.details["read_whole"])) for r in rows]
    assert [(r["metric_value"], r["difference"], r["agrees"]) for r in shown] == [(0, -3, False), (None, None, None)]


def test_metrics_that_match_no_rule_are_no_zeros(aws_cfg, tmp_path):
    """A misspelt rule (or bus, or region) gets GetMetricData's "Complete" with no point for any metric: every metric
    was counted read whole as 0, the failure counters "agreed" with the per-event zeros, and no problem was listed.
    A saved response of another day did the same. No point for any metric is said, and none is taken for 0; points
    outside the window are left out, and said."""
    cw = make_client("cloudwatch", aws_cfg)
    cw.put_metric_data(Namespace="AWS/Events", MetricData=[
        {"MetricName": "Invocations", "Dimensions": [{"Name": "RuleName", "Value": "zendesk-to-kinesis"}],
         "Timestamp": HOUR0 - timedelta(minutes=30), "Value": 10.0}])
    res = metrics.read(MetricsConfig(rule="zendesk-to-kinesis-typo"), WINDOW, aws_cfg)
    assert res.details["read_whole"] == [] and "No datapoint for any metric of rule" in res.problems[0]
    row = {"metric": "InvocationsSentToDlq", "metric_value": None, "datapoints": 0, "per_event_value": 0,
           "per_event_basis": "x", "ord": 1}
    assert summary.metric_row(row, set(res.details["read_whole"]))["agrees"] is None
    other_day = {"MetricDataResults": [{"Id": "m0", "Label": m, "StatusCode": "Complete",
                                        "Timestamps": [iso(HOUR0 - timedelta(days=3))], "Values": [7.0]}
                                       for m in ("Invocations", "FailedInvocations")]}
    (tmp_path / "m.json").write_text(json.dumps(other_day))
    res = metrics.read(MetricsConfig(uri=str(tmp_path / "m.json")), WINDOW, LOCAL)
    assert res.ledger.num_rows == 0 and res.details["read_whole"] == []
    assert "2 datapoint(s) fall outside the window" in res.problems[0] and "No datapoint" in res.problems[1]
    # CloudWatch stamps a point with its period's start: the window's first period may start before the window
    early = {"MetricDataResults": [{"Id": "m0", "Label": "Invocations", "StatusCode": "Complete",
                                    "Timestamps": [iso(WINDOW.start - timedelta(seconds=30))], "Values": [7.0]}]}
    (tmp_path / "m.json").write_text(json.dumps(early))
    res = metrics.read(MetricsConfig(uri=str(tmp_path / "m.json")), WINDOW, LOCAL)
    assert res.ledger.num_rows == 1 and not res.problems and res.details["read_whole"] == ["Invocations"]


def test_a_metric_given_in_part_never_agrees(tmp_path):
    """PartialData is a lower bound: a partial sum equal to the per-event figure was shown as agreeing."""
    row = {"metric": "FailedInvocations", "metric_value": 3, "datapoints": 1, "per_event_value": 3,
           "per_event_basis": "x", "ord": 1}
    assert summary.metric_row(row)["agrees"] is True
    assert summary.metric_row(row, partial={"FailedInvocations"})["agrees"] is None
    assert summary.metric_row(dict(row, metric_value=5), partial={"FailedInvocations"})["agrees"] is False
    # below the figure it is no disagreement either: the rest may be in the data not given
    assert summary.metric_row(dict(row, metric_value=1), partial={"FailedInvocations"})["agrees"] is None


def test_cloudwatch_unreachable_leaves_the_metrics_partial_not_the_run_failed(aws_cfg):
    """CloudWatch unreachable after botocore's retries ended the whole run (exit 4, no report): metrics are a
    sanity check only, so the read is partial, with the reason."""
    import botocore.exceptions

    def gone(request, **_):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)
    events = session(aws_cfg).events
    events.register("before-send.cloudwatch.GetMetricData", gone, unique_id="gone")
    try:
        res = metrics.read(MetricsConfig(rule="zendesk-to-kinesis"), WINDOW, aws_cfg)
    finally:
        events.unregister("before-send.cloudwatch.GetMetricData", unique_id="gone")
    assert res.complete and len(res.details["partial"]) == 6 and "could not be completed" in res.problems[0]


# ---------------------------------------------------------------- the demo loader


def test_load_stores_into_moto_and_read_back(aws_cfg, tmp_path):
    st = tmp_path / "stores"
    write_local(st, {
        "logs-archive/exports/r1/s1/000000.gz": export_gz([f"{iso(NOW)} {legacy('L1')}"]),
        "logs-archive/exports/aws-logs-write-test": b"Permission Check Successful",
        f"spark-output/events/{part(NOW)}/part-0.parquet": parquet_bytes(spark_table(["L1"], [legacy("L1")])),
        "dlq-archive/messages.jsonl": (json.dumps({"MessageId": "m1", "Body": webhook("W9"),
                                                   "MessageAttributes": dlq_attrs(),
                                                   "Attributes": {"SentTimestamp": "1"}}) + "\n").encode(),
        "metrics/get-metric-data.json": json.dumps({"MetricDataResults": [
            {"Id": "m0", "Label": "Invocations", "Timestamps": [iso(HOUR0)], "Values": [2.0],
             "StatusCode": "Complete"}]}).encode(),
    })
    cfg = load_stores(st, aws_cfg)
    assert labels(buslog.read(BusLogConfig(uri=cfg["bus_log_uri"]), WINDOW, aws_cfg).ledger["eb_id"]) == ["L1"]
    assert labels(sink.read(SinkConfig(uri=cfg["sink_uri"]), WINDOW, aws_cfg).ledger["eb_id"]) == ["L1"]
    live = dlq.read(DlqConfig(queue_url=cfg["queue_url"]), WINDOW, aws_cfg)
    assert labels(live.ledger["eb_id"]) == ["W9"] and live.ledger["error_code"].to_pylist() == ["THROTTLING"]
    assert dlq.read(DlqConfig(uri=cfg["dlq_uri"]), WINDOW, aws_cfg).records == 1
    m = metrics.read(MetricsConfig(rule=cfg["rule"]), WINDOW, aws_cfg)
    assert m.details["totals"] == {"Invocations": 2.0}


def test_moto_reset_empties_the_server(moto, aws_cfg):
    make_client("s3", aws_cfg).create_bucket(Bucket="to-forget")
    moto.reset()
    assert make_client("s3", aws_cfg).list_buckets()["Buckets"] == []
    urllib.request.urlopen(moto.endpoint + "/moto-api/", timeout=5).read()
    time.sleep(0)


# ---------------------------------------------------------------- a connection that fails mid-read


class _Flaky:
    """An AWS JSON-protocol endpoint (X-Amz-Target) over HTTP that answers each action from `answers` (a list: one
    answer a call, the last repeated) and, once an action's answers run out with `drop` set for it, closes every
    connection without answering: what a network failure mid-read looks like to botocore, after its retries."""

    def __init__(self, answers: dict[str, list[dict]], drop: set[str]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        calls: dict[str, int] = {}

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = self.headers.get("X-Amz-Target", "").split(".")[-1]
                n = calls[action] = calls.get(action, 0) + 1
                given = answers.get(action, [{}])
                if action in drop and n > len(given):
                    self.close_connection = True
                    self.connection.close()
                    return
                body = json.dumps(given[min(n, len(given)) - 1]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.calls = calls
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.aws = AwsConfig(endpoint_url=f"http://127.0.0.1:{self.server.server_address[1]}", region="us-east-1")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_filter_log_events_failing_mid_read_keeps_what_it_read_and_is_incomplete(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    t0 = int(NOW.timestamp() * 1000)
    ep = _Flaky({"FilterLogEvents": [{"events": [{"logStreamName": "s", "timestamp": t0, "message": legacy("L1"),
                                                  "eventId": "1"}], "nextToken": "more"}]}, drop={"FilterLogEvents"})
    try:
        res = buslog.read(BusLogConfig(format="api", log_group="g"), WINDOW, ep.aws)
    finally:
        ep.close()
    assert not res.complete and labels(res.ledger["eb_id"]) == ["L1"]
    assert any("failed after retries" in p and "read 1 events" in p for p in res.problems), res.problems


@pytest.mark.parametrize("pages,why", [
    ([(0, "A"), (1, "A")], "nextToken 'A', first event '1'"),  # the same token again: the same page
    ([(0, "A"), (1, "B"), (2, "A")], "nextToken 'A', first event '2'"),  # two tokens in turn
    ([(0, "A"), (0, "B")], "nextToken 'A', first event '0'"),  # the same page under a fresh token
])
def test_filter_log_events_that_gives_a_page_again_ends_incomplete(monkeypatch, pages, why):
    """A log group API that gives a page it gave before does not move on: a repeated nextToken ended the run as an
    "unexpected" error with exit 4 (botocore's paginator raised), and tokens in turn -- or the same page under fresh
    tokens -- piled pages up in memory until the read deadline (hang review, diff review). The read keeps what it read
    and is incomplete, naming why."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    t0 = int(NOW.timestamp() * 1000)
    answers = [{"events": [{"logStreamName": "s", "timestamp": t0, "message": legacy(f"L{i}"), "eventId": str(i)}],
                "nextToken": token} for i, token in pages]
    ep = _Flaky({"FilterLogEvents": answers}, drop=set())
    try:
        res = buslog.read(BusLogConfig(format="api", log_group="g"), WINDOW, ep.aws)
    finally:
        ep.close()
    read = {f"L{i}" for i, _ in pages}
    assert not res.complete and sorted(labels(res.ledger["eb_id"])) == sorted(read)
    assert res.problems == [f"FilterLogEvents on g gave a page it had given before ({why}): it does not move on; read "
                            f"{len(read)} events. Re-run later or read an S3 export ([bus_log] format = "
                            f"\"cwl-export\")."]


@pytest.mark.parametrize("tokens", [["A", "A"], ["A", "B", "A"]])
def test_get_metric_data_that_gives_a_token_again_is_partial_not_held(monkeypatch, tokens):
    """GetMetricData answering NextTokens in turn (A, B, A, ...) was paged until [aws] read_deadline, which failed
    the whole run (exit 3) over a sanity check, holding every page meanwhile (hang review). The read stops at the
    token given again: metrics partial, the pages before kept."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    t = HOUR0 - timedelta(minutes=30)
    answers = [{"MetricDataResults": [{"Id": "m0", "Label": "Invocations", "Timestamps": [t.timestamp() + 60 * i],
                                       "Values": [1.0], "StatusCode": "PartialData"}], "NextToken": token}
               for i, token in enumerate(tokens)]
    ep = _Flaky({"GetMetricData": answers}, drop=set())
    try:
        res = metrics.read(MetricsConfig(rule="zendesk-to-kinesis"), WINDOW, ep.aws)
    finally:
        ep.close()
    assert ep.calls["GetMetricData"] == len(tokens)
    assert res.details["read_whole"] == [] and res.details["totals"] == {"Invocations": float(len(tokens))}
    assert any(f"gave a NextToken it had given before after {len(tokens)} pages" in p for p in res.problems), \
        res.problems


def test_filter_log_events_may_repeat_its_token_on_empty_pages(monkeypatch):
    """CloudWatch Logs answers empty pages, the same nextToken each time, while it is still searching a sparse group:
    not a page given again (the read deadline bounds it). The read goes on and is whole."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    t0 = int(NOW.timestamp() * 1000)
    answers = [{"events": [], "nextToken": "A"}, {"events": [], "nextToken": "A"},
               {"events": [{"logStreamName": "s", "timestamp": t0, "message": legacy("L1"), "eventId": "1"}]}]
    ep = _Flaky({"FilterLogEvents": answers}, drop=set())
    try:
        res = buslog.read(BusLogConfig(format="api", log_group="g"), WINDOW, ep.aws)
    finally:
        ep.close()
    assert res.complete and labels(res.ledger["eb_id"]) == ["L1"] and res.details["pages"] == 3


def test_receive_message_failing_mid_read_releases_what_it_holds_and_is_incomplete(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    attrs = {"Attributes": {"ApproximateNumberOfMessages": "2", "ApproximateNumberOfMessagesNotVisible": "0",
                            "MessageRetentionPeriod": "1209600"}}
    message = {"MessageId": "m1", "ReceiptHandle": "h1", "Body": legacy("L1"), "Attributes": {}}
    ep = _Flaky({"GetQueueAttributes": [attrs], "ReceiveMessage": [{"Messages": [message]}],
                 "ChangeMessageVisibilityBatch": [{"Successful": [{"Id": "0"}], "Failed": []}]},
                drop={"ReceiveMessage"})
    try:
        res = dlq.read(DlqConfig(queue_url=f"{ep.aws.endpoint_url}/123456789012/dlq"), WINDOW, ep.aws)
    finally:
        ep.close()
    assert not res.complete
    assert any("ReceiveMessage" in p and "failed after retries" in p for p in res.problems), res.problems
    assert ep.calls["ChangeMessageVisibilityBatch"] == 1  # what it received is made visible again


def test_a_record_with_no_end_stops_the_object_there_instead_of_growing_without_bound(tmp_path):
    """An export object whose text after two events has no line end for 40 MiB (a gzipped file that is no log, say):
    the record was carried piece after piece without bound and parsed whole (1.7 GB for 512 MiB). Past
    buslog.RECORD_LIMIT the object is read no further, as a damaged one: the lines before kept, the read incomplete."""
    body = (f"{iso(NOW)} {compact(legacy('L1'))}\n{iso(NOW)} {compact(legacy('L2'))}\n").encode() + b"x" * (40 << 20)
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "000000.gz").write_bytes(igzip.compress(body, 1))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "log"), format="cwl-export"), WINDOW, AwsConfig())
    assert not res.complete and labels(res.ledger["eb_id"]) == ["L1", "L2"]
    assert "a record of more than 16 MiB with no end" in res.problems[0] and "kept the 2 records" in res.problems[0]
    assert res.rejects["kind"].to_pylist() == ["unreadable_unit"]
