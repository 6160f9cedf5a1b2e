"""Recovery end to end over moto's server: a simulated day with every loss kind is planned, applied into Kinesis
(stopped at a limit, interrupted by SIGINT, resumed), and no event reaches the stream twice; replay windows are
started on the bus's archive; the stream, moved into the sink, makes the re-run find the events."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest

from reconcile import config, emission
from reconcile.aws import make_client
from reconcile.errors import ConfigError, SourceError, StateError
from reconcile.recover import apply as apply_mod
from reconcile.recover import payload
from reconcile.recover import plan as plan_mod
from reconcile.run import execute
from reconcile.simulate import aws_load, spark_standin, zendesk_server
from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN, demo_config, demo_environment
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.recover_demo import recovery_targets
from reconcile.simulate.stores import STREAM_NAME, write_stores
from reconcile.sources import events
from reconcile.state import State
from reconcile.window import Window

TRANSFORMED = 2  # lost-after-bus events whose log copy is an input transformer's output: replay, not re-put
SENT_CLOCK = lambda: datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)  # noqa: E731 - a fixed clock for apply


def transform_log_lines(stores: Path, eb_ids: set[str]) -> int:
    """Rewrite the bus log copies of `eb_ids` as a log target behind an input transformer receives them: the
    detail and id, without the envelope."""
    n = 0
    for path in (stores / "logs-archive").rglob("*.gz"):
        lines = gzip.decompress(path.read_bytes()).split(b"\n")
        changed = False
        for i, line in enumerate(lines):
            stamp, _, message = line.partition(b" ")
            try:
                doc = json.loads(message)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("id") in eb_ids:
                lines[i] = stamp + b" " + json.dumps({"id": doc["id"], "detail": doc["detail"]}).encode()
                changed, n = True, n + 1
        if changed:
            path.write_bytes(gzip.compress(b"\n".join(lines)))
    return n


def stream_ids(aws) -> list[str]:
    """The EventBridge id of every record in the stream (read back from the data), one entry per record."""
    return [orjson.loads(r["Data"])["id"] for r in spark_standin.stream_records(STREAM_NAME, aws)]


def journal(state: Path, digest: str) -> list[dict]:
    with State.open(state, write=False) as st:
        return st.journal(digest).to_pylist()


@pytest.fixture
def day(moto, tmp_path, restore_environment):
    """A simulated day loaded into moto with the rule's stream and the bus's archive, judged once."""
    demo_environment()
    os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
    params = SimParams(events=2000, seed=7, batch_seconds=900, files_per_batch=1)
    sim = simulate(params)
    sim_dir = tmp_path / "sim"
    write_stores(sim, sim_dir)
    truth = sim.truth.to_pylist()
    lost = sorted({r["eb_id"] for r in truth if r["verdict"] == "lost_after_bus" and r["eb_id"]})
    assert len(lost) > TRANSFORMED and any(r["verdict"] == "dead_lettered" for r in truth)
    assert any(r["verdict"] == "lost_before_bus" for r in truth)
    transformed = set(lost[:TRANSFORMED])
    assert transform_log_lines(sim_dir / "stores", transformed) >= TRANSFORMED
    aws = config.AwsConfig(endpoint_url=moto.endpoint, region="us-east-1")
    stores = aws_load.load_stores(sim_dir / "stores", aws)
    targets = recovery_targets(aws)
    auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
    server = zendesk_server.start(zendesk_server.load(sim_dir), now=sim.window.as_of, auth=auth)
    zd = server.__enter__()
    try:
        cfg = demo_config(stores, zd.url, moto.endpoint, params)
        cfg = dataclasses.replace(cfg, recover=config.RecoverConfig(**targets))
        state = tmp_path / "state.duckdb"
        run_dir = tmp_path / "run"
        execute(cfg, sim.window, run_dir, progress=False, state=state)
        yield dataclasses.make_dataclass("Day", ["sim", "cfg", "aws", "run_dir", "state", "transformed", "zd"])(
            sim, cfg, aws, run_dir, state, transformed, zd)
    finally:
        server.__exit__(None, None, None)


def test_a_day_is_planned_applied_interrupted_resumed_and_lands_once(day, tmp_path):
    sim, cfg, aws = day.sim, day.cfg, day.aws
    verdicts = duckdb.sql(f"SELECT eb_id, verdict, source_id FROM '{day.run_dir}/verdicts.parquet'").fetchall()
    lost_ids = {e for e, v, _ in verdicts if v in ("lost_after_bus", "dead_lettered")}
    before_bus = {s for _, v, s in verdicts if v == "lost_before_bus"}

    # --- plan: every lost event routed; transformed log copies detected and replayed; lost-before-bus listed
    plan = plan_mod.build(day.run_dir, cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    routes = {e["eb_id"]: e for e in plan["events"]}
    assert set(routes) == lost_ids
    for eb_id in day.transformed:
        assert routes[eb_id]["route"] == "replay"
        assert "input transformer" in routes[eb_id]["reason"]
    reput = {k for k, e in routes.items() if e["route"] == "reput"}
    assert reput == lost_ids - day.transformed
    for k in reput:
        e = routes[k]
        assert orjson.loads(e["data"])["id"] == k and e["partition_key"] == k
        assert e["from"] == ("dlq" if e["verdict"] == "dead_lettered" else "bus_log")
    covered = set().union(*(w["eb_ids"] for w in plan["replay_windows"]))
    assert covered == day.transformed
    for w in plan["replay_windows"]:
        start, end = (datetime.fromisoformat(w[k].replace("Z", "+00:00")) for k in ("start", "end"))
        assert start.second == 0 and end.second == 0 and end > start
        assert w["already_delivered"] <= w["other_events"]
    assert {b["source_id"] for b in plan["lost_before_bus"]} == before_bus
    assert all(b["ticket_id"] and b["kind"] and "route" in b for b in plan["lost_before_bus"])
    assert any(b["values"] for b in plan["lost_before_bus"])  # read back from the run's saved Zendesk pages
    csv_rows = (day.run_dir / "recovery" / "plan.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(routes) + len(before_bus)
    # planning wrote nothing to AWS: the stream is empty
    assert stream_ids(aws) == []

    # --- an edited plan, or another digest than the reviewed one, is refused
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("plan.json", "plan.sha256"):
        (edited / name).write_bytes((day.run_dir / "recovery" / name).read_bytes())
    (edited / "plan.json").write_bytes((edited / "plan.json").read_bytes().replace(b'"reput"', b'"replay"', 1))
    with pytest.raises(plan_mod.PlanError, match="changed after it was made"):
        apply_mod.apply(edited / "plan.json", cfg, day.state)
    with pytest.raises(plan_mod.PlanError, match="not the plan that was reviewed"):
        apply_mod.apply(path, cfg, day.state, digest="0" * 12)

    # --- one planned event lands late by itself (before the apply): it must be skipped, not sent again
    late = sorted(reput)[0]
    kinesis = make_client("kinesis", aws)
    kinesis.put_record(StreamName=STREAM_NAME, Data=routes[late]["data"].encode(), PartitionKey=late)
    arrival = sim.window.as_of + timedelta(minutes=10)
    assert spark_standin.run_batch(STREAM_NAME, "spark-output", "events", aws, arrival) == 1
    moved = {(r["ShardId"], r["SequenceNumber"]) for r in spark_standin.stream_records(STREAM_NAME, aws)}

    # --- a first apply stopped by --limit
    first = apply_mod.apply(path, cfg, day.state, digest=digest[:12], limit=3, progress=False)
    assert first.stopped_at_limit and first.sent == 3 and first.landed_already == 1
    assert first.left == first.planned - 4 and first.held_in_doubt == first.held_by_replays == 0

    # --- a rate-capped apply in another process, stopped by SIGINT mid-way
    env = {**os.environ, "RECONCILE_STATE": str(day.state)}
    proc = subprocess.Popen([sys.executable, "-m", "reconcile", "recover", "--apply", str(path), "--digest", digest,
                             "--set", "recover.records_per_second=2", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(stream_ids(aws)) < 1 + 3 + 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    rows = journal(day.state, digest)
    assert not [r for r in rows if r["status"] == "sending"]  # a signal leaves nothing in doubt
    sent_before = sum(r["status"] == "sent" for r in rows)
    assert 3 < sent_before < len(reput) - 1 + len(day.transformed)

    # --- resumed: everything left is sent, nothing twice
    done = apply_mod.apply(path, cfg, day.state, digest=digest, progress=False)
    assert done.sent == len(reput) - 1 + len(day.transformed) and done.landed_already == 1 and done.failed == 0
    assert done.in_doubt == 0 and len(done.replays) == len(plan["replay_windows"])
    assert done.left == done.held_in_doubt == done.held_by_replays == 0
    ids = stream_ids(aws)
    assert sorted(ids) == sorted(reput)  # each re-put event exactly once (the late one: its own single copy)
    rows = {r["eb_id"]: r for r in journal(day.state, digest)}
    assert rows[late]["status"] == "landed_already" and rows[late]["sequence_number"] is None
    for k in reput - {late}:
        assert rows[k]["status"] == "sent" and rows[k]["shard_id"] and rows[k]["sequence_number"]
        assert rows[k]["route"] == "reput" and rows[k]["target"] == STREAM_NAME
    for k in day.transformed:
        assert rows[k]["status"] == "sent" and rows[k]["route"] == "replay" and rows[k]["replay_name"]
    replays = make_client("events", aws).list_replays()["Replays"]
    assert {r["ReplayName"] for r in replays} == set(done.replays)
    # the data re-put is the original event, byte for byte
    data = {orjson.loads(r["Data"])["id"]: bytes(r["Data"]).decode() for r in
            spark_standin.stream_records(STREAM_NAME, aws)}
    assert all(data[k] == routes[k]["data"] for k in reput)

    # --- applying again sends nothing
    again = apply_mod.apply(path, cfg, day.state, digest=digest, progress=False)
    assert again.sent == done.sent and len(stream_ids(aws)) == len(reput)

    # --- the stand-in Spark job moves the stream into the sink; the re-run finds every re-put event
    # (the applies above ran on the real clock, so the records arrive now: days after the simulated window, in the
    # sink's partition of today, which the re-run reads because the journal shows this window's events were sent).
    # Each record keeps its own Kinesis arrival stamp, as Spark writes it: stamped while Kinesis handled the call,
    # before its answer came back (a send time taken after the answer made every re-put look `delivered`).
    landed_at = datetime.now(timezone.utc)
    assert spark_standin.run_batch(STREAM_NAME, "spark-output", "events", aws, None,
                                   already=moved) == len(reput) - 1
    rerun = tmp_path / "rerun"
    execute(cfg, dataclasses.replace(sim.window, as_of=landed_at + timedelta(hours=1)), rerun,
            progress=False, state=day.state)
    after = dict(duckdb.sql(f"SELECT eb_id, min(verdict) FROM '{rerun}/verdicts.parquet' GROUP BY eb_id").fetchall())
    # each sent event landed after its send: recovered; the one that landed by itself before the apply: delivered
    assert after[late] == "delivered" and all(after[k] == "recovered" for k in reput - {late})
    # moto's replay delivers nothing to Kinesis: still missing (pending once a sent recovery waits to land)
    assert all(after[k] in ("lost_after_bus", "pending") for k in day.transformed)


def test_recover_without_apply_writes_a_plan_through_the_cli(day, tmp_path):
    """The command alone, with the run's own config from its manifest: plan files, a digest, no AWS write."""
    from click.testing import CliRunner

    from reconcile.cli import main
    out = tmp_path / "plan"
    r = CliRunner().invoke(main, ["recover", str(day.run_dir), "--out", str(out), "--json",
                                  "--set", f"recover.stream={STREAM_NAME}"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    # the run's own [recover] keys came from its manifest: the archive is there to replay from
    assert Path(doc["plan"]) == out / "plan.json" and doc["reput"] > 0 and doc["replay"] == TRANSFORMED
    assert (out / "plan.sha256").read_text().split()[0] == doc["digest"]
    # without an archive, a transformed log copy leaves nothing to recover from: said why, never re-put
    bare = dataclasses.replace(day.cfg, recover=config.RecoverConfig(stream=STREAM_NAME))
    plan = plan_mod.build(day.run_dir, bare)
    assert plan["counts"]["unrecoverable"] == TRANSFORMED and plan["counts"]["replay"] == 0
    assert all("input transformer" in e["reason"] and "[recover] archive_arn" in e["reason"]
               for e in plan["events"] if e["route"] == "none")
    assert stream_ids(day.aws) == []
    dry = CliRunner().invoke(main, ["recover", "--apply", str(out / "plan.json"), "--dry-run"])
    assert dry.exit_code == 0 and "Nothing sent" in dry.output
    assert "inputs_incomplete" not in plan["run"]
    # a sink URI with credentials (or the manifest's redaction of them) is refused: a plan is kept, never a secret
    for uri in ("s3://AKIAEXAMPLE:s3cr3t@spark-output/events", "s3://[redacted]@spark-output/events"):
        keyed = dataclasses.replace(bare, sink=dataclasses.replace(bare.sink, uri=uri))
        with pytest.raises(config.ConfigError, match="holds credentials") as refused:
            plan_mod.build(day.run_dir, keyed)
        assert "s3cr3t" not in str(refused.value) and not (tmp_path / "keyed").exists()
    # a plan from a run that read a store only in part says so (in the plan, and on stderr)
    import shutil
    partial = tmp_path / "partial-run"
    shutil.copytree(day.run_dir, partial)
    manifest = orjson.loads((partial / "manifest.json").read_bytes())
    for i in manifest["inputs"]:
        i["complete"] = i["complete"] and i["source"] != "sink"
    (partial / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert plan_mod.build(partial, bare)["run"]["inputs_incomplete"] == ["sink"]
    # the window run again since the plan was made (a new manifest): the plan is refused, dry run or not
    raw = (day.run_dir / "manifest.json").read_bytes()
    (day.run_dir / "manifest.json").write_bytes(orjson.dumps({**orjson.loads(raw), "manifest_sha256": "0" * 64}))
    try:
        stale = CliRunner().invoke(main, ["recover", "--apply", str(out / "plan.json"), "--dry-run"])
        assert stale.exit_code == 4 and "not the one this plan was made from" in stale.output
    finally:
        (day.run_dir / "manifest.json").write_bytes(raw)
    # ... and so is a plan of a run the state no longer records for its window (run again into another folder)
    other = orjson.loads((out / "plan.json").read_bytes())
    other["run"]["generated_at"] = "2026-11-24T01:00:00.000Z"
    path, sha = plan_mod.write(other, tmp_path / "other-plan")
    refused = CliRunner().invoke(main, ["recover", "--apply", str(path), "--digest", sha, "--state", str(day.state)])
    assert refused.exit_code == 4 and "not the run this plan was made from" in refused.output, refused.output
    # the apply checks it again under the state's lock (a run of the window may come after the command's check)
    with pytest.raises(ConfigError, match="not the run this plan was made from"):
        apply_mod.apply(path, day.cfg, day.state, digest=sha, progress=False)
    assert stream_ids(day.aws) == []


def test_the_sink_recheck_takes_a_read_with_unreadable_records_as_partial(tmp_path):
    """Before sending, apply re-reads the sink for events that landed since the plan. A record it cannot read may be
    one of them (re-sending would duplicate it), so such a read is partial by completeness's one rule, as in a run:
    nothing is sent."""
    from reconcile.errors import SourceError
    import pyarrow.parquet as pq
    at = datetime(2026, 11, 23, 10, 5, tzinfo=timezone.utc)
    folder = tmp_path / "sink" / "dt=2026-11-23" / "hr=10"
    folder.mkdir(parents=True)
    planned = "0b6fbf3a-2a84-4a3f-9c57-1f0d6b1b8e2a"
    whole = json.dumps({"version": "0", "id": planned, "detail-type": "Support Ticket: Ticket Created",
                        "source": "aws.partner/zendesk.com/1/default", "time": "2026-11-23T10:05:00Z",
                        "detail": {"ticket_event": {"type": "Ticket Created", "ticket": {"id": 1},
                                                    "meta": {"occurred_at": "2026-11-23T10:05:00Z"}}}}).encode()
    pq.write_table(pa.table({"data": [whole[:40]], "partitionKey": [planned], "sequenceNumber": ["1"],
                             "approximateArrivalTimestamp": pa.array([at], pa.timestamp("ms", tz="UTC"))}),
                   folder / "part-0.parquet")
    plan = {"run": {"window": {"start": "2026-11-23T00:00:00Z", "end": "2026-11-24T00:00:00Z", "margin_before_s": 3600,
                               "margin_after_s": 86400, "max_event_age_s": 86400, "hop_a_grace_s": 300}},
            "recheck": {"sink": {"uri": str(tmp_path / "sink")}, "match": {}}}
    with pytest.raises(SourceError, match="could not be read whole"):
        apply_mod.landed(plan, [planned], config.AwsConfig(), datetime(2026, 11, 25, tzinfo=timezone.utc))


def _full_event(eb_id: str, ticket: int) -> str:
    return json.dumps({"version": "0", "id": eb_id, "detail-type": "Support Ticket: Ticket Created",
                       "source": "aws.partner/zendesk.com/1/default", "account": "123456789012",
                       "time": "2026-11-23T10:05:00Z", "region": "us-east-1", "resources": [],
                       "detail": {"ticket_event": {"type": "Ticket Created", "ticket": {"id": ticket},
                                                   "meta": {"occurred_at": "2026-11-23T10:05:00Z"}}}},
                      separators=(",", ":"))


@pytest.mark.parametrize("fmt", ["cwl-export", "firehose", "firehose-messages", "firehose-messages-crlf"])
def test_a_bus_log_copy_is_re_read_where_the_bus_log_source_found_it(fmt, tmp_path):
    """The payload to re-send is read again from the place the run's bus ledger names, in each archive format: a
    Firehose delivery compressed by the stream over CloudWatch's gzip (two layers) and one with message extraction
    (records back to back) included. The re-read found nothing in the first (it inflated once) and could not read
    the second at all."""
    from reconcile.sources import buslog
    ids = ["0b6fbf3a-2a84-4a3f-9c57-1f0d6b1b8e2a", "5f0c1b8e-7d3a-4c2e-9b1a-2e8f4d6c0a11"]
    evs = [_full_event(i, n) for n, i in enumerate(ids, 1)]
    if fmt == "cwl-export":
        body = gzip.compress("".join(f"2026-11-23T10:05:01.000Z {e}\n" for e in evs).encode())
    elif fmt == "firehose":
        rec = {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/events/zendesk",
               "logStream": "s", "subscriptionFilters": ["f"],
               "logEvents": [{"id": f"3{n}", "timestamp": 1763892301000, "message": e} for n, e in enumerate(evs)]}
        body = gzip.compress(gzip.compress(json.dumps(rec).encode()))
    elif fmt == "firehose-messages":
        body = gzip.compress("".join(evs).encode())
    else:  # one a line, CRLF: the event re-sent ended in "\r" (diff review)
        body, fmt = gzip.compress("".join(e + "\r\n" for e in evs).encode()), "firehose-messages"
    folder = tmp_path / "archive" / "2026" / "11" / "23"
    folder.mkdir(parents=True)
    (folder / "part-000001.gz").write_bytes(body)
    cfg = config.Config(bus_log=config.BusLogConfig(uri=str(tmp_path / "archive"), format=fmt))
    day = datetime(2026, 11, 23, tzinfo=timezone.utc)
    window = Window(start=day, end=day + timedelta(days=1), as_of=day + timedelta(days=2))
    led = buslog.read(cfg.bus_log, window, cfg.aws).ledger
    refs = {str(i): r for i, r in zip(led["eb_id"].to_pylist(), led["source_ref"].to_pylist())}
    assert sorted(refs) == sorted(ids)
    found = payload.from_bus_log(cfg, refs)
    assert {i: p.data for i, p in found.items()} == dict(zip(ids, evs)), found


def test_the_plan_takes_a_bus_log_copy_with_no_log_time_and_the_earliest_of_several():
    """A Firehose delivery with message extraction keeps no log time (observed_at NULL): its copy was never chosen
    (arg_min skips a NULL order), so every loss after the bus was "no bus log copy" in that format. Of several copies
    the earliest logged is taken, one with no time after those with one; the DLQ message alike."""
    t = lambda s: datetime.fromisoformat(f"2026-11-23T{s}+00:00")  # noqa: E731
    a, b, c = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    con = events.connect()
    con.register("verdict_vocab", emission.verdict_table())
    con.register("verdicts", pa.table({
        "eb_id": [a, b, c], "verdict": ["lost_after_bus"] * 3, "source_id": ["1", "2", "3"],
        "event_time": [t("10:00:00")] * 3, "bus_at": pa.array([None] * 3, pa.timestamp("ms", tz="UTC")),
        "ticket_id": [1, 2, 3], "kind": ["Comment"] * 3}))
    con.register("settled", plan_mod.NO_SETTLEMENTS.empty_table())
    con.register("bus", pa.table({
        "eb_id": [a, b, b, c, c], "source_ref": ["m/obj:7", "m/obj:9", "e/000000.gz:4", "e/000000.gz:2", "m/obj:1"],
        "observed_at": pa.array([None, None, t("10:00:02"), t("10:00:03"), None], pa.timestamp("ms", tz="UTC"))}))
    con.register("dlq", pa.table({"eb_id": [a], "source_ref": ["msg-1"], "target_arn": ["arn:aws:kinesis:x"],
                                  "observed_at": pa.array([None], pa.timestamp("ms", tz="UTC"))}))
    from reconcile.engine import execute_file
    rows = execute_file(con, plan_mod.QUERIES / "candidates.sql", {"kinesis_target": "kinesis"}).to_arrow_table()
    got = {r["eb_id"]: (r["bus_ref"], r["dlq_ref"], r["logged_at"]) for r in rows.to_pylist()}
    assert got == {a: ("m/obj:7", "msg-1", None), b: ("e/000000.gz:4", None, t("10:00:02")),
                   c: ("e/000000.gz:2", None, t("10:00:03"))}


def test_whole_event_tells_an_input_transformers_output():
    event = {"version": "0", "id": "e1", "detail-type": "x", "source": "aws.partner/zendesk.com/1/default",
             "account": "1", "time": "2026-11-23T00:00:00Z", "region": "us-east-1", "resources": [], "detail": {}}
    assert payload.whole_event(json.dumps(event), "e1", "here").data == json.dumps(event)
    cut = payload.whole_event(json.dumps({"id": "e1", "detail": {}}), "e1", "here")
    assert cut.data is None and "input transformer" in cut.problem and "detail-type" in cut.problem
    assert payload.whole_event(json.dumps(event), "e2", "here").data is None
    assert payload.partition_key(json.dumps({"detail": {"t": {"id": 35436}}}), "e1", "$.detail.t.id") == ("35436", None)
    assert payload.partition_key(json.dumps(event), "e1", None) == ("e1", None)
    assert payload.partition_key(json.dumps(event), "e1", "$.detail.nope")[0] is None


def test_replay_windows_are_the_fewest_whole_minutes_with_the_duplicates_they_resend():
    t = lambda s: datetime.fromisoformat(f"2026-11-23T{s}+00:00")  # noqa: E731
    con = events.connect()
    con.register("replay_events", pa.table({"eb_id": ["a", "b", "c"], "logged_at": [t("10:00:30"), t("10:01:50"),
                                                                                      t("10:07:05")]}))
    con.register("bus", pa.table({"eb_id": ["a", "b", "c", "d", "e", "f", "g"],
                                  "observed_at": [t("10:00:30"), t("10:01:50"), t("10:07:05"), t("10:01:00"),
                                                  t("10:06:59"), t("10:09:00"), t("10:02:04")]}))
    con.register("sink", pa.table({"eb_id": ["d"]}))
    from reconcile.engine import execute_file
    rows = execute_file(con, plan_mod.QUERIES / "replay_windows.sql", {"slack_s": 10}).fetchall()
    # a at :30 and b at :50 share one window 10:00-10:02; c at 10:07:05 is within the slack of 10:06. g, logged at
    # 10:02:04, may have a `time` before 10:02: the replay may re-send it, so it is counted (at most)
    assert [(r[0].strftime("%H:%M"), r[1].strftime("%H:%M"), r[2], r[3], r[4]) for r in rows] == [
        ("10:00", "10:02", ["a", "b"], 2, 1), ("10:06", "10:08", ["c"], 1, 0)]


def test_an_event_to_re_put_inside_a_replay_window_is_replayed_not_sent_twice():
    """x has no usable payload (replayed); y, lost in the same minute, has one (re-put). The replay of x's minute
    re-sends y too: y is replayed instead, not re-put as well. z, re-put just past the window's reach, stays a re-put
    -- unless the window grows to reach it (w, replayed, extends it: again until no re-put lies in one)."""
    t = lambda s: datetime.fromisoformat(f"2026-11-23T{s}+00:00")  # noqa: E731
    con = events.connect()
    con.register("bus", pa.table({"eb_id": ["x", "y", "z"], "observed_at": [t("10:00:30"), t("10:00:40"),
                                                                            t("10:02:05")]}))
    con.register("sink", pa.table({"eb_id": pa.array([], pa.string())}))
    routed = [{"eb_id": "x", "route": "replay", "logged_at": t("10:00:30")},
              {"eb_id": "y", "route": "reput", "logged_at": t("10:00:40"), "data": "{}"},
              {"eb_id": "z", "route": "reput", "logged_at": t("10:02:05"), "data": "{}"}]
    windows = plan_mod.replay_windows(con, routed)
    assert [(r["eb_id"], r["route"]) for r in routed] == [("x", "replay"), ("y", "replay"), ("z", "reput")]
    assert [(w["start_at"].strftime("%H:%M"), w["end_at"].strftime("%H:%M"), w["eb_ids"]) for w in windows] == [
        ("10:00", "10:01", ["x", "y"])]
    routed.append({"eb_id": "w", "route": "replay", "logged_at": t("10:01:30")})
    windows = plan_mod.replay_windows(con, routed)
    assert [r["route"] for r in routed] == ["replay"] * 4
    assert [(w["start_at"].strftime("%H:%M"), w["end_at"].strftime("%H:%M")) for w in windows] == [("10:00", "10:03")]
    # v's payload says it was sent at 10:00:45, in x's window, its log copy written at 10:05 (the log target
    # throttled and retried): a replay selects by that `time`, so v is replayed too, not re-put as well. u, sent at
    # 10:04:50 and logged at 10:05 (within the slack of the window's end by its log copy alone), is outside it.
    envelope = {"version": "0", "detail-type": "d", "source": "s", "account": "1", "region": "us-east-1",
                "resources": [], "detail": {}}
    late = [{"eb_id": e, "route": "reput", "logged_at": t("10:05:00"),
             "data": orjson.dumps({**envelope, "id": e, "time": f"2026-11-23T{at}Z"}).decode()}
            for e, at in (("v", "10:00:45"), ("u", "10:04:50"))]
    routed = [{"eb_id": "x", "route": "replay", "logged_at": t("10:00:30")}, *late]
    plan_mod.replay_windows(con, routed)
    assert [(r["eb_id"], r["route"]) for r in routed] == [("x", "replay"), ("v", "replay"), ("u", "reput")]


def test_a_record_over_the_limits_is_split_into_calls():
    entries = [{"data": "x" * (2 * 1024 * 1024), "partition_key": str(i)} for i in range(5)]
    assert [len(b) for b in apply_mod._batches(entries, 500)] == [2, 2, 1]  # 5 MiB a call
    small = [{"data": "x", "partition_key": str(i)} for i in range(1201)]
    assert [len(b) for b in apply_mod._batches(small, 500)] == [500, 500, 201]
    assert [len(b) for b in apply_mod._batches(small[:5], 2)] == [2, 2, 1]  # the rate cap's batch size


def test_records_kinesis_did_not_take_are_retried_then_failed(no_real_aws):
    """PutRecords answers per record (FailedRecordCount, ErrorCode): the ones refused for throughput are journaled
    `failed` with the error and retried, until max_attempts; the vendor's documented response, stubbed."""
    from botocore.stub import Stubber
    kinesis = make_client("kinesis", config.AwsConfig(region="us-east-1"))
    plan = {"target": {"stream": STREAM_NAME, "archive_arn": None}}
    pending = [{"eb_id": f"e{i}", "route": "reput", "window_key": "w", "source_id": str(i), "data": "{}",
                "partition_key": f"e{i}"} for i in range(3)]
    answer = {"FailedRecordCount": 2, "Records": [
        {"ShardId": "shardId-000000000000", "SequenceNumber": "49590338271490256608559692538361571095921575989136588898"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"},
        {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."}]}
    with Stubber(kinesis) as stub:
        stub.add_response("put_records", answer)
        stub.add_response("put_records", answer)
        retry, rows = apply_mod._call(kinesis, {"StreamName": STREAM_NAME}, plan, "d", pending,
                                      {"e0": 1, "e1": 1, "e2": 1}, max_attempts=2, sent_at=SENT_CLOCK())
        assert [e["eb_id"] for e in retry] == ["e1", "e2"]
        # the ones to retry are journaled not written until tried again: a signal in the wait leaves none in doubt
        assert [(r["eb_id"], r["status"], r["sequence_number"] is not None) for r in rows] == [
            ("e0", "sent", True), ("e1", "failed", False), ("e2", "failed", False)]
        assert rows[0]["sent_at"] == SENT_CLOCK()  # the send's time, taken before the call
        retry, rows = apply_mod._call(kinesis, {"StreamName": STREAM_NAME}, plan, "d", pending,
                                      {"e0": 2, "e1": 2, "e2": 2}, max_attempts=2, sent_at=SENT_CLOCK())
        assert retry == [] and [r["status"] for r in rows] == ["sent", "failed", "failed"]
        assert rows[1]["error"].startswith("ProvisionedThroughputExceededException")


def test_a_server_error_leaves_the_records_in_doubt_not_refused(no_real_aws):
    """A 5xx from PutRecords (InternalFailure, ServiceUnavailable) means the service failed while handling the call:
    the records may be in the stream. They are not journaled `failed` (which a next apply sends again) but raised as
    a call without answer, so they stay `sending`: in doubt, sent again only with --resend-in-doubt. A 4xx refusal
    (no such stream) wrote nothing: `failed`."""
    import botocore.exceptions
    from botocore.stub import Stubber
    kinesis = make_client("kinesis", config.AwsConfig(region="us-east-1"))
    plan = {"target": {"stream": STREAM_NAME, "archive_arn": None}}
    pending = [{"eb_id": "e0", "route": "reput", "window_key": "w", "source_id": "0", "data": "{}",
                "partition_key": "e0"}]
    with Stubber(kinesis) as stub:
        for code in ("InternalFailure", "ServiceUnavailable"):
            stub.add_client_error("put_records", code, http_status_code=500 if code == "InternalFailure" else 503)
            with pytest.raises(botocore.exceptions.ClientError):
                apply_mod._call(kinesis, {"StreamName": STREAM_NAME}, plan, "d", pending, {"e0": 1}, max_attempts=3,
                                sent_at=SENT_CLOCK())
        stub.add_client_error("put_records", "ResourceNotFoundException", http_status_code=400)
        with pytest.raises(apply_mod._Refused) as refused:
            apply_mod._call(kinesis, {"StreamName": STREAM_NAME}, plan, "d", pending, {"e0": 1}, max_attempts=3,
                            sent_at=SENT_CLOCK())
        assert [r["status"] for r in refused.value.rows] == ["failed"]


def test_demo_recover_closes_the_loop(tmp_path, restore_environment):
    from reconcile.simulate.recover_demo import run_recover_demo
    outcome, lines = run_recover_demo(tmp_path / "demo", events=1500, seed=7, day="2026-11-23", progress=False)
    text = "\n".join(lines)
    plan = json.loads((tmp_path / "demo" / "run" / "recovery" / "plan.json").read_text())
    n = plan["counts"]["reput"]
    assert n > 0 and plan["counts"]["unrecoverable"] == 0
    assert f"planned {n:,} → sent {n:,}" in text and f"landed {n:,}" in text
    after = duckdb.sql(f"SELECT eb_id, min(verdict) FROM '{tmp_path}/demo/run-recovered/verdicts.parquet' "
                       "GROUP BY eb_id").fetchall()
    verdict = dict(after)
    assert all(verdict[e["eb_id"]] == "recovered" for e in plan["events"])


@pytest.mark.parametrize("rule, bus", [
    ("arn:aws:events:us-east-1:123456789012:rule/zendesk-to-kinesis", "default"),
    ("arn:aws:events:us-east-1:123456789012:rule/tickets/zendesk-to-kinesis", "tickets"),
    # the legacy connector's partner bus: its name holds `/` (PIPELINE.md §1), a rule name never does
    ("arn:aws:events:us-east-1:123456789012:rule/aws.partner/zendesk.com/9242270/default/zendesk-to-kinesis",
     "aws.partner/zendesk.com/9242270/default"),
])
def test_a_replay_goes_to_the_bus_of_its_rule(rule, bus):
    assert plan_mod.bus_of(rule) == f"arn:aws:events:us-east-1:123456789012:event-bus/{bus}"


def test_a_plan_is_applied_in_the_region_it_was_made_for(day):
    """A stream named without its ARN is resolved in the applier's region: the same name in another region is another
    stream, where the re-puts would land (and be journaled sent, so never sent to the right one). The plan records its
    region; an apply from another one is refused before anything is sent."""
    plan = plan_mod.build(day.run_dir, day.cfg)
    assert plan["target"]["region"] == "us-east-1" and plan["counts"]["reput"]
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    eu = dataclasses.replace(day.aws, region="eu-west-1")
    make_client("kinesis", eu).create_stream(StreamName=STREAM_NAME, ShardCount=1)
    with pytest.raises(ConfigError, match="in us-east-1, and this apply's AWS region is eu-west-1"):
        apply_mod.apply(path, dataclasses.replace(day.cfg, aws=eu), day.state, digest=digest, progress=False)
    assert spark_standin.stream_records(STREAM_NAME, eu) == [] and journal(day.state, digest) == []


def test_a_limit_sends_a_replay_window_whole():
    """--limit counts events, but a replay sends its window's minutes whole: a window it starts goes out, and is
    journaled, with all of its events, not only those under the limit (the rest would be replayed again later)."""
    todo = [{"route": "reput", "eb_id": "a", "replay_window": None},
            {"route": "replay", "eb_id": "b", "replay_window": 0},
            {"route": "reput", "eb_id": "c", "replay_window": None},
            {"route": "replay", "eb_id": "d", "replay_window": 0},
            {"route": "replay", "eb_id": "e", "replay_window": 1}]
    assert [e["eb_id"] for e in apply_mod._within(todo, 2)] == ["a", "b", "d"]
    assert [e["eb_id"] for e in apply_mod._within(todo, 1)] == ["a"]
    assert [e["eb_id"] for e in apply_mod._within(todo, 5)] == ["a", "b", "c", "d", "e"]


def one_replay_window(day):
    """The day's plan with its two replayed events X and Y in one window (a window each, as the day has them, or one,
    as a busier minute would), written: (plan, path, digest, X, Y)."""
    plan = plan_mod.build(day.run_dir, day.cfg)
    first, second = plan["replay_windows"]
    x, y = first["eb_ids"][0], second["eb_ids"][0]
    plan["replay_windows"] = [dict(first, eb_ids=[x, y])]
    plan["counts"] = dict(plan["counts"], replay_windows=1)
    for e in plan["events"]:
        if e["eb_id"] == y:
            e["replay_window"] = 0
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    return plan, path, digest, x, y


def sent_by_another_plan(day, plan: dict, entry: dict) -> None:
    """`entry` journaled `sent` by another plan (one made from another run of the window)."""
    other = dict(plan, run=dict(plan["run"], manifest_sha256="0" * 64))
    with State.open(day.state) as st:
        st.write_journal(apply_mod._journal_table([apply_mod._row(other, "f" * 64, entry, "sent", attempts=1,
                                                                  sent_at=datetime.now(timezone.utc))]))


def test_a_replay_window_holding_an_event_another_plan_sent_is_not_started(day):
    """Another plan (made from another run of the window) re-put X; this plan replays a window holding X and Y.
    Replaying it would send X a second time: the window is held, no replay started, Y not journaled (a later plan
    re-puts or replays it); the re-puts go out. (The day's two replayed events are a window each: the plan here puts
    them in one, as a busier minute would.)"""
    plan, path, digest, x, y = one_replay_window(day)
    sent_by_another_plan(day, plan, next(e for e in plan["events"] if e["eb_id"] == x))
    done = apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    assert done.replay_windows_held == 1 and done.sent_by_other_plan == 1 and done.replays == []
    assert make_client("events", day.aws).list_replays()["Replays"] == []
    rows = {r["eb_id"]: r["status"] for r in journal(day.state, digest)}
    assert x not in rows and y not in rows
    assert done.sent == sum(e["route"] == "reput" for e in plan["events"])
    # Y is held by its window, which no apply of this plan starts: said so, never "apply again to resume" (each
    # apply said it, and exited 1, sending nothing)
    assert (done.left, done.held_by_replays, done.held_in_doubt) == (0, 1, 0)
    again = subprocess.run([sys.executable, "-m", "reconcile", "recover", "--apply", str(path), "--digest", digest,
                            "--no-progress"], env={**os.environ, "RECONCILE_STATE": str(day.state)},
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "1 event(s) in 1 replay window(s) held" in again.stderr, again.stderr
    assert "apply again to resume" not in again.stderr


def test_a_replay_window_whose_minutes_hold_an_event_another_plan_sent_is_not_started(day):
    """A replay re-sends every event logged in its minutes, not only the plan's: another plan (of the run that settled
    it, say) re-put Z, logged inside the first window's minutes and no event of this plan. Replaying the window would
    send Z a second time: it is held (it was started: only the plan's own events were checked)."""
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    w = plan["replay_windows"][0]
    planned = {e["eb_id"] for e in plan["events"]}
    inside = duckdb.sql(f"SELECT eb_id::VARCHAR FROM '{day.run_dir}/evidence/bus.parquet' "
                        f"WHERE observed_at >= TIMESTAMPTZ '{w['start']}' + INTERVAL 15 second "
                        f"AND observed_at < TIMESTAMPTZ '{w['end']}' - INTERVAL 5 second").fetchall()
    z = next(i for (i,) in inside if i not in planned)
    sent_by_another_plan(day, plan, dict(next(e for e in plan["events"] if e["route"] == "reput"), eb_id=z))
    done = apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    assert done.replay_windows_held >= 1
    started = {r["ReplayName"] for r in make_client("events", day.aws).list_replays()["Replays"]}
    assert f"reconcile-{digest[:16]}-0000" not in started and set(done.replays) == started
    rows = {r["eb_id"]: r["status"] for r in journal(day.state, digest)}
    assert not set(w["eb_ids"]) & set(rows)  # none of the held window's events journaled: a later plan sends them


def test_a_replay_window_holding_by_its_own_time_an_event_another_plan_sent_is_not_started(day):
    """As above, but Z's log copy came ten minutes after it (the log target throttled and retried): by its log copy's
    time Z lies outside the window and the replay was started, though a replay selects by the event's own time and
    re-sent Z, which another plan had re-put. Held by either time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    w = plan["replay_windows"][0]
    planned = {e["eb_id"] for e in plan["events"]}
    bus_path = day.run_dir / "evidence" / "bus.parquet"
    inside = duckdb.sql(f"SELECT eb_id::VARCHAR FROM '{bus_path}' "
                        f"WHERE event_time >= TIMESTAMPTZ '{w['start']}' + INTERVAL 15 second "
                        f"AND event_time < TIMESTAMPTZ '{w['end']}' - INTERVAL 15 second").fetchall()
    z = next(i for (i,) in inside if i not in planned)
    bus = pq.read_table(bus_path)
    late = pc.equal(pa.array([str(v) for v in bus["eb_id"].to_pylist()]), z)
    moved = pc.if_else(late, pc.add(bus["observed_at"], pa.scalar(timedelta(minutes=10))), bus["observed_at"])
    pq.write_table(bus.set_column(bus.schema.get_field_index("observed_at"), "observed_at", moved), bus_path)
    sent_by_another_plan(day, plan, dict(next(e for e in plan["events"] if e["route"] == "reput"), eb_id=z))
    done = apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    started = {r["ReplayName"] for r in make_client("events", day.aws).list_replays()["Replays"]}
    assert done.replay_windows_held >= 1 and f"reconcile-{digest[:16]}-0000" not in started


def test_a_replay_window_holding_an_event_that_landed_late_is_not_started(day):
    """An earlier apply of this plan found X, planned for replay in a window with Y, landed late (`landed_already`)
    and stopped before the replays (--limit). Replaying the window now would send X a second time, a duplicate the
    reviewed plan did not count: it is held, Y not journaled."""
    plan, path, digest, x, y = one_replay_window(day)
    entry = next(e for e in plan["events"] if e["eb_id"] == x)
    with State.open(day.state) as st:
        st.write_journal(apply_mod._journal_table([apply_mod._row(plan, digest, entry, "landed_already")]))
    done = apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    assert done.replay_windows_held == 1 and done.replays == []
    assert make_client("events", day.aws).list_replays()["Replays"] == []
    rows = {r["eb_id"]: r["status"] for r in journal(day.state, digest)}
    assert rows[x] == "landed_already" and y not in rows


def test_an_apply_on_an_s3_state_keeps_every_attempt_there_even_when_killed(day, tmp_path):
    """An s3:// state is uploaded after every journal write, under its lock object. An apply killed outright
    (SIGKILL: no cleanup, no final upload) has left in the bucket a journal row for every record it put in the
    stream, so the next apply sends none of them again; while an apply holds the state, a second one is refused."""
    aws = day.aws
    s3 = make_client("s3", aws)
    s3.create_bucket(Bucket="audit")
    s3.put_object(Bucket="audit", Key="state.duckdb", Body=day.state.read_bytes())
    uri = "s3://audit/state.duckdb"
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    reput = {e["eb_id"] for e in plan["events"] if e["route"] == "reput"}
    assert len(reput) > 6
    env = {**os.environ, "RECONCILE_STATE": uri}
    cmd = [sys.executable, "-m", "reconcile", "recover", "--apply", str(path), "--digest", digest,
           "--set", "recover.records_per_second=2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(stream_ids(aws)) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()
        second = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        assert second.returncode == 4 and b"is in use by" in second.stderr, second.stderr.decode()
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    in_stream = stream_ids(aws)
    assert len(in_stream) >= 4 and len(set(in_stream)) == len(in_stream)
    killed = tmp_path / "as-killed.duckdb"
    killed.write_bytes(s3.get_object(Bucket="audit", Key="state.duckdb")["Body"].read())
    rows = {r["eb_id"]: r["status"] for r in journal(killed, digest)}
    assert all(rows.get(e) in ("sent", "sending") for e in in_stream)  # every record sent is journaled there

    # resumed: the killed apply's lock is taken over (same host, process gone); nothing goes out twice
    done = apply_mod.apply(path, day.cfg, uri, digest=digest, progress=False)
    ids = stream_ids(aws)
    assert len(set(ids)) == len(ids)
    in_doubt = {e for e, s in rows.items() if s == "sending"}  # killed mid-call: not in the sink, held
    assert set(ids) == reput - (in_doubt - set(in_stream)) and done.in_doubt == len(in_doubt)
    s3.head_object(Bucket="audit", Key="state.duckdb")
    assert "Contents" not in s3.list_objects_v2(Bucket="audit", Prefix="state.duckdb.lock")  # released


def test_the_rows_reviewed_are_the_plan_applied(day):
    """plan.csv, what a person reviews, says where each event goes (`to`: the stream and its region, or the archive
    and rule); the digest approved covers plan.json, and an apply refuses a plan.csv beside it that is not the rows
    plan.json makes (edited to hide a row, say), sending nothing."""
    import csv
    import io
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    rows = list(csv.DictReader((path.with_name("plan.csv")).read_text().splitlines()))
    assert {r["to"] for r in rows if r["route"] == "reput"} == {f"{STREAM_NAME} (us-east-1)"}
    assert {r["to"] for r in rows if r["route"] == "replay"} == {
        f"{plan['target']['archive_arn']} -> {plan['target']['rule_arn']}"}
    made = path.with_name("plan.csv").read_bytes()
    text = made.decode().splitlines()
    # as a spreadsheet or a checkout may save it (a byte-order mark, CRLF), or as a version before `to` wrote it
    older = io.StringIO()
    csv.writer(older, lineterminator="\n").writerows(row[:-1] for row in csv.reader(text))
    for saved in (b"\xef\xbb\xbf" + made.replace(b"\n", b"\r\n"), older.getvalue().encode()):
        path.with_name("plan.csv").write_bytes(saved)
        assert plan_mod.load(path, digest)[1] == digest
    path.with_name("plan.csv").write_text("\n".join(text[:1] + text[2:]) + "\n")  # one row hidden from the review
    with pytest.raises(plan_mod.PlanError, match="is not the rows of plan.json"):
        apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    assert stream_ids(day.aws) == [] and journal(day.state, digest) == []


def test_a_plan_whose_sends_in_doubt_another_plan_found_landed_has_nothing_left(day):
    """Plan A's apply died mid-call (its rows `sending`); those events landed, and plan B (made again from the same
    run) found them in the sink: A's rows became `sent`, B's `landed_already`. A applied again counted them as its
    own sends and as sent by the other plan, so its CLI said "-2 event(s) not sent yet" and exited 1."""
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    assert apply_mod.apply(path, day.cfg, day.state, digest=digest, limit=3, progress=False).sent == 3
    with duckdb.connect(str(day.state)) as con:  # the journal as a SIGKILL mid-call leaves it
        con.execute("UPDATE recovery_journal SET status = 'sending', shard_id = NULL, sequence_number = NULL "
                    "WHERE plan_digest = ? AND status = 'sent' AND route = 'reput'", [digest])
    doubted = [r["eb_id"] for r in journal(day.state, digest) if r["status"] == "sending"]
    assert len(doubted) >= 2 and spark_standin.run_batch(STREAM_NAME, "spark-output", "events", day.aws, None)
    time.sleep(0.01)
    other_path, other = plan_mod.write(plan_mod.build(day.run_dir, day.cfg), day.run_dir / "recovery-b")
    assert other != digest
    b = apply_mod.apply(other_path, day.cfg, day.state, digest=other, progress=False)
    assert b.landed_already == len(doubted) and b.left == 0
    a = apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    assert a.sent == 3 and a.sent_by_other_plan == a.planned - 3, a
    assert a.left == a.held_in_doubt == a.held_by_replays == 0
    ids = stream_ids(day.aws)
    assert len(ids) == len(set(ids))


def test_an_event_in_doubt_that_landed_is_the_recovery_s(day, tmp_path):
    """A SIGKILL between PutRecords and its `sent` rows leaves them `sending` (in doubt) with the send's time. When
    the next apply finds those events in the sink, they landed after that send: journaled `sent` with it, not
    `landed_already`, sent no second time, and the re-run judges them `recovered`, not `delivered`."""
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    first = apply_mod.apply(path, day.cfg, day.state, digest=digest, limit=3, progress=False)
    assert first.sent == 3
    with duckdb.connect(str(day.state)) as con:  # the journal as the SIGKILL left it
        con.execute("UPDATE recovery_journal SET status = 'sending', shard_id = NULL, sequence_number = NULL "
                    "WHERE plan_digest = ? AND status = 'sent' AND route = 'reput'", [digest])
    doubted = {r["eb_id"]: r["sent_at"] for r in journal(day.state, digest) if r["status"] == "sending"}
    assert len(doubted) >= 2 and all(doubted.values())
    assert spark_standin.run_batch(STREAM_NAME, "spark-output", "events", day.aws, None) == len(doubted)
    moved = {(r["ShardId"], r["SequenceNumber"]) for r in spark_standin.stream_records(STREAM_NAME, day.aws)}

    resumed = apply_mod.apply(path, day.cfg, day.state, digest=digest, progress=False)
    rows = {r["eb_id"]: r for r in journal(day.state, digest)}
    assert all(rows[e]["status"] == "sent" and rows[e]["sent_at"] == t for e, t in doubted.items())
    ids = stream_ids(day.aws)
    assert len(ids) == len(set(ids)) and resumed.in_doubt == 0  # none of the three sent again
    landed_at = datetime.now(timezone.utc)
    spark_standin.run_batch(STREAM_NAME, "spark-output", "events", day.aws, None, already=moved)
    rerun = tmp_path / "rerun"
    execute(day.cfg, dataclasses.replace(day.sim.window, as_of=landed_at + timedelta(hours=1)), rerun,
            progress=False, state=day.state)
    after = dict(duckdb.sql(f"SELECT eb_id, min(verdict) FROM '{rerun}/verdicts.parquet' GROUP BY eb_id").fetchall())
    assert {after[e] for e in doubted} == {"recovered"}


def test_a_put_records_whose_answer_is_lost_is_not_sent_again_by_the_sdk(day, tmp_path):
    """Kinesis writes the first PutRecords and its answer is a 500 (the service failed after writing, or a gateway
    lost the answer): botocore's own retry sent the call again, every record of it landing twice while the journal
    said `sent` once. Only the journal decides: the call is made once, its records stay `sending` (in doubt)."""
    from proxy import Proxy
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    put = "Kinesis_20131202.PutRecords"
    proxy = Proxy(day.aws.endpoint_url, answer_lost=lambda target: target == put and proxy.calls[put] == 1)
    try:
        cfg = dataclasses.replace(day.cfg, aws=dataclasses.replace(day.aws, endpoint_url=proxy.endpoint),
                                  recover=dataclasses.replace(day.cfg.recover, records_per_second=3))
        with pytest.raises(SourceError, match="stay `sending`"):
            apply_mod.apply(path, cfg, day.state, digest=digest, progress=False)
    finally:
        proxy.close()
    ids = stream_ids(day.aws)
    assert proxy.calls[put] == 1 and len(ids) == 3 and len(set(ids)) == 3, (proxy.calls, ids)
    assert {r["eb_id"]: r["status"] for r in journal(day.state, digest)} == {e: "sending" for e in ids}


@pytest.mark.parametrize("replanned", [False, True])
def test_sends_the_s3_state_cannot_journal_are_kept_beside_the_plan_and_never_sent_twice(day, tmp_path, replanned):
    """The s3:// state's upload of a batch's `sent` rows fails after PutRecords (a gateway answering S3's 500 to
    every upload of the state after the first): the rows are saved beside the plan and the apply stops. The next
    apply records them first: those events are `sent` with their shard and sequence number, not in doubt, and
    nothing reaches the stream twice, with --resend-in-doubt too -- also when it applies a plan made again from the
    run (only the failed plan's own apply recorded them: the new plan sent them a second time)."""
    from proxy import Proxy
    s3 = make_client("s3", day.aws)
    s3.create_bucket(Bucket="audit")
    s3.put_object(Bucket="audit", Key="state.duckdb", Body=day.state.read_bytes())
    uri = "s3://audit/state.duckdb"
    plan = plan_mod.build(day.run_dir, day.cfg)
    path, digest = plan_mod.write(plan, day.run_dir / "recovery")
    uploads = []

    def fail(method, p):  # the first upload of the state (the `sending` rows) goes through; the rest fail
        if method == "PUT" and p.split("?")[0].endswith("/audit/state.duckdb"):
            uploads.append(p)
            return len(uploads) > 1
        return False
    proxy = Proxy(day.aws.endpoint_url, fail=fail)
    try:
        cfg = dataclasses.replace(day.cfg, aws=dataclasses.replace(day.aws, endpoint_url=proxy.endpoint),
                                  recover=dataclasses.replace(day.cfg.recover, records_per_second=3))
        with pytest.raises(StateError, match="could not be journaled in the state"):
            apply_mod.apply(path, cfg, uri, digest=digest, progress=False)
    finally:
        proxy.close()
    spill = path.with_name(f"journal-{digest[:16]}.jsonl")
    first = stream_ids(day.aws)
    assert spill.is_file() and len(first) == 3 and proxy.failed >= 1

    if replanned:
        time.sleep(0.01)
        path, again = plan_mod.write(plan_mod.build(day.run_dir, day.cfg), day.run_dir / "recovery")
        assert again != digest
        resumed = apply_mod.apply(path, day.cfg, uri, digest=again, resend_in_doubt=True, progress=False)
    else:
        resumed = apply_mod.apply(path, day.cfg, uri, digest=digest, resend_in_doubt=True, progress=False)
    assert not spill.exists() and resumed.in_doubt == 0
    ids = stream_ids(day.aws)
    assert len(ids) == len(set(ids)) and set(first) <= set(ids)
    local = tmp_path / "state.duckdb"
    local.write_bytes(s3.get_object(Bucket="audit", Key="state.duckdb")["Body"].read())
    rows = {r["eb_id"]: r for r in journal(local, digest)}
    assert all(rows[e]["status"] == "sent" and rows[e]["sequence_number"] for e in first)
