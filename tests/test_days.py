"""Daily runs over consecutive simulated days (moto + the Zendesk server): pending events carried and settled per
the truth, re-runs that change nothing, and `trace` of a dead-lettered, a silently lost and a duplicated event."""

from datetime import datetime, timedelta, timezone

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reconcile.cli import main
from reconcile.simulate.demo import DAY_ID_OFFSET, MULTI_DAY, reconcile_days
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores
from reconcile.state import State

pytestmark = pytest.mark.usefixtures("restore_environment")  # the demo code sets env vars

FAST = dict(events=3000, batch_seconds=900, files_per_batch=1)


def day_sim(tmp, j, k, **kw):
    """Day j of the simulation as the stores stand at day k's run."""
    p = SimParams(seed=40 + j, day=f"2026-11-{23 + j}", id_offset=j * DAY_ID_OFFSET,
                  view_after_end=timedelta(days=k - j) + SimParams.as_of_after_end,
                  **{**MULTI_DAY, "in_flight": 0.08, **FAST, **kw})
    sim = simulate(p)
    write_stores(sim, tmp / f"day{j}-seen{k}")
    return sim, tmp / f"day{j}-seen{k}"


def run_day(moto, tmp, k, state):
    moto.reset()
    sims = [day_sim(tmp, j, k) for j in range(k + 1)]
    return sims, reconcile_days(sims, tmp / f"run{k}", moto.endpoint, audience="daily", progress=False,
                                state=state)


def history(state):
    with State.open(state, write=False) as st:
        return [(r["window_key"], r["hop"], r["in"], r["out"], r["lost"], r["pending"]) for r in st.history()]


def truth_of(sim):
    return dict(zip(sim.truth["source_id"].to_pylist(), sim.truth["verdict"].to_pylist()))


def test_pending_settled_next_day_and_reruns_change_nothing(moto, tmp_path):
    state = tmp_path / "state.duckdb"
    (s1, _), = run_day(moto, tmp_path, 0, state)[0]
    run1 = pq.read_table(tmp_path / "run0" / "verdicts.parquet").to_pylist()
    pending1 = {r["source_id"] for r in run1 if r["verdict"] == "pending"}
    assert pending1, "the simulation must leave events in flight at day 1's end"

    sims, out2 = run_day(moto, tmp_path, 1, state)
    carried = out2.summary["carried"]
    assert carried["events"] == len(pending1)
    day1_now = truth_of(sims[0][0])  # day 1's truth as its stores stand at day 2's run
    settled = {r["source_id"]: r["verdict"] for r in carried["events_shown"]}
    assert set(settled) == pending1
    assert settled == {i: day1_now[i] for i in pending1}
    assert {"delivered", "lost_after_bus"} & set(settled.values())
    assert truth_of(sims[1][0]) == {r["source_id"]: r["verdict"] for r in
                                    pq.read_table(tmp_path / "run1" / "verdicts.parquet").to_pylist()}

    after = history(state)
    run_day(moto, tmp_path, 0, state)  # re-run day 1 after day 2
    assert history(state) == after
    run_day(moto, tmp_path, 1, state)  # and day 2 again
    assert history(state) == after


def test_pending_events_are_settled_by_the_truth_after_days_without_a_run(moto, tmp_path):
    """Day 1 is run, days 2 and 3 are not (an outage), day 4 is. An event pending on day 1 that landed on day 2 sits in
    a sink partition of day 2, which day 4's own read range does not reach: the run reads the sink back to the
    earliest carried event (Window.sink_from), so the carried events settle as the truth says, none falsely lost."""
    state = tmp_path / "state.duckdb"
    run_day(moto, tmp_path, 0, state)
    sims, out = run_day(moto, tmp_path, 3, state)
    carried = out.summary["carried"]
    assert carried["events"] > 0 and carried["events"] == len(carried["events_shown"])
    day1_now = truth_of(sims[0][0])  # day 1's truth as its stores stand at day 4's run
    settled = {r["source_id"]: r["verdict"] for r in carried["events_shown"]}
    assert settled == {i: day1_now[i] for i in settled}
    assert "delivered" in settled.values()
    # the report says how far back the sink was read
    assert out.summary["window"]["sink_read_start"] < "2026-11-24" <= out.summary["window"]["read_start"]
    assert "sink read back to" in (tmp_path / "run3" / "report.html").read_text()
    # and `verify` re-renders it from its evidence alone, read-back included (the manifest records it)
    from reconcile.verify import verify
    v = verify(tmp_path / "run3")
    assert v.ok, v.differences


