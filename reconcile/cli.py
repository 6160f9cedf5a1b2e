"""The `reconcile` command: parse flags, build the config, call the library, map errors to exit codes.

Exit codes: 0 clean · 1 only pending events · 2 loss above a hop's threshold · 3 an input incomplete or
unreadable · 4 configuration, usage or runtime error · 5 verify: a run does not match its evidence or its inputs
changed · 130 / 143 stopped by SIGINT / SIGTERM (128 + the signal number).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import orjson

from . import __version__, emission, interrupt
from . import config as config_mod
from .console import tolerate_closed_stdout
from .errors import ConfigError, Interrupted, ReconcileError, SourceError, VerifyError
from .window import parse_time

logger = logging.getLogger("reconcile")

EXIT_CODES = """\b
Exit codes:
  0  clean: every event delivered (or excluded)
  1  only pending events (EventBridge may still deliver them)
  2  loss above a hop's threshold
  3  an input was incomplete or unreadable
  4  configuration, usage or runtime error
  5  verify: the run does not match its evidence, or (--against-sources) an input changed or vanished
  130  stopped by SIGINT (Ctrl-C): nothing partial left, state untouched, lock released
  143  stopped by SIGTERM (a scheduler's stop): the same"""


def setup_logging(verbose: int, quiet: int, log_format: str = "text") -> None:
    from .logformat import formatter
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=max(level, logging.DEBUG), handlers=[handler])
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def json_logs(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    return ctx is not None and ctx.find_root().params.get("log_format") == "json"


def say(line: str, level: int = logging.INFO, ctx: click.Context | None = None, **fields) -> None:
    """A line for the person at the terminal on stderr; with --log-format json, a log record like every other line
    there (with `fields`), so a log shipper reads stderr whole."""
    if json_logs(ctx):
        logger.log(level, line, extra=fields)
    else:
        click.echo(line, err=True)


USAGE_ERROR = 4  # click's own code, 2, is our "loss" code


@contextmanager
def usage_exit_code():
    try:
        yield
    except click.UsageError as e:
        e.exit_code = USAGE_ERROR
        raise


def stopped(signum: int):
    """After SIGINT/SIGTERM has unwound the command: say so and exit 128 + signum, without waiting past the grace
    period for a read that ignores the signal (reconcile/interrupt.py)."""
    import signal
    click.echo(f"Stopped by {signal.Signals(signum).name}: reads cancelled, unfinished outputs removed, state lock "
               "released. Re-run it.", err=True)
    code = 128 + signum
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for t in others:
        t.join(interrupt.remaining())
    if any(t.is_alive() for t in others):  # the interpreter would join them at exit, however long they take
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


class Main(click.Group):
    """Turns domain errors into one `Error: ...` line and the documented exit code; a signal into 130/143; a usage
    error into 4; a closed stdout into nothing."""

    def main(self, *args, **kwargs):
        with tolerate_closed_stdout(), interrupt.handlers():
            try:
                return super().main(*args, **kwargs)
            except Interrupted as e:
                stopped(e.signum)

    def make_context(self, *args, **kwargs):
        with usage_exit_code():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        try:
            with usage_exit_code():
                return super().invoke(ctx)
        except ReconcileError as e:
            if interrupt.received():  # whatever a cut-short step raised on its way out
                stopped(interrupt.received())
            say(f"Error: {e}", logging.ERROR, ctx, exit_code=e.exit_code)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the one place an unexpected failure becomes exit 4
            if interrupt.received():
                stopped(interrupt.received())
            if logger.isEnabledFor(logging.DEBUG):
                logger.exception("unexpected failure")
            say(f"Error: unexpected {type(e).__name__}: {e} (run with -v -v for the traceback)", logging.ERROR,
                ctx, exit_code=4)
            sys.exit(4)


@click.group(cls=Main, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="reconcile")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv: SQL and tracebacks).")
@click.option("-q", "--quiet", count=True, help="Less logging on stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object per line on stderr (time, level, logger, message and fields).")
def main(verbose: int, quiet: int, log_format: str) -> None:
    """Reconcile Zendesk → EventBridge → Kinesis → Spark → S3: find every event that went missing, and where.

    \b
    Example:
      reconcile demo --out demo-out
      reconcile --log-format json run --config reconcile.toml --json
    """
    setup_logging(verbose, quiet, log_format)


