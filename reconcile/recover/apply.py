"""`reconcile recover --apply PLAN`: execute a reviewed plan once, resumable, never sending an event twice.

Every event's attempt is in the recovery journal (the run state, table recovery_journal): `sending` is written and
made durable before a call, `sent` (with the shard and sequence number, or the replay's name) after it. A signal
(Ctrl-C, SIGTERM) waits for the call in flight and its journal rows (interrupt.deferred), so after one nothing is left
in doubt; after a SIGKILL or a crash mid-call an event stays `sending`: the next apply looks for it in the sink, and
sends it again only with `--resend-in-doubt` (it may be in the stream already).

Before sending, the sink is read again: an event that landed late is skipped as `landed_already`. Events another
plan already sent are skipped too. Calls made: kinesis:PutRecords, events:StartReplay (docs/operations.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import botocore.config
import botocore.exceptions
import orjson
import pyarrow as pa

from .. import completeness, emission, interrupt
from ..aws import THROTTLE_CODES, error_code, make_client, region_of
from ..config import AwsConfig, Config, MatchConfig, SinkConfig
from ..engine import execute_file
from ..errors import SourceError, StateError
from ..sources import events, source, sink as sink_source
from ..recovered import JOURNAL_SCHEMA
from ..runfolder import RunFolder
from ..state import State
from ..window import Window, parse_time
from . import plan as plan_mod

logger = logging.getLogger(__name__)

MAX_RECORDS = 500  # PutRecords: records a call
MAX_CALL_BYTES = 5 * 1024 * 1024  # PutRecords: bytes a call (data and partition keys)
BACKOFF_S = 0.2  # first wait before retrying failed records; doubles per attempt ...
BACKOFF_MAX_S = 10.0  # ... up to this
DONE = emission.journal_statuses("done")  # no further send: queries/journal_statuses.csv
FINAL = emission.journal_statuses("final")  # the attempt is over (else in doubt)


@dataclass
class Outcome:
    digest: str
    planned: int = 0
    sent: int = 0
    landed_already: int = 0
    failed: int = 0
    in_doubt: int = 0
    sent_by_other_plan: int = 0
    replay_windows_held: int = 0  # not started: another plan sent (or may have sent) an event in its minutes
    replays: list[str] = field(default_factory=list)
    unrecoverable: int = 0
    stopped_at_limit: bool = False
    remaining: int = 0
    # the planned events not sent (nor landed, nor sent by another plan), by what sends them: `left` an apply again
    # (failed, never tried, past --limit); `held_in_doubt` only --resend-in-doubt (or the sink, once they land there);
    # `held_by_replays` only a plan from a later run (their windows hold an event sent, or maybe sent, already)
    left: int = 0
    held_in_doubt: int = 0
    held_by_replays: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _row(plan: dict, digest: str, e: dict, status: str, **kw) -> dict:
    target = plan["target"]["stream"] if e["route"] == "reput" else plan["target"]["archive_arn"]
    row = {"plan_digest": digest, "window_key": e["window_key"], "source_id": e["source_id"], "eb_id": e["eb_id"],
           "route": e["route"], "target": target, "status": status, "attempts": 0, "shard_id": None,
           "sequence_number": None, "replay_name": None, "sent_at": None, "error": None}
    row.update(kw)
    return row


def _journal_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=JOURNAL_SCHEMA)


def landed(plan: dict, eb_ids: list[str], aws: AwsConfig, now: datetime) -> set[str]:
    """Which of `eb_ids` the sink holds now (a fresh read with the plan's sink config, up to now)."""
    if not eb_ids:
        return set()
    w = plan["run"]["window"]
    start, end = parse_time(w["start"]), parse_time(w["end"])
    # Read up to now: a late or recovered event lands after the run's own read window.
    window = Window(start=start, end=end, as_of=max(now, end), margin_before=timedelta(seconds=w["margin_before_s"]),
                    margin_after=max(timedelta(seconds=w["margin_after_s"]), now - end + timedelta(hours=1)),
                    max_event_age=timedelta(seconds=w["max_event_age_s"]),
                    hop_a_grace=timedelta(seconds=w["hop_a_grace_s"]))
    sink_cfg = SinkConfig(**plan["recheck"]["sink"])
    match = MatchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan["recheck"]["match"].items()})
    # completeness's one rule, as a run applies it: records the sink could not read may be these events (the sink
    # holds them; re-sending would duplicate them), and an empty listing proves nothing
    result = completeness.decide(sink_source.read(sink_cfg, window, aws, match=match), others_have_records=True)
    if not result.complete:
        raise SourceError("The sink could not be read whole, so events that landed late cannot be told from lost "
                          "ones: " + "; ".join(result.problems) + " Fix the sink read (see `reconcile check`), then "
                          "apply again: nothing was sent.")
    con = events.connect()
    try:
        con.register("sink", result.ledger)
        con.register("planned", pa.table({"eb_id": pa.array(eb_ids, pa.string())}))
        found = execute_file(con, plan_mod.QUERIES / "landed.sql", {}).fetchall()
    finally:
        con.close()
    return {r[0] for r in found}


