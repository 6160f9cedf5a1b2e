"""The collector's page cache: the export's pages through the day, at a local folder or an `s3://` prefix.

Same format as a run's pages dir (pages.py: `index.jsonl` + gzipped pages, each entry bound to the account URL and
query that produced it), plus `collector.json` (when its last request was sent, so the next collector keeps the
pacing). One writer at a time: the collector holds `collect.lock` — an flock in a folder, a lock object created with
a conditional put on S3 (reconcile/state.py's lock, taken over when its holder is gone). A second collector exits
with CacheBusy (exit 75, "try again later"), writing nothing.

Runs never write the cache: `seed` copies the chain of pages that covers a read range into the run's own (empty)
pages dir, checking each page's sha256, and the walk goes on from there (export.py). A copied page proves the listing
by Zendesk's `end_time` only, never by the collector's clock: unless a copied page's end_time already passes the
read range, the run asks Zendesk at least once itself. A cache bound to another account URL, a cache that starts
after the range, or a gap in it only means the run fetches what the cache cannot prove.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import orjson
import pyarrow.fs as pafs

from ... import aws as aws_mod
from ...config import AwsConfig
from ...errors import ReconcileError, SourceError, StateInUse
from ...state import _S3Lock, _describe, _holder, _parse_holder  # the one lock implementation (state.py)
from .pages import INDEX, bound_elsewhere, chain, listed_until, write_atomic

logger = logging.getLogger(__name__)

LOCK = "collect.lock"
COLLECTOR = "collector.json"
BUSY_EXIT = 75  # EX_TEMPFAIL (sysexits.h): another collector is at work; try again later
READERS = 8  # pages downloaded at once when a run seeds from an s3:// cache


class CacheBusy(ReconcileError):
    """Another collector holds the cache's lock."""

    exit_code = BUSY_EXIT


class PageCache:
    """The cache at `uri` (a folder or s3://bucket/prefix): read pages and the index, write them (holding `lock`)."""

    def __init__(self, uri: str, aws: AwsConfig):
        self.uri = uri.rstrip("/")
        self.aws = aws
        self.s3 = uri.startswith("s3://")
        self.fs, self.root = aws_mod.filesystem(self.uri, aws)
        self._held: _CacheS3Lock | None = None  # the S3 lock while a collector holds it (lock())
        if not self.s3:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read(self, name: str) -> bytes | None:
        """A file's bytes, or None when it is not there."""
        try:
            with self.fs.open_input_stream(self._path(name), compression=None) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            if "NoSuchKey" in str(e) or "does not exist" in str(e) or "not found" in str(e).lower():
                return None
            raise aws_mod.store_error(e, f"Zendesk page cache {self.uri}", "[zendesk] cache") or SourceError(
                f"Could not read {name} from the Zendesk page cache {self.uri}: {e}. Check [zendesk] cache.") from e

    def write(self, name: str, data: bytes) -> None:
        """Replace a file whole: a reader sees the old bytes or the new, never a part (rename; an S3 put)."""
        if not self.s3:
            write_atomic(Path(self._path(name)), data)
            return
        if self._held is not None:  # a collector whose S3 lock another took over writes nothing more
            self._held.ensure_held()
        try:
            with self.fs.open_output_stream(self._path(name), compression=None) as f:
                f.write(data)
        except OSError as e:
            raise aws_mod.store_error(e, f"Zendesk page cache {self.uri}", "[zendesk] cache") or SourceError(
                f"Could not write {name} to the Zendesk page cache {self.uri}: {e}. Check [zendesk] cache and that "
                f"the IAM policy allows s3:PutObject there.") from e

    def names(self) -> set[str]:
        """The names of the files the cache holds (one listing: a page lost from the middle of the chain is seen)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError as e:
            raise aws_mod.store_error(e, f"Zendesk page cache {self.uri}", "[zendesk] cache") or SourceError(
                f"Could not list the Zendesk page cache {self.uri}: {e}. Check [zendesk] cache and that the IAM "
                f"policy allows s3:ListBucket there.") from e
        return {i.base_name for i in infos if i.type == pafs.FileType.File}

    def index(self) -> tuple[list[dict], int]:
        """(index entries up to the first torn line, number of lines in the file)."""
        raw = self.read(INDEX) or b""
        lines = raw.splitlines()
        entries = []
        for line in lines:
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                break
        return entries, len(lines)

    def save_index(self, entries: list[dict], appended: int) -> None:
        """Write the index: the last `appended` entries added to a folder's file (an fsync'd append), or all of it
        rewritten (an S3 object, or after an entry changed: appended < 0)."""
        if self.s3 or appended < 0:
            self.write(INDEX, b"".join(orjson.dumps(e) + b"\n" for e in entries))
        elif appended:
            with open(self._path(INDEX), "ab") as f:
                f.write(b"".join(orjson.dumps(e) + b"\n" for e in entries[-appended:]))
                f.flush()
                os.fsync(f.fileno())

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `collect.lock` for the block; CacheBusy at once when another collector holds it."""
        if self.s3:
            bucket, _, prefix = self.root.partition("/")
            key = f"{prefix}/{LOCK}" if prefix else LOCK
            lock = _CacheS3Lock(aws_mod.make_client("s3", self.aws), bucket, key, self.uri)
            self._held = lock
            try:
                yield
                lock.ensure_held()
            finally:
                self._held = None
                lock.release()
            return
        with _flock(Path(self._path(LOCK)), self.uri):
            yield