def window_options(f):
    f = click.option("--as-of", help="Judge as if now were this time (ISO-8601). Default: now.")(f)
    f = click.option("--end", help="Window end (ISO-8601, exclusive).")(f)
    f = click.option("--start", help="Window start (ISO-8601).")(f)
    f = click.option("--date", "day", help="A UTC day YYYY-MM-DD (default: yesterday).")(f)
    return f


def resolve_window(cfg, day, start, end, as_of):
    from .run import window_from
    if day and (start or end):
        raise ConfigError("Give either --date or --start/--end, not both.")
    if start or end:
        if not (start and end):
            raise ConfigError("--start and --end go together. Give both, or --date for a whole UTC day.")
        s, e = parse_time(start), parse_time(end)
    else:
        if day:
            s = parse_time(day)
        else:
            today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            s = today - timedelta(days=1)
        e = s + timedelta(days=1)
    return window_from(cfg, s, e, parse_time(as_of) if as_of else None)


def parse_sets(items: tuple[str, ...]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set {item!r} is not section.key=value, e.g. --set sink.id_column=id")
        try:
            import tomllib
            parsed = tomllib.loads(f"v = {value}")["v"]
        except Exception:  # noqa: BLE001 - an unquoted string is the common case
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def merge(*dicts: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for d in dicts:
        for sec, values in d.items():
            out.setdefault(sec, {}).update({k: v for k, v in values.items() if v is not None})
    return out


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@window_options
@click.option("--out", help="Output folder (default reconcile-out/<window>), or s3://bucket/prefix to publish the run "
              "there (files first, manifest.json last).")
@click.option("--replace", is_flag=True, help="With --out s3://..., replace a run already published there.")
@click.option("--bundle", type=click.Path(dir_okay=False), help="Also pack the run's evidence bundle into this .tar.gz.")
@click.option("--zendesk-url", help="Zendesk account URL (or ZENDESK_URL).")
@click.option("--profile", help="AWS profile.")
@click.option("--region", help="AWS region.")
@click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL), e.g. a moto server.")
@click.option("--audience", type=click.Choice(["daily", "incident", "audit"]), default="daily", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config key.")
@click.option("--state", help=f"Run-state DuckDB file or s3:// URI (default: [state] uri, RECONCILE_STATE, or "
              f"{config_mod.DEFAULT_STATE}; the same for every command).")
@click.option("--no-state", is_flag=True, help="Do not carry pending events or record history.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
@click.option("--dry-run", is_flag=True, help="Print what would be read and written; touch nothing.")
def run(config_path, day, start, end, as_of, out, replace, bundle, zendesk_url, profile, region, endpoint_url,
        audience, sets, state, no_state, as_json, no_progress, dry_run):
    """Reconcile one window over the configured stores and write the gap report.

    Secrets come from the environment only: ZENDESK_EMAIL + ZENDESK_API_TOKEN (or ZENDESK_OAUTH_TOKEN), and the
    AWS credential chain.

    \b
    Example:
      reconcile run --config reconcile.toml --date 2026-11-23 --out out/
      reconcile run --config reconcile.toml --date 2026-11-23 --out s3://audit/runs/2026-11-23 --bundle run.tar.gz
    """
    from . import alert, publish
    from .run import execute
    overrides = merge({"zendesk": {"url": zendesk_url},
                       "aws": {"profile": profile, "region": region, "endpoint_url": endpoint_url},
                       "state": {"uri": state}},
                      parse_sets(sets))
    cfg = config_mod.build(config_path, overrides)
    window = resolve_window(cfg, day, start, end, as_of)
    target = out or str(Path("reconcile-out") / window.key)
    state_path = None if no_state else cfg.state.uri
    from .check import failure, reach_all, require_usable
    require_usable(cfg)
    if dry_run:
        click.echo(dry_run_plan(cfg, window, target, state_path))
        for line in alert.plan(cfg) or ["nothing ([alert] cloudwatch_namespace and sns_topic_arn are unset)"]:
            click.echo(f"alert      {line}")
        reached = reach_all(cfg)  # the same one cheap call per store as `reconcile check`
        for r in reached:
            click.echo(f"reach      {r}")
        if failure(reached):
            raise failure(reached)
        return
    if not publish.is_s3(target):
        if replace:
            raise ConfigError("--replace is for --out s3://...; a local --out folder is always replaced.")
        outcome = execute(cfg, window, Path(target), audience=audience, progress=not (no_progress or json_logs()),
                          state=state_path)
        if bundle:
            publish.pack(outcome.out_dir, Path(bundle))
        # After the manifest: an alert describes a finished run; its failure never changes the exit code.
        emit(outcome, as_json, alert=alert.send(cfg, outcome.summary, str(outcome.report.resolve())))
        sys.exit(outcome.exit_code)
    publish.ensure_free(target, cfg.aws, replace)  # fail before reading anything
    with tempfile.TemporaryDirectory(prefix="reconcile-run-") as tmp:
        outcome = execute(cfg, window, Path(tmp) / window.key, audience=audience,
                          progress=not (no_progress or json_logs()), state=state_path, location=target)
        if bundle:
            publish.pack(outcome.out_dir, Path(bundle))
        report_uri = publish.publish(outcome.out_dir, target, cfg.aws, replace=replace)
    # After the manifest (and the upload): an alert describes a finished run; its failure never changes the exit code.
    emit(outcome, as_json, report_uri, alert.send(cfg, outcome.summary, report_uri))
    sys.exit(outcome.exit_code)


def dry_run_plan(cfg, window, target: str, state_path) -> str:
    """What a run would read (each store and the time range) and write, without touching anything."""
    from .run import SOURCES
    where = {
        "zendesk": lambda c: f"{c.zendesk.url}/api/v2/incremental/ticket_events.json "
                             f"({c.zendesk.requests_per_minute:g} requests/min)",
        "bus_log": lambda c: f"{c.bus_log.uri or c.bus_log.log_group} ({c.bus_log.format})",
        "sink": lambda c: f"{c.sink.uri} ({c.sink.format}, id from "
                          f"{c.sink.id_path or 'column ' + c.sink.id_column})",
        "dlq": lambda c: (f"{c.dlq.queue_url} (received, released after the read, never deleted; visibility "
                          f"{'sized to the queue' if c.dlq.visibility_timeout is None else c.dlq.visibility_timeout}"
                          f"{'' if c.dlq.visibility_timeout is None else 's'})"
                          if c.dlq.queue_url else f"{c.dlq.uri} (archive)"),
        "metrics": lambda c: (f"AWS/Events rule {c.metrics.rule}" if c.metrics.rule else f"{c.metrics.uri}"),
    }
    iso = "%Y-%m-%dT%H:%M:%SZ"
    lines = [f"window     {window.start:{iso}} → {window.end:{iso}} (Zendesk events by event time)",
             f"read       downstream stores over {window.read_start:{iso}} → {window.read_end:{iso}}",
             f"as of      {window.as_of:{iso}}: missing events younger than {window.horizon} are pending"]
    for spec in SOURCES:
        what = where[spec.name](cfg) if spec.configured(cfg) else f"NOT CONFIGURED ({spec.hint})"
        lines.append(f"{spec.name:<10} {what}")
    lines += [f"write      {target}/ (report.html, summary.json, gaps.csv, verdicts.parquet, evidence/, manifest.json)",
              f"state      {state_path or 'none (--no-state)'}"]
    return "\n".join(lines)


def state_config(config_path, state, profile, region, endpoint_url) -> config_mod.Config:
    """The config of a command that reads the run state: where it is ([state] uri, RECONCILE_STATE, --state) and
    the AWS options to reach it when it is on S3."""
    return config_mod.build(config_path, merge(aws_overrides(profile, region, endpoint_url), {"state": {"uri": state}}))


def aws_options(f):
    f = click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL).")(f)
    f = click.option("--region", help="AWS region.")(f)
    f = click.option("--profile", help="AWS profile.")(f)
    return f


STATE_HELP = (f"Run-state file or s3:// URI (default: [state] uri in --config, RECONCILE_STATE, or "
              f"{config_mod.DEFAULT_STATE}).")


def emit(outcome, as_json: bool, report: str | None = None, alert: dict | None = None) -> None:
    s = outcome.summary
    if as_json:
        # Where to look first for a scheduler: the report (local path or s3:// URI), then every figure of the summary,
        # then what became of the alert (docs/operations.md).
        click.echo(orjson.dumps({"report": report or str(outcome.report.resolve()), **s,
                                 "alert": alert or {"cloudwatch": {"status": "off"}, "sns": {"status": "off"}}},
                                option=orjson.OPT_INDENT_2).decode())
    else:
        v = s["verdicts"]
        shown = [f"{r['label']} {v.get(r['verdict'], 0):,}" for r in emission.verdict_rows()
                 if r["verdict"] != "excluded" and (r["in_funnel"] or v.get(r["verdict"]))]
        say(f"{s['status']}: {s['events']:,} expected bus events · " + " · ".join(shown),
            status=s["status"], exit_code=s["exit_code"], events=s["events"], verdicts=v)
        click.echo(report or str(outcome.report))


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--zendesk-url", help="Zendesk account URL (or ZENDESK_URL).")
@aws_options
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config key.")
@click.option("--json", "as_json", is_flag=True, help="Print each store's answer as JSON on stdout.")
def check(config_path, zendesk_url, profile, region, endpoint_url, sets, as_json):
    """Check the config's values and reach every configured store with one cheap call, reading nothing.

    One S3 object listed per bucket store, SQS GetQueueAttributes, one Zendesk export request, one GetMetricData.
    Exits 0 when every store answered, 3 naming each that did not, 4 for a config mistake (each bad key, its value
    and what is expected).

    \b
    Example:
      reconcile check --config reconcile.toml
    """
    from .check import failure, reach_all, require_usable
    cfg = config_mod.build(config_path, merge({"zendesk": {"url": zendesk_url}},
                                              aws_overrides(profile, region, endpoint_url), parse_sets(sets)))
    require_usable(cfg)
    reached = reach_all(cfg)
    if as_json:
        click.echo(orjson.dumps([r.__dict__ for r in reached], option=orjson.OPT_INDENT_2).decode())
    else:
        for r in reached:
            click.echo(str(r))
    if failure(reached):
        raise failure(reached)
    click.echo(f"config valid; {len(reached)} store(s) answered", err=True)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo-out", show_default=True)
@click.option("--events", type=int, default=20_000, show_default=True, help="Zendesk events in the day.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--day", default="2026-11-23", show_default=True, help="The (first) simulated UTC day.")
@click.option("--days", type=click.IntRange(1, 14), default=1, show_default=True,
              help="Consecutive days, each run daily with the state carried over.")
@click.option("--audience", type=click.Choice(["daily", "incident", "audit"]), default="daily", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--no-progress", is_flag=True)
@click.option("--state", help=STATE_HELP + " The demo's simulated runs are recorded there like real ones, so "
              "`reconcile trace` and `history` find them.")
def demo(out, events, seed, day, days, audience, as_json, no_progress, state):
    """Simulate a pipeline day with faults at every hop, serve it like the real stores, reconcile it.

    The Zendesk API is served over HTTP on loopback and the AWS stores by moto's server, so the demo runs the
    same code paths as a production run. Prints the report path and how many injected faults were found.

    \b
    Example:
      reconcile demo --out demo-out --events 20000 --seed 7
    """
    from .simulate.demo import run_demo
    state_uri = config_mod.build(None, {"state": {"uri": state}},  # the demo's stores are its own: only the state
                                 environ={"RECONCILE_STATE": os.environ.get("RECONCILE_STATE", "")}).state.uri
    outcome, found = run_demo(Path(out), events=events, seed=seed, day=day, days=days, audience=audience,
                              progress=not (no_progress or json_logs()), state=state_uri)
    for line in found:
        click.echo(line, err=True)
    emit(outcome, as_json)
    sys.exit(outcome.exit_code)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--events", type=int, default=20_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--day", default="2026-11-23", show_default=True)
@click.option("--garbage-records", is_flag=True,
              help="Also plant records nothing can read (a cut-off JSON, a log line without id): a run is then "
                   "incomplete (exit 3).")
def simulate(out, events, seed, day, garbage_records):
    """Write a simulated pipeline day's stores (real formats) and its truth.json, without reconciling.

    \b
    Example:
      reconcile simulate --out sim/ --events 100000
    """
    from .simulate.generate import SimParams, simulate as make
    from .simulate.stores import write_stores
    params = SimParams(events=events, seed=seed, day=day, garbage_records=garbage_records)
    written = write_stores(make(params), Path(out))
    click.echo(str(Path(out) / "stores"))
    logger.info("wrote %s", {k: v for k, v in written.items() if not isinstance(v, (list, dict))})


@main.group()
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
    return f


def do_fetch(name: str, config_path, start, end, out, overrides: dict) -> None:
    from . import completeness, ledger
    from .run import SOURCES, read_source, window_from, write_ledger
    cfg = config_mod.build(config_path, overrides)
    window = window_from(cfg, parse_time(start), parse_time(end))
    spec = next(s for s in SOURCES if s.name == name)
    out = Path(out)
    evidence = out.parent / (out.stem + "-evidence")
    # Alone, a store cannot be compared with the others: only the per-source parts of the rule apply.
    result = completeness.decide(read_source(spec, cfg, window, evidence, progress=True), others_have_records=False)
    os.replace(write_ledger(spec, result, evidence), out)  # a streamed ledger is in evidence/ already
    if result.rejected:
        ledger.write_atomic(result.rejects, out.with_name(out.stem + ".rejects.parquet"))
    for p in result.problems:
        click.echo(f"{name}: {p}", err=True)
    click.echo(f"{name}: {result.records:,} records, {result.rejected:,} rejected, "
               f"{'complete' if result.complete else 'INCOMPLETE'}", err=True)
    click.echo(str(out))
    sys.exit(0 if result.complete else 3)


def aws_overrides(profile, region, endpoint_url) -> dict:
    return {"aws": {"profile": profile, "region": region, "endpoint_url": endpoint_url}}


@fetch.command("zendesk")
@fetch_options
@click.option("--zendesk-url", help="Account URL (or ZENDESK_URL).")
@click.option("--requests-per-minute", type=float, help="Request budget (10; 30 with High Volume).")
def fetch_zendesk(config_path, start, end, out, profile, region, endpoint_url, zendesk_url, requests_per_minute):
    """Pull the Incremental Ticket Event Export for a window.

    \b
    Example:
      ZENDESK_EMAIL=me@acme.com ZENDESK_API_TOKEN=... reconcile fetch zendesk \\
        --zendesk-url https://acme.zendesk.com --start 2026-11-23 --end 2026-11-24 --out zendesk.parquet
    """
    do_fetch("zendesk", config_path, start, end, out,
             {"zendesk": {"url": zendesk_url, "requests_per_minute": requests_per_minute}})


@fetch.command("bus-log")
@fetch_options
@click.option("--uri", help="s3://bucket/prefix or a folder of the log archive.")
@click.option("--format", "fmt", type=click.Choice(["cwl-export", "firehose", "api"]))
@click.option("--log-group", help="Log group, for --format api.")
def fetch_bus_log(config_path, start, end, out, profile, region, endpoint_url, uri, fmt, log_group):
    """Read the bus's CloudWatch Logs copy (S3 export, Firehose objects or the live API).

    \b
    Example:
      reconcile fetch bus-log --uri s3://logs-archive/exports --format cwl-export \\
        --start 2026-11-23 --end 2026-11-24 --out bus.parquet
    """
    do_fetch("bus_log", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url),
                   {"bus_log": {"uri": uri, "format": fmt, "log_group": log_group}}))


