"""What landed: Spark's output of the Kinesis stream (PIPELINE.md §6), as the `sink` ledger.

Parquet or JSON lines under a prefix with hive partitions `dt=YYYY-MM-DD/hr=HH`. The EventBridge id comes from a
column (`partitionKey` by default: EventBridge's Kinesis target uses the event id as partition key) or a JSON path
inside `data`; `data` itself is parsed by events.py for the Zendesk fields. When Spark's file-sink commit log
(`_spark_metadata/`, read by sparklog.py) exists, files it does not list are leftovers of failed or retried batches
that plain readers see too, or entries the sink's `retention` option expired from the compacted log (their files
stay): both are named, and their rows read as evidence marked `committed = false`. Whether such a row counts as a
copy is the engine's rule (queries/rules.sql sink_copies, by [sink] honour_commit_log).
"""

from __future__ import annotations

import logging
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import ledger
from ..aws import list_files, store_error
from ..config import AwsConfig, MatchConfig, SinkConfig
from ..errors import ConfigError
from ..ledger import SourceResult
from ..window import Window, parse_duration
from . import events, explained, rawtext, sparklog

logger = logging.getLogger(__name__)

NAME, HOP = "sink", "sink"
WORKERS = 4
GROUP_BYTES = 16 << 20  # stored bytes of files parsed together: few queries, bounded memory
DELTA_LOG = "_delta_log"  # a Delta table's transaction log (Delta Lake's PROTOCOL.md), which this reader does not apply
PRUNE_MARGIN = timedelta(days=1)  # partitions read beyond the read range: covers any session time zone set wrong
LEFTOVERS_SHOWN = 20
FORMATS = {"parquet": (".parquet",), "json": (".json", ".jsonl", ".json.gz", ".jsonl.gz")}
_PART = re.compile(r"^(dt|hr)=(.+)$")


@dataclass
class _File:
    info: pafs.FileInfo
    where: str  # s3://bucket/key or the local path: what a person opens
    committed: bool | None


