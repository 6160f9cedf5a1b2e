"""EventBridge events and DLQ messages as the vendors document them (PIPELINE.md), around the current hour: the
shared inputs of the AWS source tests (moto's server) and the DLQ fault tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from reconcile.window import Window

from ledgers import uid

NOW = datetime.now(timezone.utc).replace(microsecond=0)
HOUR0 = NOW.replace(minute=0, second=0)
WINDOW = Window(start=HOUR0 - timedelta(hours=1), end=HOUR0 + timedelta(hours=1), as_of=NOW)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def legacy(eb_id: str, ticket: int = 35436, when: datetime = NOW, **top) -> str:
    return json.dumps({"version": "0", "id": uid(eb_id), "detail-type": "Support Ticket: Comment Created",
                       "source": "aws.partner/zendesk.com/1/default", "time": iso(when), **top,
                       "detail": {"ticket_event": {
                           "meta": {"occurred_at": when.strftime("%Y-%m-%dT%H:%M:%S.123456789Z"),
                                    "sequence": {"id": "SEQ1", "position": 2, "total": 2}},
                           "type": "Comment Created", "ticket": {"id": ticket}}}})


def webhook(eb_id: str, zid: str = "900", ticket: int = 7, when: datetime = NOW) -> str:
    return json.dumps({"id": uid(eb_id), "source": "zendesk.webhook", "detail-type": "ticket.created",
                       "detail": {"type": "zen:event-type:ticket.created", "id": zid, "time": iso(when),
                                  "subject": f"zen:ticket:{ticket}", "detail": {"id": str(ticket)}}})


def dlq_attrs(target="arn:aws:kinesis:us-east-1:123456789012:stream/zendesk", code="THROTTLING") -> dict:
    vals = {"RULE_ARN": "arn:aws:events:us-east-1:123456789012:rule/zendesk-to-kinesis", "TARGET_ARN": target,
            "ERROR_CODE": code, "ERROR_MESSAGE": "Rate exceeded", "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
            "RETRY_ATTEMPTS": "185"}
    return {k: {"DataType": "String", "StringValue": v} for k, v in vals.items()}


def queue_count(sqs, url) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def fill_queue(sqs, url, bodies):
    for i in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "MessageBody": b, "MessageAttributes": dlq_attrs()} for j, b in enumerate(bodies[i:i + 10])])