@fetch.command("sink")
@fetch_options
@click.option("--uri", help="s3://bucket/prefix or a folder of Spark's output.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "json"]))
@click.option("--id-column", help="Column holding the EventBridge id (default partitionKey).")
@click.option("--id-path", help="JSON path of the id inside `data`, e.g. $.id.")
def fetch_sink(config_path, start, end, out, profile, region, endpoint_url, uri, fmt, id_column, id_path):
    """Read Spark's Kinesis output (Parquet or JSON lines, hive-partitioned).

    \b
    Example:
      reconcile fetch sink --uri s3://spark-output/events --start 2026-11-23 --end 2026-11-24 --out sink.parquet
    """
    do_fetch("sink", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url),
                   {"sink": {"uri": uri, "format": fmt, "id_column": id_column, "id_path": id_path}}))


@fetch.command("dlq")
@fetch_options
@click.option("--queue-url", help="The SQS dead-letter queue (read without deleting).")
@click.option("--uri", help="An archive of DLQ messages (JSON lines) instead of the queue.")
def fetch_dlq(config_path, start, end, out, profile, region, endpoint_url, queue_url, uri):
    """Read the SQS dead-letter queue without consuming or deleting a message.

    \b
    Example:
      reconcile fetch dlq --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/zendesk-dlq \\
        --start 2026-11-23 --end 2026-11-24 --out dlq.parquet
    """
    do_fetch("dlq", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url), {"dlq": {"queue_url": queue_url, "uri": uri}}))


