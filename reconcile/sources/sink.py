"""What landed: Spark's output of the Kinesis stream (PIPELINE.md §6), as the `sink` ledger.

Parquet or JSON lines under a prefix with hive partitions `dt=YYYY-MM-DD/hr=HH`. The EventBridge id comes from a
column (`partitionKey` by default: EventBridge's Kinesis target uses the event id as partition key) or a JSON path
inside `data`; `data` itself is parsed by events.py for the Zendesk fields. When Spark's file-sink commit log
(`_spark_metadata/`) exists, rows of files it does not list are marked `committed = false`: those are files of
failed or retried batches that plain readers see too.
"""

from __future__ import annotations

import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import ledger
from ..aws import list_files, store_error
from ..config import AwsConfig, MatchConfig, SinkConfig
from ..errors import ConfigError, SourceError
from ..ledger import SourceResult
from ..window import Window
from . import events, rawtext

NAME, HOP = "sink", "sink"
WORKERS = 4
GROUP_BYTES = 16 << 20  # stored bytes of files parsed together: few queries, bounded memory
METADATA = "_spark_metadata"
FORMATS = {"parquet": (".parquet",), "json": (".json", ".jsonl", ".json.gz", ".jsonl.gz")}
_PART = re.compile(r"^(dt|hr)=(.+)$")


@dataclass
class _File:
    info: pafs.FileInfo
    where: str  # s3://bucket/key or the local path: what a person opens
    committed: bool | None


def read(cfg: SinkConfig, window: Window, aws: AwsConfig, out: Path | None = None,
         match: MatchConfig | None = None) -> SourceResult:
    """Read Spark's output into a SourceResult named "sink" (hop "sink").

    Missing or denied stores raise SourceError; a corrupt file or a file without the id column (schema drift)
    rejects that file's rows with the reason and makes the result incomplete. With `out`, the ledger is streamed
    into that Parquet file group by group (events.LedgerOut) instead of being held in memory. `match`: events.parse's
    id and source rules.
    """
    if not cfg.uri:
        raise ConfigError("sink.uri is not set. Pass --sink-uri s3://bucket/prefix (or a local folder).")
    if cfg.format not in FORMATS:
        raise ConfigError(f"Unknown sink.format {cfg.format!r}. Use one of: {', '.join(FORMATS)}.")
    if cfg.id_path:
        _check_path(cfg.id_path)
    fs, root, files = list_files(cfg.uri, aws, f"Spark output {cfg.uri}", "--sink-uri")
    scheme = "s3://" if cfg.uri.startswith("s3://") else ""
    rel = {f.path: posixpath.relpath(f.path, root) if f.path != root else f.base_name for f in files}

    meta = [f for f in files if rel[f.path].split("/")[0] == METADATA]
    committed_names = _commit_log(fs, meta, scheme) if meta else None

    lo, hi = window.read_start - timedelta(hours=1), window.read_end
    data: list[_File] = []
    skipped_partitions: set[str] = set()
    skipped_files = 0
    for f in files:
        parts = rel[f.path].split("/")
        if any(p.startswith(("_", ".")) for p in parts) or not f.base_name.endswith(FORMATS[cfg.format]):
            continue
        span = _partition_span(parts[:-1])
        if span is not None and (span[1] <= lo or span[0] > hi):
            skipped_partitions.add("/".join(parts[:-1]))
            skipped_files += 1
            continue
        committed = None if committed_names is None else f.base_name in committed_names
        data.append(_File(f, scheme + f.path, committed))

    reader = _read_parquet if cfg.format == "parquet" else _read_json

    def read_group(group: list[_File]):
        """Read a group of files and parse their rows in one events.parse call (files are small: one per
        micro-batch and writer, and one DuckDB query per file would cost more than the parsing)."""
        pieces = [_read_file(fs, f, cfg, reader) for f in group]
        rows = [p[0] for p in pieces if p[0] is not None]
        rejs = [p[1] for p in pieces]
        led_ = None
        if rows:
            led_, rej_ = _parse(pa.concat_tables(rows, promote_options="permissive"), cfg, match)
            rejs.append(rej_)
        return led_, rejs, [p[2] for p in pieces if p[2]], [p[3] for p in pieces]

    out_ledger = events.LedgerOut(out)
    rejs, problems, fingerprints = [], [], []
    try:
        # Groups are parsed in the pool (both cores), at most 2 x WORKERS groups in flight (bounded memory),
        # and their ledgers written in file order.
        with ThreadPoolExecutor(WORKERS) as pool:
            for led_, rej_, prob_, fp_ in events.ordered_map(pool, read_group, _groups(data), 2 * WORKERS):
                if led_ is not None:
                    out_ledger.add(led_)
                rejs += rej_
                problems += prob_
                fingerprints += fp_
        led = out_ledger.result()
    except BaseException:
        out_ledger.abort()
        raise
    rej = pa.concat_tables(rejs) if rejs else ledger.REJECT_SCHEMA.empty_table()
    uncommitted = [f.where for f in data if f.committed is False]
    details = {
        "format": cfg.format, "uri": cfg.uri, "files": len(data), "records": out_ledger.rows, "rejected": rej.num_rows,
        "partitions_skipped": len(skipped_partitions), "files_skipped": skipped_files,
        "commit_log": committed_names is not None, "uncommitted_files": uncommitted,
        "id": f"path {cfg.id_path}" if cfg.id_path else f"column {cfg.id_column}",
        "bad_files": len(problems),
    }
    if not data:
        problems_note = (f"No {cfg.format} files under {cfg.uri} overlap the window. Check --sink-uri and "
                         f"--sink-format.")
        details["note"] = problems_note
    return SourceResult(
        name=NAME, ledger=led, rejects=rej, complete=not problems, problems=problems,
        fingerprints=fingerprints, details=details,
    )


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


