"""Pending events carried across daily runs, settled by later runs; idempotent re-runs; one run at a time."""


import orjson
import pytest
from click.testing import CliRunner

from reconcile.cli import main
from reconcile.errors import StateError
from reconcile.state import State

from tinyday import day1, day2

def history(st):
    return [(r["window_key"][:8], r["hop"], r["in"], r["out"], r["lost"], r["pending"]) for r in st.history()]


def test_day2_settles_day1_pending_and_rerun_changes_nothing(tmp_path):
    with State.open(tmp_path / "state.duckdb") as st:
        s1 = day1(tmp_path, st)
        assert s1["verdicts"]["pending"] == 1
        s2 = day2(tmp_path, st)
        assert s2["carried"]["events"] == 1
        settled = s2["carried"]["events_shown"][0]
        assert (settled["source_id"], settled["verdict"], settled["lateness_s"]) == ("5", "delivered", 5400.0)
        after_day2 = history(st)
        assert ("20261123", "bus_to_sink", 10, 8, 2, 0) in after_day2
        assert ("20261124", "bus_to_sink", 1, 1, 0, 0) in after_day2
        day1(tmp_path, st)  # re-run day 1 after day 2
        assert history(st) == after_day2
        day2(tmp_path, st)  # and day 2 again: no double count
        assert history(st) == after_day2


def test_a_run_with_a_store_read_in_part_leaves_carried_losses_pending(tmp_path):
    """Day 2's sink could not be read whole (the file holding E's late row): E, pending since day 1, is not found
    there, but that is no proof of a loss. It stays pending (not settled, carried again, day 1's figures unchanged);
    day 2 re-run with the sink read whole settles it delivered."""
    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        after_day1 = [h for h in history(st) if h[0] == "20261123"]
        s2 = day2(tmp_path, st, sink_read_whole=False)
        assert s2["status"] == "incomplete" and s2["carried"]["by_verdict"] == {"pending": 1}
        assert s2["carried"]["events_shown"][0]["cause"] == ("would be lost_after_bus, but sink read only in part: "
                                                            "judged again by the next run")
        assert [h for h in history(st) if h[0] == "20261123"] == after_day1
        s2 = day2(tmp_path, st)
        assert s2["carried"]["by_verdict"] == {"delivered": 1}
        assert ("20261123", "bus_to_sink", 10, 8, 2, 0) in history(st)


def test_trace_shows_what_a_later_run_settled_a_pending_event_as(tmp_path):
    """Day 1's verdicts.parquet keeps E (event 5) pending; day 2 settled it delivered. trace, reading the runs the
    state knows, shows both: the day's own verdict and the later settlement."""
    state = tmp_path / "state.duckdb"
    with State.open(state) as st:
        day1(tmp_path, st)
        day2(tmp_path, st)
    out = CliRunner().invoke(main, ["trace", "5", "--state", str(state)])
    assert out.exit_code == 0, out.output
    assert "pending" in out.output
    assert "settled later: event 5 delivered, 5400 s late, by the run of 20261124" in out.output
    found = orjson.loads(CliRunner().invoke(main, ["trace", "5", "--state", str(state), "--json"]).output)
    day1_trace = [t for t in found if t["run_dir"].endswith("day1")]
    assert [(x["verdict"], x["settled_in"][:8]) for x in day1_trace[0]["settled_later"]] == [("delivered", "20261124")]
    # a folder traced alone (no state) shows its own day's verdict only
    alone = orjson.loads(CliRunner().invoke(main, ["trace", "5", "--run", str(tmp_path / "day1"), "--json"]).output)
    assert alone[0]["settled_later"] == [] and alone[0]["events"][0]["verdict"] == "pending"


def test_second_run_on_the_same_state_fails_fast(tmp_path):
    with State.open(tmp_path / "state.duckdb"):
        with pytest.raises(StateError, match="in use by another run"):
            with State.open(tmp_path / "state.duckdb"):
                pass
    with State.open(tmp_path / "state.duckdb") as st:  # the lock went with the first run
        assert st.history() == []


def test_state_on_s3_round_trips_and_is_locked(tmp_path, aws_cfg):
    """An s3:// state is downloaded before and uploaded after the run; a lock object keeps a second run out."""
    from reconcile.aws import make_client
    make_client("s3", aws_cfg).create_bucket(Bucket="reconcile-state")
    uri = "s3://reconcile-state/prod/reconcile-state.duckdb"
    with State.open(uri, aws_cfg) as st:
        day1(tmp_path, st)
        with pytest.raises(StateError, match="in use by another run"):
            with State.open(uri, aws_cfg):
                pass
    with State.open(uri, aws_cfg, write=False) as st:
        assert {r["window_key"][:8] for r in st.history()} == {"20261123"}
    keys = [o["Key"] for o in make_client("s3", aws_cfg).list_objects_v2(Bucket="reconcile-state")["Contents"]]
    assert keys == ["prod/reconcile-state.duckdb"]  # the lock went with the run
