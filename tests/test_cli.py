"""The CLI: every command documents itself with a runnable example; errors become one line and an exit code."""

import click
import pytest
from click.testing import CliRunner

from reconcile.aws import make_client
from reconcile.cli import main


def commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path,cmd", list(commands(main)), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_help_with_an_example(path, cmd):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert f"reconcile {' '.join(path)}" in result.output


def test_main_help_lists_exit_codes():
    out = CliRunner().invoke(main, ["--help"]).output
    for code in ("0  clean", "1  only pending", "2  loss", "3  an input", "4  configuration"):
        assert code in out


def test_config_error_is_one_line_and_exit_4(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sink]\nid_colum = 'x'\n")
    result = CliRunner().invoke(main, ["run", "--config", str(bad), "--date", "2026-11-23"])
    assert result.exit_code == 4
    assert result.output.strip().splitlines() == [
        "Error: Unknown key(s) in [sink]: id_colum. Known keys: uri, format, id_column, id_path, "
        "honour_commit_log, retention, stream_retention, partition_time_zone, parse_payloads."]


def test_an_as_of_in_the_future_is_refused(tmp_path):
    """A run judged "as of" tomorrow would call events still in flight lost (past their horizon) and ask Zendesk's
    export for a minute it cannot list yet: a config error, before anything is read."""
    from datetime import datetime, timedelta, timezone
    later = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--as-of", later, "--out", str(tmp_path / "o"),
                                       "--no-progress"], env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""})
    assert result.exit_code == 4, result.output
    assert "is later than now" in result.output and not (tmp_path / "o" / "report.html").exists()


@pytest.mark.parametrize("window, named", [
    # a date with an offset (or a time) was read as 05:00 UTC: the window silently shifted
    (["--date", "2026-11-23+05:00"], "--date '2026-11-23+05:00' is not a UTC day (YYYY-MM-DD"),
    (["--date", "2026-11-23T05:00"], "--date '2026-11-23T05:00' is not a UTC day (YYYY-MM-DD"),
    (["--start", "2026-11-23+05:00", "--end", "2026-11-24T00:00:00+05:00"],
     "--start: Cannot read time '2026-11-23+05:00': a date and a time are joined by T"),
    (["--date", "2026-11-23", "--as-of", "yesterday"], "--as-of: Cannot read time 'yesterday'"),
    # a window not over yet: a full read for a bogus incomplete run, with advice to check permissions
    (["--date", "2026-11-23", "--as-of", "2026-11-20T00:00:00Z"],
     "The window ends at 2026-11-24T00:00:00Z, after --as-of (2026-11-20T00:00:00Z): a window is judged once it is "
     "over"),
    (["--date", "2999-01-01"], "The window ends at 2999-01-02T00:00:00Z, after now"),
    # windows apart by less than a second share a key: they replaced each other in the state
    (["--start", "2026-11-23T00:00:00Z", "--end", "2026-11-23T00:00:00.5Z"], "must be whole seconds"),
])
def test_a_window_is_read_as_given_and_only_once_it_is_over(tmp_path, window, named):
    for command in (["run", "--dry-run"], ["run", "--out", str(tmp_path / "o"), "--no-progress"]):
        result = CliRunner().invoke(main, [*command, *window], env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""})
        assert result.exit_code == 4, result.output
        assert named in result.output and not (tmp_path / "o").exists()


def test_missing_required_stores_make_the_run_incomplete(tmp_path):
    sink = tmp_path / "sink"
    sink.mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(out), "--no-progress",
                                       "--set", f"sink.uri={sink}"],
                                env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""})
    assert result.exit_code == 3, result.output
    assert (out / "report.html").exists()


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, aws_cfg):
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="spark-output")
    s3.put_object(Bucket="spark-output", Key="events/dt=2026-11-23/part-0.parquet", Body=b"x")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(out), "--dry-run",
                                       "--set", "sink.uri=s3://spark-output/events"],
                                env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": aws_cfg.endpoint_url})
    assert result.exit_code == 0, result.output
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():  # the first line of each kind
        lines.setdefault(*line.split(None, 1))
    assert lines["sink"] == "s3://spark-output/events (parquet, id from column partitionKey)"
    # a window judged days after it: the sink is read up to now, where events that landed late are
    assert lines["sink-read"].startswith("on to ") and lines["sink-read"].endswith("events that landed late")
    assert lines["zendesk"].startswith("NOT CONFIGURED")
    assert lines["read"] == "downstream stores over 2026-11-22T23:00:00Z → 2026-11-25T00:00:00Z"
    assert lines["reach"].split()[:2] == ["ok", "sink"]
    assert list(tmp_path.iterdir()) == []


