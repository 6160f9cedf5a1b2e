"""What the bus gave up on: the SQS dead-letter queue (PIPELINE.md §4), as the `dlq` ledger.

Either the live queue or an archive of its messages (JSON lines in the ReceiveMessage shape, docs/design.md).
Receiving is not read-only: it hides a message for the visibility timeout and raises its receive count. So this
module receives with a visibility timeout sized to the read (received messages step aside while the rest are read),
releases every received message (visibility back to 0) when the read ends, fails or is interrupted, NEVER deletes,
refuses a queue with its own redrive policy unless told to accept the risk, and proves coverage against
ApproximateNumberOfMessages(+NotVisible) before and after, and in time: SQS deletes a message MessageRetentionPeriod
after it was sent, so a queue read as of `as_of` proves nothing about messages sent before as_of - that period (an
archive: nothing after its newest object was written, nor before its oldest object or message). A message without
TARGET_ARN is rejected: which target failed is unknown, and calling it a log-target failure could hide a Kinesis loss.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

import botocore.exceptions
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .. import interrupt, ledger
from ..aws import MID_READ_FAILURES, THROTTLE_CODES, error_code, list_files, make_client, store_error
from ..config import AwsConfig, DlqConfig, MatchConfig
from ..errors import ConfigError, SourceError
from ..ledger import SourceResult
from ..window import Window, parse_duration, parse_time
from . import events, rawtext

NAME, HOP = "dlq", "dlq"
logger = logging.getLogger(__name__)

# One message a line in the ReceiveMessage shape. Attribute values are {"DataType", "StringValue"}.
_SQL = """
WITH m AS (
    SELECT ref, line, try(json_extract_string(line, [
        '$.MessageId', '$.Body',
        '$.MessageAttributes.ERROR_CODE.StringValue', '$.MessageAttributes.ERROR_MESSAGE.StringValue',
        '$.MessageAttributes.TARGET_ARN.StringValue', '$.MessageAttributes.RULE_ARN.StringValue',
        '$.MessageAttributes.EXHAUSTED_RETRY_CONDITION.StringValue',
        '$.MessageAttributes.RETRY_ATTEMPTS.StringValue', '$.Attributes.SentTimestamp'])) AS x
    FROM messages
)
SELECT ref, line,
       CASE WHEN x IS NULL THEN 'DLQ message is not JSON'
            WHEN x[1] IS NULL THEN 'DLQ message has no MessageId'
            WHEN x[5] IS NULL THEN 'DLQ message has no TARGET_ARN attribute: which target failed is unknown '
                || '(EventBridge sets it on every message; was the message written by something else, or archived '
                || 'without its MessageAttributes?)' END AS reason,
       x[1] AS message_id, x[2] AS body, x[3] AS error_code, x[4] AS error_message, x[5] AS target_arn,
       x[6] AS rule_arn, x[7] AS retry_condition, try_cast(x[8] AS INTEGER) AS retry_attempts,
       try_cast(x[9] AS BIGINT) AS sent_ms