def read(cfg: SinkConfig, window: Window, aws: AwsConfig, out: Path | None = None,
         match: MatchConfig | None = None,
         bus_ids: Callable[[], explained.BusIds | None] | None = None) -> SourceResult:
    """Read Spark's output into a SourceResult named "sink" (hop "sink").

    Missing or denied stores raise SourceError; a corrupt file, or a file whose schema drifted (a column missing or of
    another type), rejects that file's rows with the file and the column named and makes the result incomplete. With
    a commit log, files it does not list (crash leftovers, or entries the retention expired) are named in the
    details and read with `committed = false`, and one that cannot be read counts like any other: an expired entry's
    file is as much evidence as a committed one (on S3 a crashed task leaves no file cut short). With `out`, the
    ledger is streamed into that Parquet file group by group (events.LedgerOut) instead of being held in memory.
    `match`: events.parse's id and source rules. `bus_ids`: waits for the bus log and gives its (id, payload digest) pairs when it was read
    whole (None otherwise); rows whose bytes it parsed are not parsed again ([sink] parse_payloads, explained.py).
    """
    if not cfg.uri:
        raise ConfigError("[sink] uri is not set. Set it in the config or with --set sink.uri=s3://bucket/prefix (or a local folder).")
    if cfg.format not in FORMATS:
        raise ConfigError(f"Unknown sink.format {cfg.format!r}. Use one of: {', '.join(FORMATS)}.")
    if cfg.id_path:
        _check_path(cfg.id_path)
    tz = zone(cfg.partition_time_zone)
    fs, root, files = list_files(cfg.uri, aws, f"Spark output {cfg.uri}", "[sink] uri")
    scheme = "s3://" if cfg.uri.startswith("s3://") else ""
    try:
        found, looked = sparklog.find(fs, root, files), None
    except sparklog.LogUnknown as e:  # a folder above that could not be looked into: a log there is not ruled out
        found, looked = None, (f"{e}: which files Spark committed is unknown, and every file would count as "
                               f"committed. Allow listing there, set [sink] uri to Spark's output folder, or set "
                               f"[sink] honour_commit_log = false.")
    log = sparklog.read(fs, found[0], found[1], scheme) if found else None
    notes = []
    # A commit log no read applies: every file would count as committed (sink_copies), whatever the log says of it
    unapplied = []
    nested = _log_folders(files, root, sparklog.FOLDER) if not found else []
    if nested:
        # Spark's readers read an output folder by its own log; read from above, every file would count as committed
        unapplied.append(f"[sink] uri {cfg.uri} is above Spark's output folder(s) with their own commit log (first: "
                         f"{scheme + nested[0]}), which this read cannot apply: every file would count as committed. "
                         f"Set [sink] uri = {scheme + nested[0]}, or [sink] honour_commit_log = false.")
    delta = _log_folders(files, root, DELTA_LOG) if not found else []
    if not found and not delta:  # a uri below the table's root (a partition of it) is no way around its log
        try:
            delta = [up] if (up := sparklog.above(fs, root, DELTA_LOG, "a Delta table's log")) else []
        except sparklog.LogUnknown as e:
            looked = looked or (f"{e}: whether Spark's output is a Delta table, whose log this read does not apply, "
                                f"is unknown. Allow listing there, set [sink] uri to Spark's output folder, or set "
                                f"[sink] honour_commit_log = false.")
    if delta:
        # A Delta table's files are committed by its own log: a failed write's files, and those a compaction or an
        # overwrite removed, stay in the folder and would each count as a copy (a false delivery or duplicate).
        unapplied.append(f"Spark's output {scheme + delta[0]} is a Delta table ({DELTA_LOG}/, no {sparklog.FOLDER}/), "
                         f"whose log this read does not apply: every file would count as committed, a failed "
                         f"write's and those a compaction or overwrite removed included. Point [sink] uri at the "
                         f"Spark job's file-sink output (PIPELINE.md §6), or set [sink] honour_commit_log = false to "
                         f"count every file.")
    if found and found[0] != root:
        notes.append(f"[sink] uri {cfg.uri} is below Spark's output folder {scheme + found[0]}: read its commit log "
                     f"{log.folder} from there. Set [sink] uri = {scheme + found[0]} to read the whole output.")
        logger.warning("%s", notes[-1])
    if looked is not None:
        unapplied.append(looked)
    if not found and not unapplied and cfg.honour_commit_log and any(
            f.base_name.startswith(SPARK_DATA_PREFIX) for f in files):
        # said, not made incomplete: a job writing with foreachBatch has no log (its failed writes stay in _temporary)
        notes.append(f"No {sparklog.FOLDER}/ at or above [sink] uri {cfg.uri}: every file counts as committed, a "
                     f"failed batch's leftovers included. If the job writes with Spark's file sink, its commit log is "
                     f"missing (a lifecycle rule, a copy that skipped `_` folders?): restore it. A job writing with "
                     f"foreachBatch has none: set [sink] honour_commit_log = false to say so.")
        logger.warning("%s", notes[-1])

    # Partition values come from the Spark job's session time zone; read a day more on each side so that a zone set
    # wrong (or a job that partitions by another clock) can never prune an in-window row away.
    lo, hi = window.sink_read_start - timedelta(hours=1) - PRUNE_MARGIN, window.sink_read_end + PRUNE_MARGIN
    listed: list[pafs.FileInfo] = []
    skipped_partitions: set[str] = set()
    skipped_files = 0
    every: list[str] = []  # every file, pruned or not, relative to the log's folder
    other_format: list[pafs.FileInfo] = []  # files in the window's partitions that are no [sink] format file
    for f in files:
        parts = (posixpath.relpath(f.path, root) if f.path != root else f.base_name).split("/")
        if any(map(hidden, parts)):
            continue
        if log:
            every.append(posixpath.relpath(f.path, log.root))
        if not f.base_name.endswith(FORMATS[cfg.format]):
            if not _pruned(parts[:-1], tz, lo, hi):
                other_format.append(f)
            continue
        if _pruned(parts[:-1], tz, lo, hi):
            skipped_partitions.add("/".join(parts[:-1]))
            skipped_files += 1
            continue
        listed.append(f)
    # Committed files the listing lacks (a lifecycle rule, a partial copy, a delete): their rows are missing, and
    # Spark's own readers fail on such a log. Those in partitions outside the window do not matter here.
    # Those outside a uri set below the output folder were never listed: their rows are as missing from this read.
    missing, outside_uri = [], []
    for entry, rel in log.unlisted(every) if log else []:
        below_uri = not posixpath.relpath(posixpath.join(log.root, rel), root).startswith("..")
        # its partition read off the whole entry (its short name may lack the dt= folder when depths differ)
        if not _pruned(entry.split("/")[:-1], tz, lo, hi):
            (missing if below_uri else outside_uri).append(rel)
    in_log = log.lists([posixpath.relpath(f.path, log.root) for f in listed]) if log else [None] * len(listed)
    # A committed file of another size than Spark recorded was cut or rewritten after the commit: rows may be gone
    # that its remaining bytes do not show (a JSON file cut at a line end reads whole, and so does a rewrite).
    resized = log.resized([(posixpath.relpath(f.path, log.root), f.size) for f, flag in zip(listed, in_log)
                           if flag]) if log else []
    data: list[_File] = []
    leftovers: list[str] = []
    for f, flag in zip(listed, in_log):
        if flag is False:
            leftovers.append(scheme + f.path)
        if flag is not False or f.size:  # a 0-byte file outside the log is a crashed task's: it holds no rows
            data.append(_File(f, scheme + f.path, flag))

    reader = _read_parquet if cfg.format == "parquet" else _read_json
    bus, payloads = _payload_rule(cfg, bus_ids)

    def read_group(group: list[_File]):
        """Read a group of files and parse their rows in one events.parse call (files are small: one per
        micro-batch and writer, and one DuckDB query per file would cost more than the parsing)."""
        pieces = [_read_file(fs, f, cfg, reader) for f in group]
        rows = [p[0] for p in pieces if p[0] is not None]
        rejs = [p[1] for p in pieces]
        led_, skipped_ = None, 0
        if rows:
            led_, rej_, skipped_ = _parse(pa.concat_tables(rows, promote_options="permissive"), cfg, match, bus)
            rejs.append(rej_)
        return led_, rejs, [p[2] for p in pieces if p[2]], [p[3] for p in pieces], skipped_

    out_ledger = events.LedgerOut(out)
    rejs, problems, fingerprints, skipped = [], [], [], 0
    try:
        # Groups are parsed in the pool (both cores), at most 2 x WORKERS groups in flight (bounded memory),
        # and their ledgers written in file order.
        with ThreadPoolExecutor(WORKERS) as pool:
            for led_, rej_, prob_, fp_, skipped_ in events.ordered_map(pool, read_group, _groups(data), 2 * WORKERS):
                if led_ is not None:
                    out_ledger.add(led_)
                rejs += rej_
                problems += prob_
                fingerprints += fp_
                skipped += skipped_
        led = out_ledger.result()
    except BaseException:
        out_ledger.abort()
        raise
    rej = pa.concat_tables(rejs) if rejs else ledger.REJECT_SCHEMA.empty_table()
    log_problems = log.problems if log else unapplied
    if log:  # what the log says was committed
        unread = [f for f, flag in zip(other_format, log.lists([posixpath.relpath(f.path, log.root)
                                                               for f in other_format])) if flag]
        which = "Spark's commit log lists as committed"
    else:  # no log to say: every non-empty file named as Spark names its data files holds rows
        unread = [f for f in other_format if f.base_name.startswith(SPARK_DATA_PREFIX) and f.size]
        which = f"named as Spark's data files ({SPARK_DATA_PREFIX}*; no commit log says which are committed)"
    if unread:
        problems.append(f"{len(unread):,} file(s) {which} are not {cfg.format} files this reader takes "
                        f"({', '.join(FORMATS[cfg.format])}; first: {scheme + unread[0].path}): their rows were not "
                        f"read. Check [sink] format and the Spark job's compression option.")
    if resized:
        rel, recorded, found_size = resized[0]
        problems.append(f"{len(resized):,} committed file(s) are not the size Spark's commit log ({log.folder}) "
                        f"recorded (first: {rel}, {recorded:,} bytes committed, {found_size:,} bytes now): rows may "
                        f"be missing from them. Check the bucket (a partial copy, a cut or a rewrite?).")
    if missing:
        problems.append(f"{len(missing):,} file(s) Spark's commit log ({log.folder}) lists as committed are not in "
                        f"the listing of {cfg.uri} (first: {missing[0]}): their rows are missing from the sink, and "
                        f"Spark's own readers fail on this output. Check the bucket (a lifecycle rule, a partial "
                        f"copy or a delete?).")
    if outside_uri:
        problems.append(f"{len(outside_uri):,} file(s) Spark's commit log ({log.folder}) lists as committed, in "
                        f"partitions the window's read range covers, are outside [sink] uri {cfg.uri} (first: "
                        f"{outside_uri[0]}): their rows were not read. Set [sink] uri = {scheme + log.root} (the "
                        f"partitions outside the read range are skipped without being read).")
    fingerprints += log.fingerprints if log else []
    details = {
        "format": cfg.format, "uri": cfg.uri, "files": len(data), "records": out_ledger.rows, "rejected": rej.num_rows,
        "partitions_skipped": len(skipped_partitions), "files_skipped": skipped_files,
        "partition_time_zone": cfg.partition_time_zone,
        "commit_log": log is not None, "honour_commit_log": cfg.honour_commit_log,
        "uncommitted_files": [f.where for f in data if f.committed is False],
        **({"unexpired_files": _unexpired(fingerprints, log, parse_duration(cfg.retention))}
           if cfg.retention and log else {}),
        "leftover_files": len(leftovers), "leftover_names": leftovers[:LEFTOVERS_SHOWN],
        "committed_missing": len(missing), "committed_missing_names": missing[:LEFTOVERS_SHOWN],
        "committed_outside_uri": len(outside_uri),
        "committed_resized": len(resized), "committed_resized_names": [r[0] for r in resized[:LEFTOVERS_SHOWN]],
        "committed_not_read": len(unread),
        "id": f"path {cfg.id_path}" if cfg.id_path else f"column {cfg.id_column}",
        "bad_files": len(problems),
        "payloads_parsed": payloads, "payloads_not_parsed": skipped,
        "rows_as_columns": sum(fp.get("rows_as_columns", 0) for fp in fingerprints),
    }
    if log:
        details |= {"commit_log_folder": log.folder, "latest_batch": log.latest_batch, "compact": log.compact,
                    "log_files_read": len(log.read)}
    if leftovers:
        details["leftovers"] = (
            f"{len(leftovers):,} file(s) not in Spark's commit log: leftovers of failed or retried batches, or entries "
            f"the sink's retention expired, which Spark's readers ignore. Their rows were read as evidence (0-byte "
            f"ones hold none): "
            + {"expired": "a copy of a Kinesis record a committed file holds is not counted; an event found only "
                          "there landed, and is shown as outside the commit log ([sink] retention is set).",
               "leftover": "no copy there counts: with no [sink] retention no entry expires, so these are leftovers "
                           "Spark's readers never see, and an event found only there is lost after the bus (if the "
                           "job's file sink sets a retention option, set [sink] retention to it).",
               "counted": "every copy counts ([sink] honour_commit_log = false)."}[cfg.outside_log])
    if not data:
        details["note"] = (f"No {cfg.format} files under {cfg.uri} overlap the window. Check [sink] uri and "
                           f"[sink] format.")
    return SourceResult(
        # A log Spark cannot read leaves the committed set unknown: that matters only when it decides what is read.
        name=NAME, ledger=led, rejects=rej, complete=not problems and not (log_problems and cfg.honour_commit_log),
        problems=log_problems + problems + notes, fingerprints=fingerprints, details=details,
    )


