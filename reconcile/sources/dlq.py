"""What the bus gave up on: the SQS dead-letter queue (PIPELINE.md §4), as the `dlq` ledger.

Either the live queue, sampled without consuming it, or an archive of its messages (JSON lines in the
ReceiveMessage shape, docs/design.md). Receiving is not read-only: it hides a message for the visibility timeout
and raises its receive count, so this module uses a visibility timeout of 0 by default, NEVER deletes and never
changes visibility, and reports the read as a sample with its coverage against ApproximateNumberOfMessages.
"""

from __future__ import annotations

import json
from pathlib import Path

import botocore.exceptions
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .. import ledger
from ..aws import THROTTLE_CODES, error_code, list_files, make_client, store_error
from ..config import AwsConfig, DlqConfig, MatchConfig
from ..errors import ConfigError, SourceError
from ..ledger import SourceResult
from ..window import Window
from . import events, rawtext

NAME, HOP = "dlq", "dlq"

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
            WHEN x[1] IS NULL THEN 'DLQ message has no MessageId' END AS reason,
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
        if out is not None:
            sink = events.LedgerOut(out)
            sink.add(result.ledger)
            result.ledger = sink.result()
        return result
    raise ConfigError("Neither dlq.queue_url nor dlq.uri is set. Pass --dlq-url https://sqs.../queue or --dlq-uri "
                      "s3://bucket/messages.jsonl.")


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
    fs, root, files = list_files(cfg.uri, aws, f"DLQ archive {cfg.uri}", "--dlq-uri")
    files = [f for f in files if not f.base_name.startswith((".", "_"))]
    scheme = "s3://" if cfg.uri.startswith("s3://") else ""
    leds, rejs, fps, problems = [], [], [], []
    for f in files:  # an archive is a handful of files: no pool needed
        where = scheme + f.path
        try:
            with fs.open_input_stream(f.path, compression=None) as s:
                data, meta = s.read(), s.metadata() or {}
        except OSError as e:
            raise (store_error(e, f"DLQ archive object {where}", "--dlq-uri")
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
        led, rej = _to_ledger(lines, refs, match)
        leds.append(led)
        rejs.append(rej)
    led = pa.concat_tables(leds) if leds else ledger.empty()
    rej = pa.concat_tables(rejs) if rejs else ledger.REJECT_SCHEMA.empty_table()
    return SourceResult(name=NAME, ledger=led, rejects=rej, complete=not problems, problems=problems,
                        fingerprints=fps,
                        details={"mode": "archive", "uri": cfg.uri, "files": len(files), "read": led.num_rows,
                                 "rejected": rej.num_rows, "sampled": False,
                                 "coverage": f"read {led.num_rows + rej.num_rows:,} archived messages"})


def _read_queue(cfg: DlqConfig, aws: AwsConfig, match: MatchConfig | None = None) -> SourceResult:
    url = cfg.queue_url
    sqs = make_client("sqs", aws)
    problems: list[str] = []
    try:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    except botocore.exceptions.ClientError as e:
        raise (store_error(e, f"DLQ {url}", "--dlq-url and --region")
               or SourceError(f"GetQueueAttributes on {url} failed ({error_code(e)}): {e}")) from e
    except botocore.exceptions.EndpointConnectionError as e:
        raise SourceError(f"Cannot reach SQS ({e}). Check --dlq-url, --region and AWS_ENDPOINT_URL.") from e
    visible = int(attrs.get("ApproximateNumberOfMessages", 0))
    in_flight = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
    approx = visible + in_flight
    redrive = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else None
    if redrive:
        problems.append(
            f"{url} has a redrive policy (maxReceiveCount {redrive.get('maxReceiveCount')}, to "
            f"{redrive.get('deadLetterTargetArn')}): every receive raises a message's ApproximateReceiveCount, so "
            f"reading it can move messages away. Prefer an archive (--dlq-uri) or remove the policy before reading.")

    seen: dict[str, dict] = {}
    fruitless = receives = 0
    max_receive_count = 0
    throttled = False
    try:
        while len(seen) < approx and fruitless < cfg.empty_receives:
            msgs = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=cfg.visibility_timeout, WaitTimeSeconds=0,
                MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            receives += 1
            new = {m["MessageId"]: m for m in msgs if m["MessageId"] not in seen}
            # A receive that brings nothing new counts as empty: with a visibility timeout of 0 the same
            # messages come back, and we must stop rather than spin.
            fruitless = 0 if new else fruitless + 1
            seen.update(new)
            for m in new.values():
                count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0))
                max_receive_count = max(max_receive_count, count)
            # NEVER DeleteMessage / ChangeMessageVisibility: the DLQ is evidence, and other people's to handle.
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code not in THROTTLE_CODES:
            raise (store_error(e, f"DLQ {url}", "--dlq-url and the IAM policy (sqs:ReceiveMessage)")
                   or SourceError(f"ReceiveMessage on {url} failed ({code}): {e}")) from e
        problems.append(f"ReceiveMessage on {url} was throttled ({code}) after retries. Re-run later.")
        throttled = True

    read_n = len(seen)
    if redrive and max_receive_count and max_receive_count + 1 >= int(redrive.get("maxReceiveCount", 10 ** 9)):
        problems.append(f"Some messages in {url} have been received {max_receive_count} times: one more receive may "
                        f"trigger the redrive policy.")
    incomplete = read_n < approx or throttled
    if read_n < approx:
        problems.append(
            f"Read {read_n:,} of ~{approx:,} messages in {url}: a sample (with visibility timeout "
            f"{cfg.visibility_timeout}s the queue keeps handing back the same messages; other readers or in-flight "
            f"messages hide some). Read an archive with --dlq-uri, or raise dlq.visibility_timeout so received "
            f"messages step aside while the rest are read (they are hidden from other consumers for that long).")
    # The queue hands messages over as dicts ten at a time; serialising them is noise next to the API calls.
    lines = pa.array([orjson.dumps(m).decode() for m in seen.values()], pa.string())
    led, rej = _to_ledger(lines, pa.array(list(seen), pa.string()), match)
    return SourceResult(
        name=NAME, ledger=led, rejects=rej, complete=not incomplete, problems=problems,
        fingerprints=[{"queue_url": url, "approx_visible": visible, "approx_not_visible": in_flight,
                       "read": read_n}],
        details={"mode": "queue", "queue_url": url, "read": read_n, "approx_total": approx,
                 "approx_visible": visible, "approx_not_visible": in_flight,
                 "coverage": f"read {read_n:,} of ~{approx:,}", "sampled": True, "receives": receives,
                 "visibility_timeout": cfg.visibility_timeout, "redrive_policy": redrive, "rejected": rej.num_rows},
    )
