"""The tiny hand-built day every job-level test shares: its ledgers (ZENDESK, BUS, SINK, DLQ, METRICS), the engine
over them (`judge`), the whole job over them (`produce`, `produce_report`), and two days through a state (`day1`,
`day2`). Tests import it; no test module imports another.

The day (window 2026-11-23, as of 2026-11-24 02:00, horizon 3 h, tolerance 10 s):
z1 webhook, exact match, delivered · z2 legacy, delivered twice with two sequence numbers (redelivery) ·
z3 dead-lettered (THROTTLING) · z4 in the bus log only, 13 h old (lost after the bus) · z5 same, 2.5 h old (pending) ·
z6 nowhere (lost before the bus) · z7 a Notification (excluded) · z8/z9 two comments of one update, position 1 lost,
position 2 delivered · z10/z11 two comments 5 s apart on one ticket (ambiguous pair, both delivered) ·
z12 delivered but not in the bus log · z13 a Spark batch written twice (re-batched) · L an orphan · M outside the window.
"""

from dataclasses import replace
from datetime import timedelta

import pyarrow as pa
from bs4 import BeautifulSoup

from reconcile import config, ledger
from reconcile import engine as eng
from reconcile import run as job
from reconcile.emission import load_model
from reconcile.ledger import SourceResult
from reconcile.state import CARRIED_SCHEMA

from ledgers import DAY, PARAMS, at, label, make, write

KIN = "arn:aws:kinesis:us-east-1:1:stream/zendesk-events"
LOGS = "arn:aws:logs:us-east-1:1:log-group:/aws/events/zendesk"


def z(i, ticket, kind, t, audit):
    return dict(source_id=str(i), zendesk_key=str(i), ticket_id=ticket, event_type=kind, family="api",
                event_time=t, observed_at=t, audit_id=audit, source_ref=f"page-00001.json.gz#audit={audit}")


def legacy(eb, ticket, typ, t, pos, **kw):
    return dict(eb_id=eb, ticket_id=ticket, event_type=typ, family="legacy", event_time=t, sequence_position=pos,
                **kw)


def webhook(eb, zkey, ticket, typ, t, **kw):
    return dict(eb_id=eb, zendesk_key=zkey, ticket_id=ticket, event_type="zen:event-type:ticket." + typ,
                family="webhook", event_time=t, **kw)


ZENDESK = [
    z(1, 1, "Create", "10:00:00", 100), z(2, 2, "Comment", "11:00:00", 200),
    z(3, 3, "Change:status", "12:00:00", 300), z(4, 4, "Comment", "13:00:00", 400),
    z(5, 5, "Comment", "23:30:00", 500), z(6, 6, "Create", "09:00:00", 600),
    z(7, 7, "Notification", "09:00:00", 700), z(8, 8, "Comment", "14:00:00", 800),
    z(9, 8, "Comment", "14:00:00", 800), z(10, 9, "Comment", "15:00:00", 900),
    z(11, 9, "Comment", "15:00:05", 901), z(12, 10, "Create", "16:00:00", 1000),
    z(13, 11, "Comment", "17:00:00", 1100),
    z(14, 12, "Create", "2026-11-24T00:00:00Z", 1200),  # outside the window
]

A = webhook("A", "1", 1, "created", "10:00:00")
B = legacy("B", 2, "Comment Created", "11:00:00.3", 1)
C = legacy("C", 3, "Status Changed", "12:00:00.2", 1)
D = legacy("D", 4, "Comment Created", "13:00:00.1", 1)
E = legacy("E", 5, "Comment Created", "23:30:00.4", 1)
G = legacy("G", 8, "Comment Created", "14:00:00.6", 2)
H = legacy("H", 9, "Comment Created", "15:00:00.5", 1)
I = legacy("I", 9, "Comment Created", "15:00:05.2", 1)
J = webhook("J", "12", 10, "created", "16:00:00")
K = legacy("K", 11, "Comment Created", "17:00:00.1", 1)
L = legacy("L", 99, "Ticket Created", "18:00:00.1", 1)
M = legacy("M", 98, "Ticket Created", "2026-11-22T23:30:00Z", 1)


def obs(ev, t, **kw):
    return dict(ev, observed_at=t, **kw)


