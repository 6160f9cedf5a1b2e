"""Recovery proven over real parts (issue 16): a simulated day in moto's S3 and SQS and the Zendesk server, judged
with a state file; journal rows as `reconcile recover --apply` writes them (State.write_journal), the re-put and the
replayed records landed in the sink as Spark writes them (a Parquet file under dt=/hr= and a commit-log entry). The
same window is judged again later: the re-put and the replay copy (a new id, as moto's replays give) are
`recovered` with their lag, the event sent but not landed is pending, then lost again once the horizon from its
send has passed, and `reconcile verify` re-proves each run from its folder alone.
"""

import hashlib
import io
import json
import re
import uuid
from dataclasses import replace
from datetime import timedelta

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from reconcile import alert, recovered
from reconcile.aws import make_client
from reconcile.cli import main
from reconcile.window import key_of
from reconcile.run import execute
from reconcile.simulate import aws_load, zendesk_server
from reconcile.simulate.demo import ZENDESK_BUDGET, demo_config
from reconcile.simulate.stores import BLOCK_SIZE, event_json, spark_log
from reconcile.state import JOURNAL_COLUMNS, State
from reconcile.verify import verify

import simday

pytestmark = pytest.mark.usefixtures("restore_environment")  # the demo code sets env vars

REPLAY = "reconcile-recover-20261124-1"
BUCKET, LOG = "spark-output", "events/_spark_metadata/"


def land(s3, records: list[tuple[str, str, str | None]], arrival, name: str) -> None:
    """Put Kinesis records (partition key, event JSON, replay-name or None) into the sink as the Spark job does:
    one Parquet file in the arrival hour's partition, committed in the next batch of `_spark_metadata`."""
    data = []
    for key, js, replay in records:
        event = json.loads(js)
        if replay:
            event = {"replay-name": replay, **event}
        data.append(json.dumps(event).encode())
    table = pa.table({"data": pa.array(data, pa.binary()),
                      "streamName": ["zendesk-events"] * len(records),
                      "partitionKey": [k for k, _, _ in records],
                      "sequenceNumber": [f"4965432109876543210987659{i:031d}" for i in range(len(records))],
                      "approximateArrivalTimestamp": pa.array([arrival] * len(records), pa.timestamp("ms", "UTC"))})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    rel = f"dt={arrival:%Y-%m-%d}/hr={arrival:%H}/{name}.parquet"
    s3.put_object(Bucket=BUCKET, Key=f"events/{rel}", Body=buf.getvalue())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=LOG).get("Contents", [])]
    batch = max(int(k.rsplit("/", 1)[1].split(".")[0]) for k in keys) + 1
    entry = orjson.dumps({"path": f"s3://{BUCKET}/events/{rel}", "size": len(buf.getvalue()), "isDir": False,
                          "modificationTime": int(arrival.timestamp() * 1000), "blockReplication": 1,
                          "blockSize": BLOCK_SIZE, "action": "add"}).decode()
    merged = aws_load._merged_spark_log(s3, spark_log({batch: [entry]}))
    for file, body in merged.items():
        s3.put_object(Bucket=BUCKET, Key=LOG + file, Body=body)


def journal_rows(rows: list[dict]) -> pa.Table:
    base = dict(window_key=None, source_id=None, target="arn:aws:kinesis:us-east-1:123456789012:stream/zendesk-events",
                attempts=1, shard_id="shardId-000000000000", sequence_number=None, replay_name=None, error=None)
    return pa.Table.from_pylist([{c: dict(base, **r)[c] for c in JOURNAL_COLUMNS} for r in rows],
                                schema=recovered.JOURNAL_SCHEMA)


def simulated_day(moto, tmp_path):
    """The shared simulated day in moto; returns (sim, stores, s3 client, state path, Zendesk auth)."""
    sim, stores, aws = simday.load(moto, tmp_path)
    return sim, stores, make_client("s3", aws), tmp_path / "state.duckdb", simday.AUTH


