"""`reconcile recover`: plan the recovery of a run's lost events, then (`--apply`) execute the reviewed plan."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import click
import orjson

from . import config as config_mod
from .runfolder import RunFolder
from .cli_options import STATE_HELP, aws_options, aws_overrides, json_logs, merge, parse_sets, say
from .errors import ConfigError


def recover_config(config_path, run_dir: Path, sets, profile, region, endpoint_url, state) -> config_mod.Config:
    """--config when given; otherwise the config the run itself used (its manifest), so a plan needs only the run
    folder and the [recover] keys (--set recover.stream=...)."""
    overrides = merge(aws_overrides(profile, region, endpoint_url), {"state": {"uri": state}}, parse_sets(sets))
    if config_path:
        return config_mod.build(config_path, overrides)
    manifest = RunFolder(run_dir).manifest
    if not manifest.is_file():
        raise ConfigError(f"{run_dir} has no manifest.json to take the run's config from. Pass --config.")
    used = orjson.loads(manifest.read_bytes()).get("config", {})
    used = {sec: {k: v for k, v in (vals or {}).items() if v is not None and v != "[redacted]"}
            for sec, vals in used.items() if isinstance(vals, dict)}
    used.pop("state", None)  # where the state is: this command's own --state / RECONCILE_STATE / default
    return config_mod.build(None, merge(used, overrides))


def journal_counts(cfg: config_mod.Config, digest: str) -> str:
    """What the journal holds for a plan so far, read-only (a state that does not exist yet holds nothing)."""
    import duckdb

    from .errors import StateError
    from .state import State
    try:
        with State.open(cfg.state.uri, cfg.aws, write=False) as st:
            rows = st.journal(digest).to_pylist()
    except (StateError, duckdb.CatalogException):  # no state yet, or one no apply has written to
        return "nothing applied yet"
    by: dict[str, int] = {}
    for r in rows:
        by[r["status"]] = by.get(r["status"], 0) + 1
    return ", ".join(f"{k} {v:,}" for k, v in sorted(by.items())) or "nothing applied yet"


def require_run_state(cfg: config_mod.Config, plan: dict) -> None:
    """The journal must go to the state the run was recorded in: the next run of the window reads it from there to
    judge the sent events `recovered`, and a later plan reads it to never send an event twice. (An s3:// state is
    uploaded after every journal write, under its lock: State.write_journal.) Checked here before anything else, and
    again by the apply under the state's lock (a run of the window may come in between)."""
    from .recover.plan import require_run
    from .state import State
    with State.open(str(cfg.state.uri), cfg.aws, write=False) as st:
        require_run(st, plan, str(cfg.state.uri))


def unappliable(cfg: config_mod.Config, plan: dict) -> str | None:
    """Why an apply of `plan` would be refused for its state now (require_run_state), or None: said when the plan is
    made, not first when it is applied (a run made with --no-state is recorded nowhere an apply can journal to)."""
    from .errors import ReconcileError
    try:
        require_run_state(cfg, plan)
    except ReconcileError as e:
        return str(e)
    return None


@click.command("recover")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--apply", "plan_path", type=click.Path(exists=True),
              help="Execute this reviewed plan (plan.json or its folder): PutRecords / StartReplay, journaled.")
@click.option("--digest", help="With --apply: the reviewed plan's sha256 (or a prefix); any other plan is refused.")
@click.option("--out", type=click.Path(file_okay=False), help="Where to write the plan (default RUN_DIR/recovery).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config file (default: the config the run used, from its manifest).")
@aws_options
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any config key.")
@click.option("--state", help=STATE_HELP + " The recovery journal lives there.")
@click.option("--limit", type=click.IntRange(min=1), help="With --apply: send at most this many events now.")
@click.option("--resend-in-doubt", is_flag=True,
              help="With --apply: also send events an earlier apply died while sending (they may arrive twice).")