BUS = [obs(e, e["event_time"], source_id=f"log:{e['eb_id']}") for e in (A, B, C, D, E, G, H, I, K)]
SINK = [
    obs(A, "10:00:02", sequence_number="1", committed=True), obs(B, "11:00:02", sequence_number="2", committed=True),
    obs(B, "11:00:09", sequence_number="3", committed=True), obs(G, "14:00:03", sequence_number="4", committed=True),
    obs(H, "15:00:03", sequence_number="5", committed=True), obs(I, "15:00:08", sequence_number="6", committed=True),
    obs(J, "16:00:04", sequence_number="7", committed=True), obs(K, "17:00:02", sequence_number="8", committed=True),
    obs(K, "17:00:02", sequence_number="8", committed=False), obs(L, "18:00:03", sequence_number="9", committed=True),
    obs(M, "2026-11-23T00:00:30Z", sequence_number="10", committed=True),
]
DLQ = [
    obs(C, "14:00:00.2", source_id="m1", error_code="THROTTLING", retry_condition="MaximumEventAgeInSeconds",
        target_arn=KIN, retry_attempts=40, error_message="Rate exceeded."),
    obs(J, "18:00:00", source_id="m2", error_code="THROTTLING", retry_condition="MaximumEventAgeInSeconds",
        target_arn=LOGS, retry_attempts=40),
]
METRICS = [("MatchedEvents", "10:00:00", 11.0), ("InvocationsSentToDlq", "12:00:00", 1.0),
           ("InvocationsSentToDlq", "14:00:00", 1.0), ("ThrottledRules", "12:00:00", 5.0)]


def judge(tmp, zendesk, bus, sink, dlq, metrics=(), outside_log="counted", excluded=("Notification",), **params):
    """The day judged. `outside_log`: how sink copies outside Spark's commit log count (run.outside_log): the day's
    readers ignore the log ([sink] honour_commit_log = false): K's re-batched copy is a duplicate.
    `excluded`: [exclude] event_types. `params`: the queries' parameters that differ from the day's."""
    e = eng.Engine.open()
    e.bind_ledger("zendesk", write(tmp, "zendesk", zendesk))
    e.bind_ledger("bus", write(tmp, "bus", bus))
    e.bind_ledger("sink", write(tmp, "sink", sink))
    e.bind_ledger("dlq", write(tmp, "dlq", dlq))
    e.bind_table("metrics", pa.Table.from_pylist(
        [dict(metric=m, timestamp=at(t), period_s=300, value=v) for m, t, v in metrics], schema=ledger.METRIC_SCHEMA))
    e.bind_table("emission_model", load_model())
    e.bind_table("excluded_kinds", pa.table({"kind": pa.array(list(excluded), pa.string())}))
    e.bind_table("carried", CARRIED_SCHEMA.empty_table())
    e.run_all(PARAMS | dict(outside_log=outside_log) | params)
    return e



def table(e, name, cols, order=None):
    """Rows of a result table as tuples of `cols`, EventBridge ids as the labels the day gives them."""
    rows = e.arrow(name).to_pylist()
    out = [tuple(label(r[c]) if c.endswith("eb_id") or c == "trace_id" else r[c] for c in cols) for r in rows]
    return sorted(out, key=lambda r: tuple(str(x) for x in r)) if order is None else out


# ------------------------------------------------------------------------------------------- the job over the day

# The day's config: K's re-batched copy outside the commit log is a duplicate for its readers, who ignore the log
# (judge's outside_log).
CONFIG = {"exclude": {"event_types": ["Notification"]}, "window": {"max_event_age": "2h"},
          "sink": {"honour_commit_log": False}}


# A dead letter another producer's rule sent to the same queue: well formed, not Zendesk's (reject kind not_zendesk)
OTHER_EVENT = '{"version": "0", "id": "m9", "source": "aws.s3", "detail-type": "Object Created", "detail": {}}'
NOT_ZENDESK = ('not a Zendesk event: source "aws.s3" (not matched by [match] zendesk_source_pattern), '
               'detail-type "Object Created"')


def results(complete=True):
    tables = {"zendesk": make("zendesk", ZENDESK), "bus_log": make("bus", BUS),
              "sink": make("sink", SINK), "dlq": make("dlq", DLQ)}
    out = {name: SourceResult(name, t, complete=complete or name != "sink",
                              problems=[] if complete or name != "sink" else ["sink.parquet is truncated"])
           for name, t in tables.items()}
    out["metrics"] = SourceResult("metrics", ledger.METRIC_SCHEMA.empty_table())
    # a reject that cannot hide an event: the DLQ stays read whole, as completeness.decide would have it
    out["dlq"].rejects = ledger.rejects_table("dlq", ["m9"], [NOT_ZENDESK], [OTHER_EVENT], kind="not_zendesk")
    return out


def produce(tmp_path, complete=True, **thresholds):
    cfg = config.build(None, CONFIG | {"thresholds": thresholds})
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    res = results(complete)
    ledgers = job.write_evidence(res, tmp_path / "evidence")
    return job.finish(cfg, window, tmp_path, res, ledgers, audience="daily", generated_at=DAY + timedelta(hours=26))


HOSTILE = "<script>alert(1)</script>\"'</td></tr>\u202egnp.exe\u200b\u200d&amp;"


def metrics_table():
    return pa.Table.from_pylist([dict(metric=m, timestamp=at(t), period_s=300, value=v) for m, t, v in METRICS],
                                schema=ledger.METRIC_SCHEMA)