def test_lost_events_recovered_pending_then_lost_again_and_every_run_verifies(moto, tmp_path):
    sim, stores, s3, state, auth = simulated_day(moto, tmp_path)
    with zendesk_server.start(zendesk_server.load(tmp_path / "sim"), now=sim.window.as_of,
                              rate_limit_per_minute=ZENDESK_BUDGET, auth=auth) as zd:
        cfg = demo_config(stores, zd.url, moto.endpoint, sim.params)

        def judge(as_of, name):
            outcome = execute(cfg, replace(sim.window, as_of=as_of), tmp_path / name, progress=False, state=state)
            rows = pq.read_table(tmp_path / name / "verdicts.parquet").to_pylist()
            return outcome.summary, {r["source_id"]: r for r in rows if r["source_id"] == r["expected_id"]}

        first, before = judge(sim.window.as_of, "run1")
        assert "recovery" not in first
        lost = sorted((r for r in before.values() if r["verdict"] in ("lost_after_bus", "dead_lettered")),
                      key=lambda r: r["event_time"])
        assert len(lost) >= 4, "the simulated day must lose events after the bus"
        a, b, c, d = lost[:4]

        # the plan `reconcile recover` would write, and the journal its apply leaves
        plan = tmp_path / "run1" / "recovery" / "plan.json"
        plan.parent.mkdir()
        plan.write_bytes(orjson.dumps({"events": [r["eb_id"] for r in lost[:4]]}))
        digest = hashlib.sha256(plan.read_bytes()).hexdigest()
        sent = sim.window.as_of + timedelta(minutes=30)
        rows = [dict(plan_digest=digest, window_key=key_of(first["window"]), source_id=r["source_id"],
                     eb_id=r["eb_id"], route=route, status=status, sent_at=sent if status == "sent" else None,
                     sequence_number="4965" if route == "reput" and status == "sent" else None,
                     replay_name=REPLAY if route == "replay" else None,
                     error="ProvisionedThroughputExceededException" if status == "failed" else None)
                for r, route, status in ((a, "reput", "sent"), (b, "reput", "sent"), (c, "replay", "sent"),
                                         (d, "reput", "failed"))]
        with State.open(state) as st:
            st.write_journal(journal_rows(rows))

        # what landed: a's re-put under its own id 5 s after the send; c's replay copy under a new id a minute later
        index = {e: i for i, e in enumerate(sim.bus["eb_id"].to_pylist())}
        js = event_json(sim, np.array([index[a["eb_id"]], index[c["eb_id"]]])).to_pylist()
        copy_id = str(uuid.uuid4())
        replayed = json.dumps(dict(json.loads(js[1]), id=copy_id))
        land(s3, [(a["eb_id"], js[0], None)], sent + timedelta(seconds=5), "part-recovery-reput")
        land(s3, [(copy_id, replayed, REPLAY)], sent + timedelta(minutes=1), "part-recovery-replay")

        second, after = judge(sent + timedelta(hours=1), "run2")
        assert (after[a["source_id"]]["verdict"], after[a["source_id"]]["recovery_lag_s"]) == ("recovered", 5.0)
        assert after[a["source_id"]]["cause"] == "re-put landed"
        assert (after[c["source_id"]]["verdict"], after[c["source_id"]]["recovery_lag_s"]) == ("recovered", 60.0)
        assert after[c["source_id"]]["cause"] == f"replay {REPLAY} landed"
        assert (after[b["source_id"]]["verdict"], after[b["source_id"]]["cause"]) == \
            ("pending", "re-put sent, not landed yet")
        assert after[d["source_id"]]["verdict"] == d["verdict"]  # the failed attempt changed nothing
        assert second["recovery"] | {"lag_p50_s": None} == dict(
            planned=4, sent=3, landed=2, landed_twice=0, pending=1, not_landed=0, landed_before_send=0, failed=1,
            landed_already=0, unfinished=0, lag_p50_s=None, lag_max_s=60.0)
        assert second["verdicts"]["recovered"] == 2
        lost_hop = {h["name"]: h["lost"] for h in first["hops"]}["bus_to_sink"]
        # held by the first run as the sink had not read the stream past their retries; the recovery's rows, arrived
        # later, show it has (rules.sql beyond_sink): lost now
        settled = [i for i, r in before.items() if r["would_be"] == "lost_after_bus"
                   and after[i]["verdict"] == "lost_after_bus"]
        assert {h["name"]: h["lost"] for h in second["hops"]}["bus_to_sink"] == lost_hop - 3 + len(settled)  # a, c
        # recovered; b
        # what the pipeline lost stays in view: the hop counts a and c as recovered, and its card and the SNS say so
        assert [(h["name"], h["recovered"]) for h in second["hops"]] == [("zendesk_to_bus", 0), ("bus_to_sink", 2)]
        card = " ".join(BeautifulSoup((tmp_path / "run2" / "report.html").read_text(), "html.parser")
                        .select("#status .card")[1].get_text(" ").split())
        assert "2 more lost by the pipeline and recovered" in card, card
        assert ", 2 more lost and recovered" in alert.message(second, "report.html")[1]
        gaps = (tmp_path / "run2" / "gaps.csv").read_text()
        assert copy_id not in gaps  # the replay copy is the recovery of c, not an orphan
        v = verify(tmp_path / "run2")
        assert v.ok, [str(x) for x in v.differences]
        manifest = orjson.loads((tmp_path / "run2" / "manifest.json").read_bytes())
        files = {f["path"]: f["sha256"] for f in manifest["files"]}
        assert files[f"evidence/recovery-plans/{digest}.json"] == digest  # the plan applied, found and kept
        assert "evidence/recovery_journal.parquet" in files and "evidence/recoveries.parquet" in files
        # the plan's content edited under its name (the digest reviewed), the manifest resealed: it verified clean
        import shutil

        from reconcile import runfolder
        edited = tmp_path / "run2-edited"
        shutil.copytree(tmp_path / "run2", edited)
        kept = edited / "evidence" / "recovery-plans" / f"{digest}.json"
        kept.write_bytes(kept.read_bytes() + b"\n")  # one byte more: what was reviewed is not what is kept
        m, _ = runfolder.load_manifest(edited)
        entry = next(f for f in m["files"] if f["path"] == f"evidence/recovery-plans/{digest}.json")
        entry.update(sha256=hashlib.sha256(kept.read_bytes()).hexdigest(), bytes=kept.stat().st_size)
        m["manifest_sha256"] = runfolder.manifest_digest(m)
        runfolder.write_manifest(edited, m)
        assert [str(x) for x in verify(edited).differences] == [
            f"evidence/recovery-plans/{digest}.json: not the plan reviewed: its sha256 is not its name (the digest "
            f"the recovery journal names)"]

        assert not any("plan(s) the evidence does not hold" in n for n in v.notes)
        # the plan moved out of the run folder it was made from (or made in a folder the state does not know): the
        # next run's evidence lacks it, and verify says the recoveries cannot be checked against the plan reviewed
        plan.rename(tmp_path / "plan-elsewhere.json")
        third, later = judge(sent + timedelta(hours=4), "run3")
        assert later[b["source_id"]]["verdict"] == b["verdict"]
        assert later[b["source_id"]]["cause"].endswith(", and the re-put sent did not land within the horizon")
        assert later[a["source_id"]]["verdict"] == later[c["source_id"]]["verdict"] == "recovered"
        assert (third["recovery"]["landed"], third["recovery"]["pending"], third["recovery"]["not_landed"]) == (2, 0, 1)
        v3 = verify(tmp_path / "run3")
        assert v3.ok and v3.notes == [
            f"the recovery journal names 1 plan(s) the evidence does not hold ({digest[:12]}): the recoveries judged "
            f"cannot be checked against the plan reviewed. Keep each plan in the run folder it was made from "
            f"(reconcile recover RUN_DIR), where the next run finds it"], v3.notes
        with State.open(state, write=False) as st:
            day = [r for r in st.history() if r["hop"] == "bus_to_sink"]
        # the run recorded last: a and c recovered, what the sink's reach held in the first run settled
        assert len(day) == 1 and day[0]["lost"] == lost_hop - 2 + len(settled)
        assert day[0]["recovered"] == 2
        out = CliRunner().invoke(main, ["history", "--state", str(state)])
        assert out.exit_code == 0 and re.search(r"bus_to_sink .* 2 +[0-9,]+ +[0-9.<> ]+ %$", out.output, re.M), \
            out.output