FROM m
"""


def read(cfg: DlqConfig, window: Window, aws: AwsConfig, out: Path | None = None,
         match: MatchConfig | None = None) -> SourceResult:
    """Read the DLQ (live queue_url, or archive uri) into a SourceResult named "dlq" (hop "dlq").

    With `out`, the ledger is written to that Parquet file and the result holds only its row count
    (events.LedgerOut); a DLQ is small, so it is read whole either way. `match`: events.parse's id and source rules.
    """
    if cfg.uri or cfg.queue_url:
        result = _read_archive(cfg, aws, match) if cfg.uri else _read_queue(cfg, aws, match)
        if (gap := _coverage_gap(result.details, window, cfg)) is not None:
            result.problems.append(gap)
            result.complete = False
        if out is not None:
            sink = events.LedgerOut(out)
            sink.add(result.ledger)
            result.ledger = sink.result()
        return result
    raise ConfigError("Neither [dlq] queue_url nor [dlq] uri is set. Set queue_url = https://sqs.../queue or "
                      "uri = s3://bucket/messages.jsonl (or --set dlq.queue_url=...).")


# SQS's default MessageRetentionPeriod (4 days), taken when the queue's attributes do not say
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html)
DEFAULT_RETENTION_S = 345_600


def _coverage_gap(details: dict, window: Window, cfg: DlqConfig) -> str | None:
    """Why the read cannot prove which of the window's events were dead-lettered, or None. A message for an event of
    the window is sent at or after the window's read_start (on the bus no earlier than the event), so the read must
    hold every message sent since then: a live queue keeps them for its retention period, counted back from as_of; an
    archive holds what its writer wrote, up to its newest object, which may lag what the window's events may have
    dead-lettered by no more than [dlq] archive_every."""
    if details["mode"] == "queue":
        # Counted from as_of, the time the run stands at (the simulated worlds' clock too); a run made with an
        # --as-of long past reads a live queue as it is now, which this cannot see (docs/design.md).
        kept_since = window.as_of - timedelta(seconds=details["retention_s"])
        if kept_since <= window.read_start:
            return None
        return (f"{cfg.queue_url} keeps messages {details['retention_s'] / 86400:g} day(s) (MessageRetentionPeriod): "
                f"as of {_at(window.as_of)} it no longer holds those sent before {_at(kept_since)}, and the window is "
                f"read from {_at(window.read_start)}, so some of its dead-lettered events may be gone from it. Read "
                f"an archive of the queue ([dlq] uri), or judge the window sooner.")
    if (gap := _archive_start_gap(details, window, cfg)) is not None:
        return gap
    newest = details.get("newest_object_at")
    # EventBridge retries an event up to max_event_age before it dead-letters it: a message for an event old enough
    # for a final verdict after the bus was sent by as_of - margin_before, one for any of the window's by end +
    # max_event_age. An archive written every [dlq] archive_every may lag that much behind it (a day without dead
    # letters leaves only its empty object); older, its writer has stopped. Within that lag, what was dead-lettered
    # after the newest object is unknown: the limit of an archive (docs/design.md).
    until = min(window.end + window.max_event_age, window.as_of - window.margin_before)
    due = until - parse_duration(cfg.archive_every)
    if newest is not None and datetime.fromisoformat(newest) >= due:
        return None
    written = f"was written {newest}" if newest else "has no modification time"
    return (f"The newest DLQ archive object under {cfg.uri} {written}, more than [dlq] archive_every "
            f"({cfg.archive_every}) before {_at(until)} (what the window's events may have dead-lettered by, as of "
            f"{_at(window.as_of)}): messages dead-lettered since are not in the archive (has its writer stopped?). "
            f"Check the archiver (it should write an object, empty when there is nothing, every archive_every), or "
            f"read the queue ([dlq] queue_url).")


def _archive_start_gap(details: dict, window: Window, cfg: DlqConfig) -> str | None:
    """Why the archive may not go back to the window's read_start, or None. Its writer writes an object every
    [dlq] archive_every, so one written within that of read_start, or a message it holds sent by then, shows it
    reaches back; later than both, older objects may have expired (a lifecycle rule) or never been written (the
    writer started later): "no DLQ message" would then be no proof. [dlq] archive_since states the start instead."""
    if cfg.archive_since is not None:
        since = parse_time(cfg.archive_since)
        if since <= window.read_start:
            return None
        return (f"[dlq] archive_since says the DLQ archive under {cfg.uri} holds the messages sent since "
                f"{_at(since)}, after the window's read start {_at(window.read_start)}: messages sent before are not "
                f"in it. Read the queue ([dlq] queue_url) if it still keeps them, or judge a later window.")
    due = window.read_start + parse_duration(cfg.archive_every)
    firsts = [datetime.fromisoformat(t) for t in (details.get("oldest_object_at"), details.get("earliest_message_at"))
              if t]
    if firsts and min(firsts) <= due:
        return None
    oldest, earliest = details.get("oldest_object_at"), details.get("earliest_message_at")
    shown = (f"its oldest object was written {oldest}" if oldest else "its objects have no modification time") + \
        (f" and its earliest message sent {earliest}" if earliest else " and it holds no message")
    return (f"The DLQ archive under {cfg.uri} may not reach back to the window: {shown}, more than [dlq] "
            f"archive_every ({cfg.archive_every}) after the window's read start {_at(window.read_start)}. Older "
            f"objects may have expired or never been written, so dead letters of the window's events may be missing. "
            f"Keep the archive's older objects, read the queue ([dlq] queue_url), or, if the archive does hold every "
            f"message sent since an earlier time, set [dlq] archive_since to it.")


def reach(details: dict) -> datetime | None:
    """Up to when a DLQ read holds the messages sent (queries/rules.sql beyond_dlq): an archive's newest object;
    None for a live queue (read as it is now) or no DLQ."""
    newest = details.get("newest_object_at") if details.get("mode") == "archive" else None
    return datetime.fromisoformat(newest) if newest else None


def _at(t: datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%SZ}"


def _to_ledger(lines: pa.Array | pa.ChunkedArray, refs: pa.Array | pa.ChunkedArray,
               match: MatchConfig | None = None) -> tuple[pa.Table, pa.Table]:
    con = events.connect()
    try:
        con.register("messages", pa.table({"ref": refs, "line": lines}))
        t = con.sql(_SQL).to_arrow_table()
    finally:
        con.close()
    bad = pc.is_valid(t["reason"])
    b = t.filter(bad)
    rej0 = ledger.rejects_table(NAME, b["ref"], b["reason"], b["line"])
    g = t.filter(pc.invert(bad))
    extra = {c: g[c] for c in ("error_code", "error_message", "target_arn", "rule_arn", "retry_condition",
                               "retry_attempts")}
    extra["source_id"] = g["message_id"]
    extra["observed_at"] = pc.cast(g["sent_ms"], pa.timestamp("ms", tz="UTC"))
    led, rej = events.parse(g["body"], g["ref"], hop=HOP, source=NAME, extra=extra, match=match)
    return led, pa.concat_tables([rej0, rej])


def _read_archive(cfg: DlqConfig, aws: AwsConfig, match: MatchConfig | None = None) -> SourceResult:
    fs, root, files = list_files(cfg.uri, aws, f"DLQ archive {cfg.uri}", "[dlq] uri")
    aside = [f.base_name.startswith((".", "_")) for f in files]  # an archiver's markers and temp files
    skipped = [f for f, a in zip(files, aside) if a]
    files = [f for f, a in zip(files, aside) if not a]
    scheme = "s3://" if cfg.uri.startswith("s3://") else ""
    leds, rejs, fps, problems = [], [], [], []
    blank_lines = 0  # lines holding nothing (counted, not rejected: no message can be in them)
    for f in files:  # an archive is a handful of files: no pool needed
        where = scheme + f.path
        try:
            with fs.open_input_stream(f.path, compression=None) as s:
                data, meta = s.read(), s.metadata() or {}
        except OSError as e:
            raise (store_error(e, f"DLQ archive object {where}", "[dlq] uri")
                   or SourceError(f"Cannot read DLQ archive object {where}: {e}.")) from e
        fp = {"key": where, "size": f.size, "mtime": f.mtime.isoformat() if f.mtime else None}
        if meta.get("ETag"):
            fp["etag"] = meta["ETag"].decode().strip('"')
        fps.append(fp)
        text, damage = rawtext.gunzip(data)
        if damage:
            text = text[: text.rfind(b"\n") + 1]
            problems.append(f"{where}: {damage}; kept the messages before it. Check the archive object.")
            rejs.append(ledger.rejects_table(NAME, [where], [f"{damage} in {where}"], [None]))
        lines = rawtext.lines(text)
        refs = rawtext.refs(where, len(lines))
        # an empty day's object may be one newline
        text_lines = lines.cast(pa.large_string())  # Arrow trims and filters no string views; a DLQ archive is small
        blank = pc.equal(pc.utf8_trim_whitespace(text_lines), "")
        if (n := pc.sum(blank).as_py() or 0):
            blank_lines += n
            keep = pc.invert(blank)
            lines, refs = text_lines.filter(keep), refs.filter(keep)
        led, rej = _to_ledger(lines, refs, match)
        leds.append(led)
        rejs.append(rej)
    if not files:
        # An empty queue is proven empty by its attributes; an archive with no message file proves nothing.
        problems.append(f"No DLQ archive file under {cfg.uri}: nothing shows the queue was empty. Have the archiver "
                        f"write an empty file for a day without messages, or read the queue ([dlq] queue_url).")
    led = pa.concat_tables(leds) if leds else ledger.empty()
    rej = pa.concat_tables(rejs) if rejs else ledger.REJECT_SCHEMA.empty_table()
    newest = max((f.mtime for f in files if f.mtime), default=None)
    oldest = min((f.mtime for f in files if f.mtime), default=None)
    sent = pc.min(led["observed_at"]).as_py() if led.num_rows else None
    return SourceResult(name=NAME, ledger=led, rejects=rej, complete=not problems, problems=problems,
                        fingerprints=fps,
                        details={"mode": "archive", "uri": cfg.uri, "files": len(files),
                                 "skipped_objects": len(skipped),
                                 "skipped_shown": [scheme + f.path for f in skipped[:20]], "read": led.num_rows,
                                 "rejected": rej.num_rows, "sampled": False,
                                 "coverage": f"read {led.num_rows + rej.num_rows:,} archived messages",
                                 "blank_lines": blank_lines,
                                 "newest_object_at": newest.isoformat() if newest else None,
                                 "oldest_object_at": oldest.isoformat() if oldest else None,
                                 "earliest_message_at": sent.isoformat() if sent else None})


# SQS limits (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ReceiveMessage.html).
MAX_VISIBILITY = 43200  # 12 hours
BATCH = 10  # messages per ReceiveMessage / entries per ChangeMessageVisibilityBatch
OVER_LIMIT = "OverLimit"  # ReceiveMessage's error at the in-flight quota (SQS API reference, ReceiveMessage errors)


def visibility_for(approx: int) -> int:
    """Seconds a received message stays hidden: a minute, plus a second per receive the queue needs (a receive takes
    tens of milliseconds, so this outlasts the read many times over). Every message is released when the read ends,
    so the timeout only matters if the process is killed outright: then they reappear after this long."""
    return min(MAX_VISIBILITY, 60 + -(-approx // BATCH))


def messages(cfg: DlqConfig, aws: AwsConfig) -> tuple[dict[str, dict], list[str]]:
    """Every message of the live queue by MessageId (body and attributes), read as `read` reads it: received,
    released, never deleted. Returns them and the read's problems (a partial read names what it missed)."""
    seen: dict[str, dict] = {}
    result = _read_queue(cfg, aws, None, keep=seen)
    return seen, result.problems


