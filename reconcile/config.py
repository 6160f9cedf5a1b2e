"""One frozen config object: TOML file, then environment, then flags. Unknown keys are rejected.

Secrets (Zendesk tokens, AWS keys) are never part of the config: they come from the environment or the AWS
credential chain at the moment of use, so the config can be written to the manifest as it is.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .ledger import UUID_TEXT


@dataclass(frozen=True)
class AwsConfig:
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None  # also AWS_ENDPOINT_URL; pyarrow's S3FileSystem gets it passed explicitly
    # how long the AWS reads of a run may take in all: a server that trickles a body beats every timeout per request
    read_deadline: str = "2h"
    # how long an upload the run waits on may take: the s3:// state after each write, an --out s3:// publish in all
    upload_deadline: str = "1h"


@dataclass(frozen=True)
class WindowConfig:
    margin_before: str = "1h"
    margin_after: str = "24h"
    max_event_age: str = "24h"  # the rule's MaximumEventAgeInSeconds
    hop_a_grace: str = "5m"  # how long a Zendesk event may take to reach the bus before it counts as lost
    # how far before the window the sink is read back for pending events carried in from earlier windows (after days
    # without a run); a carried event older than that is not settled as lost (the sink was not read back to it)
    carry_back: str = "7d"


@dataclass(frozen=True)
class ZendeskConfig:
    url: str | None = None  # https://acme.zendesk.com (also ZENDESK_URL)
    requests_per_minute: float = 10  # 30 with the High Volume add-on
    max_wait: str = "30m"  # total time spent waiting on limits/errors before the source is marked incomplete
    timeout: str = "30s"
    pages_dir: str | None = None  # where raw pages are kept (default: the run's evidence/zendesk-pages)
    # The page cache `reconcile collect zendesk` keeps through the day (a folder or s3://bucket/prefix): a run
    # replays the pages it holds for the window (bound to this url) and fetches only the rest. Never written by runs.
    cache: str | None = None
    rate_share: float = 1.0  # the share of requests_per_minute this process may use (others share the budget)
    # the tickets the export lists by support type ("agent", Zendesk's default; "all" adds AI-agent tickets; or
    # "ai_agent"): those whose events the rule is expected to carry (the connector's behaviour is not documented)
    support_type_scope: str = "agent"
    # how much an answer's body may hold (Zendesk documents no size; a page lists up to 1000 events)
    max_page_size: str = "256MB"


# How the bus log copy is kept: a CloudWatch S3 export, a Firehose delivery of a subscription filter (as CloudWatch
# writes its records, or with Firehose's message extraction), or the log group read live.
BUS_LOG_FORMATS = ("cwl-export", "firehose", "firehose-messages", "api")


@dataclass(frozen=True)
class BusLogConfig:
    uri: str | None = None  # s3://bucket/prefix or a local folder
    format: str = "cwl-export"  # one of BUS_LOG_FORMATS (sources/buslog.py says what each is)
    log_group: str | None = None  # for format = api
    # How long after the bus received an event its log copy may still lack it (sources.buslog.EXPORT_LAG by format:
    # 12 h for an S3 export, PIPELINE.md §3; 15 min for Firehose's buffer): a loss before the bus of an event that new
    # by the newest object's time, past the log's last record, is held
    export_lag: str | None = None


@dataclass(frozen=True)
class SinkConfig:
    uri: str | None = None
    format: str = "parquet"  # parquet | json
    id_column: str = "partitionKey"
    id_path: str | None = None  # JSON path inside `data`, e.g. $.id; wins over id_column when set
    honour_commit_log: bool = True  # readers honour _spark_metadata: a file it does not list is not landed data...
    # ...unless the job's file sink sets a `retention` option (say it here, e.g. "7d"): a file outside the log may then
    # be an entry it expired, whose rows did land (one whose rows arrived after the latest compaction less it cannot
    # be). Unset (Spark's default: no retention), such a file is a failed or retried batch's leftover, which Spark's
    # readers never see (docs/design.md, "Reading Spark's output").
    retention: str | None = None
    # How long the Kinesis stream keeps a record (its RetentionPeriodHours; Kinesis's default is 24 h): a loss after
    # the bus newer than the sink's newest row may still be in the stream, unread by a stopped or lagging Spark job,
    # and is held until the stream would have dropped it (queries/reach.sql)
    stream_retention: str = "24h"
    partition_time_zone: str = "UTC"  # the Spark job's spark.sql.session.timeZone, which dt=/hr= values are in
    # unexplained: parse a row's payload unless the bus log (read whole) parsed the same bytes under its id; all:
    # parse every payload (sources/explained.py)
    parse_payloads: str = "unexplained"

    @property
    def outside_log(self) -> str:
        """How rows in files outside Spark's commit log count (queries/rules.sql sink_copies): 'counted' for readers
        that ignore the log, 'expired' when the job's retention may have expired their entries, else 'leftover'."""
        if not self.honour_commit_log:
            return "counted"
        return "expired" if self.retention else "leftover"