@fetch.command("metrics")
@fetch_options
@click.option("--rule", help="EventBridge rule name.")
@click.option("--event-bus", help="Event bus name, for rules on a custom bus.")
@click.option("--uri", help="A saved GetMetricData response instead of the API.")
def fetch_metrics(config_path, start, end, out, profile, region, endpoint_url, rule, event_bus, uri):
    """Read the rule's AWS/Events metrics (a sanity check, never a verdict).

    \b
    Example:
      reconcile fetch metrics --rule zendesk-to-kinesis --start 2026-11-23 --end 2026-11-24 --out metrics.parquet
    """
    do_fetch("metrics", config_path, start, end, out,
             merge(aws_overrides(profile, region, endpoint_url),
                   {"metrics": {"rule": rule, "event_bus": event_bus, "uri": uri}}))


@main.command()
@click.option("--state", help=STATE_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([state] uri).")
@aws_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def history(state, config_path, profile, region, endpoint_url, as_json):
    """Loss per hop per window over past runs, with later settlements of pending events folded in.

    \b
    Example:
      reconcile history
      reconcile history --state s3://audit/reconcile-state.duckdb --profile audit
    """
    from .state import State
    cfg = state_config(config_path, state, profile, region, endpoint_url)
    with State.open(cfg.state.uri, cfg.aws, write=False) as st:
        rows = st.history()
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'window':<34} {'status':<10} {'hop':<15} {'in':>10} {'out':>10} {'lost':>8} {'pending':>8} "
               f"{'loss rate':>10}")
    for r in rows:
        rate = f"{r['lost'] / r['in'] * 100:.4f} %" if r["in"] else "–"
        click.echo(f"{r['window_key']:<34} {r['status']:<10} {r['hop']:<15} {r['in']:>10,} {r['out']:>10,} "
                   f"{r['lost']:>8,} {r['pending']:>8,} {rate:>10}")