def _partition_span(dirs: list[str]) -> tuple[datetime, datetime] | None:
    """[start, end) of a `dt=/hr=` partition, or None when the path carries no readable dt."""
    vals = dict(m.groups() for m in map(_PART.match, dirs) if m)
    try:
        day = datetime.strptime(unquote(vals["dt"])[:10], "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except (KeyError, ValueError):
        return None
    if "hr" in vals and vals["hr"].isdigit():
        start = day + timedelta(hours=int(vals["hr"]))
        return start, start + timedelta(hours=1)
    return day, day + timedelta(days=1)


_COMMIT_SQL = """
SELECT json_extract_string(line, '$.path') AS path, coalesce(json_extract_string(line, '$.action'), 'add') AS action
FROM log WHERE line <> 'v1' AND json_valid(line) AND line <> ''
"""


def _commit_log(fs: pafs.FileSystem, meta: list[pafs.FileInfo], scheme: str) -> set[str]:
    """Basenames of the files Spark's commit log lists as added (and not later deleted).

    Log files are named by batch (`0`, `1`, ..., `9.compact`); each holds a `v1` line then one JSON line per file.
    """
    logs = [f for f in meta if re.fullmatch(r"\d+(\.compact)?", f.base_name)]
    logs.sort(key=lambda f: int(f.base_name.split(".")[0]))
    texts = []
    for f in logs:
        try:
            with fs.open_input_stream(f.path, compression=None) as s:
                texts.append(s.read())
        except OSError as e:
            raise SourceError(f"Cannot read Spark's commit log {scheme + f.path}: {e}. Check the object, or remove "
                              f"the _spark_metadata folder from what is read.") from e
    if not texts:
        return set()
    lines = rawtext.lines(b"\n".join(t.rstrip(b"\n") for t in texts) + b"\n")
    con = events.connect()
    try:
        con.register("log", pa.table({"line": lines}))
        entries = con.sql(_COMMIT_SQL).to_arrow_table().to_pylist()  # one entry per data file, not per row
    finally:
        con.close()
    added: set[str] = set()
    for e in entries:  # in batch order, so a later delete wins
        name = posixpath.basename(unquote(e["path"] or ""))
        if e["action"] == "delete":
            added.discard(name)
        else:
            added.add(name)
    return added


def _read_file(fs, f: _File, cfg: SinkConfig, reader):
    fp = {"key": f.where, "size": f.info.size, "mtime": f.info.mtime.isoformat() if f.info.mtime else None}
    try:
        with fs.open_input_file(f.info.path) as fh:
            meta = fh.metadata() or {}
            if meta.get("ETag"):
                fp["etag"] = meta["ETag"].decode().strip('"')
            cols, drift = reader(fh, f, cfg)
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        err = store_error(e, f"Spark output file {f.where}", "--sink-uri") if isinstance(e, OSError) else None
        if err is not None and "denied" in str(err):
            raise err from e
        reason = f"cannot read {cfg.format} file {f.where}: {e}"
        return (None, ledger.rejects_table(NAME, [f.where], [reason], [None]),
                f"{f.where} is not readable {cfg.format} ({e}). Check the file (a failed write?) and whether "
                f"--sink-format is right; its rows are missing from the sink.", fp)
    n = cols["n"]
    refs = rawtext.refs(f.where, n, "#", first=0)
    if drift:
        rej = ledger.rejects_table(NAME, refs, pa.array([drift] * n, pa.string()), _as_text(cols.get("data"), n))
        return None, rej, f"{f.where}: {drift}", fp
    rows = pa.table({"data": cols["data"], "eb_id": cols.get("id", pa.nulls(n, pa.string())), "source_ref": refs,
                     "sequence_number": cols["seq"], "observed_at": cols["arrival"],
                     "committed": pa.array([f.committed] * n, pa.bool_())})
    return rows, ledger.REJECT_SCHEMA.empty_table(), None, fp


def _parse(rows: pa.Table, cfg: SinkConfig, match: MatchConfig | None = None) -> tuple[pa.Table, pa.Table]:
    extra = {"source_id": rows["source_ref"], "sequence_number": rows["sequence_number"],
             "observed_at": rows["observed_at"], "committed": rows["committed"]}
    return events.parse(rows["data"], rows["source_ref"], hop=HOP, source=NAME, extra=extra,
                        eb_id=None if cfg.id_path else rows["eb_id"], id_path=cfg.id_path,
                        no_id_reason=(f"no EventBridge id at {cfg.id_path} in data" if cfg.id_path else
                                      f"no EventBridge id in column {cfg.id_column}"), match=match)


def _as_text(arr, n: int) -> pa.Array:
    """The rows' data as text for a reject (nulls when it is not UTF-8)."""
    if arr is None:
        return pa.nulls(n, pa.string())
    try:
        return pc.utf8_slice_codeunits(arr.cast(pa.string()), 0, ledger.RAW_LIMIT)
    except pa.ArrowInvalid:
        return pa.nulls(n, pa.string())


def _drift(cfg: SinkConfig, where: str, columns: list[str]) -> str:
    return (f"column {cfg.id_column!r} not found in {where} (columns: {', '.join(columns)}); the schema changed. "
            f"Pass --id-column NAME for the column holding the EventBridge id, or --id-path $.id to read it from data")


def _read_parquet(fh, f: _File, cfg: SinkConfig):
    pf = pq.ParquetFile(fh)
    names = pf.schema_arrow.names
    n = pf.metadata.num_rows
    want = [c for c in ("data", cfg.id_column, "sequenceNumber", "approximateArrivalTimestamp") if c in names]
    t = pf.read(columns=list(dict.fromkeys(want)), use_threads=False)
    cols = {"n": n, "data": t["data"] if "data" in names else None}
    if "data" not in names:
        return cols, (f"column 'data' not found in {f.where} (columns: {', '.join(names)}); the schema changed. "
                      f"Check the Spark job's output schema")
    if not cfg.id_path:
        if cfg.id_column not in names:
            return cols, _drift(cfg, f.where, names)
        cols["id"] = t[cfg.id_column].cast(pa.string())
    cols["seq"] = t["sequenceNumber"].cast(pa.string()) if "sequenceNumber" in names else pa.nulls(n, pa.string())
    if "approximateArrivalTimestamp" in names:
        arr = t["approximateArrivalTimestamp"]
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(pa.timestamp("ms", tz="UTC"), safe=False)
        elif not pa.types.is_string(arr.type):
            arr = arr.cast(pa.string())
        cols["arrival"] = arr
    else:
        cols["arrival"] = pa.nulls(n, ledger.TS)
    return cols, None


# Spark's JSON writer may keep `data` as an object, as JSON text, or base64 (a binary column): accept all three.
# try(): a line that is not JSON yields nulls here and a reject in events.parse, not an error for the whole file.
_JSON_SQL = """
WITH v AS (
    SELECT try(json_extract_string(line, $id)) AS id, try(json_type(line, '$.data')) AS data_type,
           try(json_extract_string(line, '$.data')) AS data_text, try(json_extract(line, '$.data')) AS data_json,
           try(json_extract_string(line, '$.sequenceNumber')) AS seq,
           try(json_extract_string(line, '$.approximateArrivalTimestamp')) AS arrival
    FROM rows
)
SELECT id, seq, arrival,
       CASE WHEN data_type <> 'VARCHAR' THEN data_json::VARCHAR
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
    cols = {"n": n, "data": t["data"], "seq": t["seq"], "arrival": t["arrival"]}
    if not cfg.id_path:
        if n and t["id"].null_count == n:
            return cols, _drift(cfg, f.where, keys)
        cols["id"] = t["id"]
    return cols, None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'
