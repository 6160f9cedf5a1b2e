"""The commands that reconcile a window or simulate one: run (and --dry-run), check, demo, simulate, export-logs."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click
import orjson

from . import config as config_mod
from . import emission
from .cli_options import (aws_options, aws_overrides, json_logs, merge, parse_sets, resolve_window, say,
                          window_options)
from .errors import ConfigError, NoState, ReconcileError

logger = logging.getLogger("reconcile")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@window_options
@click.option("--out", help="Output folder (default reconcile-out/<window>), or s3://bucket/prefix to publish the run "
              "there (files first, manifest.json last). {window} in it is the window's key, so a fixed --out on a "
              "schedule gives each window its own folder or prefix.")
@click.option("--replace", is_flag=True, help="With --out s3://..., replace a run already published there.")
@click.option("--bundle", type=click.Path(dir_okay=False),
              help="Also pack the run's evidence bundle into this .tar.gz ({window} is the window's key, as in --out).")
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
      reconcile run --config reconcile.toml --date 2026-11-23 --out out/2026-11-23
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
    target = (out or str(Path("reconcile-out") / window.key)).replace("{window}", window.key)
    bundle = bundle.replace("{window}", window.key) if bundle else bundle  # a fixed --bundle on a schedule, as --out
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
            raise ConfigError("--replace is for --out s3://...: a local --out folder is replaced by a re-run of the "
                              "same window without it, and a run of another window is refused there (give each "
                              "window its own folder: --out 'runs/{window}').")
        outcome = execute(cfg, window, Path(target), audience=audience, progress=not (no_progress or json_logs()),
                          state=state_path)
        packed = pack(outcome, bundle)
        # After the manifest: an alert describes a finished run; its failure never changes the exit code.
        emit(outcome, as_json, alert=alert.send(cfg, outcome.summary, str(outcome.report.resolve())), bundle=packed)
        sys.exit(outcome.exit_code)
    publish.ensure_free(target, cfg.aws, replace, window.key, stateless=state_path is None)  # before reading anything
    tmp = Path(tempfile.mkdtemp(prefix="reconcile-run-"))
    try:
        outcome = execute(cfg, window, tmp / window.key, audience=audience,
                          progress=not (no_progress or json_logs()), state=state_path, location=target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    packed = pack(outcome, bundle)
    try:
        report_uri = publish.publish(outcome.out_dir, target, cfg.aws, replace=replace)
    except ReconcileError as e:
        # The run is recorded (the state names the prefix): its folder is kept, not deleted with the temporary
        # folder, and its alert still goes out (a loss is not silenced by an upload that failed).
        logger.error("%s was not published (%s); the run itself is finished%s, and its folder is kept at %s: "
                     "`reconcile publish %s --out %s` puts it there", target, e,
                     " and recorded in the state" if state_path else "", outcome.out_dir, outcome.out_dir, target)
        alert.send(cfg, outcome.summary, str(outcome.report.resolve()))
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    # After the manifest (and the upload): an alert describes a finished run; its failure never changes the exit code.
    emit(outcome, as_json, report_uri, alert.send(cfg, outcome.summary, report_uri), bundle=packed)
    sys.exit(outcome.exit_code)


def pack(outcome, bundle: str | None) -> dict | None:
    """--bundle's archive of the committed run: what became of it. Its failure (an unwritable path, a full disk) is
    an error line and a status in --json, never the exit code: that is the run's verdict (a loss read as exit 4, a
    config error, with no alert sent)."""
    from . import publish
    if not bundle:
        return None
    try:
        return {"status": "written", "path": str(publish.pack(outcome.out_dir, Path(bundle)))}
    except (OSError, ReconcileError) as e:
        logger.error("--bundle %s could not be written (%s); the run itself is finished and recorded", bundle, e)
        return {"status": "failed", "path": bundle, "error": str(e)}


def dry_run_plan(cfg, window, target: str, state_path) -> str:
    """What a run would read (each store and the time range) and write, without touching anything."""
    from .sources import REGISTRY
    iso = "%Y-%m-%dT%H:%M:%SZ"
    lines = [f"window     {window.start:{iso}} → {window.end:{iso}} (Zendesk events by event time)",
             f"read       downstream stores over {window.read_start:{iso}} → {window.read_end:{iso}}",
             f"as of      {window.as_of:{iso}}: missing events younger than "
             f"{window.horizon.total_seconds() / 3600:g} h are pending"]
    for spec in REGISTRY:
        what = spec.describe(cfg) if spec.configured(cfg) else f"NOT CONFIGURED ({spec.hint})"
        lines.append(f"{spec.name:<10} {what}")
    state_line, wide = _with_state(cfg, window, state_path)
    lines.append(state_line)
    if wide.sink_from:
        lines.append(f"sink-read  back from {wide.sink_read_start:{iso}} for the carried events ([window] "
                     f"carry_back {cfg.window.carry_back})")
    if wide.sink_read_end > wide.read_end:
        why = "a recovery sent events of this window" if wide.sink_until else "as of then: events that landed late"
        lines.append(f"sink-read  on to {wide.sink_read_end:{iso}}: {why}")
    lines.append(f"write      {target}/ (report.html, summary.json, gaps.csv, verdicts.parquet, settlements.parquet, "
                 f"evidence/, manifest.json)")
    return "\n".join(lines)


def _with_state(cfg, window, state_path):
    """The state line of the plan, and the window as the state widens the sink's read (run.with_state, as a run
    does), the state read only."""
    import duckdb

    from .errors import ReconcileError
    from .run import with_state
    from .state import State
    if not state_path:
        return "state      none (--no-state)", window
    try:
        with State.open(state_path, cfg.aws, write=False) as st:
            wide, carried = with_state(window, st)
    except (ReconcileError, duckdb.Error, OSError) as e:  # the plan is printed whatever the state's trouble
        if isinstance(e, NoState):
            return f"state      {state_path} (none yet: the run creates it)", window
        return f"state      {state_path} (not readable now: {e})", window
    n = 0 if carried is None else carried.num_rows
    return f"state      {state_path}: {n:,} pending event(s) of earlier windows to judge again", wide



def emit(outcome, as_json: bool, report: str | None = None, alert: dict | None = None,
         bundle: dict | None = None) -> None:
    s = outcome.summary
    v = s["verdicts"]
    shown = [f"{r['label']} {v.get(r['verdict'], 0):,}" for r in emission.verdict_rows()
             if r["verdict"] != "excluded" and (r["in_funnel"] or v.get(r["verdict"]))]
    # on stderr in both modes: with --log-format json it is the status record a log shipper reads (operations.md)
    say(f"{s['status']}: {s['events']:,} expected bus events · " + " · ".join(shown),
        status=s["status"], exit_code=s["exit_code"], events=s["events"], verdicts=v)
    if as_json:
        # Where to look first for a scheduler: the report (local path or s3:// URI), then every figure of the summary,
        # then what became of the alert (docs/operations.md).
        click.echo(orjson.dumps({"report": report or str(outcome.report.resolve()), **s,
                                 "alert": alert or {"cloudwatch": {"status": "off"}, "sns": {"status": "off"}},
                                 **({"bundle": bundle} if bundle else {})},
                                option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(report or str(outcome.report))



@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--zendesk-url", help="Zendesk account URL (or ZENDESK_URL).")
@aws_options
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config key.")
@click.option("--json", "as_json", is_flag=True, help="Print each store's answer as JSON on stdout.")
def check(config_path, zendesk_url, profile, region, endpoint_url, sets, as_json):
    """Check the config's values and reach every configured store with one cheap call, reading nothing.

    One S3 object listed per bucket store, SQS GetQueueAttributes, one Zendesk export request, ListMetrics and one
    GetMetricData.
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


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo-out", show_default=True)
@click.option("--events", type=int, default=20_000, show_default=True, help="Zendesk events in the day.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--day", default="2026-11-23", show_default=True, help="The (first) simulated UTC day.")
@click.option("--days", type=click.IntRange(1, 14), default=1, show_default=True,
              help="Consecutive days, each run daily with the state carried over.")