def test_every_flag_a_message_names_exists():
    """Hints like "Check --sink-uri" must name a real option (or a config key: `[sink] uri`, `--set sink.uri=...`)."""
    import ast
    import re
    from pathlib import Path

    import reconcile

    options = {opt for _, cmd in commands(main) for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    options |= {opt for p in main.params for opt in p.opts} | {"--help", "--version"}
    named = {}
    root = Path(reconcile.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "zendesk_server.py":  # its own argparse CLI (python -m reconcile.simulate.zendesk_server)
            continue
        tree = ast.parse(path.read_text())
        definitions = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
                       and getattr(node.func, "attr", None) == "option" for arg in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in definitions:
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    named.setdefault(flag, f"{path.relative_to(root)}:{node.lineno}")
    assert named, "no flag named anywhere: the scan is broken"
    unknown = {flag: where for flag, where in named.items() if flag not in options}
    assert unknown == {}


@pytest.mark.parametrize("key,value,named", [
    ("match.eb_id_pattern", '"(["', "[match] eb_id_pattern"),
    ("sink.partition_time_zone", '"Mars/Olympus"', "partition_time_zone 'Mars/Olympus'"),
    ("match.emission_model", '"/no/such/model.csv"', "does not exist"),
])
def test_mistakes_the_values_alone_cannot_show_fail_before_anything_is_read(tmp_path, key, value, named):
    """A pattern, a time zone or a model file that only fails when used is a config error before any store is read
    (reconcile.check.require_usable): `run` writes nothing and exits 4."""
    (tmp_path / "sink").mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(out), "--no-progress",
                                       "--state", str(tmp_path / "state.duckdb"),
                                       "--set", f'sink.uri="{tmp_path / "sink"}"', "--set", f"{key}={value}"])
    assert result.exit_code == 4, result.output
    assert named in result.output
    assert not (out / "report.html").exists() and not (out / "evidence").exists()


def test_dry_run_shows_the_sink_read_back_the_state_asks_for(tmp_path, aws_cfg):
    """A pending event carried from two days before: the run would read the sink back to it (run.with_state), and
    the dry run says so, reading the state without changing it."""
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa

    from reconcile.state import State
    from reconcile.window import Window

    state = tmp_path / "state.duckdb"
    day = datetime(2026, 11, 21, tzinfo=timezone.utc)
    earlier = Window(start=day, end=day + timedelta(days=1), as_of=day + timedelta(days=1, hours=2))
    pending = pa.table({"source_id": ["77"], "zendesk_key": ["77"], "eb_id": pa.array([None], pa.string()),
                        "ticket_id": [5], "kind": ["Comment"], "event_time": [day + timedelta(hours=23, minutes=58)],
                        "position": [1], "other_eb_ids": pa.array([None], pa.list_(pa.string())),
                        "emission": ["audit"], "sequence_id": pa.array([None], pa.string()),
                        "sequence_position": pa.array([None], pa.int64()),
                        "claimed_ids": pa.array([None], pa.list_(pa.string())), "audit_id": [7700],
                        "dlq_kinesis": [0], "error_code": pa.array([None], pa.string()),
                        "bus_at": pa.array([None], pa.timestamp("ms", tz="UTC")), "near_audits": [0],
                        "owner_sequence": pa.array([None], pa.string())})
    settlements = pa.table({"window_key": pa.array([], pa.string()), "source_id": pa.array([], pa.string()),
                            "verdict": pa.array([], pa.string()), "eb_id": pa.array([], pa.string()),
                            "lateness_s": pa.array([], pa.float64()), "dlq_kinesis": pa.array([], pa.int64()),
                            "error_code": pa.array([], pa.string())})
    with State.open(state) as st:
        st.record(earlier, {"status": "pending", "exit_code": 1, "generated_at": earlier.as_of, "events": 1,
                            "hops": []}, tmp_path / "run-21", pending, settlements)
        st.commit()
    before = state.read_bytes()
    state.with_name(state.name + ".lock").unlink()  # as on a copy of the state: the dry run must not create one
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(out), "--dry-run",
                                       "--state", str(state), "--set", "sink.uri=s3://spark-output/events"],
                                env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": aws_cfg.endpoint_url})
    lines = result.stdout.splitlines()
    assert f"state      {state}: 1 pending event(s) of earlier windows to judge again" in lines, result.output
    assert ("sink-read  back from 2026-11-21T23:58:00Z for the carried events ([window] carry_back 7d)"
            in lines), result.output
    assert state.read_bytes() == before and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["state.duckdb"]  # nothing written beside it (no lock)
    # no state yet: the run would create it
    fresh = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(out), "--dry-run",
                                      "--state", str(tmp_path / "none.duckdb"),
                                      "--set", "sink.uri=s3://spark-output/events"],
                               env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": aws_cfg.endpoint_url})
    assert f"state      {tmp_path / 'none.duckdb'} (none yet: the run creates it)" in fresh.stdout.splitlines()
    assert not (tmp_path / "none.duckdb").exists() and not (tmp_path / "none.duckdb.lock").exists()


def test_as_of_alone_judges_the_day_before_it(tmp_path):
    """A backfill by --as-of alone (a scheduler's catch-up run) judged yesterday by the wall clock, whose end is
    after the as-of: exit 4 on every catch-up. The window is the UTC day before as-of's."""
    (tmp_path / "sink").mkdir()
    result = CliRunner().invoke(main, ["run", "--dry-run", "--as-of", "2026-11-24T02:00:00Z", "--set",
                                       f'sink.uri="{tmp_path / "sink"}"'],
                                env={"ZENDESK_URL": "", "AWS_ENDPOINT_URL": ""})
    assert "window     2026-11-23T00:00:00Z → 2026-11-24T00:00:00Z" in result.stdout, result.output


def test_a_bundle_path_takes_the_window_as_out_does(tmp_path):
    """--bundle 'b-{window}.tgz' wrote a file named so: a fixed --bundle on a schedule overwrote each night's."""
    (tmp_path / "sink").mkdir()
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(tmp_path / "out"), "--no-state",
                                       "--no-progress", "--set", f'sink.uri="{tmp_path / "sink"}"', "--bundle",
                                       str(tmp_path / "b-{window}.tgz")])
    assert result.exit_code == 3, result.output
    assert [p.name for p in tmp_path.glob("b-*.tgz")] == ["b-20261123T000000Z-20261124T000000Z.tgz"]