@contextmanager
def _flock(path: Path, uri: str) -> Iterator[None]:
    """An flock on `path` (the kernel drops it with the process, however it ends), naming its holder inside."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(uri, _holder_in(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _holder_in(fd: int, wait: float = 1.0) -> dict:
    """Who holds the flock on `fd`: the holder writes itself in right after taking it, so an empty file is read again
    for up to `wait` seconds (a collector that started a moment before would otherwise go unnamed)."""
    deadline = time.monotonic() + wait
    while True:
        holder = _parse_holder(os.pread(fd, 4096, 0))
        if holder.get("pid") or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def _busy(uri: str, holder: dict) -> CacheBusy:
    who = _describe(holder).replace("another run", "another collector")
    return CacheBusy(f"The Zendesk page cache {uri} is being collected by {who}. This collector stops without "
                     f"writing anything (exit {BUSY_EXIT}); the next scheduled one resumes where that one ends.")


class _CacheS3Lock(_S3Lock):
    """state.py's S3 lock object, saying "another collector" when it is held."""

    SETTING = "[zendesk] cache"
    LOST = "It wrote nothing more; the next collector resumes where the cache ends."

    def _take(self) -> str:
        try:
            return super()._take()
        except StateInUse:  # a store refusing the lock (no bucket, no permission) is no busy cache: it is raised
            try:
                holder = _parse_holder(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
            except Exception:  # noqa: BLE001 - released meanwhile, or unreadable: the message names no holder
                holder = {}
            raise _busy(self.uri, holder) from None


# --- a run's side: read-only -----------------------------------------------------------------------------------------


def seed(uri: str, aws: AwsConfig, pages_dir: Path, base: str, scope: str, start_time: int, stop_at: int) -> dict:
    """Copy into an empty `pages_dir` the cache's pages that list audits from `start_time` on (up to the first page
    that covers `stop_at`), each checked against its sha256. What was used, or why not, for the run's details."""
    out = {"uri": uri, "used": False, "pages": 0}
    index = pages_dir / INDEX
    if index.exists() and index.stat().st_size > 0:
        return {**out, "why": "the pages dir already holds saved pages"}
    try:
        cache = PageCache(uri, aws)
        entries, _ = cache.index()
    except (ReconcileError, OSError) as e:
        logger.warning("Zendesk page cache %s could not be read (%s); the whole window is fetched", uri, e)
        return {**out, "why": f"unreadable: {e}"}
    foreign = next((e for e in entries if bound_elsewhere(e, base, scope)), None)
    if foreign is not None:
        logger.warning("Zendesk page cache %s holds pages of %s, not %s: not used; the whole window is fetched", uri,
                       str(foreign.get("url"))[:200] if isinstance(foreign, dict) else "?", base)
        return {**out, "why": "bound to another account URL or query"}
    entries = chain(entries)
    first = max((i for i, e in enumerate(entries) if e["start_time"] <= start_time), default=None)
    if first is None:
        return {**out, "why": "it starts after the window" if entries else "it is empty"}
    wanted = []
    for e in entries[first:]:
        wanted.append(e)
        if e["end_time"] >= stop_at:  # Zendesk's own time: the collector's clock proves nothing (below)
            break
    copied: list[dict] = []
    with ThreadPoolExecutor(READERS if cache.s3 else 1) as pool:
        blobs = pool.map(lambda e: cache.read(e["file"]) if isinstance(e.get("file"), str) else None, wanted)
        try:
            for e, data in zip(wanted, blobs):
                if data is None or hashlib.sha256(data).hexdigest() != e.get("sha256"):
                    logger.warning("Zendesk page cache %s: %s is missing or changed; fetching from its start_time "
                                   "%s", uri, e.get("file"), e["start_time"])
                    break
                n = len(copied) + 1
                # An end-of-stream page proves the listing up to its read's now − 60 s, that now being the
                # collector's clock (`as_of`): one running ahead would claim minutes Zendesk had not listed. Copied,
                # the page proves only what Zendesk's end_time says; past it, the walk asks Zendesk by this run's
                # clock. (The collector's time stays in the entry, as `collector_as_of`.)
                page = {**{k: v for k, v in e.items() if k != "as_of"}, "collector_as_of": e.get("as_of"), "page": n,
                        "file": f"page-{n:05d}.json.gz"}
                write_atomic(pages_dir / page["file"], data)
                copied.append(page)
        except ReconcileError as err:  # the cache stopped answering: what was copied stands, the rest is fetched
            logger.warning("Zendesk page cache %s could not be read further (%s); fetching the rest", uri, err)
    write_atomic(index, b"".join(orjson.dumps(e) + b"\n" for e in copied))
    if copied:
        # as times a person reads (the report shows this dict as it is): how far the copied pages list, against
        # where the read ends (the run fetched the rest)
        out.update(used=True, pages=len(copied), listed_until=_utc(listed_until(copied[-1])), read_until=_utc(stop_at))
    return out


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lag(entries: list[dict], now: float) -> tuple[float | None, float | None]:
    """(listed_until, seconds behind `now`) of a cache's chain; (None, None) when it is empty."""
    entries = chain(entries)
    if not entries:
        return None, None
    until = listed_until(entries[-1])
    return until, max(0.0, now - until)


def last_request(cache: PageCache) -> float | None:
    """Unix time of the previous collector's last request (collector.json), or None."""
    raw = cache.read(COLLECTOR)
    try:
        value = json.loads(raw or b"{}").get("last_request_at")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def note_request(cache: PageCache, at: float) -> None:
    cache.write(COLLECTOR, json.dumps({"last_request_at": at}).encode())

