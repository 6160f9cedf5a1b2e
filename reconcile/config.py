"""One frozen config object: TOML file, then environment, then flags. Unknown keys are rejected.

Secrets (Zendesk tokens, AWS keys) are never part of the config: they come from the environment or the AWS
credential chain at the moment of use, so the config can be written to the manifest as it is.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class AwsConfig:
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None  # also AWS_ENDPOINT_URL; pyarrow's S3FileSystem gets it passed explicitly


@dataclass(frozen=True)
class WindowConfig:
    margin_before: str = "1h"
    margin_after: str = "24h"
    max_event_age: str = "24h"  # the rule's MaximumEventAgeInSeconds
    hop_a_grace: str = "5m"  # how long a Zendesk event may take to reach the bus before it counts as lost


@dataclass(frozen=True)
class ZendeskConfig:
    url: str | None = None  # https://acme.zendesk.com (also ZENDESK_URL)
    requests_per_minute: float = 10  # 30 with the High Volume add-on
    max_wait: str = "30m"  # total time spent waiting on limits/errors before the source is marked incomplete
    timeout: str = "30s"
    pages_dir: str | None = None  # where raw pages are kept (default: the run's evidence/zendesk-pages)


@dataclass(frozen=True)
class BusLogConfig:
    uri: str | None = None  # s3://bucket/prefix or a local folder
    format: str = "cwl-export"  # cwl-export | firehose | api
    log_group: str | None = None  # for format = api


@dataclass(frozen=True)
class SinkConfig:
    uri: str | None = None
    format: str = "parquet"  # parquet | json
    id_column: str = "partitionKey"
    id_path: str | None = None  # JSON path inside `data`, e.g. $.id; wins over id_column when set


@dataclass(frozen=True)
class DlqConfig:
    queue_url: str | None = None
    uri: str | None = None  # an archive of DLQ messages (JSON lines) instead of the live queue
    visibility_timeout: int = 0
    empty_receives: int = 3
    kinesis_target: str = ":kinesis:"  # TARGET_ARN containing this marks a Kinesis-target failure


@dataclass(frozen=True)
class MetricsConfig:
    rule: str | None = None
    event_bus: str | None = None
    uri: str | None = None  # a saved GetMetricData response instead of the live API
    period: int = 300


@dataclass(frozen=True)
class MatchConfig:
    tolerance_seconds: float = 10
    kind_map: str | None = None  # older form: a CSV (api_kind,bus_type), one bus event per child
    emission_model: str | None = None  # a CSV (api_kind,family,bus_type,cardinality) over queries/emission_model.csv


@dataclass(frozen=True)
class ThresholdConfig:
    zendesk_to_bus: float = 0.0  # loss rate above which the run exits 2
    bus_to_sink: float = 0.0


@dataclass(frozen=True)
class ExcludeConfig:
    event_types: tuple[str, ...] = ()  # API kinds (Create, Comment, Change:status, ...) not reconciled


@dataclass(frozen=True)
class EngineConfig:
    memory_limit: str = "3GB"
    temp_directory: str | None = None  # where DuckDB spills past memory_limit (default: $TMPDIR/reconcile-spill)
    threads: int | None = None


@dataclass(frozen=True)
class Config:
    aws: AwsConfig = field(default_factory=AwsConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    zendesk: ZendeskConfig = field(default_factory=ZendeskConfig)
    bus_log: BusLogConfig = field(default_factory=BusLogConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    dlq: DlqConfig = field(default_factory=DlqConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    exclude: ExcludeConfig = field(default_factory=ExcludeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENV = {("zendesk", "url"): "ZENDESK_URL", ("aws", "endpoint_url"): "AWS_ENDPOINT_URL",
       ("aws", "profile"): "AWS_PROFILE", ("aws", "region"): "AWS_DEFAULT_REGION"}


def _section(cls, name: str, values: dict[str, Any]):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"Unknown key(s) in [{name}]: {', '.join(unknown)}. Known keys: {', '.join(known)}.")
    out = {}
    for k, v in values.items():
        if isinstance(v, list):
            v = tuple(v)
        out[k] = v
    try:
        return cls(**out)
    except TypeError as e:
        raise ConfigError(f"Bad value in [{name}]: {e}")


def build(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
          environ: dict[str, str] | None = None) -> Config:
    """TOML file, then environment (ENV), then `overrides` ({section: {key: value}}, None values ignored)."""
    data: dict[str, dict[str, Any]] = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"Config file {p} does not exist. Pass --config with the path of a TOML file.")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Config file {p} is not valid TOML: {e}")
    environ = os.environ if environ is None else environ
    for (sec, key), var in ENV.items():
        if environ.get(var):
            data.setdefault(sec, {}).setdefault(key, environ[var])
    for sec, values in (overrides or {}).items():
        for k, v in values.items():
            if v is not None:
                data.setdefault(sec, {})[k] = v
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"Unknown section(s): {', '.join(unknown)}. Known: {', '.join(sections)}.")
    kwargs = {}
    for f in dataclasses.fields(Config):
        if f.name in data:
            if not isinstance(data[f.name], dict):
                raise ConfigError(f"[{f.name}] must be a table of keys.")
            kwargs[f.name] = _section(f.default_factory().__class__, f.name, data[f.name])
    return Config(**kwargs)


SECRET_KEY = re.compile(r"token|secret|password|passwd|key|credential|auth", re.I)
# Keys that match SECRET_KEY but name no secret (an id column, a kind map file).
NOT_SECRET = frozenset({"id_column", "kind_map", "emission_model"})


def redact(value: Any, key: str = "") -> Any:
    """`value` (a config dict) with any secret-looking key's value replaced before it is written or rendered.

    Config holds no secrets (they come from the environment at the moment of use), but a future field might.
    """
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if key and key not in NOT_SECRET and SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return "[redacted]"
    return value