def _log_folders(files: list[pafs.FileInfo], root: str, log_folder: str) -> list[str]:
    """The folders under `root` that hold a commit log named `log_folder` (the folder above it), sorted."""
    found = set()
    for f in files:
        parts = posixpath.relpath(f.path, root).split("/")[:-1]
        if log_folder in parts:
            found.add(posixpath.normpath(posixpath.join(root, *parts[:parts.index(log_folder)])))
    return sorted(found)


def hidden(name: str) -> bool:
    """A file or folder name Spark's readers leave out (InMemoryFileIndex.shouldFilterOutPathName): `_x` and `.x`,
    not a partition folder `_x=v`, and a copy in progress `x._COPYING_`. (Parquet's `_metadata` summary files,
    which Spark lists for the footers only, hold no rows: left out here too.)"""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"sink.partition_time_zone {name!r} is not a time zone ({e}). Use an IANA name such as "
                          f"UTC or America/New_York: the Spark job's spark.sql.session.timeZone.") from e


def _groups(files: list[_File]) -> list[list[_File]]:
    """Consecutive files in groups of about GROUP_BYTES stored bytes."""
    groups: list[list[_File]] = []
    size = GROUP_BYTES
    for f in files:
        if size >= GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += f.info.size or 0
    return groups


def _check_path(path: str) -> None:
    try:
        duckdb.sql("SELECT json_extract_string('{}', $p)", params={"p": path}).fetchall()
    except duckdb.Error as e:
        raise ConfigError(f"sink.id_path {path!r} is not a JSON path ({e}). Use a path like $.id or $.detail.id.")