def test_a_recovery_sent_days_later_is_read_from_the_sink_partition_it_landed_in(moto, tmp_path):
    """Spark files a recovered record under the day it arrived, days after the window's read range: a run of the
    window whose journal shows a send reads the sink up to its as_of, so the recovery is seen and proven."""
    sim, stores, s3, state, auth = simulated_day(moto, tmp_path)
    sent = sim.window.as_of + timedelta(days=4)
    with zendesk_server.start(zendesk_server.load(tmp_path / "sim"), now=sent + timedelta(hours=1),
                              rate_limit_per_minute=ZENDESK_BUDGET, auth=auth) as zd:
        cfg = demo_config(stores, zd.url, moto.endpoint, sim.params)
        execute(cfg, sim.window, tmp_path / "run1", progress=False, state=state)
        rows = pq.read_table(tmp_path / "run1" / "verdicts.parquet").to_pylist()
        a = min((r for r in rows if r["verdict"] == "lost_after_bus" and r["source_id"] == r["expected_id"]),
                key=lambda r: r["event_time"])
        with State.open(state) as st:
            st.write_journal(journal_rows([dict(plan_digest="d" * 64, window_key=sim.window.key,
                                                source_id=a["source_id"], eb_id=a["eb_id"], route="reput",
                                                status="sent", sent_at=sent, sequence_number="4965")]))
        index = {e: i for i, e in enumerate(sim.bus["eb_id"].to_pylist())}
        js = event_json(sim, np.array([index[a["eb_id"]]])).to_pylist()
        land(s3, [(a["eb_id"], js[0], None)], sent + timedelta(seconds=5), "part-recovery-days-later")
        execute(cfg, replace(sim.window, as_of=sent + timedelta(hours=1)), tmp_path / "run2", progress=False,
                state=state)
    after = {r["source_id"]: r for r in pq.read_table(tmp_path / "run2" / "verdicts.parquet").to_pylist()}
    assert (after[a["source_id"]]["verdict"], after[a["source_id"]]["recovery_lag_s"]) == ("recovered", 5.0)
    assert verify(tmp_path / "run2").ok
