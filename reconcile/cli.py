"""The `reconcile` command group: logging, errors to exit codes, and the registration of the commands.

The commands live by kind: cli_run.py (run, check, demo, simulate, export-logs), cli_fetch.py (fetch <store>),
cli_runs.py (history, calibrate, trace, verify); what they share (config merging, --set, window and AWS options) is
cli_options.py. A command parses flags, builds the config, calls the library.

Exit codes: 0 clean · 1 only pending events · 2 loss above a hop's threshold · 3 an input incomplete or
unreadable · 4 configuration, usage or runtime error · 5 verify: a run does not match its evidence or its inputs
changed · 130 / 143 stopped by SIGINT / SIGTERM (128 + the signal number).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager

import click

from . import __version__, interrupt
from .cli_options import json_logs, say
from .console import tolerate_closed_stdout
from .errors import Interrupted, ReconcileError, os_error

logger = logging.getLogger("reconcile")

EXIT_CODES = """\b
Exit codes:
  0  clean: every input complete, nothing pending, each hop's loss within its threshold
  1  only pending events (still within EventBridge's retries, or held until a store is read whole)
  2  loss above a hop's threshold
  3  an input was incomplete or unreadable, or no room to write (retry once space is freed)
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
    # with --log-format json a log record like every other stderr line (the one that says why the run ended)
    say(f"Stopped by {signal.Signals(signum).name}: reads cancelled, unfinished outputs removed, state lock released. "
        f"Re-run it.", logging.WARNING, exit_code=128 + signum)
    leave(128 + signum)


def leave(code: int):
    """Exit with `code` once the reads stopped (interrupt.remaining() at most), not waiting on one that does not: the
    interpreter would join it at exit, however long it takes. Without a stop (a signal, a read deadline) every
    thread's work ended before the error got here: a plain exit."""
    if not interrupt.STOP.is_set():
        sys.exit(code)
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for t in others:
        t.join(interrupt.remaining())
    if any(t.is_alive() for t in others):
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
            # whatever a cut-short step raised on its way out; after the commit a signal stopped nothing: the
            # error is the run's own
            if interrupt.received() and not interrupt.finishing():
                stopped(interrupt.received())
            say(f"Error: {e}", logging.ERROR, ctx, exit_code=e.exit_code)
            leave(e.exit_code)
        except click.UsageError as e:
            if not json_logs(ctx):
                raise  # click shows the usage and the error (exit 4: usage_exit_code)
            # a subcommand's: logging is set up, so the shipper reading stderr gets one JSON line, not click's text
            say(f"Error: {e.format_message()}", logging.ERROR, ctx, exit_code=USAGE_ERROR,
                command=(e.ctx or ctx).command_path)
            sys.exit(USAGE_ERROR)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except OSError as e:  # a file the run could not write (a full disk) names its path and what to do
            if interrupt.received() and not interrupt.finishing():
                stopped(interrupt.received())
            if logger.isEnabledFor(logging.DEBUG):
                logger.exception("file error")
            code, message = os_error(e)
            say(f"Error: {message}", logging.ERROR, ctx, exit_code=code)
            sys.exit(code)
        except Exception as e:  # noqa: BLE001 - the one place an unexpected failure becomes exit 4
            if interrupt.received() and not interrupt.finishing():
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


# The commands, each in the module of its kind; a new command is one line here.
from . import cli_fetch, cli_recover, cli_run, cli_runs, collect_command  # noqa: E402 - they import the shared options, not this group

main.add_command(cli_run.run)
main.add_command(cli_run.check)
main.add_command(cli_run.demo)
main.add_command(cli_run.simulate)
main.add_command(cli_run.export_logs)
main.add_command(cli_fetch.fetch)
main.add_command(cli_runs.history)
main.add_command(cli_runs.calibrate)
main.add_command(cli_runs.trace)
main.add_command(cli_runs.verify)
main.add_command(cli_runs.publish_run)
main.add_command(collect_command.collect)
main.add_command(cli_recover.recover)