@dataclass(frozen=True)
class DlqConfig:
    queue_url: str | None = None
    uri: str | None = None  # an archive of DLQ messages (JSON lines) instead of the live queue
    # How often the archive's writer writes an object, an empty one when nothing was dead-lettered: an archive whose
    # newest object is older than that before what the window's events may have dead-lettered by has a stopped writer.
    archive_every: str = "1d"
    # Since when the archive holds every message sent (ISO-8601), when neither its objects nor its messages go back
    # that far (one dump written later; a quiet first day): unset, an archive whose oldest object and message are
    # both later than archive_every after the window's read start may have lost older ones (expired, not yet written).
    archive_since: str | None = None
    # Seconds received messages stay hidden while the rest are read (all are released when the read ends); unset:
    # sized to the queue (dlq.visibility_for). 0 reads a sample: the queue hands back the same ten messages.
    visibility_timeout: int | None = None
    empty_receives: int = 3
    # Long polling (ReceiveMessage WaitTimeSeconds): SQS then asks all of its servers, where a short poll (0) asks a
    # sample and can come back empty from a queue that holds messages; each of the last, empty receives waits this long.
    wait_seconds: int = 1
    accept_redrive_risk: bool = False  # read a queue that has its own redrive policy (receives count toward it)
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
    # The shape every EventBridge id must have (RE2, whole id); a record whose id does not match is a reject that
    # makes its store incomplete. EventBridge ids are UUIDs and ledgers keep them as such (docs/design.md): an id
    # that is no UUID is a reject whatever this says, and a pattern that admits non-UUIDs is refused by validate().
    # Every AWS store's ids (bus log, sink column or path, DLQ body) are checked against this one pattern.
    eb_id_pattern: str = UUID_TEXT
    # EventBridge `source` values (RE2, searched) that Zendesk events arrive with: the connector's
    # aws.partner/zendesk.com/..., and the webhook Lambda's own (PIPELINE.md §1: unverified, so set it when yours
    # does not say "zendesk"). A well-formed event whose source does not match is another producer's: a harmless reject.
    zendesk_source_pattern: str = "(?i)zendesk"
    # The connector and the webhook route both put the same Zendesk events on the bus (a migration: Zendesk documents
    # no cut-over). Then each payload family is paired on its own, and an event is judged by both its copies
    # (queries/hop_a.sql, settlements.sql). Off, the families are pooled and one copy is left an orphan; on, a day when
    # each event took one route would give an event another's copy of the other family, which could hide a loss.
    both_families: bool = False


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
    # Judge the day in this many ticket-id partitions, one after another (bounded memory, no spill): "auto" picks
    # from the ledgers' size and memory_limit (1, today's single pass, for days that fit); a number forces it.
    partitions: int | str = "auto"


# Every command's run state (pending events carried over, history, where each run lies) unless [state] uri,
# RECONCILE_STATE or --state says otherwise: one place, whatever --out is, so run, demo, history and trace agree.
DEFAULT_STATE = "reconcile-out/reconcile-state.duckdb"


@dataclass(frozen=True)
class StateConfig:
    uri: str = DEFAULT_STATE  # a local DuckDB file or s3://bucket/key (also RECONCILE_STATE)