@click.option("--dry-run", is_flag=True, help="With --apply: check the plan and show what is left; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan's counts / the apply's outcome as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def recover(run_dir, plan_path, digest, out, config_path, profile, region, endpoint_url, sets, state, limit,
            resend_in_doubt, dry_run, as_json, no_progress):
    """Plan the recovery of a run's lost events; with --apply, execute the reviewed plan once.

    Without --apply nothing is written to AWS (no write permission needed): the plan goes to RUN_DIR/recovery
    (plan.json, plan.csv, plan.sha256). Review plan.csv, then apply plan.json with its digest. An apply stopped
    (Ctrl-C, --limit) resumes where it stopped; no event is sent twice. Exit 0: nothing left to send; 1: events
    left (--limit, failed, or in doubt).

    \b
    Example:
      reconcile recover out/2026-11-23 --set recover.stream=zendesk-events
      reconcile recover --apply out/2026-11-23/recovery/plan.json --digest 3f2a9c41be07
    """
    from .recover import apply as apply_mod
    from .recover import plan as plan_mod
    if bool(run_dir) == bool(plan_path):
        raise click.UsageError("Pass either RUN_DIR (make a plan) or --apply PLAN (execute a reviewed one).")
    if plan_path is None:
        if digest or limit or resend_in_doubt or dry_run:
            raise click.UsageError("--digest, --limit, --resend-in-doubt and --dry-run go with --apply PLAN.")
        run = Path(run_dir)
        cfg = recover_config(config_path, run, sets, profile, region, endpoint_url, state)
        plan = plan_mod.build(run, cfg)
        path, sha = plan_mod.write(plan, Path(out) if out else RunFolder(run).recovery)
        c = plan["counts"]
        if as_json:
            click.echo(orjson.dumps({"plan": str(path), "digest": sha, **c}, option=orjson.OPT_INDENT_2).decode())
        else:
            t = plan["target"]
            if c["reput"]:
                say(f"re-puts go to Kinesis stream {t['stream']} in {t.get('region')}", **t)
            if c["replay"]:
                say(f"replays: archive {t['archive_arn']} to the bus of rule {t['rule_arn']}", **t)
            say(f"plan: {c['reput']:,} exact re-put · {c['replay']:,} by replay in {c['replay_windows']:,} window(s) "
                f"(they also resend up to {c['replay_duplicates']:,} delivered event(s)) · {c['unrecoverable']:,} "
                f"unrecoverable · {c['lost_before_bus']:,} lost before the bus (listed, never re-published)",
                digest=sha, **c)
            say(f"review {path.with_name('plan.csv')}, then: reconcile recover --apply {path} --digest {sha[:12]}")
            if (why := unappliable(cfg, plan)) is not None:
                say(f"warning: this plan cannot be applied yet: {why}", logging.WARNING)
            click.echo(str(path))
        return
    if not dry_run and not (digest and re.fullmatch(r"[0-9a-fA-F]{12,64}", digest)):
        raise click.UsageError("--apply sends events: pass --digest with the reviewed plan's sha256 (at least its "
                               "first 12 hex digits, as `reconcile recover RUN_DIR` printed it).")
    plan_file = Path(plan_path)
    plan, sha = plan_mod.load(plan_file, digest)
    plan_mod.require_current(plan)
    cfg = recover_config(config_path, Path(plan["run"]["dir"]), sets, profile, region, endpoint_url, state)
    if not dry_run:
        require_run_state(cfg, plan)
    if dry_run:
        c = plan["counts"]
        click.echo(f"plan {sha} for window {plan['run']['window_key']}: {c['reput']:,} re-put to "
                   f"{plan['target']['stream']}, {c['replay']:,} in {c['replay_windows']:,} replay(s) from "
                   f"{plan['target']['archive_arn']}; journal in {cfg.state.uri}: {journal_counts(cfg, sha)}. "
                   f"Nothing sent (--dry-run).")
        return
    outcome = apply_mod.apply(plan_file, cfg, cfg.state.uri, digest=digest, limit=limit,
                              resend_in_doubt=resend_in_doubt, progress=not (no_progress or json_logs()))
    o = outcome
    if as_json:
        click.echo(orjson.dumps(o.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        say(f"plan {sha[:12]}: {o.planned:,} planned · {o.sent:,} sent · {o.landed_already:,} had landed already · "
            f"{o.sent_by_other_plan:,} sent by an earlier plan · {o.failed:,} failed · {o.in_doubt:,} in doubt"
            + (f" · stopped at --limit, {o.remaining:,} left" if o.stopped_at_limit else "")
            + (f" · replays {', '.join(o.replays)}" if o.replays else ""), **o.as_dict())
        if o.left:
            say(f"{o.left:,} event(s) not sent yet: apply again to resume (no event is sent twice).")
        if o.held_in_doubt:
            say(f"{o.held_in_doubt:,} event(s) in doubt (an apply died mid-call; not in the sink): an apply again "
                f"sends them only with --resend-in-doubt (downstream may then see them twice), and finds them once "
                f"they land.")
        if o.held_by_replays:
            say(f"{o.held_by_replays:,} event(s) in {o.replay_windows_held:,} replay window(s) held (they hold an "
                f"event sent, or maybe sent, already): not sent by an apply again; plan from a run after those sends "
                f"land.")
        click.echo(str(plan_file))
    sys.exit(1 if o.left or o.held_in_doubt or o.held_by_replays else 0)