def _pruned(dirs: list[str], zone: ZoneInfo, lo: datetime, hi: datetime) -> bool:
    """Is a file in these partition folders outside [lo, hi] (so not read)?"""
    span = _partition_span(dirs, zone)
    return span is not None and (span[1] <= lo or span[0] > hi)


def _partition_span(dirs: list[str], zone: ZoneInfo) -> tuple[datetime, datetime] | None:
    """[start, end) in UTC of a `dt=/hr=` partition written in `zone`, or None when the path carries no readable dt.
    Values are unescaped (Spark writes `:` in a partition value as `%3A`)."""
    vals = dict(m.groups() for m in map(_PART.match, dirs) if m)
    try:
        day = datetime.strptime(unquote(vals["dt"])[:10], "%Y-%m-%d").replace(tzinfo=zone)
    except (KeyError, ValueError):
        return None
    hour = unquote(vals.get("hr", ""))
    if hour.isdigit():
        start = day + timedelta(hours=int(hour))
        # An hour is an hour in UTC too (a DST fold only shifts it, and the prune margin covers that).
        return start.astimezone(timezone.utc), (start + timedelta(hours=1)).astimezone(timezone.utc)
    return day.astimezone(timezone.utc), (day + timedelta(days=1)).astimezone(timezone.utc)