@dataclass(frozen=True)
class AlertConfig:
    """Opt-in: nothing is written to the user's AWS account unless a key here is set (docs/operations.md lists the
    IAM actions each needs). Published after the run's outputs and manifest are written."""

    cloudwatch_namespace: str | None = None  # PutMetricData into this custom namespace (never AWS/...)
    sns_topic_arn: str | None = None  # Publish a summary to this topic
    rule: str | None = None  # the Rule dimension's value; default [metrics] rule
    # How long a finished run waits for its alert (both targets at once): a target still answering then is left, the
    # run ends with its own exit code (a trickled answer held a committed run, which no signal stops, for good)
    deadline: str = "60s"


@dataclass(frozen=True)
class RecoverConfig:
    """`reconcile recover`: where lost events go back to (the rule's own target, as the rule would send them)."""

    stream: str | None = None  # the rule's Kinesis stream: its ARN or name (PutRecords)
    partition_key_path: str | None = None  # the rule's KinesisParameters.PartitionKeyPath; unset: the EventBridge id
    archive_arn: str | None = None  # the bus's archive, for events with no exact payload left (StartReplay)
    rule_arn: str | None = None  # the rule a replay is filtered to (Destination.FilterArns)
    records_per_second: float = 500  # rate cap of the re-put (a shard takes 1,000 records/s)
    max_attempts: int = 5  # per record, for ProvisionedThroughputExceeded and other per-record failures


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
    state: StateConfig = field(default_factory=StateConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)
    recover: RecoverConfig = field(default_factory=RecoverConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENV = {("zendesk", "url"): "ZENDESK_URL", ("aws", "endpoint_url"): "AWS_ENDPOINT_URL",
       ("aws", "profile"): "AWS_PROFILE", ("aws", "region"): "AWS_DEFAULT_REGION", ("state", "uri"): "RECONCILE_STATE"}


def _section(cls, name: str, values: dict[str, Any]):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"Unknown key(s) in [{name}]: {', '.join(unknown)}. Known keys: {', '.join(known)}.")
    out = {}
    for k, v in values.items():
        if isinstance(v, list):
            v = tuple(v)
        elif isinstance(v, (datetime.date, datetime.time)) and "str" in str(known[k].type):
            # a time written unquoted (in the file, or --set key=2026-11-01T00:00:00Z): TOML reads it as a datetime
            v = v.isoformat().replace("+00:00", "Z")
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
    cfg = Config(**kwargs)
    validate(cfg)
    return cfg


# --- typed validation: every value checked when the config is built, before anything is read ----------------------

