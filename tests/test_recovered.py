"""The `recovered` verdict (issue 16, proof): events a recovery re-sent, judged again.

On the tiny day of test_queries.py (as of 2026-11-24 02:00, horizon 3 h): D (z4) is lost after the bus, C (z3)
dead-lettered, A (z1) delivered. Journal rows are written as `reconcile recover --apply` writes them (the shared
interface: State.write_journal), and re-put records land in the sink as a re-put makes them: the same event, its
EventBridge id as partition key, a later arrival. Over moto and the state file: test_recovery_end_to_end.py.
"""

from datetime import timedelta

import pyarrow as pa
from bs4 import BeautifulSoup
from click.testing import CliRunner

from reconcile import engine as eng
from reconcile import ledger, recovered
from reconcile.cli import main
from reconcile.emission import load_model
from reconcile.state import CARRIED_SCHEMA, JOURNAL_COLUMNS, State

import tinyday as day
from ledgers import DAY, PARAMS, at, uid, write

AS_OF = DAY + timedelta(hours=26)


def journal(*rows: dict) -> pa.Table:
    """Journal rows (recovery_journal's columns) from a few fields each."""
    base = dict(plan_digest="a" * 64, window_key="2026-11-23", source_id=None, route="reput",
                target="arn:aws:kinesis:us-east-1:1:stream/zendesk-events", status="sent", attempts=1, shard_id=None,
                sequence_number=None, replay_name=None, sent_at=None, error=None)
    out = [dict(base, **r) for r in rows]
    for r in out:
        r["eb_id"] = uid(r.get("eb_id"))
        if isinstance(r["sent_at"], str):
            r["sent_at"] = at(r["sent_at"])
    return pa.Table.from_pylist([{c: r[c] for c in JOURNAL_COLUMNS} for r in out],
                                schema=recovered.JOURNAL_SCHEMA)


def recoveries_of(rows: pa.Table, tmp_path) -> pa.Table:
    """What State.recoveries() makes of these journal rows (through a real state file)."""
    with State.open(tmp_path / "journal-state.duckdb") as st:
        st.write_journal(rows)
        return {"recoveries": st.recoveries(), "recovery_journal": st.journal_rows().cast(recovered.JOURNAL_SCHEMA)}


def judge(tmp_path, rows: pa.Table, sink_extra=(), carried=None, bus_extra=(), outside_log="expired"):
    e = eng.Engine.open()
    e.bind_ledger("zendesk", write(tmp_path, "zendesk", day.ZENDESK))
    e.bind_ledger("bus", write(tmp_path, "bus", day.BUS + list(bus_extra)))
    e.bind_ledger("sink", write(tmp_path, "sink", day.SINK + list(sink_extra)))
    e.bind_ledger("dlq", write(tmp_path, "dlq", day.DLQ))
    e.bind_table("metrics", ledger.METRIC_SCHEMA.empty_table())
    e.bind_table("emission_model", load_model())
    e.bind_table("excluded_kinds", pa.table({"kind": ["Notification"]}))
    e.bind_table("carried", carried if carried is not None else CARRIED_SCHEMA.empty_table())
    for name, table in recoveries_of(rows, tmp_path).items():
        e.bind_table(name, table)
    e.run_all(PARAMS | dict(as_of=AS_OF, outside_log=outside_log))
    return e


def verdict_of(e, source_id: str) -> dict:
    rows = e.con.table("verdicts").filter(f"source_id = '{source_id}'").to_arrow_table().to_pylist()
    assert len(rows) == 1
    return rows[0]


def funnel(e) -> dict:
    return e.arrow("recovery_funnel").to_pylist()[0]


def reput(ev: dict, arrival: str, seq: str) -> dict:
    """The sink row a re-put makes: the same event under its own id, a later arrival, a new sequence number."""
    return day.obs(ev, arrival, sequence_number=seq, committed=True)


