"""`reconcile fetch <store>`: read one store alone into a ledger Parquet file.

A store of sources.REGISTRY with its own flags has its command here; any other gets one built from its registry line
(`--set <store>.<key>=...` for its keys), so a new store can be fetched the day it is registered.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import config as config_mod
from .cli_options import aws_overrides, merge, parse_sets
from .config import BUS_LOG_FORMATS
from .sources import REGISTRY, source
from .window import parse_time


@click.group()
def fetch():
    """Read one store alone into a ledger Parquet file, to debug one store at a time.

    \b
    Example:
      reconcile fetch sink --uri s3://spark-output/events --start 2026-11-23 --end 2026-11-24 --out sink.parquet
    """


def fetch_options(f):
    f = click.option("--out", type=click.Path(dir_okay=False), required=True, help="Ledger Parquet to write.")(f)
    f = click.option("--end", required=True, help="Window end (ISO-8601).")(f)
    f = click.option("--start", required=True, help="Window start (ISO-8601).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")(f)
    f = click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL).")(f)
    f = click.option("--region", help="AWS region.")(f)
    f = click.option("--profile", help="AWS profile.")(f)
    f = click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config key.")(f)
    return f


def do_fetch(name: str, config_path, start, end, out, overrides: dict, sets: tuple[str, ...] = ()) -> None:
    from . import completeness, ledger
    from .errors import ConfigError
    from .run import window_from
    cfg = config_mod.build(config_path, merge(overrides, parse_sets(sets)))
    if not source(name).configured(cfg):  # as a run refuses it: an empty ledger would read as a store read in part
        raise ConfigError(f"{name} is not configured: {source(name).hint} (in --config, with this command's own "
                          f"options, or --set).")
    window = window_from(cfg, parse_time(start), parse_time(end))
    out = Path(out)
    evidence = out.parent / (out.stem + "-evidence")
    # Alone, a store cannot be compared with the others: only the per-source parts of the rule apply.
    result = completeness.decide(source(name).read(cfg, window, evidence, progress=True), others_have_records=False)
    os.replace(result.path, out)
    if result.rejected:
        ledger.write_atomic(result.rejects, out.with_name(out.stem + ".rejects.parquet"))
    for p in result.problems:
        click.echo(f"{name}: {p}", err=True)
    click.echo(f"{name}: {result.records:,} records, {result.rejected:,} rejected, "
               f"{'complete' if result.complete else 'INCOMPLETE'}", err=True)
    click.echo(str(out))
    sys.exit(0 if result.complete else 3)



@fetch.command("zendesk")
@fetch_options
@click.option("--zendesk-url", help="Account URL (or ZENDESK_URL).")
@click.option("--requests-per-minute", type=float, help="Request budget (10; 30 with High Volume).")
def fetch_zendesk(config_path, start, end, out, profile, region, endpoint_url, sets, zendesk_url, requests_per_minute):
    """Pull the Incremental Ticket Event Export for a window.

    \b
    Example:
      ZENDESK_EMAIL=me@acme.com ZENDESK_API_TOKEN=... reconcile fetch zendesk \\
        --zendesk-url https://acme.zendesk.com --start 2026-11-23 --end 2026-11-24 --out zendesk.parquet
    """
    do_fetch("zendesk", config_path, start, end, out,
             {"zendesk": {"url": zendesk_url, "requests_per_minute": requests_per_minute}}, sets)


@fetch.command("bus-log")
@fetch_options
@click.option("--uri", help="s3://bucket/prefix or a folder of the log archive.")
@click.option("--format", "fmt", type=click.Choice(BUS_LOG_FORMATS))
@click.option("--log-group", help="Log group, for --format api.")
def fetch_bus_log(config_path, start, end, out, profile, region, endpoint_url, sets, uri, fmt, log_group):
    """Read the bus's CloudWatch Logs copy (S3 export, Firehose objects or the live API).

    \b
    Example:
      reconcile fetch bus-log --uri s3://logs-archive/exports --format cwl-export \\
        --start 2026-11-23 --end 2026-11-24 --out bus.parquet
    """
    do_fetch("bus_log", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url),
                   {"bus_log": {"uri": uri, "format": fmt, "log_group": log_group}}), sets)


@fetch.command("sink")
@fetch_options
@click.option("--uri", help="s3://bucket/prefix or a folder of Spark's output.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "json"]))
@click.option("--id-column", help="Column holding the EventBridge id (default partitionKey).")
@click.option("--id-path", help="JSON path of the id inside `data`, e.g. $.id.")
def fetch_sink(config_path, start, end, out, profile, region, endpoint_url, sets, uri, fmt, id_column, id_path):
    """Read Spark's Kinesis output (Parquet or JSON lines, hive-partitioned).

    \b
    Example:
      reconcile fetch sink --uri s3://spark-output/events --start 2026-11-23 --end 2026-11-24 --out sink.parquet
    """
    do_fetch("sink", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url),
                   {"sink": {"uri": uri, "format": fmt, "id_column": id_column, "id_path": id_path}}), sets)


@fetch.command("dlq")
@fetch_options
@click.option("--queue-url", help="The SQS dead-letter queue (read without deleting).")
@click.option("--uri", help="An archive of DLQ messages (JSON lines) instead of the queue.")
def fetch_dlq(config_path, start, end, out, profile, region, endpoint_url, sets, queue_url, uri):
    """Read the SQS dead-letter queue without consuming or deleting a message.

    \b
    Example:
      reconcile fetch dlq --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/zendesk-dlq \\
        --start 2026-11-23 --end 2026-11-24 --out dlq.parquet
    """
    do_fetch("dlq", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url), {"dlq": {"queue_url": queue_url, "uri": uri}}), sets)


@fetch.command("metrics")
@fetch_options
@click.option("--rule", help="EventBridge rule name.")
@click.option("--event-bus", help="Event bus name, for rules on a custom bus.")
@click.option("--uri", help="A saved GetMetricData response instead of the API.")
def fetch_metrics(config_path, start, end, out, profile, region, endpoint_url, sets, rule, event_bus, uri):
    """Read the rule's AWS/Events metrics (a sanity check, never a verdict).

    \b
    Example:
      reconcile fetch metrics --rule zendesk-to-kinesis --start 2026-11-23 --end 2026-11-24 --out metrics.parquet
    """
    do_fetch("metrics", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url),
                   {"metrics": {"rule": rule, "event_bus": event_bus, "uri": uri}}), sets)



def _generic(spec) -> None:
    """A fetch command for a registered store that has none of its own above: its keys come from `--set`."""
    @fetch.command(spec.command, help=f"Read the {spec.name} store alone ({spec.hint}, e.g. with --set).\n\n\b\n"
                                      f"Example:\n  reconcile fetch {spec.command} --set {spec.name}.KEY=VALUE "
                                      f"--start 2026-11-23 --end 2026-11-24 --out {spec.hop}.parquet")
    @fetch_options
    def command(config_path, start, end, out, profile, region, endpoint_url, sets):
        do_fetch(spec.name, config_path, start, end, out, aws_overrides(profile, region, endpoint_url), sets)


for _spec in REGISTRY:
    if _spec.command not in fetch.commands:
        _generic(_spec)