_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.I)
MOST_PARTITIONS = 4096  # [engine] partitions' most (and "auto"'s): a split holds a file open per partition
DURATION = "a duration with a unit, like 90s, 15m, 1h or 1d"
DEADLINE = "a duration above 0 with a unit, like 90s, 15m or 2h"  # a wait bounded by it (0 would end it at once)
# (section, key) -> (check of a value already of the right type, what is expected). Types come from the dataclasses.
RULES: dict[tuple[str, str], tuple[Any, str]] = {
    **{("window", k): ("duration", DURATION)
       for k in ("margin_before", "margin_after", "max_event_age", "hop_a_grace", "carry_back")},
    ("zendesk", "max_wait"): ("duration", DURATION),
    ("dlq", "archive_every"): ("duration", DURATION),
    ("dlq", "archive_since"): (lambda v: _is_time(v), "an ISO-8601 time, like 2026-11-01T00:00:00Z"),
    ("zendesk", "timeout"): ("deadline", DEADLINE),
    ("zendesk", "max_page_size"): (lambda v: bool(_SIZE.match(v)) and memory_bytes(v) >= 10**6,
                                   "a size of at least 1MB, like 256MB or 1GiB"),
    ("aws", "read_deadline"): ("deadline", DEADLINE),
    ("aws", "upload_deadline"): ("deadline", DEADLINE),
    ("alert", "deadline"): ("deadline", DEADLINE),
    ("zendesk", "url"): (lambda v: re.match(r"^https?://[^/\s]+", v), "an http(s) URL like https://acme.zendesk.com"),
    ("zendesk", "requests_per_minute"): (lambda v: v > 0, "a positive number of requests per minute "
                                                          "(10; 30 with the High Volume add-on)"),
    ("zendesk", "rate_share"): (lambda v: 0 < v <= 1, "a share of requests_per_minute above 0 and at most 1 "
                                                      "(0.5: half the budget, the rest left to other integrations)"),
    ("zendesk", "support_type_scope"): (lambda v: v in ("agent", "all", "ai_agent"),
                                        "one of agent (Zendesk's default), all, ai_agent"),
    ("zendesk", "cache"): (lambda v: v.strip() != "" and not v.startswith(("http://", "https://")),
                           "a local folder or an s3://bucket/prefix"),
    ("aws", "endpoint_url"): (lambda v: re.match(r"^https?://[^/\s]+", v), "an http(s) URL like http://localhost:5000"),
    ("bus_log", "format"): (lambda v: v in BUS_LOG_FORMATS, "one of " + ", ".join(BUS_LOG_FORMATS)),
    ("bus_log", "export_lag"): ("duration", DURATION),
    ("sink", "format"): (lambda v: v in ("parquet", "json"), "one of parquet, json"),
    ("sink", "id_path"): (lambda v: v.startswith("$"), "a JSON path inside `data`, like $.id"),
    ("sink", "parse_payloads"): (lambda v: v in ("unexplained", "all"), "one of unexplained, all"),
    ("sink", "retention"): ("duration", DURATION),
    ("sink", "stream_retention"): ("duration", DURATION),
    ("dlq", "visibility_timeout"): (lambda v: 0 <= v <= 43200, "seconds from 0 to 43200 (SQS's limit)"),
    ("dlq", "kinesis_target"): (lambda v: v.strip() != "", "text that only the Kinesis target's TARGET_ARN contains "
                                                         "(\":kinesis:\"); empty would call every DLQ message a "
                                                         "Kinesis failure"),
    ("dlq", "empty_receives"): (lambda v: v >= 1, "a whole number of empty receives, 1 or more"),
    # at most 5: a signal waits for the receive under way (sources.dlq), within the 20 s a run has to stop
    ("dlq", "wait_seconds"): (lambda v: 0 <= v <= 5, "seconds from 0 to 5 (a signal waits for a receive)"),
    ("metrics", "period"): (lambda v: v in (1, 5, 10, 30) or (v > 0 and v % 60 == 0),
                            "seconds CloudWatch accepts: 1, 5, 10, 30 or a multiple of 60"),
    ("match", "tolerance_seconds"): (lambda v: v >= 0, "seconds, 0 or more"),
    ("thresholds", "zendesk_to_bus"): (lambda v: 0 <= v <= 1, "a loss rate from 0 to 1 (0.0001 is 0.01 %)"),
    ("thresholds", "bus_to_sink"): (lambda v: 0 <= v <= 1, "a loss rate from 0 to 1 (0.0001 is 0.01 %)"),
    # below it, DuckDB's own overhead leaves the queries nothing: they fail as unexpected errors, not with the key
    ("engine", "memory_limit"): (lambda v: bool(_SIZE.match(v)) and memory_bytes(v) >= MIN_MEMORY,
                                 "a size DuckDB accepts, of at least 256MB, like 512MB, 3GB or 2GiB"),
    ("engine", "threads"): (lambda v: v >= 1, "a whole number of threads, 1 or more"),
    ("engine", "partitions"): (lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool)
                                                         and 1 <= v <= MOST_PARTITIONS),
                               f"\"auto\" or a whole number of partitions from 1 to {MOST_PARTITIONS}"),
    ("alert", "cloudwatch_namespace"): (lambda v: re.fullmatch(r"[A-Za-z0-9.\-_/#:]{1,255}", v)
                                        and not v.startswith("AWS/"),
                                        "a custom CloudWatch namespace like \"Reconcile\" (not AWS/...)"),
    ("alert", "sns_topic_arn"): (lambda v: re.fullmatch(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+", v),
                                 "an SNS topic ARN like arn:aws:sns:eu-west-1:123456789012:reconcile"),
    ("alert", "rule"): (lambda v: re.fullmatch(r"[A-Za-z0-9._-]{1,64}", v), "an EventBridge rule name"),
    ("recover", "stream"): (lambda v: re.fullmatch(r"(arn:aws[a-z-]*:kinesis:[a-z0-9-]+:\d{12}:stream/)?"
                                                   r"[A-Za-z0-9_.-]{1,128}", v),
                            "a Kinesis stream name or ARN like arn:aws:kinesis:eu-west-1:123456789012:stream/events"),
    ("recover", "partition_key_path"): (lambda v: re.fullmatch(r"\$(\.[A-Za-z0-9_-]+)+", v),
                                        "a JSON path into the event like $.detail.ticket_event.ticket.id (the "
                                        "rule's KinesisParameters.PartitionKeyPath)"),
    ("recover", "archive_arn"): (lambda v: re.fullmatch(r"arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:archive/.+", v),
                                 "an EventBridge archive ARN like arn:aws:events:eu-west-1:123456789012:archive/zd"),
    ("recover", "rule_arn"): (lambda v: re.fullmatch(r"arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:rule/.+", v),
                              "an EventBridge rule ARN like arn:aws:events:eu-west-1:123456789012:rule/zd-to-kinesis"),
    ("recover", "records_per_second"): (lambda v: v > 0, "a positive number of records per second"),
    ("recover", "max_attempts"): (lambda v: v >= 1, "a whole number of attempts, 1 or more"),
}
_TYPES = {"str": (str, "text (a quoted string)"), "float": ((int, float), "a number"),
          "int": (int, "a whole number"),
          "tuple[str, ...]": (tuple, 'a list of strings, like ["Notification"] (--set \'key=["a", "b"]\')'),
          "bool": (bool, "true or false")}


