"""Safe under a scheduler, shown with real processes: `reconcile run` is started as a subprocess over a small
simulated day (stores in moto, Zendesk served over HTTP), then stopped the way Airflow, ECS, Kubernetes or a person
stop it. SIGTERM/SIGINT: exit 143/130, nothing that looks like a result, the state untouched and unlocked. SIGKILL:
the next run proceeds. A second run on the same state fails fast naming the first. Usage errors exit 4; a closed
stdout ends quietly.

Timing: every wait polls for a condition with a generous deadline; nothing asserts how long something took.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reconcile.cli import main
from reconcile.simulate import aws_load, zendesk_server
from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores

from proxy import Proxy

RECONCILE = str(Path(sys.executable).with_name("reconcile"))
FAST = dict(events=2000, batch_seconds=900, files_per_batch=1)
SLOW_RPM = 20  # Zendesk pages 3 s apart: a run stays in its reads for a minute (it is stopped long before)
PER_PAGE = 25
DEADLINE = 120.0  # generous: the machine may be loaded


class Day:
    """A simulated day served like the real stores, and how to run `reconcile` on it in a subprocess."""

    def __init__(self, tmp: Path, aws_cfg):
        self.tmp = tmp
        sim = simulate(SimParams(seed=11, **FAST))
        write_stores(sim, tmp / "sim")
        stores = aws_load.load_stores(tmp / "sim" / "stores", aws_cfg)
        auth = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
        self.zendesk = zendesk_server.start(zendesk_server.load(tmp / "sim"), now=sim.window.as_of,
                                            per_page=PER_PAGE, auth=auth)
        self.as_of = sim.window.as_of.isoformat()
        self.state = tmp / "reconcile-state.duckdb"
        self.config = tmp / "reconcile.toml"
        p = sim.params
        self.config.write_text(toml({
            "zendesk": {"url": self.zendesk.url, "requests_per_minute": SLOW_RPM, "max_wait": "2m"},
            "bus_log": {"uri": stores["bus_log_uri"], "format": "cwl-export"},
            "sink": {"uri": stores["sink_uri"], "format": "parquet"},
            "dlq": {"queue_url": stores["queue_url"], "visibility_timeout": 30},
            "metrics": {"rule": stores["rule"]},
            "window": {"max_event_age": f"{p.max_event_age.total_seconds():.0f}s",
                       "margin_before": f"{p.margin_before.total_seconds():.0f}s",
                       "hop_a_grace": f"{p.hop_a_grace.total_seconds():.0f}s"},
            "exclude": {"event_types": list(p.excluded_kinds)},
        }))
        self.env = {**os.environ, "ZENDESK_EMAIL": DEMO_EMAIL, "ZENDESK_API_TOKEN": DEMO_TOKEN,
                    "AWS_ENDPOINT_URL": aws_cfg.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}
        self.env.pop("ZENDESK_OAUTH_TOKEN", None)

    def args(self, out: str, *extra: str) -> list[str]:
        return [RECONCILE, "run", "--config", str(self.config), "--date", "2026-11-23", "--as-of", self.as_of,
                "--out", str(self.tmp / out), "--state", str(self.state), "--no-progress", *extra]

    def start(self, out: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.args(out, *extra), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, out: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(out, *extra), env=self.env, capture_output=True, timeout=600)

    def run_fast(self, out: str) -> subprocess.CompletedProcess:
        return self.run(out, "--set", "zendesk.requests_per_minute=100000")

    def reading(self, proc: subprocess.Popen) -> None:
        """Wait until `proc` is reading: it has fetched a Zendesk page, and holds the state lock."""
        until(lambda: len(self.zendesk.requests) >= 1 and lock_held(self.state), proc)

    def stop(self):
        self.zendesk.stop()


def toml(doc: dict) -> str:
    # JSON strings, numbers and lists of strings are valid TOML values
    return "".join(f"[{sec}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()) + "\n"
                   for sec, values in doc.items())


def until(condition, proc: subprocess.Popen | None = None, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before the condition held:\n{err.decode()}")
        if time.monotonic() > end:
            pytest.fail(f"condition not met within {deadline:.0f} s")
        time.sleep(0.1)


def lock_held(state: Path) -> bool:
    lock = state.with_name(state.name + ".lock")
    if not lock.exists():
        return False
    with open(lock, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the run did not end after the signal")
    return proc.returncode, err.decode()


def state_windows(state: Path) -> list:
    if not state.exists():
        return []
    con = duckdb.connect(str(state), read_only=True)
    try:
        return con.execute("SELECT window_key FROM runs").fetchall()
    finally:
        con.close()


@pytest.fixture
def day(moto, aws_cfg, tmp_path):
    d = Day(tmp_path, aws_cfg)
    yield d
    d.stop()


def assert_proceeds(day: Day, out: str) -> None:
    """The next run on the same state is not blocked: it judges the day and writes a complete run folder."""
    done = day.run_fast(out)
    assert done.returncode in (0, 1, 2, 3), done.stderr.decode()
    assert "in use" not in done.stderr.decode()
    assert (day.tmp / out / "manifest.json").exists()
    assert len(state_windows(day.state)) == 1


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_reading_stops_cleanly_with_its_own_exit_code(day, sig, code):
    proc = day.start("run")
    day.reading(proc)
    proc.send_signal(sig)
    rc, err = finish(proc)
    assert rc == code, err
    assert f"Stopped by {sig.name}" in err
    assert "Traceback" not in err
    out = day.tmp / "run"
    left = {p.name for p in out.iterdir()}
    assert not left & {"report.html", "summary.json", "gaps.csv", "verdicts.parquet", "manifest.json"}
    assert not list(out.rglob("*.tmp"))
    assert not lock_held(day.state)
    assert state_windows(day.state) == []  # nothing recorded for a run that did not finish
    assert not (out / "evidence" / "zendesk.parquet").exists()  # the export was not read to its end
    assert_proceeds(day, "rerun")


def test_a_signal_under_json_logs_is_said_in_a_json_line(day):
    """With --log-format json the line saying why the run ended ("Stopped by SIGTERM") was the run's one plain-text
    stderr line: a log shipper got it without its exit code."""
    args = day.args("run")
    proc = subprocess.Popen([args[0], "--log-format", "json", *args[1:]], env=day.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    day.reading(proc)
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 143, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line JSON
    (said,) = [r for r in lines if r["message"].startswith("Stopped by SIGTERM")]
    assert said["exit_code"] == 143 and said["level"] == "WARNING"


def test_a_re_run_stopped_while_reading_puts_the_finished_run_back(day):
    """Re-running a window into its folder (a recovery's step 4, a scheduler's retry) and stopping it: the state
    still records the run already there, so the folder must still prove it -- its manifest, outputs and evidence
    back as they were, `verify` passing -- not a folder of half a new run."""
    first = day.run_fast("run")
    assert first.returncode in (0, 1, 2, 3), first.stderr.decode()
    out = day.tmp / "run"
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    asked = len(day.zendesk.requests)  # the first run's requests
    # the same Zendesk under another name: the pages the folder saved are bound to the first one, so the re-run asks
    # for them again, at the slow pace, and is stopped while it reads
    host = "localhost" if "127.0.0.1" in day.zendesk.url else "127.0.0.1"
    other = re.sub(r"//[^:/]+", "//" + host, day.zendesk.url, count=1)
    proc = day.start("run", "--set", f"zendesk.url={other}")
    try:
        # reading: a Zendesk page asked for by this run, which resets the folder before it reads anything
        until(lambda: len(day.zendesk.requests) > asked and lock_held(day.state), proc)
        assert not (out / "manifest.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 143, err
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before and not (out / ".previous-run").exists()
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0
    assert len(state_windows(day.state)) == 1


def test_a_read_that_ignores_the_signal_does_not_keep_the_process_alive(day):
    """A Zendesk answer that never comes (the server holds every request for 10 minutes, the client waits as
    long): after the grace period the process exits anyway, with the signal's code, before the scheduler's SIGKILL."""
    day.zendesk.set_faults(delay=600)
    proc = day.start("run", "--set", "zendesk.timeout=10m")
    day.reading(proc)
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 143, err
    assert re.search(r"\d read\(s\) did not stop within 20 s of the signal; exiting without them", err), err
    assert not (day.tmp / "run" / "manifest.json").exists() and not (day.tmp / "run" / "report.html").exists()
    assert not lock_held(day.state)


def test_sigkill_leaves_no_lock_in_the_next_runs_way(day):
    proc = day.start("run")
    day.reading(proc)
    proc.kill()  # SIGKILL: an OOM kill, a scheduler's timeout; no clean-up runs
    proc.communicate(timeout=DEADLINE)
    assert proc.returncode == -signal.SIGKILL
    assert day.state.with_name(day.state.name + ".lock").exists()  # the file stays ...
    assert not lock_held(day.state)  # ... but its lock died with the process
    assert_proceeds(day, "rerun")


def test_a_second_run_on_the_same_state_fails_fast_naming_the_first(day):
    first = day.start("first")
    try:
        day.reading(first)
        second = day.run("second")
        err = second.stderr.decode()
        assert second.returncode == 4, err
        assert f"in use by another run (pid {first.pid} on " in err
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.terminate()
        rc, err = finish(first)
    assert rc == 143, err
    assert not (day.tmp / "second" / "manifest.json").exists()


def test_closed_stdout_ends_quietly_with_the_commands_own_exit_code(day):
    done = day.run_fast("run")
    assert (day.tmp / "run" / "manifest.json").exists(), done.stderr.decode()
    ticket = str(pq.read_table(day.tmp / "run" / "verdicts.parquet", columns=["ticket_id"])["ticket_id"][0])
    trace = [RECONCILE, "trace", ticket, "--run", str(day.tmp / "run")]

    # `reconcile trace … | head -1` in a shell
    piped = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | head -1', "sh", *trace], env=day.env,
                           capture_output=True, timeout=DEADLINE)
    assert piped.returncode == 0, piped.stderr.decode()
    assert len(piped.stdout.decode().splitlines()) == 1
    assert piped.stderr == b""

    # the reader gone before the first write: every write fails with EPIPE
    r, w = os.pipe()
    os.close(r)
    try:
        gone = subprocess.run(trace, env=day.env, stdout=w, stderr=subprocess.PIPE, timeout=DEADLINE)
        # a run's exit code still says what it found, though nobody reads its stdout
        run_again = subprocess.run(day.args("run2", "--set", "zendesk.requests_per_minute=100000"), env=day.env,
                                   stdout=w, stderr=subprocess.PIPE, timeout=600)
    finally:
        os.close(w)
    assert (gone.returncode, gone.stderr) == (0, b"")
    assert run_again.returncode == done.returncode, run_again.stderr.decode()
    assert b"Traceback" not in run_again.stderr and b"BrokenPipe" not in run_again.stderr


@pytest.mark.parametrize("argv", [["run", "--bogus"], ["no-such-command"], ["run", "--audience", "everyone"],
                                  ["trace"], ["--bogus"]], ids=" ".join)
def test_usage_errors_exit_4_not_the_loss_code(argv):
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 4, result.output
    assert "Usage:" in result.output


def test_help_lists_the_signal_exit_codes():
    out = CliRunner().invoke(main, ["--help"]).output
    assert "130  stopped by SIGINT" in out and "143  stopped by SIGTERM" in out
    assert "4  configuration, usage or runtime error" in out


def test_usage_error_exits_4_from_the_installed_command():
    done = subprocess.run([RECONCILE, "run", "--date"], capture_output=True, timeout=DEADLINE)
    assert done.returncode == 4
    assert b"Error: Option '--date' requires an argument." in done.stderr
    assert subprocess.run([RECONCILE, "--help"], capture_output=True, timeout=DEADLINE).returncode == 0


def test_a_store_that_trickles_its_bodies_ends_the_run_at_the_read_deadline(day):
    """A gateway sends the sink's Parquet bodies a byte at a time: botocore's and pyarrow's timeouts, per request and
    per idle socket, never fire. At [aws] read_deadline the reads are stopped as a signal stops them, and the run
    exits 3 naming the store still reading, with no result (no report, no manifest), the lock released -- instead of
    hanging until the scheduler kills it. With Zendesk refusing the credentials meanwhile, the run stops at once
    with exit 4 (a retry would not help), not at the deadline with 3."""
    # a gateway that sends every Parquet body a byte every half second
    proxy = Proxy(day.env["AWS_ENDPOINT_URL"], trickle=lambda method, path: method == "GET"
                  and path.split("?")[0].endswith(".parquet"))
    slow = {**day.env, "AWS_ENDPOINT_URL": proxy.endpoint}
    fast = ("--set", "zendesk.requests_per_minute=100000")
    try:
        started = time.monotonic()
        done = subprocess.run(day.args("run", *fast, "--set", "aws.read_deadline=15s"), env=slow,
                              capture_output=True, timeout=DEADLINE)
        took = time.monotonic() - started
        started = time.monotonic()
        refused = subprocess.run(day.args("refused", *fast, "--set", "aws.read_deadline=10m"),
                                 env={**slow, "ZENDESK_API_TOKEN": "not-the-token"}, capture_output=True,
                                 timeout=DEADLINE)
        took_refused = time.monotonic() - started
    finally:
        proxy.close()
    err = done.stderr.decode()
    assert done.returncode == 3, err
    assert "Still reading sink after [aws] read_deadline = 15s" in err, err
    assert re.search(r"\d read\(s\) did not stop within 20 s of the deadline; exiting without them", err), err
    assert took < 15 + 20 + 30  # the deadline, the grace the reads get, the run's own time
    assert not (day.tmp / "run" / "manifest.json").exists() and not (day.tmp / "run" / "report.html").exists()
    assert not lock_held(day.state)
    assert refused.returncode == 4 and "Zendesk refused the credentials (HTTP 401)" in refused.stderr.decode()
    assert took_refused < 20 + 30  # the grace the stuck read gets, the run's own time: not the 10 minutes


def test_a_read_that_comes_unstuck_after_the_stop_writes_no_ledger(tmp_path):
    """A read stopped by a signal or the read deadline, left running, may finish after the run put the finished run
    back in its folder: its ledger is not written there (nor its temp file left)."""
    from reconcile import interrupt
    from reconcile.errors import Interrupted
    from reconcile.sources import events
    out = events.LedgerOut(tmp_path / "evidence" / "sink.parquet")
    out.add(pa.table({"hop": ["sink"], "source_id": ["a"]}))
    with interrupt.handlers():
        interrupt.expire()
        try:
            with pytest.raises(Interrupted):
                out.result()
        finally:
            interrupt.STOP.clear()
    assert list((tmp_path / "evidence").iterdir()) == []


def test_zendesk_refusing_the_credentials_is_exit_4_not_a_retry(day):
    """A token Zendesk refuses (HTTP 401) will be refused again an hour later: the run stops with exit 4 (a
    configuration error, no retry) naming it, instead of judging without Zendesk and exiting 3 ("retry")."""
    done = subprocess.run(day.args("run", "--set", "zendesk.requests_per_minute=100000"),
                          env={**day.env, "ZENDESK_API_TOKEN": "not-the-token"}, capture_output=True,
                          timeout=DEADLINE)
    err = done.stderr.decode()
    assert done.returncode == 4 and "Zendesk refused the credentials (HTTP 401)" in err, err
    assert "not-the-token" not in err and not (day.tmp / "run" / "report.html").exists()


# --- the lock beside an s3:// state ---------------------------------------------------------------------------------

HOLD = """
import sys, time
from reconcile.config import AwsConfig
from reconcile.state import State
with State.open(sys.argv[1], AwsConfig(endpoint_url=sys.argv[2], region="us-east-1")):
    print("locked", flush=True)
    time.sleep(600)
