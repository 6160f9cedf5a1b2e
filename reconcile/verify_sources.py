"""`reconcile verify --against-sources`: HEAD the live objects a run's manifest fingerprints (never their data) and
list what changed or vanished since the run."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


from .config import AwsConfig
from .window import parse_time


@dataclass(frozen=True)
class SourceChange:
    source: str
    uri: str
    status: str  # changed | vanished | unchecked
    what: str

    def __str__(self) -> str:
        return f"{self.source} {self.uri}: {self.status} ({self.what})"


def _object(fp: dict[str, Any]) -> dict[str, Any] | None:
    """A fingerprint as {uri, size, etag, last_modified, version_id}; sources may name the location `key` and the
    time `mtime` (pyarrow's names). None for inputs that are not objects (API pages, queues, log groups)."""
    uri = fp.get("uri") or fp.get("key")
    if not isinstance(uri, str) or not uri:
        return None
    return {"uri": uri, "size": fp.get("size"), "etag": fp.get("etag"),
            "last_modified": fp.get("last_modified") or fp.get("mtime"), "version_id": fp.get("version_id")}


def _same_second(a: Any, b: datetime | None) -> bool:
    if a is None or b is None:
        return True
    try:
        return abs((parse_time(a) - b).total_seconds()) < 1
    except Exception:  # noqa: BLE001 - an unreadable recorded time cannot prove a change
        return True


def _changes(was: dict[str, Any], size, etag, last_modified, version_id) -> list[str]:
    out = []
    if was["size"] is not None and size != was["size"]:
        out.append(f"size {was['size']:,} -> {size:,}")
    if was["etag"] and etag and etag.strip('"') != str(was["etag"]).strip('"'):
        out.append(f"ETag {was['etag']} -> {etag.strip(chr(34))}")
    if was["version_id"] and version_id != was["version_id"]:
        out.append(f"VersionId {was['version_id']} -> {version_id}")
    if not _same_second(was["last_modified"], last_modified):
        out.append(f"LastModified {was['last_modified']} -> {last_modified.isoformat()}")
    return out


def _check_s3(client, source: str, was: dict[str, Any]) -> SourceChange | None:
    from .aws import error_code
    import botocore.exceptions
    bucket, _, key = was["uri"][len("s3://"):].partition("/")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return SourceChange(source, was["uri"], "vanished", f"HEAD: {code}")
        return SourceChange(source, was["uri"], "unchecked", f"HEAD failed: {code}")
    except botocore.exceptions.BotoCoreError as e:
        return SourceChange(source, was["uri"], "unchecked", f"HEAD failed: {e}")
    changed = _changes(was, head.get("ContentLength"), head.get("ETag"), head.get("LastModified"),
                       head.get("VersionId"))
    return SourceChange(source, was["uri"], "changed", "; ".join(changed)) if changed else None


def _check_local(source: str, was: dict[str, Any]) -> SourceChange | None:
    try:
        st = os.stat(was["uri"])
    except FileNotFoundError:
        return SourceChange(source, was["uri"], "vanished", "no such file")
    except OSError as e:
        return SourceChange(source, was["uri"], "unchecked", str(e))
    changed = _changes(dict(was, etag=None), st.st_size, None, datetime.fromtimestamp(st.st_mtime, timezone.utc),
                       None)
    return SourceChange(source, was["uri"], "changed", "; ".join(changed)) if changed else None


@dataclass
class SourceCheck:
    checked: int = 0
    changes: list[SourceChange] = field(default_factory=list)
    not_objects: dict[str, int] = field(default_factory=dict)  # per source: fingerprints that are not objects


def check_sources(manifest: dict[str, Any], aws: AwsConfig) -> SourceCheck:
    """HEAD every S3 object (stat every local file) the run read, and list those that changed or vanished."""
    result = SourceCheck()
    objects = []
    for entry in manifest.get("inputs", []):
        for fp in entry.get("fingerprints") or []:
            was = _object(fp) if isinstance(fp, dict) else None
            if was is None:
                result.not_objects[entry["source"]] = result.not_objects.get(entry["source"], 0) + 1
            else:
                objects.append((entry["source"], was))
    client = None
    if any(was["uri"].startswith("s3://") for _, was in objects):
        from .aws import make_client
        client = make_client("s3", aws)

    def one(item):
        source, was = item
        return _check_s3(client, source, was) if was["uri"].startswith("s3://") else _check_local(source, was)

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = list(pool.map(one, objects))
    result.checked = len(objects)
    result.changes = [c for c in found if c is not None]
    return result