def test_the_sink_is_read_back_to_carried_events_within_carry_back_only():
    """An event carried from far back (an outage longer than [window] carry_back) does not widen the read: it is
    out of reach (never settled as lost, queries/settlements.sql) and every later run would otherwise read that far."""
    import pyarrow as pa
    from reconcile.run import _read_back
    from reconcile.state import CARRIED_SCHEMA
    from reconcile.window import Window
    start = datetime(2026, 11, 30, tzinfo=timezone.utc)
    window = Window(start=start, end=start + timedelta(days=1), as_of=start + timedelta(days=1, hours=2),
                    carry_back=timedelta(days=7))

    def back(*days_before):
        return _read_back(window, pa.Table.from_pylist(
            [dict(window_key="w", source_id=str(i), event_time=start - timedelta(days=d)) for i, d in
             enumerate(days_before)], schema=CARRIED_SCHEMA))

    assert back(2, 10) == start - timedelta(days=2)  # the one 10 days back is out of reach
    assert back(10) is None and back(0) is None  # out of reach; within the window's own read range


def test_concurrent_run_on_the_same_state_fails_fast(moto, tmp_path):
    state = tmp_path / "state.duckdb"
    (tmp_path / "sink").mkdir()
    with State.open(state):
        result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(tmp_path / "x"),
                                           "--state", str(state), "--no-progress",
                                           "--set", f'sink.uri="{tmp_path / "sink"}"'])
    assert result.exit_code == 4
    assert "in use by another run" in result.output


@pytest.mark.parametrize("verdict,hops", [("dead_lettered", {"zendesk", "bus", "dlq"}),
                                          ("lost_after_bus", {"zendesk", "bus"}),
                                          ("duplicated", {"zendesk", "bus", "sink"})])
def test_trace_shows_the_full_path(verdict, hops, moto, tmp_path):
    run_day(moto, tmp_path, 0, None)
    rows = pq.read_table(tmp_path / "run0" / "verdicts.parquet").to_pylist()
    event = next(r for r in rows if r["verdict"] == verdict and r["log_copies"] > 0)
    result = CliRunner().invoke(main, ["trace", event["eb_id"], "--run", str(tmp_path / "run0"), "--json"])
    assert result.exit_code == 0, result.output
    (found,) = orjson.loads(result.stdout)
    assert [e["verdict"] for e in found["events"]] == [verdict]
    assert {o["hop"] for o in found["observations"]} == hops
    if verdict == "duplicated":
        assert sum(o["hop"] == "sink" for o in found["observations"]) >= 2
        # the sink's copies hold the bus log's bytes, so their payloads were not parsed: the trace says so, and
        # shows their Zendesk fields from the bus log copy of the same bytes (what parsing them would give)
        sink = [o for o in found["observations"] if o["hop"] == "sink"]
        assert [o["payload_parsed"] for o in sink] == [False] * len(sink)
        bus = {o["eb_id"]: o for o in found["observations"] if o["hop"] == "bus"}
        fields = ("event_time", "ticket_id", "event_type")
        for o in sink:
            assert [o[f] for f in fields] == [bus[o["eb_id"]][f] for f in fields]
            assert None not in [o[f] for f in fields]
        assert event["ticket_id"] in {o["ticket_id"] for o in sink}
        assert {o["payload_parsed"] for o in found["observations"] if o["hop"] != "sink"} == {None}
        text = CliRunner().invoke(main, ["trace", event["eb_id"], "--run", str(tmp_path / "run0")]).output
        sink_lines = [line for line in text.splitlines() if line.split()[1:2] == ["sink"]]
        assert len(sink_lines) == len(sink)
        assert all(line.endswith("(payload not parsed: the bus log holds the same bytes under this id; fields from "
                                 "its copy)") and bus[event["eb_id"]]["event_type"] in line for line in sink_lines)
    by_source_id = CliRunner().invoke(main, ["trace", event["source_id"], "--run", str(tmp_path / "run0"), "--json"])
    assert orjson.loads(by_source_id.stdout)[0]["events"] == found["events"]
    if verdict == "duplicated":  # a run from before the ledgers kept payload_digest is still traced
        for ledger in (tmp_path / "run0" / "evidence").glob("*.parquet"):
            table = pq.read_table(ledger)
            if "payload_digest" in table.column_names:
                pq.write_table(table.drop_columns(["payload_digest"]), ledger)
        old = CliRunner().invoke(main, ["trace", event["eb_id"], "--run", str(tmp_path / "run0"), "--json"])
        assert old.exit_code == 0, old.output
        (older,) = orjson.loads(old.stdout)
        assert older["events"] == found["events"]
        assert len(older["observations"]) == len(found["observations"])
        # no digest, so no proof the bus copy holds the same bytes: the fields stay empty rather than borrowed
        old_sink = [o for o in older["observations"] if o["hop"] == "sink"]
        assert [o["payload_parsed"] for o in old_sink] == [False] * len(sink)
        assert [[o[f] for f in fields] for o in old_sink] == [[None] * len(fields)] * len(sink)