# How Spark names the data files a job writes (part-00000-<uuid>.c000.<codec>.<format>): without a commit log, a file
# so named that the reader does not take holds rows nobody read.
SPARK_DATA_PREFIX = "part-"


def _read_file(fs, f: _File, cfg: SinkConfig, reader):
    fp = {"key": f.where, "size": f.info.size, "mtime": f.info.mtime.isoformat() if f.info.mtime else None}
    try:
        with fs.open_input_file(f.info.path) as fh:
            meta = fh.metadata() or {}
            if meta.get("ETag"):
                fp["etag"] = meta["ETag"].decode().strip('"')
            cols, drift = reader(fh, f, cfg)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError, ValueError) as e:
        err = store_error(e, f"Spark output file {f.where}", "[sink] uri") if isinstance(e, OSError) else None
        if err is not None and "denied" in str(err):
            raise err from e
        reason = f"cannot read {cfg.format} file {f.where}: {e}"
        outside = (" It is not in Spark's commit log: a crashed task's leftover cut short (move it out of the output "
                   "once checked), or a file whose entry the sink's retention expired." if f.committed is False else "")
        return (None, ledger.rejects_table(NAME, [f.where], [reason], [None]),
                f"{f.where} is not readable {cfg.format} ({e}). Check the file (a failed write?) and whether "
                f"[sink] format is right; its rows are missing from the sink.{outside}", fp)
    n = cols["n"]
    if cols.get("as_columns"):
        fp["rows_as_columns"] = cols["as_columns"]  # how the file was read: its rows are the event (_row_json)
    refs = rawtext.refs(f.where, n, "#", first=0)
    if drift:
        rej = ledger.rejects_table(NAME, refs, pa.array([drift] * n, pa.string()), _as_text(cols.get("data"), n))
        return None, rej, f"{drift}. Its {n:,} row(s) were rejected (evidence/sink.rejects.parquet).", fp
    rows = pa.table({"data": cols["data"], "eb_id": cols.get("id", pa.nulls(n, pa.string())), "source_ref": refs,
                     "sequence_number": cols["seq"], "observed_at": cols["arrival"],
                     "committed": pa.array([f.committed] * n, pa.bool_())})
    if f.committed is False and n:  # the file was written after its newest row arrived (_unexpired)
        newest = pc.max(rows["observed_at"]).as_py()
        fp["newest_arrival"] = newest.isoformat() if newest is not None else None
    return rows, ledger.REJECT_SCHEMA.empty_table(), None, fp