@main.command()
@click.option("--run", "runs", multiple=True,
              help="A run's output folder or s3:// prefix (repeatable, newest first). Default: the state's newest runs.")
@click.option("--state", help=STATE_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([state] uri).")
@aws_options
@click.option("--last", type=click.IntRange(min=1), default=30, show_default=True,
              help="How many of the state's newest runs to read.")
@click.option("--write", "write_to", type=click.Path(dir_okay=False),
              help="Also write the suggested lines as a CSV for [match] emission_model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def calibrate(runs, state, config_path, profile, region, endpoint_url, last, write_to, as_json):
    """How the emission model fared over the last runs, and the lines to add to it.

    Per API kind and field: how often its expected bus events reached the bus and as which types; per bus type:
    how often it matched and how often it was an orphan; custom field ids seen; suggested [match] emission_model
    lines (kinds tied to bus types by their sequence position, kinds absent from complete sequences).

    \b
    Example:
      reconcile calibrate --run demo-out/run --write extra-model.csv
    """
    import tempfile
    from . import publish
    from .calibrate import calibrate as do_calibrate, render_text
    cfg = state_config(config_path, state, profile, region, endpoint_url)
    if not runs:
        from .state import State
        with State.open(cfg.state.uri, cfg.aws, write=False) as st:
            runs = tuple(st.run_dirs()[:last])
    with tempfile.TemporaryDirectory(prefix="reconcile-calibrate-") as tmp:
        # published runs (s3://) are read from a local copy, as `trace` does
        local = [publish.download(r, Path(tmp) / str(i), cfg.aws) if publish.is_s3(r) else Path(r)
                 for i, r in enumerate(runs)]
        c = do_calibrate(local)
    if write_to:
        Path(write_to).write_text(c.model_csv())
    if as_json:
        click.echo(orjson.dumps(c.__dict__, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        click.echo(render_text(c))


@main.command()
@click.argument("event_id")
@click.option("--run", "runs", multiple=True,
              help="A run's output folder or s3:// prefix (repeatable). Default: every run the state knows.")
@click.option("--state", help=STATE_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([state] uri).")
@aws_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def trace(event_id, runs, state, config_path, profile, region, endpoint_url, as_json):
    """Every observation of one event across hops: times, verdict and where each record lies.

    EVENT_ID is an EventBridge id, a Zendesk event id or a ticket id.

    \b
    Example:
      reconcile trace 4be2a1c0-0c1e-4d38-9d8e-2f3a1b7c9e10 --run demo-out/run
    """
    from .trace import trace_runs
    cfg = state_config(config_path, state, profile, region, endpoint_url)
    if not runs:
        from .state import State
        with State.open(cfg.state.uri, cfg.aws, write=False) as st:
            runs = tuple(st.run_dirs())
    found = [t for t in trace_runs(event_id, runs, cfg.aws) if t.events or t.observations]
    if as_json:
        click.echo(orjson.dumps([t.__dict__ for t in found], option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC,
                                default=str).decode())
    else:
        for t in found:
            click.echo(f"run {t.run_dir}")
            for e in t.events:
                click.echo(f"  event {e['source_id']} (ticket {e['ticket_id']}, {e['kind']}, {e['event_time']:%Y-%m-%dT%H:%M:%S}Z)"
                           f" eb_id {e['eb_id'] or '-'}: {e['verdict']} ({e['cause'] or 'ok'}), matched {e['match_kind']}")
            for o in t.observations:
                extra = " ".join(f"{k}={o[k]}" for k in ("error_code", "sequence_number", "committed", "replay_name")
                                 if o[k] is not None)
                click.echo(f"  {o['observed_at']:%Y-%m-%dT%H:%M:%S.%f}  {o['hop']:<7} {o['event_type'] or '':<40} "
                           f"{o['source_ref']}  {extra}")
            for a in t.attempts:  # recovery attempts (reconcile recover's journal, as the run saw it)
                sent = f"{a['sent_at']:%Y-%m-%dT%H:%M:%S}Z" if a["sent_at"] else "-"
                click.echo(f"  recovery {a['route']} {a['status']} (sent {sent}, attempts {a['attempts']}) of "
                           f"{a['eb_id']} to {a['target'] or '-'}, plan {a['plan_digest'][:12]}"
                           + "".join(f" {k}={a[k]}" for k in ("sequence_number", "replay_name", "error") if a[k]))
    if not found:
        click.echo(f"Error: {event_id} is not in any run searched ({len(runs)}). Check the id, or pass --run.",
                   err=True)
        sys.exit(4)


@main.command()
@click.argument("run_dir", metavar="DIR")
@click.option("--against-sources", is_flag=True,
              help="Also HEAD every S3 object the run read (not its data) and list those changed or vanished since.")
@click.option("--profile", help="AWS profile (for --against-sources or an s3:// DIR).")
@click.option("--region", help="AWS region.")
@click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON on stdout.")
def verify(run_dir, against_sources, profile, region, endpoint_url, as_json):
    """Re-prove a run from its evidence alone: check every sha256 in its manifest, recompute every figure, re-render
    the outputs and compare them byte for byte. No network unless --against-sources.

    DIR is a run's output folder, a .tar.gz made by `run --bundle`, or an s3:// prefix made by `run --out s3://`.
    Exits 0 when everything matches, 5 naming each file and figure that differs.

    \b
    Example:
      reconcile verify demo-out/run
      reconcile verify run.tar.gz --against-sources --profile audit
    """
    from . import publish
    from .verify import check_sources, load_manifest, verify as do_verify
    aws = config_mod.build(None, aws_overrides(profile, region, endpoint_url)).aws
    with tempfile.TemporaryDirectory(prefix="reconcile-bundle-") as tmp:
        if publish.is_s3(run_dir):
            where = publish.download(run_dir, Path(tmp), aws)
        elif Path(run_dir).is_file():
            where = publish.unpack(Path(run_dir), Path(tmp))
        elif Path(run_dir).is_dir():
            where = Path(run_dir)
        else:
            raise ConfigError(f"{run_dir} is neither a run folder nor a bundle. Give the folder holding "
                              f"manifest.json, a .tar.gz from --bundle or an s3:// prefix.")
        result = do_verify(where)
        sources = check_sources(load_manifest(where)[0], aws) if against_sources else None
    if as_json:
        click.echo(orjson.dumps({
            "ok": result.ok and not (sources and sources.changes),
            "differences": [{"file": d.file, "what": d.what} for d in result.differences],
            "notes": result.notes,
            "sources": None if sources is None else {
                "checked": sources.checked, "not_objects": sources.not_objects,
                "changes": [c.__dict__ for c in sources.changes]},
        }, option=orjson.OPT_INDENT_2).decode())
    else:
        for d in result.differences:
            click.echo(f"DIFFERS {d}")
        for n in result.notes:
            click.echo(f"note: {n}", err=True)
        if sources is not None:
            for c in sources.changes:
                click.echo(f"{c.status.upper()} {c}")
            skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(sources.not_objects.items()))
            counts = ", ".join(f"{sum(c.status == s for c in sources.changes):,} {s}"
                               for s in ("changed", "vanished", "unchecked"))
            click.echo(f"checked {sources.checked:,} source objects: {counts}"
                       + (f"; inputs that are not objects (not re-checkable): {skipped}" if skipped else ""), err=True)
        if result.ok:
            click.echo(f"verified: {run_dir} matches its evidence byte for byte", err=True)
    if not result.ok:
        raise result.error(run_dir)
    if sources is not None and sources.changes:
        moved = [c for c in sources.changes if c.status != "unchecked"]
        if not moved:
            raise SourceError(f"{len(sources.changes):,} input(s) of {run_dir} could not be checked (listed above). "
                              f"Check the credentials (--profile) and --endpoint-url.")
        kinds = sorted({c.status for c in moved})
        raise VerifyError(f"{len(moved):,} input(s) of {run_dir} {' or '.join(kinds)} since the run (listed above): "
                          f"its figures no longer describe the live stores.")


@main.command("export-logs")
@click.option("--log-group", required=True, help="The log group the EventBridge rule writes to.")
@click.option("--bucket", required=True, help="Destination bucket (its policy must allow logs.amazonaws.com).")
@click.option("--prefix", default="exports", show_default=True, help="Destination prefix.")
@window_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--profile", help="AWS profile.")
@click.option("--region", help="AWS region.")
@click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL).")
@click.option("--wait", default="1h", show_default=True, help="How long to wait for the task.")
def export_logs(log_group, bucket, prefix, day, start, end, as_of, config_path, profile, region, endpoint_url, wait):
    """Export the bus log copy for a window (with its read margins) to S3 and wait for the task.

    Prints the S3 URI to give `run` as [bus_log] uri (format cwl-export). Exits 3 if the task has not finished
    within --wait.

    \b
    Example:
      reconcile export-logs --log-group /aws/events/zendesk --bucket logs-archive --prefix exports/2026-11-23 \
        --date 2026-11-23
    """
    from .logexport import export_window
    from .window import parse_duration
    cfg = config_mod.build(config_path, aws_overrides(profile, region, endpoint_url))
    window = resolve_window(cfg, day, start, end, as_of)
    task = export_window(log_group, bucket, prefix, window, cfg.aws, wait=parse_duration(wait).total_seconds())
    click.echo(f"export task {task.task_id}: {task.status}", err=True)
    click.echo(task.uri)
    sys.exit(0 if task.status == "COMPLETED" else 3)
