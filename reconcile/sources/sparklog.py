"""Spark's file-sink commit log (`<output>/_spark_metadata/`), read the way Spark's own readers read it.

Facts from Spark's CompactibleFileStreamLog / FileStreamSinkLog (PIPELINE.md §6):
- one log file per micro-batch, named by batch id (`0`, `1`, ...); its first line is the version (`v1`), then one
  JSON object per file the batch wrote (`path`, `size`, `modificationTime`, ..., `action`: "add" | "delete");
- every compactInterval batches (batch N with (N + 1) % interval == 0) Spark writes `N.compact` instead: all entries
  so far, minus those the sink's `retention` option expired; older log files are then deleted after a delay, so
  leftovers may linger;
- a reader takes the latest batch id, the latest compact file at or before it, and the batch files after that
  compact (getAllValidBatches). A missing batch in that range, a wrong version line or a line that is not an entry
  makes Spark's own reader fail;
- `path` is a URI: partition values Spark escaped in the directory name (`:` -> `%3A`) come out escaped again
  (`%253A`); decoding the URI once gives the name as stored.
A data file the log does not list is invisible to Spark's readers: a failed or retried batch's leftover (0-byte part
files of a crashed task included) or an entry the retention expired.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from ..errors import SourceError
from . import events, rawtext

FOLDER = "_spark_metadata"
VERSION = 1  # FileStreamSinkLog.VERSION: a newer log is one this reader does not know
_BATCH = re.compile(r"^(\d+)(\.compact)?$")
_PARENTS = 4  # how far above [sink] uri to look for the commit log (dt=/hr= and a few more levels)


@dataclass
class CommitLog:
    folder: str  # the `_spark_metadata` folder read (as a person opens it)
    root: str  # its parent: the sink's output folder (filesystem path), what entry paths are relative to
    read: list[str] = field(default_factory=list)  # log files read, in batch order
    latest_batch: int | None = None
    compact: str | None = None  # the compact file read, if any
    compacted_at: datetime | None = None  # when it was written (its mtime): the latest compaction, when entries expire
    entries: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # decoded paths listed as added
    sizes: pa.Array = field(default_factory=lambda: pa.array([], pa.int64()))  # their `size` (bytes; null: none)
    problems: list[str] = field(default_factory=list)  # the log cannot be trusted: Spark's readers fail on it
    fingerprints: list[dict] = field(default_factory=list)  # the log files read: inputs of the run like data files

    def lists(self, rels: list[str]) -> list[bool]:
        """For each data file path relative to `root`: does the log list it? Entry URIs are matched on their last
        components (the log may name the bucket as s3a:// or a local path as file://)."""
        if not rels:
            return []
        depths = sorted({r.count("/") + 1 for r in rels})
        con = events.connect()
        try:
            con.register("entries", pa.table({"path": self.entries}))
            con.register("depths", pa.table({"depth": pa.array(depths, pa.int64())}))
            tails = con.sql(_TAILS_SQL).to_arrow_table()["rel"]
        finally:
            con.close()
        return pc.is_in(pa.array(rels, pa.string()), tails).to_pylist()

    def resized(self, files: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
        """Of the (path relative to `root`, size) of files the log lists, those whose size is not the one its entry
        recorded (SinkFileStatus.size, the finished file's length): (path, recorded, found). Matched as lists()
        matches; an entry without a size is not compared."""
        if not files or not len(self.entries):
            return []
        depths = sorted({r.count("/") + 1 for r, _ in files})
        con = events.connect()
        try:
            con.register("entries", pa.table({"path": self.entries, "size": self.sizes}))
            con.register("depths", pa.table({"depth": pa.array(depths, pa.int64())}))
            con.register("listed", pa.table({"rel": pa.array([r for r, _ in files], pa.string()),
                                             "size": pa.array([n for _, n in files], pa.int64())}))
            return [tuple(r) for r in con.sql(_RESIZED_SQL).fetchall()]
        finally:
            con.close()

    def unlisted(self, rels: list[str]) -> list[tuple[str, str]]:
        """The files the log lists as added that are none of `rels` (every data file the listing holds, relative to
        `root`), matched on their last components as lists() matches them: (the decoded entry, its name as as many
        last components as most listed files have; the whole entry when the listing holds none)."""
        if not len(self.entries):
            return []
        depths = [r.count("/") + 1 for r in rels]
        shown = max(set(depths), key=depths.count) if depths else None
        con = events.connect()
        try:
            con.register("entries", pa.table({"path": self.entries}))
            con.register("depths", pa.table({"depth": pa.array(sorted(set(depths)), pa.int64())}))
            con.register("listed", pa.table({"rel": pa.array(rels, pa.string())}))
            found = con.sql(_UNLISTED_SQL, params={"shown": shown}).fetchall()
        finally:
            con.close()
        return [(path, rel) for path, rel in found]


# Entries none of whose tails (at the depths of the listed files) is a listed file, by their tail at $shown components.
_UNLISTED_SQL = """
WITH tails AS (
    SELECT path, array_to_string(list_slice(string_split(path, '/'), -depth, -1), '/') AS rel FROM entries, depths
)
SELECT path, coalesce(array_to_string(list_slice(string_split(path, '/'), -$shown, -1), '/'), path) AS rel
FROM entries
WHERE path NOT IN (SELECT path FROM tails WHERE rel IN (SELECT rel FROM listed))
ORDER BY rel
"""

# Listed files whose size differs from every size the log recorded for an entry with their tail.
_RESIZED_SQL = """
WITH tails AS (
    SELECT size, array_to_string(list_slice(string_split(path, '/'), -depth, -1), '/') AS rel FROM entries, depths
    WHERE size IS NOT NULL
)
SELECT l.rel, min(t.size), any_value(l.size) FROM listed l JOIN tails t USING (rel)
GROUP BY l.rel HAVING NOT bool_or(t.size = l.size)
ORDER BY l.rel
"""

_TAILS_SQL = """
SELECT DISTINCT array_to_string(list_slice(string_split(path, '/'), -depth, -1), '/') AS rel FROM entries, depths
"""

# One row per log line: version lines checked, entries parsed, and for each path the last action in batch order wins
# (FileStreamSinkLog: "a file is visible only if it appears in the sink log and its action is not delete").
_LOG_SQL = """
CREATE OR REPLACE TEMP TABLE parsed AS
SELECT file_no, line_no, line,
       CASE WHEN line_no = 1 THEN NULL ELSE try(json_extract_string(line, '$.path')) END AS path,
       CASE WHEN line_no = 1 THEN NULL ELSE coalesce(try(json_extract_string(line, '$.action')), 'add') END AS action,
       CASE WHEN line_no = 1 THEN NULL ELSE try_cast(try(json_extract_string(line, '$.size')) AS BIGINT) END AS size
FROM log_lines
"""
_BAD_SQL = """
SELECT file_no, count(*) AS n, min(line_no) AS first_line FROM parsed
WHERE line_no > 1 AND line <> ''
  AND (path IS NULL OR action NOT IN ('add', 'delete') OR try(url_decode(path)) IS NULL)
GROUP BY file_no ORDER BY file_no
"""
_ADDED_SQL = """
SELECT try(url_decode(path)) AS path, arg_max(size, file_no * 4294967296 + line_no) AS size
FROM parsed WHERE try(url_decode(path)) IS NOT NULL AND action IN ('add', 'delete')
GROUP BY path HAVING arg_max(action, file_no * 4294967296 + line_no) = 'add'
"""


class LogUnknown(Exception):
    """A folder above the uri could not be looked into for a commit log (denied, or the store failed)."""


def find(fs: pafs.FileSystem, root: str, files: list[pafs.FileInfo]) -> tuple[str, list[pafs.FileInfo]] | None:
    """(the output folder, its log files) when `root` or a folder above it holds `_spark_metadata`, else None (no
    such folder up to the bucket). Raises LogUnknown when a folder could not be looked into: an IAM policy that lets
    the job list only the uri's prefix, or a store failing past its retries, is no proof that there is no log."""
    meta = [f for f in files if posixpath.relpath(f.path, root).split("/")[0] == FOLDER]
    if meta:
        return root, meta
    up = above(fs, root, FOLDER, "Spark's commit log")
    if up is None:
        return None
    try:
        listed = fs.get_file_info(pafs.FileSelector(posixpath.join(up, FOLDER)))
    except OSError as e:
        raise LogUnknown(f"Could not look for Spark's commit log in {posixpath.join(up, FOLDER)} ({e})") from e
    return up, [f for f in listed if f.type == pafs.FileType.File]


def above(fs: pafs.FileSystem, root: str, folder: str, what: str) -> str | None:
    """The nearest folder above `root` (up to _PARENTS levels) holding a folder named `folder` (a log: `what`), else
    None. Raises LogUnknown when a folder could not be looked into."""
    up = root
    for _ in range(_PARENTS):
        parent = posixpath.dirname(up)
        if parent in ("", "/") or parent == up:
            break
        up = parent
        try:
            info = fs.get_file_info(posixpath.join(up, folder))
        except OSError as e:
            raise LogUnknown(f"Could not look for {what} in {posixpath.join(up, folder)} ({e})") from e
        if info.type == pafs.FileType.Directory:
            return up
    return None


def read(fs: pafs.FileSystem, out_root: str, meta: list[pafs.FileInfo], scheme: str) -> CommitLog:
    """The files Spark's readers see, from the log files in `meta` (all files of `<out_root>/_spark_metadata`)."""
    log = CommitLog(folder=scheme + posixpath.join(out_root, FOLDER), root=out_root)
    batches: dict[int, dict[bool, pafs.FileInfo]] = {}
    for f in meta:  # .crc files, temp files and anything else beside the batches are not part of the log
        m = _BATCH.match(f.base_name)
        if m:
            batches.setdefault(int(m.group(1)), {})[bool(m.group(2))] = f
    if not batches:
        log.problems.append(f"{log.folder} holds no batch files: Spark's readers would see no committed file. "
                            f"Check the folder (a deleted log?), or set [sink] honour_commit_log = false to read "
                            f"every file as committed.")
        return log
    latest = max(batches)
    compacts = [b for b in batches if True in batches[b] and b <= latest]
    start = max(compacts) if compacts else 0
    log.latest_batch = latest
    chosen: list[pafs.FileInfo] = []
    present = sorted(b for b in batches if start <= b <= latest)
    for b in present:
        here = batches[b]
        chosen.append(here.get(True) if b == start and compacts else here.get(False) or here.get(True))
    # the batch ids between them that have no file, without walking the range: a stray file named like an epoch
    # second (1700000000) made that walk a list of billions
    gaps = [(a + 1, b) for a, b in zip([start - 1] + present, present + [latest + 1]) if b > a + 1]
    missing = [m for lo, hi in gaps for m in range(lo, min(hi, lo + 10))][:10]
    n_missing = sum(hi - lo for lo, hi in gaps)
    if compacts:
        log.compact = scheme + batches[start][True].path
        log.compacted_at = batches[start][True].mtime
    if n_missing:
        shown = ", ".join(map(str, missing)) + (f" ... ({n_missing:,} in all)" if n_missing > len(missing) else "")
        log.problems.append(
            f"{log.folder} lacks batch file(s) {shown} (latest batch {latest}, read from "
            f"{'compact ' + str(start) if compacts else 'batch 0'}): Spark's own readers fail on this log, and which "
            f"files those batches committed is unknown. Check the folder (a partial copy?).")
    texts = []
    for f in chosen:
        try:
            with fs.open_input_stream(f.path, compression=None) as s:
                texts.append(s.read())
        except OSError as e:
            raise SourceError(f"Cannot read Spark's commit log file {scheme + f.path}: {e}. Check the object and "
                              f"the permissions on {log.folder}.") from e
    log.read = [scheme + f.path for f in chosen]
    log.fingerprints = [{"key": scheme + f.path, "size": f.size, "mtime": f.mtime.isoformat() if f.mtime else None}
                        for f in chosen]
    _parse(log, chosen, texts, scheme)
    return log


def _parse(log: CommitLog, chosen: list[pafs.FileInfo], texts: list[bytes], scheme: str) -> None:
    parts = []
    for i, t in enumerate(texts):
        lines = rawtext.lines(t)
        n = len(lines)
        if n == 0 or lines[0].as_py() != "v1":
            first = lines[0].as_py()[:40] if n else "(empty file)"
            version = re.fullmatch(r"v(\d+)", first or "")
            what = (f"is version {first}, newer than the v{VERSION} this reader knows" if version
                    and int(version.group(1)) > VERSION else f"does not start with the version line v1 ({first!r})")
            log.problems.append(f"{scheme + chosen[i].path} {what}: Spark's own readers fail on it, and which files "
                                f"it commits is unknown. Check the file (a partial write?).")
            if n == 0:
                continue
        parts.append(pa.table({"file_no": pa.array(np.full(n, i, np.int64)),
                               "line_no": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                               "line": lines.cast(pa.string())}))
    if not parts:
        return
    con = events.connect()
    try:
        con.register("log_lines", pa.concat_tables(parts))
        con.execute(_LOG_SQL)
        for file_no, n, first_line in con.sql(_BAD_SQL).fetchall():
            log.problems.append(
                f"{n:,} line(s) of {scheme + chosen[file_no].path} (first: line {first_line}) are not commit entries "
                f"(JSON with a path that URL-decodes to text and action add/delete): the files those lines listed "
                f"are unknown, so some committed rows may be taken for crash leftovers. Check the file (a partial "
                f"write or a manual edit?).")
        added = con.sql(_ADDED_SQL).to_arrow_table()
        log.entries, log.sizes = added["path"].combine_chunks(), added["size"].combine_chunks()
    finally:
        con.close()
