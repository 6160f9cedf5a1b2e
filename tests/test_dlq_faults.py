"""DLQ faults (issue 12): a live queue is read completely by default, every received message is released (also when
the read is interrupted), nothing is ever deleted or moved, a queue with its own redrive policy is refused unless the
risk is accepted, and a message without attributes is a reject, never a silent log-target failure. Over moto's SQS.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest

import faultrun
from reconcile import completeness
from reconcile.aws import make_client, session
from reconcile.config import DlqConfig
from reconcile.errors import SourceError
from reconcile.sources import dlq
from busevents import WINDOW, dlq_attrs, fill_queue, queue_count, webhook

pytestmark = pytest.mark.usefixtures("restore_environment")  # the demo code sets env vars

UUIDS = [f"5ea00000-0000-4000-8000-{i:012d}" for i in range(40)]


def receive_all_again(sqs, url, expect: int) -> dict[str, int]:
    """Receive every message of the queue (as a consumer would): MessageId -> ApproximateReceiveCount."""
    seen: dict[str, int] = {}
    for _ in range(3 * expect):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                     MessageSystemAttributeNames=["All"]).get("Messages", []):
            seen[m["MessageId"]] = int(m["Attributes"]["ApproximateReceiveCount"])
        if len(seen) >= expect:
            break
    return seen


def redrive_queue(sqs, max_receives: int) -> tuple[str, str]:
    target = sqs.create_queue(QueueName="dlq-of-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="zendesk-dlq", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)})})["QueueUrl"]
    return url, target


def test_a_queue_of_more_than_ten_is_read_completely_and_released(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:35])])
    res = dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    assert res.complete and res.records == 35 and res.problems == []
    d = res.details
    assert d["coverage"] == "read 35 of ~35" and d["approx_total_after"] == 35 and d["sampled"] is False
    assert d["released"] == 35 and d["visibility_timeout"] == dlq.visibility_for(35) > 0
    # every message is visible again at once, received exactly once by the read: a consumer gets all 35 now
    again = receive_all_again(sqs, url, 35)
    assert len(again) == 35 and set(again.values()) == {2}
    assert queue_count(sqs, url) == 35


def test_messages_another_reader_holds_make_the_read_incomplete_and_say_until_when(aws_cfg):
    """A run killed outright (SIGKILL, out of memory) cannot release what it received: the messages stay hidden for
    the visibility timeout it sized to the queue. The next run reads none of them, is incomplete, and says how long
    that lasts (it blamed "other consumers" only, and a scheduler's retries in that time failed alike)."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:3])])
    held = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=dlq.visibility_for(3))
    assert len(held["Messages"]) == 3  # what a killed run left in flight
    res = dlq.read(DlqConfig(queue_url=url, wait_seconds=0, empty_receives=1), WINDOW, aws_cfg)
    assert not res.complete and res.records == 0
    hidden = f"holds the messages it received for up to {dlq.visibility_for(3)} s"
    assert any("other consumers hold some" in p and hidden in p for p in res.problems), res.problems


def test_a_queue_holding_delayed_messages_is_read_incomplete(aws_cfg):
    """A DLQ with DelaySeconds hides each new message that long (ApproximateNumberOfMessagesDelayed): no receive gets
    it, the visible and in-flight counts leave it out, and a read that ends then has not seen it."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq", Attributes={"DelaySeconds": "900"})["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:3])])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
        "ApproximateNumberOfMessagesDelayed"] == "3"
    res = dlq.read(DlqConfig(queue_url=url, wait_seconds=0), WINDOW, aws_cfg)
    assert not res.complete and res.records == 0 and res.details["approx_delayed_after"] == 3
    assert any("~3 delayed message(s)" in p and "DelaySeconds" in p for p in res.problems)


def test_an_interrupted_read_releases_what_it_received(aws_cfg):
    """Ctrl-C (or SIGTERM turned into SystemExit) in the middle of the read: the messages received so far are made
    visible again before the exception goes on. The interruption is injected into the AWS SDK's call chain."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:25])])
    calls = []

    def interrupt(**_):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    events = session(aws_cfg).events
    events.register("before-call.sqs.ReceiveMessage", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    finally:
        events.unregister("before-call.sqs.ReceiveMessage", interrupt)
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]) == ("25", "0")
    assert len(receive_all_again(sqs, url, 25)) == 25


