"""A run's evidence bundle leaves the machine: packed into one archive (`--bundle`), or published to S3 (`--out s3://`).

Publishing uploads every file first and manifest.json last: a run without its manifest is not a run, so a reader
never sees a half-written one. A prefix that already holds a run (its manifest.json exists) is never overwritten
unless `replace` is given; then its manifest goes first, so during the replacement the prefix holds no run at all.
"""

from __future__ import annotations

import gzip
import logging
import mimetypes
import tarfile
import zlib
from pathlib import Path

import botocore.exceptions
import orjson

from .atomic import replacing
from .aws import error_code, make_client
from .config import AwsConfig
from .errors import ConfigError, NotARun, ReportError, VerifyError
from .interrupt import bounded
from .runfolder import EVIDENCE, HISTORY_FILE, MANIFEST, listed_files
from .window import parse_duration

logger = logging.getLogger(__name__)


def is_s3(uri: str | Path | None) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def split(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b/ -> ("bucket", "a/b/") (the prefix empty or ending in /)."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ReportError(f"{uri!r} names no bucket. Give --out s3://bucket/prefix.")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


def _s3_failure(e: Exception, what: str) -> ReportError:
    code = error_code(e) or type(e).__name__
    return ReportError(f"Could not {what} ({code}: {e}). Check the bucket, the credentials (--profile) and that the "
                       f"IAM policy allows s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject there.")


def published(client, bucket: str, prefix: str) -> bool:
    """Whether a run lives at the prefix: its manifest.json exists."""
    try:
        client.head_object(Bucket=bucket, Key=prefix + MANIFEST)
        return True
    except botocore.exceptions.ClientError as e:
        if error_code(e) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _s3_failure(e, f"check s3://{bucket}/{prefix}{MANIFEST}") from e


def ensure_free(uri: str, aws: AwsConfig, replace: bool, window_key: str | None = None,
                stateless: bool = False) -> None:
    """Fail before any work when `uri` already holds a run and `replace` is not given, or holds the run of another
    window than `window_key` (which --replace would delete, while a state may still record it there), or (a run
    without a state: `stateless`) a run a state recorded, which the state would go on naming there."""
    bucket, prefix = split(uri)
    client = make_client("s3", aws)
    if not published(client, bucket, prefix):
        return
    if not replace:
        raise ReportError(f"A run is already published at {uri} (its {MANIFEST} exists). Use --replace to replace "
                          f"it, or choose another --out prefix.")
    if window_key is not None and (other := _window_of(client, bucket, prefix)) not in (None, window_key):
        raise ReportError(f"{uri} holds the run of another window ({other}); --replace replaces a run of the same "
                          f"window only. Give each window its own prefix, e.g. --out s3://{bucket}/runs/{{window}}.")
    if stateless and f"{EVIDENCE}/{HISTORY_FILE}" in _listed_files(client, bucket, prefix, uri):
        raise ReportError(f"{uri} holds a run a state recorded; a run without the state (--no-state) there would "
                          f"replace it while the state still names this prefix. Run with the state, or give --out "
                          f"another prefix.")


def _window_of(client, bucket: str, prefix: str) -> str | None:
    """The window key of the run published at the prefix (its manifest's), or None when it does not read as one."""
    from .window import key_of
    try:
        return key_of(orjson.loads(client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read())["window"])
    except botocore.exceptions.ClientError as e:
        raise _s3_failure(e, f"read s3://{bucket}/{prefix}{MANIFEST}") from e
    except (ValueError, KeyError, TypeError, ConfigError):
        return None


def bundle_files(run_dir: Path) -> list[str]:
    """The files of a finished run, as the manifest lists them (manifest.json itself not included)."""
    return listed_files(run_dir, "so there is nothing to publish")


PUBLISH_LOCK = "publish.lock"  # under the prefix while a run is being published there (state.py's S3 lock object)


def publish(run_dir: Path, uri: str, aws: AwsConfig, *, replace: bool = False) -> str:
    """Upload a finished run to s3://bucket/prefix: every file, then manifest.json, holding the prefix's
    publish.lock throughout. Returns the report's URI.

    Files go to keys the runs of a prefix share: two runs publishing there at once (a re-run beside the nightly run)
    left one run's manifest over the other's files, every digest wrong. The lock lets one publish; the other stops
    before its first upload, naming the holder."""
    bucket, prefix = split(uri)
    files = bundle_files(run_dir)
    client = make_client("s3", aws)
    lock = _lock(client, bucket, prefix, uri)
    try:
        # within [aws] upload_deadline: an answer trickled held the finished run for good (botocore's timeouts are
        # per read); a publish left there uploads no further file (the lock let go: ensure_held before each)
        bounded(lambda: _publish(client, run_dir, files, bucket, prefix, uri, replace, lock), "reconcile-publish",
                parse_duration(aws.upload_deadline).total_seconds(), lambda: ReportError(
                    f"{uri} was not published within [aws] upload_deadline = {aws.upload_deadline}: left, so no "
                    f"run is there unless its {MANIFEST} was put as the deadline passed (`reconcile verify {uri}` "
                    f"tells). Check the endpoint ([aws] endpoint_url, AWS_ENDPOINT_URL), or raise upload_deadline "
                    f"for a run this big."))
    finally:
        try:
            lock.release()
        except Exception as e:  # noqa: BLE001 - the run is published (or failed for its own reason): said, not raised
            logger.warning("could not remove %s%s (%s): another publish there takes it over once it is stale", uri,
                           "/" + PUBLISH_LOCK, e)
    logger.info("published %d files and %s to %s", len(files), MANIFEST, uri)
    return f"s3://{bucket}/{prefix}report.html"


def _lock(client, bucket: str, prefix: str, uri: str):
    from .errors import StateInUse
    from .state import LOCK_STALE_S, _describe, _parse_holder, _S3Lock  # the one lock implementation

    class PublishLock(_S3Lock):
        SETTING = "--out"
        LOST = f"No {MANIFEST} was written by this run; publish it again."

        def _take(self) -> str:
            try:
                return super()._take()
            except StateInUse:
                try:
                    holder = _parse_holder(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
                except Exception:  # noqa: BLE001 - released meanwhile, or unreadable: no holder to name
                    holder = {}
                raise ReportError(f"{uri} is being published by {_describe(holder)}: this run uploaded nothing. "
                                  f"Wait for it to finish (a lock its publisher stops rewriting, a crashed one's, is "
                                  f"taken over after {LOCK_STALE_S / 60:.0f} minutes, at once on the same host), then "
                                  f"run the window again (--replace to replace its run), or choose another --out "
                                  f"prefix.") from None

    return PublishLock(client, bucket, prefix + PUBLISH_LOCK, uri)


def _publish(client, run_dir: Path, files: list[str], bucket: str, prefix: str, uri: str, replace: bool,
             lock) -> None:
    if published(client, bucket, prefix):
        if not replace:
            raise ReportError(f"A run is already published at {uri} (its {MANIFEST} exists). Use --replace to "
                              f"replace it, or choose another --out prefix.")
        # the old run's files this one does not have, as its manifest lists them: nothing else under the prefix
        # (another run in a folder below, a user's own objects) is ours to delete
        old = _listed_files(client, bucket, prefix, uri)
        _delete(client, bucket, [prefix + MANIFEST])  # from here on, readers see no run at the prefix
        keep = set(files)
        _delete(client, bucket, [prefix + f for f in old if f not in keep])
    for rel in files:
        lock.ensure_held()  # a publish left at its deadline (the lock let go) uploads no more over another's files
        _upload(client, run_dir / rel, bucket, prefix + rel, uri)
    lock.ensure_held()  # a publisher paused past the lock's staleness may have been overtaken: its manifest not put
    extra = {} if replace else {"IfNoneMatch": "*"}  # a publisher that took no lock (an older version) wins; we fail
    try:
        client.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=(run_dir / MANIFEST).read_bytes(),
                          ContentType="application/json", **extra)
    except botocore.exceptions.ClientError as e:
        if error_code(e) in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise ReportError(f"Another run was published at {uri} while this one uploaded. Use --replace to "
                              f"replace it, or choose another --out prefix.") from e
        raise _s3_failure(e, f"write s3://{bucket}/{prefix}{MANIFEST}") from e


def _listed_files(client, bucket: str, prefix: str, uri: str) -> list[str]:
    """The files the run published at the prefix lists in its manifest (what --replace removes, download fetches)."""
    try:
        manifest = orjson.loads(client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read())
        return [f["path"] for f in manifest["files"]]
    except botocore.exceptions.ClientError as e:
        raise _s3_failure(e, f"read s3://{bucket}/{prefix}{MANIFEST}") from e
    except (ValueError, KeyError, TypeError) as e:
        raise ReportError(f"The run published at {uri} has a {MANIFEST} that lists no files ({e}): replacing it "
                          f"would not know which objects are its own. Remove them yourself, or publish to another "
                          f"--out prefix.") from e


def _upload(client, path: Path, bucket: str, key: str, uri: str) -> None:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": kind})
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
        code = error_code(e) or type(e).__name__
        raise ReportError(f"Publishing to {uri} stopped at {key} ({code}: {e}). No {MANIFEST} was written, so "
                          f"readers see no run there; run again to publish it.") from e


def _keys(client, bucket: str, prefix: str) -> list[str]:
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]
    except botocore.exceptions.ClientError as e:
        raise _s3_failure(e, f"list s3://{bucket}/{prefix}") from e