@click.option("--audience", type=click.Choice(["daily", "incident", "audit"]), default="daily", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--no-progress", is_flag=True)
@click.option("--state", help=f"Run-state file (default: {config_mod.DEFAULT_STATE}; never RECONCILE_STATE or [state] "
              f"uri, which name a real state). The demo's simulated runs are recorded there like real ones, so "
              f"`reconcile trace` and `history` find them.")
@click.option("--recover", "with_recovery", is_flag=True,
              help="Then recover the day's lost events: plan, apply into moto's Kinesis, move the stream into the "
                   "sink (a stand-in Spark job), and judge the window again.")
def demo(out, events, seed, day, days, audience, as_json, no_progress, state, with_recovery):
    """Simulate a pipeline day with faults at every hop, serve it like the real stores, reconcile it.

    The Zendesk API is served over HTTP on loopback and the AWS stores by moto's server (the demo extra:
    the wheel installed with [demo]), so the demo runs the same code paths as a production run. Prints the report
    path and how many injected faults were found.

    \b
    Example:
      reconcile demo --out demo-out --events 20000 --seed 7
    """
    from .simulate.demo import run_demo
    # --state, else the default state in the current folder, never RECONCILE_STATE: in a production shell that names
    # the production state (or an s3:// one the demo's moto cannot reach), which simulated runs must not enter
    state_uri = state or config_mod.DEFAULT_STATE
    if not state and os.environ.get("RECONCILE_STATE"):
        say(f"The demo records its simulated runs in {state_uri}, not in RECONCILE_STATE (a real state): pass "
            f"--state {state_uri} to trace them.", logging.WARNING)
    if with_recovery:
        if days != 1:
            raise click.UsageError("--recover runs one day: drop --days.")
        from .simulate.recover_demo import run_recover_demo
        outcome, found = run_recover_demo(Path(out), events=events, seed=seed, day=day, audience=audience,
                                          progress=not (no_progress or json_logs()), state=state_uri)
    else:
        outcome, found = run_demo(Path(out), events=events, seed=seed, day=day, days=days, audience=audience,
                                  progress=not (no_progress or json_logs()), state=state_uri)
    for line in found:
        say(line)
    emit(outcome, as_json)
    sys.exit(outcome.exit_code)


@click.command()
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



@click.command("export-logs")
@click.option("--log-group", required=True, help="The log group the EventBridge rule writes to.")
@click.option("--bucket", required=True, help="Destination bucket (its policy must allow logs.amazonaws.com).")
@click.option("--prefix", default="exports", show_default=True, help="Destination prefix.")
@window_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--profile", help="AWS profile.")
@click.option("--region", help="AWS region.")
@click.option("--endpoint-url", help="AWS endpoint (or AWS_ENDPOINT_URL).")
@click.option("--wait", default="1h", show_default=True, help="How long to wait for the task.")
@click.option("--apply", is_flag=True, help="Create the export task (it writes into the bucket). Without it, print "
                                            "what would be asked for and change nothing.")
def export_logs(log_group, bucket, prefix, day, start, end, as_of, config_path, profile, region, endpoint_url, wait,
                apply):
    """Print the CloudWatch Logs export of the bus log copy for a window; with --apply, start it and wait for it.

    Without --apply, prints the CreateExportTask it would start and exits 0 (nothing is sent to AWS). With --apply,
    prints the S3 URI to give `run` as [bus_log] uri (format cwl-export); exits 3 if the task has not finished
    within --wait.

    \b
    Example:
      reconcile export-logs --log-group /aws/events/zendesk --bucket logs-archive --prefix exports/2026-11-23 \
        --date 2026-11-23 --apply
    """
    from .logexport import export_window, plan
    from .window import parse_duration
    cfg = config_mod.build(config_path, aws_overrides(profile, region, endpoint_url))
    window = resolve_window(cfg, day, start, end, as_of)
    wait_s = parse_duration(wait).total_seconds()
    if not apply:
        click.echo("\n".join(plan(log_group, bucket, prefix, window)))
        click.echo("dry run: nothing was sent to AWS; add --apply to create the export task", err=True)
        return
    task = export_window(log_group, bucket, prefix, window, cfg.aws, wait=wait_s)
    click.echo(f"export task {task.task_id}: {task.status}", err=True)
    click.echo(task.uri)
    sys.exit(0 if task.status == "COMPLETED" else 3)

