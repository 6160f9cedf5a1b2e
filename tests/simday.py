"""A small simulated day loaded into moto's stores, as the job-level tests over real servers share it."""

import base64
from pathlib import Path

from reconcile.config import AwsConfig
from reconcile.simulate import aws_load
from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN, demo_environment
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores

AUTH = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()  # the demo's Zendesk login


def load(moto, tmp_path: Path, events: int = 600, seed: int = 31):
    """Simulate a day (stores under tmp_path/sim), load it into moto; returns (sim, stores, aws config)."""
    sim = simulate(SimParams(events=events, seed=seed, batch_seconds=900, files_per_batch=1, bad_records=False))
    write_stores(sim, tmp_path / "sim")
    demo_environment()
    aws = AwsConfig(endpoint_url=moto.endpoint, region="us-east-1")
    return sim, aws_load.load_stores(tmp_path / "sim" / "stores", aws), aws
