"""`reconcile demo --recover`: the day, its recovery plan, the plan applied into moto's Kinesis, the stream moved into
the sink by a stand-in for the Spark job, and the window judged again with the same state.

Time is the simulation's: the day is judged as of its as_of; the recovery happens RECOVER_AFTER later, and the
re-run judges as of RERUN_AFTER (moto stamps the stream with the real clock, days after the simulated day).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import config, emission, interrupt
from ..runfolder import RunFolder
from ..aws import make_client
from ..recover import apply as apply_mod
from ..recover import plan as plan_mod
from ..run import Outcome, execute
from ..state import State
from . import aws_load, spark_standin, zendesk_server
from .demo import DEMO_EMAIL, DEMO_TOKEN, ZENDESK_BUDGET, compare_with_truth, demo_config, demo_environment
from .generate import SimParams, simulate
from .stores import STREAM_NAME, write_stores

logger = logging.getLogger(__name__)

ACCOUNT, REGION = "123456789012", "us-east-1"
ARCHIVE = "zendesk-archive"
RECOVER_AFTER = timedelta(minutes=30)
RERUN_AFTER = timedelta(hours=1)


def recovery_targets(aws: config.AwsConfig) -> dict:
    """The rule's Kinesis stream and the bus's archive, made in moto (the [recover] keys a run would name)."""
    kinesis = make_client("kinesis", aws)
    kinesis.create_stream(StreamName=STREAM_NAME, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=STREAM_NAME, WaiterConfig={"Delay": 0.2})
    events = make_client("events", aws)
    rule = events.put_rule(Name=aws_load.RULE, EventPattern='{"source": [{"prefix": "aws.partner/zendesk.com"}]}')
    archive = events.create_archive(ArchiveName=ARCHIVE,
                                    EventSourceArn=f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default")
    return {"stream": STREAM_NAME, "rule_arn": rule["RuleArn"], "archive_arn": archive["ArchiveArn"]}


def run_recover_demo(out: Path, *, events: int, seed: int, day: str, audience: str = "daily", progress: bool = True,
                     state: str | Path | None = None) -> tuple[Outcome, list[str]]:
    """The day, then its recovery end to end. Returns the re-run and the lines to show."""
    demo_environment()
    state = state or out / "reconcile-state.duckdb"
    params = SimParams(events=events, seed=seed, day=day)
    sim = simulate(params)
    sim_dir = out / "simulation" / params.day
    write_stores(sim, sim_dir)
    moto = aws_load.start_moto()
    try:
        aws = config.AwsConfig(endpoint_url=moto.endpoint, region=REGION)
        stores = aws_load.load_stores(sim_dir / "stores", aws)
        targets = recovery_targets(aws)
        audits = zendesk_server.load(sim_dir)
        auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
        with zendesk_server.start(audits, now=sim.window.as_of + RERUN_AFTER, rate_limit_per_minute=ZENDESK_BUDGET,
                                  auth=auth) as zd:
            cfg = demo_config(stores, zd.url, moto.endpoint, params)
            cfg = dataclasses.replace(cfg, recover=config.RecoverConfig(**targets))
            run_dir = out / "run"
            first = execute(cfg, sim.window, run_dir, audience=audience, progress=progress, state=state)
            lines = [f"{params.day}: {first.summary['status']}"]
            lines += ["  " + x for x in compare_with_truth(run_dir, sim_dir)]
            interrupt.begin()  # the recovery is work of its own: a signal stops it (one during the run's tail now)
            plan = plan_mod.build(run_dir, cfg, now=sim.window.as_of + RECOVER_AFTER)
            plan_path, digest = plan_mod.write(plan, RunFolder(run_dir).recovery)
            done = apply_mod.apply(plan_path, cfg, state, digest=digest, progress=progress,
                                   now=lambda: sim.window.as_of + RECOVER_AFTER)
            moved = spark_standin.run_batch(STREAM_NAME, "spark-output", "events", aws,
                                            arrival=sim.window.as_of + RECOVER_AFTER + timedelta(minutes=2))
            rerun_window = dataclasses.replace(sim.window, as_of=sim.window.as_of + RERUN_AFTER)
            again = execute(cfg, rerun_window, out / "run-recovered", audience=audience, progress=progress,
                            state=state)
    finally:
        moto.stop()
    lines += recovery_lines(plan, digest, done, moved, out / "run-recovered", state)
    return again, lines


def recovery_lines(plan: dict, digest: str, done: apply_mod.Outcome, moved: int, rerun_dir: Path,
                   state: str | Path) -> list[str]:
    """Planned → sent → landed, from the journal and the re-run's verdicts, and what could not be recovered."""
    c = plan["counts"]
    with State.open(state, write=False) as st:
        journal = st.journal(digest)
    sent_ids = pa.array([r["eb_id"] for r in journal.to_pylist() if r["status"] == "sent"], pa.string())
    verdicts = pq.read_table(RunFolder(rerun_dir).verdicts, columns=["eb_id", "verdict"])
    vocab = emission.verdict_rows()
    planned = pa.array([e["eb_id"] for e in plan["events"]], pa.string())
    lost = pa.array([r["verdict"] for r in vocab if r["loss_hop"] == "bus_to_sink"], pa.string())
    new_losses = verdicts.filter(pc.and_(pc.is_in(verdicts["verdict"], lost), pc.invert(pc.is_in(verdicts["eb_id"],
                                                                                                planned))))
    after = verdicts.filter(pc.is_in(verdicts["eb_id"], sent_ids))
    by = {}
    for v in after["verdict"].to_pylist():
        by[v] = by.get(v, 0) + 1
    reached = pa.array([r["verdict"] for r in vocab if r["reached_sink"]], pa.string())
    landed_ids = set(after.filter(pc.is_in(after["verdict"], reached))
                     ["eb_id"].to_pylist())
    lines = [f"recovery plan {digest[:12]}: {c['reput']:,} exact re-put · {c['replay']:,} by replay · "
             f"{c['unrecoverable']:,} unrecoverable · {c['lost_before_bus']:,} lost before the bus",
             f"  planned {done.planned:,} → sent {done.sent:,} (landed already {done.landed_already:,}, failed "
             f"{done.failed:,}) → moved into the sink by the stand-in Spark job {moved:,} → landed {len(landed_ids):,}",
             f"  re-run verdicts of the {after.num_rows:,} Zendesk event(s) behind the sent bus events: "
             + ", ".join(f"{k} {v:,}" for k, v in sorted(by.items()))]
    if new_losses.num_rows:
        lines.append(f"  judged lost only in the re-run (pending when the plan was made): "
                     f"{len(set(new_losses['eb_id'].to_pylist())):,} bus event(s): plan again to recover them")
    for e in plan["events"]:
        if e["route"] == "none":
            lines.append(f"  not recoverable: {e['eb_id']} ({e['verdict']}): {e['reason']}")
    if plan["lost_before_bus"]:
        lines.append(f"  lost before the bus, not re-published: {len(plan['lost_before_bus']):,} (ticket, kind and "
                     f"values in the plan; {plan_mod.BEFORE_BUS_ROUTE})")
    return lines