def test_a_queue_that_never_runs_dry_is_read_to_a_bound_and_incomplete(aws_cfg):
    """New messages arrive as fast as the read receives them (a producer sends two after every receive): the read
    stops at its bound -- never loops for ever -- calls itself incomplete, and releases everything it received."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:5])])
    sent = [5]

    def producer(**_):  # a real producer writing to the queue between our receives
        fill_queue(sqs, url, [webhook(f"5ea00000-0000-4000-8001-{sent[0] + j:012d}", str(sent[0] + j))
                              for j in range(2)])
        sent[0] += 2

    events = session(aws_cfg).events
    events.register("after-call.sqs.ReceiveMessage", producer)
    try:
        res = dlq.read(DlqConfig(queue_url=url, empty_receives=1), WINDOW, aws_cfg)
    finally:
        events.unregister("after-call.sqs.ReceiveMessage", producer)
    bound = 5 * 1 + 50 * 1  # receive_limit for ~5 messages at the start and empty_receives = 1
    assert res.details["receives"] == bound
    assert not res.complete
    assert any("new messages kept arriving" in p for p in res.problems), res.problems
    assert res.details["released"] == res.records > 0  # every received message made visible again, none deleted
    assert queue_count(sqs, url) == sent[0]


def test_the_in_flight_limit_ends_the_read_incomplete_and_releases_what_it_holds(aws_cfg):
    """SQS answers ReceiveMessage with OverLimit once a reader holds its in-flight quota (about 120,000 messages on a
    standard queue; the SQS API reference's ReceiveMessage errors), which a live read of a big DLQ reaches because
    it holds what it received until the end. The read is incomplete, points at an archive, and releases all it
    holds (it ended the run with a traceback). The answer is injected into the AWS SDK's call chain."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:25])])
    calls = []

    class Answer:
        status_code = 403

    def over_limit(**_):
        calls.append(1)
        if len(calls) == 2:
            return Answer(), {"Error": {"Code": "OverLimit", "Message": "Too many messages in flight"},
                              "ResponseMetadata": {"HTTPStatusCode": 403}}
        return None

    events = session(aws_cfg).events
    events.register("before-call.sqs.ReceiveMessage", over_limit)
    try:
        res = dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    finally:
        events.unregister("before-call.sqs.ReceiveMessage", over_limit)
    assert not res.complete and res.records == 10
    assert any("limit of in-flight messages (OverLimit)" in p and "[dlq] uri" in p for p in res.problems), res.problems
    assert res.details["released"] == 10 and queue_count(sqs, url) == 25


def test_a_queue_with_a_redrive_policy_is_refused_and_untouched(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url, target = redrive_queue(sqs, 3)
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:12])])
    for _ in range(4):
        with pytest.raises(SourceError, match=r"redrive policy \(maxReceiveCount 3.*accept_redrive_risk = true"):
            dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    assert queue_count(sqs, url) == 12 and queue_count(sqs, target) == 0
    assert set(receive_all_again(sqs, url, 12).values()) == {1}  # never received by the refused reads


def test_with_the_risk_accepted_repeated_reads_never_move_a_message(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url, target = redrive_queue(sqs, 4)
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:15])])
    cfg = DlqConfig(queue_url=url, accept_redrive_risk=True)
    results = [dlq.read(cfg, WINDOW, aws_cfg) for _ in range(3)]
    assert [r.complete for r in results] == [True, True, False]
    assert [r.details["max_receive_count_seen"] for r in results] == [1, 2, 3]
    assert any("Stopped reading" in p and "maxReceiveCount is 4" in p for p in results[2].problems)
    assert queue_count(sqs, url) == 15 and queue_count(sqs, target) == 0
    # the third read stopped at its first receive: the rest of the queue was not pushed closer to the limit
    assert results[2].details["receives"] == 1


