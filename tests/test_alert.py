"""Alerting after the daily run, against moto's server: CloudWatch metrics land in the custom namespace with the rule
as a dimension, the SNS summary reaches a subscribed SQS queue, and a failure to publish is reported on stderr and in
`--json` without changing the exit code. Also what `--json` gives a scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from reconcile import alert
from reconcile.aws import make_client
from reconcile.cli import main
from reconcile.config import build
from reconcile.errors import ConfigError
from reconcile.ledger import SourceResult

SECRET = "zd-token-never-shown-7f3a"


def run_args(tmp_path, *sets: str) -> list[str]:
    """A run that needs no store but a local sink folder: Zendesk unconfigured makes it incomplete (exit 3)."""
    sink = tmp_path / "sink"
    sink.mkdir(exist_ok=True)
    args = ["run", "--date", "2026-11-23", "--out", str(tmp_path / "out"), "--no-progress", "--no-state", "--json",
            "--set", f"sink.uri={sink}"]
    for s in sets:
        args += ["--set", s]
    return args


def cli_env(aws_cfg) -> dict[str, str]:
    return {"ZENDESK_URL": "", "ZENDESK_API_TOKEN": SECRET, "AWS_ENDPOINT_URL": aws_cfg.endpoint_url}


def subscribed_queue(aws_cfg, topic_name: str = "reconcile-alerts") -> tuple[str, str]:
    """(topic ARN, queue URL) with the queue subscribed to the topic."""
    sns, sqs = make_client("sns", aws_cfg), make_client("sqs", aws_cfg)
    arn = sns.create_topic(Name=topic_name)["TopicArn"]
    url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return arn, url


def test_an_alert_target_that_trickles_its_answer_is_left_at_the_deadline(tmp_path, aws_cfg):
    """A gateway sends SNS's answer a byte every half second: each read comes within botocore's timeouts, and a run
    that committed no longer stops on a signal, so the alert held the finished run -- its exit code and its result
    line -- until a SIGKILL (hang review). At [alert] deadline the target is left as failed, whether it was sent not
    known, and the run ends with its own exit code."""
    import time

    from proxy import Proxy
    arn, _ = subscribed_queue(aws_cfg)
    proxy = Proxy(aws_cfg.endpoint_url, trickle=lambda method, path: method == "POST")
    started = time.monotonic()
    try:
        result = CliRunner().invoke(main, run_args(tmp_path, f'alert.sns_topic_arn="{arn}"', 'alert.deadline="2s"'),
                                    env={**cli_env(aws_cfg), "AWS_ENDPOINT_URL": proxy.endpoint})
    finally:
        proxy.close()
    assert time.monotonic() - started < 2 + 20
    assert result.exit_code == 3, result.output  # the run's own: Zendesk is not configured
    sns = orjson.loads(result.stdout)["alert"]["sns"]
    assert sns["status"] == "failed" and sns["topic_arn"] == arn
    assert sns["error"].startswith("sns did not answer within [alert] deadline = 2s (a proxy or gateway trickling its "
                                   "answer?): left, whether it was sent is not known. Check [alert] sns_topic_arn")


def test_a_signal_after_the_commit_ends_the_wait_for_the_alert(tmp_path, aws_cfg):
    """The same trickled SNS answer, and the scheduler's SIGTERM once the run committed: a signal then is only noted,
    so the run waited out the whole [alert] deadline -- past the seconds a scheduler gives before its SIGKILL (exit
    137, no result line; diff review). The wait ends when the signal comes: the run exits at once with its own
    code, the alert said failed."""
    import signal
    import time
    from pathlib import Path

    from proxy import Proxy
    arn, _ = subscribed_queue(aws_cfg)
    proxy = Proxy(aws_cfg.endpoint_url, trickle=lambda method, path: method == "POST")
    reconcile = str(Path(sys.executable).with_name("reconcile"))
    env = {**os.environ, **cli_env(aws_cfg), "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        args = run_args(tmp_path, f'alert.sns_topic_arn="{arn}"', 'alert.deadline="10m"')
        proc = subprocess.Popen([reconcile, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = time.monotonic()
        while not (tmp_path / "out" / "manifest.json").exists() and time.monotonic() - started < 120:
            time.sleep(0.1)
        time.sleep(1.0)  # the alert under way
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proxy.close()
    assert time.monotonic() - signalled < 10, err.decode()
    assert proc.returncode == 3, err.decode()  # the run's own code (Zendesk is not configured), not 143
    sns = orjson.loads(out)["alert"]["sns"]
    assert sns["status"] == "failed" and sns["error"].startswith("sns had not answered when a signal came: left")


def test_metrics_land_in_the_namespace_with_the_rule_as_dimension(tmp_path, aws_cfg):
    before = datetime.now(timezone.utc) - timedelta(minutes=1)
    result = CliRunner().invoke(main, run_args(tmp_path, 'alert.cloudwatch_namespace="Reconcile"',
                                               'alert.rule="zendesk-to-kinesis"'), env=cli_env(aws_cfg))
    assert result.exit_code == 3, result.output
    out = orjson.loads(result.stdout)
    # a LossRate per hop whose losses are settled; the incomplete input holds those before the bus (no rate for them)
    settled = [h["name"] for h in out["hops"] if not h["unsettled"]]
    assert settled == ["bus_to_sink"]
    assert out["alert"]["cloudwatch"] == {"status": "sent", "namespace": "Reconcile", "rule": "zendesk-to-kinesis",
                                          "metric_data": 12 + len(settled)}
    assert out["alert"]["sns"] == {"status": "off"}

    cw = make_client("cloudwatch", aws_cfg)
    listed = cw.list_metrics(Namespace="Reconcile")["Metrics"]
    found = {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))) for m in listed}
    rule = ("Rule", "zendesk-to-kinesis")
    assert found == {("Status", (rule,)), ("Events", (rule,)), ("LostEvents", (rule,)), ("PendingEvents", (rule,)),
                     ("HeldEvents", (rule,)), ("IncompleteInputs", (rule,)), ("SettledLostEvents", (rule,)),
                     ("OutsideCommitLog", (rule,)),
                     *((name, (("Hop", hop), rule)) for name in ("LostEvents", "HeldEvents")
                       for hop in ("bus_to_sink", "zendesk_to_bus")),
                     *(("LossRate", (("Hop", hop), rule)) for hop in settled)}

    def value(name, *dims):
        r = cw.get_metric_data(
            MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": {
                "Namespace": "Reconcile", "MetricName": name,
                "Dimensions": [{"Name": "Rule", "Value": "zendesk-to-kinesis"}, *dims]},
                "Period": 60, "Stat": "Maximum"}}],
            StartTime=before, EndTime=datetime.now(timezone.utc) + timedelta(minutes=1))
        return r["MetricDataResults"][0]["Values"]

    assert value("Status") == [3.0]  # the exit code: incomplete
    incomplete = sum(1 for i in out["inputs"] if not i["complete"])
    assert incomplete >= 1 and value("IncompleteInputs") == [float(incomplete)]
    # the losses an incomplete day holds back are published, so an alarm on them fires when LostEvents cannot
    assert value("HeldEvents") == [float(sum(h["held"] for h in out["hops"]))]
    # a rate of 0 over losses held for the next run would read "no loss": none is sent for that hop
    assert value("LossRate", {"Name": "Hop", "Value": "zendesk_to_bus"}) == []
    assert len(value("LossRate", {"Name": "Hop", "Value": "bus_to_sink"})) == 1


def test_the_sns_summary_reaches_a_subscribed_queue(tmp_path, aws_cfg):
    arn, url = subscribed_queue(aws_cfg)
    result = CliRunner().invoke(main, run_args(tmp_path, f'alert.sns_topic_arn="{arn}"'), env=cli_env(aws_cfg))
    assert result.exit_code == 3, result.output
    out = orjson.loads(result.stdout)
    assert out["alert"]["sns"]["status"] == "sent" and out["alert"]["cloudwatch"] == {"status": "off"}

    msgs = make_client("sqs", aws_cfg).receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                       WaitTimeSeconds=1)["Messages"]
    assert len(msgs) == 1
    envelope = orjson.loads(msgs[0]["Body"])  # SNS's JSON envelope (raw delivery off)
    assert envelope["TopicArn"] == arn and envelope["MessageId"] == out["alert"]["sns"]["message_id"]
    assert envelope["Subject"] == "reconcile 2026-11-23: incomplete (exit 3)"
    assert envelope["MessageAttributes"]["exit_code"]["Value"] == "3"
    body = envelope["Message"].splitlines()
    assert body[0] == "Status: incomplete (exit code 3)"
    assert f"Report: {out['report']}" in body
    assert any(line.startswith("  zendesk_to_bus: 0 lost of 0 = 0.0000 %") for line in body)
    assert any(line.startswith("  - input zendesk incomplete: not configured") for line in body), body
    assert SECRET not in envelope["Message"]


def test_a_failure_to_publish_is_reported_and_the_exit_code_is_unchanged(tmp_path, aws_cfg):
    """A topic that does not exist: the metrics still go, the failure is one stderr line naming the IAM action and
    the config key, `--json` says "failed", and the exit code is the run's own (3)."""
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    env = {**os.environ, **cli_env(aws_cfg)}
    p = subprocess.run([sys.executable, "-m", "reconcile", *run_args(tmp_path, 'alert.cloudwatch_namespace="Rec"',
                                                                     'alert.rule="r1"',
                                                                     f'alert.sns_topic_arn="{missing}"')],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 3, p.stderr
    out = orjson.loads(p.stdout)
    assert out["exit_code"] == 3 and out["status"] == "incomplete"
    assert out["alert"]["cloudwatch"]["status"] == "sent"
    sns = out["alert"]["sns"]
    assert sns["status"] == "failed" and missing in sns["error"] and "sns:Publish" in sns["error"]
    errors = [line for line in p.stderr.splitlines() if "alert: SNS Publish" in line]
    assert len(errors) == 1 and "ERROR" in errors[0] and "[alert] sns_topic_arn" in errors[0]
    assert "exit code are unchanged" in errors[0]
    assert (tmp_path / "out" / "manifest.json").exists()  # the run finished before the alert


def test_dry_run_says_what_it_would_publish_and_publishes_nothing(tmp_path, aws_cfg):
    arn = "arn:aws:sns:us-east-1:123456789012:reconcile-alerts"
    result = CliRunner().invoke(main, [*run_args(tmp_path, 'alert.cloudwatch_namespace="Reconcile"',
                                                 'metrics.rule="zendesk-to-kinesis"', f'alert.sns_topic_arn="{arn}"'),
                                       "--dry-run"], env=cli_env(aws_cfg))
    lines = [line for line in result.stdout.splitlines() if line.startswith("alert ")]
    assert lines[0].split(None, 1)[1].startswith(
        "CloudWatch PutMetricData namespace Reconcile, dimension Rule=zendesk-to-kinesis (+ Hop per hop): Status,")
    assert lines[1].split(None, 1)[1].startswith(f"SNS Publish to {arn}:")
    assert make_client("cloudwatch", aws_cfg).list_metrics(Namespace="Reconcile")["Metrics"] == []
    assert not (tmp_path / "out").exists()


def test_alerting_is_off_by_default_and_dry_run_says_so(tmp_path, aws_cfg):
    result = CliRunner().invoke(main, [*run_args(tmp_path), "--dry-run"], env=cli_env(aws_cfg))
    assert "alert      nothing ([alert] cloudwatch_namespace and sns_topic_arn are unset)" in result.stdout
    assert alert.plan(build(None, {})) == []


@pytest.mark.parametrize("values,named", [
    ({"cloudwatch_namespace": "AWS/Events", "rule": "r"}, "[alert] cloudwatch_namespace"),
    ({"cloudwatch_namespace": "Reconcile"}, "set [metrics] rule, or [alert] rule"),
    ({"sns_topic_arn": "reconcile-alerts"}, "[alert] sns_topic_arn"),
])
def test_alert_config_mistakes_are_named(values, named):
    with pytest.raises(ConfigError) as e:
        build(None, {"alert": values}, environ={})
    assert named in str(e.value)


def test_json_gives_a_scheduler_every_figure(tmp_path, aws_cfg):
    result = CliRunner().invoke(main, run_args(tmp_path), env=cli_env(aws_cfg))
    out = orjson.loads(result.stdout)
    assert list(out)[0] == "report" and out["report"] == str((tmp_path / "out" / "report.html").resolve())
    assert (out["status"], out["exit_code"], result.exit_code) == ("incomplete", 3, 3)
    assert {h["name"] for h in out["hops"]} == {"zendesk_to_bus", "bus_to_sink"}
    assert all({"in", "out", "lost", "pending", "loss_rate", "threshold", "over_threshold"} <= set(h)
               for h in out["hops"])
    assert {"events", "verdicts", "orphans", "generated_at", "window"} <= set(out)
    assert {i["source"]: i["complete"] for i in out["inputs"]}["zendesk"] is False
    assert all({"records", "rejected", "problems"} <= set(i) for i in out["inputs"])
    assert out["alert"] == {"cloudwatch": {"status": "off"}, "sns": {"status": "off"}}


@pytest.mark.usefixtures("restore_environment")  # the simulator's helpers set env vars
def test_the_daily_run_recipe_end_to_end_on_moto(tmp_path, moto):
    """A simulated day with losses in moto's stores and the Zendesk API over HTTP; `reconcile run --config` as the
    recipes run it: exit 2, the metrics say so, and the SNS summary reaches the subscribed queue."""
    import base64

    from reconcile.config import AwsConfig
    from reconcile.simulate import aws_load, zendesk_server
    from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN, ZENDESK_BUDGET
    from reconcile.simulate.generate import SimParams, simulate
    from reconcile.simulate.stores import write_stores

    aws = AwsConfig(endpoint_url=moto.endpoint, region="us-east-1")
    sim = simulate(SimParams(events=1500, batch_seconds=900, files_per_batch=1, seed=31))
    write_stores(sim, tmp_path / "sim")
    stores = aws_load.load_stores(tmp_path / "sim" / "stores", aws)
    arn, url = subscribed_queue(aws)
    p = sim.params
    (tmp_path / "reconcile.toml").write_text(f'''
[zendesk]
requests_per_minute = {ZENDESK_BUDGET}
max_wait = "2m"
[bus_log]
uri = "{stores['bus_log_uri']}"
[sink]
uri = "{stores['sink_uri']}"
[dlq]
queue_url = "{stores['queue_url']}"
[metrics]
rule = "{stores['rule']}"
[window]
max_event_age = "{p.max_event_age.total_seconds():.0f}s"
margin_before = "{p.margin_before.total_seconds():.0f}s"
hop_a_grace = "{p.hop_a_grace.total_seconds():.0f}s"
[exclude]
event_types = {list(p.excluded_kinds)!r}
[alert]
cloudwatch_namespace = "Reconcile"
sns_topic_arn = "{arn}"
'''.replace("'", '"'))
    audits = zendesk_server.load(tmp_path / "sim")
    auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
    with zendesk_server.start(audits, now=sim.window.as_of, rate_limit_per_minute=ZENDESK_BUDGET, auth=auth) as zd:
        result = CliRunner().invoke(main, [
            "run", "--config", str(tmp_path / "reconcile.toml"), "--zendesk-url", zd.url, "--date", p.day,
            "--as-of", sim.window.as_of.isoformat(), "--out", str(tmp_path / "out"), "--no-state", "--no-progress",
            "--json"], env={"ZENDESK_EMAIL": DEMO_EMAIL, "ZENDESK_API_TOKEN": DEMO_TOKEN,
                           "AWS_ENDPOINT_URL": moto.endpoint})
    assert result.exit_code == 2, result.output
    out = orjson.loads(result.stdout)
    assert out["status"] == "loss" and all(i["complete"] for i in out["inputs"] if i["source"] != "metrics")
    assert out["alert"]["cloudwatch"]["status"] == "sent" and out["alert"]["sns"]["status"] == "sent"

    cw = make_client("cloudwatch", aws)
    dims = [{"Name": "Rule", "Value": stores["rule"]}]
    got = cw.get_metric_data(MetricDataQueries=[
        {"Id": f"m{i}", "MetricStat": {"Metric": {"Namespace": "Reconcile", "MetricName": name, "Dimensions": d},
                                       "Period": 60, "Stat": "Maximum"}}
        for i, (name, d) in enumerate([("Status", dims), ("LostEvents", dims),
                                       ("LossRate", dims + [{"Name": "Hop", "Value": "zendesk_to_bus"}]),
                                       ("LossRate", dims + [{"Name": "Hop", "Value": "bus_to_sink"}])])],
        StartTime=datetime.now(timezone.utc) - timedelta(minutes=10),
        EndTime=datetime.now(timezone.utc) + timedelta(minutes=1))["MetricDataResults"]
    values = {r["Id"]: r["Values"] for r in got}
    lost = sum(h["lost"] for h in out["hops"])
    # a hop's rate once it is final: none while events are pending (this day's last losses after the bus are held,
    # the sink having read the stream only so far: rules.sql beyond_sink)
    rates = [[h["loss_rate"]] if not h["pending"] and not h.get("unsettled") else [] for h in out["hops"]]
    assert [h["name"] for h in out["hops"]] == ["zendesk_to_bus", "bus_to_sink"] and [] != rates[0]
    assert values == {"m0": [2.0], "m1": [float(lost)], "m2": rates[0], "m3": rates[1]}
    assert lost > 0

    (msg,) = make_client("sqs", aws).receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    envelope = orjson.loads(msg["Body"])
    assert envelope["Subject"] == f"reconcile {p.day}: loss (exit 2)"
    body = envelope["Message"]
    assert "OVER THRESHOLD" in body and f"Report: {out['report']}" in body and DEMO_TOKEN not in body
    assert "reconcile trace " in body  # top problems name an id to trace


def test_an_incomplete_day_publishes_the_losses_it_holds(tmp_path):
    """The tiny day with its sink read in part: every loss is held, so LostEvents is 0; HeldEvents (total and per
    hop) and the SNS body carry them, so an alarm on them fires when one on LostEvents cannot."""
    from tinyday import produce

    s = produce(tmp_path, complete=False).summary
    data = alert.metric_data(s, "r", datetime(2026, 11, 24, tzinfo=timezone.utc))
    got = {(d["MetricName"], next((x["Value"] for x in d["Dimensions"] if x["Name"] == "Hop"), None)): d["Value"]
           for d in data}
    assert got[("LostEvents", None)] == 0 and got[("HeldEvents", None)] == 4
    assert (got[("HeldEvents", "zendesk_to_bus")], got[("HeldEvents", "bus_to_sink")]) == (2, 2)
    # no LossRate of 0 for a hop whose losses are held: an alarm on it would read "no loss" (missing data instead)
    assert [h["unsettled"] for h in s["hops"]] == ["sink read only in part"] * 2
    assert not any(name == "LossRate" for name, _ in got)
    body = alert.message(s, "report.html")[1]
    assert ("zendesk_to_bus: 0 lost of 12 = 0.0000 %, 2 more held (a store read in part or ending early) (not final: "
            "sink read only in part)") in body, body
    # the report's cards say the same: "not final", never "within budget"
    cards = BeautifulSoup((tmp_path / "report.html").read_text(), "html.parser").select("#status .card")
    texts = [" ".join(c.get_text(" ").split()) for c in cards if "unsettled" in c["class"]]
    assert len(texts) == 2 and all("not final" in t and "within budget" not in t for t in texts), texts


def test_losses_held_on_whole_reads_are_not_final_either(tmp_path):
    """Every store read whole, but the bus log ends at 11:00 while the sink holds events until 18:00 (an export made
    before its data was exportable): the losses before the bus after its end are held (rules.sql beyond_bus_log),
    and the hop is as little "within budget" as on a partial read: not final, no LossRate."""
    import tinyday
    from reconcile import config as rconfig
    from reconcile import run as job

    cfg = rconfig.build(None, tinyday.CONFIG)
    window = job.window_from(cfg, tinyday.DAY, tinyday.DAY + timedelta(days=1), tinyday.DAY + timedelta(hours=26))
    res = tinyday.results()
    early = [b for b in tinyday.BUS if str(b["event_time"]) < "11:30"]
    res["bus_log"] = SourceResult("bus_log", tinyday.make("bus", early))
    s = job.finish(cfg, window, tmp_path, res, job.write_evidence(res, tmp_path / "evidence"), audience="daily",
                   generated_at=tinyday.DAY + timedelta(hours=26)).summary
    assert all(i["complete"] for i in s["inputs"])
    before = s["hops"][0]
    assert before["name"] == "zendesk_to_bus" and before["held"] > 0, before
    assert before["unsettled"] == f"{before['held']:,} loss(es) held until a later read proves them"
    data = alert.metric_data(s, "r", datetime(2026, 11, 24, tzinfo=timezone.utc))
    rated = {next(x["Value"] for x in d["Dimensions"] if x["Name"] == "Hop")
             for d in data if d["MetricName"] == "LossRate"}
    assert "zendesk_to_bus" not in rated
    card = BeautifulSoup((tmp_path / "report.html").read_text(), "html.parser").select("#status .card")[0]
    assert "not final" in card.get_text(" ") and "within budget" not in card.get_text(" ")


def test_a_carried_event_settled_as_lost_is_published(tmp_path):
    """E, pending on day 1, never lands: day 2 (its sink read whole) settles it lost. That loss is day 1's, so day 2's
    LostEvents does not count it; SettledLostEvents and the SNS body do, so the daily alert still hears of it."""
    from reconcile.state import State
    from tinyday import day1, day2

    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=False)
    assert s2["carried"]["by_verdict"] == {"lost_after_bus": 1} and alert.settled_lost(s2) == 1
    data = {d["MetricName"]: d["Value"] for d in alert.metric_data(s2, "r", datetime(2026, 11, 25, tzinfo=timezone.utc))
            if len(d["Dimensions"]) == 1}
    assert data["SettledLostEvents"] == 1 and data["LostEvents"] == 0
    assert "Settled as lost: 1 pending event(s) of earlier windows" in alert.message(s2, "report.html")[1]