def test_a_reput_that_landed_is_recovered_with_its_lag(tmp_path):
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", sent_at="2026-11-24T00:00:00Z")),
              [reput(day.D, "2026-11-24T00:00:05Z", "50")])
    v = verdict_of(e, "4")
    assert (v["verdict"], v["cause"], v["recovery_route"], v["recovery_lag_s"]) == \
        ("recovered", "re-put landed", "reput", 5.0)
    assert v["recovery_sent_at"] == at("2026-11-24T00:00:00Z")
    assert (v["sink_latency_s"], v["end_to_end_s"]) == (None, None)  # the recovery's delay is no pipeline latency
    counts = dict(e.con.execute("SELECT verdict, events FROM verdict_counts").fetchall())
    assert (counts["recovered"], counts["lost_after_bus"]) == (1, 0)
    hop = e.con.execute("SELECT \"out\", lost FROM funnel WHERE name = 'bus_to_sink'").fetchall()[0]
    assert hop == (8, 1)  # 7 delivered or duplicated, and D out of the hop through its recovery; C still lost
    assert funnel(e) | {"lag_p50_s": 5.0} == dict(planned=1, sent=1, landed=1, pending=0, not_landed=0,
                                                 landed_twice=0, landed_before_send=0, failed=0, landed_already=0,
                                                 unfinished=0, lag_p50_s=5.0, lag_max_s=5.0)


def test_a_reput_of_an_event_found_only_in_a_leftover_is_its_recovery(tmp_path):
    """Without [sink] retention a row outside the commit log is a failed batch's leftover, no landing: D, found only
    there, is lost after the bus, planned, re-put, and the re-put lands. Its first landing is the re-put's: recovered,
    not "landed before the send" by the leftover's time."""
    leftover = day.obs(day.D, "13:00:05", sequence_number="40", committed=False)
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", sent_at="2026-11-24T00:00:00Z")),
              [leftover, reput(day.D, "2026-11-24T00:00:05Z", "50")], outside_log="leftover")
    v = verdict_of(e, "4")
    assert (v["verdict"], v["recovery_lag_s"]) == ("recovered", 5.0)
    assert (funnel(e)["landed"], funnel(e)["landed_before_send"]) == (1, 0)
    e.close()
    e = judge(tmp_path / "before", journal(), [leftover], outside_log="leftover")
    assert (verdict_of(e, "4")["verdict"], verdict_of(e, "4")["sink_at"]) == ("lost_after_bus", None)


def test_a_reput_that_landed_beside_another_copy_is_a_duplicate_not_hidden_as_recovered(tmp_path):
    """The re-put landed, and so did another copy after the send (a send in doubt made again, or the original late):
    the sink holds two, a duplicate its consumers see. `recovered` hid it; it is `duplicated`, the recovery named,
    and the recovery funnel counts it landed, twice."""
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", sent_at="2026-11-24T00:00:00Z")),
              [reput(day.D, "2026-11-24T00:00:05Z", "50"), reput(day.D, "2026-11-24T00:00:06Z", "51")])
    v = verdict_of(e, "4")
    assert (v["verdict"], v["cause"], v["recovery_lag_s"]) == \
        ("duplicated", "re-put landed, and so did another copy (redelivery)", 5.0)
    f = funnel(e)
    assert (f["landed"], f["landed_twice"], f["landed_before_send"]) == (1, 1, 0)


def test_a_duplicate_of_a_recovery_with_no_arrival_time_counts_as_landed(tmp_path):
    """A sink that gives no arrival time (Spark output without approximateArrivalTimestamp): the recovery's copy and
    another landed, neither with a time. The send found the event absent, so the recovery landed (twice); the funnel
    called it "landed before the send" because no lag could be worked out."""
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", sent_at="2026-11-24T00:00:00Z")),
              [reput(day.D, None, "50"), reput(day.D, None, "51")])
    v = verdict_of(e, "4")
    assert (v["verdict"], v["sink_at"], v["recovery_lag_s"]) == ("duplicated", None, None)
    f = funnel(e)
    assert (f["landed"], f["landed_twice"], f["landed_before_send"], f["lag_p50_s"]) == (1, 1, 0, None)


def test_an_event_that_landed_before_the_send_keeps_its_own_verdict(tmp_path):
    """Delivered late on its own (before any recovery was sent) is not `recovered`."""
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", sent_at="2026-11-24T00:00:00Z")),
              [reput(day.D, "2026-11-23T23:59:00Z", "50")])
    v = verdict_of(e, "4")
    assert (v["verdict"], v["recovery_lag_s"]) == ("delivered", None)
    assert funnel(e)["landed_before_send"] == 1 and funnel(e)["landed"] == 0


def test_sent_not_landed_is_pending_until_the_horizon_from_the_send_then_lost_again(tmp_path):
    recent = judge(tmp_path / "recent", journal(dict(eb_id="C", source_id="3", sent_at="2026-11-24T01:00:00Z")))
    v = verdict_of(recent, "3")
    assert (v["verdict"], v["cause"]) == ("pending", "re-put sent, not landed yet")
    assert funnel(recent)["pending"] == 1

    old = judge(tmp_path / "old", journal(dict(eb_id="C", source_id="3", sent_at="2026-11-23T22:00:00Z")))
    v = verdict_of(old, "3")
    assert (v["verdict"], v["cause"]) == \
        ("dead_lettered", "THROTTLING, and the re-put sent did not land within the horizon")
    assert funnel(old)["not_landed"] == 1