def test_a_message_without_attributes_is_a_reject_not_a_log_target_failure(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(UUIDS[0], "1")])
    sqs.send_message(QueueUrl=url, MessageBody=webhook(UUIDS[1], "2"))  # no MessageAttributes at all
    res = dlq.read(DlqConfig(queue_url=url), WINDOW, aws_cfg)
    assert [str(i) for i in res.ledger["eb_id"].to_pylist()] == [UUIDS[0]] and res.rejected == 1
    assert res.rejects["reason"][0].as_py().startswith("DLQ message has no TARGET_ARN attribute")
    decided = completeness.decide(res, others_have_records=True)
    assert not decided.complete and any("may be in-window events" in p for p in decided.problems)


def test_a_whole_run_refuses_a_redrive_queue_and_says_so(moto, tmp_path):
    def add_redrive(stores, aws):
        sqs = make_client("sqs", aws)
        target = sqs.create_queue(QueueName="dlq-of-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.set_queue_attributes(QueueUrl=stores["queue_url"], Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "2"})})

    res = faultrun.run(moto, tmp_path, after_load=add_redrive, spike_dlq=0.2)
    d = res.input("dlq")
    assert (res.outcome.summary["status"], res.outcome.exit_code) == ("incomplete", 3)
    assert not d["complete"] and any("redrive policy" in p for p in d["problems"])
    assert "accept_redrive_risk" in res.report_text
    # dead-lettered events are not read, and the run says it is incomplete: no loss after the bus is called "no DLQ
    # message" (lost_after_bus) while the DLQ may hold its message, and an event the DLQ could put on the bus is not
    # called lost before it: both are held pending, for a run that reads the DLQ
    assert any(t == "dead_lettered" for _, t in res.changed.values())
    assert all(found == "pending" and t in {"dead_lettered", "lost_after_bus", "lost_before_bus"}
               for found, t in res.changed.values()), res.changed


def test_a_whole_run_reads_a_spike_of_dead_letters_completely(moto, tmp_path):
    res = faultrun.run(moto, tmp_path, spike_dlq=0.2)
    d = res.input("dlq")
    assert d["complete"] and d["records"] > 10 and d["details"]["sampled"] is False
    assert res.changed == {} and res.outcome.exit_code == 2


def test_a_queue_that_no_longer_holds_the_window_is_incomplete_and_says_why(aws_cfg):
    """SQS deletes a message MessageRetentionPeriod after it was sent: a queue read as of a time later than the
    window's start plus that period proves nothing about the window's dead letters (they may be gone). Such a read
    is incomplete, naming the period; within it, the same queue is complete."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq", Attributes={"MessageRetentionPeriod": "86400"})["QueueUrl"]
    fill_queue(sqs, url, [webhook(UUIDS[0], "1")])
    within = replace(WINDOW, as_of=WINDOW.read_start + timedelta(days=1))
    assert dlq.read(DlqConfig(queue_url=url), within, aws_cfg).complete
    late = replace(WINDOW, as_of=WINDOW.read_start + timedelta(days=1, seconds=1))
    res = dlq.read(DlqConfig(queue_url=url), late, aws_cfg)
    assert not res.complete and res.details["retention_s"] == 86400 and res.records == 1
    assert any("MessageRetentionPeriod" in p and "[dlq] uri" in p for p in res.problems), res.problems


def test_an_archive_whose_writer_stopped_before_the_window_ended_is_incomplete(tmp_path, aws_cfg):
    """An archive holds what its writer wrote: when its newest object is older than [dlq] archive_every before what the
    window's events may have dead-lettered by (EventBridge retries for a day), its writer has stopped, the messages
    dead-lettered since are not in it, and an empty-looking archive must not prove the window clean."""
    archive = tmp_path / "dlq"
    archive.mkdir()
    day = archive / "2026-11-22.jsonl"
    day.write_text("")  # a day without dead letters: the archiver writes an empty file
    # and the object before it, written as the window's read began: the archive reaches back to the window
    before = archive / "2026-11-21.jsonl"
    before.write_text("")
    os.utime(before, (WINDOW.read_start.timestamp(),) * 2)
    # EventBridge dead-letters up to a day after an event: as of 30 h after the window, the archive must reach
    # end + 24 h, less the writer's period ([dlq] archive_every)
    judged = replace(WINDOW, as_of=WINDOW.end + timedelta(hours=30))
    for every, stopped, complete in (("1h", WINDOW.end, False), ("1h", WINDOW.end + timedelta(hours=22), False),
                                     ("1h", WINDOW.end + timedelta(hours=23), True), ("1d", WINDOW.end, True),
                                     ("1d", WINDOW.start, False)):
        os.utime(day, (stopped.timestamp(), stopped.timestamp()))
        res = dlq.read(DlqConfig(uri=str(archive), archive_every=every), judged, aws_cfg)
        assert res.complete is complete and complete != any("has its writer stopped" in p for p in res.problems), \
            (every, stopped)
    # the daily run at 02:30 with a daily archiver that wrote its (empty) object just after midnight: complete
    os.utime(day, ((WINDOW.end + timedelta(minutes=5)).timestamp(),) * 2)
    morning = dlq.read(DlqConfig(uri=str(archive)), replace(WINDOW, as_of=WINDOW.end + timedelta(hours=2.5)), aws_cfg)
    assert morning.complete
    # ... but it holds no message dead-lettered after 00:05: the run holds the losses after the bus of events whose
    # retries may have gone on past it (queries/rules.sql beyond_dlq, tests/test_rules.py)
    assert dlq.reach(morning.details) == WINDOW.end + timedelta(minutes=5)


def _archived(sent, eb_id: str = "W1") -> str:
    return json.dumps({"MessageId": "m-" + eb_id, "Body": webhook(eb_id), "MessageAttributes": dlq_attrs(),
                       "Attributes": {"SentTimestamp": str(int(sent.timestamp() * 1000))}})


def test_an_archive_that_does_not_reach_back_to_the_window_is_incomplete(tmp_path, aws_cfg):
    """An old window read against an archive whose older objects expired (a lifecycle rule) or were never written
    (the writer started later): its one object is recent and empty, so "no DLQ message" proves nothing about the
    window's dead letters. An object written, or a message sent, within [dlq] archive_every of the window's read start
    shows the archive reaches back; [dlq] archive_since states it instead."""
    archive = tmp_path / "dlq"
    archive.mkdir()
    recent = archive / "recent.jsonl"
    recent.write_text("")
    old = replace(WINDOW, start=WINDOW.start - timedelta(days=30), end=WINDOW.end - timedelta(days=30))
    res = dlq.read(DlqConfig(uri=str(archive)), old, aws_cfg)
    assert not res.complete
    assert any("may not reach back to the window" in p and "[dlq] archive_since" in p for p in res.problems), \
        res.problems
    # a message of the archive sent as the window's read began: it reaches back (a dump written later)
    recent.write_text(_archived(old.read_start + timedelta(hours=1)) + "\n")
    assert dlq.read(DlqConfig(uri=str(archive)), old, aws_cfg).complete
    # an object written then, although empty (a quiet day), shows the same
    recent.write_text("")
    first = archive / "first.jsonl"
    first.write_text("")
    os.utime(first, ((old.read_start + timedelta(hours=2)).timestamp(),) * 2)
    assert dlq.read(DlqConfig(uri=str(archive)), old, aws_cfg).complete
    first.unlink()
    # the user states since when the archive holds every message
    since = (old.read_start - timedelta(days=1)).isoformat()
    assert dlq.read(DlqConfig(uri=str(archive), archive_since=since), old, aws_cfg).complete
    later = dlq.read(DlqConfig(uri=str(archive), archive_since=old.end.isoformat()), old, aws_cfg)
    assert not later.complete and any("[dlq] archive_since says" in p for p in later.problems), later.problems


def test_blank_lines_in_an_archive_are_counted_not_rejected(tmp_path, aws_cfg):
    """An empty day's object may be a lone newline, and a writer may leave blank lines between messages: no message
    can be in them, so they are counted, and the read stays complete (they were "not JSON" rejects: exit 3)."""
    archive = tmp_path / "dlq"
    archive.mkdir()
    (archive / "quiet.jsonl").write_text("\n")
    (archive / "busy.jsonl").write_text("\n" + _archived(WINDOW.start, UUIDS[1]) + "\n  \n" + _archived(WINDOW.start,
                                                                                                       UUIDS[2]) + "\n")
    res = dlq.read(DlqConfig(uri=str(archive)), WINDOW, aws_cfg)
    assert res.complete, res.problems
    assert res.ledger.num_rows == 2 and res.rejects.num_rows == 0 and res.details["blank_lines"] == 3
    # the messages keep their own line numbers
    assert sorted(res.ledger["source_ref"].to_pylist()) == [f"{archive}/busy.jsonl:2", f"{archive}/busy.jsonl:4"]


class _SamplingSqs:
    """SQS as AWS documents its short polling, in front of moto: a ReceiveMessage with WaitTimeSeconds 0 asks only a
    sample of the servers and, for a small queue, "you might not receive any messages in a particular
    ReceiveMessage response" (here: never); the queue's counts are approximate and lag new messages (here: 0 until
    a receive went through). Long polls and every other call go through to moto as they are."""

    def __init__(self, moto_endpoint: str):
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = self.headers.get("X-Amz-Target", "").split(".")[-1]
                if action == "ReceiveMessage" and not json.loads(body).get("WaitTimeSeconds"):
                    answer = b"{}"  # the sampled servers held none of the messages
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    request = urllib.request.Request(moto_endpoint + self.path, body, headers, method="POST")
                    answer = urllib.request.urlopen(request, timeout=30).read()
                    if action == "GetQueueAttributes" and not received:
                        doc = json.loads(answer)
                        doc["Attributes"]["ApproximateNumberOfMessages"] = "0"  # not caught up with the sends
                        answer = json.dumps(doc).encode()
                    if action == "ReceiveMessage":
                        received.append(True)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-RequestId", "5ea0-sampled")  # as every SQS answer carries one
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        received: list[bool] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_queue_is_long_polled_so_an_empty_answer_means_empty(aws_cfg):
    """Short polling samples SQS's servers and may answer empty while the queue holds messages; with counts that lag
    too, three empty short polls would prove an empty DLQ that is not. The read long-polls ([dlq] wait_seconds,
    every server asked): it reads every message."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:4])])
    proxy = _SamplingSqs(aws_cfg.endpoint_url)
    try:
        sampled = replace(aws_cfg, endpoint_url=proxy.endpoint)
        assert DlqConfig().wait_seconds == 1
        res = dlq.read(DlqConfig(queue_url=url), WINDOW, sampled)
        assert res.complete and res.records == 4 and res.details["coverage"] == "read 4 of ~0"
        short = dlq.read(DlqConfig(queue_url=url, wait_seconds=0), WINDOW, sampled)  # the counts have caught up
        assert (short.complete, short.records) == (False, 0)
    finally:
        proxy.close()
    assert queue_count(sqs, url) == 4