def test_a_loss_rate_is_published_once_final_at_its_window_s_end(tmp_path):
    """Day 1's bus_to_sink has E pending: a rate of 0 then would read "no loss", so none is sent. Day 2 settles E as
    lost: day 1's bus_to_sink rate, E folded in, is sent stamped with day 1's end -- where an alarm on LossRate looks
    -- as it now stands in the history."""
    from reconcile.state import State
    from tinyday import DAY2, day1, day2

    def rates(s, at):
        return {(next(x["Value"] for x in d["Dimensions"] if x["Name"] == "Hop"), d["Timestamp"]): d["Value"]
                for d in alert.metric_data(s, "r", at) if d["MetricName"] == "LossRate"}
    with State.open(tmp_path / "state.duckdb") as st:
        s1 = day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=False)
    at1, at2 = datetime(2026, 11, 24, 2, tzinfo=timezone.utc), datetime(2026, 11, 25, 2, tzinfo=timezone.utc)
    pending1 = {h["name"] for h in s1["hops"] if h["pending"]}
    assert "bus_to_sink" in pending1 and not any(hop in pending1 for hop, _ in rates(s1, at1))
    folded = next(h for h in s2["history"] if h["window_key"] == s1["history"][0]["window_key"]
                  and h["hop"] == "bus_to_sink")
    assert folded["pending"] == 0 and folded["lost"] >= 1
    assert rates(s2, at2)[("bus_to_sink", DAY2)] == pytest.approx(folded["loss_rate"])
    # E lands instead: day 1's last pending event settles delivered, and its final rate (its own losses, 2 of 10) is
    # sent all the same -- no run sent it before, and the one that could was the run settling only a loss
    with State.open(tmp_path / "landed.duckdb") as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=True)
    assert s2["carried"]["by_verdict"] == {"delivered": 1} and s2["carried"]["over_threshold"] == []
    assert rates(s2, at2)[("bus_to_sink", DAY2)] == pytest.approx(0.2)
    assert ("zendesk_to_bus", DAY2) not in rates(s2, at2)  # E waited on the bus: day 1's first hop is as it was