MIN_MEMORY = 256 * 10**6  # [engine] memory_limit's least


def memory_bytes(size: str) -> int:
    from .engine import size_bytes
    try:
        return size_bytes(size)
    except ConfigError:
        return 0


def _is_time(value: str) -> bool:
    from .window import parse_time
    try:
        parse_time(value)
        return True
    except ConfigError:
        return False


def _problem(section: str, key: str, annotation: str, value: Any) -> str | None:
    """What is wrong with one value, or None. `annotation` is the dataclass field's type as written."""
    base = annotation.replace(" | None", "")
    if value is None:
        return None if "None" in annotation else "a value"
    kinds, expected = _TYPES.get(base, (object, base))  # a type not listed here is not checked
    ok = isinstance(value, kinds) and (base == "bool" or not isinstance(value, bool))
    if base == "tuple[str, ...]":
        ok = ok and all(isinstance(v, str) for v in value)
    rule, what = RULES.get((section, key), (None, None))
    if rule in ("duration", "deadline"):
        from .window import parse_duration
        if isinstance(value, bool):
            return what
        try:
            seconds = parse_duration(value).total_seconds()
        except ConfigError:
            return what
        return what if seconds < 0 or (rule == "deadline" and seconds == 0) else None
    if not ok:
        return what or expected
    if rule is not None and not rule(value):
        return what
    return None


