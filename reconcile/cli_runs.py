"""The commands that read finished runs: history, calibrate, trace, verify, publish."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import click
import orjson

from . import atomic
from . import config as config_mod
from .console import inert
from .cli_options import STATE_HELP, aws_options, aws_overrides, state_config
from .errors import ConfigError, NotARun, SourceError, VerifyError

logger = logging.getLogger(__name__)


def _say(line: str) -> None:
    """A line of `trace`'s text: what it shows of the stores (error codes, kinds, causes, object keys) made inert,
    so an escape sequence or a carriage return in them cannot rewrite the line on a terminal."""
    click.echo(inert(line))


@click.command()
@click.option("--state", help=STATE_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([state] uri).")
@aws_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def history(state, config_path, profile, region, endpoint_url, as_json):
    """Loss per hop per window over past runs, with later settlements of pending events folded in.

    A window's status is its figures' as they stand now (over a hop's threshold: loss; events pending: pending);
    `exit` is what its run exited with.

    \b
    Example:
      reconcile history
      reconcile history --state s3://audit/reconcile-state.duckdb --profile audit
    """
    from .state import State
    from .summary import number, percent
    cfg = state_config(config_path, state, profile, region, endpoint_url)
    with State.open(cfg.state.uri, cfg.aws, write=False) as st:
        rows = st.history()
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'window':<34} {'status':<10} {'exit':>4} {'hop':<15} {'in':>10} {'out':>10} {'lost':>8} "
               f"{'recovered':>9} {'pending':>8} {'loss rate':>10}")
    for r in rows:
        rate = percent(r["loss_rate"], 4) if r["in"] else "–"
        # recovered "–": not kept yet (a window recorded before the state kept it)
        click.echo(f"{r['window_key']:<34} {r['status']:<10} {r['exit_code']:>4} {r['hop']:<15} {r['in']:>10,} "
                   f"{r['out']:>10,} {r['lost']:>8,} {number(r['recovered']):>9} {r['pending']:>8,} {rate:>10}")


@click.command()
@click.option("--run", "runs", multiple=True,
              help="A run's output folder or s3:// prefix (repeatable, newest first). Default: the state's newest runs.")
@click.option("--state", help=STATE_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([state] uri).")
@aws_options
@click.option("--last", type=click.IntRange(min=1), default=30, show_default=True,
              help="How many of the state's newest runs to read.")
@click.option("--write", "write_to", type=click.Path(dir_okay=False),
              help="Also write a CSV for [match] emission_model: the suggested lines, with the model's other lines of "
                   "the kinds they name (such a file replaces every line of each kind it names).")
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
    from .calibrate import calibrate as do_calibrate, render_text, usable
    cfg = state_config(config_path, state, profile, region, endpoint_url)
    from_state = not runs
    if from_state:
        from .state import State
        with State.open(cfg.state.uri, cfg.aws, write=False) as st:
            runs = tuple(st.run_dirs()[:last])
    with tempfile.TemporaryDirectory(prefix="reconcile-calibrate-") as tmp:
        # published runs (s3://) are read from a local copy, as `trace` does; a run the state records whose folder
        # is gone or unfinished is left out, as trace leaves it out (one given with --run is an error)
        local = []
        for i, r in enumerate(runs):
            try:
                local.append(usable(publish.download(r, Path(tmp) / str(i), cfg.aws) if publish.is_s3(r) else Path(r)))
            except (ConfigError, NotARun) as e:
                if not from_state:
                    raise
                logger.warning("not calibrated from: the run the state records at %s is not there, did not finish, "
                               "or predates the emission model (%s)", r, e)
        c = do_calibrate(local)
    if write_to:
        atomic.write_bytes(Path(write_to), c.model_csv().encode())
    if as_json:
        click.echo(orjson.dumps(c.__dict__, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        click.echo(render_text(c))


@click.command()
@click.argument("event_id")
@click.option("--run", "runs", multiple=True,
              help="A run's output folder or s3:// prefix (repeatable). Default: every run the state knows.")
@click.option("--state", help=STATE_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([state] uri).")
@aws_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def trace(event_id, runs, state, config_path, profile, region, endpoint_url, as_json):
    """Every observation of one event across hops: times, verdict and where each record lies.

    EVENT_ID is an EventBridge id, a Zendesk event id or a ticket id. With the state (the default, or --state),
    an event a run left pending shows what a later run settled it as.

    \b
    Example:
      reconcile trace 4be2a1c0-0c1e-4d38-9d8e-2f3a1b7c9e10 --run demo-out/run
    """
    from .state import State
    from .trace import pending_ids, trace_runs, with_settlements
    cfg = state_config(config_path, state, profile, region, endpoint_url)
    given_runs = bool(runs)
    if not runs:
        with State.open(cfg.state.uri, cfg.aws, write=False) as st:
            runs = tuple(st.run_dirs())
    gone: list[str] = []
    found = [t for t in trace_runs(event_id, runs, cfg.aws, skip_gone=not given_runs, skipped=gone)
             if t.events or t.observations or t.settled_here]
    if pending_ids(found) and (state or not given_runs):  # the state at hand: what later runs settled them as
        with State.open(cfg.state.uri, cfg.aws, write=False) as st:
            found = with_settlements(found, st.settled(pending_ids(found)))
    if as_json:
        click.echo(orjson.dumps([t.__dict__ for t in found], option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC,
                                default=str).decode())
    else:
        for t in found:
            _say(f"run {t.run_dir}")
            for e in t.events:
                when = f"{e['event_time']:%Y-%m-%dT%H:%M:%S}Z" if e["event_time"] else "no time"
                if e["verdict"] == "orphan":  # a bus record no Zendesk event of the run explains (gaps.csv)
                    _say(f"  orphan eb_id {e['eb_id']} (ticket {e['ticket_id'] or '-'}, {e['kind'] or '-'}, "
                         f"{when}): no Zendesk event of this run's window explains it ({e['cause']})")
                    continue
                _say(f"  event {e['source_id']} (ticket {e['ticket_id']}, {e['kind']}, {when})"
                     f" eb_id {e['eb_id'] or '-'}: {e['verdict']} ({e['cause'] or 'ok'}), matched {e['match_kind']}")
            for s in t.settled_here:  # a pending event of an earlier window, judged again by this run
                when = f"{s['event_time']:%Y-%m-%dT%H:%M:%S}Z" if s["event_time"] else "no time"
                late = f", {s['lateness_s']:.0f} s late" if s["lateness_s"] is not None else ""
                _say(f"  settled here: event {s['source_id']} of {s['window_key']} (ticket {s['ticket_id']}, "
                     f"{s['kind']}, {when}) eb_id {s['eb_id'] or '-'}: {s['verdict']}{late} "
                     f"({s['cause'] or 'ok'})")
            if t.observations and not t.events and not t.settled_here:
                _say("  no event of this run's window names this id: the records below were read in its margins")
            for o in t.observations:
                extra = " ".join(f"{k}={o[k]}" for k in ("error_code", "sequence_number", "committed", "replay_name")
                                 if o[k] is not None)
                if o["payload_parsed"] is False:  # its Zendesk fields are its bus log copy's (observations.sql)
                    extra += (" (payload not parsed: the bus log holds the same bytes under this id; fields from "
                              "its copy)")
                _say(f"  {o['observed_at']:%Y-%m-%dT%H:%M:%S.%f}  {o['hop']:<7} {o['event_type'] or '':<40} "
                     f"{o['source_ref']}  {extra}")
            for s in t.settled_later:
                late = f", {s['lateness_s']:.0f} s late" if s["lateness_s"] is not None else ""
                _say(f"  settled later: event {s['source_id']} {s['verdict']}{late}, by the run of "
                     f"{s['settled_in']} ({s['settled_in_run'] or 'its folder unknown'})")
            for a in t.attempts:  # recovery attempts (reconcile recover's journal, as the run saw it)
                sent = f"{a['sent_at']:%Y-%m-%dT%H:%M:%S}Z" if a["sent_at"] else "-"
                _say(f"  recovery {a['route']} {a['status']} (sent {sent}, attempts {a['attempts']}) of "
                     f"{a['eb_id']} to {a['target'] or '-'}, plan {a['plan_digest'][:12]}"
                     + "".join(f" {k}={a[k]}" for k in ("sequence_number", "replay_name", "error") if a[k]))
    if not found and gone and len(gone) == len(runs):
        click.echo(f"Error: no run could be searched for {event_id}: the {len(runs)} run(s) the state records are not "
                   f"there or did not finish (see the warnings above). Pass a run's folder with --run.", err=True)
        sys.exit(4)
    if not found:
        unread = f"; {len(gone)} more not there or unfinished (see the warnings above)" if gone else ""
        click.echo(f"Error: {event_id} is not in any run searched ({len(runs) - len(gone)}{unread}). Check the id, "
                   f"or pass --run.", err=True)
        sys.exit(4)


@click.command()
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
    from .runfolder import load_manifest
    from .verify import verify as do_verify
    from .verify_sources import check_sources
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


@click.command(name="publish")
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--out", required=True, help="s3://bucket/prefix to publish the run to ({window}: the run's window key, "
                                           "as `run --out` takes it).")
@click.option("--replace", is_flag=True, help="Replace a run of the same window already published there.")
@aws_options
def publish_run(run_dir, out, replace, profile, region, endpoint_url):
    """Publish a finished run's folder to S3, as `run --out s3://...` does: a run whose upload failed keeps its
    folder (the error names it), and this puts it where it was to go (where a state records it), without judging
    the window again.

    The folder is verified first (every sha256, every figure): a run that does not match its evidence is not
    published. Every file goes up, then manifest.json.

    \b
    Example:
      reconcile publish /tmp/reconcile-run-x1y2/2026-11-23 --out s3://audit/runs/2026-11-23 --replace
    """
    from . import publish
    from .runfolder import RunFolder
    from .verify import verify as do_verify
    if not publish.is_s3(out):
        raise ConfigError(f"--out {out!r} is not an s3:// prefix: a local copy of a run folder needs no publishing "
                          f"(copy the folder; `reconcile verify` proves the copy).")
    aws = config_mod.build(None, aws_overrides(profile, region, endpoint_url)).aws
    result = do_verify(Path(run_dir))
    for d in result.differences:
        click.echo(f"DIFFERS {d}", err=True)
    if not result.ok:
        raise result.error(run_dir)
    folder = RunFolder(Path(run_dir))
    window_key = folder.window_key()
    out = out.replace("{window}", window_key or "{window}")  # as `run --out` expands it (a verified run has one)
    publish.ensure_free(out, aws, replace, window_key, stateless=not folder.recorded_in_a_state())
    report_uri = publish.publish(Path(run_dir), out, aws, replace=replace)
    click.echo(report_uri)
