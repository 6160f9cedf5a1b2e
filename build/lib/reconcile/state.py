"""The run-state file: run history and the pending events that later runs settle (a DuckDB file).

A run holds a lock beside the file for its whole length, so a second run on the same state fails fast instead of
corrupting it. An `s3://` location is downloaded before the run and uploaded after it.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from . import resources
from .config import AwsConfig
from .engine import execute_file
from .errors import StateError
from .window import Window

STATE_QUERIES = resources.query_file("state")
CARRIED_SCHEMA = pa.schema([
    ("window_key", pa.string()), ("source_id", pa.string()), ("zendesk_key", pa.string()), ("eb_id", pa.string()),
    ("ticket_id", pa.int64()), ("kind", pa.string()), ("event_time", pa.timestamp("ms", tz="UTC")),
    ("position", pa.int64()),
])


def _q(name: str) -> Path:
    return STATE_QUERIES / f"{name}.sql"


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            holder = json.loads(lock.read_text())
        except (OSError, ValueError):
            holder = {}
        raise StateError(
            f"State file {path} is in use by another run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')} since {holder.get('since', '?')}). Wait for it to finish; if that run is "
            f"dead, remove {lock} and re-run.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}, f)
        yield
    finally:
        lock.unlink(missing_ok=True)


@dataclass
class State:
    con: duckdb.DuckDBPyConnection
    path: Path

    @classmethod
    @contextmanager
    def open(cls, location: str | Path, aws: AwsConfig | None = None, *, write: bool = True) -> Iterator["State"]:
        """Open (creating if needed) the state at a local path or s3:// URI, locked for writers."""
        location = str(location)
        if location.startswith("s3://"):
            with _s3_copy(location, aws or AwsConfig(), write) as local:
                with cls.open(local, write=write) as st:
                    yield st
            return
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not write:
            if not path.exists():
                raise StateError(f"No state file at {path}. Run `reconcile run` (or `demo`) first, or pass --state.")
            with _lock(path):
                con = duckdb.connect(str(path), read_only=True)
                try:
                    yield cls(con, path)
                finally:
                    con.close()
            return
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
                con.execute("CHECKPOINT")
            finally:
                con.close()

    def carried(self, window: Window) -> pa.Table:
        """Open pending events of windows that start before this one."""
        t = execute_file(self.con, _q("carried"), {"window_start": window.start, "window_key": window.key}
                         ).to_arrow_table()
        return t.cast(CARRIED_SCHEMA)

    def record(self, window: Window, summary: dict[str, Any], out_dir: Path, pending: pa.Table,
               settlements: pa.Table) -> None:
        """Replace this window's run, its hop figures, its pending events and the settlements it made."""
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
            con.register("new_pending", pending)
            con.execute("INSERT INTO pending SELECT ?, source_id, zendesk_key, eb_id, ticket_id, kind, event_time, "
                        "position FROM new_pending", [window.key])
            con.register("new_settlements", settlements)
            con.execute("INSERT OR REPLACE INTO settlements SELECT window_key, source_id, ?, verdict, eb_id, "
                        "lateness_s FROM new_settlements WHERE verdict <> 'pending'", [window.key])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            for name in ("new_pending", "new_settlements"):
                try:
                    con.unregister(name)
                except duckdb.Error:
                    pass

    def history(self) -> list[dict[str, Any]]:
        return execute_file(self.con, _q("history"), {}).to_arrow_table().to_pylist()

    def run_dirs(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT out_dir FROM runs ORDER BY window_start DESC").fetchall()]


@contextmanager
def _s3_copy(uri: str, aws: AwsConfig, write: bool) -> Iterator[Path]:
    """Download the state, yield a local copy, upload it back; writers hold a lock object beside it.

    The lock is created with a conditional put (If-None-Match: *), so of two runs starting together only one gets it.
    """
    from botocore.exceptions import ClientError

    from .aws import filesystem, make_client
    fs, key = filesystem(uri, aws)
    bucket, _, obj = key.partition("/")
    s3 = make_client("s3", aws) if write else None
    if s3 is not None:
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode()
        try:
            s3.put_object(Bucket=bucket, Key=obj + ".lock", Body=holder, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "PreconditionFailed":
                raise
            raise StateError(f"State {uri} is in use by another run (lock {uri}.lock exists). Wait for it to "
                             f"finish; if that run is dead, delete {uri}.lock and re-run.") from e
    try:
        with tempfile.TemporaryDirectory(prefix="reconcile-state-") as tmp:
            local = Path(tmp) / "state.duckdb"
            info = fs.get_file_info(key)
            if info.type == pafs.FileType.File:
                pafs.copy_files(key, str(local), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
            yield local
            if write:
                pafs.copy_files(str(local), key, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=fs)
    finally:
        if s3 is not None:
            s3.delete_object(Bucket=bucket, Key=obj + ".lock")
