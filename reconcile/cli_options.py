"""What the commands share: config merging (TOML file, environment, flags and `--set`), the window and AWS options,
the run-state option, and the one way to say a line on stderr (`say`)."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import click

from . import config as config_mod
from .errors import ConfigError
from .window import parse_time

logger = logging.getLogger("reconcile")


def json_logs(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:  # the command has ended (a signal unwound it): as logging was set up for it
        from .logformat import JsonFormatter
        return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
    return ctx.find_root().params.get("log_format") == "json"


def say(line: str, level: int = logging.INFO, ctx: click.Context | None = None, **fields) -> None:
    """A line for the person at the terminal on stderr; with --log-format json, a log record like every other line
    there (with `fields`), so a log shipper reads stderr whole."""
    if json_logs(ctx):
        logger.log(level, line, extra=fields)
    else:
        click.echo(line, err=True)



def window_options(f):
    f = click.option("--as-of", help="Judge as if now were this time (ISO-8601). Default: now.")(f)
    f = click.option("--end", help="Window end (ISO-8601, exclusive).")(f)
    f = click.option("--start", help="Window start (ISO-8601).")(f)
    f = click.option("--date", "day", help="A UTC day YYYY-MM-DD (default: the day before --as-of's, or yesterday).")(f)
    return f


AS_OF_SKEW = timedelta(minutes=5)  # --as-of may be this far past this machine's clock (another machine's "now")


def _time(value: str, flag: str) -> datetime:
    try:
        return parse_time(value)
    except ConfigError as e:
        raise ConfigError(f"{flag}: {e}") from None


def resolve_window(cfg, day, start, end, as_of):
    from .run import window_from
    if day and (start or end):
        raise ConfigError("Give either --date or --start/--end, not both.")
    if start or end:
        if not (start and end):
            raise ConfigError("--start and --end go together. Give both, or --date for a whole UTC day.")
        s, e = _time(start, "--start"), _time(end, "--end")
        if s.microsecond or e.microsecond:
            # a window is keyed to the second (the state, the folder guard): two windows apart by less would be one
            raise ConfigError(f"--start {start} and --end {end} must be whole seconds: a window is named to the "
                              f"second (its key), so windows apart by less would replace each other.")
    else:
        if day:
            # a UTC day and nothing else: "2026-11-23+05:00" or "2026-11-23T05:00" read as a time would shift the
            # window silently (a day at another offset is --start/--end)
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", day.strip()):
                raise ConfigError(f"--date {day!r} is not a UTC day (YYYY-MM-DD, like 2026-11-23). For a day at "
                                  f"another offset, or any other span, give --start and --end (ISO-8601 with the "
                                  f"offset, like 2026-11-23T00:00:00+05:00).")
            s = _time(day, "--date")
        else:
            # the day before as-of's (a backfill by --as-of alone, as a scheduler's catch-up run gives it), or
            # before today's
            at = _time(as_of, "--as-of") if as_of else datetime.now(timezone.utc)
            s = at.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        e = s + timedelta(days=1)
    at = _time(as_of, "--as-of") if as_of else None
    now = datetime.now(timezone.utc)
    if at is not None and at > now + AS_OF_SKEW:
        raise ConfigError(f"--as-of {as_of} is later than now: the stores cannot hold what has not happened yet, so "
                          "events still in flight would be judged past their horizon (lost), and Zendesk's export "
                          "would be asked for a minute it cannot list. Leave --as-of out (now), or give a past time.")
    if (at or now) < e:
        # its events after as_of have not happened yet: a full read for a bogus incomplete run and wrong advice
        by = "--as-of" if at else "now"
        raise ConfigError(f"The window ends at {e:%Y-%m-%dT%H:%M:%SZ}, after {by} ({(at or now):%Y-%m-%dT%H:%M:%SZ}): "
                          f"a window is judged once it is over. Give a past --date, an --end no later than {by}, or "
                          f"leave --as-of out.")
    return window_from(cfg, s, e, at)


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


def aws_overrides(profile, region, endpoint_url) -> dict:
    return {"aws": {"profile": profile, "region": region, "endpoint_url": endpoint_url}}