def produce_report(tmp_path, *, audience="daily", hostile=False, metrics=True):
    """The tiny day through the whole job with a report's inputs (fingerprints, details, metrics), optionally with
    hostile text."""
    zendesk, dlq = list(ZENDESK), list(DLQ)
    if hostile:
        zendesk.append(z(20, 20, "Change:" + HOSTILE, "08:00:00", 2000))
        dlq.append(obs(D, "13:30:00", source_id="m3", error_code=HOSTILE, error_message=HOSTILE * 20,
                           retry_condition=HOSTILE, target_arn=KIN + HOSTILE))
    res = {"zendesk": SourceResult("zendesk", make("zendesk", zendesk), fingerprints=[
               {"file": "page-00001.json.gz", "count": 14, "sha256": "ab" * 32, "size": 2048}],
               details={"pages": 1, "end_time": 1795478400, "note": HOSTILE if hostile else "ok"}),
           "bus_log": SourceResult("bus_log", make("bus", BUS)),
           "sink": SourceResult("sink", make("sink", SINK), problems=[HOSTILE] if hostile else []),
           "dlq": SourceResult("dlq", make("dlq", dlq), details={"coverage": "drained the queue: 3 empty receives"}),
           "metrics": SourceResult("metrics", metrics_table() if metrics else ledger.METRIC_SCHEMA.empty_table())}
    raw = "<script>alert(2)</script>" + "x" * 1_000_000 if hostile else OTHER_EVENT
    # built directly, not through rejects_table, so the report's own cut is what is tested; of a kind that cannot
    # hide an event, so the DLQ stays read whole (as completeness.decide would have it)
    res["dlq"].rejects = pa.table({"source": ["dlq"], "source_ref": [HOSTILE if hostile else "m9"],
                                   "reason": [HOSTILE if hostile else NOT_ZENDESK], "raw": [raw],
                                   "kind": ["not_zendesk"]},
                                  schema=ledger.REJECT_SCHEMA)
    cfg = config.build(None, CONFIG)
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    ledgers = job.write_evidence(res, tmp_path / "evidence")
    outcome = job.finish(cfg, window, tmp_path, res, ledgers, audience=audience,
                         generated_at=DAY + timedelta(hours=26))
    html = (tmp_path / "report.html").read_text()
    return outcome.summary, html, BeautifulSoup(html, "html.parser")


# ------------------------------------------------------------------------------------------- two days and a state

DAY2 = DAY + timedelta(days=1)


def day_results(zendesk, bus, sink, dlq):
    out = {"zendesk": SourceResult("zendesk", make("zendesk", zendesk)), "bus_log": SourceResult("bus_log", make("bus", bus)),
           "sink": SourceResult("sink", make("sink", sink)), "dlq": SourceResult("dlq", make("dlq", dlq)),
           "metrics": SourceResult("metrics", ledger.METRIC_SCHEMA.empty_table())}
    return out


def run_window(tmp_path, st, start, results, name, end=None, match=None, **thresholds):
    """The window [start, `end` or a day later) judged as of two hours after its end, with the state's carried
    events (the sink read back to them, as a run reads it: `results` hold what that read finds). `match`: [match]
    settings."""
    cfg = config.build(None, CONFIG | ({"thresholds": thresholds} if thresholds else {}) | ({"match": match} if match
                                                                                             else {}))
    end = end or start + timedelta(days=1)
    window, carried = job.with_state(job.window_from(cfg, start, end, end + timedelta(hours=2)), st)
    out = tmp_path / name
    ledgers = job.write_evidence(results, out / "evidence")
    return job.finish(cfg, window, out, results, ledgers, audience="daily", generated_at=window.as_of,
                      carried=carried, state=st).summary


def day1(tmp_path, st, **thresholds):
    return run_window(tmp_path, st, DAY, day_results(ZENDESK, BUS, SINK, DLQ), "day1", **thresholds)


def day2(tmp_path, st, sink_read_whole=True, e_lands=True, **thresholds):
    # E (z5, pending on day 1) lands in the sink at 01:00 the next day; D (z4) was already judged lost. With
    # `sink_read_whole` false, the sink file holding E's row could not be read: the row is missing, the sink incomplete.
    # With `e_lands` false, E never lands: the sink, read whole, settles it lost.
    late = dict(E, observed_at=DAY2 + timedelta(hours=1), sequence_number="99", committed=True)
    zd = z(20, 20, "Create", "2026-11-24T08:00:00Z", 2000)
    n = legacy("N", 20, "Ticket Created", "2026-11-24T08:00:00.2Z", 1)
    results = day_results([zd], [dict(n, observed_at=n["event_time"])],
                          [late, dict(n, observed_at="2026-11-24T08:00:02Z")][0 if sink_read_whole and e_lands else 1:],
                          [])
    if not sink_read_whole:
        results["sink"] = replace(results["sink"], complete=False, problems=["part-00007.parquet: unreadable"])
    return run_window(tmp_path, st, DAY2, results, "day2", **thresholds)
