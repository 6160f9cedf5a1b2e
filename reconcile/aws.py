"""The one place AWS clients and S3 filesystems are made.

Honours the standard credential chain, a profile, a region and an endpoint (AWS_ENDPOINT_URL or config), so the same
code talks to AWS or to moto's server on loopback. pyarrow's S3FileSystem ignores AWS_ENDPOINT_URL, so the endpoint
is passed to it explicitly.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
import pyarrow.fs as pafs

from .config import AwsConfig
from .errors import AccessDenied, SourceError

# Throttling and transient errors are retried by botocore's standard mode (exponential backoff with jitter); what
# still fails after that is the caller's to report as an incomplete read.
RETRIES = botocore.config.Config(retries={"mode": "standard", "max_attempts": 8})
# `reconcile check`'s one cheap call a store: an answer within seconds or a failure, not the reads' patience (8
# attempts of 60 s each kept a `check` against an endpoint that never answers busy for half an hour)
PROBE = botocore.config.Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=10)


@lru_cache(maxsize=8)
def session(cfg: AwsConfig) -> boto3.session.Session:
    return boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region or None)


def region_of(cfg: AwsConfig, s: boto3.session.Session | None = None) -> str:
    """The region a client made with `cfg` (from its session `s`) calls: the credential chain's, else us-east-1."""
    return (s or session(cfg)).region_name or "us-east-1"


def make_client(service: str, cfg: AwsConfig, config: botocore.config.Config | None = RETRIES):
    s = session(cfg)
    region = region_of(cfg, s)
    return s.client(service, region_name=region, endpoint_url=cfg.endpoint_url or None, config=config)


def filesystem(uri: str, cfg: AwsConfig) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for `s3://bucket/prefix` or a local path."""
    if uri.startswith("s3://"):
        s = session(cfg)
        creds = s.get_credentials()
        kw = {}
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kw = dict(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
        if cfg.endpoint_url:
            u = urlparse(cfg.endpoint_url)
            kw.update(endpoint_override=u.netloc, scheme=u.scheme or "http")
        fs = pafs.S3FileSystem(region=s.region_name or "us-east-1", **kw)
        return fs, uri[len("s3://"):].rstrip("/")
    return pafs.LocalFileSystem(), uri.rstrip("/")


# Error codes that mean "this store cannot be read at all" (SourceError), as opposed to a throttled or cut-short read
# (an incomplete source). pyarrow reports S3 errors as OSError text naming the same conditions.
MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue",
                 "QueueDoesNotExist", "NotFound", "404"}
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "InvalidAccessKeyId",
                "SignatureDoesNotMatch", "UnrecognizedClientException", "InvalidClientTokenId",
                "AuthorizationError", "403"}
# credentials that were good and ran out during the read (a role's): a re-run gets fresh ones (exit 3, not 4)
EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
# botocore's failures of a connection that worked (dropped, timed out), after its retries: a read cut short, not a
# store or configuration error (credentials, parameters and an unreachable endpoint stay errors)
MID_READ_FAILURES = (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectTimeoutError)
THROTTLE_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded", "SlowDown",
                  "TooManyRequestsException", "RequestThrottled", "RequestThrottledException",
                  "AWS.SimpleQueueService.RequestThrottled", "LimitExceededException"}


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, or None."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def store_error(exc: BaseException, what: str, hint: str) -> SourceError | None:
    """A SourceError saying what to check when `exc` means the store is missing or denied (AccessDenied: exit 4, no
    retry helps); None otherwise.

    `what` names the store ("bus log archive s3://logs/exports"), `hint` the flag or setting to check.
    """
    code = error_code(exc)
    text = str(exc)
    if code in MISSING_CODES or "NO_SUCH_BUCKET" in text or isinstance(exc, FileNotFoundError):
        return SourceError(f"The {what} does not exist ({code or text.split(':')[0]}). Check {hint}, the region "
                           f"and the endpoint.")
    if code in EXPIRED_CODES:
        return SourceError(f"The credentials expired while reading the {what} ({code}). Re-run: the credential "
                           f"chain gives fresh ones.")
    if code in DENIED_CODES or "ACCESS_DENIED" in text or "Access Denied" in text:
        return AccessDenied(f"Access to the {what} was denied ({code or 'AccessDenied'}). Check the credentials "
                            f"(--profile, AWS_PROFILE), {hint}, and that the IAM policy allows reading it.")
    return None


def list_files(uri: str, cfg: AwsConfig, what: str, hint: str) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """(filesystem, root, every file under uri, recursively, sorted by path); missing or denied -> SourceError."""
    fs, root = filesystem(uri, cfg)
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(root)
        if info.type == pafs.FileType.File:
            files = [info]
        else:
            files = [f for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                     if f.type == pafs.FileType.File]
    except OSError as e:
        err = store_error(e, what, hint)
        if err is None:
            raise SourceError(f"Could not list the {what}: {e}. Check {hint}.") from e
        raise err from e
    return fs, root, sorted(files, key=lambda f: f.path)
