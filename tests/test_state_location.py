"""One run-state location for every command: --state, else [state] uri / RECONCILE_STATE, else the same default,
whatever --out is; history and trace reach a state and runs on S3 with the AWS options (or AWS_ENDPOINT_URL)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reconcile.aws import make_client
from reconcile.cli import main
from reconcile.config import DEFAULT_STATE
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores

DAY = "2026-11-23"


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    """A small simulated day's stores as local folders (no Zendesk: the run is incomplete, the state still kept)."""
    out = tmp_path_factory.mktemp("sim")
    write_stores(simulate(SimParams(events=60, seed=3, day=DAY)), out)
    return out / "stores"


def run_args(stores: Path, out: str, *extra: str) -> list[str]:
    return ["run", "--date", DAY, "--out", out, "--no-progress", *extra,
            "--set", f'sink.uri="{stores}/spark-output/events"',
            "--set", f'bus_log.uri="{stores}/logs-archive/exports"',
            "--set", f'dlq.uri="{stores}/dlq-archive/messages.jsonl"']


def invoke(args, env=None):
    return CliRunner().invoke(main, args, env={"ZENDESK_URL": "", "RECONCILE_STATE": None, **(env or {})})


def a_sink_id(run_dir: Path) -> str:
    return str(pq.read_table(run_dir / "evidence" / "sink.parquet", columns=["eb_id"]).column(0)[0].as_py())


