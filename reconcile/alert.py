"""Opt-in alerting after a finished run: CloudWatch custom metrics a team alarms on, and an SNS summary.

Sent once the run's outputs and manifest are written (and published, with --out s3://), so an alert never describes
an unfinished run; built from the run's summary alone, which holds no secret. Nothing is sent unless [alert]
cloudwatch_namespace or sns_topic_arn is set; docs/operations.md lists the IAM actions each needs.

A failure to send never changes the run's verdict or exit code: it is logged on stderr and returned, and the CLI
prints it as the `alert` entry of `--json`. The run folder is not touched: its manifest sealed it before the alert
was sent (and `reconcile verify` flags any file the manifest does not list).
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.exceptions

from .aws import error_code, make_client
from .config import Config
from .interrupt import STOP, Abandonable
from .summary import percent, settled_lost
from .window import parse_duration, parse_time

logger = logging.getLogger(__name__)

# The metrics, as (name, unit, what): one datum each, with the Rule dimension; the per-hop ones also with Hop.
METRICS = (
    ("Status", "None", "the exit code as a number: 0 clean, 1 pending, 2 loss, 3 incomplete"),
    ("Events", "Count", "Zendesk events judged in the window"),
    ("LostEvents", "Count", "events lost, over every hop (and per hop with the Hop dimension)"),
    ("LossRate", "None", "per hop (Hop dimension): lost / in, 0 to 1, once final: not sent for a hop whose losses "
                         "are held (a store it rests on read in part, or a read ending before them: summary "
                         "hops[].unsettled) or with events still pending; sent, stamped with its window's end, by "
                         "the run that settles an earlier window's last pending events (summary carried.windows)"),
    ("PendingEvents", "Count", "events still pending (EventBridge may deliver them)"),
    ("HeldEvents", "Count", "pending events whose loss is held because a store it rests on was read in part or "
                            "ends early (or, for an earlier window's event, was not read back to it): the window's "
                            "own and those carried in (and per hop with the Hop dimension)"),
    ("IncompleteInputs", "Count", "stores read only partly or not at all"),
    ("SettledLostEvents", "Count", "pending events of earlier windows (the state) this run settled as lost: their "
                                   "window's own figures and recovery plan do not have them until it is re-run"),
    ("OutsideCommitLog", "Count", "events found only in files outside Spark's commit log, which Spark's readers do "
                                  "not see: delivered when [sink] retention may have expired their entries (the day "
                                  "may still be clean), else lost after the bus"),
)
BATCH = 20  # PutMetricData's datum limit in older regions and emulators; 1,000 where newer
TOP_PROBLEMS = 8
SUBJECT_MAX = 100  # SNS's limit on Subject


def rule_of(cfg: Config) -> str:
    return cfg.alert.rule or cfg.metrics.rule or ""


def plan(cfg: Config) -> list[str]:
    """What a run would publish (for --dry-run), one line per target; [] when alerting is off."""
    lines = []
    a = cfg.alert
    if a.cloudwatch_namespace:
        names = ", ".join(name for name, _, _ in METRICS)
        lines.append(f"CloudWatch PutMetricData namespace {a.cloudwatch_namespace}, dimension Rule={rule_of(cfg)} "
                     f"(+ Hop per hop): {names}")
    if a.sns_topic_arn:
        lines.append(f"SNS Publish to {a.sns_topic_arn}: status, exit code, per-hop loss, report location, "
                     f"top problems")
    return lines


def carried_held(summary: dict[str, Any]) -> dict[str, int]:
    """Per hop, the carried events of earlier windows this run held pending again (run.carried_summary)."""
    return summary.get("carried", {}).get("held", {})


def metric_data(summary: dict[str, Any], rule: str, at: datetime) -> list[dict[str, Any]]:
    """PutMetricData's MetricData for a run's summary."""
    base = [{"Name": "Rule", "Value": rule}]
    incomplete = sum(1 for i in summary["inputs"] if not i["complete"])

    def datum(name, value, unit, dims=()):
        return {"MetricName": name, "Dimensions": base + list(dims), "Timestamp": at, "Value": float(value),
                "Unit": unit}

    data = [datum("Status", summary["exit_code"], "None"),
            datum("Events", summary["events"], "Count"),
            datum("LostEvents", sum(h["lost"] for h in summary["hops"]), "Count"),
            datum("PendingEvents", summary["verdicts"].get("pending", 0), "Count"),
            datum("HeldEvents", sum(h["held"] for h in summary["hops"]) + sum(carried_held(summary).values()),
                  "Count"),
            datum("IncompleteInputs", incomplete, "Count"),
            datum("SettledLostEvents", settled_lost(summary), "Count"),
            datum("OutsideCommitLog", summary["outside_commit_log"], "Count")]
    for h in summary["hops"]:
        hop = [{"Name": "Hop", "Value": h["name"]}]
        data += [datum("LostEvents", h["lost"], "Count", hop),
                 datum("HeldEvents", h["held"] + carried_held(summary).get(h["name"], 0), "Count", hop)]
        # a rate is sent once it is final: over losses held for the next run, or with events still pending (after
        # the bus most are, the night they happen), it would read as "no loss"
        if not h.get("unsettled") and not h["pending"]:
            data.append(datum("LossRate", h["loss_rate"], "None", hop))
    # the rate of an earlier window's hop whose pending events this run settled, once none is left pending: at that
    # window's end, where an alarm on LossRate looks for it
    for w in summary.get("carried", {}).get("windows", []):
        if not w["pending"]:
            data.append({**datum("LossRate", w["loss_rate"], "None", [{"Name": "Hop", "Value": w["hop"]}]),
                         "Timestamp": parse_time(w["window_end"])})
    return data



def problems(summary: dict[str, Any]) -> list[str]:
    """The first things to look at, most serious first: unread inputs, hops over threshold, then gap kinds."""
    out = []
    for i in summary["inputs"]:
        if not i["complete"]:
            first = i["problems"][0] if i["problems"] else "incomplete"
            out.append(f"input {i['source']} incomplete: {first}")
    for h in summary["hops"]:
        if h["over_threshold"]:
            out.append(f"hop {h['name']}: {h['lost']:,} lost of {h['in']:,} ({percent(h['loss_rate'], 4)}, threshold "
                       f"{percent(h['threshold'], 4)})")
    hints = sorted(summary.get("trace_hints", []), key=lambda r: -r["events"])
    for r in hints:
        cause = f" ({r['cause']})" if r.get("cause") else ""
        out.append(f"{r['events']:,} {r['verdict']}{cause}: first {r['trace_id']} — reconcile trace {r['trace_id']}")
    return out[:TOP_PROBLEMS]


def message(summary: dict[str, Any], report: str) -> tuple[str, str]:
    """(subject, body) of the SNS summary."""
    w = summary["window"]
    subject = f"reconcile {w['start'][:10]}: {summary['status']} (exit {summary['exit_code']})"[:SUBJECT_MAX]
    lines = [f"Status: {summary['status']} (exit code {summary['exit_code']})",
             f"Window: {w['start']} → {w['end']} (as of {w['as_of']})",
             f"Events: {summary['events']:,}, pending {summary['verdicts'].get('pending', 0):,}",
             "Loss per hop:"]
    for h in summary["hops"]:
        held = f", {h['held']:,} more held (a store read in part or ending early)" if h["held"] else ""
        final = f" (not final: {h['unsettled']})" if h.get("unsettled") else ""
        # a summary made before hops counted them has no key (a re-render of an older run)
        recovered = f", {h['recovered']:,} more lost and recovered" if h.get("recovered") else ""
        lines.append(f"  {h['name']}: {h['lost']:,} lost of {h['in']:,} = {percent(h['loss_rate'], 4)}"
                     f"{' OVER THRESHOLD' if h['over_threshold'] else ''}{recovered}{held}{final}")
    if settled := settled_lost(summary):
        lines.append(f"Settled as lost: {settled:,} pending event(s) of earlier windows (their windows' figures and "
                     f"recovery plans have them once re-run)")
    for o in summary.get("carried", {}).get("over_threshold", []):
        lines.append(f"Over budget with them: {o['window_key']} {o['hop']}: {o['lost']:,} lost of {o['in']:,} "
                     f"({percent(o['loss_rate'])}, threshold {percent(o['threshold'])})")
    if held := sum(carried_held(summary).values()):
        lines.append(f"Carried and held again: {held:,} pending event(s) of earlier windows whose loss is held (a "
                     f"store read in part or ending early, or the sink not read back to them: re-run their window "
                     f"once the stores are whole, or raise [window] carry_back)")
    if outside := summary["outside_commit_log"]:
        lost = summary.get("outside_commit_log_lost", 0)
        how = ("lost after the bus: failed or retried batches' leftovers ([sink] retention unset)"
               if summary.get("outside_commit_log_counts") == "leftover" else "delivered" if not lost else
               f"delivered but {lost:,} lost after the bus (leftovers written too recently for [sink] retention to "
               f"have expired their entries)")
        lines.append(f"Outside Spark's commit log: {outside:,} event(s) only in files the log does not list, "
                     f"{how} (readers that honour the log do not see them)")
    incomplete = [i["source"] for i in summary["inputs"] if not i["complete"]]
    lines.append(f"Inputs incomplete: {', '.join(incomplete) if incomplete else 'none'}")
    lines.append(f"Report: {report}")
    top = problems(summary)
    if top:
        lines += ["Top problems:", *(f"  - {p}" for p in top)]
    return subject, "\n".join(lines) + "\n"


def _failure(what: str, e: Exception, needs: str, key: str) -> str:
    code = error_code(e) or type(e).__name__
    return (f"{what} failed ({code}: {e}). Check the credentials (--profile), [alert] {key}, and that the IAM "
            f"policy allows {needs}. The run's verdict and exit code are unchanged.")


# CloudWatch takes data up to two weeks in the past (PutMetricData): an earlier window's rate stamped before that is
# left out (a re-run of an old window), or the whole request holding it, the run's own Status with it, was refused
OLDEST = timedelta(days=14) - timedelta(minutes=5)


def put_metrics(cfg: Config, summary: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
    ns = cfg.alert.cloudwatch_namespace
    at = at or datetime.now(timezone.utc)
    data = metric_data(summary, rule_of(cfg), at)
    # the run's own data first, in requests of their own; earlier windows' rates after, those CloudWatch still takes
    own = [d for d in data if d["Timestamp"] == at]
    earlier = [d for d in data if d["Timestamp"] != at]
    taken = [d for d in earlier if d["Timestamp"] >= at - OLDEST]
    if len(taken) < len(earlier):
        logger.warning("alert: %d earlier window rate(s) are stamped more than two weeks back, older than CloudWatch "
                       "takes: left out", len(earlier) - len(taken))
    data = own + taken
    try:
        cw = make_client("cloudwatch", cfg.aws)
        for part in (own, taken):
            for i in range(0, len(part), BATCH):
                cw.put_metric_data(Namespace=ns, MetricData=part[i:i + BATCH])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        error = _failure(f"CloudWatch PutMetricData to namespace {ns}", e,
                         f"cloudwatch:PutMetricData with cloudwatch:namespace = {ns}", "cloudwatch_namespace")
        logger.error("alert: %s", error)
        return {"status": "failed", "namespace": ns, "error": error}
    logger.info("alert: %d metric data published to CloudWatch namespace %s", len(data), ns)
    return {"status": "sent", "namespace": ns, "rule": rule_of(cfg), "metric_data": len(data),
            **({"left_out_too_old": len(earlier) - len(taken)} if len(taken) < len(earlier) else {})}


def publish_summary(cfg: Config, summary: dict[str, Any], report: str) -> dict[str, Any]:
    arn = cfg.alert.sns_topic_arn
    subject, body = message(summary, report)
    attributes = {"status": {"DataType": "String", "StringValue": summary["status"]},
                  "exit_code": {"DataType": "Number", "StringValue": str(summary["exit_code"])}}
    # A FIFO topic takes a message only with its group, and drops one whose deduplication id it saw in the last five
    # minutes: a run's own (its window and when it was judged), so a Publish botocore retries is delivered once
    fifo = ({"MessageGroupId": "reconcile", "MessageDeduplicationId": hashlib.sha256(
        f"{summary['window']['start']}/{summary['window']['end']}/{summary['generated_at']}".encode()).hexdigest()}
        if arn.endswith(".fifo") else {})
    try:
        r = make_client("sns", cfg.aws).publish(TopicArn=arn, Subject=subject, Message=body,
                                                MessageAttributes=attributes, **fifo)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        error = _failure(f"SNS Publish to {arn}", e, f"sns:Publish on {arn}", "sns_topic_arn")
        logger.error("alert: %s", error)
        return {"status": "failed", "topic_arn": arn, "error": error}
    logger.info("alert: summary published to %s", arn)
    return {"status": "sent", "topic_arn": arn, "message_id": r["MessageId"]}


def send(cfg: Config, summary: dict[str, Any], report: str) -> dict[str, Any]:
    """Publish a finished run's alert to each configured target, at once, within [alert] deadline: botocore's
    timeouts are per request and per read, which a body trickled a byte at a time beats, and a run that committed no
    longer stops on a signal (interrupt.deferred): an alert with no bound held it, its exit code and its result line,
    until a SIGKILL. Never raises for a target that fails: returns {"cloudwatch": {...}, "sns": {...}}, each with
    status "off", "sent" or "failed" (and the error)."""
    a = cfg.alert
    within = parse_duration(a.deadline).total_seconds()
    # target -> (its [alert] key, that key's name in the target's outcome, the call)
    calls = {"cloudwatch": ("cloudwatch_namespace", "namespace", lambda: put_metrics(cfg, summary)),
             "sns": ("sns_topic_arn", "topic_arn", lambda: publish_summary(cfg, summary, report))}
    started = {name: Abandonable(fn, f"reconcile-alert-{name}") for name, (key, _, fn) in calls.items()
               if getattr(a, key)}
    end = time.monotonic() + within
    out = {}
    for name, (key, field, _) in calls.items():
        if name not in started:
            out[name] = {"status": "off"}
        elif started[name].ended_by(end, on_stop=True):  # a signal after the commit: the run ends now, its code its own
            out[name] = started[name].result()
        else:
            how = ("had not answered when a signal came" if STOP.is_set() else
                   f"did not answer within [alert] deadline = {a.deadline} (a proxy or gateway trickling its answer?)")
            error = (f"{name} {how}: left, whether it was sent is not known. Check [alert] {key} and the endpoint "
                     f"([aws] endpoint_url, AWS_ENDPOINT_URL). The run's verdict and exit code are unchanged.")
            logger.error("alert: %s", error)
            out[name] = {"status": "failed", field: getattr(a, key), "error": error}
    return out


def failed(outcome: dict[str, Any]) -> bool:
    return any(t.get("status") == "failed" for t in outcome.values())
