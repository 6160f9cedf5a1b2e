"""Config mistakes are caught when the config is built, before any store is read; `reconcile check` (and
`run --dry-run`) reaches every configured store with one cheap call, against moto and the Zendesk-compatible server."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from click.testing import CliRunner

from reconcile import config
from reconcile.aws import make_client
from reconcile.cli import main
from reconcile.errors import ConfigError
from reconcile.simulate import zendesk_server as zs

EMAIL, TOKEN = "admin@example.com", "check-token"
ZENDESK_ENV = {"ZENDESK_EMAIL": EMAIL, "ZENDESK_API_TOKEN": TOKEN}
BASIC = "Basic " + base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()


@pytest.mark.parametrize("toml,named", [
    ('[zendesk]\nrequests_per_minute = "fast"\n',
     '[zendesk] requests_per_minute = "fast" is not valid: expected a positive number of requests per minute'),
    ('[thresholds]\nbus_to_sink = "0.01%"\n',
     '[thresholds] bus_to_sink = "0.01%" is not valid: expected a loss rate from 0 to 1'),
    ('[sink]\nformat = "parqet"\n', '[sink] format = "parqet" is not valid: expected one of parquet, json'),
    ('[window]\nmax_event_age = "1 day"\n',
     '[window] max_event_age = "1 day" is not valid: expected a duration with a unit, like 90s'),
    ('[engine]\nmemory_limit = "lots"\n', '[engine] memory_limit = "lots" is not valid: expected a size DuckDB'),
    # DuckDB's own overhead leaves the queries nothing: they failed as "unexpected" errors naming no key
    ('[engine]\nmemory_limit = "50MB"\n',
     '[engine] memory_limit = "50MB" is not valid: expected a size DuckDB accepts, of at least 256MB'),
    ('[engine]\npartitions = "many"\n',
     '[engine] partitions = "many" is not valid: expected "auto" or a whole number of partitions'),
    ('[engine]\npartitions = 0\n', '[engine] partitions = 0 is not valid: expected "auto" or a whole number'),
    ('[dlq]\nempty_receives = 0\n', "[dlq] empty_receives = 0 is not valid: expected a whole number"),
    ('[dlq]\nkinesis_target = ""\n', '[dlq] kinesis_target = "" is not valid: expected text that only the Kinesis'),
    ('[dlq]\narchive_every = "daily"\n',
     '[dlq] archive_every = "daily" is not valid: expected a duration with a unit, like 90s'),
    # a deadline of 0 leaves every wait at once (every upload, every read: diff review)
    ('[aws]\nupload_deadline = "0s"\n',
     '[aws] upload_deadline = "0s" is not valid: expected a duration above 0 with a unit, like 90s'),
    ('[zendesk]\nmax_page_size = "12"\n',
     '[zendesk] max_page_size = "12" is not valid: expected a size of at least 1MB'),
    ('[dlq]\narchive_since = "last month"\n',
     '[dlq] archive_since = "last month" is not valid: expected an ISO-8601 time'),
    # a log group alone is no export (it crashed check with an AttributeError); format api without one reads nothing
    ('[bus_log]\nlog_group = "/aws/events/zendesk"\n',
     '[bus_log] log_group is read only with format = "api" (format is "cwl-export"): set [bus_log] format = "api"'),
    ('[bus_log]\nformat = "api"\n', '[bus_log] format = "api" reads a log group: set [bus_log] log_group'),
])
@pytest.mark.parametrize("command", [["check"], ["run", "--dry-run", "--date", "2026-11-23"],
                                     ["run", "--date", "2026-11-23", "--no-state"]])
def test_each_config_mistake_names_key_value_and_expectation_before_reading(tmp_path, toml, named, command):
    cfg = tmp_path / "reconcile.toml"
    cfg.write_text(toml + '[sink]\nuri = "s3://never-read/events"\n' if "[sink]" not in toml
                   else toml.replace("[sink]\n", '[sink]\nuri = "s3://never-read/events"\n'))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [*command, "--config", str(cfg), *(["--out", str(out)] if "run" in command
                                                                          else [])],
                                env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "ZENDESK_URL": ""})
    assert result.exit_code == 4, result.output
    assert named in result.stderr
    assert "Fix the config file (`run`, `check`, `recover` and `fetch` also take --set section.key=value)." \
        in result.stderr
    assert not out.exists()


def test_a_memory_limit_in_any_case_duckdb_reads_is_taken_and_sized_alike():
    """DuckDB reads "3gb" and "512mib" as it reads "3GB": so do the config and the engine's sizing ("auto"
    partitions); the least, 256MB, is the reason given only for a size that is below it."""
    from reconcile import engine
    assert [engine.size_bytes(v) for v in ("3gb", "3GB", "512mib", "300000000B")] == [
        3 * 10**9, 3 * 10**9, 512 * 2**20, 300_000_000]
    assert config.build(None, {"engine": {"memory_limit": "3gb"}}, environ={}).engine.memory_limit == "3gb"
    with pytest.raises(ConfigError, match="of at least 256MB"):
        config.build(None, {"engine": {"memory_limit": "100b"}}, environ={})


def test_every_bad_key_is_named_at_once():
    with pytest.raises(ConfigError) as e:
        config.build(None, {"zendesk": {"requests_per_minute": "fast", "timeout": "soon"},
                            "thresholds": {"zendesk_to_bus": 2}}, environ={})
    lines = str(e.value).splitlines()
    assert [line.split(" = ")[0] for line in lines[:-1]] == [
        "[zendesk] requests_per_minute", "[zendesk] timeout", "[thresholds] zendesk_to_bus"]


def test_defaults_and_the_demo_config_are_valid():
    config.validate(config.Config())
    built = config.build(None, {"engine": {"memory_limit": "512MiB", "threads": 2}, "metrics": {"period": 60},
                                "exclude": {"event_types": ["Notification"]}}, environ={})
    assert built.engine.threads == 2


def test_no_store_configured_is_a_config_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    for command in (["run", "--date", "2026-11-23", "--out", str(out), "--state", str(tmp_path / "s.duckdb")],
                    ["check"]):
        result = CliRunner().invoke(main, command, env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""})
        assert result.exit_code == 4, result.output
        assert "No store is configured" in result.stderr and "[sink] uri" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def stores(aws_cfg):
    """Every store of a pipeline, each holding something, on moto and the Zendesk-compatible server."""
    s3 = make_client("s3", aws_cfg)
    for bucket in ("logs-archive", "spark-output"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="logs-archive", Key="exports/2026-11-23/000000.gz", Body=b"x")
    s3.put_object(Bucket="spark-output", Key="events/dt=2026-11-23/part-0.parquet", Body=b"x")
    sqs = make_client("sqs", aws_cfg)
    queue = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="{}")
    make_client("cloudwatch", aws_cfg).put_metric_data(Namespace="AWS/Events", MetricData=[  # the rule at work
        {"MetricName": "Invocations", "Dimensions": [{"Name": "RuleName", "Value": "zendesk-to-kinesis"}],
         "Value": 3.0}])
    now = time.time()
    h = zs.start(zs.synthetic_audits(5, start=int(now) - 200), now=now, auth=BASIC)
    yield {"zendesk": {"url": h.url}, "bus_log": {"uri": "s3://logs-archive/exports"},
           "sink": {"uri": "s3://spark-output/events"}, "dlq": {"queue_url": queue},
           "metrics": {"rule": "zendesk-to-kinesis"}}, h, queue
    h.stop()


def sets(keys: dict) -> list[str]:
    return [a for sec, kv in keys.items() for k, v in kv.items() for a in ("--set", f'{sec}.{k}="{v}"')]


def test_check_reaches_every_store_with_one_cheap_call_and_reads_nothing(stores, aws_cfg):
    keys, zendesk, queue = stores
    result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)],
                                env=ZENDESK_ENV)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", s] for s in ("zendesk", "bus_log", "sink", "dlq",
                                                                        "metrics")]
    assert "first object exports/2026-11-23/000000.gz" in lines[1]
    assert "about 1 messages" in lines[3]
    assert len(zendesk.requests) == 1 and zendesk.requests[0]["status"] == 200
    as_json = CliRunner().invoke(main, ["check", "--json", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)],
                                 env=ZENDESK_ENV)
    assert [(r["store"], r["ok"]) for r in orjson.loads(as_json.stdout)] == [
        (s, True) for s in ("zendesk", "bus_log", "sink", "dlq", "metrics")]
    attrs = make_client("sqs", aws_cfg).get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("1", "0")


def test_check_and_dry_run_name_each_store_that_does_not_answer(stores, aws_cfg, tmp_path):
    keys, zendesk, _ = stores
    keys["sink"]["uri"] = "s3://no-such-bucket/events"
    keys["dlq"]["queue_url"] = keys["dlq"]["queue_url"].replace("zendesk-dlq", "no-such-queue")
    keys["bus_log"]["uri"] = "s3://logs-archive/nothing-here"
    env = {"ZENDESK_EMAIL": EMAIL, "ZENDESK_API_TOKEN": "wrong"}
    result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)], env=env)
    # refused credentials: a retry would be refused again, so 4, as the run exits (3 for stores that may answer later)
    assert result.exit_code == 4, result.output
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert status["zendesk"].startswith("FAILED") and "refused the credentials (HTTP 401)" in status["zendesk"]
    assert status["sink"].startswith("FAILED") and "does not exist" in status["sink"]
    assert status["bus_log"].startswith("FAILED") and "holds no object" in status["bus_log"]
    assert status["dlq"].startswith("FAILED") and "does not exist" in status["dlq"]
    assert status["metrics"].startswith("ok")
    assert "4 of 5 configured store(s) did not answer: zendesk, bus_log, sink, dlq" in result.stderr

    out = tmp_path / "out"
    dry = CliRunner().invoke(main, ["run", "--dry-run", "--date", "2026-11-23", "--out", str(out),
                                    "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)], env=ZENDESK_ENV)
    assert dry.exit_code == 3, dry.output
    assert "reach      FAILED sink" in dry.stdout and "write      " in dry.stdout
    assert not out.exists()


def test_check_and_the_dry_run_reach_the_store_the_run_reads(stores, aws_cfg, tmp_path):
    """With both a queue and an archive set, the run reads the archive ([dlq] uri), and metrics from a saved response
    ([metrics] uri) over a rule (also the alert's dimension): check probed the queue and the API, and the dry run
    named them, so a queue the run never reads failed check (or a broken archive passed it)."""
    keys, _, queue = stores
    (tmp_path / "dlq-archive").mkdir()
    (tmp_path / "metrics.json").write_text("{}")
    keys["dlq"] = {"queue_url": queue.replace("zendesk-dlq", "no-such-queue"), "uri": str(tmp_path / "dlq-archive")}
    keys["metrics"] = {"rule": "zendesk-to-kinesis", "uri": str(tmp_path / "metrics.json")}
    result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)], env=ZENDESK_ENV)
    assert result.exit_code == 0, result.output
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert f"{tmp_path / 'dlq-archive'} exists" in status["dlq"] and f"{tmp_path / 'metrics.json'} exists" in \
        status["metrics"]
    dry = CliRunner().invoke(main, ["run", "--dry-run", "--date", "2026-11-23", "--out", str(tmp_path / "out"),
                                    "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)], env=ZENDESK_ENV)
    assert f"{tmp_path / 'dlq-archive'} (archive)" in dry.stdout and "no-such-queue" not in dry.stdout, dry.stdout


def test_check_of_a_config_mistake_a_retry_cannot_mend_exits_4(stores, aws_cfg):
    """No Zendesk credentials: `run` exits 4 for it (a retry fails alike); check said 3, "retry later"."""
    keys, _, _ = stores
    result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)],
                                env={"ZENDESK_EMAIL": "", "ZENDESK_API_TOKEN": ""})
    assert result.exit_code == 4, result.output
    assert "No Zendesk credentials" in result.stdout and "A retry would fail alike" in result.stderr


def test_an_optional_store_that_refuses_is_no_config_error_for_check():
    """The run goes on without the metrics when they refuse the credentials (a sanity check, never a verdict), so
    check must not call that a mistake no retry mends (exit 4) while a needed store refusing is one (diff review)."""
    from reconcile.check import Reached, failure
    refused = Reached("metrics", False, "AccessDenied", 4)
    assert failure([Reached("sink", True, "lists"), refused]).exit_code == 3
    assert failure([Reached("sink", False, "AccessDenied", 4), refused]).exit_code == 4


def test_a_time_key_given_unquoted_is_taken_as_the_time_it_is(tmp_path):
    """TOML reads 2026-11-01T00:00:00Z unquoted (in the file, or through --set) as a datetime: the key that asks for
    "an ISO-8601 time, like 2026-11-01T00:00:00Z" refused exactly that, showing a value never typed."""
    from reconcile.cli_options import parse_sets
    cfg = config.build(None, parse_sets(("dlq.archive_since=2026-11-01T00:00:00Z",)))
    assert cfg.dlq.archive_since == "2026-11-01T00:00:00Z"
    (tmp_path / "r.toml").write_text("[dlq]\narchive_since = 2026-11-01T00:00:00Z\n")
    assert config.build(tmp_path / "r.toml").dlq.archive_since == "2026-11-01T00:00:00Z"
    with pytest.raises(ConfigError, match=r'--set \'key=\["a", "b"\]\''):
        config.build(None, parse_sets(("exclude.event_types=Notification",)))


def test_check_finds_the_log_group_of_format_api(aws_cfg):
    make_client("logs", aws_cfg).create_log_group(logGroupName="/aws/events/zendesk")
    for group, code, word in (("/aws/events/zendesk", 0, "ok"), ("/aws/events/zendesk-typo", 3, "FAILED")):
        result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, "--set",
                                           "bus_log.format=api", "--set", f"bus_log.log_group={group}"])
        assert result.exit_code == code, result.output
        assert result.stdout.split()[:2] == [word, "bus_log"]


def test_check_against_an_endpoint_that_never_answers_ends_in_seconds(stores, tmp_path):
    """Every AWS store behind an endpoint that takes the connection and never answers: `check` asks them at once,
    each with short timeouts and one retry (aws.PROBE), and names each within a minute -- with the reads' patience
    (8 attempts of 60 s, one store after another) it took half an hour."""
    import socket
    import threading
    keys, _, _ = stores
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in iter(int, 1)], daemon=True).start()
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    started = time.monotonic()
    try:
        result = CliRunner().invoke(main, ["check", "--endpoint-url", endpoint, *sets(keys)], env=ZENDESK_ENV)
    finally:
        silent.close()
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 60
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert status["zendesk"].startswith("ok")
    assert all(status[s].startswith("FAILED") for s in ("bus_log", "sink", "dlq", "metrics")), status


def test_check_of_a_store_that_trickles_its_answer_ends_at_its_deadline(stores, aws_cfg):
    """A gateway sends the S3 listing's answer a byte every half second: each read comes within the probe's timeouts,
    so `check` waited for as long as the answer took (a trickle that never ends held it for good, and a SIGTERM with
    it). It waits [aws] read_deadline at most (60 s when longer), names the stores still answering (exit 3) and
    leaves them."""
    from proxy import Proxy
    keys, _, _ = stores
    proxy = Proxy(aws_cfg.endpoint_url, trickle=lambda method, path: method == "GET" and "list-type=2" in path)
    started = time.monotonic()
    try:
        result = CliRunner().invoke(main, ["check", "--endpoint-url", proxy.endpoint, "--set", "aws.read_deadline=5s",
                                           *sets(keys)], env=ZENDESK_ENV)
    finally:
        proxy.close()
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 5 + 10
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    for store in ("bus_log", "sink"):
        assert status[store].startswith("FAILED") and "still answering after 5 s (a proxy or gateway trickling its " \
            "answer?): left. Check the [" + store + "] keys" in status[store], status[store]
    assert all(status[s].startswith("ok") for s in ("zendesk", "dlq", "metrics")), status


def test_check_of_a_dlq_with_its_own_redrive_policy_exits_as_the_run_does(stores, aws_cfg):
    """`run` refuses a queue with its own redrive policy with exit 3 (nothing read); check said 4, "a retry would
    fail alike", for the same queue."""
    import json
    keys, _, queue = stores
    sqs = make_client("sqs", aws_cfg)
    target = sqs.create_queue(QueueName="dlq-of-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "2"})})
    result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)], env=ZENDESK_ENV)
    assert result.exit_code == 3, result.output
    assert "redrive policy" in result.stdout and "A retry would fail alike" not in result.stderr


def test_check_of_metrics_of_a_rule_no_metric_has_fails(stores, aws_cfg):
    """A misspelt rule: GetMetricData answers "Complete" with no point, and check said ok, while every run then
    read no metric (sources/metrics.py says so now). ListMetrics shows the rule has none."""
    keys, _, _ = stores
    keys["metrics"]["rule"] = "zendesk-to-kinesis-typo"
    result = CliRunner().invoke(main, ["check", "--endpoint-url", aws_cfg.endpoint_url, *sets(keys)], env=ZENDESK_ENV)
    assert result.exit_code == 3, result.output
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert status["metrics"].startswith("FAILED") and "no AWS/Events Invocations metric of rule" in status["metrics"]