def test_trace_names_an_orphan_by_its_id_and_its_ticket(moto, tmp_path):
    """The report asks to trace an orphan (a bus record no Zendesk event explains): its trace said nothing of what
    it is, and its ticket's said "not in any run". Both show it, from gaps.csv, with its records."""
    import pyarrow.csv as pacsv
    run_day(moto, tmp_path, 0, None)
    gaps = pacsv.read_csv(tmp_path / "run0" / "gaps.csv").to_pylist()
    judged = {r["ticket_id"] for r in gaps if r["verdict"] != "orphan"}
    orphan = next(r for r in gaps if r["verdict"] == "orphan" and r["ticket_id"] is not None)
    by_id = CliRunner().invoke(main, ["trace", orphan["eb_id"], "--run", str(tmp_path / "run0"), "--json"])
    assert by_id.exit_code == 0, by_id.output
    (found,) = orjson.loads(by_id.stdout)
    assert [(e["verdict"], e["eb_id"], e["ticket_id"]) for e in found["events"]] == [
        ("orphan", orphan["eb_id"], orphan["ticket_id"])]
    assert found["observations"] and {o["eb_id"] for o in found["observations"]} == {orphan["eb_id"]}
    text = CliRunner().invoke(main, ["trace", orphan["eb_id"], "--run", str(tmp_path / "run0")]).output
    assert f"orphan eb_id {orphan['eb_id']} (ticket {orphan['ticket_id']}" in text
    assert "no Zendesk event of this run's window explains it (no source event)" in text
    by_ticket = CliRunner().invoke(main, ["trace", str(orphan["ticket_id"]), "--run", str(tmp_path / "run0"), "--json"])
    assert by_ticket.exit_code == 0, by_ticket.output
    (ticket,) = orjson.loads(by_ticket.stdout)
    assert orphan["eb_id"] in {e["eb_id"] for e in ticket["events"] if e["verdict"] == "orphan"}
    assert orphan["eb_id"] in {o["eb_id"] for o in ticket["observations"]}
    if orphan["ticket_id"] not in judged:  # a ticket whose only records are orphans was "not in any run"
        assert {e["verdict"] for e in ticket["events"]} == {"orphan"}


def test_the_manifest_records_the_window_a_re_render_needs():
    """verify re-renders from the manifest's window: carry_back bounds the sink's read both ways (read back for carried
    events, on to as_of), so a run with another carry_back must be rebuilt with its own (runfolder.window_record)."""
    from reconcile.config import Config
    from reconcile.runfolder import window_of, window_record
    from reconcile.window import Window
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    w = Window(start=start, end=start + timedelta(days=1), as_of=start + timedelta(days=20),
               carry_back=timedelta(days=2), sink_from=start - timedelta(days=1))
    again = window_of({"window": window_record(w)}, Config())
    assert again == w and again.sink_read_end == w.read_end + timedelta(days=2)
    # a manifest written before carry_back was recorded: its default
    older = {k: v for k, v in window_record(w).items() if k != "carry_back_s"}
    assert window_of({"window": older}, Config()).carry_back == Window.carry_back