def _unexpired(fingerprints: list[dict], log: sparklog.CommitLog, retention: timedelta) -> list[str]:
    """The files outside the commit log no compaction can have expired: Spark drops an entry only when it compacts
    the log, and only if the compaction comes more than the retention after the file was written
    (FileStreamSinkLog.shouldRetain). A file was written after its newest row arrived (Kinesis's arrival time, in the
    data: a copy of the bucket keeps it), and the latest compaction was at its compact's time or before (a copy makes
    that later, never earlier): a file whose newest row arrived after the latest compact less the retention, or with no
    compact at all, is a failed batch's leftover, never an expired entry. Any other file may be either."""
    cutoff = log.compacted_at - retention if log.compacted_at is not None else None
    return [fp["key"] for fp in fingerprints if "newest_arrival" in fp
            and (cutoff is None or fp["newest_arrival"] is None
                 or datetime.fromisoformat(fp["newest_arrival"]) > cutoff)]


def unexpired(details: dict) -> list[str]:
    """A sink read's files outside the commit log that its retention cannot have expired (queries/bus_events.sql
    counts their rows as no copy): none without [sink] retention, or from a run made before they were told apart."""
    return list(details.get("unexpired_files") or [])


def _payload_rule(cfg: SinkConfig, bus_ids) -> tuple[explained.BusIds | None, str]:
    """The bus log's (id, digest) pairs that spare parsing a payload (None: parse every one), and the rule as the
    details say it."""
    if cfg.parse_payloads == "all":
        return None, "all ([sink] parse_payloads = all)"
    if cfg.id_path:
        return None, f"all (the id is read from data: [sink] id_path = {cfg.id_path})"
    bus = bus_ids() if bus_ids else None
    if bus is None:
        return None, "all (no bus log read whole to explain a row)"
    return bus, ("all but those the bus log, read whole, parsed byte for byte under the same id (replays are "
                 "always parsed)")


def _parse(rows: pa.Table, cfg: SinkConfig, match: MatchConfig | None = None,
           bus: explained.BusIds | None = None) -> tuple[pa.Table, pa.Table, int]:
    """(ledger, rejects, rows whose payload was not parsed)."""
    extra = {"source_id": rows["source_ref"], "sequence_number": rows["sequence_number"],
             "observed_at": rows["observed_at"], "committed": rows["committed"]}
    known = explained.explained(rows["eb_id"], rows["data"], bus) if bus is not None else None
    led, rej = events.parse(rows["data"], rows["source_ref"], hop=HOP, source=NAME, extra=extra,
                            eb_id=None if cfg.id_path else rows["eb_id"], id_path=cfg.id_path,
                            no_id_reason=(f"no EventBridge id at {cfg.id_path} in data" if cfg.id_path else
                                          f"no EventBridge id in column {cfg.id_column}"), match=match,
                            explained=known)
    return led, rej, 0 if known is None else int(known.rows.sum())


