"""The run-state file: run history and the pending events that later runs settle (a DuckDB file).

A run holds a lock beside the file for its whole length, so a second run on the same state fails fast instead of
corrupting it, and a run that dies (SIGKILL, an OOM kill) never leaves a lock in the next one's way: an flock beside
a local file, a refreshed lock object beside an `s3://` one (downloaded before the run and uploaded after it).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from . import emission, resources, summary
from .config import AwsConfig
from .engine import execute_file, statements
from .recovered import JOURNAL_SCHEMA, RECOVERIES_SCHEMA
from .errors import ConfigError, NoState, ReadDeadline, StateError, StateInUse
from .interrupt import bounded
from .window import Window, parse_duration

logger = logging.getLogger(__name__)

STATE_QUERIES = resources.query_file("state")
JOURNAL_COLUMNS = tuple(JOURNAL_SCHEMA.names)
CARRIED_SCHEMA = pa.schema([
    ("window_key", pa.string()), ("source_id", pa.string()), ("zendesk_key", pa.string()), ("eb_id", pa.string()),
    ("ticket_id", pa.int64()), ("kind", pa.string()), ("event_time", pa.timestamp("ms", tz="UTC")),
    ("position", pa.int64()), ("other_eb_ids", pa.list_(pa.string())),
    ("emission", pa.string()), ("sequence_id", pa.string()), ("sequence_position", pa.int64()),
    ("claimed_ids", pa.list_(pa.string())), ("audit_id", pa.int64()),
    ("dlq_kinesis", pa.int64()), ("error_code", pa.string()),
    ("holders", pa.list_(pa.string())),  # every window that left it pending (carried.sql): history folds it into each
    ("bus_at", pa.timestamp("ms", tz="UTC")),  # the bus log's first copy: its retries' start (rules.sql retry_start)
    ("near_audits", pa.int64()),  # other audits of its ticket near it (export/pending.sql): settlements lone_seq
    ("owner_sequence", pa.string()),  # the sequence its update owns by its run's links (rules.sql sequence_owners)
])


def as_carried(table: pa.Table) -> pa.Table:
    """`table` with CARRIED_SCHEMA's columns: a run folder written before other_eb_ids (or the emission and sequence
    facts, the claimed ids, the audit or the dead letters) were kept lacks them (none)."""
    return pa.Table.from_arrays([table[f.name].cast(f.type) if f.name in table.column_names
                                 else pa.nulls(table.num_rows, f.type) for f in CARRIED_SCHEMA], schema=CARRIED_SCHEMA)


def _q(name: str) -> Path:
    return STATE_QUERIES / f"{name}.sql"


def _holder() -> dict[str, Any]:
    """Who holds a lock: enough for a person to find the run, and for `_S3Lock` to tell whether it is alive."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_ns": _pid_namespace(),
            "started": _start_ticks(os.getpid()),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _parse_holder(data: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(data or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (`reconcile history` or `trace` reading it, or a run just starting)"
    return f"another run (pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')})"


@contextmanager
def _lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold `<state>.lock` while the block runs: a writer alone, readers together.

    An flock: the kernel lets it go when the process ends however it ends (SIGKILL, an OOM kill), so a dead run
    never blocks the next one, and nobody has to delete the file. The file itself stays; a writer keeps its
    pid, host and start time in it, so a run that finds it held can name the holder.
    """
    lock = path.with_name(path.name + ".lock")
    if shared:  # a reader writes nothing (`run --dry-run`, trace, history): it takes the lock only where one exists
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # no run has ever locked it; DuckDB's own file lock keeps a writer out meanwhile
            yield
            return
    else:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            raise StateError(f"Cannot write {lock} (permission denied): a run needs to write beside its state "
                             f"file. Run as its owner, or pass another --state.") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse_holder(os.pread(fd, 4096, 0))
            if shared:  # a reader (history, trace): another state would answer from another history
                raise StateInUse(f"State file {path} is in use by {_describe(holder)}. Wait for it to finish (a trace "
                                 f"needs no state: reconcile trace ID --run DIR reads the run folders).") from None
            raise StateInUse(f"State file {path} is in use by {_describe(holder)}. Wait for it to finish (a second "
                             f"run on the same state would corrupt it), or pass another --state.") from None
        except OSError as e:
            raise StateError(f"Cannot lock {lock}: {e.strerror} (the file system does not support flock). Keep the "
                             f"state on a local disk, or in s3://.") from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)  # the next run that finds the file held must not name this run
    finally:
        os.close(fd)  # releases the flock


@dataclass
class State:
    con: duckdb.DuckDBPyConnection
    path: Path
    # An s3:// state's upload (lock held), called by write_journal: the journal is durable there after every write,
    # not only when the command ends. None for a local state (its CHECKPOINT is the durability).
    push: Callable[[], None] | None = None

    @classmethod
    @contextmanager
    def open(cls, location: str | Path, aws: AwsConfig | None = None, *, write: bool = True) -> Iterator["State"]:
        """Open (creating if needed) the state at a local path or s3:// URI, locked for writers."""
        location = str(location)
        if not location.strip():
            raise ConfigError("The state location is empty. Give --state a file path or an s3:// URI, or set "
                              "[state] uri (or RECONCILE_STATE).")
        if location.startswith("s3://"):
            with _s3_copy(location, aws or AwsConfig(), write) as (local, push):
                with cls.open(local, write=write) as st:
                    st.push = push
                    yield st
            return
        path = Path(location)
        if not write:
            if not path.exists():
                raise NoState(f"No state file at {path}. Run `reconcile run` (or `demo`) first, or pass --state.")
            with _lock(path, shared=True):
                try:
                    con = duckdb.connect(str(path), read_only=True)
                except duckdb.Error as e:
                    raise StateError(f"Cannot open state file {path}: {e}. Check the path ([state] uri, --state, "
                                     f"RECONCILE_STATE).") from e
                try:
                    con.execute("SET TimeZone = 'UTC'")  # times read back in UTC whatever the machine's TZ, as written
                    _tables_it_lacks(con)
                    yield cls(con, path)
                finally:
                    con.close()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(path):
            try:
                con = duckdb.connect(str(path))
            except duckdb.Error as e:
                raise StateError(f"Cannot open state file {path}: {e}. Check the path, or move a damaged file "
                                 "aside (history starts again).") from e
            try:
                con.execute("SET TimeZone = 'UTC'")
                execute_file(con, _q("schema"), {})
                yield cls(con, path)
                try:
                    con.execute("CHECKPOINT")
                except duckdb.Error as e:
                    # What was committed is in the write-ahead log already, which the next open replays: the run's
                    # result stands (a loss stays exit 2, its alert is sent); the file needs room to fold it in.
                    logger.warning("the state %s could not fold its write-ahead log in (%s): what was committed "
                                   "stands, and the next open of the state does it; free disk space beside it", path, e)
            finally:
                con.close()

    def carried(self, window: Window) -> pa.Table:
        """Open pending events of windows that start before this one."""
        t = execute_file(self.con, _q("carried"), {"window_start": window.start, "window_key": window.key}
                         ).to_arrow_table()
        return as_carried(t)

    def pending_of(self, window_key: str) -> pa.Table:
        """The pending events the recorded run of a window left (`pending`'s columns but window_key)."""
        return execute_file(self.con, _q("pending_of"), {"window_key": window_key}).to_arrow_table()

    def record(self, window: Window, summary: dict[str, Any], out_dir: Path, pending: pa.Table,
               settlements: pa.Table, kept: pa.Table | None = None) -> None:
        """Replace this window's run, its hop figures, its pending events and the settlements it made. `kept`: pending
        events of its previous run (pending_of) that stay pending beside the new ones: those a run whose Zendesk read
        was incomplete gave no verdict (run.finish).

        Uncommitted until `commit()` (after the run's outputs are written): a run stopped before that, by a signal
        or an error, leaves the state as it was (closing the connection rolls the change back).
        """
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            execute_file(con, _q("forget_run"), {"window_key": window.key})
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [window.key, window.start, window.end, window.as_of, summary["status"],
                         summary["exit_code"], summary["generated_at"], str(out_dir), summary["events"]])
            for h in summary["hops"]:
                con.execute("INSERT INTO run_hops VALUES (?, ?, ?, ?, ?, ?)",
                            [window.key, h["name"], h["in"], h["out"], h["lost"], h["pending"]])
                con.execute("INSERT INTO run_recovered VALUES (?, ?, ?)", [window.key, h["name"], h["recovered"]])
                con.execute("INSERT INTO run_thresholds VALUES (?, ?, ?)", [window.key, h["name"], h["threshold"]])
            con.register("adding", pending)
            execute_file(con, _q("add_pending"), {"window_key": window.key})
            if kept is not None and kept.num_rows:
                con.register("adding", kept)
                execute_file(con, _q("add_pending"), {"window_key": window.key})
                con.register("kept_pending", kept)
                execute_file(con, _q("keep_pending"), {"window_key": window.key})
            con.register("new_settlements", settlements)
            con.execute("INSERT OR REPLACE INTO settlements SELECT window_key, source_id, ?, verdict, eb_id, "
                        "lateness_s FROM new_settlements WHERE verdict <> 'pending'", [window.key])
            execute_file(con, _q("held_dead_letters"), {})
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            for name in ("adding", "kept_pending", "new_settlements"):
                try:
                    con.unregister(name)
                except duckdb.Error:
                    pass

    def restate(self, window: Window, summary: dict[str, Any]) -> None:
        """The status `record` wrote for this window's run, as it stands after the history (summary.fold_carried)."""
        self.con.execute("UPDATE runs SET status = ?, exit_code = ? WHERE window_key = ?",
                         [summary["status"], summary["exit_code"], window.key])

    def commit(self) -> None:
        """Make the run `record` wrote part of the state."""
        self.con.execute("COMMIT")

    def journal(self, plan_digest: str) -> pa.Table:
        """The recovery journal's rows for one plan (every status), in eb_id order."""
        rows = self.journal_rows()  # in (plan_digest, eb_id) order
        return rows.filter(pc.equal(rows["plan_digest"], plan_digest))

    def write_journal(self, rows: pa.Table) -> None:
        """Insert or replace journal rows (columns JOURNAL_COLUMNS, any order) and make them durable at once (an
        s3:// state is uploaded): a recovery interrupted after this call, even by SIGKILL, never sends these events
        again."""
        self.con.register("journal_rows", rows.select(list(JOURNAL_COLUMNS)))
        try:
            execute_file(self.con, _q("write_journal"), {})
            self.con.execute("CHECKPOINT")
        finally:
            self.con.unregister("journal_rows")
        if self.push is not None:
            self.push()

    def journal_rows(self) -> pa.Table:
        """Every row of the recovery journal (every plan, every status): a run's evidence (reconcile/recovered.py)."""
        return execute_file(self.con, _q("journal"), {}).to_arrow_table()

    def run_of(self, window_key: str) -> dict[str, Any] | None:
        """The run of the window recorded here (generated_at, out_dir, status), or None (queries/state/run_of.sql)."""
        rows = execute_file(self.con, _q("run_of"), {"window_key": window_key}).to_arrow_table().to_pylist()
        return rows[0] if rows else None

    def sent_for_window(self, window_key: str) -> int:
        """How many of a window's events a recovery sent (queries/state/sent_for_window.sql)."""
        return execute_file(self.con, _q("sent_for_window"), {"window_key": window_key}).fetchall()[0][0]

    def recoveries(self) -> pa.Table:
        """What was sent per EventBridge id (queries/state/recoveries.sql), for the engine's `recoveries` view."""
        return execute_file(self.con, _q("recoveries"), {}).to_arrow_table().cast(RECOVERIES_SCHEMA)

    def history(self) -> list[dict[str, Any]]:
        self.con.register("verdict_vocab", emission.verdict_table())
        try:
            rows = execute_file(self.con, _q("history"), {}).to_arrow_table().to_pylist()
        finally:
            self.con.unregister("verdict_vocab")
        return standing([dict(r, loss_rate=emission.loss_rate(r["lost"], r["in"])) for r in rows])

    def settled(self, source_ids: list[str]) -> list[dict[str, Any]]:
        """What later runs settled these pending events (Zendesk event ids) as (queries/state/settled.sql)."""
        if not source_ids:
            return []
        return execute_file(self.con, _q("settled"), {"source_ids": source_ids}).to_arrow_table().to_pylist()

    def run_dirs(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT out_dir FROM runs ORDER BY window_start DESC").fetchall()]


def holders(carried: pa.Table) -> dict[str, tuple[list[str], bool]]:
    """source_id -> (every window that left the carried event pending (carried.sql `holders`), whether it waited on
    the bus: an EventBridge id was linked to it, so it waited at the second hop, else at the first, as history.sql
    folds it). summary.fold_carried checks each window against its threshold. A run folder that predates the holders
    column gives none (each settlement's own window is taken)."""
    if "holders" not in carried.column_names:
        return {}
    return {r["source_id"]: (r["holders"] or [r["window_key"]], r["eb_id"] is not None)
            for r in carried.select(["source_id", "window_key", "holders", "eb_id"]).to_pylist()}


def standing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """history rows (one per window and hop) with each window's `status` as its figures stand now, later settlements
    folded in, so it does not depend on the order windows were run or re-run in (summary.status_from): `incomplete`
    as its run recorded (a read in part; only a re-run mends it), `loss` while a hop is over its threshold, `pending`
    while a hop has pending events, else `clean`. A window recorded before the state kept its thresholds keeps the
    status its run recorded. `recorded` (that status) and `exit_code` stay: what the run itself said."""
    windows: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        windows.setdefault(r["window_key"], []).append(r)
    for hops in windows.values():
        recorded = hops[0]["recorded"]
        status = recorded if any(h["threshold"] is None for h in hops) else summary.status_from(
            recorded == "incomplete", any(emission.over_threshold(h["lost"], h["loss_rate"], h["threshold"])
                                          for h in hops), any(h["pending"] > 0 for h in hops))
        for h in hops:
            h["status"] = status
    return rows


def _tables_it_lacks(con: duckdb.DuckDBPyConnection) -> None:
    """A state file opened read-only (`run --dry-run`, trace) is not migrated: the tables schema.sql makes that an
    older version's file lacks (the recovery journal) are made empty, as temporary tables of this connection."""
    kept = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
    for statement in statements(_q("schema").read_text()):
        made = re.match(r"\s*CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if made and made.group(1) not in kept:
            con.execute(statement.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE", 1))


@contextmanager
def _s3_copy(uri: str, aws: AwsConfig, write: bool) -> Iterator[tuple[Path, Callable[[], None] | None]]:
    """Download the state, yield a local copy and its upload (None for a reader), upload it back at the end. Writers
    hold a lock object beside it (`_s3_lock`), and each upload is conditional on the object being the one they
    downloaded or last uploaded: a writer whose lock was taken over unnoticed (paused past LOCK_STALE_S) fails
    instead of overwriting the state the other run wrote."""
    from .aws import make_client
    bucket, _, obj = uri[len("s3://"):].rstrip("/").partition("/")
    s3 = make_client("s3", aws)
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(_s3_lock(s3, bucket, obj + ".lock", uri)) if write else None
        # a download left at its deadline may still be writing into it: its removal must not turn the deadline's
        # error into a clean-up one
        with tempfile.TemporaryDirectory(prefix="reconcile-state-", ignore_cleanup_errors=True) as tmp:
            local = Path(tmp) / "state.duckdb"
            # one GET of the whole object, for readers too: ranged reads of an object a writer replaces meanwhile
            # mix two versions (or fail: HTTP 416); within [aws] read_deadline (botocore's timeouts are per read,
            # and a body trickled a byte at a time held the run, before any store was read, for good)
            seen = bounded(  # its ETag as downloaded, then as last uploaded
                lambda: _s3_download(s3, bucket, obj, local, uri), "reconcile-state-download",
                parse_duration(aws.read_deadline).total_seconds(), lambda: ReadDeadline(
                    f"The state {uri} did not download within [aws] read_deadline = {aws.read_deadline} (a proxy or "
                    f"gateway trickling its body?): left, nothing was read or written. Check [state] uri and the "
                    f"endpoint ([aws] endpoint_url, AWS_ENDPOINT_URL)."))
            if not write and not seen:
                raise NoState(f"No state at {uri}. Run `reconcile run` (or `demo`) with this state first, or check "
                                 f"[state] uri (or --state, RECONCILE_STATE).")

            def push() -> None:
                lock.ensure_held()
                wal = local.with_name(local.name + ".wal")
                if wal.exists() and wal.stat().st_size:
                    # a commit not folded into the file (no room for the CHECKPOINT): the upload would leave it out
                    raise StateError(f"The state {uri} could not fold its write-ahead log in (no room in the temporary "
                                     f"folder?): not uploaded, so it stays as it was. Free space there and re-run.")
                # within [aws] upload_deadline: an answer trickled after the commit held the finished run for good
                seen.update(bounded(lambda: _s3_upload(s3, bucket, obj, local, uri, seen.get("etag")),
                                    "reconcile-state-upload", parse_duration(aws.upload_deadline).total_seconds(),
                                    lambda: StateError(
                                        f"The state {uri} did not upload within [aws] upload_deadline = "
                                        f"{aws.upload_deadline}: "
                                        f"left, so the state there may lack what this command last recorded. "
                                        f"Check the endpoint ([aws] endpoint_url, AWS_ENDPOINT_URL), then re-run "
                                        f"the window.")))
            yield local, push if write else None
            if write:
                push()


def _s3_download(s3, bucket: str, obj: str, local: Path, uri: str) -> dict[str, str]:
    """The state object into `local` -> {"etag": its ETag}; {} when there is none yet."""
    from botocore.exceptions import ClientError
    try:
        got = s3.get_object(Bucket=bucket, Key=obj)
    except ClientError as e:
        if _code(e) == "NoSuchKey":
            return {}
        raise StateError(f"Cannot download the state {uri}: {_code(e)}. Check [state] uri (or --state) and that the "
                         f"credentials may s3:GetObject it.") from e
    with open(local, "wb") as f:
        for chunk in got["Body"].iter_chunks(1 << 20):
            f.write(chunk)
    return {"etag": got["ETag"]}


def _s3_upload(s3, bucket: str, obj: str, local: Path, uri: str, etag: str | None) -> dict[str, str]:
    """`local` over the state object, only if it is still the one with `etag` (or still absent) -> its new ETag. The
    object carries its SHA-256 (S3's checksum): when botocore retries a PUT whose answer was lost but which landed,
    the retry's condition fails on our own upload, which the checksum (or, where a store gives none, the ETag of a
    one-part upload: its MD5) tells from another run's."""
    from botocore.exceptions import ClientError
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    data = local.read_bytes()
    ours = base64.b64encode(hashlib.sha256(data).digest()).decode()
    md5 = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
    try:
        return {"etag": s3.put_object(Bucket=bucket, Key=obj, Body=data, ChecksumSHA256=ours, **cond)["ETag"]}
    except ClientError as e:
        if _code(e) in _TAKEN:
            try:
                there = s3.head_object(Bucket=bucket, Key=obj, ChecksumMode="ENABLED")
            except ClientError:
                there = {}
            checksum = there.get("ChecksumSHA256")
            if (checksum == ours) if checksum else there.get("ETag") == md5:
                return {"etag": there["ETag"]}  # the object is this upload
            raise StateError(f"The state {uri} was written by another run since this one read it (this run's lock "
                             f"was taken over: was the process paused?). Not uploaded, so that run's state stands; "
                             f"re-run the window.") from e
        raise


# --- the lock object beside an s3:// state (flock cannot reach it) ---------------------------------------------------

LOCK_REFRESH_S = 60.0  # a run rewrites its lock object this often ...
LOCK_STALE_S = 600.0  # ... so one not rewritten for this long belongs to a run that is gone
# How long letting a lock go waits for a rewrite in flight: an answer a gateway trickles held it for good.
LOCK_RELEASE_WAIT_S = 30.0
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (Linux /proc), so a pid reused by another process is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime (proc(5)); fields after `(comm)` start at 3


def _alive(holder: dict[str, Any]) -> bool | None:
    """Whether the process holding a lock still runs; None when it ran elsewhere (another host or pid namespace)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname() or \
            holder.get("pid_ns") != _pid_namespace():
        return None
    ticks = _start_ticks(pid)
    if ticks is not None and holder.get("started") is not None:
        return ticks == holder["started"]  # another start time: the pid was reused
    try:  # no /proc entry (gone, or hidden by hidepid), or no /proc at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _code(e: Exception) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "")


class _S3Lock:
    """The lock object `<state>.lock`, created with a conditional put (If-None-Match: *) so that of two runs
    starting together only one gets it, and rewritten every LOCK_REFRESH_S (If-Match: our ETag) while the run lives.

    A run killed with SIGKILL cannot delete it. The next run takes it over (If-Match: the dead run's ETag, so of two
    runs doing that only one wins) when its holder ran on this host and is gone (pid and start time), or when it
    has not been rewritten for LOCK_STALE_S (S3's own clock: the object's Last-Modified against the response Date).
    """

    def __init__(self, s3, bucket: str, key: str, uri: str):
        self.s3, self.bucket, self.key, self.uri = s3, bucket, key, uri
        self.body = json.dumps(_holder()).encode()
        self.etag = self._take()
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="reconcile-state-lock", daemon=True)
        self._thread.start()

    def _put(self, **cond) -> str:
        return self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self.body, **cond)["ETag"]

    SETTING = "[state] uri (or --state, RECONCILE_STATE)"  # where the location came from, for errors

    def _refused(self, e: Exception, action: str) -> StateError:
        """A store refusing the lock (no bucket, no permission): the key to check, not botocore's error."""
        return StateError(f"Cannot {action} the lock s3://{self.bucket}/{self.key}: {_code(e)}. Check {self.SETTING} "
                          f"and that the credentials may s3:GetObject and s3:PutObject it.")

    def _take(self) -> str:
        from botocore.exceptions import ClientError
        for _ in range(3):
            try:
                return self._put(IfNoneMatch="*")
            except ClientError as e:
                if _code(e) not in _TAKEN:
                    raise self._refused(e, "write") from e
            try:
                got = self.s3.get_object(Bucket=self.bucket, Key=self.key)
            except ClientError as e:
                if _code(e) == "NoSuchKey":
                    continue  # released meanwhile
                raise self._refused(e, "read") from e
            other = _parse_holder(got["Body"].read())
            now = parsedate_to_datetime(got["ResponseMetadata"]["HTTPHeaders"]["date"])
            age = (now - got["LastModified"]).total_seconds()
            alive = _alive(other)
            if alive is False or (alive is None and age > LOCK_STALE_S):
                logger.warning("taking over the lock %s of a run that is gone (%s, lock last written %.0f s ago)",
                               self.key, _describe(other), age)
                try:
                    return self._put(IfMatch=got["ETag"])
                except ClientError as e:
                    if _code(e) not in _TAKEN:
                        raise
                    continue  # another run took it over first
            raise StateInUse(
                f"State {self.uri} is in use by {_describe(other)} (its lock {self.uri}.lock was written {age:.0f} s "
                f"ago). Wait for it to finish; a lock its run stops rewriting is taken over after "
                f"{LOCK_STALE_S / 60:.0f} minutes (at once on the same host).")
        raise StateInUse(f"Other runs keep taking the lock {self.uri}.lock. Wait for them to finish, then re-run.")

    def _refresh(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        while not self._done.wait(LOCK_REFRESH_S):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except ClientError as e:
                if _code(e) in _TAKEN:
                    self.lost = True
                    logger.error("the lock %s was taken over by another run; this run will not upload the state",
                                 self.key)
                    return
                logger.warning("could not rewrite the lock %s (%s); trying again in %.0f s", self.key, e,
                               LOCK_REFRESH_S)
            except BotoCoreError as e:
                logger.warning("could not rewrite the lock %s (%s); trying again in %.0f s", self.key, e,
                               LOCK_REFRESH_S)

    LOST = "The state was not uploaded; re-run the window."  # what losing the lock left undone

    def ensure_held(self) -> None:
        if self._done.is_set():  # released: an upload left at its deadline (interrupt.bounded) finishes nothing
            raise StateError(f"The lock s3://{self.bucket}/{self.key} was released: nothing more is written.")
        if self.lost:
            raise StateError(f"This run lost the lock s3://{self.bucket}/{self.key} to another (it was not rewritten "
                             f"for {LOCK_STALE_S / 60:.0f} minutes: was the process paused?). {self.LOST}")

    def release(self) -> None:
        from botocore.exceptions import ClientError
        self._done.set()
        self._thread.join(LOCK_RELEASE_WAIT_S)
        rewriting = self._thread.is_alive()  # a rewrite that has not answered: deleted regardless
        if self.lost:
            return
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except ClientError as e:
            if _code(e) not in _TAKEN:
                raise
            if rewriting:  # the rewrite landed first: the lock stays, ours, for the next run to take over
                logger.warning("the lock %s was being rewritten when this run let it go (no answer in %.0f s) and "
                               "stays: the next run takes it over at once on this host, after %.0f minutes elsewhere",
                               self.key, LOCK_RELEASE_WAIT_S, LOCK_STALE_S / 60)


@contextmanager
def _s3_lock(s3, bucket: str, key: str, uri: str) -> Iterator[_S3Lock]:
    lock = _S3Lock(s3, bucket, key, uri)
    try:
        yield lock
    finally:
        lock.release()
