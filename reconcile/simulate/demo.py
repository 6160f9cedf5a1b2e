"""`reconcile demo`: simulate a pipeline day, serve it like the real stores, reconcile it, compare with the truth.

Zendesk's API is served over HTTP on loopback (zendesk_server) and the AWS stores by moto's server (aws_load),
so the run goes through the same HTTP, boto3 and pyarrow code as a production run.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pyarrow.parquet as pq

from .. import config
from ..run import Outcome, execute
from ..summary import VERDICTS
from . import aws_load, zendesk_server
from .generate import SimParams, simulate
from .stores import write_stores

logger = logging.getLogger(__name__)

# Credentials for the local servers only; a production run takes them from the environment.
DEMO_EMAIL = "demo@example.com"
DEMO_TOKEN = "demo-token-not-a-secret"
ZENDESK_BUDGET = 600  # requests/minute the simulated account allows


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
        "sink": {"uri": stores["sink_uri"], "format": "parquet"},
        # moto hands the same 10 messages back on every receive at visibility 0; a short visibility timeout lets
        # the demo read the whole (demo-owned) queue. Nothing is deleted either way.
        "dlq": {"queue_url": stores["queue_url"], "visibility_timeout": 30},
        "metrics": {"rule": stores["rule"]},
        "window": {"max_event_age": f"{params.max_event_age.total_seconds():.0f}s",
                   "margin_before": f"{params.margin_before.total_seconds():.0f}s",
                   "hop_a_grace": f"{params.hop_a_grace.total_seconds():.0f}s"},
        "exclude": {"event_types": list(params.excluded_kinds)},
    }, environ={})


def compare_with_truth(run_dir: Path, sim_dir: Path) -> list[str]:
    """Per event, does the verdict equal the simulator's truth? Returns lines for stderr."""
    import duckdb
    con = duckdb.connect()
    con.read_parquet(str(run_dir / "verdicts.parquet")).create_view("found")
    con.read_parquet(str(sim_dir / "truth.parquet")).create_view("truth")
    rows = con.execute("""
        SELECT t.verdict AS truth, count(*) AS events, count(*) FILTER (WHERE f.verdict = t.verdict) AS found
        FROM truth t LEFT JOIN found f USING (source_id) GROUP BY t.verdict""").fetchall()
    by = {r[0]: (r[1], r[2]) for r in rows}
    total = sum(v[0] for v in by.values())
    agree = sum(v[1] for v in by.values())
    lines = [f"truth check: {agree:,} of {total:,} events got the verdict the simulator recorded"]
    for v in VERDICTS:
        if v in by and v != "delivered":
            lines.append(f"  {v:<16} found {by[v][1]:>7,} of {by[v][0]:>7,} injected")
    con.close()
    return lines


def reconcile_simulation(sim, sim_dir: Path, run_dir: Path, endpoint: str, *, audience: str = "daily",
                         progress: bool = True, state: Path | None = None) -> Outcome:
    """Load a simulation's stores into the moto server at `endpoint`, serve its Zendesk data, reconcile it."""
    demo_environment()
    stores = aws_load.load_stores(sim_dir / "stores", config.AwsConfig(endpoint_url=endpoint, region="us-east-1"))
    auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
    with zendesk_server.serve(sim_dir, now=sim.window.as_of, rate_limit_per_minute=ZENDESK_BUDGET, auth=auth) as zd:
        cfg = demo_config(stores, zd.url, endpoint, sim.params)
        return execute(cfg, sim.window, run_dir, audience=audience, progress=progress, state=state)


def run_demo(out: Path, *, events: int, seed: int, day: str, audience: str = "daily",
             progress: bool = True) -> tuple[Outcome, list[str]]:
    params = SimParams(events=events, seed=seed, day=day)
    sim_dir = out / "simulation"
    logger.info("simulating %s events on %s (seed %s)", f"{events:,}", day, seed)
    sim = simulate(params)
    write_stores(sim, sim_dir)
    demo_environment()
    moto = aws_load.start_moto()
    try:
        outcome = reconcile_simulation(sim, sim_dir, out / "run", moto.endpoint, audience=audience,
                                       progress=progress, state=out / "reconcile-state.duckdb")
    finally:
        moto.stop()
    return outcome, compare_with_truth(out / "run", sim_dir)