def test_a_message_with_a_binary_attribute_is_read(aws_cfg):
    """SQS gives a Binary message attribute as bytes: serialising the message failed (TypeError), and every live
    read, so every run, ended with exit 4 and no report while such a message sat in the queue."""
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:3])])
    sqs.send_message(QueueUrl=url, MessageBody=webhook(UUIDS[3], "3"),
                     MessageAttributes={**dlq_attrs(), "trace": {"DataType": "Binary", "BinaryValue": b"\x01\x02"}})
    res = dlq.read(DlqConfig(queue_url=url, wait_seconds=0), WINDOW, aws_cfg)
    assert res.complete and res.records == 4 and res.rejected == 0


class _Answer:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


@pytest.mark.parametrize("op,body", [
    ("ReceiveMessage", b"<html>gateway timeout</html>"),  # botocore reads it as {"message": ...}: no empty receive
    ("ReceiveMessage", b'{"Messages": null}'),
    ("ReceiveMessage", b'{"Messages": [{"Body": "x"}]}'),
    ("GetQueueAttributes", b"<html>gateway timeout</html>"),
])
def test_an_answer_that_is_no_sqs_answer_is_named_and_releases_what_was_received(aws_cfg, op, body):
    """A proxy answering 200 with something else: a message without MessageId and an answer without Attributes
    ended the run with a KeyError (exit 4, no report); a page that is not JSON counted as an empty receive, and the
    read blamed "other consumers". Now the read stops, incomplete, naming the answer (or, before any receive, the
    source fails with it), and what it received is visible again."""
    from botocore.awsrequest import AWSResponse
    sqs, url = _queue_of_25(aws_cfg)

    def answer(request, call: int):
        if op == "GetQueueAttributes" or call > 1:  # the first receive is SQS's own
            return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0"}, _Answer(body))
    with _before_send(aws_cfg, op, answer):
        if op == "GetQueueAttributes":
            with pytest.raises(SourceError, match="answered with no Attributes: not an SQS answer"):
                dlq.read(DlqConfig(queue_url=url, wait_seconds=0), WINDOW, aws_cfg)
            return
        res = dlq.read(DlqConfig(queue_url=url, wait_seconds=0), WINDOW, aws_cfg)
    assert not res.complete and res.records == 10
    assert "not an SQS answer" in res.problems[0] and not any("other consumers" in p for p in res.problems)
    assert _visible(sqs, url) == (25, 0)  # every message received is visible again