def _read_queue(cfg: DlqConfig, aws: AwsConfig, match: MatchConfig | None = None,
                keep: dict[str, dict] | None = None) -> SourceResult:
    url = cfg.queue_url
    sqs = make_client("sqs", aws)
    before = _counts(sqs, url)
    approx = before["visible"] + before["not_visible"]
    redrive = before["redrive"]
    max_receives = int(redrive.get("maxReceiveCount", 0)) if redrive else 0
    if redrive and not cfg.accept_redrive_risk:
        raise SourceError(
            f"{url} has its own redrive policy (maxReceiveCount {max_receives}, to "
            f"{redrive.get('deadLetterTargetArn')}): every receive raises a message's ApproximateReceiveCount, and at "
            f"maxReceiveCount SQS moves it away, so reading the queue can destroy the evidence. Nothing was received. "
            f"Read an archive of the queue ([dlq] uri), remove the queue's redrive policy, or set [dlq] "
            f"accept_redrive_risk = true (the read then stops before any message is within one receive of "
            f"maxReceiveCount).")
    timeout = visibility_for(approx) if cfg.visibility_timeout is None else cfg.visibility_timeout
    problems: list[str] = []
    seen: dict[str, dict] = {}
    handles: dict[str, str] = {}  # MessageId -> the latest receipt handle (only that one can change visibility)
    fruitless = receives = 0
    max_receive_count = 0
    throttled = near_redrive = endless = False
    odd = None  # what an answer held that is no SQS answer (_received)
    receive_limit = 5 * -(-approx // BATCH) + 50 * cfg.empty_receives  # five times what the count needs, and then some
    try:
        try:
            # Until empty_receives receives in a row bring nothing new, not until the count read before: SQS's counts
            # are approximate and lag new messages, and stopping at one that came out low would read part of the
            # queue and call it whole.
            while fruitless < cfg.empty_receives and not near_redrive and not endless:
                interrupt.check()  # after SIGTERM/SIGINT: receive no more (the finally below releases what we hold)
                # a signal between the receive and the record of its handles would leave messages hidden
                with interrupt.deferred():
                    answer = sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=BATCH, VisibilityTimeout=timeout,
                        WaitTimeSeconds=cfg.wait_seconds,  # long polling: every server asked (config.DlqConfig)
                        MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"],
                    )
                    receives += 1
                    msgs, odd = _received(answer)
                    handles.update((m["MessageId"], m["ReceiptHandle"]) for m in msgs)
                if odd:  # what it held that is a message is released below; the rest of the queue is unread
                    problems.append(f"ReceiveMessage on {url} answered with {odd}, not an SQS answer; read "
                                    f"{len(seen) + len(msgs):,} message(s). Check what answers at the queue's "
                                    f"endpoint (AWS_ENDPOINT_URL, a proxy?), then re-run.")
                    throttled = True
                new = {m["MessageId"]: m for m in msgs if m["MessageId"] not in seen}
                # A receive that brings nothing new counts as empty: with a visibility timeout of 0 the same
                # messages come back, and we must stop rather than spin.
                fruitless = 0 if new else fruitless + 1
                seen.update(new)
                for m in msgs:
                    max_receive_count = max(max_receive_count, int(m.get("Attributes", {}).get(
                        "ApproximateReceiveCount", 0)))
                near_redrive = bool(max_receives) and max_receive_count + 1 >= max_receives
                # a bound for a queue that never runs dry (new messages faster than we receive): then incomplete
                endless = receives >= receive_limit
                if odd:
                    break
        except botocore.exceptions.ClientError as e:
            code = error_code(e)
            if code.endswith(OVER_LIMIT):
                # SQS's in-flight quota (about 120,000 messages received and not yet visible again, on a standard
                # queue): what we hold counts, so a queue bigger than that cannot be read whole this way
                problems.append(f"ReceiveMessage on {url} hit SQS's limit of in-flight messages ({code}) after "
                                f"{len(seen):,} message(s): a live read holds every message it receives until the "
                                f"end, and the queue holds more than SQS lets one reader hold. Read an archive of "
                                f"the queue ([dlq] uri).")
                throttled = True
            elif code not in THROTTLE_CODES:
                raise (store_error(e, f"DLQ {url}", "[dlq] queue_url and the IAM policy (sqs:ReceiveMessage)")
                       or SourceError(f"ReceiveMessage on {url} failed ({code}): {e}")) from e
            else:
                problems.append(f"ReceiveMessage on {url} was throttled ({code}) after retries. Re-run later.")
                throttled = True
        except (*MID_READ_FAILURES, botocore.exceptions.EndpointConnectionError) as e:  # reached before: cut short
            problems.append(f"ReceiveMessage on {url} failed after retries ({type(e).__name__}: {e}); read "
                            f"{len(seen):,} message(s). Re-run later.")
            throttled = True
    finally:
        # Also on an error, Ctrl-C or SIGTERM (SystemExit): nothing we received stays hidden from its owners.
        # NEVER DeleteMessage: the DLQ is evidence, and other people's to handle.
        with interrupt.deferred():
            unreleased = _release(sqs, url, list(handles.values())) if timeout else 0
    if unreleased:
        problems.append(f"{unreleased:,} received message(s) in {url} could not be made visible again: they reappear "
                        f"by themselves after the visibility timeout ({timeout}s).")
    after = _counts(sqs, url)
    approx_after = after["visible"] + after["not_visible"]
    read_n = len(seen)
    if near_redrive:
        problems.append(
            f"Stopped reading {url}: a message has been received {max_receive_count} times and the queue's "
            f"maxReceiveCount is {max_receives}; another receive could make SQS move it to "
            f"{redrive.get('deadLetterTargetArn')}. Redrive or archive the messages, then read the archive "
            f"([dlq] uri).")
    if endless:
        problems.append(f"Stopped reading {url} after {receives:,} receives ({read_n:,} messages, ~{approx:,} when the "
                        f"read began): new messages kept arriving. Re-run when the queue is quieter, or read an "
                        f"archive ([dlq] uri).")
    if after["delayed"]:
        problems.append(f"{url} held ~{after['delayed']:,} delayed message(s) after the read (the queue's "
                        f"DelaySeconds): none could be received yet. Re-run when the delay has passed.")
    incomplete = read_n < max(approx, approx_after) or throttled or near_redrive or endless or after["delayed"] > 0
    if read_n < approx and not odd:  # (an odd answer says why itself)
        problems.append(
            f"Read {read_n:,} of ~{approx:,} messages in {url}: "
            + (f"with visibility timeout {timeout}s the queue keeps handing back the same messages; remove "
               f"dlq.visibility_timeout so received messages step aside while the rest are read."
               if timeout == 0 else "other consumers hold some (ApproximateNumberOfMessagesNotVisible "
               f"{before['not_visible']:,} before the read). Re-run when they are done, or read an archive "
               f"([dlq] uri). A reconcile run killed outright (SIGKILL, out of memory) holds the messages it "
               f"received for up to {visibility_for(max(approx, before['not_visible']))} s (the visibility timeout it "
               f"sized to this queue): re-run after that."))
    elif approx_after > read_n:
        problems.append(f"{url} held ~{approx_after:,} messages after the read and {read_n:,} were read: messages "
                        f"arrived during the read. Re-run to read them.")
    if keep is not None:
        keep.update(seen)
    # The queue hands messages over as dicts ten at a time; serialising them is noise next to the API calls.
    lines = pa.array([orjson.dumps(m, default=_bytes_text).decode() for m in seen.values()], pa.string())
    led, rej = _to_ledger(lines, pa.array(list(seen), pa.string()), match)
    return SourceResult(
        name=NAME, ledger=led, rejects=rej, complete=not incomplete, problems=problems,
        fingerprints=[{"queue_url": url, "approx_visible": before["visible"],
                       "approx_not_visible": before["not_visible"], "read": read_n}],
        details={"mode": "queue", "queue_url": url, "read": read_n, "approx_total": approx,
                 "approx_visible": before["visible"], "approx_not_visible": before["not_visible"],
                 "approx_total_after": approx_after, "approx_delayed_after": after["delayed"],
                 "coverage": f"read {read_n:,} of ~{approx:,}",
                 "sampled": read_n < approx, "receives": receives, "visibility_timeout": timeout,
                 "released": len(handles) - unreleased if timeout else 0, "redrive_policy": redrive,
                 "max_receive_count_seen": max_receive_count, "rejected": rej.num_rows,
                 "retention_s": before["retention_s"]},
    )