def _delete(client, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
        try:
            r = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                             "Quiet": True})
        except botocore.exceptions.ClientError as e:
            raise _s3_failure(e, f"delete the run at s3://{bucket}/{keys[i].rsplit('/', 1)[0]}") from e
        if r.get("Errors"):
            err = r["Errors"][0]
            raise ReportError(f"Could not delete s3://{bucket}/{err['Key']} ({err.get('Code')}): "
                              f"{err.get('Message')}. Check s3:DeleteObject on the bucket.")


def download(uri: str, dest: Path, aws: AwsConfig) -> Path:
    """Fetch a published run (for `reconcile verify s3://...`) into dest; only a run with its manifest."""
    bucket, prefix = split(uri)
    client = make_client("s3", aws)
    if not published(client, bucket, prefix):
        raise NotARun(f"No run is published at {uri} (no {MANIFEST}). Check the prefix.")
    # the run's own files, as its manifest lists them, and the manifest: not whatever else lies under the prefix
    # (runs published below it, objects publish --replace leaves alone)
    for key in [prefix + f for f in _listed_files(client, bucket, prefix, uri)] + [prefix + MANIFEST]:
        path = dest / key[len(prefix):]
        if not path.resolve().is_relative_to(dest.resolve()):
            raise VerifyError(f"s3://{bucket}/{key} would land outside {dest}; refusing to download it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, key, str(path))
        except botocore.exceptions.ClientError as e:
            if error_code(e) in ("404", "NoSuchKey", "NotFound"):
                continue  # listed but gone: `verify` names it missing
            raise _s3_failure(e, f"download s3://{bucket}/{key}") from e
    return dest


def pack(run_dir: Path, archive: Path) -> Path:
    """One .tar.gz of a finished run under a folder named like it; the same run packs to the same bytes."""
    files = [*bundle_files(run_dir), MANIFEST]
    with replacing(archive) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        name = run_dir.resolve().name or "run"  # `--out .` has no name of its own: its absolute folder's
        for rel in sorted(files):
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = (run_dir / rel).stat().st_size
            info.mode = 0o644
            with open(run_dir / rel, "rb") as f:
                tar.addfile(info, f)
    return archive


def unpack(archive: Path, dest: Path) -> Path:
    """Extract a bundle (safely: no links, no paths outside dest) and return the run folder inside it."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise NotARun(f"{archive} is not a readable bundle ({e}). Give a run folder or a .tar.gz from --bundle.")
    try:
        with tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # it opened as a bundle: damaged since packed
        raise VerifyError(f"{archive} is not a readable bundle ({e}): it was damaged since it was packed. Give a "
                          f"run folder or a .tar.gz from --bundle.")
    found = sorted(p.parent for p in dest.rglob(MANIFEST))
    if not found:
        raise NotARun(f"{archive} holds no {MANIFEST}: it is not a run's bundle.")
    # --bundle packs one run's folder and nothing else: more beside it (another run sorting first, say) would let a
    # genuine run vouch for an archive whose other files were never verified
    top = sorted(p.name for p in dest.iterdir())
    if len(found) > 1 or found[0].parent != dest or len(top) != 1:
        raise VerifyError(f"{archive} holds more than one run's folder (top level: {', '.join(top[:5])}; "
                          f"{MANIFEST} in {len(found)} folder(s)): a bundle from --bundle holds exactly one. Verify "
                          f"each run's own bundle or folder.")
    return found[0]