"""
URI = "s3://reconcile-state/prod/reconcile-state.duckdb"


@pytest.fixture
def s3_state(aws_cfg):
    from reconcile.aws import make_client
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="reconcile-state")
    return s3


def hold_s3_state(aws_cfg) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, URI, aws_cfg.endpoint_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"locked\n", proc.stderr.read().decode()
    return proc


def lock_body(s3) -> dict:
    return json.loads(s3.get_object(Bucket="reconcile-state", Key="prod/reconcile-state.duckdb.lock")["Body"].read())


def test_s3_state_lock_of_a_live_run_blocks_and_of_a_killed_run_is_taken_over(s3_state, aws_cfg):
    from reconcile.errors import StateError
    from reconcile.state import State
    holder = hold_s3_state(aws_cfg)
    try:
        with pytest.raises(StateError, match=rf"in use by another run \(pid {holder.pid} on "):
            with State.open(URI, aws_cfg):
                pass
    finally:
        holder.kill()
        holder.communicate(timeout=DEADLINE)
    assert lock_body(s3_state)["pid"] == holder.pid  # SIGKILL: the lock object stays behind
    with State.open(URI, aws_cfg) as st:  # its holder ran on this host and is gone: taken over at once
        assert lock_body(s3_state)["pid"] == os.getpid()
        assert st.history() == []
    keys = [o["Key"] for o in s3_state.list_objects_v2(Bucket="reconcile-state")["Contents"]]
    assert keys == ["prod/reconcile-state.duckdb"]


def test_s3_state_lock_of_another_host_is_taken_over_only_once_it_is_stale(s3_state, aws_cfg, monkeypatch):
    from reconcile import state
    from reconcile.errors import StateError
    other = {"pid": 4242, "host": "worker-7", "pid_ns": "pid:[1]", "started": 1, "since": "2026-11-24T02:00:00+00:00"}
    s3_state.put_object(Bucket="reconcile-state", Key="prod/reconcile-state.duckdb.lock",
                        Body=json.dumps(other).encode())
    with pytest.raises(StateError, match=r"in use by another run \(pid 4242 on worker-7 since 2026-11-24"):
        with state.State.open(URI, aws_cfg):
            pass
    monkeypatch.setattr(state, "LOCK_STALE_S", 1.0)  # instead of waiting ten minutes
    time.sleep(2.5)
    with state.State.open(URI, aws_cfg):
        assert lock_body(s3_state)["pid"] == os.getpid()


def test_s3_state_lock_is_rewritten_while_the_run_lives_and_a_lost_lock_uploads_nothing(s3_state, aws_cfg,
                                                                                       monkeypatch):
    from reconcile import state
    from reconcile.errors import StateError
    monkeypatch.setattr(state, "LOCK_REFRESH_S", 0.3)
    key = "prod/reconcile-state.duckdb.lock"
    with state.State.open(URI, aws_cfg):
        first = s3_state.head_object(Bucket="reconcile-state", Key=key)["LastModified"]
        until(lambda: s3_state.head_object(Bucket="reconcile-state", Key=key)["LastModified"] > first)
    assert "Contents" not in s3_state.list_objects_v2(Bucket="reconcile-state", Prefix=key)

    with pytest.raises(StateError, match="lost the lock"):
        with state.State.open(URI, aws_cfg) as st:
            st.con.execute("CREATE TABLE marker AS SELECT 1 AS x")
            # another run takes the lock over (as after ten minutes without a rewrite)
            s3_state.put_object(Bucket="reconcile-state", Key=key, Body=b'{"pid": 1, "host": "elsewhere"}')
            until(lambda: not any(t.name == "reconcile-state-lock" and t.is_alive()
                                  for t in threading.enumerate()))
    assert lock_body(s3_state)["host"] == "elsewhere"  # the other run's lock is left alone
    with state.State.open(URI, aws_cfg, write=False) as st:  # and the state was not overwritten
        assert not st.con.execute("SELECT * FROM duckdb_tables() WHERE table_name = 'marker'").fetchall()


def test_s3_state_lock_whose_rewrite_trickles_is_let_go_at_once(s3_state, aws_cfg, monkeypatch):
    """Letting the lock go joined its rewriting thread with no bound: a rewrite whose answer a gateway trickles held
    the finished run for good (diff review 6). The release waits LOCK_RELEASE_WAIT_S, then deletes the lock
    regardless (a rewrite puts the same body: the same ETag, so the delete's condition holds), and the next run finds
    the state uploaded and no lock."""
    from dataclasses import replace

    from proxy import Proxy
    from reconcile import state
    monkeypatch.setattr(state, "LOCK_REFRESH_S", 0.3)
    monkeypatch.setattr(state, "LOCK_RELEASE_WAIT_S", 1.0)
    taken = threading.Event()  # the lock's rewrites, once it is taken, are answered a byte every 0.5 s
    proxy = Proxy(aws_cfg.endpoint_url,
                  trickle=lambda m, path: taken.is_set() and m == "PUT" and path.split("?")[0].endswith(".lock"))
    try:
        with state.State.open(URI, replace(aws_cfg, endpoint_url=proxy.endpoint)) as st:
            taken.set()
            st.con.execute("CREATE TABLE marker AS SELECT 1 AS x")
            time.sleep(1.0)  # a rewrite (every 0.3 s) is in flight, its answer trickling
            started = time.monotonic()
        assert time.monotonic() - started < 1 + 10
    finally:
        proxy.close()
    assert "Contents" not in s3_state.list_objects_v2(Bucket="reconcile-state", Prefix=URI.split("/", 3)[3] + ".lock")
    with state.State.open(URI, aws_cfg, write=False) as st:  # the state was uploaded
        assert st.con.execute("SELECT * FROM duckdb_tables() WHERE table_name = 'marker'").fetchall()


def test_s3_state_another_run_wrote_meanwhile_is_not_overwritten(s3_state, aws_cfg, tmp_path):
    """A run whose lock was taken over before its lock thread noticed (paused past LOCK_STALE_S, between two
    rewrites) must not upload over the state the other run wrote: each upload is conditional on the object being the
    one it read (IfMatch its ETag; IfNoneMatch when there was none)."""
    from reconcile.errors import StateError
    from reconcile.state import State
    key = "prod/reconcile-state.duckdb"
    for mark in ("first", "second"):  # no state yet, then one this test's first round left
        theirs = tmp_path / f"theirs-{mark}.duckdb"
        with duckdb.connect(str(theirs)) as con:
            con.execute(f"CREATE TABLE theirs_{mark} AS SELECT 1 AS x")
        with pytest.raises(StateError, match="written by another run since this one read it"):
            with State.open(URI, aws_cfg) as st:
                st.con.execute("CREATE TABLE marker AS SELECT 1 AS x")
                s3_state.put_object(Bucket="reconcile-state", Key=key, Body=theirs.read_bytes())
        with State.open(URI, aws_cfg, write=False) as st:
            tables = {r[0] for r in st.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert f"theirs_{mark}" in tables and "marker" not in tables
    assert "Contents" not in s3_state.list_objects_v2(Bucket="reconcile-state", Prefix=key + ".lock")


def test_s3_state_upload_that_landed_but_lost_its_answer_is_not_another_runs(s3_state, aws_cfg, tmp_path):
    """botocore retries a PUT whose answer was lost; when the first one landed, the retry's condition (the ETag read
    before) fails on this run's own upload. The object's SHA-256 tells it from another run's: taken as uploaded, not
    "written by another run" (which would fail a finished run, or leave its journal's last batch in doubt)."""
    from reconcile.errors import StateError
    from reconcile.state import _s3_upload
    key = "prod/reconcile-state.duckdb"
    first = s3_state.put_object(Bucket="reconcile-state", Key=key, Body=b"state as read")["ETag"]
    ours = tmp_path / "ours.duckdb"
    ours.write_bytes(b"state as this run leaves it")
    landed = _s3_upload(s3_state, "reconcile-state", key, ours, URI, first)  # the PUT that lost its answer
    assert _s3_upload(s3_state, "reconcile-state", key, ours, URI, first) == landed  # its retry
    ours.write_bytes(b"this run's next state")
    s3_state.put_object(Bucket="reconcile-state", Key=key, Body=b"another run's state")
    with pytest.raises(StateError, match="written by another run since this one read it"):
        _s3_upload(s3_state, "reconcile-state", key, ours, URI, landed["etag"])
    assert s3_state.get_object(Bucket="reconcile-state", Key=key)["Body"].read() == b"another run's state"


ENGINE = """
import sys
from reconcile import interrupt
from reconcile.engine import Engine
try:
    with interrupt.handlers():
        e = Engine.open(memory_limit="256MB")
        try:
            print("judging", flush=True)
            e.con.execute("SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3").fetchall()  # hours
        finally:
            e.close()
except BaseException as ex:  # DuckDB's InterruptException, or Interrupted from the handler: whichever is first
    print(type(ex).__name__, flush=True)
    sys.exit(128 + interrupt.received())
"""


def test_sigterm_stops_a_duckdb_query_the_main_thread_is_blocked_in():
    """The Python signal handler runs only between bytecodes: a query would hold a SIGTERM for hours, until the
    scheduler's SIGKILL. The engine's connection is interrupted from the signal watcher thread instead."""
    proc = subprocess.Popen([sys.executable, "-c", ENGINE], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"judging\n", proc.stderr.read().decode()
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=DEADLINE)  # without the interrupt: hours, and a TimeoutExpired here
    assert proc.returncode == 143, err.decode()
    # DuckDB's InterruptException (the watcher), our Interrupted (the handler), or DuckDB's RuntimeError "Query
    # interrupted" (DuckDB ran the handler itself): whichever came first, the query stopped and the signal is known.
    assert out.decode().strip() in ("InterruptException", "Interrupted", "RuntimeError")


def test_a_signal_during_the_commit_no_longer_stops_the_run():
    """A signal while a run commits (its state and its manifest, reconcile/run.py finish) waits until both are done,
    and then no longer stops the run: it has its result, so what is left (the state's upload, the publish, the
    alert) finishes and the exit code is the result's. So does a signal after the commit: one during the alert, the
    bundle or the publish exited 143 ("re-run it") with the run recorded, and no alert was sent. An upload bounded by
    [aws] upload_deadline waits on through such a signal (a first form ended the wait at once: the state's record
    left out, the run folder deleted; diff review). The next run (the demo judges several days in one process) stops
    again. Real signals, in a process of its own."""
    script = """
import os, signal, sys
from reconcile import interrupt
from reconcile.errors import Interrupted
with interrupt.handlers():
    with interrupt.deferred(then_stop=False):
        os.kill(os.getpid(), signal.SIGTERM)
        committed = True
    print("after the commit", committed, interrupt.received() == signal.SIGTERM, flush=True)
    import threading, time
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()  # during the state's upload
    print("the upload", interrupt.bounded(lambda: (time.sleep(1), "ends")[1], "upload", 30,
                                          lambda: RuntimeError("left")), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # during the publish, say
    with interrupt.deferred():
        os.kill(os.getpid(), signal.SIGINT)
    interrupt.check()
    print("the alert is sent", flush=True)
    try:
        interrupt.begin()  # the demo's next day: the signals of the last one's tail stop it before it reads
    except Interrupted:
        print("the next run stops", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == ["after the commit True True", "the upload ends", "the alert is sent",
                                                 "the next run stops"]
    assert "SIGTERM arrived as the run committed: finishing it" in done.stderr.decode()
    assert "SIGTERM arrived after the run committed: finishing it" in done.stderr.decode()


def test_an_error_after_the_commit_is_the_run_s_own_not_a_stop():
    """A signal during the commit, then the publish failing (its lock held): the run said "Stopped by SIGTERM ...
    unfinished outputs removed ... Re-run it", exit 143, and the error itself was never shown."""
    script = """
import os, signal, click
from reconcile import interrupt
from reconcile.cli import Main
from reconcile.errors import ReportError
@click.group(cls=Main)
def group():
    pass
@group.command()
def publish():
    with interrupt.deferred(then_stop=False):
        os.kill(os.getpid(), signal.SIGTERM)
    raise ReportError("s3://audit/runs/x is being published by another run")
group()
"""
    done = subprocess.run([sys.executable, "-c", script, "publish"], capture_output=True, timeout=60)
    assert done.returncode == 4, done.stderr.decode()
    assert "Error: s3://audit/runs/x is being published by another run" in done.stderr.decode()
    assert "Stopped by" not in done.stderr.decode()


def test_an_s3_state_whose_log_could_not_be_folded_in_is_not_uploaded(s3_state, aws_cfg):
    """A final CHECKPOINT with no room leaves the commit in the local copy's write-ahead log only: uploading the copy
    would drop it, the run's rows gone from the state while its exit code said it was recorded. Not uploaded: the
    state stays as it was, and the error says why."""
    from reconcile import state
    with state.State.open(URI, aws_cfg):
        pass
    before = s3_state.get_object(Bucket="reconcile-state", Key="prod/reconcile-state.duckdb")["Body"].read()
    code = f"""
import resource, signal, sys
from reconcile.config import AwsConfig
from reconcile.errors import StateError
from reconcile.state import State
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before)}, resource.RLIM_INFINITY))  # the copy cannot grow
try:
    with State.open({URI!r}, AwsConfig(endpoint_url={aws_cfg.endpoint_url!r}, region="us-east-1")) as st:
        st.con.execute("BEGIN TRANSACTION")
        st.con.execute("INSERT INTO settlements SELECT 'w', i::VARCHAR, 'x', 'delivered', NULL, 0 "
                       "FROM range(3000) t(i)")
        st.commit()
except StateError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "could not fold its write-ahead log in" in done.stdout and "not uploaded" in done.stdout, done.stderr
    after = s3_state.get_object(Bucket="reconcile-state", Key="prod/reconcile-state.duckdb")["Body"].read()
    assert after == before