def _as_text(arr, n: int) -> pa.Array:
    """The rows' data as text for a reject (nulls when it is not UTF-8, or of a type with no text form: a job that
    parsed `data` into a struct or a list)."""
    if arr is None:
        return pa.nulls(n, pa.string())
    try:
        return pc.utf8_slice_codeunits(arr.cast(pa.string()), 0, ledger.RAW_LIMIT)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(n, pa.string())


def _drift(cfg: SinkConfig, where: str, columns: list[str]) -> str:
    return (f"column {cfg.id_column!r} not found in {where} (columns: {', '.join(columns)}); the schema changed. "
            f"Set [sink] id_column to the column holding the EventBridge id, or [sink] id_path = '$.id' to read it "
            f"from data")


_TEXT = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_string, pa.types.is_large_string)


def _is(t: pa.DataType, *checks) -> bool:
    return any(c(t) for c in checks)


def _drifted(where: str, column: str, t: pa.DataType, expected: str, hint: str) -> str:
    return f"column {column!r} is {t} in {where}, expected {expected}; the schema changed. {hint}"


def _read_parquet(fh, f: _File, cfg: SinkConfig):
    """The file's columns in fixed types (data binary, id and sequence number text, arrival a UTC timestamp), or a
    drift naming the file and the column: files are parsed in groups, so one file's types must not reach the others."""
    # parquet-mr (Spark) writes page checksums: a flipped bit then fails the read (OSError: the read is not whole)
    # instead of silently changing an id into another or into none
    pf = pq.ParquetFile(fh, page_checksum_verification=True)
    schema = pf.schema_arrow
    names = schema.names
    n = pf.metadata.num_rows
    groups = sum(pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups))
    if n != groups or n < 0:  # a damaged footer: which count is true is unknown (the read's error makes it a reject)
        raise pa.ArrowInvalid(f"its footer says {n:,} rows and its row groups {groups:,}: the footer is damaged")
    # a job that parsed the Kinesis record into columns (PIPELINE.md §6) wrote the event's fields as the row's own:
    # no `data`, and `detail` (every EventBridge event has one) beside the Kinesis columns. The row is the event.
    as_columns = "data" not in names and "detail" in names
    if "data" not in names and not as_columns:
        return {"n": n, "data": None}, (f"column 'data' not found in {f.where} (columns: {', '.join(names)}), nor "
                                        f"the event's own fields (a 'detail' column); the schema changed. Check the "
                                        f"Spark job's output schema")
    types = {c: schema.field(c).type for c in names}
    want = [c for c in ("data", cfg.id_column, "sequenceNumber", "approximateArrivalTimestamp") if c in names]
    t = pf.read(columns=None if as_columns else list(dict.fromkeys(want)), use_threads=False)
    if t.num_rows != n:
        raise pa.ArrowInvalid(f"its footer says {n:,} rows and {t.num_rows:,} were read: the file is damaged")
    cols = {"n": n, "data": _row_json(t) if as_columns else t["data"], "as_columns": n if as_columns else 0}
    if not as_columns and not _is(types["data"], *_TEXT):
        return cols, _drifted(f.where, "data", types["data"], "binary or string (the Kinesis record)",
                              "Check the Spark job's output schema")
    cols["data"] = cols["data"].cast(pa.binary())
    if not cfg.id_path:
        if cfg.id_column not in names:
            return cols, _drift(cfg, f.where, names)
        if not _is(types[cfg.id_column], pa.types.is_string, pa.types.is_large_string):
            return cols, _drifted(f.where, cfg.id_column, types[cfg.id_column], "string (the EventBridge id)",
                                  "Set [sink] id_column to the column holding the EventBridge id, or [sink] "
                                  "id_path = '$.id' to read it from data")
        cols["id"] = t[cfg.id_column].cast(pa.string())
    cols["seq"] = pa.nulls(n, pa.string())
    if "sequenceNumber" in names:
        if not _is(types["sequenceNumber"], *_TEXT, pa.types.is_integer, pa.types.is_decimal):
            return cols, _drifted(f.where, "sequenceNumber", types["sequenceNumber"], "string",
                                  "Check the Spark job's output schema")
        cols["seq"] = t["sequenceNumber"].cast(pa.string())
    cols["arrival"] = pa.nulls(n, ledger.TS)
    if "approximateArrivalTimestamp" in names:
        arr, kind = t["approximateArrivalTimestamp"], types["approximateArrivalTimestamp"]
        try:
            if not _is(kind, pa.types.is_timestamp, pa.types.is_string, pa.types.is_large_string):
                raise pa.ArrowInvalid(kind)
            cols["arrival"] = arr.cast(ledger.TS, safe=False) if pa.types.is_timestamp(kind) else arr.cast(ledger.TS)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return cols, _drifted(f.where, "approximateArrivalTimestamp", kind, "a timestamp (or ISO-8601 text)",
                                  "Check the Spark job's output schema")
    return cols, None


