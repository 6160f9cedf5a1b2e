"""Run the whole job over a small simulated day with a fault injected into a store (tests of issue 12's matrix).

    res = faultrun.run(moto, tmp_path, mutate=lambda stores: ..., sink={"honour_commit_log": False})
    res.outcome.exit_code, res.input("sink")["problems"], res.report_text, res.changed

`mutate(stores_dir)` edits the simulated stores on disk before they are loaded into moto; `after_load(stores, aws)`
acts on the loaded stores (a queue attribute, say). `changed` maps each event whose verdict differs from the
simulator's truth to (found, truth): a fault may change verdicts only when the run says so (status incomplete).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from bs4 import BeautifulSoup

from reconcile.config import AwsConfig
from reconcile.run import Outcome, execute
from reconcile.simulate import aws_load, zendesk_server
from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN, ZENDESK_BUDGET, demo_config, demo_environment
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores


@dataclass
class FaultRun:
    outcome: Outcome
    truth: dict[str, str]
    found: dict[str, str]
    truth_table: object  # pyarrow Table of truth.parquet
    report_text: str

    def input(self, name: str) -> dict:
        return next(i for i in self.outcome.summary["inputs"] if i["source"] == name)

    @property
    def changed(self) -> dict[str, tuple[str | None, str]]:
        return {k: (self.found.get(k), v) for k, v in self.truth.items() if self.found.get(k) != v}


def run(moto, tmp_path: Path, *, mutate=None, after_load=None, sink: dict | None = None, dlq: dict | None = None,
        **params) -> FaultRun:
    params = {"events": 600, "seed": 31, "batch_seconds": 900, "files_per_batch": 1, "bad_records": False} | params
    sim = simulate(SimParams(**params))
    sim_dir = tmp_path / "sim"
    write_stores(sim, sim_dir)
    if mutate:
        mutate(sim_dir / "stores")
    demo_environment()
    aws = AwsConfig(endpoint_url=moto.endpoint, region="us-east-1")
    stores = aws_load.load_stores(sim_dir / "stores", aws)
    if after_load:
        after_load(stores, aws)
    audits = zendesk_server.load(sim_dir)
    auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
    with zendesk_server.start(audits, now=sim.window.as_of, rate_limit_per_minute=ZENDESK_BUDGET, auth=auth) as zd:
        cfg = demo_config(stores, zd.url, moto.endpoint, sim.params)
        cfg = replace(cfg, sink=replace(cfg.sink, **(sink or {})), dlq=replace(cfg.dlq, **(dlq or {})))
        outcome = execute(cfg, sim.window, tmp_path / "run", progress=False)
    truth_t = pq.read_table(sim_dir / "truth.parquet")
    truth = dict(zip(truth_t["source_id"].to_pylist(), truth_t["verdict"].to_pylist()))
    found_t = pq.read_table(tmp_path / "run" / "verdicts.parquet", columns=["source_id", "verdict"])
    found = dict(zip(found_t["source_id"].to_pylist(), found_t["verdict"].to_pylist()))
    text = BeautifulSoup(outcome.report.read_text(), "html.parser").get_text(" ")
    return FaultRun(outcome, truth, found, truth_t, text)


def sink_files(stores: Path) -> list[Path]:
    """The simulated Spark output's data files, in path order."""
    return sorted((stores / "spark-output" / "events").glob("dt=*/hr=*/*.parquet"))


def recommit(stores: Path, f: Path) -> None:
    """Record committed file `f`'s new size in Spark's commit log: a file the job wrote so (another schema), not one
    changed after the commit."""
    root = stores / "spark-output" / "events"
    rel = str(f.relative_to(root))
    for log in (root / "_spark_metadata").iterdir():
        lines = log.read_text().splitlines()
        entries = [orjson.loads(x) for x in lines[1:] if x]
        for e in entries:
            if e["path"].endswith("/" + rel):
                e["size"] = f.stat().st_size
        log.write_text("\n".join([lines[0], *(orjson.dumps(e).decode() for e in entries)]))


def committed_files(stores: Path) -> list[Path]:
    root = stores / "spark-output" / "events"
    listed = {line.split('"path":"s3://spark-output/events/')[1].split('"')[0]
              for f in (root / "_spark_metadata").iterdir() for line in f.read_text().splitlines()[1:]}
    return [f for f in sink_files(stores) if str(f.relative_to(root)) in listed]