def test_failed_and_skipped_attempts_are_counted_not_judged(tmp_path):
    e = judge(tmp_path, journal(dict(eb_id="C", source_id="3", status="failed", error="ProvisionedThroughput"),
                                dict(eb_id="D", source_id="4", status="landed_already")))
    assert verdict_of(e, "3")["verdict"] == "dead_lettered" and verdict_of(e, "4")["verdict"] == "lost_after_bus"
    f = funnel(e)
    assert (f["planned"], f["sent"], f["failed"], f["landed_already"]) == (2, 0, 1, 1)


def test_an_event_several_plans_name_counts_once_by_its_furthest_status(tmp_path):
    """queries/journal_statuses.csv orders the statuses: sent beats landed already beats failed beats sending (in
    doubt), whatever order the plans wrote them in; what `recover apply` counts as done or over is read there too."""
    from reconcile import emission
    from reconcile.recover import apply
    assert emission.journal_statuses() == ("sending", "failed", "landed_already", "sent")
    assert apply.DONE == ("landed_already", "sent") and apply.FINAL == ("failed", "landed_already", "sent")
    e = judge(tmp_path, journal(dict(eb_id="C", source_id="3", status="sending", plan_digest="b" * 64),
                                dict(eb_id="C", source_id="3", status="failed", error="ProvisionedThroughput"),
                                dict(eb_id="D", source_id="4", status="landed_already"),
                                dict(eb_id="D", source_id="4", status="sending", plan_digest="b" * 64)))
    f = funnel(e)
    assert (f["planned"], f["sent"], f["failed"], f["landed_already"], f["unfinished"]) == (2, 0, 1, 1, 0)
    left = judge(tmp_path / "left", journal(dict(eb_id="C", source_id="3", status="sending")))
    assert (funnel(left)["planned"], funnel(left)["unfinished"]) == (1, 1)


def test_no_journal_no_recovery(tmp_path):
    e = judge(tmp_path, journal())
    assert funnel(e)["planned"] == 0 and recovered.funnel(funnel(e)) is None
    assert verdict_of(e, "4")["verdict"] == "lost_after_bus"


def test_a_replay_copy_under_a_new_id_is_the_recovery_of_the_original(tmp_path):
    """moto's replays give a new id: the copy is recognised by its replay-name and the same Zendesk facts."""
    copy = dict(day.D, eb_id="D-replayed", replay_name="recover-1")
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", route="replay", replay_name="recover-1",
                                     target="arn:aws:events:us-east-1:1:archive/zendesk",
                                     sent_at="2026-11-24T00:00:00Z")),
              [reput(copy, "2026-11-24T00:01:00Z", "51")])
    v = verdict_of(e, "4")
    assert (v["verdict"], v["cause"], v["recovery_lag_s"]) == ("recovered", "replay recover-1 landed", 60.0)
    assert e.con.execute("SELECT copy_eb_id::VARCHAR, eb_id::VARCHAR FROM replay_copies").fetchall() == [
        (uid("D-replayed"), uid("D"))]
    assert e.count("orphans", f"eb_id = '{uid('D-replayed')}'") == 0


def test_a_replay_copy_the_bus_log_holds_too_is_the_recovery_of_the_original(tmp_path):
    """StartReplay filtered to the rule delivers to every target of it, the log group included: the copy is in the
    bus log too, under the same replay-name. It is still the original's recovery, not an orphan (the original was
    left pending, then lost again)."""
    copy = dict(day.D, eb_id="D-replayed", replay_name="recover-1")
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", route="replay", replay_name="recover-1",
                                     target="arn:aws:events:us-east-1:1:archive/zendesk",
                                     sent_at="2026-11-24T00:00:00Z")),
              [reput(copy, "2026-11-24T00:01:00Z", "51")],
              bus_extra=[day.obs(copy, "2026-11-24T00:00:30Z", source_id="log:D-replayed")])
    assert verdict_of(e, "4")["verdict"] == "recovered"
    assert e.count("replay_copies") == 1 and e.count("orphans", f"eb_id = '{uid('D-replayed')}'") == 0