def _received(answer: dict) -> tuple[list[dict], str | None]:
    """The messages of a ReceiveMessage answer, and what in it is no SQS answer (None when all of it is one): each
    message must have its MessageId and ReceiptHandle, and an empty one SQS's request id (an answer that is not
    JSON, a gateway's HTML page, botocore reads as an empty receive with no request id: it is none)."""
    msgs = answer.get("Messages", [])
    if not isinstance(msgs, list):
        return [], f"Messages of type {type(msgs).__name__}"
    good = [m for m in msgs if isinstance(m, dict) and isinstance(m.get("MessageId"), str)
            and isinstance(m.get("ReceiptHandle"), str)]
    if len(good) < len(msgs):
        return good, f"{len(msgs) - len(good)} message(s) without a MessageId and ReceiptHandle"
    if not msgs and not answer.get("ResponseMetadata", {}).get("RequestId"):
        return [], "no message and no AWS request id"
    return good, None  # (a field SQS adds one day is no reason to call it something else)


def _bytes_text(value):
    """A Binary message attribute's value (boto3 gives bytes) as its base64 text, as SQS's own JSON gives it."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _counts(sqs, url: str) -> dict:
    try:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes")
    except botocore.exceptions.ClientError as e:
        raise (store_error(e, f"DLQ {url}", "[dlq] queue_url and the region ([aws] region, --region)")
               or SourceError(f"GetQueueAttributes on {url} failed ({error_code(e)}): {e}")) from e
    except botocore.exceptions.EndpointConnectionError as e:
        raise SourceError(f"Cannot reach SQS ({e}). Check [dlq] queue_url, the region (--region) and AWS_ENDPOINT_URL.") from e
    except MID_READ_FAILURES as e:  # a connect timeout or a dropped connection, after botocore's retries
        raise SourceError(f"GetQueueAttributes on {url} failed after retries ({type(e).__name__}: {e}). Re-run "
                          f"later.") from e
    if not isinstance(attrs, dict):
        raise SourceError(f"GetQueueAttributes on {url} answered with no Attributes: not an SQS answer. Check what "
                          f"answers at the queue's endpoint (AWS_ENDPOINT_URL, a proxy?), then re-run.")
    return {"visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "not_visible": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            # a queue with DelaySeconds hides each new message that long: no receive can have it yet
            "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            "redrive": json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else None,
            "retention_s": int(attrs.get("MessageRetentionPeriod", DEFAULT_RETENTION_S))}


def _release(sqs, url: str, handles: list[str]) -> int:
    """Make every received message visible again (ChangeMessageVisibilityBatch to 0); how many could not be."""
    failed = 0
    for i in range(0, len(handles), BATCH):
        entries = [{"Id": str(j), "ReceiptHandle": h, "VisibilityTimeout": 0}
                   for j, h in enumerate(handles[i:i + BATCH])]
        try:
            failed += len(sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries).get("Failed", []))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            logger.warning("Could not release %d DLQ message(s) in %s: %s", len(entries), url, e)
            failed += len(entries)
    return failed