def test_run_history_and_trace_share_the_default_state_whatever_out_is(stores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(run_args(stores, "out/2026-11-23"))
    assert result.exit_code in (0, 1, 2, 3), result.output
    assert (tmp_path / DEFAULT_STATE).is_file() and not (tmp_path / "out" / "reconcile-state.duckdb").exists()

    history = invoke(["history", "--json"])
    assert history.exit_code == 0, history.output
    assert {r["window_key"][:8] for r in orjson.loads(history.stdout)} == {"20261123"}

    eb_id = a_sink_id(tmp_path / "out" / "2026-11-23")
    monkeypatch.chdir(tmp_path / "out")  # the state records where the run lies absolutely: found from anywhere
    traced = invoke(["trace", eb_id, "--json", "--state", str(tmp_path / DEFAULT_STATE)])
    assert traced.exit_code == 0, traced.output
    (found,) = orjson.loads(traced.stdout)
    assert found["run_dir"] == str(tmp_path / "out" / "2026-11-23")
    assert [o["eb_id"] for o in found["observations"] if o["hop"] == "sink"][0] == eb_id


def test_env_and_config_key_move_the_state_for_every_command(stores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_env = tmp_path / "env" / "state.duckdb"
    assert invoke(run_args(stores, "a"), {"RECONCILE_STATE": str(by_env)}).exit_code in (0, 1, 2, 3)
    assert by_env.is_file() and not (tmp_path / DEFAULT_STATE).exists()
    assert invoke(["history"], {"RECONCILE_STATE": str(by_env)}).exit_code == 0

    by_key = tmp_path / "key" / "state.duckdb"
    cfg = tmp_path / "reconcile.toml"
    cfg.write_text(f'[state]\nuri = "{by_key}"\n')
    assert invoke(run_args(stores, "b", "--config", str(cfg))).exit_code in (0, 1, 2, 3)
    assert by_key.is_file()
    assert invoke(["trace", a_sink_id(tmp_path / "b"), "--config", str(cfg)]).exit_code == 0
    missing = invoke(["history"])
    assert missing.exit_code == 4 and f"No state file at {DEFAULT_STATE}" in missing.stderr


def test_history_and_trace_reach_state_and_runs_on_s3(stores, tmp_path, aws_cfg, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_client("s3", aws_cfg).create_bucket(Bucket="audit")
    state = "s3://audit/reconcile-state.duckdb"
    published = invoke(run_args(stores, "s3://audit/runs/2026-11-23", "--state", state, "--endpoint-url",
                                aws_cfg.endpoint_url))
    assert published.exit_code in (0, 1, 2, 3), published.output

    # AWS_ENDPOINT_URL (set for the session by conftest) alone, then the flag with the variable pointing nowhere
    assert invoke(["history", "--state", state]).exit_code == 0
    flagged = invoke(["history", "--state", state, "--endpoint-url", aws_cfg.endpoint_url, "--json"],
                     {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert flagged.exit_code == 0, flagged.output
    assert orjson.loads(flagged.stdout)[0]["window_key"].startswith("20261123")

    local = tmp_path / "copy"
    make_client("s3", aws_cfg).download_file("audit", "runs/2026-11-23/evidence/sink.parquet", str(local))
    eb_id = str(pq.read_table(local, columns=["eb_id"]).column(0)[0].as_py())
    traced = invoke(["trace", eb_id, "--state", state, "--json"])  # the state names the run's s3:// prefix
    assert traced.exit_code == 0, traced.output
    (found,) = orjson.loads(traced.stdout)
    assert found["run_dir"] == "s3://audit/runs/2026-11-23" and found["observations"]


def test_a_state_bucket_that_is_missing_or_empty_is_named(stores, tmp_path, aws_cfg, monkeypatch):
    """A mistyped state bucket: a run names the lock it cannot write and the key to check (it was botocore's
    "unexpected NoSuchBucket ... PutObject"); a reader of a state not written yet names the s3:// URI it was given (it
    named a temporary local copy and advised --state to someone who passed it)."""
    monkeypatch.chdir(tmp_path)
    run = invoke(run_args(stores, str(tmp_path / "out"), "--state", "s3://no-such-bucket/reconcile-state.duckdb"))
    assert run.exit_code == 4, run.output
    assert ("Cannot write the lock s3://no-such-bucket/reconcile-state.duckdb.lock: NoSuchBucket. Check "
            "[state] uri (or --state, RECONCILE_STATE)") in run.stderr and "unexpected" not in run.stderr
    make_client("s3", aws_cfg).create_bucket(Bucket="empty-audit")
    history = invoke(["history", "--state", "s3://empty-audit/reconcile-state.duckdb"])
    assert history.exit_code == 4
    assert "No state at s3://empty-audit/reconcile-state.duckdb." in history.stderr, history.stderr


def test_a_state_download_that_trickles_ends_at_the_read_deadline(tmp_path, aws_cfg):
    """A gateway sends the s3:// state's body a byte every half second: botocore's timeouts are per read, and the
    download held the run -- before any store was read, with nothing logged -- until the scheduler's SIGTERM (hang
    review). It is given [aws] read_deadline, then left: exit 3, naming the state."""
    from reconcile.errors import ReadDeadline
    make_client("s3", aws_cfg).create_bucket(Bucket="slow-audit")
    make_client("s3", aws_cfg).put_object(Bucket="slow-audit", Key="reconcile-state.duckdb", Body=b"x" * 4096)
    slow_state(aws_cfg, "slow-audit", "GET", ReadDeadline, r"The state s3://slow-audit/reconcile-state.duckdb did not "
               r"download within \[aws\] read_deadline = 2s \(a proxy or gateway", write=False, read_deadline="2s")


def slow_state(aws_cfg, bucket: str, method: str, error, match: str, write: bool, **deadline):
    """The s3:// state in `bucket` opened (and closed: uploaded, for a writer) through a gateway trickling the answers
    to its `method` requests, with `deadline` ([aws] read_deadline or upload_deadline) of 2 s: `error` within 12."""
    import time
    from dataclasses import replace

    from proxy import Proxy
    from reconcile.state import State
    proxy = Proxy(aws_cfg.endpoint_url, trickle=lambda m, path: m == method
                  and path.split("?")[0].endswith("/reconcile-state.duckdb"))
    started = time.monotonic()
    try:
        with pytest.raises(error, match=match):
            with State.open(f"s3://{bucket}/reconcile-state.duckdb",
                            replace(aws_cfg, endpoint_url=proxy.endpoint, **deadline), write=write):
                pass
        assert time.monotonic() - started < 2 + 10
    finally:
        proxy.close()


def test_a_state_upload_whose_answer_trickles_ends_at_the_upload_deadline(tmp_path, aws_cfg):
    """The s3:// state is uploaded after the run commits, when no signal stops the run: an answer trickled a byte at
    a time held the finished run for good (hang review). The upload is given [aws] upload_deadline, then left: a
    StateError naming the state and the key; the state there stays as it was."""
    from reconcile.errors import StateError
    from reconcile.state import State
    make_client("s3", aws_cfg).create_bucket(Bucket="slow-upload")
    slow_state(aws_cfg, "slow-upload", "PUT", StateError, r"The state s3://slow-upload/reconcile-state.duckdb did not "
               r"upload within \[aws\] upload_deadline = 2s: left", write=True, upload_deadline="2s")
    # the lock was let go: a run with a working endpoint records the state
    with State.open("s3://slow-upload/reconcile-state.duckdb", aws_cfg):
        pass
    assert make_client("s3", aws_cfg).head_object(Bucket="slow-upload", Key="reconcile-state.duckdb")


def test_a_run_without_the_state_never_replaces_a_run_a_state_recorded(stores, tmp_path, monkeypatch):
    """`run --no-state` for a look at a recorded window: both default to reconcile-out/<window>, so it replaced the
    run the state records there (history showed one run, trace and recover read another, the recorded evidence
    gone). Refused; a run with the state replaces it as before, and a --no-state run's own folder is its to redo."""
    monkeypatch.chdir(tmp_path)
    first = invoke(run_args(stores, "out"))
    assert first.exit_code in (0, 1, 2, 3), first.output
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    look = invoke(run_args(stores, "out", "--no-state"))
    assert look.exit_code == 4 and "out holds a run a state recorded" in look.stderr, look.output
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest
    assert invoke(run_args(stores, "out")).exit_code == first.exit_code
    for _ in range(2):
        assert invoke(run_args(stores, "look", "--no-state")).exit_code == first.exit_code


def test_a_run_of_another_window_never_deletes_the_run_a_folder_holds(stores, tmp_path, monkeypatch):
    """The help's `--out out/` on a daily cron: the next day's run set aside and then deleted the previous day's
    finished run, which the state still records there (its trace, verify and recovery gone). Refused, naming the
    window it holds; a re-run of the same window still replaces it."""
    import orjson as json_

    monkeypatch.chdir(tmp_path)
    first = invoke(run_args(stores, "out"))
    assert first.exit_code in (0, 1, 2, 3), first.output
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    args = [a if a != DAY else "2026-11-24" for a in run_args(stores, "out")]
    other = invoke(args)
    assert other.exit_code == 4, other.output
    assert ("out holds the finished run of another window (20261123T000000Z-20261124T000000Z); a run of "
            "20261124T000000Z-20261125T000000Z there would delete it. Give each window its own --out") in other.stderr
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest
    # a re-run killed outright (SIGKILL, out of memory) after it set the finished run aside: the folder holds it
    # still (the next run puts it back), so a run of another window is refused as well (it restored it, then
    # deleted it, and the state recorded two windows at one folder)
    from reconcile.runfolder import RunFolder
    RunFolder(tmp_path / "out").reset()
    assert not (tmp_path / "out" / "manifest.json").exists()
    killed = invoke(args)
    assert killed.exit_code == 4 and "out holds the finished run of another window" in killed.stderr, killed.output
    again = invoke(run_args(stores, "out"))
    assert again.exit_code == first.exit_code and json_.loads((tmp_path / "out" / "manifest.json").read_bytes())
    # a fixed --out with {window} gives each window its own folder
    for day in (DAY, "2026-11-24"):
        each = invoke([a if a != DAY else day for a in run_args(stores, "runs/{window}")])
        assert each.exit_code in (0, 1, 2, 3), each.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "20261123T000000Z-20261124T000000Z", "20261124T000000Z-20261125T000000Z"]


def test_paths_that_are_files_are_named_not_crashed_on(stores, tmp_path, monkeypatch):
    """--out at a file (it was "unexpected FileExistsError") and a state that is no database (it was "unexpected
    IOException" for history and trace) are errors naming what to give instead; a reader of a state a run holds is
    pointed at the run folders, not at another state (which would answer from another history)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    run = invoke(run_args(stores, "afile"))
    assert run.exit_code == 4 and "--out afile is a file, not a folder" in run.stderr, run.output
    history = invoke(["history", "--state", str(tmp_path / "afile")])
    assert history.exit_code == 4 and f"Cannot open state file {tmp_path / 'afile'}" in history.stderr, history.output
    assert "unexpected" not in run.stderr + history.stderr
    from reconcile.state import State
    state = tmp_path / "held.duckdb"
    with State.open(state):  # a run holds it
        pass
    with State.open(state):
        reader = invoke(["history", "--state", str(state)])
    assert reader.exit_code == 4 and "reconcile trace ID --run DIR" in reader.stderr, reader.output


def test_a_write_with_no_room_names_the_file_and_is_a_retry(stores, tmp_path):
    """A full disk (here a file-size limit: EFBIG, as ENOSPC would be) was "unexpected OSError", exit 4, naming
    nothing: a scheduler retrying on 3 only never ran again once space was freed. It names the file and what to do,
    exit 3; the state records nothing."""
    import subprocess
    import sys
    code = (f"import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY)); "
            f"from reconcile.cli import main; sys.argv = ['reconcile'] + {run_args(stores, 'out')!r}; main()")
    state = tmp_path / "state.duckdb"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__("os").environ, "ZENDESK_URL": "", "RECONCILE_STATE": str(state)})
    assert done.returncode == 3, done.stderr
    assert "File too large: no room to write it (a full disk, a quota or a file-size limit). Free space where the " \
        "run writes (--out, [engine] temp_directory" in done.stderr and "unexpected" not in done.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
