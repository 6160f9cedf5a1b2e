"""EventBridge's own counters (namespace AWS/Events, PIPELINE.md §5), as a METRIC_SCHEMA table.

A sanity check only: AWS calls these best-effort, so they never decide a verdict. Missing or partial data is
reported in `details["partial"]` and `problems`, not as an incomplete source.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pyarrow as pa
import pyarrow.compute as pc

from .. import ledger
from ..aws import THROTTLE_CODES, error_code, filesystem, make_client, store_error
from ..config import AwsConfig, MetricsConfig
from ..errors import ConfigError, SourceError
from ..ledger import SourceResult
from ..window import Window

NAME = "metrics"
NAMESPACE = "AWS/Events"
METRICS = ("Invocations", "FailedInvocations", "InvocationsSentToDlq", "InvocationsFailedToBeSentToDlq",
           "ThrottledRules", "MatchedEvents")


def read(cfg: MetricsConfig, window: Window, aws: AwsConfig) -> SourceResult:
    """GetMetricData (Sum per cfg.period) over [window.start, window.end), or a saved response (cfg.uri)."""
    if cfg.uri:
        pages, fps = _load(cfg.uri, aws), [{"key": cfg.uri}]
        problems: list[str] = []
    else:
        pages, problems = _fetch(cfg, window, aws)
        fps = [{"namespace": NAMESPACE, "rule": cfg.rule, "event_bus": cfg.event_bus, "period": cfg.period,
                "start": window.start.isoformat(), "end": window.end.isoformat(), "pages": len(pages)}]
    results, problems = _results(pages, problems)
    tables, status, damaged = [], {}, set()
    for r in results:  # one entry per metric and page: a handful, not one per data point
        name = str(r.get("Label") or r.get("Id"))
        ts, vals, problem = _points(r)
        if problem:
            damaged.add(name)
            problems.append(f"metric {name}: {problem}; those points are left out. Metrics are a sanity check "
                            f"only: the verdicts do not depend on them.")
        # every page but the last says PartialData (more follows, NextToken): the last page's status is the read's
        status[name] = r.get("StatusCode", "Complete")
        tables.append(pa.table({"metric": pa.array([name] * len(ts), pa.string()), "timestamp": ts,
                                "period_s": pa.array([cfg.period] * len(ts), pa.int32()), "value": vals},
                               schema=ledger.METRIC_SCHEMA))
    partial = [name for name, code in status.items() if code != "Complete"]
    # read whole: a metric with no point is 0 (EventBridge sends FailedInvocations, Invocations, ... only when not 0)
    whole = sorted(name for name, code in status.items() if code == "Complete" and name not in damaged)
    table = pa.concat_tables(tables) if tables else ledger.METRIC_SCHEMA.empty_table()
    table = table.sort_by([("metric", "ascending"), ("timestamp", "ascending")])
    # a point stands for the period it starts (CloudWatch stamps each with its period's start, StartTime rounded
    # down): one whose period overlaps the window is the window's
    inside = pc.and_(pc.greater(table["timestamp"], pa.scalar(window.start - timedelta(seconds=cfg.period), ledger.TS)),
                     pc.less(table["timestamp"], pa.scalar(window.end, ledger.TS))) if window else None
    if inside is not None and table.num_rows and not pc.all(inside).as_py():  # a saved response of another window
        outside = table.num_rows - pc.sum(inside).as_py()
        problems.append(f"{outside:,} datapoint(s) fall outside the window ({window.start:%Y-%m-%dT%H:%M:%SZ} to "
                        f"{window.end:%Y-%m-%dT%H:%M:%SZ}) and were left out: a saved response of another window? "
                        f"Save one for this window ([metrics] uri).")
        table = table.filter(inside)
    if results and not table.num_rows and whole:
        # EventBridge counts Invocations and MatchedEvents for a rule that matched anything: no point for any metric
        # is a query that matched no rule (a misspelt [metrics] rule or event_bus, another region) or a window older
        # than CloudWatch keeps points of this period, not a day of zeros
        problems.append(f"No datapoint for any metric of rule {cfg.rule!r}"
                        f"{f' on bus {cfg.event_bus!r}' if cfg.event_bus else ''} in the window, so none is taken "
                        f"for 0: the rule matched nothing in it (a quiet window), or the query matches no rule (check "
                        f"[metrics] rule, event_bus and the region), or CloudWatch no longer keeps {cfg.period} s "
                        f"points for the window.")
        whole = []
    if partial:
        problems.append(f"GetMetricData returned partial data for {', '.join(sorted(set(partial)))} (StatusCode "
                        f"PartialData): metric totals are a lower bound. They are a sanity check only.")
    totals = {}
    for m in sorted(set(table["metric"].to_pylist())):
        totals[m] = pc.sum(table.filter(pc.equal(table["metric"], m))["value"]).as_py()
    return SourceResult(name=NAME, ledger=table, complete=True, problems=problems, fingerprints=fps,
                        details={"mode": "file" if cfg.uri else "api", "rule": cfg.rule, "event_bus": cfg.event_bus,
                                 "period": cfg.period, "partial": sorted(set(partial)), "read_whole": whole,
                                 "totals": totals,
                                 "points": table.num_rows})


def _results(pages: list, problems: list[str]) -> tuple[list[dict], list[str]]:
    """The MetricDataResults entries of every page; anything else in a saved response is a problem, not a crash."""
    results, odd = [], 0
    for p in pages:
        entries = p.get("MetricDataResults") if isinstance(p, dict) else None
        if not isinstance(entries, list):
            odd += 1
            continue
        odd += sum(not isinstance(r, dict) for r in entries)
        results += [r for r in entries if isinstance(r, dict)]
    if odd:
        problems = problems + [f"{odd:,} part(s) of the metrics response are not GetMetricData results and were left "
                               f"out. Metrics are a sanity check only: the verdicts do not depend on them."]
    return results, problems


def _points(r: dict) -> tuple[pa.Array, pa.Array, str | None]:
    """(timestamps, values, problem) of one result: a point whose timestamp or value does not read is left out."""
    stamps, values = r.get("Timestamps") or [], r.get("Values") or []
    if not isinstance(stamps, list) or not isinstance(values, list):
        return pa.array([], ledger.TS), pa.array([], pa.float64()), "Timestamps or Values is not a list"
    ts, vals, bad = [], [], []
    for t, v in zip(stamps, values):  # a day is 288 points a metric: a loop is fine
        when, value = _ts(t), _value(v)
        if when is None or value is None:
            bad.append(f"{str(t)[:40]!r} = {str(v)[:20]!r}")
            continue
        ts.append(when)
        vals.append(value)
    problems = []
    if bad:
        problems.append(f"{len(bad):,} point(s) with an unreadable timestamp or value (first: {bad[0]})")
    if len(stamps) != len(values):
        problems.append(f"{len(stamps):,} timestamps but {len(values):,} values")
    return pa.array(ts, ledger.TS), pa.array(vals, pa.float64()), "; ".join(problems) or None


def _ts(value) -> datetime | None:
    if not isinstance(value, datetime):  # text: ledger.TIME_TEXT, the one rule for a time given as text
        ms = ledger.time_ms(str(value))
        return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _value(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _load(uri: str, aws: AwsConfig) -> list[dict]:
    fs, path = filesystem(uri, aws)
    try:
        with fs.open_input_stream(path) as f:
            doc = json.loads(f.read())
    except OSError as e:
        raise (store_error(e, f"saved metrics {uri}", "[metrics] uri")
               or SourceError(f"Cannot read saved metrics {uri}: {e}.")) from e
    except ValueError as e:
        raise SourceError(f"{uri} is not a GetMetricData response in JSON ({e}). Save one with "
                          f"`aws cloudwatch get-metric-data ... > file.json`.") from e
    return doc if isinstance(doc, list) else [doc]


# what a read that stopped before an answer gives: every metric, no point, none read whole
_NONE_WHOLE = {"MetricDataResults": [{"Label": m, "StatusCode": "PartialData"} for m in METRICS]}


def _fetch(cfg: MetricsConfig, window: Window, aws: AwsConfig) -> tuple[list[dict], list[str]]:
    if not cfg.rule:
        raise ConfigError("[metrics] rule is not set. Set it to the EventBridge rule feeding Kinesis (--set "
                          "metrics.rule=NAME), or [metrics] uri to a saved GetMetricData response.")
    dims = [{"Name": "RuleName", "Value": cfg.rule}]
    if cfg.event_bus:
        dims.insert(0, {"Name": "EventBusName", "Value": cfg.event_bus})
    queries = [{"Id": f"m{i}", "Label": m, "ReturnData": True,
                "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": m, "Dimensions": dims},
                               "Period": cfg.period, "Stat": "Sum"}} for i, m in enumerate(METRICS)]
    cw = make_client("cloudwatch", aws)
    pages: list[dict] = []
    problems: list[str] = []
    tokens: set[str] = set()
    try:
        for page in cw.get_paginator("get_metric_data").paginate(
                MetricDataQueries=queries, StartTime=window.start, EndTime=window.end, ScanBy="TimestampAscending"):
            pages.append(page)
            # a NextToken given before asks for pages already read: tokens in turn (which botocore's paginator
            # does not catch) piled pages up until [aws] read_deadline failed the whole run over a sanity check
            if (token := page.get("NextToken")) in tokens:
                problems.append(f"GetMetricData gave a NextToken it had given before after {len(pages)} pages: it "
                                f"does not move on; metrics are partial. Check AWS_ENDPOINT_URL ([aws] "
                                f"endpoint_url). They are a sanity check only: the verdicts do not depend on them.")
                pages.append(_NONE_WHOLE)
                break
            tokens.add(token)
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code not in THROTTLE_CODES:
            raise (store_error(e, "CloudWatch metrics", "the region ([aws] region, --region) and cloudwatch:GetMetricData")
                   or SourceError(f"GetMetricData failed ({code}): {e}")) from e
        problems.append(f"GetMetricData was throttled ({code}) after retries; metrics are partial.")
        pages.append(_NONE_WHOLE)
    except botocore.exceptions.BotoCoreError as e:  # unreachable, or a read that timed out, after botocore's retries
        problems.append(f"GetMetricData could not be completed ({type(e).__name__}: {e}); metrics are partial. "
                        f"Check the region (--region) and AWS_ENDPOINT_URL. They are a sanity check only: the "
                        f"verdicts do not depend on them.")
        pages.append(_NONE_WHOLE)
    return pages, problems