def apply(plan_path: Path, cfg: Config, state: str | Path, *, digest: str | None = None, limit: int | None = None,
          resend_in_doubt: bool = False, progress: bool = True, now: Callable[[], datetime] | None = None
          ) -> Outcome:
    """Send what the plan says and the journal has not sent; returns what happened this time and overall."""
    plan, actual = plan_mod.load(plan_path, digest)
    plan_mod.require_target(plan, region_of(cfg.aws))
    clock = now or (lambda: datetime.now(timezone.utc))
    out = Outcome(actual, planned=sum(e["route"] in ("reput", "replay") for e in plan["events"]),
                  unrecoverable=sum(e["route"] == "none" for e in plan["events"]))
    todo = [e for e in plan["events"] if e["route"] in ("reput", "replay")]
    spill = _spill_path(plan_path, actual)
    with State.open(state, cfg.aws) as st:
        _recover_spills(st, spill, plan)  # sends earlier applies could not journal in the state: recorded first
        plan_mod.require_run(st, plan, str(state))  # again under the lock: a run of the window may have come since
        every = st.journal_rows().to_pylist()  # every plan's rows: this plan's, and what others sent or left in doubt
        journal = {r["eb_id"]: r for r in every if r["plan_digest"] == actual}
        # Other plans' rows: an event another plan sent (or found landed) is never sent again; one another plan
        # left 'sending' (it died mid-call) is in doubt here too.
        others = [r for r in every if r["plan_digest"] != actual]
        elsewhere = {r["eb_id"] for r in others if r["status"] in DONE}
        doubtful = {r["eb_id"] for r in others if r["status"] == "sending"} - elsewhere
        # (one this plan's journal has done too -- another plan's apply found this plan's send landed -- is this plan's)
        out.sent_by_other_plan = sum(e["eb_id"] in elsewhere and journal.get(e["eb_id"], {}).get("status") not in DONE
                                     for e in todo)
        todo = [e for e in todo if e["eb_id"] not in elsewhere and journal.get(e["eb_id"], {}).get("status") not in DONE]
        doubt = [e for e in todo if journal.get(e["eb_id"], {}).get("status") == "sending" or e["eb_id"] in doubtful]
        there: set[str] = set()
        held: set[str] = set()
        if todo:
            there = landed(plan, [e["eb_id"] for e in todo], cfg.aws, clock())
            if there:
                logger.info("%d planned event(s) are in the sink now (landed late): not sent", len(there))
                # An event in doubt (a call that got no answer) was not in the sink when it was sent: found there now,
                # that send is what landed, most likely. Its `sending` row becomes `sent`, keeping the send's time,
                # so the next run judges it `recovered` if it arrived after that time (rules.sql landed_after).
                found_sent = [dict(r, status="sent") for r in every
                              if r["status"] == "sending" and r["eb_id"] in there and r["sent_at"] is not None]
                credited = {r["eb_id"] for r in found_sent if r["plan_digest"] == actual}
                st.write_journal(_journal_table(found_sent + [
                    _row(plan, actual, e, "landed_already", attempts=journal.get(e["eb_id"], {}).get("attempts") or 0)
                    for e in todo if e["eb_id"] in there and e["eb_id"] not in credited]))
            todo = [e for e in todo if e["eb_id"] not in there]
            if doubt and not resend_in_doubt:
                held = {e["eb_id"] for e in doubt if e["eb_id"] not in there}
                if held:
                    logger.warning("%d event(s) were being sent when an earlier apply died and are not in the sink: "
                                   "they may be in the stream already. Not sent; pass --resend-in-doubt to send "
                                   "them anyway (downstream may then see them twice).", len(held))
                todo = [e for e in todo if e["eb_id"] not in held]
        # A replay re-sends its window's minutes whole, every event logged in them and not only the planned ones: one
        # holding an event another plan sent, or left in doubt, or one that landed late (found now or by an earlier
        # apply) would send it twice (the plan that was reviewed did not know of it), so it is not started.
        resent = ({r["eb_id"] for r in others if r["status"] in ("sent", "sending")} | there
                  | {r["eb_id"] for r in every if r["status"] == "landed_already"})
        replays = {e["replay_window"] for e in todo if e["route"] == "replay"}
        logged = _logged(plan, resent) if replays and resent else []
        held_windows: set[int] = {
            i for i in replays if set(plan["replay_windows"][i]["eb_ids"]) & resent
            or any(_may_replay(_span(plan["replay_windows"][i]), t, e) for t, e in logged)}
        if held_windows:
            logger.warning("%d replay window(s) hold an event another plan sent or may have sent, or one that landed "
                           "late: not replayed (the replay would send it twice). Re-plan from a run after those sends "
                           "land.", len(held_windows))
            out.replay_windows_held = len(held_windows)
            todo = [e for e in todo if e["route"] != "replay" or e["replay_window"] not in held_windows]
        if limit is not None and len(todo) > limit:
            kept = _within(todo, limit)
            out.stopped_at_limit, out.remaining = True, len(todo) - len(kept)
            todo = kept
        reput = [e for e in todo if e["route"] == "reput"]
        replay = [e for e in todo if e["route"] == "replay"]
        with _Bar(progress, len(todo)) as bar:
            if reput:
                _put(plan, actual, reput, journal, cfg, st, bar, clock, spill)
            if replay:
                _replay(plan, actual, replay, cfg, st, bar, clock)
        final = st.journal(actual).to_pylist()
    for r in final:
        if r["status"] in FINAL:
            setattr(out, r["status"], getattr(out, r["status"]) + 1)
        else:
            out.in_doubt += 1
    out.replays = sorted({r["replay_name"] for r in final if r["replay_name"]})
    done = {r["eb_id"] for r in final if r["status"] in DONE} | elsewhere
    for e in plan["events"]:
        if e["route"] in ("reput", "replay") and e["eb_id"] not in done:
            kind = ("held_in_doubt" if e["eb_id"] in held else
                    "held_by_replays" if e["route"] == "replay" and e["replay_window"] in held_windows else "left")
            setattr(out, kind, getattr(out, kind) + 1)
    return out


