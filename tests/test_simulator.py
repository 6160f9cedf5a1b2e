"""The pipeline simulator: its stores parse as the real formats say, and its truth agrees with its stores."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reconcile.errors import ConfigError
from reconcile.simulate.generate import FAULTS, VERDICTS, SimParams, simulate
from reconcile.simulate.stores import FOREIGN_SOURCE, KINESIS_ARN, LOGS_ARN, RULE_ARN, write_stores

N = 3000
START = datetime(2026, 11, 23, tzinfo=timezone.utc)
END = START + timedelta(days=1)
AS_OF = END + timedelta(hours=2)
PART = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/hr=(\d{2})/part-\d{5}-[0-9a-f-]{36}\.c000\.snappy\.parquet$")


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    params = SimParams(events=N, log_object_lines=500, garbage_records=True)  # both kinds of non-Zendesk record
    written = write_stores(simulate(params), out)
    return out, written, json.loads((out / "truth.json").read_text())


@pytest.fixture(scope="module")
def log_lines(day):
    out, _, _ = day
    lines = []
    for obj in sorted((out / "stores/logs-archive/exports").glob("*/*/*.gz")):
        text = gzip.decompress(obj.read_bytes()).decode()
        lines.append((obj, text.splitlines()))
    return lines


def sink_rows_root(day) -> Path:
    return day[0] / "stores/spark-output/events"


@pytest.fixture(scope="module")
def sink_rows(day):
    root = sink_rows_root(day)
    tables = []
    for f in sorted(root.glob("dt=*/hr=*/*.parquet")):
        t = pq.read_table(f)
        tables.append(t.append_column("file", pa.array([str(f.relative_to(root))] * t.num_rows)))
    return pa.concat_tables(tables).to_pylist()


@pytest.fixture(scope="module")
def dlq_messages(day):
    out, _, _ = day
    return [json.loads(line) for line in (out / "stores/dlq-archive/messages.jsonl").read_text().splitlines()]


def parse_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- formats ---------------------------------------------------------------------------------------------------------


def test_zendesk_parquet_has_the_api_shape(day):
    out, _, truth = day
    t = pq.read_table(out / "stores/zendesk/ticket_events.parquet")
    assert t.schema.names == ["id", "ticket_id", "timestamp", "created_at", "updater_id", "via", "event_type",
                              "child_events"]
    assert t.schema.field("timestamp").type == pa.int64()
    child = t.schema.field("child_events").type.value_type
    assert [(f.name, f.type) for f in child] == [("id", pa.int64()), ("event_type", pa.string()),
                                                 ("field_name", pa.string()), ("value", pa.string()),
                                                 ("previous_value", pa.string())]
    rows = t.to_pylist()
    ts = [r["timestamp"] for r in rows]
    assert ts == sorted(ts)
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows[:50]:
        assert r["created_at"] == datetime.fromtimestamp(r["timestamp"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert r["event_type"] == "Audit" and 1 <= len(r["child_events"]) <= 4
    in_window = [c for r in rows if START.timestamp() <= r["timestamp"] < END.timestamp() for c in r["child_events"]]
    assert len(in_window) == N == len(truth["events"])
    assert {str(c["id"]) for c in in_window} == set(truth["events"])
    margin = [r for r in rows if not START.timestamp() <= r["timestamp"] < END.timestamp()]
    assert any(r["timestamp"] < START.timestamp() for r in margin) and any(r["timestamp"] >= END.timestamp()
                                                                           for r in margin)
    kinds = Counter(c["event_type"] for c in in_window)
    assert {"Create", "Comment", "Change", "Notification"} <= set(kinds)
    assert all(c["field_name"] and c["value"] != c["previous_value"] for c in in_window if c["event_type"] == "Change")
    # two children of one kind in one update (ambiguous composite keys)
    assert any(Counter(c["event_type"] for c in r["child_events"])["Comment"] > 1 for r in rows)


def test_bus_log_is_a_cloudwatch_export(day, log_lines):
    out, written, truth = day
    root = out / "stores/logs-archive/exports"
    assert (root / "aws-logs-write-test").read_text() == "Permission Check Successful"
    streams = {obj.parent for obj, _ in log_lines}
    assert len(streams) == 4
    assert all(re.fullmatch(r"[0-9a-f]{8}", s.parent.name) for s in streams)
    bad = foreign = 0
    ids = set()
    for obj, lines in log_lines:
        assert re.fullmatch(r"\d{6}\.gz", obj.name) and 0 < len(lines) <= 500
        stamps = []
        for line in lines:
            ts, _, message = line.partition(" ")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
            stamps.append(iso(ts))
            event = parse_or_none(message)
            if event is None or "id" not in event:
                bad += 1
                continue
            foreign += event["source"] == FOREIGN_SOURCE
            ids.add(event["id"])
            assert iso(ts) <= AS_OF
        assert stamps == sorted(stamps)
    assert any(len(lines) == 500 for _, lines in log_lines)  # objects are cut at log_object_lines
    assert bad == truth["garbage_records"]["bus_log"] == 2
    assert foreign == truth["bad_records"]["bus_log"] == 2
    assert sum(len(lines) for _, lines in log_lines) == written["logs"]["lines"]


def test_both_payload_families_are_on_the_bus(log_lines):
    families = Counter()
    for _, lines in log_lines:
        for line in lines:
            e = parse_or_none(line.partition(" ")[2])
            if not e or "id" not in e or e["source"] == FOREIGN_SOURCE:
                continue
            if "ticket_event" in e["detail"]:
                te = e["detail"]["ticket_event"]
                assert e["source"] == "aws.partner/zendesk.com/9242270/default"
                assert e["detail-type"] == "Support Ticket: " + te["type"]
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", te["meta"]["occurred_at"])
                assert 1 <= te["meta"]["sequence"]["position"] <= te["meta"]["sequence"]["total"]
                families["legacy"] += 1
            else:
                d = e["detail"]
                assert d["type"].startswith("zen:event-type:ticket.")
                assert d["subject"] == f"zen:ticket:{d['detail']['id']}"
                assert e["detail-type"] == "Zendesk Webhook Event" and e["source"] == "zendesk.webhook"
                families["webhook"] += 1
    assert families["legacy"] > N / 4 and families["webhook"] > N / 4


def test_sink_parquet_files_and_commit_log(day, sink_rows):
    out, written, truth = day
    root = out / "stores/spark-output/events"
    f = next(root.glob("dt=*/hr=*/*.parquet"))
    schema = pq.read_schema(f)
    assert [(x.name, x.type) for x in schema] == [
        ("data", pa.binary()), ("streamName", pa.string()), ("partitionKey", pa.string()),
        ("sequenceNumber", pa.string()), ("approximateArrivalTimestamp", pa.timestamp("ms", tz="UTC"))]
    listed = {}
    for meta in sorted((root / "_spark_metadata").iterdir()):
        head, *entries = meta.read_text().split("\n")
        assert head == "v1" and re.fullmatch(r"\d+(\.compact)?", meta.name)
        entries = [e for e in entries if e]
        for line in entries:
            e = json.loads(line)
            assert e["action"] == "add" and e["isDir"] is False and e["path"].startswith("s3://spark-output/events/")
            rel = e["path"].removeprefix("s3://spark-output/events/")
            assert (root / rel).stat().st_size == e["size"]
            listed[rel] = e
    files = {str(p.relative_to(root)) for p in root.glob("dt=*/hr=*/*.parquet")}
    assert set(listed) <= files
    unlisted = files - set(listed)
    assert len(unlisted) == len(written["sink"]["uncommitted_files"]) >= 1
    for rel in files:
        m = PART.match(rel)
        assert m, rel
    bad = foreign = 0
    committed_seqs = Counter()
    for r in sink_rows:
        m = PART.match(r["file"])
        arrival = r["approximateArrivalTimestamp"]
        assert (m.group(1), m.group(2)) == (arrival.strftime("%Y-%m-%d"), arrival.strftime("%H"))
        assert arrival <= AS_OF and r["streamName"] == "zendesk-events"
        assert re.fullmatch(r"\d{56}", r["sequenceNumber"])
        event = parse_or_none(r["data"].decode())
        if event is None:
            bad += 1
            continue
        assert event["id"] == r["partitionKey"]
        foreign += event["source"] == FOREIGN_SOURCE
        if r["file"] in listed:
            committed_seqs[r["sequenceNumber"]] += 1
    assert bad == truth["garbage_records"]["sink"] == 1 and foreign == truth["bad_records"]["sink"] == 1
    assert max(committed_seqs.values()) == 1  # one sequence number per Kinesis record
    # the re-batched copies repeat committed rows exactly (same sequence numbers)
    copies = [r for r in sink_rows if r["file"] in unlisted]
    assert copies and all(committed_seqs[r["sequenceNumber"]] == 1 for r in copies)


def test_dlq_archive_messages(day, dlq_messages):
    _, written, truth = day
    assert len(dlq_messages) == written["dlq"]["messages"]
    targets, codes, bad, foreign = Counter(), Counter(), 0, 0
    for m in dlq_messages:
        assert set(m) == {"MessageId", "ReceiptHandle", "MD5OfBody", "Body", "Attributes", "MessageAttributes"}
        assert hashlib.md5(m["Body"].encode()).hexdigest() == m["MD5OfBody"]
        assert int(m["Attributes"]["SentTimestamp"]) <= AS_OF.timestamp() * 1000
        a = m["MessageAttributes"]
        assert set(a) == {"RULE_ARN", "TARGET_ARN", "ERROR_CODE", "ERROR_MESSAGE", "EXHAUSTED_RETRY_CONDITION",
                          "RETRY_ATTEMPTS"}
        assert all(v["DataType"] == "String" and isinstance(v["StringValue"], str) for v in a.values())
        assert a["RULE_ARN"]["StringValue"] == RULE_ARN
        assert a["EXHAUSTED_RETRY_CONDITION"]["StringValue"] in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds")
        assert a["RETRY_ATTEMPTS"]["StringValue"].isdigit()
        targets[a["TARGET_ARN"]["StringValue"]] += 1
        codes[a["ERROR_CODE"]["StringValue"]] += 1
        body = parse_or_none(m["Body"])
        bad += body is None
        foreign += body is not None and body["source"] == FOREIGN_SOURCE
    assert set(targets) == {KINESIS_ARN, LOGS_ARN}
    assert codes["THROTTLING"] > 0 and set(codes) & {"NO_PERMISSIONS", "TIMEOUT", "CONNECTION_FAILURE"}
    assert bad == truth["garbage_records"]["dlq"] == 1 and foreign == truth["bad_records"]["dlq"] == 1


def test_metrics_are_a_get_metric_data_response(day):
    out, _, _ = day
    doc = json.loads((out / "stores/metrics/get-metric-data.json").read_text())
    labels = [r["Label"] for r in doc["MetricDataResults"]]
    assert labels == ["Invocations", "FailedInvocations", "InvocationsSentToDlq", "InvocationsFailedToBeSentToDlq",
                      "ThrottledRules", "MatchedEvents"]
    for r in doc["MetricDataResults"]:
        assert r["StatusCode"] == "Complete" and len(r["Timestamps"]) == len(r["Values"]) > 0
        stamps = [iso(t) for t in r["Timestamps"]]
        assert all(t.minute % 5 == 0 and t.second == 0 for t in stamps)
        assert stamps == sorted(stamps, reverse=True)
    by = {r["Label"]: sum(r["Values"]) for r in doc["MetricDataResults"]}
    assert by["Invocations"] == pytest.approx(2 * by["MatchedEvents"], rel=0.05)


# --- truth -----------------------------------------------------------------------------------------------------------


def test_truth_counts_add_up(day):
    out, _, truth = day
    assert set(truth) >= {"window", "as_of", "params", "verdicts", "orphans", "unlogged_at_bus", "injected", "events",
                          "bad_records"}
    assert truth["window"] == {"start": "2026-11-23T00:00:00Z", "end": "2026-11-24T00:00:00Z"}
    assert truth["as_of"] == "2026-11-24T02:00:00Z"
    assert set(truth["verdicts"]) == set(VERDICTS)
    assert sum(truth["verdicts"].values()) == N == len(truth["events"])
    assert Counter(e["verdict"] for e in truth["events"].values()) == {k: v for k, v in truth["verdicts"].items() if v}
    t = pq.read_table(out / "truth.parquet")
    assert t.schema.names == ["source_id", "verdict", "fate", "eb_id", "cause", "faults"]
    assert t.num_rows == N
    assert truth["orphans"] >= 1 and truth["unlogged_at_bus"] >= 1
    assert truth["verdicts"]["excluded"] == truth["injected"]["not_mapped"]


def test_every_fault_is_injected_and_in_the_truth(day):
    _, _, truth = day
    seen = Counter(f for e in truth["events"].values() for f in e["faults"])
    for fault in FAULTS:
        assert truth["injected"][fault] >= 1, fault
        assert seen[fault] == truth["injected"][fault], fault
    assert truth["injected"]["orphans"] >= 1 and truth["injected"]["rebatch_batches"] == 1
    causes = Counter(e["cause"] for e in truth["events"].values() if e["verdict"] == "duplicated")
    # a re-batched copy sits outside Spark's commit log: readers that honour it (the default) see one copy
    assert {"replay", "redelivery"} <= set(causes) and "re-batched" not in causes


def test_truth_agrees_with_the_stores(day, log_lines, sink_rows, dlq_messages):
    """Recompute each verdict from the files alone, with docs/design.md's rules."""
    _, _, truth = day
    logged = Counter()
    for _, lines in log_lines:
        for line in lines:
            e = parse_or_none(line.partition(" ")[2])
            if e and "id" in e:
                logged[e["id"]] += 1
    meta = Path(sink_rows_root(day)) / "_spark_metadata"
    listed = {json.loads(line)["path"].removeprefix("s3://spark-output/events/")
              for f in meta.iterdir() for line in f.read_text().splitlines()[1:]}
    committed = [r for r in sink_rows if r["file"] in listed]  # readers honour the commit log (the default)
    rows = Counter(r["partitionKey"] for r in committed)
    seqs = {}
    replayed = set()
    for r in committed:
        seqs.setdefault(r["partitionKey"], set()).add(r["sequenceNumber"])
        e = parse_or_none(r["data"].decode())
        if e and "replay-name" in e:
            replayed.add(r["partitionKey"])
    dlq_k, dlq_any = {}, set()
    for m in dlq_messages:
        body = parse_or_none(m["Body"])
        if body:
            dlq_any.add(body["id"])
            if m["MessageAttributes"]["TARGET_ARN"]["StringValue"] == KINESIS_ARN:
                dlq_k.setdefault(body["id"], m["MessageAttributes"]["ERROR_CODE"]["StringValue"])
    # a connector event sent twice under two EventBridge ids (same sequence id and position) is one event
    group = {}
    texts = [line.partition(" ")[2] for _, ls in log_lines for line in ls] + [r["data"].decode() for r in sink_rows]
    for text in texts:
        ev = parse_or_none(text)
        te = ev and ev.get("detail", {}).get("ticket_event")
        if te:
            group.setdefault((te["meta"]["sequence"]["id"], te["meta"]["sequence"]["position"]), set()).add(ev["id"])
    twins = {eb: ids for ids in group.values() if len(ids) > 1 for eb in ids}
    for eb, ids in twins.items():
        if eb in {e["eb_id"] for e in truth["events"].values()}:
            logged[eb] = sum(logged[i] for i in ids)
            rows[eb] = sum(rows[i] for i in ids)
            seqs[eb] = set().union(*(seqs.get(i, set()) for i in ids)) | {"two ids"}
    unlogged = 0
    for sid, e in truth["events"].items():
        eb = e["eb_id"]
        anywhere = eb is not None and (logged[eb] or rows[eb] or eb in dlq_any)
        if e["verdict"] in ("excluded", "unverified"):  # unverified: the engine cannot tie its bus event to it
            continue
        if not anywhere:
            assert e["verdict"] in ("lost_before_bus", "pending"), (sid, e)
        elif rows[eb] > 1:
            assert e["verdict"] == "duplicated", (sid, e)
            want = "replay" if eb in replayed else "redelivery" if len(seqs[eb]) > 1 else "re-batched"
            assert e["cause"] == want, (sid, e)
        elif rows[eb] == 1:
            assert e["verdict"] == "delivered", (sid, e)
        elif eb in dlq_k:
            assert (e["verdict"], e["cause"]) == ("dead_lettered", dlq_k[eb]), (sid, e)
        else:
            assert e["verdict"] in ("pending", "lost_after_bus"), (sid, e)
        if e["verdict"] in ("delivered", "duplicated", "dead_lettered") and not logged[eb]:
            unlogged += 1
    assert unlogged == truth["unlogged_at_bus"]


