"""`reconcile fetch …` and `export-logs` over real servers: one store at a time, into a ledger Parquet file."""

import base64
from datetime import datetime, timedelta, timezone

import boto3
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reconcile.cli import main
from reconcile.simulate import aws_load, zendesk_server
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores

WINDOW = ["--start", "2026-11-23", "--end", "2026-11-24"]


def loaded(tmp_path, moto):
    sim = simulate(SimParams(events=1000, batch_seconds=1800, files_per_batch=1))
    write_stores(sim, tmp_path / "sim")
    from reconcile.config import AwsConfig
    stores = aws_load.load_stores(tmp_path / "sim" / "stores", AwsConfig(endpoint_url=moto.endpoint,
                                                                         region="us-east-1"))
    return sim, stores


def fetch(*args):
    return CliRunner().invoke(main, ["fetch", *args])


def test_fetch_each_aws_store(moto, tmp_path):
    sim, stores = loaded(tmp_path, moto)
    ep = ["--endpoint-url", moto.endpoint]
    runs = {
        "bus-log": ["--uri", stores["bus_log_uri"], "--format", "cwl-export"],
        "sink": ["--uri", stores["sink_uri"]],
        "dlq": ["--uri", stores["dlq_uri"]],
        "metrics": ["--rule", stores["rule"]],
    }
    for name, args in runs.items():
        out = tmp_path / f"{name}.parquet"
        result = fetch(name, *args, *ep, *WINDOW, "--out", str(out))
        assert result.exit_code == 0, (name, result.output)
        assert result.stdout.strip() == str(out)
        assert pq.read_table(out).num_rows > 0, name
        if name != "metrics":  # the ledger's rows themselves, not just their number
            assert pq.read_table(out, columns=["eb_id"])["eb_id"].null_count == 0, name
    assert (tmp_path / "sink.rejects.parquet").exists()  # the simulator's malformed sink row, kept with a reason


def test_fetch_zendesk_over_http(tmp_path, monkeypatch):
    sim = simulate(SimParams(events=1000))
    write_stores(sim, tmp_path / "sim")
    monkeypatch.setenv("ZENDESK_EMAIL", "a@b.c")
    monkeypatch.setenv("ZENDESK_API_TOKEN", "t0ken")
    auth = "Basic " + base64.b64encode(b"a@b.c/token:t0ken").decode()
    with zendesk_server.serve(tmp_path / "sim", now=sim.window.as_of, auth=auth) as zd:
        out = tmp_path / "z.parquet"
        result = fetch("zendesk", "--zendesk-url", zd.url, "--requests-per-minute", "600", *WINDOW,
                       "--out", str(out))
    assert result.exit_code == 0, result.output
    ids = set(pq.read_table(out, columns=["source_id"])["source_id"].to_pylist())
    assert ids == set(sim.truth["source_id"].to_pylist())
    assert "t0ken" not in result.output


def test_export_logs_waits_for_the_task(moto, tmp_path):
    # moto runs CreateExportTask synchronously: the task is COMPLETED at the first describe.
    logs = boto3.client("logs", endpoint_url=moto.endpoint, region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="logs-archive")
    logs.create_log_group(logGroupName="/aws/events/zendesk")
    logs.create_log_stream(logGroupName="/aws/events/zendesk", logStreamName="s")
    t = int(datetime(2026, 11, 23, 12, tzinfo=timezone.utc).timestamp() * 1000)
    logs.put_log_events(logGroupName="/aws/events/zendesk", logStreamName="s",
                        logEvents=[{"timestamp": t, "message": '{"id": "x"}'}])
    args = ["export-logs", "--log-group", "/aws/events/zendesk", "--bucket", "logs-archive", "--prefix", "exports/d",
            "--date", "2026-11-23", "--endpoint-url", moto.endpoint]
    # without --apply: the task it would start, and nothing sent (it writes into the bucket)
    dry = CliRunner().invoke(main, args)
    assert dry.exit_code == 0, dry.output
    assert "CreateExportTask reconcile-" in dry.stdout and "s3://logs-archive/exports/d" in dry.stdout
    assert "/aws/events/zendesk" in dry.stdout and "add --apply" in dry.stderr
    assert logs.describe_export_tasks()["exportTasks"] == []
    assert s3.list_objects_v2(Bucket="logs-archive").get("KeyCount", 0) == 0

    result = CliRunner().invoke(main, args + ["--apply"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "s3://logs-archive/exports/d"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="logs-archive", Prefix="exports/d")["Contents"]]
    assert any(k.endswith(".gz") for k in keys)


def test_fetch_of_a_store_not_configured_is_a_config_error_and_every_fetch_takes_set(moto, tmp_path):
    """`fetch sink` with no uri wrote an empty ledger and exited 3 ("retry": it never would), `fetch metrics` 0; and
    the config errors' advice, --set, was an option the named fetch commands did not have."""
    out = tmp_path / "x.parquet"
    for name in ("sink", "bus-log", "dlq", "metrics"):
        result = fetch(name, *WINDOW, "--out", str(out))
        assert result.exit_code == 4 and "is not configured" in result.stderr, (name, result.output)
        assert not out.exists()
    (tmp_path / "sink").mkdir()
    result = fetch("sink", "--set", f'sink.uri="{tmp_path / "sink"}"', *WINDOW, "--out", str(out))
    assert "is not configured" not in result.output and out.exists(), result.output


def test_an_export_task_whose_status_cannot_be_read_is_named_not_lost(aws_cfg):
    """DescribeExportTasks denied (the documented policy granted it on the log group, where it takes only "*"): the
    task was started and writing, and export-logs ended with "unexpected ClientError", exit 4, no task id; a retry
    then ran into its own task. The task and where it writes are named, and the error is the store's (exit 3)."""
    from botocore.awsrequest import AWSResponse

    from reconcile.aws import make_client, session
    from reconcile.errors import SourceError
    from reconcile.logexport import export_window
    from reconcile.window import Window
    logs, s3 = make_client("logs", aws_cfg), make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="logs-archive")
    logs.create_log_group(logGroupName="/aws/events/zendesk")

    class Denied:
        def stream(self, **_):
            yield b'{"__type": "AccessDeniedException", "message": "not authorized: logs:DescribeExportTasks"}'

    def deny(request, **_):
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, Denied())
    events = session(aws_cfg).events
    events.register("before-send.cloudwatch-logs.DescribeExportTasks", deny, unique_id="deny")
    day = datetime(2026, 11, 23, tzinfo=timezone.utc)
    try:
        with pytest.raises(SourceError) as e:
            window = Window(start=day, end=day + timedelta(days=1), as_of=day + timedelta(days=2))
            export_window("/aws/events/zendesk", "logs-archive", "exports/d", window, aws_cfg, poll=0)
    finally:
        events.unregister("before-send.cloudwatch-logs.DescribeExportTasks", unique_id="deny")
    (task,) = logs.describe_export_tasks()["exportTasks"]
    assert f"Export task {task['taskId']} was started (writing to s3://logs-archive/exports/d)" in str(e.value)
    assert "AccessDeniedException" in str(e.value) and '"Resource": "*"' in str(e.value)