def _logged(plan: dict, eb_ids: set[str]) -> list[tuple[datetime, datetime | None]]:
    """When the plan's run's bus log logged these events, and their own time (its evidence's bus ledger: the minutes
    its replay windows cover are its window's). A plan applied where its run folder is not: none, and a warning (the
    plan's own events are still checked)."""
    bus = RunFolder(Path(plan["run"]["dir"])).ledger(source("bus_log"))
    if not bus.is_file():
        logger.warning("The plan's run folder %s is not here: a replay window holding an event another plan sent is "
                       "held only when the plan itself names that event.", plan["run"]["dir"])
        return []
    con = events.connect()
    try:
        con.read_parquet(str(bus)).create_view("bus")
        return [(t, e) for _, t, e in execute_file(con, plan_mod.QUERIES / "logged_at.sql",
                                                   {"eb_ids": sorted(eb_ids)}).fetchall()]
    finally:
        con.close()


def _may_replay(span: dict, logged_at: datetime, event_time: datetime | None) -> bool:
    """Whether a replay of `span` may re-send an event logged at `logged_at`: by that time (plan.replayed_by), or by
    the event's own time, REPLAY_SLACK_S either side (a replay selects by the envelope's `time`, near the connector's
    occurred_at; the log copy may come long after): holding a window too many only delays its events."""
    slack = timedelta(seconds=plan_mod.REPLAY_SLACK_S)
    return plan_mod.replayed_by(logged_at, [span]) or (
        event_time is not None and span["start_at"] - slack <= event_time < span["end_at"] + slack)