def test_sqs_unreachable_mid_read_is_an_incomplete_read(aws_cfg):
    """SQS reached, then not (EndpointConnectionError from the second receive): the run ended with exit 4 and no
    report, where a read cut short is an incomplete input (exit 3, re-run later)."""
    import botocore.exceptions
    sqs, url = _queue_of_25(aws_cfg)

    def gone(request, call: int):
        if call > 1:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)
    with _before_send(aws_cfg, "ReceiveMessage", gone):
        res = dlq.read(DlqConfig(queue_url=url, wait_seconds=0), WINDOW, aws_cfg)
    assert not res.complete and res.records == 10 and "failed after retries" in res.problems[0]
    assert _visible(sqs, url) == (25, 0)  # every message received is visible again


def _visible(sqs, url) -> tuple[int, int]:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def _queue_of_25(aws_cfg):
    sqs = make_client("sqs", aws_cfg)
    url = sqs.create_queue(QueueName="zendesk-dlq")["QueueUrl"]
    fill_queue(sqs, url, [webhook(u, str(i)) for i, u in enumerate(UUIDS[:25])])
    return sqs, url


@contextmanager
def _before_send(aws_cfg, op: str, fn):
    """`fn(request, call)` on each SQS `op` call (numbered from 1) before it is sent, as botocore's hook: what it
    returns is the answer (None: SQS's own), what it raises the failure."""
    calls = []

    def hook(request, **_):
        calls.append(1)
        return fn(request, len(calls))
    events = session(aws_cfg).events
    events.register(f"before-send.sqs.{op}", hook, unique_id="test-hook")
    try:
        yield
    finally:
        events.unregister(f"before-send.sqs.{op}", unique_id="test-hook")