def test_midnight_straddlers_land_in_the_next_days_partition(day, sink_rows):
    _, _, truth = day
    in_window = {e["eb_id"] for e in truth["events"].values() if e["eb_id"]}
    after = {r["partitionKey"] for r in sink_rows if r["file"].startswith("dt=2026-11-24/")}
    assert len(in_window & after) >= 3


def test_orphans_and_margin_events_have_no_truth_entry(day, sink_rows, log_lines):
    """Orphans: bus events (sink or log) no judged event owns -- injected ones, and those of unverified children
    (a kind the emission model lacks, with no sequence to tie it)."""
    _, _, truth = day
    known = {e["eb_id"] for e in truth["events"].values() if e["verdict"] != "unverified"}
    events = [r["data"].decode() for r in sink_rows] + [line.partition(" ")[2] for _, ls in log_lines for line in ls]
    # the second id of a resent connector event (same sequence id and position) belongs to its event too
    keys = {}
    for text in events:
        e = parse_or_none(text)
        te = e and e.get("detail", {}).get("ticket_event")
        if te:
            keys.setdefault((te["meta"]["sequence"]["id"], te["meta"]["sequence"]["position"]), set()).add(e["id"])
    known |= {i for ids in keys.values() if ids & known for i in ids}
    times = {}
    for text in events:
        e = parse_or_none(text)
        if e and "id" in e and e["id"] not in known and e.get("source") != FOREIGN_SOURCE:
            te = e["detail"].get("ticket_event")
            times[e["id"]] = iso(te["meta"]["occurred_at"][:26] + "Z" if te else e["detail"]["time"])
    in_window = [k for k, t in times.items() if START <= t < END]
    outside = [k for k, t in times.items() if not START <= t < END]
    assert len(in_window) == truth["orphans"] and outside  # margin events: in the stores, not judged


