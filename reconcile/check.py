"""`reconcile check` (and `run --dry-run`): before anything is read, every configured store answers one cheap call.

The config's values were already checked when it was built (config.validate). Here each store is reached once:
one S3 object listed, SQS GetQueueAttributes, one Zendesk export request, ListMetrics and one GetMetricData, one
DescribeLogGroups.
Nothing is received, downloaded or changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import botocore.exceptions

from .aws import PROBE, error_code, make_client, store_error
from .config import Config
from .errors import ConfigError, ReconcileError, SourceError
from .interrupt import Abandonable

# How long `check` waits for the stores' answers at most ([aws] read_deadline when shorter): each probe's requests time
# out after seconds (aws.PROBE), but a body trickled a byte at a time beats every per-read timeout
ANSWER_WITHIN_S = 60.0


@dataclass(frozen=True)
class Reached:
    store: str
    ok: bool
    detail: str  # what answered, or what is wrong and what to check
    exit_code: int = 0  # a store that did not answer: 4 when a retry would fail alike (config, refused credentials)

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAILED':<7}{self.store:<10} {self.detail}"


def require_a_store(cfg: Config) -> None:
    """A run with no store configured has nothing to reconcile: a config error, not an empty report."""
    from .sources import REGISTRY
    if not any(spec.configured(cfg) for spec in REGISTRY):
        raise ConfigError("No store is configured, so there is nothing to reconcile. Give a config file (--config) "
                          "or keys: " + "; ".join(spec.hint for spec in REGISTRY) + ".")


def require_usable(cfg: Config) -> None:
    """What config.validate cannot know from the values alone, checked before anything is read or written: a store
    is configured, the emission model files load, the id and source patterns compile in DuckDB, the sink's
    partition time zone exists. Each failure is a ConfigError naming the key (the sources check the same again)."""
    from .emission import load_model
    from .sources import events, sink
    require_a_store(cfg)
    load_model(cfg.match.emission_model, cfg.match.kind_map)
    events.check_patterns(cfg.match)
    if cfg.sink.uri:
        sink.zone(cfg.sink.partition_time_zone)


def reach_all(cfg: Config) -> list[Reached]:
    """One line per configured store, in REGISTRY's order: whether it answered its one cheap call. The stores are
    asked at once, each with short timeouts and two retries (aws.PROBE: max_attempts counts retries): a store that
    does not answer costs seconds, and one still answering after ANSWER_WITHIN_S (or [aws] read_deadline) is left (a
    gateway trickling its answer held `check` for good, and a signal with it)."""
    from .sources import REGISTRY
    from .window import parse_duration
    specs = [spec for spec in REGISTRY if spec.configured(cfg)]
    within = min(ANSWER_WITHIN_S, parse_duration(cfg.aws.read_deadline).total_seconds())
    calls = [Abandonable(lambda spec=spec: _reach(spec, cfg), f"reconcile-check-{spec.name}") for spec in specs]
    end = time.monotonic() + within
    return [call.result() if call.ended_by(end) else
            Reached(spec.name, False, f"still answering after {within:.0f} s (a proxy or gateway "
                                      f"trickling its answer?): left. Check the [{spec.name}] keys and the endpoint ("
                                      + ("[aws] endpoint_url, AWS_ENDPOINT_URL)" if spec.on_aws else
                                         "ZENDESK_URL)"), 3)
            for spec, call in zip(specs, calls)]


def _reach(spec, cfg: Config) -> Reached:
    try:
        return Reached(spec.name, True, spec.probe(cfg))
    except (ReconcileError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
        err = _explain(e, spec.name)
        return Reached(spec.name, False, str(err), err.exit_code)


def _explain(e: BaseException, store: str) -> ReconcileError:
    """The error a run would meet reading the store (its exit code: 4 when no retry helps, as `run` exits)."""
    if isinstance(e, ReconcileError):
        return e
    err = store_error(e, store.replace("_", " "), f"the [{store}] keys")
    if err is not None:
        return err
    code = error_code(e)
    return SourceError(f"{code or type(e).__name__}: {e}. Check the [{store}] keys, the credentials (--profile) and "
                       f"--endpoint-url.")


def list_one(uri: str, cfg: Config) -> str:
    """One object under an s3:// prefix (ListObjectsV2, MaxKeys=1), or a local path that exists."""
    if not uri.startswith("s3://"):
        if not Path(uri).exists():
            raise SourceError(f"{uri} does not exist. Check the path, or give an s3://bucket/prefix.")
        return f"{uri} exists"
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    page = make_client("s3", cfg.aws, PROBE).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    first = page.get("Contents", [])
    if not first:
        raise SourceError(f"{uri} holds no object. Check the prefix (and that the store has written there).")
    return f"{uri} lists (first object {first[0]['Key']})"


