"""`reconcile collect zendesk`: flags → config → sources/zendesk/collect.py → one line (or JSON) a cycle.

Exit codes: 0 the cache is up to the export's end · 3 the API wore the collector out (max_wait): the next one
resumes · 4 configuration error (no cache, another account's cache) · 75 another collector holds the cache's lock:
this one wrote nothing (EX_TEMPFAIL: try again later; a cron schedule just does).
"""

from __future__ import annotations

import sys

import click
import orjson

from . import config as config_mod
from .sources.zendesk.cache import BUSY_EXIT, CacheBusy
from .window import parse_duration, parse_time


@click.group()
def collect() -> None:
    """Collect a store's records through the day, so the nightly run only fetches the tail.

    \b
    Example:
      reconcile collect zendesk --cache ./zendesk-pages --follow
    """


@collect.command("zendesk")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--cache", help="The page cache: a folder or s3://bucket/prefix (or [zendesk] cache).")
@click.option("--zendesk-url", help="Account URL (or ZENDESK_URL).")
@click.option("--rate-share", type=float, help="Share of requests_per_minute to use (or [zendesk] rate_share).")
@click.option("--start", help="Where an empty cache begins (ISO time or date; default 00:00 UTC today minus 1h).")
@click.option("--follow", is_flag=True, help="Keep collecting, a cycle every --interval, until SIGTERM/SIGINT.")
@click.option("--interval", default="1m", show_default=True, help="Pause between cycles with --follow.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per cycle on stdout.")
@click.option("--profile", help="AWS profile (an s3:// cache).")
@click.option("--region", help="AWS region.")
@click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL).")
def collect_zendesk(config_path, cache, zendesk_url, rate_share, start, follow, interval, as_json, profile, region,
                    endpoint_url):
    """Keep the account's export pages in [zendesk] cache up to now minus one minute (the export's cut-off).

    Meant for cron every few minutes, or --follow. The nightly `reconcile run` with the same [zendesk] cache replays
    the cached pages of its window and fetches only the rest. Prints how far behind real time the cache is.
    Credentials come from ZENDESK_EMAIL + ZENDESK_API_TOKEN or ZENDESK_OAUTH_TOKEN; they are never logged.

    \b
    Example: (crontab, every 5 minutes; half the 10/min budget, the rest left to other integrations)
      */5 * * * * ZENDESK_EMAIL=me@acme.com ZENDESK_API_TOKEN=... reconcile collect zendesk \\
        --zendesk-url https://acme.zendesk.com --cache s3://reconcile/zendesk-pages --rate-share 0.5

    \b
    Exit codes: 0 up to date · 3 the API wore it out (the next one resumes) · 4 configuration error ·
    75 another collector holds the cache (nothing written; try again later)
    """
    from .sources.zendesk.collect import collect as run_collect
    cfg = config_mod.build(config_path, {
        "zendesk": {"url": zendesk_url, "cache": cache, "rate_share": rate_share},
        "aws": {"profile": profile, "region": region, "endpoint_url": endpoint_url}})
    begin = parse_time(start) if start else None
    pause = parse_duration(interval).total_seconds()

    def report(result) -> None:
        if as_json:
            click.echo(orjson.dumps(result.to_dict()).decode())
        else:
            click.echo(result.line())

    try:
        result = run_collect(cfg.zendesk, cfg.aws, start=begin, follow=follow, interval=pause, on_cycle=report)
    except CacheBusy as e:
        if as_json:
            click.echo(orjson.dumps({"cache": cfg.zendesk.cache, "busy": True, "message": str(e)}).decode())
        click.echo(str(e), err=True)
        sys.exit(BUSY_EXIT)
    sys.exit(0 if result.complete else 3)
