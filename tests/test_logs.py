"""Structured logs: `--log-format json` writes one JSON object per stderr line, and each source logs its counts and
time at INFO when it finishes."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from reconcile.sources import REGISTRY


def test_json_logs_one_object_per_line_with_per_source_counts_and_timings(tmp_path):
    sink = tmp_path / "sink"
    sink.mkdir()
    env = {**os.environ, "ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""}
    p = subprocess.run([sys.executable, "-m", "reconcile", "--log-format", "json", "run", "--date", "2026-11-23",
                        "--out", str(tmp_path / "out"), "--no-state", "--set", f"sink.uri={sink}"],  # no progress bars
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 3, p.stderr
    lines = p.stderr.splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["time"].endswith("Z") and r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR") for r in records)
    finished = {r["source"]: r for r in records if r["message"].split(" ", 2)[1:2] == ["finished:"]}
    assert set(finished) == {s.name for s in REGISTRY}
    for name, r in finished.items():
        assert r["level"] == "INFO" and r["logger"] == "reconcile.run"
        assert isinstance(r["records"], int) and isinstance(r["rejected"], int) and isinstance(r["complete"], bool)
        assert isinstance(r["seconds"], float) and r["seconds"] >= 0
    assert finished["sink"] | {"seconds": 0} == {**finished["sink"], "records": 0, "rejected": 0, "seconds": 0}
    assert finished["zendesk"]["complete"] is False  # not configured: a required store, so not read whole


def test_text_logs_stay_the_default(tmp_path):
    env = {**os.environ, "ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""}
    p = subprocess.run([sys.executable, "-m", "reconcile", "-v", "run", "--date", "2026-11-23", "--no-state",
                        "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert not any(line.startswith("{") for line in p.stderr.splitlines()), p.stderr


def test_a_config_error_is_one_json_line_with_its_exit_code(tmp_path):
    p = subprocess.run([sys.executable, "-m", "reconcile", "--log-format", "json", "run", "--no-state",
                        "--set", 'thresholds.zendesk_to_bus="x"'],
                       capture_output=True, text=True, env={**os.environ, "ZENDESK_URL": ""}, cwd=tmp_path, timeout=60)
    assert p.returncode == 4
    (line,) = p.stderr.splitlines()
    r = orjson.loads(line)
    assert (r["level"], r["exit_code"]) == ("ERROR", 4)
    assert r["message"].startswith("Error: [thresholds] zendesk_to_bus = \"x\" is not valid")


def test_the_status_record_is_logged_with_the_json_summary_too(tmp_path):
    """The scheduler recipes pass --json (the summary on stdout) with --log-format json: the run's status record on
    stderr, which docs/operations.md promises a log shipper, was left out whenever --json was given."""
    sink = tmp_path / "sink"
    sink.mkdir()
    env = {**os.environ, "ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""}
    p = subprocess.run([sys.executable, "-m", "reconcile", "--log-format", "json", "run", "--date", "2026-11-23",
                        "--out", str(tmp_path / "out"), "--no-state", "--json", "--set", f"sink.uri={sink}"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 3, p.stderr
    assert orjson.loads(p.stdout)["status"] == "incomplete"
    [status] = [r for r in map(orjson.loads, p.stderr.splitlines()) if "status" in r]
    assert (status["status"], status["exit_code"], status["message"].split(":")[0]) == ("incomplete", 3, "incomplete")


def test_a_usage_error_is_one_json_line_with_its_exit_code(tmp_path):
    """A scheduler's typo in a subcommand's option: with --log-format json, one JSON line (it was click's usage text,
    which a log shipper reading stderr as JSON lines cannot parse)."""
    p = subprocess.run([sys.executable, "-m", "reconcile", "--log-format", "json", "run", "--no-state", "--dat",
                        "2026-11-23"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 4
    (line,) = p.stderr.splitlines()
    r = orjson.loads(line)
    assert (r["level"], r["exit_code"], r["command"]) == ("ERROR", 4, "reconcile run")
    assert r["message"].startswith("Error: No such option '--dat'")
    p = subprocess.run([sys.executable, "-m", "reconcile", "run", "--no-state", "--dat", "2026-11-23"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 4 and p.stderr.startswith("Usage: reconcile run [OPTIONS]")