# Each store's one cheap call, named by its line in sources.REGISTRY (`probe`).

def probe_zendesk(cfg: Config) -> str:
    from .sources import zendesk
    return zendesk.probe(cfg.zendesk)


def probe_bus_log(cfg: Config) -> str:
    if cfg.bus_log.format != "api":
        return list_one(cfg.bus_log.uri, cfg)
    logs = make_client("logs", cfg.aws, PROBE)
    groups = logs.describe_log_groups(logGroupNamePrefix=cfg.bus_log.log_group, limit=1)
    names = [g["logGroupName"] for g in groups.get("logGroups", [])]
    if cfg.bus_log.log_group not in names:
        raise SourceError(f"Log group {cfg.bus_log.log_group} does not exist. Check [bus_log] log_group and the "
                          f"region.")
    return f"log group {cfg.bus_log.log_group} exists"


def probe_sink(cfg: Config) -> str:
    return list_one(cfg.sink.uri, cfg)


def probe_dlq(cfg: Config) -> str:
    if cfg.dlq.uri:  # the store a run reads when both are set (sources/dlq.py)
        return list_one(cfg.dlq.uri, cfg)
    attrs = make_client("sqs", cfg.aws, PROBE).get_queue_attributes(
        QueueUrl=cfg.dlq.queue_url, AttributeNames=["ApproximateNumberOfMessages", "RedrivePolicy"])["Attributes"]
    if attrs.get("RedrivePolicy") and not cfg.dlq.accept_redrive_risk:
        # the run refuses such a queue (sources/dlq.py, exit 3): say so now, before anything is read, as it exits
        raise SourceError(f"{cfg.dlq.queue_url} has its own redrive policy: reading it can move messages away, so "
                          f"`run` refuses it. Read an archive ([dlq] uri), remove the policy, or set [dlq] "
                          f"accept_redrive_risk = true.")
    return f"{cfg.dlq.queue_url} answers (about {int(attrs['ApproximateNumberOfMessages']):,} messages)"


def probe_metrics(cfg: Config) -> str:
    if cfg.metrics.uri:  # the store a run reads when both are set (sources/metrics.py)
        return list_one(cfg.metrics.uri, cfg)
    from .sources.metrics import NAMESPACE
    dims = [{"Name": "RuleName", "Value": cfg.metrics.rule}]
    if cfg.metrics.event_bus:
        dims.insert(0, {"Name": "EventBusName", "Value": cfg.metrics.event_bus})
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    cw = make_client("cloudwatch", cfg.aws, PROBE)
    # GetMetricData answers "Complete" with no point for a rule no metric has (a misspelt name, another bus or
    # region): ListMetrics (metrics with a point in the last two weeks) says whether the rule has any
    if not cw.list_metrics(Namespace=NAMESPACE, MetricName="Invocations", Dimensions=dims).get("Metrics"):
        raise SourceError(f"CloudWatch holds no {NAMESPACE} Invocations metric of rule {cfg.metrics.rule}"
                          f"{f' on bus {cfg.metrics.event_bus}' if cfg.metrics.event_bus else ''} in this region "
                          f"(none in the last two weeks): check [metrics] rule, event_bus and the region.")
    cw.get_metric_data(
        MetricDataQueries=[{"Id": "m0", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": "Invocations", "Dimensions": dims},
            "Period": 3600, "Stat": "Sum"}}],
        StartTime=end - timedelta(hours=1), EndTime=end, MaxDatapoints=1)
    return f"GetMetricData answers for rule {cfg.metrics.rule}"


def failure(reached: list[Reached]) -> ReconcileError | None:
    """The error naming the stores that did not answer, or None when all did: exit 3 (retry later), or 4 when one of
    them failed as no retry would mend (a config mistake, refused credentials), as the run would exit."""
    failed = [r.store for r in reached if not r.ok]
    if not failed:
        return None
    what = (f"{len(failed)} of {len(reached)} configured store(s) did not answer: {', '.join(failed)} (each is listed "
            f"above with what to check). Nothing was read.")
    from .sources import source
    # a store the run needs that failed as no retry mends (the run goes on without an optional one: the metrics)
    if any(r.exit_code == 4 and source(r.store).required for r in reached if not r.ok):
        return ConfigError(what + " A retry would fail alike: mend the config or the credentials first.")
    return SourceError(what)
