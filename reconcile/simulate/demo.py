"""`reconcile demo`: simulate a pipeline day, serve it like the real stores, reconcile it, compare with the truth.

Zendesk's API is served over HTTP on loopback (zendesk_server) and the AWS stores by moto's server (aws_load),
so the run goes through the same HTTP, boto3 and pyarrow code as a production run.
"""

from __future__ import annotations

import base64
import logging
import os
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import config
from ..run import Outcome, execute
from ..window import parse_time
from . import aws_load, zendesk_server
from .generate import SimParams, simulate
from .stores import write_stores

logger = logging.getLogger(__name__)

# Credentials for the local servers only; a production run takes them from the environment.
DEMO_EMAIL = "demo@example.com"
DEMO_TOKEN = "demo-token-not-a-secret"
ZENDESK_BUDGET = 600  # requests/minute the simulated account allows
DAY_ID_OFFSET = 100_000_000  # keeps audit and event ids of consecutive simulated days apart
# Consecutive days are each other's margins (no synthetic margin events), and more events are still in flight
# at each day's end so that the next day's run has pending events to settle.
MULTI_DAY = {"margin_events": False, "in_flight": 0.03}


def demo_environment() -> None:
    """Point the AWS SDK and the Zendesk client at the demo's local servers (this process only)."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "ZENDESK_EMAIL": DEMO_EMAIL,
                 "ZENDESK_API_TOKEN": DEMO_TOKEN}.items():
        os.environ[k] = v
    os.environ.pop("ZENDESK_OAUTH_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)


def demo_config(stores: dict, zendesk_url: str, endpoint: str, params: SimParams) -> config.Config:
    return config.build(None, {
        "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
        "zendesk": {"url": zendesk_url, "requests_per_minute": ZENDESK_BUDGET, "max_wait": "2m"},
        "bus_log": {"uri": stores["bus_log_uri"], "format": "cwl-export"},
        "sink": {"uri": stores["sink_uri"], "format": "parquet",
                 "stream_retention": f"{params.stream_retention.total_seconds():.0f}s"},
        "dlq": {"queue_url": stores["queue_url"]},  # read whole and released: visibility sized to the queue
        "metrics": {"rule": stores["rule"]},
        "window": {"max_event_age": f"{params.max_event_age.total_seconds():.0f}s",
                   "margin_before": f"{params.margin_before.total_seconds():.0f}s",
                   "hop_a_grace": f"{params.hop_a_grace.total_seconds():.0f}s"},
        "exclude": {"event_types": list(params.excluded_kinds)},
    }, environ={})


def compare_with_truth(run_dir: Path, sim_dir: Path) -> list[str]:
    """Per event, does the verdict equal the simulator's truth? And per injected fault, how many were found?"""
    import duckdb
    import orjson
    con = duckdb.connect()
    con.read_parquet(str(run_dir / "verdicts.parquet")).create_view("found")
    con.read_parquet(str(sim_dir / "truth.parquet")).create_view("truth")
    total, agree = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE f.verdict = t.verdict)
        FROM truth t LEFT JOIN found f USING (source_id)""").fetchone()
    faults = con.execute("""
        SELECT fault, count(*), count(*) FILTER (WHERE f.verdict = t.verdict)
        FROM (SELECT *, unnest(faults) AS fault FROM truth) t LEFT JOIN found f USING (source_id)
        GROUP BY fault ORDER BY fault""").fetchall()
    # per Zendesk event, as the simulator counts them (summary.json counts the bus events they stand for)
    unlogged = con.execute("SELECT count(*) FILTER (WHERE unlogged_at_bus) FROM found").fetchone()[0]
    con.close()
    truth = orjson.loads((sim_dir / "truth.json").read_bytes())
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    lines = [f"truth check: {agree:,} of {total:,} events got the verdict the simulator recorded"]
    found_faults = sum(r[2] for r in faults)
    lines.append(f"injected faults found: {found_faults:,} of {sum(r[1] for r in faults):,}")
    lines += [f"  {name:<20} {ok:>7,} of {n:>7,}" for name, n, ok in faults]
    for key, n in (("orphans", summary["orphans"]), ("unlogged_at_bus", unlogged)):
        lines.append(f"  {key:<20} {n:>7,} of {truth[key]:>7,}")
    return lines


def reconcile_simulation(sim, sim_dir: Path, run_dir: Path, endpoint: str, *, audience: str = "daily",
                         progress: bool = True, state: Path | None = None) -> Outcome:
    """Load a simulation's stores into the moto server at `endpoint`, serve its Zendesk data, reconcile it."""
    return reconcile_days([(sim, sim_dir)], run_dir, endpoint, audience=audience, progress=progress, state=state)


