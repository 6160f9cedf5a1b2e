"""Put the simulator's stores into moto's server, so the demo and the tests read them over real AWS APIs.

moto cannot deliver EventBridge -> Kinesis -> Spark, nor emit AWS/Events metrics by itself, so the data is seeded
directly: S3 objects under the same keys as the local stores (docs/design.md), the DLQ archive sent to an SQS queue
with its message attributes, and the metrics file written back with PutMetricData.
"""

from __future__ import annotations

import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..aws import make_client
from ..config import AwsConfig
from ..errors import ConfigError
from .stores import spark_log, spark_log_entries

BUCKETS = ("logs-archive", "spark-output", "dlq-archive")
QUEUE = "zendesk-dlq"
RULE = "zendesk-to-kinesis"


@dataclass
class MotoServer:
    """A moto server on 127.0.0.1: `endpoint`, `reset()`, `stop()`."""

    endpoint: str
    _proc: subprocess.Popen | None = None
    _thread_server: object | None = None
    env: dict = field(default_factory=dict)

    def reset(self) -> None:
        """Forget every resource (POST /moto-api/reset)."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._thread_server is not None:
            self._thread_server.stop()
            self._thread_server = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int = 0, *, threaded: bool = False, env: dict[str, str] | None = None) -> MotoServer:
    """Start moto's server on 127.0.0.1 (a free port when port=0).

    By default a `python -m moto.server` subprocess, so the server does not compete with the caller for the GIL;
    `threaded=True` runs moto's ThreadedMotoServer in this process instead. `env` adds environment variables to the
    subprocess (e.g. INITIAL_NO_AUTH_ACTION_COUNT=0 to make moto enforce IAM).
    """
    if not all(importlib.util.find_spec(m) for m in ("moto", "flask")):  # moto[server]: the server needs flask
        raise ConfigError("The demo emulates AWS with moto's server, which is not installed here. Install the "
                          "package with its demo extra: pip install "
                          "\"dist/reconcile-<version>-py3-none-any.whl[demo]\" (the wheel with [demo], README's "
                          "Installing).")
    if threaded:
        from moto.server import ThreadedMotoServer

        srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        srv.start()
        host, real = srv.get_host_and_port()
        return MotoServer(endpoint=f"http://{host}:{real}", _thread_server=srv)
    port = port or _free_port()
    proc = subprocess.Popen(  # -P: the current folder is not put on sys.path (a stray module there would shadow one
        [sys.executable, "-P", "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],  # moto imports)
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )
    server = MotoServer(endpoint=f"http://127.0.0.1:{port}", _proc=proc, env=dict(env or {}))
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(server.endpoint + "/moto-api/", timeout=1).read()
            return server
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto server did not start on port {port}")
            time.sleep(0.1)


def load_stores(stores_dir: Path, aws: AwsConfig) -> dict:
    """Upload `stores_dir` (as `reconcile simulate` writes it) into the AWS endpoint of `aws` (moto's server).

    Returns the config values a run should use: bus_log_uri, sink_uri, dlq_uri, queue_url, rule, metrics counts.
    """
    stores_dir = Path(stores_dir)
    s3 = make_client("s3", aws)
    out: dict = {}
    uploads = []
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)
        base = stores_dir / bucket
        if base.is_dir():
            uploads += [(p, bucket, p.relative_to(base).as_posix()) for p in sorted(base.rglob("*")) if p.is_file()]
    # Days loaded one after the other continue one Spark stream: their commit logs are merged, not overwritten.
    log = [u for u in uploads if u[1] == "spark-output" and u[2].startswith(SPARK_LOG)]
    uploads = [u for u in uploads if u not in log]
    # Spark writes many small files; upload them concurrently (boto3 clients are thread-safe).
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda u: s3.upload_file(str(u[0]), u[1], u[2]), uploads))
        if log:
            merged = _merged_spark_log(s3, {u[0].name: u[0].read_bytes() for u in log})
            list(pool.map(lambda kv: s3.put_object(Bucket="spark-output", Key=SPARK_LOG + kv[0], Body=kv[1]),
                          merged.items()))
    out["bus_log_uri"] = "s3://logs-archive/exports"
    out["sink_uri"] = "s3://spark-output/events"
    out["dlq_uri"] = "s3://dlq-archive/messages.jsonl"

    sqs = make_client("sqs", aws)
    url = sqs.create_queue(QueueName=QUEUE, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    sent = 0
    archive = stores_dir / "dlq-archive" / "messages.jsonl"
    if archive.exists():
        batch: list[dict] = []
        for i, line in enumerate(archive.read_text().splitlines()):  # the demo loader: a few thousand messages
            if not line.strip():
                continue
            m = json.loads(line)
            batch.append({"Id": str(i), "MessageBody": m["Body"],
                          "MessageAttributes": {k: {"DataType": v.get("DataType", "String"),
                                                    "StringValue": v["StringValue"]}
                                                for k, v in (m.get("MessageAttributes") or {}).items()}})
            if len(batch) == 10:
                sent += _send(sqs, url, batch)
                batch = []
        if batch:
            sent += _send(sqs, url, batch)
    out["queue_url"] = url
    out["dlq_messages"] = sent

    out["rule"] = RULE
    metrics = stores_dir / "metrics" / "get-metric-data.json"
    points = 0
    if metrics.exists():
        cw = make_client("cloudwatch", aws)
        doc = json.loads(metrics.read_text())
        data = []
        for r in doc.get("MetricDataResults", []):
            for ts, v in zip(r.get("Timestamps", []), r.get("Values", [])):
                data.append({"MetricName": r["Label"], "Dimensions": [{"Name": "RuleName", "Value": RULE}],
                             "Timestamp": datetime.fromisoformat(str(ts).replace("Z", "+00:00")), "Value": v,
                             "Unit": "Count"})
        for i in range(0, len(data), 500):
            cw.put_metric_data(Namespace="AWS/Events", MetricData=data[i:i + 500])
        points = len(data)
    out["metric_points"] = points
    return out


SPARK_LOG = "events/_spark_metadata/"


def _merged_spark_log(s3, local: dict[str, bytes]) -> dict[str, bytes]:
    """The log already in the bucket (an earlier day's) and `local`, as one log of one stream."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="spark-output", Prefix=SPARK_LOG)
            for o in page.get("Contents", [])]
    earlier = {k.rsplit("/", 1)[1]: s3.get_object(Bucket="spark-output", Key=k)["Body"].read() for k in keys}
    entries = spark_log_entries(earlier)
    for batch, lines in spark_log_entries(local).items():
        entries[batch] = list(dict.fromkeys(entries.get(batch, []) + lines))
    return spark_log({b: lines for b, lines in entries.items() if lines})


def _send(sqs, url: str, batch: list[dict]) -> int:
    r = sqs.send_message_batch(QueueUrl=url, Entries=batch)
    if r.get("Failed"):
        raise RuntimeError(f"SendMessageBatch failed: {r['Failed'][:3]}")
    return len(r.get("Successful", []))