def _span(window: dict) -> dict:
    """A plan's replay window as plan.replayed_by reads one."""
    return {"start_at": parse_time(window["start"]), "end_at": parse_time(window["end"])}


def _within(todo: list[dict], limit: int) -> list[dict]:
    """The first `limit` events to send, and the other events of each replay window one of them is in: a replay sends
    its window's minutes whole, so each of its events goes out, and is journaled, with it -- never sent by a replay
    and left to a later apply to send again."""
    kept = todo[:limit]
    started = {e["replay_window"] for e in kept if e["route"] == "replay"}
    return kept + [e for e in todo[limit:] if e["route"] == "replay" and e["replay_window"] in started]


class _Bar:
    """A progress bar on stderr (rich), or nothing."""

    def __init__(self, on: bool, total: int):
        self.on, self.total, self._p = on and total > 0, total, None

    def __enter__(self):
        if self.on:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self._p = Progress(TextColumn("recover"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               console=Console(stderr=True), transient=True)
            self._p.start()
            self._task = self._p.add_task("recover", total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()


def _batches(entries: list[dict], size: int) -> list[list[dict]]:
    """Consecutive batches within PutRecords' limits (records and bytes a call) and `size` records."""
    out, cur, cur_bytes = [], [], 0
    for e in entries:
        n = len(e["data"].encode()) + len(e["partition_key"].encode())
        if cur and (len(cur) >= size or cur_bytes + n > MAX_CALL_BYTES):
            out.append(cur)
            cur, cur_bytes = [], 0
        cur.append(e)
        cur_bytes += n
    if cur:
        out.append(cur)
    return out


def _stream_arg(stream: str) -> dict[str, str]:
    return {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}


def _spill_path(plan_path: Path, digest: str) -> Path:
    """Where the rows of sends the state could not journal wait for the next apply: beside the plan."""
    plan_path = Path(plan_path)
    folder = plan_path if plan_path.is_dir() else plan_path.parent
    return folder / f"journal-{digest[:16]}.jsonl"


def _recover_spills(st: State, spill: Path, plan: dict) -> None:
    """Record the rows every earlier apply could not save in the state: this plan's, and those of the other plans
    beside it or in its run's recovery folder (a plan made again after a failed apply is written there, and its
    apply with --resend-in-doubt sent the other plan's unrecorded sends -- `sending` to it -- a second time)."""
    folders = {spill.parent, Path(plan["run"]["dir"]) / "recovery"}
    for found in sorted({p for folder in folders if folder.is_dir() for p in folder.glob("journal-*.jsonl")}):
        rows = [orjson.loads(line) for line in found.read_bytes().splitlines() if line.strip()]
        for r in rows:
            r["sent_at"] = datetime.fromisoformat(r["sent_at"]) if r.get("sent_at") else None
        logger.warning("recording %d journal row(s) an earlier apply could not save in the state (%s)", len(rows),
                       found)
        st.write_journal(_journal_table(rows))
        found.unlink()


def _journal_after_call(st: State, rows: list[dict], spill: Path) -> None:
    """The rows of a call that went out; when the state cannot take them (an s3:// state's upload failed), they go
    beside the plan, and the next apply records them before anything else: the records are in the stream, and left
    `sending` they would be in doubt (and --resend-in-doubt would send them twice)."""
    try:
        st.write_journal(_journal_table(rows))
    except Exception as e:
        with open(spill, "ab") as f:
            f.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        sent = sum(r["status"] == "sent" for r in rows)
        raise StateError(f"{sent} record(s) Kinesis accepted could not be journaled in the state ({e}). Their rows "
                         f"are saved in {spill}, which the next apply records first: apply again, and not with "
                         f"--resend-in-doubt before it has (they are in the stream).") from e


def _put(plan: dict, digest: str, entries: list[dict], journal: dict, cfg: Config, st: State, bar: _Bar,
         clock: Callable[[], datetime], spill: Path) -> None:
    # No retries inside boto3: a PutRecords whose answer timed out may have been written, and only the journal
    # ('sending', then in doubt) may decide whether to send it again. Throttled records are retried by _call.
    # (`total_max_attempts` counts the first call; the client setting `max_attempts` counts retries: 1 was 2 calls.)
    kinesis = make_client("kinesis", cfg.aws, botocore.config.Config(retries={"mode": "standard",
                                                                              "total_max_attempts": 1},
                                                                     connect_timeout=10, read_timeout=60))
    rate = cfg.recover.records_per_second
    size = max(1, min(MAX_RECORDS, int(rate)))
    stream = _stream_arg(plan["target"]["stream"])
    next_at = time.monotonic()
    for batch in _batches(entries, size):
        interrupt.sleep(next_at - time.monotonic())  # the rate cap; a signal cuts the wait short
        attempts = {e["eb_id"]: journal.get(e["eb_id"], {}).get("attempts") or 0 for e in batch}
        pending = list(batch)
        while pending:
            # The journal row before the call and the one after it, with the call, happen together: a signal
            # waits for them, so an interrupted apply leaves no event in doubt.
            with interrupt.deferred():
                # the send's time is taken before the call: Kinesis stamps a record's arrival while it handles the
                # call, before its answer comes back (a time taken after it makes every re-put look landed before it)
                at = clock()
                st.write_journal(_journal_table([_row(plan, digest, e, "sending", attempts=attempts[e["eb_id"]] + 1,
                                                      sent_at=at) for e in pending]))
                for e in pending:
                    attempts[e["eb_id"]] += 1
                try:
                    retry, rows = _call(kinesis, stream, plan, digest, pending, attempts, cfg.recover.max_attempts,
                                        at)
                except _Refused as e:
                    st.write_journal(_journal_table(e.rows))  # refused whole: not sent, not in doubt
                    raise
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                    # no answer (timeout, connection lost) or a server error: the records may be in the stream
                    raise SourceError(f"PutRecords to {plan['target']['stream']} got no answer or a server error "
                                      f"({e}): its "
                                      f"{len(pending)} record(s) stay `sending` in the journal. Apply again: they "
                                      f"are looked for in the sink first, and sent again only with "
                                      f"--resend-in-doubt.") from e
                _journal_after_call(st, rows, spill)
            bar.advance(len(pending) - len(retry))
            next_at = time.monotonic() + len(pending) / rate
            if retry:
                wait = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (max(attempts[e["eb_id"]] for e in retry) - 1))
                logger.info("%d record(s) not accepted (throughput): retrying in %.1f s", len(retry), wait)
                interrupt.sleep(max(wait, next_at - time.monotonic()))
            pending = retry


def _call(kinesis, stream: dict, plan: dict, digest: str, pending: list[dict], attempts: dict, max_attempts: int,
          sent_at: datetime) -> tuple[list[dict], list[dict]]:
    """One PutRecords call: (records to retry, journal rows for every record). A record Kinesis did not take is
    `failed` with its error until it is tried again (`sending` once more): a signal during the wait before that
    leaves it not written, never in doubt."""
    records = [{"Data": e["data"].encode(), "PartitionKey": e["partition_key"]} for e in pending]
    try:
        resp = kinesis.put_records(Records=records, **stream)
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code in THROTTLE_CODES or code in ("ProvisionedThroughputExceededException", "KMSThrottlingException"):
            resp = {"Records": [{"ErrorCode": code, "ErrorMessage": str(e)}] * len(pending)}
        elif e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise  # the service failed while handling the call: the records may be in the stream (in doubt)
        else:  # refused whole (no stream, denied): nothing of it was written
            rows = [_row(plan, digest, x, "failed", attempts=attempts[x["eb_id"]], error=f"{code}: {e}")
                    for x in pending]
            raise _Refused(rows, f"PutRecords to {plan['target']['stream']} was refused ({code}): {e}. Check "
                                 f"[recover] stream and that the IAM policy allows kinesis:PutRecords on it "
                                 f"(docs/operations.md), then apply again.") from e
    now = sent_at  # the send's time in the journal, taken before the call (the demo's clock is simulated)
    retry, rows = [], []
    for e, r in zip(pending, resp["Records"]):
        n = attempts[e["eb_id"]]
        if "ErrorCode" not in r:
            rows.append(_row(plan, digest, e, "sent", attempts=n, shard_id=r["ShardId"],
                             sequence_number=r["SequenceNumber"], sent_at=now))
        else:
            if n < max_attempts:
                retry.append(e)
            rows.append(_row(plan, digest, e, "failed", attempts=n,
                             error=f"{r['ErrorCode']}: {r.get('ErrorMessage', '')}"))
    return retry, rows


class _Refused(SourceError):
    def __init__(self, rows: list[dict], message: str):
        super().__init__(message)
        self.rows = rows


def _replay(plan: dict, digest: str, entries: list[dict], cfg: Config, st: State, bar: _Bar,
            clock: Callable[[], datetime]) -> None:
    """One StartReplay per window holding a planned event; named after the plan, so starting it twice is a no-op."""
    client = make_client("events", cfg.aws)
    t = plan["target"]
    by_window: dict[int, list[dict]] = {}
    for e in entries:
        by_window.setdefault(e["replay_window"], []).append(e)
    for i, group in sorted(by_window.items()):
        interrupt.check()
        w = plan["replay_windows"][i]
        name = f"reconcile-{digest[:16]}-{i:04d}"
        with interrupt.deferred():
            at = clock()  # before the call, as _put's: a replayed copy arrives after it
            st.write_journal(_journal_table([_row(plan, digest, e, "sending", attempts=1, sent_at=at)
                                             for e in group]))
            try:
                client.start_replay(ReplayName=name, EventSourceArn=t["archive_arn"],
                                    EventStartTime=parse_time(w["start"]), EventEndTime=parse_time(w["end"]),
                                    Destination={"Arn": t["event_bus_arn"], "FilterArns": [t["rule_arn"]]})
            except botocore.exceptions.ClientError as e:
                if error_code(e) != "ResourceAlreadyExistsException":  # started by an apply that died after the call
                    st.write_journal(_journal_table([_row(plan, digest, x, "failed", attempts=1,
                                                          error=f"{error_code(e)}: {e}") for x in group]))
                    raise SourceError(f"StartReplay {name} from {t['archive_arn']} was refused ({error_code(e)}): "
                                      f"{e}. Check [recover] archive_arn and rule_arn and that the IAM policy allows "
                                      f"events:StartReplay (docs/operations.md), then apply again.") from e
            st.write_journal(_journal_table([_row(plan, digest, x, "sent", attempts=1, replay_name=name, sent_at=at)
                                             for x in group]))
        bar.advance(len(group))