def validate(cfg: Config) -> None:
    """Every key's value against its type and rule; one ConfigError naming each bad key, its value, what is expected."""
    problems = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if any(isinstance(v, str) and USERINFO.search(v) for v in (value if isinstance(value, tuple) else (value,))):
                # shown without the credentials: a config (and the manifest and report that show it) holds none
                problems.append(f"[{sec.name}] {f.name} = {_toml(without_userinfo(value))} carries credentials in "
                                f"its URL (user:password@): give them through the environment or AWS's credential "
                                f"chain, never the config, and drop them from the URL.")
                continue
            wrong = _problem(sec.name, f.name, f.type, value)
            if wrong:
                shown = list(value) if isinstance(value, tuple) else value
                problems.append(f"[{sec.name}] {f.name} = {_toml(shown)} is not valid: expected {wrong}.")
    if cfg.bus_log.format == "api" and not cfg.bus_log.log_group:
        problems.append("[bus_log] format = \"api\" reads a log group: set [bus_log] log_group (uri is for "
                        "the archive's objects).")
    if cfg.bus_log.log_group and not cfg.bus_log.uri and cfg.bus_log.format != "api":
        problems.append(f"[bus_log] log_group is read only with format = \"api\" (format is "
                        f"{_toml(cfg.bus_log.format)}): set [bus_log] format = \"api\" to read the log group live, or "
                        f"[bus_log] uri to read its exported objects.")
    if (admitted := _non_uuid_admitted(cfg.match.eb_id_pattern)) is not None:
        problems.append(f"[match] eb_id_pattern = {_toml(cfg.match.eb_id_pattern)} admits ids that are not UUIDs (such "
                        f"as {_toml(admitted)}): EventBridge ids are UUIDs and are kept as such, so any other id is a "
                        f"reject anyway. Narrow the pattern to UUIDs, or leave the key out for the default.")
    if cfg.alert.cloudwatch_namespace and not (cfg.alert.rule or cfg.metrics.rule):
        problems.append("[alert] cloudwatch_namespace publishes metrics with the rule as a dimension: set [metrics] "
                        "rule, or [alert] rule to name it.")
    z = cfg.zendesk
    if z.cache and z.pages_dir and not z.cache.startswith("s3://") and \
            Path(z.cache).expanduser().resolve() == Path(z.pages_dir).expanduser().resolve():
        problems.append("[zendesk] cache and pages_dir are the same folder: the cache is the collector's and runs "
                        "only read it. Leave pages_dir unset (the run's evidence/zendesk-pages) or point it elsewhere.")
    if problems:
        raise ConfigError("\n".join(problems) + "\nFix the config file (`run`, `check`, `recover` and `fetch` "
                          "also take --set section.key=value).")


# Ids that are not UUIDs in their 8-4-4-4-12 form, each a way a pattern can be too wide.
_NOT_UUIDS = ("", "1", "not-a-uuid", "x" * 36, "0e1c3d581f0a4c5e9d4e0a1b2c3d4e5f",
              "0e1c3d58-1f0a-4c5e-9d4e-0a1b2c3d4e5",
              "{0e1c3d58-1f0a-4c5e-9d4e-0a1b2c3d4e5f}", "0e1c3d58-1f0a-4c5e-9d4e-0a1b2c3d4e5g",
              "0e1c3d58-1f0a4c5e-9d4e-0a1b2c3d-4e5f", "0e1c3d58-1f0a-4c5e-9d4e-0a1b2c3d4e5f-1")


def _non_uuid_admitted(pattern: str) -> str | None:
    """One of _NOT_UUIDS that `pattern` matches whole ("" matches anything), or None. A pattern Python cannot
    compile is left to the RE2 check that names it (sources/events.check_patterns)."""
    if pattern == "":
        return "not-a-uuid"
    try:
        rx = re.compile(pattern)
    except re.error:
        return None
    return next((probe for probe in _NOT_UUIDS if rx.fullmatch(probe)), None)


def _toml(value: Any) -> str:
    """A value as it would be written in the TOML file (strings quoted), so the message shows what was given."""
    import json
    return json.dumps(value, default=str)


# A URL's user-info part (scheme://user:password@host): credentials, wherever they appear. It ends at the authority's
# last `@` (a password may hold `@`: urllib splits there too), the authority at the first `/`, `?` or `#`.
USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]+@")


def without_userinfo(value: Any) -> Any:
    """`value` (text, or a tuple or list of texts) with every URL's user-info part shown as [redacted]."""
    if isinstance(value, str):
        return USERINFO.sub(r"\1[redacted]@", value)
    if isinstance(value, (tuple, list)):
        return [without_userinfo(v) for v in value]
    return value


SECRET_KEY = re.compile(r"token|secret|password|passwd|key|credential|auth", re.I)
# Keys that match SECRET_KEY but name no secret (an id column, a kind map file).
NOT_SECRET = frozenset({"id_column", "kind_map", "emission_model", "partition_key_path"})


def redact(value: Any, key: str = "") -> Any:
    """`value` (a config dict) with any secret-looking key's value replaced before it is written or rendered.

    Config holds no secrets (they come from the environment at the moment of use), but a future field might.
    """
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if key and key not in NOT_SECRET and SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return "[redacted]"
    return without_userinfo(value)