def test_same_seed_same_bytes(tmp_path):
    params = SimParams(events=500, seed=11)
    for name in ("a", "b"):
        write_stores(simulate(params), tmp_path / name)

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    other = simulate(SimParams(events=500, seed=12))
    assert not other.truth.equals(simulate(params).truth)


def test_no_faults_means_everything_is_delivered(tmp_path):
    zero = dict(loss_before_bus=0, spike_late=0, spike_dlq=0, spike_drop=0, dlq_rate=0, drop_rate=0, redelivery=0,
                rebatch_batches=0, replay=0, log_target_failure=0, in_flight=0, orphans=0, not_mapped=0,
                unknown_kind=0, silent_kind=0, resent=0,
                bad_records=False, margin_events=False, truth_json=False)
    write_stores(simulate(SimParams(events=400, **zero)), tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert "events" not in truth
    assert truth["verdicts"]["delivered"] == 400
    assert truth["orphans"] == 0 and truth["unlogged_at_bus"] == 0
    assert all(v == 0 for k, v in truth["injected"].items() if k not in ("midnight_straddler", "echo_updates"))
    assert not (tmp_path / "stores/dlq-archive/messages.jsonl").read_text()


def test_bad_params_are_refused():
    with pytest.raises(ConfigError, match="between 0 and 1"):
        SimParams(redelivery=1.5)
    with pytest.raises(ConfigError, match="divide an hour"):
        SimParams(batch_seconds=7)


def test_moto_starts_from_a_folder_holding_a_module_it_imports(tmp_path, monkeypatch):
    """`reconcile demo` run from a folder with a stray werkzeug.py (a module moto's server imports): the folder is
    not put on the server's sys.path, so the demo still starts (it failed with "moto server did not start")."""
    from reconcile.simulate.aws_load import start_moto
    (tmp_path / "werkzeug.py").write_text('raise SystemExit("a stray module, not werkzeug")\n')
    monkeypatch.chdir(tmp_path)
    server = start_moto()
    try:
        assert urllib.request.urlopen(server.endpoint + "/moto-api/", timeout=5).status == 200
    finally:
        server.stop()