def test_a_journal_id_that_is_no_uuid_does_not_hide_replay_copies(tmp_path):
    """An id an older version journaled that is no UUID is read as no id (NULL): `x NOT IN (... NULL ...)` is NULL
    for every x, which made every replay copy unrecognised (the original lost again, the copy an orphan)."""
    copy = dict(day.D, eb_id="D-replayed", replay_name="recover-1")
    rows = journal(dict(eb_id="D", source_id="4", route="replay", replay_name="recover-1",
                        sent_at="2026-11-24T00:00:00Z"),
                   dict(eb_id="X", source_id="9", sent_at="2026-11-23T12:00:00Z"))
    i = rows.schema.get_field_index("eb_id")
    rows = rows.set_column(i, rows.field(i), pa.array([rows["eb_id"][0].as_py(), "legacy-7"], rows.field(i).type))
    e = judge(tmp_path, rows, [reput(copy, "2026-11-24T00:01:00Z", "51")])
    assert e.count("recoveries", "eb_id IS NULL") == 1
    assert verdict_of(e, "4")["verdict"] == "recovered"
    assert e.count("orphans", f"eb_id = '{uid('D-replayed')}'") == 0


def test_a_replay_that_keeps_the_id_is_joined_by_it(tmp_path):
    copy = dict(day.D, replay_name="recover-1")
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", route="replay", replay_name="recover-1",
                                     sent_at="2026-11-24T00:00:00Z")),
              [reput(copy, "2026-11-24T00:02:00Z", "51")])
    assert (verdict_of(e, "4")["verdict"], verdict_of(e, "4")["recovery_lag_s"]) == ("recovered", 120.0)
    assert e.count("replay_copies") == 0


def test_a_replay_copy_of_an_unnamed_replay_is_left_to_matching(tmp_path):
    """A copy whose replay-name no journal row names is not taken for a recovery."""
    copy = dict(day.D, eb_id="D-replayed", replay_name="someone-elses-replay")
    e = judge(tmp_path, journal(dict(eb_id="D", source_id="4", route="replay", replay_name="recover-1",
                                     sent_at="2026-11-24T00:00:00Z")),
              [reput(copy, "2026-11-24T00:01:00Z", "51")])
    assert e.count("replay_copies") == 0
    assert verdict_of(e, "4")["verdict"] != "recovered"


# --- through the job and the state file: settlements, evidence, verify ------------------------------------------------

def test_a_carried_event_settles_as_recovered_and_the_run_verifies(tmp_path):
    """E (z5) is pending after day 1; a re-put sent at 00:30 lands at 01:00 the next day: day 2 settles it
    `recovered` with the lag, saves what it judged by in its evidence, and `verify` re-proves the run."""
    import test_state
    from reconcile.verify import verify
    with State.open(tmp_path / "state.duckdb") as st:
        s1 = test_state.day1(tmp_path, st)
        assert "recovery" not in s1  # nothing when no recovery exists
        st.write_journal(journal(dict(eb_id="E", source_id="5", sent_at="2026-11-24T00:30:00Z")))
        s2 = test_state.day2(tmp_path, st)
        settled = s2["carried"]["events_shown"][0]
        assert (settled["source_id"], settled["verdict"], settled["recovery_lag_s"]) == ("5", "recovered", 1800.0)
        assert s2["recovery"]["planned"] == 1 and s2["recovery"]["landed"] == 1
        history = {(r["window_key"][:8], r["hop"]): r for r in st.history()}
        assert history[("20261123", "bus_to_sink")]["pending"] == 0  # settled, not a loss
        assert history[("20261123", "bus_to_sink")]["lost"] == 2
    evidence = tmp_path / "day2" / "evidence"
    assert recovered.read_evidence(evidence)["recoveries"]["eb_id"].to_pylist() == [uid("E")]
    assert recovered.read_evidence(evidence)["recovery_journal"].num_rows == 1
    v = verify(tmp_path / "day2")
    assert v.ok, [str(d) for d in v.differences]
    html = BeautifulSoup((tmp_path / "day2" / "report.html").read_text(), "html.parser")
    shown = {el["data-figure"]: el.get_text(strip=True) for el in html.select("[data-figure^='recovery.']")}
    assert (shown["recovery.planned"], shown["recovery.landed"], shown["recovery.lag_max_s"]) == ("1", "1", "30.0 min")
    assert not BeautifulSoup((tmp_path / "day1" / "report.html").read_text(), "html.parser").select("#recovery")

    out = CliRunner().invoke(main, ["trace", uid("E"), "--run", str(tmp_path / "day2")])
    assert out.exit_code == 0, out.output
    assert "recovery reput sent (sent 2026-11-24T00:30:00Z, attempts 1) of " + uid("E") in out.output
