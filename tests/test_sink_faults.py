"""Spark-sink faults (issue 12): schema drift, Spark's commit log, crash leftovers, partition time zones.

Whole runs over moto and the Zendesk-compatible server (tests/faultrun.py) assert the exit code, the status, that the
summary and the report name the problem, and that no verdict changed silently; the commit-log cases read real Spark
output (tests/fixtures/spark, written by PySpark's file sink: make_fixture.py there says how).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import faultrun
from reconcile import alert, completeness, emission
from reconcile.aws import make_client
from reconcile.config import AwsConfig, MatchConfig, SinkConfig
from reconcile.errors import ConfigError
from reconcile.sources import sink
from reconcile.window import Window

pytestmark = pytest.mark.usefixtures("restore_environment")  # the demo code sets env vars

SPARK = Path(__file__).parent / "fixtures" / "spark"
SPARK_IDS = json.loads((SPARK / "ids.json").read_text())
DAY = Window(start=datetime(2026, 11, 23, tzinfo=timezone.utc), end=datetime(2026, 11, 24, tzinfo=timezone.utc),
             as_of=datetime(2026, 11, 25, tzinfo=timezone.utc))
LOCAL = AwsConfig()


def ids_in(path: Path) -> set[str]:
    return set(pq.read_table(path, columns=["partitionKey"])["partitionKey"].to_pylist())


def events_of(res: faultrun.FaultRun, eb_ids: set[str]) -> set[str]:
    t = res.truth_table
    return set(t.filter(pc.is_in(t["eb_id"], pa.array(sorted(eb_ids), pa.string())))["source_id"].to_pylist())


# ------------------------------------------------------------------------------------------- whole runs over servers


def test_uncommitted_copies_neither_deliver_nor_duplicate(moto, tmp_path):
    """The simulator writes a micro-batch twice, the copy outside _spark_metadata (a retried batch). Spark's readers
    see one copy: so do we by default. The leftover files are named and read as evidence, and no copy there counts
    beside the committed one."""
    res = faultrun.run(moto, tmp_path, rebatch_batches=2)
    sink_in = res.input("sink")
    assert res.changed == {}
    assert (res.outcome.summary["status"], res.outcome.exit_code) == ("loss", 2)
    assert sink_in["complete"] and sink_in["details"]["leftover_files"] >= 2
    assert sink_in["details"]["honour_commit_log"] is True
    assert sorted(sink_in["details"]["uncommitted_files"]) == sorted(sink_in["details"]["leftover_names"])
    assert res.outcome.summary["outside_commit_log"] == 0  # every event there has its committed copy
    assert all(n in res.report_text for n in sink_in["details"]["leftover_names"])
    assert "not in Spark's commit log" in res.report_text


@pytest.mark.parametrize("retention", ["1h", None, "3650d"], ids=["retention", "no-retention", "too-recent"])
def test_entries_the_retention_expired_are_no_loss_on_a_rerun(moto, tmp_path, retention):
    """Spark's `retention` option drops entries older than it from each compact while their files stay (real Spark
    doing so: tests/fixtures/spark/retention). Here the latest compact of the day loses every other entry, as it
    would lose old ones on a run or a re-run days later: with [sink] retention set, the events in those files landed,
    so none may be called lost. Without it (Spark's default: no entry ever expires) the same files are leftovers of
    failed batches, which Spark's readers never see: their events are lost after the bus, and the alert says so. And
    with a retention longer than the time since their rows arrived ("3650d": the compaction is today, the day's rows
    came days ago), no compaction can have expired their entries: leftovers, lost after the bus (they were delivered,
    a false clean: sink review)."""
    hit = {}

    def expire(stores, aws):  # in the bucket as loaded (the loader rebuilds the log from what the batches listed)
        s3, bucket, log = make_client("s3", aws), "spark-output", "events/_spark_metadata/"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=log)["Contents"]]
        latest = max((k for k in keys if k.endswith(".compact")), key=lambda k: int(k[len(log):].split(".")[0]))
        version, *entries = [x for x in s3.get_object(Bucket=bucket, Key=latest)["Body"].read().decode().split("\n")
                             if x]
        s3.put_object(Bucket=bucket, Key=latest, Body="\n".join([version] + entries[::2]).encode())
        for e in entries[1::2]:
            body = s3.get_object(Bucket=bucket, Key=json.loads(e)["path"].split(f"s3://{bucket}/", 1)[1])["Body"]
            hit.setdefault("ids", set()).update(pq.read_table(pa.BufferReader(body.read()))["partitionKey"].to_pylist())

    res = faultrun.run(moto, tmp_path, after_load=expire, sink={"retention": retention})
    sink_in = res.input("sink")
    assert hit["ids"] and sink_in["complete"] and sink_in["details"]["leftover_files"] >= 1
    landed = events_of(res, hit["ids"])
    if retention == "3650d":
        assert landed and set(res.changed) <= landed
        assert ("delivered", "lost_after_bus") in {(res.truth[i], res.found[i]) for i in res.changed}
        lost = res.outcome.summary["outside_commit_log_lost"]
        assert lost > 0 and res.outcome.summary["outside_commit_log_counts"] == "expired"
        assert f"delivered but {lost:,} lost after the bus (leftovers written too recently" in \
            alert.message(res.outcome.summary, "r")[1]
        return
    if retention is None:
        assert landed and set(res.changed) <= landed
        # found only in those files: lost after the bus; a second copy there: the one committed copy counts
        pairs = {(res.truth[i], res.found[i]) for i in res.changed}
        assert ("delivered", "lost_after_bus") in pairs and pairs <= {
            ("delivered", "lost_after_bus"), ("duplicated", "lost_after_bus"), ("duplicated", "delivered"),
            ("delivered", "pending")}
        # the newest rows among them: without them the sink has not read the stream as far, so their losses are held
        # (rules.sql beyond_sink)
        held = {i for i in res.changed if res.found[i] == "pending"}
        rows = pq.read_table(tmp_path / "run" / "verdicts.parquet",
                             columns=["source_id", "would_be", "cause"]).to_pylist()
        assert all(r["would_be"] == "lost_after_bus" and "the sink holds what the stream received until" in r["cause"]
                   for r in rows if r["source_id"] in held)
        outside = res.outcome.summary["outside_commit_log"]
        assert outside > 0 and res.outcome.summary["outside_commit_log_counts"] == "leftover"
        assert f"Outside Spark's commit log: {outside:,} event(s) only in files the log does not list, lost after " \
               f"the bus" in alert.message(res.outcome.summary, "r")[1]
        assert "these are leftovers of failed or retried batches" in " ".join(res.report_text.split())
        return
    assert res.changed == {}, res.changed
    assert (res.outcome.summary["status"], res.outcome.exit_code) == ("loss", 2)  # the day's true losses only
    outside = res.outcome.summary["outside_commit_log"]
    assert 0 < outside <= len(landed)
    assert re.search(rf"Outside Spark's commit log:\s+{outside}\b", res.report_text)
    # and the alert says so, although no loss rests on them: Spark's readers do not see those events
    data = {d["MetricName"]: d["Value"] for d in alert.metric_data(res.outcome.summary, "r", datetime.now(timezone.utc))
            if len(d["Dimensions"]) == 1}
    assert data["OutsideCommitLog"] == outside
    assert f"Outside Spark's commit log: {outside:,} event(s) only in files the log does not list, delivered" in \
        alert.message(res.outcome.summary, "r")[1]


def test_readers_that_ignore_the_commit_log_see_re_batched_duplicates(moto, tmp_path):
    res = faultrun.run(moto, tmp_path, rebatch_batches=2, sink={"honour_commit_log": False})
    sink_in = res.input("sink")
    assert sink_in["complete"] and sink_in["details"]["uncommitted_files"]
    rebatched = {r["source_id"] for r in res.truth_table.select(["source_id", "faults"]).to_pylist()
                 if "rebatch" in (r["faults"] or [])}
    assert rebatched and res.changed and set(res.changed) <= rebatched
    assert {v for v, _ in res.changed.values()} == {"duplicated"}
    assert res.outcome.exit_code == 2


def test_a_zero_byte_leftover_of_a_crashed_task_is_named_not_a_problem(moto, tmp_path):
    def crash(stores):
        first = faultrun.sink_files(stores)[len(faultrun.sink_files(stores)) // 2]
        (first.parent / "part-00007-7f1c0de0-0000-4000-8000-crashed00000.c000.snappy.parquet").write_bytes(b"")

    res = faultrun.run(moto, tmp_path, mutate=crash)
    sink_in = res.input("sink")
    assert res.changed == {} and res.outcome.exit_code == 2 and sink_in["complete"], sink_in["problems"]
    assert any("crashed00000" in n for n in sink_in["details"]["leftover_names"])
    assert "crashed00000" in res.report_text


def drift(column: str, make):
    """A mutation replacing one committed file's `column` with make(table) (same rows, other type)."""
    hit = {}

    def mutate(stores):
        f = faultrun.committed_files(stores)[3]
        t = pq.read_table(f)
        hit["file"], hit["ids"] = f, ids_in(f)
        i = t.schema.get_field_index(column)
        pq.write_table(t.set_column(i, column, make(t)), f)
        faultrun.recommit(stores, f)

    return mutate, hit


@pytest.mark.parametrize("column, make", [
    ("data", lambda t: pa.array(range(t.num_rows), pa.int64())),
    # a job that parses `data` into columns (PIPELINE.md): a struct where the text was
    ("data", lambda t: pa.array([{"id": str(i), "detail": {"n": i}} for i in range(t.num_rows)])),
    ("partitionKey", lambda t: pa.array([i % 6 for i in range(t.num_rows)], pa.int64())),
    ("approximateArrivalTimestamp", lambda t: pa.array(["yesterday"] * t.num_rows)),
    ("approximateArrivalTimestamp", lambda t: pa.array(range(t.num_rows), pa.int64())),
], ids=["data-int64", "data-struct", "partitionKey-int64", "arrival-text", "arrival-int64"])
def test_schema_drift_is_a_reject_naming_file_and_column_never_a_crash(moto, tmp_path, column, make):
    mutate, hit = drift(column, make)
    res = faultrun.run(moto, tmp_path, mutate=mutate)
    sink_in = res.input("sink")
    assert (res.outcome.summary["status"], res.outcome.exit_code) == ("incomplete", 3)
    assert not sink_in["complete"] and sink_in["rejected"] >= len(hit["ids"])
    named = [p for p in sink_in["problems"] if hit["file"].name in p and repr(column) in p]
    assert named, sink_in["problems"]
    assert hit["file"].name in res.report_text
    # the run says it is incomplete, and calls nothing lost on a sink read in part: the rejected file's events and
    # the day's true losses alike are held pending (with what each would be and why not), to be judged again
    rejected = events_of(res, hit["ids"])
    assert rejected & set(res.changed)
    assert_only_losses_held(res, rejected)


def test_arrival_as_iso_text_is_read(moto, tmp_path):
    mutate, hit = drift("approximateArrivalTimestamp", lambda t: pc.strftime(
        t["approximateArrivalTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    res = faultrun.run(moto, tmp_path, mutate=mutate)
    assert res.changed == {} and res.input("sink")["complete"] and res.outcome.exit_code == 2


def assert_only_losses_held(res, also=frozenset()):
    """The run differs from the truth only where a loss is held pending (a store read in part: queries/rules.sql
    loss_held_by), or for events in `also` (those whose records could not be read), which are held too."""
    losses = {r["verdict"]: r["loss_hop"] for r in emission.verdict_rows() if r["loss_hop"]}
    for sid, (found, truth) in res.changed.items():
        assert found == "pending" and (sid in also or truth in losses), (sid, found, truth)
    # each held event says what it would be; the summary counts them per hop (the alert's HeldEvents)
    v = pq.read_table(res.outcome.out_dir / "verdicts.parquet",
                      columns=["source_id", "expected_id", "verdict", "would_be", "cause"]).to_pylist()
    held = [r for r in v if r["would_be"] is not None]
    assert held and all(r["verdict"] == "pending" and r["cause"].startswith(f"would be {r['would_be']}, but ")
                        for r in held)
    per_hop = {h["name"]: h["held"] for h in res.outcome.summary["hops"]}
    assert per_hop == {hop: sum(1 for r in held if r["source_id"] == r["expected_id"] and losses[r["would_be"]] == hop)
                       for hop in per_hop}


def test_a_garbage_line_in_the_commit_log_is_a_problem_not_skipped(moto, tmp_path):
    hit = {}

    def garble(stores):
        logs = (stores / "spark-output" / "events" / "_spark_metadata").iterdir()
        log = max(logs, key=lambda f: int(f.name.split(".")[0]))  # the latest batch: one Spark's readers read
        log.write_text(log.read_text() + "\n{half an entry\n")
        hit["log"] = log

    res = faultrun.run(moto, tmp_path, mutate=garble)
    sink_in = res.input("sink")
    assert (res.outcome.summary["status"], res.outcome.exit_code) == ("incomplete", 3)
    assert any(f"_spark_metadata/{hit['log'].name}" in p and "not commit entries" in p for p in sink_in["problems"])
    assert "not commit entries" in res.report_text
    # the entries that could be read still say which files are committed: no event's verdict changed, but the day's
    # losses are held pending while the sink was read in part
    assert_only_losses_held(res)


def test_partitions_in_another_time_zone_lose_no_in_window_row(moto, tmp_path):
    """The Spark job's session time zone is America/New_York: dt=/hr= are local hours. With the zone configured, and
    with the zone left at UTC (wrong), every in-window row is still read."""
    ny = ZoneInfo("America/New_York")

    def to_new_york(stores):
        root = stores / "spark-output" / "events"
        moved = {}
        for f in faultrun.sink_files(stores):
            rel = f.relative_to(root)
            dt, hr = rel.parts[0][3:], rel.parts[1][3:]
            local = datetime.strptime(f"{dt} {hr}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc).astimezone(ny)
            new = Path(f"dt={local:%Y-%m-%d}") / f"hr={local:%H}" / rel.name
            (root / new).parent.mkdir(parents=True, exist_ok=True)
            f.rename(root / new)
            moved[str(rel)] = str(new)
        for log in (root / "_spark_metadata").iterdir():
            text = log.read_text()
            for old, new in moved.items():
                text = text.replace(f"/events/{old}", f"/events/{new}")
            log.write_text(text)

    res = faultrun.run(moto, tmp_path, mutate=to_new_york)
    assert res.changed == {} and res.outcome.exit_code == 2 and res.input("sink")["complete"]
    res = faultrun.run(moto, tmp_path / "zoned", mutate=to_new_york, sink={"partition_time_zone": "America/New_York"})
    assert res.changed == {} and res.outcome.exit_code == 2


# ------------------------------------------------------------------------------ real Spark output (PySpark fixture)


def spark_copy(tmp_path: Path, fmt: str) -> Path:
    return Path(shutil.copytree(SPARK / fmt, tmp_path / fmt))


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_real_spark_output_reads_latest_compact_plus_later_batches(fmt):
    res = sink.read(SinkConfig(uri=str(SPARK / fmt), format=fmt), DAY, LOCAL)
    assert res.complete, res.problems
    assert sorted(map(str, res.ledger["eb_id"].to_pylist())) == sorted(SPARK_IDS)
    assert res.ledger["committed"].to_pylist() == [True] * len(SPARK_IDS)
    d = res.details
    assert d["latest_batch"] == 4 and d["compact"].endswith("_spark_metadata/2.compact") and d["log_files_read"] == 3
    assert {fp["key"].rsplit("/", 1)[1] for fp in res.fingerprints} >= {"2.compact", "3", "4"}  # inputs, too
    assert d["leftover_files"] == 0  # the JSON sink's `minute=00%3A30` folders are `%253A` in the log: decoded
    # arrival times of the New York session are read as instants (00:30Z is 19:30 the day before in New York)
    assert min(res.ledger["observed_at"].to_pylist()) == datetime(2026, 11, 23, 0, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("fmt, folder", [("parquet", "parsed"), ("json", "parsed-json")])
def test_real_spark_output_of_a_job_that_parsed_the_record_into_columns_is_read(fmt, folder, tmp_path):
    """tests/fixtures/spark/parsed*: the job parsed `data` with from_json into the event's own columns (PIPELINE.md
    §6: "Jobs usually parse data to JSON columns"; `time` a timestamp, `detail` a struct) and wrote no `data`. Every
    file was rejected ("column 'data' not found ... the schema changed") and the sink never complete: the row is the
    event, read by the same paths. Parquet's timestamp comes out as UTC, the JSON writer's in the session's zone
    (-05:00): the same instants."""
    ids = json.loads((SPARK / "parsed-ids.json").read_text())
    for id_column in ("partitionKey", "id"):
        res = sink.read(SinkConfig(uri=str(SPARK / folder), format=fmt, id_column=id_column), DAY, LOCAL)
        assert res.complete and res.rejects.num_rows == 0, (res.problems, res.rejects.to_pylist()[:1])
        got = res.ledger.to_pylist()
        assert sorted(str(r["eb_id"]) for r in got) == sorted(ids)
        assert res.details["rows_as_columns"] == len(ids) and res.details["leftover_files"] == 0
        first = min(got, key=lambda r: r["observed_at"])
        assert (first["ticket_id"], first["event_type"], first["sequence_position"]) == (1000, "Comment Created", 1)
        assert first["event_time"] == datetime(2026, 11, 23, 0, 30, 0, 123000, tzinfo=timezone.utc)
        assert first["observed_at"] == datetime(2026, 11, 23, 0, 30, tzinfo=timezone.utc)
    # a file with neither `data` nor the event's fields is still a drift, named
    broken = pa.table({"partitionKey": [ids[0]], "other": ["x"]})
    root = tmp_path / "drift"
    (root / "dt=2026-11-23" / "hr=10").mkdir(parents=True)
    pq.write_table(broken, root / "dt=2026-11-23" / "hr=10" / "part-00000-x.c000.snappy.parquet")
    res = sink.read(SinkConfig(uri=str(root), honour_commit_log=False), DAY, LOCAL)
    assert not res.complete and "nor the event's own fields (a 'detail' column)" in res.problems[0]


def test_real_spark_retention_expires_entries_whose_files_stay_and_they_are_read():
    """tests/fixtures/spark/retention: real Spark with the sink's `retention` option (1 s) compacted batches 0 and 1's
    entries away at batch 2; their files stay. Spark's readers no longer see them; we read them as evidence
    (committed = false), so their events are found, and the read is complete."""
    ids = json.loads((SPARK / "retention-ids.json").read_text())
    res = sink.read(SinkConfig(uri=str(SPARK / "retention")), DAY, LOCAL)
    assert res.complete, res.problems
    d = res.details
    assert d["compact"].endswith("_spark_metadata/2.compact") and d["leftover_files"] == 2
    got = dict(zip(map(str, res.ledger["eb_id"].to_pylist()), res.ledger["committed"].to_pylist()))
    assert sorted(got) == sorted(ids)
    assert [got[i] for i in ids] == [False] * 6 + [True] * 9  # batches 0 and 1 (3 rows each) expired
    # their rows arrived long before the compaction less the retention: they may be expired entries (they are)
    res = sink.read(SinkConfig(uri=str(SPARK / "retention"), retention="1s"), DAY, LOCAL)
    assert res.details["unexpired_files"] == []


def test_a_file_outside_the_log_too_recent_for_the_retention_to_have_expired_is_a_leftover(tmp_path):
    """A batch's file written, its commit never (a crash, the retry committing nothing): with [sink] retention set its
    rows counted as an expired entry's, delivered (sink review). Spark drops an entry only when compacting, and only
    one written more than the retention before: a file whose rows arrived after the latest compact less the retention
    cannot be one. Named in the details (unexpired_files), its rows are no copy (queries/bus_events.sql)."""
    root = spark_copy(tmp_path, "parquet")
    src = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    stray = src.with_name("part-00009-0c0c0c0c-0000-4000-8000-leftover0000.c000.snappy.parquet")
    stray.write_bytes(src.read_bytes())
    for retention, unexpired in (("3650d", [str(stray)]), ("1s", [])):  # this copy's compact is written today
        res = sink.read(SinkConfig(uri=str(root), retention=retention), DAY, LOCAL)
        assert res.details["uncommitted_files"] == [str(stray)] and res.details["unexpired_files"] == unexpired
    assert "unexpired_files" not in sink.read(SinkConfig(uri=str(root)), DAY, LOCAL).details


@pytest.mark.parametrize("honour", [True, False])
def test_an_unreadable_file_outside_the_log_makes_the_read_incomplete(tmp_path, honour):
    """A file outside the log may be an entry the retention expired: its rows are evidence like a committed file's.
    One that cannot be read (cut short, another schema) makes the sink incomplete and is named, so no event it may
    hold is called lost; a 0-byte file of a crashed task holds nothing and stays harmless."""
    root = spark_copy(tmp_path, "parquet")
    src = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    cut = src.with_name("part-00003-0c0c0c0c-0000-4000-8000-cutshort0000.c000.snappy.parquet")
    cut.write_bytes(src.read_bytes()[:-40])
    cfg = SinkConfig(uri=str(root), honour_commit_log=honour)
    res = completeness.decide(sink.read(cfg, DAY, LOCAL), others_have_records=True)
    assert not res.complete and any(cut.name in p for p in res.problems), res.problems
    assert cut.name in res.rejects["source_ref"][0].as_py()
    assert sorted(map(str, res.ledger["eb_id"].to_pylist())) == sorted(SPARK_IDS)
    cut.write_bytes(b"")
    assert completeness.decide(sink.read(cfg, DAY, LOCAL), others_have_records=True).complete


def test_an_entry_only_in_a_lingering_old_batch_file_is_not_committed(tmp_path):
    """With the sink's `retention` option Spark drops expired entries when it compacts; the old batch files linger
    until cleanup. Spark reads only the latest compact and later batches, so such a file is not committed: its rows
    are read as evidence outside the log (the engine counts no copy there beside a committed one)."""
    root = spark_copy(tmp_path, "parquet")
    src = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    expired = src.with_name("part-00000-0e0e0e0e-0000-4000-8000-expired00000.c000.snappy.parquet")
    shutil.copy(src, expired)
    batch0 = root / "_spark_metadata" / "0"
    entry = json.loads(batch0.read_text().splitlines()[1])
    entry["path"] = entry["path"].rsplit("/", 1)[0].replace("dt=2026-11-22/hr=19", "dt=2026-11-23/hr=05") \
        + "/" + expired.name
    batch0.write_text(batch0.read_text() + "\n" + json.dumps(entry))
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert res.complete and res.details["leftover_files"] == 1 and "expired00000" in res.details["leftover_names"][0]
    committed = res.ledger.filter(res.ledger["committed"])
    assert sorted(map(str, committed["eb_id"].to_pylist())) == sorted(SPARK_IDS)
    outside = res.ledger.filter(pc.invert(res.ledger["committed"]))
    assert set(map(str, outside["eb_id"].to_pylist())) == ids_in(src) and outside.num_rows == len(ids_in(src))


def test_an_event_that_landed_days_late_is_read_when_judged_as_of_then(tmp_path):
    """Spark catching up after an outage (Kinesis kept the records), a DLQ redrive or a replay by hand: an event of
    the day lands three days later, in that day's partition. A run as of five days later reads the sink up to then
    (Window.sink_read_end), so the event is found, not judged lost for a partition it did not read."""
    root = spark_copy(tmp_path, "parquet")
    src = next(root.glob("dt=2026-11-23/hr=15/*.parquet"))
    late = root / "dt=2026-11-26" / "hr=10" / src.name.replace("part-00000", "part-00009")
    late.parent.mkdir(parents=True)
    shutil.copy(src, late)
    batch = root / "_spark_metadata" / "5"  # Spark commits the late batch after batch 4
    entry = json.loads((root / "_spark_metadata" / "4").read_text().splitlines()[1])
    batch.write_text("v1\n" + json.dumps(dict(entry, path="file://" + str(late), size=late.stat().st_size)))
    late_rows = pq.read_metadata(late).num_rows
    as_of_then = replace(DAY, as_of=DAY.end + timedelta(days=5))
    res = sink.read(SinkConfig(uri=str(root)), as_of_then, LOCAL)
    assert res.complete, res.problems
    assert len(res.ledger) == len(SPARK_IDS) + late_rows
    assert any("dt=2026-11-26" in r for r in res.ledger["source_ref"].to_pylist())
    # as of a day after (within the read range) the run reads what it always read; and the read reaches at most
    # [window] carry_back past the read range, however late the window is judged
    assert len(sink.read(SinkConfig(uri=str(root)), DAY, LOCAL).ledger) == len(SPARK_IDS)
    capped = replace(as_of_then, carry_back=timedelta(hours=1))
    assert capped.sink_read_end == DAY.read_end + timedelta(hours=1)
    assert len(sink.read(SinkConfig(uri=str(root)), capped, LOCAL).ledger) == len(SPARK_IDS)


@pytest.mark.parametrize("damage, said", [
    (lambda m: (m / "3").unlink(), "lacks batch file(s) 3"),
    (lambda m: (m / "4").write_text("v2\n" + (m / "4").read_text().split("\n", 1)[1]), "is version v2"),
    (lambda m: (m / "4").write_text("{}\n"), "does not start with the version line"),
    # a stray file named like an epoch second: the walk from the compact to it listed a billion batch ids (MemoryError)
    (lambda m: (m / "1700000000").write_text((m / "4").read_text()), "lacks batch file(s) 5, 6, 7, 8, 9, 10, 11, "
                                                                       "12, 13, 14 ... (1,699,999,995 in all)"),
    # an entry whose path does not URL-decode to text stopped the run (exit 4), not the log named as damaged
    (lambda m: (m / "4").write_text((m / "4").read_text().replace("part-", "part-%FF", 1)), "are not commit entries"),
], ids=["missing-batch", "newer-version", "no-version", "stray-number", "undecodable-path"])
def test_a_commit_log_spark_cannot_read_makes_the_sink_incomplete(tmp_path, damage, said):
    root = spark_copy(tmp_path, "parquet")
    damage(root / "_spark_metadata")
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert not res.complete and any(said in p for p in res.problems), res.problems
    # for readers that ignore the log it only flags copies: said, and every file is read
    ignored = sink.read(SinkConfig(uri=str(root), honour_commit_log=False), DAY, LOCAL)
    assert ignored.complete and any(said in p for p in ignored.problems) and len(ignored.ledger) == len(SPARK_IDS)


def test_a_committed_file_missing_from_the_listing_makes_the_sink_incomplete(tmp_path):
    """A file the commit log lists as committed but the bucket no longer holds (a lifecycle rule, a partial copy, a
    delete): its rows are missing, so the sink is not complete (Spark's own readers fail on such an output)."""
    root = spark_copy(tmp_path, "parquet")
    gone = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    kept = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    gone.unlink()
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert kept.complete and kept.details["committed_missing"] == 0
    assert not res.complete and res.details["committed_missing"] == 1
    assert res.details["committed_missing_names"] == [f"dt=2026-11-23/hr=05/{gone.name}"]
    assert any("lists as committed are not in the listing" in p and gone.name in p for p in res.problems)
    assert len(res.ledger) < len(kept.ledger)


def test_a_committed_file_cut_at_a_line_end_or_emptied_makes_the_sink_incomplete(tmp_path):
    """Spark records each committed file's size (SinkFileStatus.size). A JSON file cut at a line end, or emptied,
    still reads without an error, its rows silently fewer: the size it no longer has makes the sink incomplete, the
    file named, so none of its events is called lost."""
    root = spark_copy(tmp_path, "json")
    f = sorted(root.glob("dt=2026-11-23/*/*.json"))[0]
    whole = f.read_bytes()
    for cut in (whole[:whole.rstrip(b"\n").rfind(b"\n") + 1], b""):
        f.write_bytes(cut)
        res = sink.read(SinkConfig(uri=str(root), format="json"), DAY, LOCAL)
        assert not res.complete and res.details["committed_resized"] == 1, res.problems
        assert any("not the size Spark's commit log" in p and f.name in p and f"{len(whole):,} bytes committed" in p
                   for p in res.problems), res.problems


def test_a_flipped_bit_in_a_parquet_page_makes_the_sink_incomplete(tmp_path):
    """parquet-mr writes page checksums; read without verifying them, a flipped bit changes an id into none (a false
    loss). Verified, the page fails to read: the file is named and the sink incomplete."""
    root = spark_copy(tmp_path, "parquet")
    f = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    data = bytearray(f.read_bytes())
    data[494] ^= 0x01
    f.write_bytes(bytes(data))
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert not res.complete and any(f.name in p for p in res.problems), res.problems


def test_a_committed_file_of_a_format_not_read_makes_the_sink_incomplete(tmp_path):
    """A committed file the reader does not take (another codec's suffix, or [sink] format set wrong) holds rows
    that are not read: a problem naming it, not a file silently passed over (and not one called missing)."""
    root = spark_copy(tmp_path, "parquet")
    src = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    other = src.with_name("part-00009-0e0e0e0e-0000-4000-8000-otherformat0.c000.json.bz2")
    other.write_bytes(b"BZh9")
    batch = root / "_spark_metadata" / "4"
    entry = json.loads(batch.read_text().splitlines()[1])
    entry["path"] = entry["path"].rsplit("/", 3)[0] + "/dt=2026-11-23/hr=05/" + other.name
    batch.write_text(batch.read_text().rstrip("\n") + "\n" + json.dumps(entry) + "\n")
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert not res.complete and res.details["committed_not_read"] == 1 and res.details["committed_missing"] == 0
    assert any("are not parquet files this reader takes" in p and other.name in p for p in res.problems), res.problems
    assert sorted(map(str, res.ledger["eb_id"].to_pylist())) == sorted(SPARK_IDS)


def test_without_a_commit_log_a_data_file_of_a_format_not_read_makes_the_sink_incomplete(tmp_path):
    """No commit log to say what was committed: a non-empty Spark data file (part-*) of another codec beside the
    files read holds rows nobody read -- a problem naming it, never a sink read whole. Other files are not data."""
    root = spark_copy(tmp_path, "parquet")
    shutil.rmtree(root / "_spark_metadata")
    hour = next(root.glob("dt=2026-11-23/hr=05"))
    other = hour / "part-00009-0e0e0e0e-0000-4000-8000-otherformat0.c000.json.bz2"
    other.write_bytes(b"BZh9")
    (hour / "README.txt").write_text("written by the team, not by Spark")
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert not res.complete
    assert any("named as Spark's data files" in p and other.name in p for p in res.problems), res.problems
    assert not any("README" in p for p in res.problems)
    assert sorted(map(str, res.ledger["eb_id"].to_pylist())) == sorted(SPARK_IDS)
    other.unlink()
    whole = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    # read whole, but not in silence: every file counted as committed, which a missing log would make a lie
    assert whole.complete and any("No _spark_metadata/ at or above" in p for p in whole.problems), whole.problems
    assert not any("_spark_metadata" in p for p in sink.read(SinkConfig(uri=str(root), honour_commit_log=False),
                                                             DAY, LOCAL).problems)


def test_without_a_commit_log_files_are_read_as_spark_reads_them(tmp_path):
    """Spark's readers leave out `_x`, `.x` and `x._COPYING_`, not a partition folder `_x=v` (InMemoryFileIndex
    .shouldFilterOutPathName): rows under `_batch=7/` are read, a copy in progress is not."""
    root = spark_copy(tmp_path, "parquet")
    shutil.rmtree(root / "_spark_metadata")
    part = next(root.glob("dt=2026-11-23/hr=*/part-*.parquet"))
    moved = part.parent / "_batch=7" / part.name
    moved.parent.mkdir()
    part.rename(moved)
    shutil.copy(moved, part.parent / (part.name + "._COPYING_"))
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert res.complete and sorted(map(str, res.ledger["eb_id"].to_pylist())) == sorted(SPARK_IDS)


def test_uri_below_the_commit_log_uses_the_log_and_is_incomplete_without_the_rest_of_the_range(tmp_path):
    """[sink] uri set to one day's folder below Spark's output: its commit log (above) is applied, and the committed
    files it lists in the read range's other partitions -- the events of the 23rd (UTC) the job wrote under
    dt=2026-11-22 in New York -- were never listed: the read is incomplete and names the folder to set."""
    root = spark_copy(tmp_path, "parquet")
    (root / "dt=2026-11-23" / "hr=10" / "part-00001-0f0f0f0f-0000-4000-8000-leftover0000.c000.snappy.parquet") \
        .write_bytes(b"")
    res = sink.read(SinkConfig(uri=str(root / "dt=2026-11-23")), DAY, LOCAL)
    assert res.details["commit_log"] and res.details["leftover_files"] == 1
    assert any("is below Spark's output folder" in p and str(root) in p for p in res.problems)
    assert len(res.ledger) == 12  # the four batches written on the 23rd in New York
    assert not res.complete and res.details["committed_outside_uri"] == 1
    assert any("dt=2026-11-22/hr=19/" in p and "are outside [sink] uri" in p and f"Set [sink] uri = {root} " in p
               for p in res.problems), res.problems
    assert sink.read(SinkConfig(uri=str(root)), DAY, LOCAL).records == 15


def test_a_parquet_file_whose_footer_miscounts_its_rows_is_a_reject_not_a_crash(tmp_path):
    """One flipped bit in a committed file's footer (FileMetaData.num_rows of Spark's hr=05 file: -4, its row group
    still 3): the file is rejected and the read incomplete, not the whole run failed on a table of uneven columns."""
    root = spark_copy(tmp_path, "parquet")
    f = next(root.glob("dt=2026-11-23/hr=05/*.parquet"))
    data = bytearray(f.read_bytes())
    data[1287] ^= 1
    f.write_bytes(bytes(data))
    meta = pq.ParquetFile(f).metadata
    assert (meta.num_rows, meta.row_group(0).num_rows) == (-4, 3)  # the damage this test is about
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert not res.complete and res.records == 12 and res.rejected == 1
    reject = res.rejects.to_pylist()[0]
    assert "the footer is damaged" in reject["reason"] and f.name in reject["source_ref"]


def test_a_folder_above_the_uri_that_cannot_be_looked_into_may_hold_the_commit_log(tmp_path):
    """Looking above the uri for `_spark_metadata` failed (an IAM policy that lets the job list only the uri's
    prefix, or a store failing past its retries): a log there is not ruled out, so the read cannot say which files
    are committed (sparklog.LogUnknown, which the sink turns into an incomplete read naming the folder)."""
    import pyarrow.fs as pafs
    from reconcile.sources import sparklog

    class Denied(pafs.FileSystemHandler):  # the local files, with the log folder's listing refused as S3 refuses it
        def __init__(self):
            self.fs = pafs.LocalFileSystem()

        def get_type_name(self):
            return "denied"

        def get_file_info(self, paths):
            if any(p.endswith(sparklog.FOLDER) for p in paths):
                raise OSError("When getting information for key '_spark_metadata': AWS Error ACCESS_DENIED")
            return self.fs.get_file_info(paths)

        def get_file_info_selector(self, selector):
            return self.fs.get_file_info(selector)

        def normalize_path(self, path):
            return path

    for name in Denied.__abstractmethods__:  # writes and opens: never called by find()
        setattr(Denied, name, lambda self, *a, **k: pytest.fail("find() only looks"))
    Denied.__abstractmethods__ = frozenset()
    root = spark_copy(tmp_path, "parquet")
    fs = pafs.PyFileSystem(Denied())
    below = str(root / "dt=2026-11-23")
    with pytest.raises(sparklog.LogUnknown, match="Could not look for Spark's commit log in .*ACCESS_DENIED"):
        sparklog.find(fs, below, fs.get_file_info(pafs.FileSelector(below, recursive=True)))
    assert sparklog.find(pafs.LocalFileSystem(), below, []) is not None  # where it can look: found


def test_uri_above_the_output_folder_is_no_read_without_the_commit_log(tmp_path):
    """Set one folder above Spark's output, the read found no log at the uri or above it and read every file as
    committed, a crash leftover's rows included, while Spark's readers read the output by its own log: the sink is
    incomplete, naming the folder to set (with honour_commit_log = false it is only said)."""
    root = spark_copy(tmp_path / "above", "parquet")
    res = sink.read(SinkConfig(uri=str(root.parent)), DAY, LOCAL)
    assert not res.complete and res.details["commit_log"] is False
    assert any(f"Set [sink] uri = {root}" in p for p in res.problems), res.problems
    ignored = sink.read(SinkConfig(uri=str(root.parent), honour_commit_log=False), DAY, LOCAL)
    assert ignored.complete and any(f"Set [sink] uri = {root}" in p for p in ignored.problems)


def test_a_delta_table_is_no_read_without_its_log(tmp_path):
    """Spark's output written as a Delta table: no _spark_metadata, a _delta_log whose commits (Delta's PROTOCOL.md:
    zero-padded `<version>.json` files of actions, one a line) say which files are the table. A failed write's files
    and those a compaction removed stay in the folder, and reading every file would count them as copies: the read is
    incomplete and says why (with honour_commit_log = false it is only said)."""
    root = spark_copy(tmp_path, "parquet")
    shutil.rmtree(root / "_spark_metadata")
    (root / "_delta_log").mkdir()
    first = next(root.glob("dt=*/hr=*/*.parquet")).relative_to(root)
    actions = [{"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
               {"metaData": {"id": "0b1c2d3e-0000-4000-8000-000000000000", "format": {"provider": "parquet"},
                             "partitionColumns": ["dt", "hr"], "configuration": {}}},
               {"add": {"path": str(first), "partitionValues": {}, "size": 1, "modificationTime": 0,
                        "dataChange": True}}]
    (root / "_delta_log" / "00000000000000000000.json").write_text("\n".join(map(json.dumps, actions)) + "\n")
    res = sink.read(SinkConfig(uri=str(root)), DAY, LOCAL)
    assert not res.complete and res.details["commit_log"] is False
    assert any(f"{root} is a Delta table" in p and "honour_commit_log = false" in p for p in res.problems), res.problems
    counted = sink.read(SinkConfig(uri=str(root), honour_commit_log=False), DAY, LOCAL)
    assert counted.complete and any("is a Delta table" in p for p in counted.problems)
    assert len(counted.ledger) == len(res.ledger) > 0
    # [sink] uri at a partition of the table: its log lies above the uri, and is no less there (it was read as
    # complete, every file committed: trust review round 4)
    below = sink.read(SinkConfig(uri=str(root / "dt=2026-11-23")), DAY, LOCAL)
    assert not below.complete and below.details["commit_log"] is False
    assert any(f"{root} is a Delta table" in p for p in below.problems), below.problems


def test_zero_byte_leftover_is_skipped_even_when_the_log_is_ignored(tmp_path):
    root = spark_copy(tmp_path, "parquet")
    (root / "dt=2026-11-23" / "hr=10" / "part-00001-0f0f0f0f-0000-4000-8000-leftover0000.c000.snappy.parquet") \
        .write_bytes(b"")
    res = sink.read(SinkConfig(uri=str(root), honour_commit_log=False), DAY, LOCAL)
    assert res.complete and res.details["leftover_files"] == 1 and len(res.ledger) == 15


def test_a_wrong_time_zone_or_id_pattern_is_a_config_error():
    with pytest.raises(ConfigError, match="partition_time_zone 'Mars/Olympus'"):
        sink.read(SinkConfig(uri=str(SPARK / "parquet"), partition_time_zone="Mars/Olympus"), DAY, LOCAL)
    with pytest.raises(ConfigError, match="eb_id_pattern"):
        sink.read(SinkConfig(uri=str(SPARK / "parquet")), DAY, LOCAL, match=MatchConfig(eb_id_pattern="(["))


def test_ids_of_another_shape_are_rejected_by_row(tmp_path):
    t = pq.read_table(next((SPARK / "parquet").glob("dt=2026-11-23/hr=05/*.parquet")))
    t = t.set_column(t.schema.get_field_index("partitionKey"), "partitionKey",
                     pa.array(["3"] + t["partitionKey"].to_pylist()[1:]))
    (tmp_path / "dt=2026-11-23" / "hr=05").mkdir(parents=True)
    pq.write_table(t, tmp_path / "dt=2026-11-23" / "hr=05" / "part-0.parquet")
    # one rule for every AWS store's ids: [match] eb_id_pattern (a UUID by default), as a run passes it
    res = sink.read(SinkConfig(uri=str(tmp_path)), DAY, LOCAL, match=MatchConfig())
    assert len(res.ledger) == t.num_rows - 1 and res.rejected == 1 and not completeness.decide(res, True).complete
    assert 'EventBridge id "3" is not a UUID' in res.rejects["reason"][0].as_py()
    # with no shape asked for, an id is still a UUID or a reject: ledgers keep EventBridge ids as UUIDs
    anyshape = sink.read(SinkConfig(uri=str(tmp_path)), DAY, LOCAL, match=MatchConfig(eb_id_pattern=""))
    assert len(anyshape.ledger) == t.num_rows - 1 and anyshape.rejects["kind"].to_pylist() == ["unparseable"]
    assert 'EventBridge id "3" is not a UUID' in anyshape.rejects["reason"][0].as_py()