def run_demo(out: Path, *, events: int, seed: int, day: str, days: int = 1, audience: str = "daily",
             progress: bool = True, state: str | Path | None = None) -> tuple[Outcome, list[str]]:
    """Simulate `days` consecutive days and run the daily job for each, the state carried over.

    Day k's run sees every simulated day's stores as they stand at day k's as_of, so events in flight at one day's
    end land in the next day's stores and that run settles them. Returns the last run and the truth-check lines.
    `state`: the run state the days share (the CLI passes the shared one; default: one inside `out`).
    """
    demo_environment()
    first = parse_time(day)
    state = state or out / "reconcile-state.duckdb"
    lines: list[str] = []
    moto = aws_load.start_moto()
    try:
        for k in range(days):
            sims = []
            for j in range(k + 1):
                params = SimParams(events=events, seed=seed + j, day=(first + timedelta(days=j)).strftime("%Y-%m-%d"),
                                   id_offset=j * DAY_ID_OFFSET, **(MULTI_DAY if days > 1 else {}),
                                   view_after_end=timedelta(days=k - j) + SimParams.as_of_after_end)
                sim_dir = out / "simulation" / (f"{params.day}" if j == k else f"{params.day}-seen-{k + 1}")
                logger.info("simulating %s events on %s (seed %s)", f"{events:,}", params.day, params.seed)
                sim = simulate(params)
                write_stores(sim, sim_dir)
                sims.append((sim, sim_dir))
            moto.reset()
            run_dir = out / ("run" if days == 1 else f"run-{sims[k][0].params.day}")
            outcome = reconcile_days(sims, run_dir, moto.endpoint, audience=audience, progress=progress,
                                     state=state)
            lines += [f"{sims[k][0].params.day}: {outcome.summary['status']}"]
            lines += ["  " + line for line in compare_with_truth(run_dir, sims[k][1])]
            lines += ["  " + line for line in compare_settlements(outcome, sims[:k])]
    finally:
        moto.stop()
    return outcome, lines


def reconcile_days(sims: list, run_dir: Path, endpoint: str, *, audience: str, progress: bool,
                   state: Path | None) -> Outcome:
    """Like reconcile_simulation, for the last of several simulated days whose stores are all loaded."""
    demo_environment()
    aws = config.AwsConfig(endpoint_url=endpoint, region="us-east-1")
    stores = {}
    for _, sim_dir in sims:
        stores = aws_load.load_stores(sim_dir / "stores", aws)
    audits = pa.concat_tables([zendesk_server.load(sim_dir) for _, sim_dir in sims])
    audits = audits.sort_by([("timestamp", "ascending"), ("id", "ascending")])
    sim = sims[-1][0]
    auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
    with zendesk_server.start(audits, now=sim.window.as_of, rate_limit_per_minute=ZENDESK_BUDGET, auth=auth) as zd:
        cfg = demo_config(stores, zd.url, endpoint, sim.params)
        return execute(cfg, sim.window, run_dir, audience=audience, progress=progress, state=state)


def compare_settlements(outcome: Outcome, earlier: list) -> list[str]:
    """Pending events of earlier days that this run settled: does each settlement equal that day's truth now? All of
    them, from settlements.parquet (the summary shows the first 1,000)."""
    if not earlier:
        return []
    path = outcome.out_dir / "settlements.parquet"
    settled = pq.read_table(path, columns=["source_id", "verdict"]).to_pylist() if path.exists() else []
    truth = {}
    for sim, _ in earlier:
        t = sim.truth.select(["source_id", "verdict"]).to_pylist()
        truth.update({r["source_id"]: r["verdict"] for r in t})
    agree = sum(1 for r in settled if truth.get(r["source_id"]) == r["verdict"])
    return [f"carried in {len(settled):,} pending events from earlier days: {agree:,} settled as the truth says"]
