"""The one place AWS clients and S3 filesystems are made.

Honours the standard credential chain, a profile, a region and an endpoint (AWS_ENDPOINT_URL or config), so the same
code talks to AWS or to moto's server on loopback. pyarrow's S3FileSystem ignores AWS_ENDPOINT_URL, so the endpoint
is passed to it explicitly.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlparse

import boto3
import pyarrow.fs as pafs

from .config import AwsConfig


@lru_cache(maxsize=8)
def session(cfg: AwsConfig) -> boto3.session.Session:
    return boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region or None)


def make_client(service: str, cfg: AwsConfig):
    s = session(cfg)
    region = s.region_name or "us-east-1"
    return s.client(service, region_name=region, endpoint_url=cfg.endpoint_url or None)


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