def _row_json(t: pa.Table) -> pa.Array:
    """Each row as one JSON object, for rows that are the event (a job that parsed `data` into columns): events.parse
    reads the event's paths in it and nothing else. Spark's timestamps come out as DuckDB writes them
    (`2026-11-23 05:30:00`, UTC where the column has no zone: Parquet's instants), a time ledger.TIME_TEXT takes."""
    con = events.connect()
    try:
        con.register("event_row", t)
        return con.sql("SELECT to_json(event_row) FROM event_row").to_arrow_table().column(0)
    finally:
        con.close()


# Spark's JSON writer may keep `data` as an object, as JSON text, or base64 (a binary column): accept all three. A
# line without `data` but with `detail` is the event itself (the job parsed the record into columns).
# try(): a line that is not JSON yields nulls here and a reject in events.parse, not an error for the whole file.
_JSON_SQL = """
WITH v AS (
    SELECT line, try(json_extract_string(line, $id)) AS id, try(json_type(line, '$.data')) AS data_type,
           try(json_extract_string(line, '$.data')) AS data_text, try(json_extract(line, '$.data')) AS data_json,
           try(json_extract_string(line, '$.sequenceNumber')) AS seq,
           try(json_extract_string(line, '$.approximateArrivalTimestamp')) AS arrival,
           data_type IS NULL AND coalesce(try(json_exists(line, '$.detail')), false) AS as_columns
    FROM rows
)
SELECT id, seq, arrival, as_columns,
       CASE WHEN as_columns THEN line
            WHEN data_type <> 'VARCHAR' THEN data_json::VARCHAR
            WHEN starts_with(ltrim(data_text), '{') THEN data_text
            ELSE coalesce(try(decode(from_base64(data_text))), data_text) END AS data
FROM v
"""


def _read_json(fh, f: _File, cfg: SinkConfig):
    text, damage = rawtext.gunzip(fh.read())
    if damage:
        raise ValueError(damage)
    lines = rawtext.lines(text)
    con = events.connect()
    try:
        con.register("rows", pa.table({"line": lines}))
        t = con.sql(_JSON_SQL, params={"id": "$." + _quote(cfg.id_column)}).to_arrow_table()
        first = con.sql("SELECT try(json_keys(line)) FROM rows WHERE try(json_keys(line)) IS NOT NULL LIMIT 1")
        keys = next(iter(first.fetchall()), [[]])[0] or []
    finally:
        con.close()
    n = t.num_rows
    cols = {"n": n, "data": t["data"], "seq": t["seq"], "arrival": t["arrival"],
            "as_columns": pc.sum(t["as_columns"]).as_py() or 0}
    if not cfg.id_path:
        if n and t["id"].null_count == n:
            return cols, _drift(cfg, f.where, keys)
        cols["id"] = t["id"]
    return cols, None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'