def test_a_carried_loss_held_again_is_published(tmp_path):
    """E, pending on day 1, is not found on day 2 while day 2's sink was read in part: its loss (after the bus) is
    held again. It is day 1's event, so day 2's funnel does not count it; HeldEvents (total and bus_to_sink) and the
    SNS body do."""
    from reconcile.state import State
    from tinyday import day1, day2

    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, sink_read_whole=False)
    assert s2["carried"]["by_verdict"] == {"pending": 1} and s2["carried"]["held"] == {"bus_to_sink": 1}
    window_held = {h["name"]: h["held"] for h in s2["hops"]}
    data = alert.metric_data(s2, "r", datetime(2026, 11, 25, tzinfo=timezone.utc))
    got = {(d["MetricName"], next((x["Value"] for x in d["Dimensions"] if x["Name"] == "Hop"), None)): d["Value"]
           for d in data}
    assert got[("HeldEvents", None)] == sum(window_held.values()) + 1
    assert got[("HeldEvents", "bus_to_sink")] == window_held["bus_to_sink"] + 1
    assert "Carried and held again: 1 pending event(s) of earlier windows" in alert.message(s2, "report.html")[1]


def test_a_fifo_topic_gets_the_summary_once(tmp_path, aws_cfg):
    """A FIFO topic passed the config check and the dry run, and every alert to it failed (no MessageGroupId), the
    error blaming credentials and IAM. It is sent with a group and the run's own deduplication id."""
    sns, sqs = make_client("sns", aws_cfg), make_client("sqs", aws_cfg)
    arn = sns.create_topic(Name="reconcile-alerts.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    url = sqs.create_queue(QueueName="alerts-inbox.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    result = CliRunner().invoke(main, run_args(tmp_path, f'alert.sns_topic_arn="{arn}"'), env=cli_env(aws_cfg))
    assert result.exit_code == 3, result.output
    assert orjson.loads(result.stdout)["alert"]["sns"]["status"] == "sent"
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert len(msgs) == 1 and orjson.loads(msgs[0]["Body"])["TopicArn"] == arn


def test_an_earlier_window_s_rate_too_old_for_cloudwatch_is_left_out_not_the_run_s_own_metrics(tmp_path, aws_cfg):
    """A run settling the pending events of a window more than two weeks back sent that window's LossRate, stamped
    with its end, in the first PutMetricData request with the run's own Status: CloudWatch refuses a datum older
    than two weeks, and with it the whole request. The run's own data go first, in requests of their own; a rate
    older than CloudWatch takes is left out, and said."""
    import dataclasses

    from reconcile.state import State
    from tinyday import DAY2, day1, day2
    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=False)
    cfg = dataclasses.replace(build(None, {"alert": {"cloudwatch_namespace": "Rec", "rule": "r"}}), aws=aws_cfg)
    fresh = alert.put_metrics(cfg, s2, DAY2 + timedelta(days=1))
    assert fresh["status"] == "sent" and "left_out_too_old" not in fresh
    late = alert.put_metrics(cfg, s2, DAY2 + timedelta(days=20))
    assert late["status"] == "sent" and late["left_out_too_old"] == 1
    assert late["metric_data"] == fresh["metric_data"] - 1
