"""Pending events carried across daily runs, settled by later runs; idempotent re-runs; one run at a time."""

import logging
from datetime import timedelta

import orjson
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from reconcile.cli import main
from reconcile.errors import SourceError, StateError
from reconcile.state import State

from ledgers import uid
from tinyday import day1, day2

def history(st):
    return [(r["window_key"][:8], r["hop"], r["in"], r["out"], r["lost"], r["pending"]) for r in st.history()]


def balanced(st) -> list:
    """The history, each hop of which balances: in = out + lost + pending, settlements folded in."""
    rows = history(st)
    assert all(h[2] == h[3] + h[4] + h[5] for h in rows), rows
    return rows


def test_day2_settles_day1_pending_and_rerun_changes_nothing(tmp_path):
    with State.open(tmp_path / "state.duckdb") as st:
        s1 = day1(tmp_path, st)
        assert s1["verdicts"]["pending"] == 1
        # with the bus log's first copy of it, which a later run's read may not reach (rules.sql retry_start)
        [kept] = st.pending_of(s1["history"][0]["window_key"]).to_pylist()
        assert (kept["source_id"], kept["bus_at"].isoformat()) == ("5", "2026-11-23T23:30:00.400000+00:00")
        s2 = day2(tmp_path, st)
        assert s2["carried"]["events"] == 1
        settled = s2["carried"]["events_shown"][0]
        assert (settled["source_id"], settled["verdict"], settled["lateness_s"]) == ("5", "delivered", 5400.0)
        after_day2 = balanced(st)
        assert ("20261123", "bus_to_sink", 10, 8, 2, 0) in after_day2
        assert ("20261124", "bus_to_sink", 1, 1, 0, 0) in after_day2
        day1(tmp_path, st)  # re-run day 1 after day 2
        assert history(st) == after_day2
        day2(tmp_path, st)  # and day 2 again: no double count
        assert history(st) == after_day2


def test_a_loss_settled_for_an_earlier_window_over_its_budget_makes_the_run_exit_2(tmp_path):
    """E, pending on day 1, never lands: day 2 settles it lost after the bus. Day 1's bus_to_sink, with it folded in,
    is over its budget; day 2's own window is clean, but the run that found the loss exits 2 (and the state says so),
    or a day's losses after the bus, pending when it is first judged, would never reach an exit code. Within the
    budget, day 2 stays clean; a re-render (verify) gives the same status."""
    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=False)
        assert [h["lost"] for h in s2["hops"]] == [0, 0] and s2["carried"]["by_verdict"] == {"lost_after_bus": 1}
        assert (s2["status"], s2["exit_code"]) == ("loss", 2)
        assert s2["carried"]["over_threshold"] == [{"window_key": s2["history"][0]["window_key"], "hop": "bus_to_sink",
                                                    "in": 10, "lost": 3, "loss_rate": 0.3, "threshold": 0.0}]
        assert st.con.execute("SELECT status, exit_code FROM runs ORDER BY window_start").fetchall() == [
            ("loss", 2), ("loss", 2)]
    assert orjson.loads((tmp_path / "day2" / "summary.json").read_bytes())["status"] == "loss"
    from reconcile import alert
    assert "Over budget with them: 20261123T000000Z-20261124T000000Z bus_to_sink: 3 lost of 10 (30.000 %, threshold " \
        "0.000 %)" in alert.message(s2, "report.html")[1]
    shown = BeautifulSoup((tmp_path / "day2" / "report.html").read_text(), "html.parser").select_one("p.carried-over")
    assert " ".join(shown.get_text(" ").split()).endswith("leave them over budget: 20261123T000000Z-20261124T000000Z "
                                                           "bus → sink "
                                                           "3 lost of 10 ( 30.000 % , budget 0.000 % ).")
    assert CliRunner().invoke(main, ["verify", str(tmp_path / "day2")]).exit_code == 0
    # a run made before the history kept each hop's recovered count (its evidence/history.json has none) verifies
    import hashlib
    from reconcile import runfolder
    saved = tmp_path / "day2" / "evidence" / "history.json"
    older = orjson.dumps([{k: v for k, v in h.items() if k != "recovered"} for h in orjson.loads(saved.read_bytes())])
    saved.write_bytes(older)
    m, _ = runfolder.load_manifest(tmp_path / "day2")
    entry = next(f for f in m["files"] if f["path"] == "evidence/history.json")
    entry.update(sha256=hashlib.sha256(older).hexdigest(), bytes=len(older))
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(tmp_path / "day2", m)
    older_run = CliRunner().invoke(main, ["verify", str(tmp_path / "day2")])
    assert older_run.exit_code in (0, 5) and "UndefinedError" not in older_run.output, older_run.output
    with State.open(tmp_path / "within.duckdb") as st:  # a budget the day's losses stay within
        day1(tmp_path, st, bus_to_sink=0.5)
        s2 = day2(tmp_path, st, e_lands=False, bus_to_sink=0.5)
    assert (s2["status"], s2["carried"]["over_threshold"]) == ("clean", [])
    # day 1 is judged by the budget its run recorded, as `history` judges it, whatever this run's [thresholds]: a
    # budget raised since left a loss the history shows no exit code, and one lowered since made day 2 exit 2 for a
    # window the history calls clean
    with State.open(tmp_path / "raised.duckdb") as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=False, bus_to_sink=0.5)
        assert (s2["status"], [o["threshold"] for o in s2["carried"]["over_threshold"]]) == ("loss", [0.0])
    with State.open(tmp_path / "lowered.duckdb") as st:
        day1(tmp_path, st, bus_to_sink=0.5)
        s2 = day2(tmp_path, st, e_lands=False)
        assert (s2["status"], s2["carried"]["over_threshold"]) == ("clean", [])
        day_1 = s2["carried"]["windows"][0]["window_key"]
        [(lost, threshold)] = [(h["lost"], h["threshold"]) for h in st.history()
                               if h["hop"] == "bus_to_sink" and h["window_key"] == day_1]
        assert (lost, threshold) == (3, 0.5)  # 30 %: within the budget day 1 was judged by


def test_a_loss_settled_for_an_earlier_window_is_listed_in_the_run_and_planned_by_recover(tmp_path, monkeypatch):
    """E, pending on day 1, is settled lost after the bus by day 2, which exits 2 for it. Its gaps.csv lists day 2's
    own events; the settled one was in no file of either run (only counted in summary.json, its first 1,000 shown) and
    `reconcile recover` of either run planned nothing for it. settlements.parquet lists every carried event with what
    the run made of it (verify re-renders it), and the recovery plan takes the losses after the bus among them, with
    their bus log copies where the state's run of their own window read them (day 2 reads only its own window's)."""
    import pyarrow.parquet as pq
    state = tmp_path / "state.duckdb"
    with State.open(state) as st:
        day1(tmp_path, st)
        s2 = day2(tmp_path, st, e_lands=False)
    assert (s2["status"], s2["exit_code"]) == ("loss", 2)
    day1_key = s2["history"][0]["window_key"]
    settled = pq.read_table(tmp_path / "day2" / "settlements.parquet").to_pylist()
    assert [(r["window_key"], r["source_id"], r["verdict"]) for r in settled] == [(day1_key, "5", "lost_after_bus")]
    assert CliRunner().invoke(main, ["verify", str(tmp_path / "day2")]).exit_code == 0
    monkeypatch.setenv("RECONCILE_STATE", str(state))
    made = CliRunner().invoke(main, ["recover", str(tmp_path / "day2"), "--set", "recover.stream=zendesk-events"])
    assert made.exit_code == 0, made.output
    plan = orjson.loads((tmp_path / "day2" / "recovery" / "plan.json").read_bytes())
    [event] = plan["events"]
    assert (event["source_id"], event["verdict"], event["settled_from"]) == ("5", "lost_after_bus", day1_key)
    # found in day 1's bus ledger: its time on the bus, to replay by (this day's config names no archive to replay from
    # nor to re-read a copy from, so no route here)
    assert event["logged_at"] == "2026-11-23T23:30:00.400Z", event
    assert event["route"] == "none" and "no archive to replay from" in event["reason"], event["reason"]
    assert "cannot be applied yet" not in made.stderr


def test_a_settled_loss_s_copy_is_found_in_its_window_s_run_published_to_s3(tmp_path, monkeypatch, aws_cfg):
    """Day 1 ran with --out s3://... (its folder published, the state recording the prefix): the plan for day 2's
    settled loss looked for E's copies only in local folders, found none and had no time on the bus for it. It
    fetches day 1's ledgers from the prefix."""
    import shutil

    from reconcile import publish
    from reconcile.aws import make_client
    state = tmp_path / "state.duckdb"
    with State.open(state) as st:
        day1(tmp_path, st)
        day2(tmp_path, st, e_lands=False)
        make_client("s3", aws_cfg).create_bucket(Bucket="audit")
        publish.publish(tmp_path / "day1", "s3://audit/runs/day1/", aws_cfg)
        # what `run --out s3://audit/runs/day1/` records: the prefix, and no folder left on this machine
        st.con.execute("UPDATE runs SET out_dir = 's3://audit/runs/day1/' WHERE window_start < TIMESTAMPTZ "
                       "'2026-11-24 00:00:00+00'")
    shutil.rmtree(tmp_path / "day1")
    for k, v in {"RECONCILE_STATE": str(state), "AWS_ENDPOINT_URL": aws_cfg.endpoint_url,
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    made = CliRunner().invoke(main, ["recover", str(tmp_path / "day2"), "--set", "recover.stream=zendesk-events"])
    assert made.exit_code == 0, made.output
    [event] = orjson.loads((tmp_path / "day2" / "recovery" / "plan.json").read_bytes())["events"]
    assert (event["source_id"], event["logged_at"]) == ("5", "2026-11-23T23:30:00.400Z"), event


def test_an_event_of_overlapping_windows_is_planned_once_as_the_run_s_own(tmp_path, monkeypatch):
    """An ad-hoc window over the daily run's last hours judges E itself and settles it as a carried event too: the
    plan counted it as two children and said an earlier window's run held its copies (diff review)."""
    from tinyday import BUS, DAY, DLQ, E, SINK, ZENDESK, day_results, legacy, run_window, z
    state = tmp_path / "state.duckdb"
    with State.open(state) as st:
        run_window(tmp_path, st, DAY, day_results(ZENDESK, BUS, SINK, DLQ), "day1")
        # N lands the next morning: the sink has read the stream past E's retries (rules.sql beyond_sink)
        n = legacy("N", 20, "Ticket Created", "2026-11-24T08:00:00.2Z", 1)
        own = day_results([z(5, 5, "Comment", "23:30:00", 500), z(20, 20, "Create", "2026-11-24T08:00:00Z", 2000)],
                          [dict(E, observed_at=E["event_time"]), dict(n, observed_at=n["event_time"])],
                          [dict(n, observed_at="2026-11-24T08:00:02Z", sequence_number="99", committed=True)], [])
        run_window(tmp_path, st, DAY + timedelta(hours=12), own, "adhoc", end=DAY + timedelta(hours=36))
    monkeypatch.setenv("RECONCILE_STATE", str(state))
    made = CliRunner().invoke(main, ["recover", str(tmp_path / "adhoc"), "--set", "recover.stream=zendesk-events"])
    assert made.exit_code == 0, made.output
    plan = orjson.loads((tmp_path / "adhoc" / "recovery" / "plan.json").read_bytes())
    [event] = [e for e in plan["events"] if e["source_id"] == "5"]
    assert (event["children"], event["settled_from"]) == (1, None), event


def test_a_dead_letter_read_while_a_carried_event_is_held_again_is_kept(tmp_path):
    """Day 1 leaves E pending with no dead letter yet; day 2 reads E's dead letter but the sink only in part, and
    holds E again; by day 6 the queue dropped the message. The dead letter day 2 read was kept nowhere: E settled
    lost_after_bus, "no sink row, no DLQ message" (diff review)."""
    from dataclasses import replace
    from tinyday import BUS, DAY, DAY2, DLQ, E, KIN, SINK, ZENDESK, day_results, obs, run_window
    with State.open(tmp_path / "state.duckdb") as st:
        run_window(tmp_path, st, DAY, day_results(ZENDESK, BUS, SINK, DLQ), "day1")
        letter = obs(E, DAY2 + timedelta(hours=1), source_id="m5", error_code="THROTTLING",
                     retry_condition="MaximumEventAgeInSeconds", target_arn=KIN, retry_attempts=40)
        second = day_results([], [], [], [letter])
        second["sink"] = replace(second["sink"], complete=False, problems=["part-00007.parquet: unreadable"])
        [held] = [r for r in run_window(tmp_path, st, DAY2, second, "day2")["carried"]["events_shown"]
                  if r["source_id"] == "5"]
        assert (held["verdict"], held["would_be"]) == ("pending", "dead_lettered")
        later = run_window(tmp_path, st, DAY + timedelta(days=5), day_results([], [], [], []), "day6")
    [settled] = [r for r in later["carried"]["events_shown"] if r["source_id"] == "5"]
    assert settled["verdict"] == "dead_lettered" and "THROTTLING" in settled["cause"], settled


def test_a_plan_from_a_run_no_state_recorded_says_it_cannot_be_applied_yet(tmp_path):
    """A run made with --no-state: its plan printed an --apply command that could only fail ("No state file"), and
    said nothing when the plan was made."""
    import tinyday
    tinyday.produce(tmp_path / "run")
    made = CliRunner().invoke(main, ["recover", str(tmp_path / "run"), "--state", str(tmp_path / "none.duckdb"),
                                     "--set", "recover.stream=zendesk-events"])
    assert made.exit_code == 0, made.output
    assert "warning: this plan cannot be applied yet: No state file at" in made.stderr, made.stderr


def test_a_dead_letter_held_pending_stays_one_once_the_queue_dropped_its_message(tmp_path):
    """Day 1 reads the sink in part: C, whose DLQ message (THROTTLING) it read, is held pending ("would be
    dead_lettered"). Five days later the sink is read whole and back to C, and the queue's 4-day retention has
    dropped the message: C was settled lost_after_bus, "no sink row, no DLQ message", against day 1's own evidence.
    The state keeps the dead letters a run read with the events it leaves pending."""
    from dataclasses import replace
    from tinyday import BUS, DAY, DLQ, SINK, ZENDESK, day_results, run_window
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(ZENDESK, BUS, SINK, DLQ)
        first["sink"] = replace(first["sink"], complete=False, problems=["part-00003.parquet: truncated"])
        assert run_window(tmp_path, st, DAY, first, "day1")["status"] == "incomplete"
        later = run_window(tmp_path, st, DAY + timedelta(days=5), day_results([], [], [], []), "day6")
    [c] = [r for r in later["carried"]["events_shown"] if r["source_id"] == "3"]
    assert c["verdict"] == "dead_lettered" and "THROTTLING" in c["cause"], c


def test_a_re_run_that_reads_a_store_in_part_never_replaces_a_whole_run(tmp_path):
    """Day 1 read every store whole and proved its losses (D lost after the bus, E pending). A re-run while Zendesk
    does not answer lists no event: recorded, it replaced day 1 in the state, its losses gone from the history (0 %)
    and carried nowhere. It is refused (exit 3) and the state keeps day 1 as it was."""
    from dataclasses import replace

    from tinyday import BUS, DAY, DLQ, SINK, day_results, run_window
    with State.open(tmp_path / "state.duckdb") as st:
        assert day1(tmp_path, st)["verdicts"]["pending"] == 1
        before = st.history()
        again = day_results([], BUS, SINK, DLQ)
        again["zendesk"] = replace(again["zendesk"], complete=False, problems=["Zendesk did not answer"])
        with pytest.raises(SourceError, match=r"This run read zendesk only in part, and the state records a run of "
                                              r"20261123T000000Z-20261124T000000Z that read every store whole \(made "
                                              r"2026-11-24T02:00:00Z, status loss") as refused:
            run_window(tmp_path, st, DAY, again, "day1-again")
        assert refused.value.exit_code == 3
        assert st.history() == before and st.run_of(before[0]["window_key"])["out_dir"].endswith("day1")


def test_a_re_run_whose_zendesk_read_is_incomplete_keeps_the_pending_events_it_did_not_list(tmp_path):
    """Day 1, its DLQ read in part (incomplete), leaves E pending; a re-run of day 1 cannot read Zendesk either, so it
    lists no event and judges none. E stays pending (the re-run did not judge it): day 2, with E still not landed,
    settles it lost and exits 2. Replaced by the re-run's empty pending set, E was never carried again and day 2
    exited 0."""
    from dataclasses import replace

    from tinyday import BUS, DAY, DLQ, SINK, ZENDESK, day_results, run_window
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(ZENDESK, BUS, SINK, DLQ)
        first["dlq"] = replace(first["dlq"], complete=False, problems=["a DLQ archive object is cut short"])
        s1 = run_window(tmp_path, st, DAY, first, "day1")
        assert s1["status"] == "incomplete" and s1["verdicts"]["pending"] >= 1
        again = day_results([], BUS, SINK, DLQ)
        again["zendesk"] = replace(again["zendesk"], complete=False, problems=["Zendesk did not answer"])
        assert run_window(tmp_path, st, DAY, again, "day1-again")["exit_code"] == 3
        kept = [r["source_id"] for r in st.pending_of(st.history()[0]["window_key"]).to_pylist()]
        assert "5" in kept and len(kept) == s1["verdicts"]["pending"]
        s2 = day2(tmp_path, st, e_lands=False)
    # E and the losses day 1's partial DLQ read held: settled by day 2, which reads every store whole
    assert s2["carried"]["by_verdict"] == {"lost_after_bus": 2, "lost_before_bus": 2}
    assert (s2["status"], s2["exit_code"]) == ("loss", 2)
    day1_hops = {h["hop"]: h for h in s2["history"] if h["window_key"] == s2["history"][0]["window_key"]}
    assert (day1_hops["bus_to_sink"]["in"], day1_hops["bus_to_sink"]["lost"]) == (2, 2)  # D and E, where they waited
    assert all(h["in"] == h["out"] + h["lost"] + h["pending"] for h in day1_hops.values())


def test_a_carried_event_older_than_carry_back_keeps_the_runs_pending_and_says_how_to_settle_it(tmp_path):
    """E, pending on day 1, is older than [window] carry_back by day 9: no run reads the sink back to it, then or
    later, so it is held. Held, it is no proof of "clean": the run is `pending` (exit 1), and its cause says what
    settles it instead of promising the next run will."""
    from tinyday import DAY, day_results, legacy, run_window, z
    with State.open(tmp_path / "state.duckdb") as st:
        assert day1(tmp_path, st)["verdicts"]["pending"] == 1
        day = DAY + timedelta(days=9)
        t = (day + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
        n = legacy("N9", 109, "Ticket Created", t, 1)
        s9 = run_window(tmp_path, st, day, day_results([z(109, 109, "Create", t, 5009)], [dict(n, observed_at=t)],
                                                       [dict(n, observed_at=t)], []), "day9")
    assert s9["verdicts"]["pending"] == 0 and (s9["status"], s9["exit_code"]) == ("pending", 1)
    [held] = s9["carried"]["events_shown"]
    assert (held["source_id"], held["verdict"]) == ("5", "pending")
    assert held["cause"] == ("would be lost_after_bus, but the sink was not read back to it ([window] carry_back): no "
                             "later run reads the sink back to it either: raise [window] carry_back past it, or re-run "
                             "its window, to settle it")


def test_a_carried_event_merely_within_its_retry_horizon_leaves_a_clean_run_clean(tmp_path):
    """E, pending on day 1 (23:30), is still within EventBridge's retries ten minutes into day 2: pending again, its
    loss not held (nothing was read in part), so the next run settles it. A clean run stays clean (exit 0): were every
    carried pending event a reason for exit 1, runs of a few hours would exit 1 almost every time."""
    from tinyday import DAY2, day_results, run_window
    with State.open(tmp_path / "state.duckdb") as st:
        assert day1(tmp_path, st)["verdicts"]["pending"] == 1
        s = run_window(tmp_path, st, DAY2, day_results([], [], [], []), "first-hour", end=DAY2 + timedelta(minutes=10))
    [carried] = s["carried"]["events_shown"]
    assert (carried["source_id"], carried["verdict"], carried["would_be"]) == ("5", "pending", None)
    assert (s["status"], s["exit_code"]) == ("clean", 0)


def test_a_window_whose_settled_losses_leave_it_over_budget_is_a_loss_in_the_history(tmp_path):
    """Day 1 holds only E (23:30), on the bus and pending: the run is `pending`. Day 2 settles E as lost, leaving day
    1's bus_to_sink at 1 lost of 1: day 1 is `loss` in the history from then on (the day the loss happened), not the
    `pending` it was recorded with; day 2 exits 2 for finding it, and its report's "Where to start" says so."""
    from tinyday import DAY, E, day_results, run_window, z
    with State.open(tmp_path / "state.duckdb") as st:
        only_e = day_results([z(5, 5, "Comment", "23:30:00", 500)], [dict(E, observed_at=E["event_time"])], [], [])
        assert run_window(tmp_path, st, DAY, only_e, "day1")["status"] == "pending"
        # its card says so: within budget so far, E pending -- not "within budget" (E turns out lost)
        cards = BeautifulSoup((tmp_path / "day1" / "report.html").read_text(), "html.parser").select("#status .card")
        card = " ".join(next(c for c in cards if "bus → sink" in c.get_text(" ")).get_text(" ").split())
        assert "0 lost of 1 · 1 pending" in card and "within budget so far" in card, card
        s2 = day2(tmp_path, st, e_lands=False)
        rows = st.con.execute("SELECT window_key, status, exit_code FROM runs ORDER BY window_start").fetchall()
    statuses = [(key[:8], status, code) for key, status, code in rows]
    assert statuses == [("20261123", "pending", 1), ("20261124", "loss", 2)]  # what each run itself said
    day1_now = {(h["status"], h["recorded"], h["exit_code"]) for h in s2["history"] if h["window_key"] < "20261124"}
    assert day1_now == {("loss", "pending", 1)}  # day 1 exited 1; its figures are a loss now
    start = BeautifulSoup((tmp_path / "day2" / "report.html").read_text(), "html.parser").select_one("#start")
    said = " ".join(start.get_text(" ").split())
    assert "This run settled 1 pending event of earlier windows as lost" in said  # not only "none: ... was lost"


def _statuses(st) -> dict[str, str]:
    return {r["window_key"][:11]: r["status"] for r in st.history()}


def test_a_window_s_status_in_the_history_does_not_depend_on_the_order_of_its_runs(tmp_path):
    """Day 1 holds only E, pending; day 2 settles it lost. History derives each window's status from its figures as
    they stand: day 1 is `loss` whether day 2 ran after day 1's last run or before it (a re-run of day 1 with the same
    inputs put it back to `pending` for good, 1 of 1 lost beside it); re-running day 2 once E landed makes day 1 clean
    (it stayed `loss` with 0 lost); the day-2 window's own status is its own figures', its exit code its run's."""
    from tinyday import DAY, E, day_results, run_window, z

    def only_e():
        return day_results([z(5, 5, "Comment", "23:30:00", 500)], [dict(E, observed_at=E["event_time"])], [], [])
    with State.open(tmp_path / "state.duckdb") as st:
        run_window(tmp_path, st, DAY, only_e(), "day1")
        assert _statuses(st) == {"20261123T00": "pending"}
        day2(tmp_path, st, e_lands=False)
        assert _statuses(st) == {"20261123T00": "loss", "20261124T00": "clean"}
        again = run_window(tmp_path, st, DAY, only_e(), "day1")  # the same inputs and as_of: E pending to it
        assert (again["status"], again["exit_code"]) == ("pending", 1)
        assert _statuses(st) == {"20261123T00": "loss", "20261124T00": "clean"}
        day1_bus = next(r for r in st.history() if r["window_key"] < "20261124" and r["hop"] == "bus_to_sink")
        assert (day1_bus["lost"], day1_bus["pending"], day1_bus["exit_code"]) == (1, 0, 1)
        landed = day2(tmp_path, st, e_lands=True)  # E landed after all: day 2 settles it delivered
        assert (landed["status"], landed["carried"]["by_verdict"]) == ("clean", {"delivered": 1})
        assert _statuses(st) == {"20261123T00": "clean", "20261124T00": "clean"}


def test_a_loss_settled_for_two_overlapping_windows_is_checked_against_both_budgets(tmp_path):
    """Day 1 and an ad-hoc window over its last four hours both leave E pending; day 2 settles it lost. History folds
    the loss into both: within day 1's budget (1 of many), over the ad-hoc window's (1 of 1). Day 2 exited 0 and the
    ad-hoc window stayed `pending` for good, its loss rate never sent: day 2 exits 2 naming it, and it is `loss`."""
    from tinyday import BUS, DAY, DAY2, DLQ, SINK, ZENDESK, day_results, run_window
    budget = dict(bus_to_sink=0.5, zendesk_to_bus=0.5)
    with State.open(tmp_path / "state.duckdb") as st:
        run_window(tmp_path, st, DAY, day_results(ZENDESK, BUS, SINK, DLQ), "day1", **budget)
        run_window(tmp_path, st, DAY + timedelta(hours=20), day_results(ZENDESK, BUS, SINK, DLQ), "adhoc", end=DAY2,
                   **budget)
        s2 = day2(tmp_path, st, e_lands=False, **budget)
        statuses = _statuses(st)
    assert (s2["status"], s2["exit_code"]) == ("loss", 2)
    assert [(o["window_key"][:11], o["hop"]) for o in s2["carried"]["over_threshold"]] == [
        ("20261123T20", "bus_to_sink")]
    assert {w["window_key"][:11] for w in s2["carried"]["windows"]} == {"20261123T00", "20261123T20"}
    assert statuses == {"20261123T00": "clean", "20261123T20": "loss", "20261124T00": "clean"}


def test_a_carried_loss_before_the_bus_log_a_run_read_says_it_may_have_reached_the_bus(tmp_path):
    """Day 1 read the bus log in part: comment 61 (10:00) is in no store read, held. Day 2's bus log starts the next
    morning, so it cannot show whether 61 reached the bus: a loss (the sink and the DLQ lack it), whose cause says the
    hop is not known rather than asserting the bus never had it."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    n = legacy("N", 62, "Comment Created", "2026-11-24T08:00:00.2Z", 1)
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results([z(61, 60, "Comment", "10:00:00", 6100)], [], [], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        assert run_window(tmp_path, st, DAY, first, "day1")["verdicts"]["pending"] == 1
        s2 = run_window(tmp_path, st, DAY2, day_results([z(63, 62, "Comment", "2026-11-24T08:00:00Z", 6300)],
                                                         [dict(n, observed_at=n["event_time"])], [], []), "day2")
    [settled] = s2["carried"]["events_shown"]
    assert (settled["source_id"], settled["verdict"]) == ("61", "lost_before_bus")
    assert settled["cause"] == ("not in the sink or the DLQ, and this run reads the bus log from 2026-11-23T23:00:00Z, "
                                "after it: it may have reached the bus (lost after it then)")


def test_an_event_two_overlapping_windows_left_pending_is_carried_once(tmp_path):
    """Day 1's daily run and an ad-hoc window from 20:00 both leave event 5 (23:30) pending: day 2 carries and
    settles it once, and a later run not again."""
    from tinyday import DAY, DAY2, day_results, run_window, ZENDESK, BUS, SINK, DLQ
    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        adhoc = run_window(tmp_path, st, DAY + timedelta(hours=20), day_results(ZENDESK, BUS, SINK, DLQ), "adhoc",
                           end=DAY2)
        assert adhoc["verdicts"]["pending"] == 1
        s2 = day2(tmp_path, st)
        assert [r["source_id"] for r in s2["carried"]["events_shown"]] == ["5"] and s2["carried"]["events"] == 1
        s3 = run_window(tmp_path, st, DAY2 + timedelta(days=1), day_results([], [], [], []), "day3")
        assert s3["carried"]["events"] == 0
        # each window's own figures take the settlement: the ad-hoc window's is not pending for good
        assert [h[1:] for h in balanced(st) if h[0] == "20261123" and h[5]] == []


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
        # the report lists the held carried event by its hop (the alert counted it; the report showed it nowhere)
        shown = BeautifulSoup((tmp_path / "day2" / "report.html").read_text(), "html.parser").select_one("#pending")
        assert "Held pending again, by the hop whose loss each would be: bus → sink 1 ." in \
            " ".join(shown.get_text(" ").split())
        assert [h for h in history(st) if h[0] == "20261123"] == after_day1
        s2 = day2(tmp_path, st)
        assert s2["carried"]["by_verdict"] == {"delivered": 1}
        assert ("20261123", "bus_to_sink", 10, 8, 2, 0) in history(st)


def test_a_held_event_paired_with_a_sequence_position_settles_by_it(tmp_path):
    """Ticket 40's update made a Comment (41) and a priority change (42), numbered 1 and 2 of connector sequence S.
    Day 1 reads the bus log in part and neither store has position 2: 42, paired with it, would be lost before the bus,
    so it is held. Day 2 finds position 2 in both stores, a Priority Changed 30 s after the audit (beyond the
    composite tolerance): 42 is delivered, linked by its position. (The state kept no sequence facts: 42 was settled
    `lost_before_bus`.)"""
    from dataclasses import replace
    from datetime import timedelta

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(41, 40, "Comment", "10:00:00", 4000), z(42, 40, "Change:priority", "10:00:00", 4000)]
    r1 = legacy("R1", 40, "Comment Created", "10:00:00.2", 1, sequence_id="S", sequence_total=2)
    r2 = legacy("R2", 40, "Priority Changed", "10:00:30.3", 2, sequence_id="S", sequence_total=2)
    landed = [dict(r1, observed_at="10:00:02", sequence_number="1", committed=True),
              dict(r2, observed_at=DAY + timedelta(hours=14), sequence_number="2", committed=True)]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, [dict(r1, observed_at=r1["event_time"])], landed[:1], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        s1 = run_window(tmp_path, st, DAY, first, "day1")
        assert s1["verdicts"]["pending"] == 1 and s1["hops"][0]["held"] == 1
        s2 = run_window(tmp_path, st, DAY2, day_results([], [dict(r2, observed_at=r2["event_time"])], landed, []),
                        "day2")
        assert [(r["source_id"], r["verdict"], r["eb_id"] is not None) for r in s2["carried"]["events_shown"]] == \
            [("42", "delivered", True)]
        # 42 waited before the bus and was found on it: on through zendesk_to_bus, into bus_to_sink, out
        assert [h[1:] for h in balanced(st) if h[0] == "20261123"] == [
            ("zendesk_to_bus", 2, 2, 0, 0), ("bus_to_sink", 2, 2, 0, 0)]


def test_a_carried_event_its_sequence_completes_without_is_not_emitted(tmp_path):
    """Ticket 8's update at 23:58 made a Comment (81), a status change (82) and a priority change (83); the connector
    sent two events, Comment Created and Priority Changed (no Status Changed). Day 1's bus log, read in part, holds
    only the first: 82 and 83 are held. Day 2 reads both: 83 is delivered, and sequence S8 is complete without 82,
    which is not emitted -- what one pass over the same stores says -- not lost before the bus."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(81, 8, "Comment", "23:58:00", 800), z(82, 8, "Change:status", "23:58:00", 800),
          z(83, 8, "Change:priority", "23:58:00", 800)]
    c = legacy("C8", 8, "Comment Created", "23:58:00.2", 1, sequence_id="S8", sequence_total=2)
    p = legacy("P8", 8, "Priority Changed", "23:58:00.3", 2, sequence_id="S8", sequence_total=2)
    bus = [dict(e, observed_at=e["event_time"]) for e in (c, p)]
    sink = [dict(e, observed_at=e["event_time"], sequence_number=str(n), committed=True) for n, e in ((1, c), (2, p))]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, bus[:1], sink[:1], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        s1 = run_window(tmp_path, st, DAY, first, "day1")
        assert s1["verdicts"]["pending"] == 2 and s1["hops"][0]["held"] == 2
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "day2")
    assert [(r["source_id"], r["verdict"], r["cause"]) for r in s2["carried"]["events_shown"]] == [
        ("82", "not_emitted", "sequence S8 (2 events) is complete without it"), ("83", "delivered", None)]
    one_pass = run_window(tmp_path, None, DAY, day_results(zd, bus, sink, []), "one-pass")
    assert one_pass["verdicts"]["not_emitted"] == 1 and one_pass["verdicts"]["delivered"] == 2


def test_a_carried_event_paired_with_a_position_another_kind_holds_is_not_emitted(tmp_path):
    """A new ticket's audit: two Create children, a Comment and a trigger's group change (Zendesk orders them by child
    id); the connector numbered three events, Ticket Created, Comment Created and Attachment Linked to Comment (no
    Group Assignment Changed). Day 1's bus log, read in part, holds positions 1 and 2: the group change is paired with
    the missing position 3 and held. Day 2 finds an Attachment Linked to Comment there, no group change: the sequence
    is complete without it, which is not emitted, as one pass over the same stores says -- not lost before the bus."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(1, 500, "Create", "23:00:00", 50), z(2, 500, "Create", "23:00:00", 50),
          z(3, 500, "Comment", "23:00:00", 50), z(4, 500, "Change:group_id", "23:00:00", 50)]
    made = [legacy(f"A{n}", 500, kind, f"23:00:00.{n}", n, sequence_id="S1", sequence_total=3)
            for n, kind in ((1, "Ticket Created"), (2, "Comment Created"), (3, "Attachment Linked to Comment"))]
    bus = [dict(e, observed_at=e["event_time"]) for e in made]
    sink = [dict(e, observed_at="23:00:02", sequence_number=str(n), committed=True) for n, e in enumerate(made)]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, bus[:2], sink[:2], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        assert run_window(tmp_path, st, DAY, first, "day1")["verdicts"]["pending"] == 1
        assert [r["sequence_position"] for r in st.pending_of(st.history()[0]["window_key"]).to_pylist()] == [3]
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "day2")
    assert [(r["source_id"], r["verdict"], r["cause"]) for r in s2["carried"]["events_shown"]] == [
        ("4", "not_emitted", "sequence S1 (3 events) is complete without it")]
    one_pass = run_window(tmp_path, None, DAY, day_results(zd, bus, sink, []), "one-pass")
    assert one_pass["verdicts"]["not_emitted"] == 1 and one_pass["verdicts"]["lost_before_bus"] == 0


def test_a_carried_event_whose_update_no_store_held_is_not_emitted_once_its_sequence_is_complete(tmp_path):
    """The same new ticket's update at 23:00, but on day 1 no store holds any of its events (the bus log read in part,
    Spark late): nothing linked them to connector sequence S1, so the state keeps no sequence for the group change.
    Day 2 links its audit's other events to S1, complete without a Group Assignment Changed: the group change is not
    emitted, as one pass over the same stores says -- not lost before the bus."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(1, 500, "Comment", "23:00:00", 50), z(2, 500, "Create", "23:00:00", 50),
          z(3, 500, "Create", "23:00:00", 50), z(4, 500, "Change:group_id", "23:00:00", 50)]
    made = [legacy(f"A{n}", 500, kind, f"23:00:00.{n}", n, sequence_id="S1", sequence_total=3)
            for n, kind in ((1, "Ticket Created"), (2, "Comment Created"), (3, "Attachment Linked to Comment"))]
    bus = [dict(e, observed_at=e["event_time"]) for e in made]
    sink = [dict(e, observed_at="2026-11-24T03:00:00Z", sequence_number=str(n), committed=True)
            for n, e in enumerate(made)]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, [], [], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        run_window(tmp_path, st, DAY, first, "day1")
        held = st.pending_of(st.history()[0]["window_key"]).to_pylist()
        assert {r["source_id"]: (r["sequence_id"], r["audit_id"]) for r in held}["4"] == (None, 50)
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "day2")
    settled = {r["source_id"]: (r["verdict"], r["cause"]) for r in s2["carried"]["events_shown"]}
    assert settled["4"] == ("not_emitted", "sequence S1 (3 events) is complete without it")
    assert {v for k, (v, _) in settled.items() if k != "4"} == {"delivered"}
    one_pass = run_window(tmp_path, None, DAY, day_results(zd, bus, sink, []), "one-pass")
    assert one_pass["verdicts"]["not_emitted"] == 1 and one_pass["verdicts"]["lost_before_bus"] == 0


def test_a_carried_update_none_of_whose_events_links_settles_by_its_own_complete_sequence(tmp_path):
    """A merge at 23:00 on day 1 (a private Comment and status closed), no store holding the connector's one event
    then (the bus log read in part): both children held pending, no sequence kept. Day 2 finds Ticket Merged (1 of
    1) in the log and the sink: no child links to it, so no sequence was found for them and both settled lost before
    the bus. The update's one unclaimed sequence on its ticket and second is its own: complete, both not emitted, as
    one pass over the same stores says; and so beside another update whose events link to a sequence of its own."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(1, 502, "Comment", "23:00:00", 52), z(2, 502, "Change:status", "23:00:00", 52)]
    made = [legacy("MG", 502, "Ticket Merged", "23:00:00.4", 1, sequence_id="SM", sequence_total=1)]
    bus = [dict(e, observed_at=e["event_time"]) for e in made]
    sink = [dict(e, observed_at="2026-11-24T03:00:00Z", sequence_number="1", committed=True) for e in made]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, [], [], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        run_window(tmp_path, st, DAY, first, "day1")
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "day2")
    settled = {r["source_id"]: (r["verdict"], r["cause"]) for r in s2["carried"]["events_shown"]}
    assert settled == {s: ("not_emitted", "sequence SM (1 events) is complete without it") for s in ("1", "2")}
    one_pass = run_window(tmp_path, None, DAY, day_results(zd, bus, sink, []), "one-pass")
    assert one_pass["verdicts"]["not_emitted"] == 2 and one_pass["verdicts"]["lost_before_bus"] == 0
    # beside an update of Notification children only, 4 s on (not carried: day 2's read no longer holds it), the
    # sequence may be that update's: not aligned, as one pass with both in view says (the state keeps near_audits)
    beside = zd + [z(7, 502, "Notification", "23:00:04", 57)]
    with State.open(tmp_path / "beside.duckdb") as st:
        first = day_results(beside, [], [], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        run_window(tmp_path, st, DAY, first, "beside-1")
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "beside-2")
    assert {r["source_id"]: r["verdict"] for r in s2["carried"]["events_shown"]} == {
        "1": "lost_before_bus", "2": "lost_before_bus"}
    one_pass = run_window(tmp_path, None, DAY, day_results(beside, bus, sink, []), "beside-one-pass")
    assert one_pass["verdicts"]["lost_before_bus"] == 2 and one_pass["verdicts"]["not_emitted"] == 0
    # beside a priority change in the same second linked to a sequence of its own (one update, one sequence): no
    # claimant, as one pass says (the state kept it as one: both settled lost before the bus, trust review round 5)
    own = [legacy("PC", 502, "Priority Changed", "23:00:00.2", 1, sequence_id="SP", sequence_total=1)]
    linked = zd + [z(8, 502, "Change:priority", "23:00:00", 58)]
    day1 = ([dict(e, observed_at=e["event_time"]) for e in own],
            [dict(e, observed_at="2026-11-24T01:00:00Z", sequence_number="2", committed=True) for e in own])
    with State.open(tmp_path / "linked.duckdb") as st:
        first = day_results(linked, *day1, [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        run_window(tmp_path, st, DAY, first, "linked-1")
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "linked-2")
    assert {r["source_id"]: r["verdict"] for r in s2["carried"]["events_shown"]} == {
        "1": "not_emitted", "2": "not_emitted"}
    one_pass = run_window(tmp_path, None, DAY, day_results(linked, day1[0] + bus, day1[1] + sink, []), "linked-one")
    assert one_pass["verdicts"]["not_emitted"] == 2 and one_pass["verdicts"]["lost_before_bus"] == 0
    # ...and carried with them, its event not yet in the sink on day 1: linked, so still no claimant on day 2
    with State.open(tmp_path / "carried.duckdb") as st:
        first = day_results(linked, day1[0], [], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        s1 = run_window(tmp_path, st, DAY, first, "carried-1")
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, day1[1] + sink, []), "carried-2")
    assert s1["verdicts"]["pending"] == 3
    assert {r["source_id"]: r["verdict"] for r in s2["carried"]["events_shown"]} == {
        "1": "not_emitted", "2": "not_emitted", "8": "delivered"}


def test_a_carried_merge_beside_an_update_owning_its_sequence_settles_as_one_pass_says(tmp_path):
    """A merge (1, 2) and an update (8 priority, 9 comment) in one second at 23:00. The update's sequence SP (2
    events): Priority Changed landed on day 1 and links 8 (the one candidate each way: the update owns SP), the
    Comment Created never reached any store (9 lost before the bus). The merge's Ticket Merged is only in day 2's read
    (day 1's bus log read in part). Day 2 no longer sees 8's link (settled on day 1), so the update counted as a
    claimant of SM again and the merge's children settled lost before the bus, where one pass says not emitted
    (diff review 7): the pending rows keep the sequence their update owns (owner_sequence)."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(1, 502, "Comment", "23:00:00", 52), z(2, 502, "Change:status", "23:00:00", 52),
          z(8, 502, "Change:priority", "23:00:00", 58), z(9, 502, "Comment", "23:00:00", 58)]
    mg = [legacy("MG", 502, "Ticket Merged", "23:00:00.4", 1, sequence_id="SM", sequence_total=1)]
    pc = [legacy("PC", 502, "Priority Changed", "23:00:00.2", 1, sequence_id="SP", sequence_total=2)]

    def logged(evs):
        return [dict(e, observed_at=e["event_time"]) for e in evs]

    def sunk(evs, n):
        return [dict(e, observed_at="2026-11-24T01:00:00Z", sequence_number=str(n + i), committed=True)
                for i, e in enumerate(evs)]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, logged(pc), sunk(pc, 1), [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        run_window(tmp_path, st, DAY, first, "day1")
        assert st.con.sql("SELECT source_id, owner_sequence FROM pending ORDER BY source_id").fetchall() == [
            ("1", None), ("2", None), ("9", "SP")]
        s2 = run_window(tmp_path, st, DAY2, day_results([], logged(mg), sunk(mg, 5), []), "day2")
    assert {r["source_id"]: r["verdict"] for r in s2["carried"]["events_shown"]} == {
        "1": "not_emitted", "2": "not_emitted", "9": "lost_before_bus"}
    one = run_window(tmp_path, None, DAY, day_results(zd, logged(pc + mg), sunk(pc, 1) + sunk(mg, 5), []), "one")
    assert (one["verdicts"]["not_emitted"], one["verdicts"]["lost_before_bus"]) == (2, 1)


def test_a_near_update_held_with_a_lost_one_still_counts_once_it_settles(tmp_path):
    """Comment 1 (lost before the bus) and a priority change 8 in one second at 23:00, 8 linked by its webhook WP
    only (its connector copy PC an orphan: the families pooled). Day 1's bus log read in part: both held. A first form
    left 8's audit out of 1's near_audits (held, so a later run would count it among its carried events); but 8
    settled on day 2 and day 3 no longer saw it, aligning 1 with PC's sequence: not_emitted, a real loss hidden (diff
    review 8). It counts, and 1 settles lost before the bus, as one pass says."""
    from dataclasses import replace
    from datetime import timedelta

    from tinyday import DAY, DAY2, day_results, legacy, run_window, webhook, z
    zd = [z(1, 502, "Comment", "23:00:00", 52), z(8, 502, "Change:priority", "23:00:00", 58)]
    wp = webhook("WP", "8", 502, "priority_changed", "23:00:00")
    pc = legacy("PC", 502, "Priority Changed", "23:00:00.2", 1, sequence_id="SP", sequence_total=1)
    bus = [dict(e, observed_at=e["event_time"]) for e in (wp, pc)]
    sink = [dict(wp, observed_at="2026-11-24T03:00:00Z", sequence_number="1", committed=True)]

    def partial(r):
        r["bus_log"] = replace(r["bus_log"], complete=False, problems=["an object was cut short"])
        return r
    with State.open(tmp_path / "state.duckdb") as st:
        run_window(tmp_path, st, DAY, partial(day_results(zd, [], [], [])), "day1")
        run_window(tmp_path, st, DAY2, partial(day_results([], bus, sink, [])), "day2")
        s3 = run_window(tmp_path, st, DAY2 + timedelta(days=1), day_results([], bus, sink, []), "day3")
    assert [(r["source_id"], r["verdict"]) for r in s3["carried"]["events_shown"]] == [("1", "lost_before_bus")]
    one = run_window(tmp_path, None, DAY, day_results(zd, bus, sink, []), "one")
    assert (one["verdicts"]["lost_before_bus"], one["verdicts"]["not_emitted"]) == (1, 0)


@pytest.mark.parametrize("exact", [True, False])
def test_with_both_families_a_carried_event_settles_by_both_copies(tmp_path, exact):
    """[match] both_families: a comment at 23:30 whose webhook copy is on the bus on day 1, not in the sink (pending,
    linked in the webhook family: exactly, when its id is the API child id, or by time), and whose connector copy is
    logged only at 02:30 and lands at 03:00. Day 2 settled it lost after the bus by its webhook copy alone (an event
    carried with a link was never matched again), where one pass says delivered (trust review round 6); and so when
    neither copy was read on day 1 (its bus log read in part: diff review 7)."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, webhook, z
    zd = [z(1, 80, "Comment", "23:30:00", 800)]
    wx = webhook("WX", "1" if exact else "3c35f021-2ae5-4851-a4d0-9fa9fd588701", 80, "comment_added", "23:30:00")
    lx = legacy("LX", 80, "Comment Created", "23:30:00.2", 1, sequence_id="SX", sequence_total=1)
    bus = [dict(wx, observed_at=wx["event_time"]), dict(lx, observed_at="2026-11-24T02:30:00Z")]
    sink = [dict(lx, observed_at="2026-11-24T03:00:00Z", sequence_number="7", committed=True)]
    both = {"both_families": True}
    for name, first in (("webhook read", day_results(zd, bus[:1], [], [])), ("none read", day_results(zd, [], [], []))):
        if name == "none read":
            first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        with State.open(tmp_path / f"{name}.duckdb") as st:
            assert run_window(tmp_path, st, DAY, first, f"{name}-1", match=both)["verdicts"]["pending"] == 1
            s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), f"{name}-2", match=both)
        assert [(r["source_id"], r["verdict"]) for r in s2["carried"]["events_shown"]] == [("1", "delivered")], name
    one = run_window(tmp_path, None, DAY, day_results(zd, bus, sink, []), "one", match=both)
    assert one["verdicts"]["delivered"] == 1


@pytest.mark.parametrize("family", ["legacy", "webhook"])
def test_a_carried_event_is_delivered_by_a_copy_of_its_bus_event_under_a_new_id(tmp_path, family):
    """Comment 51 (23:30) was on the bus as X, not in the sink: pending, carried with X. Then the connector resent it
    (an archive replay alike: the same sequence position) or Zendesk redelivered the webhook, under a new id Y, and Y
    landed; X never did. Day 2's bus log read (from 23:00) holds both: 51 was settled lost after the bus (Y's row
    counted nowhere), where one pass over the same stores says delivered. X's copy group links Y to it."""
    from tinyday import DAY, DAY2, day_results, legacy, run_window, webhook, z
    zd = [z(51, 50, "Comment", "23:30:00", 5000)]
    if family == "legacy":
        x = legacy("X", 50, "Comment Created", "23:30:00.4", 1, sequence_id="S50", sequence_total=1)
    else:
        x = webhook("X", "9f1c0e7a-0000-4000-8000-000000000051", 50, "comment_added", "23:30:00")
    y = dict(x, eb_id="Y")
    logged = [dict(x, observed_at=x["event_time"]), dict(y, observed_at="2026-11-24T01:00:00Z")]
    with State.open(tmp_path / "state.duckdb") as st:
        s1 = run_window(tmp_path, st, DAY, day_results(zd, logged[:1], [], []), "day1")
        assert s1["verdicts"]["pending"] == 1
        landed = [dict(y, observed_at="2026-11-24T01:00:02Z", sequence_number="7", committed=True)]
        s2 = run_window(tmp_path, st, DAY2, day_results([], logged, landed, []), "day2")
    assert s2["carried"]["by_verdict"] == {"delivered": 1}, s2["carried"]
    one_pass = run_window(tmp_path, None, DAY, day_results(zd, logged, landed, []), "one-pass")
    assert s2["carried"]["by_verdict"] == {v: n for v, n in one_pass["verdicts"].items() if n}


def test_an_id_a_carried_event_took_by_its_kind_is_not_also_taken_by_position(tmp_path):
    """Held on day 1: 42 (a priority change, paired with position 2 of S) and 43 (a Comment, position 3). Day 2 finds
    only position 2, a Comment Created (the connector numbered them otherwise): 43 takes it by kind and time, so 42
    may not take it too by position -- one bus event delivering two events would hide a loss (nor may a priority
    change be a Comment Created: position_kind_fits)."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(41, 40, "Create", "10:00:00", 4000), z(42, 40, "Change:priority", "10:00:00", 4000),
          z(43, 40, "Comment", "10:00:00", 4000)]
    r1 = legacy("R1", 40, "Ticket Created", "10:00:00.2", 1, sequence_id="S", sequence_total=3)
    r2 = legacy("R2", 40, "Comment Created", "10:00:00.3", 2, sequence_id="S", sequence_total=3)
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, [dict(r1, observed_at=r1["event_time"])],
                            [dict(r1, observed_at="10:00:02", sequence_number="1", committed=True)], [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        s1 = run_window(tmp_path, st, DAY, first, "day1")
        assert s1["verdicts"]["pending"] == 2
        late = dict(r2, observed_at=DAY + timedelta(hours=14), sequence_number="2", committed=True)
        s2 = run_window(tmp_path, st, DAY2, day_results([], [dict(r2, observed_at=r2["event_time"])], [late], []),
                        "day2")
    settled = {r["source_id"]: r["verdict"] for r in s2["carried"]["events_shown"]}
    assert settled["43"] == "delivered" and settled["42"] != "delivered", settled


@pytest.mark.parametrize("t51, t52", [("23:59:00", "23:59:05"), ("2026-11-22T23:59:58Z", "00:00:03")],
                         ids=["in-window", "sibling-before-the-window"])
def test_a_carried_event_cannot_take_the_id_its_run_gave_a_sibling(tmp_path, t51, t52):
    """Ticket 50's comments 51 and 52, 5 s apart; only 51 reached the bus (X, landed). Day 1 read the bus log in
    part, so 52 is held; 51 is delivered (or, just before the window, matched and not judged) and no carried event
    names X. Day 2 re-matches 52: X is within the tolerance of it, but its run gave X to 51 (the state keeps it with
    52: claimed_ids), so 52 is lost, not delivered by its sibling's event."""
    from dataclasses import replace

    from tinyday import DAY, DAY2, day_results, legacy, run_window, z
    zd = [z(51, 50, "Comment", t51, 5100), z(52, 50, "Comment", t52, 5200)]
    x = legacy("X", 50, "Comment Created", t51.replace("Z", ".3Z") if t51.endswith("Z") else t51 + ".3", 1)
    bus, sink = [dict(x, observed_at=x["event_time"])], [dict(x, observed_at=x["event_time"], sequence_number="1",
                                                                 committed=True)]
    with State.open(tmp_path / "state.duckdb") as st:
        first = day_results(zd, bus, sink, [])
        first["bus_log"] = replace(first["bus_log"], complete=False, problems=["an object was cut short"])
        s1 = run_window(tmp_path, st, DAY, first, "day1")
        assert s1["verdicts"]["pending"] == 1
        s2 = run_window(tmp_path, st, DAY2, day_results([], bus, sink, []), "day2")
    assert [(r["source_id"], r["verdict"], r["eb_id"]) for r in s2["carried"]["events_shown"]] == \
        [("52", "lost_before_bus", None)]


def test_a_state_written_before_the_emission_facts_were_kept_still_carries_its_events(tmp_path):
    """A state file of an earlier version has no emission or sequence columns in `pending`: opening it adds them
    (empty), and its pending events are carried as before."""
    from datetime import datetime, timedelta, timezone

    import duckdb

    from reconcile.window import Window
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE runs (window_key VARCHAR PRIMARY KEY, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, "
                "as_of TIMESTAMPTZ, status VARCHAR, exit_code INTEGER, generated_at TIMESTAMPTZ, out_dir VARCHAR, "
                "events BIGINT)")
    con.execute("CREATE TABLE pending (window_key VARCHAR, source_id VARCHAR, zendesk_key VARCHAR, eb_id VARCHAR, "
                "ticket_id BIGINT, kind VARCHAR, event_time TIMESTAMPTZ, position BIGINT, "
                "PRIMARY KEY (window_key, source_id))")
    con.execute("CREATE TABLE settlements (window_key VARCHAR, source_id VARCHAR, settled_in VARCHAR, verdict VARCHAR, "
                "eb_id VARCHAR, lateness_s DOUBLE, PRIMARY KEY (window_key, source_id))")
    con.execute("INSERT INTO runs VALUES ('w1', '2026-11-22 00:00:00+00', '2026-11-23 00:00:00+00', "
                "'2026-11-23 02:00:00+00', 'pending', 1, '2026-11-23 02:00:00+00', '/r', 1)")
    con.execute("INSERT INTO pending VALUES ('w1', '7', '7', NULL, 5, 'Comment', '2026-11-22 23:59:00+00', 1)")
    con.close()
    day = datetime(2026, 11, 23, tzinfo=timezone.utc)
    window = Window(start=day, end=day + timedelta(days=1), as_of=day + timedelta(hours=26))
    for write in (False, True):  # read-only (`run --dry-run`: the file is not migrated), then as a run opens it
        with State.open(path, write=write) as st:
            row = st.carried(window).to_pylist()
            # it predates the recovery journal: read-only, that is an empty one (a dry run failed on it)
            assert st.sent_for_window("w1") == 0 and st.journal_rows().num_rows == 0, write
        assert [(r["source_id"], r["emission"], r["sequence_id"], r["sequence_position"]) for r in row] == \
            [("7", None, None, None)], write


def test_trace_shows_what_a_later_run_settled_a_pending_event_as(tmp_path, caplog):
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
    # the run that settled it says so, by either id (it said no event of its window named the EventBridge id, and
    # showed nothing for the Zendesk one: outputs review)
    for given in ("5", uid("E")):
        here = CliRunner().invoke(main, ["trace", given, "--run", str(tmp_path / "day2")])
        assert here.exit_code == 0 and "settled here: event 5 of 20261123T000000Z-20261124T000000Z (ticket 5, " \
            "Comment, 2026-11-23T23:30:00Z)" in here.output and ": delivered, 5400 s late" in here.output, here.output
        assert "no event of this run's window names this id" not in here.output
    # a folder traced alone (no state) shows its own day's verdict only
    alone = orjson.loads(CliRunner().invoke(main, ["trace", "5", "--run", str(tmp_path / "day1"), "--json"]).output)
    assert alone[0]["settled_later"] == [] and alone[0]["events"][0]["verdict"] == "pending"
    # a run the state records that is gone (moved, or a re-run that did not finish) is left out with a warning; the
    # others are still traced (it failed every trace, exit 4). Named with --run, it is an error as before.
    (tmp_path / "day2" / "verdicts.parquet").unlink()
    with caplog.at_level(logging.WARNING, logger="reconcile.trace"):
        out = CliRunner().invoke(main, ["trace", "5", "--state", str(state)])
    assert out.exit_code == 0 and "pending" in out.output, out.output
    assert any("not traced" in r.message and str(tmp_path / "day2") in r.message for r in caplog.records)
    assert CliRunner().invoke(main, ["trace", "5", "--run", str(tmp_path / "day2")]).exit_code == 4
    # every run it records gone: the trace says none could be searched, not that the event is in none of them
    (tmp_path / "day1" / "verdicts.parquet").unlink()
    out = CliRunner().invoke(main, ["trace", "5", "--state", str(state)])
    assert out.exit_code == 4 and "no run could be searched for 5: the 2 run(s) the state records" in out.output
    assert "not in any run searched" not in out.output


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


def test_a_state_that_cannot_fold_its_log_in_keeps_what_was_committed(tmp_path):
    """The final CHECKPOINT needs room to grow the state file; without it (a full disk, here a file-size limit) a
    finished run became exit 4 "unexpected FatalException" and sent no alert, although its commit was durable in the
    write-ahead log. Now a warning: what was committed stands, and the next open of the state folds it in."""
    import subprocess
    import sys
    path = tmp_path / "state.duckdb"
    code = f"""
import resource, signal
from pathlib import Path
from reconcile.state import State
p = Path({str(path)!r})
with State.open(p):
    pass
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (p.stat().st_size, resource.RLIM_INFINITY))  # the file cannot grow
with State.open(p) as st:
    st.con.execute("BEGIN TRANSACTION")
    st.con.execute("INSERT INTO settlements SELECT 'w', i::VARCHAR, 'x', 'delivered', NULL, 0 FROM range(3000) t(i)")
    st.commit()
print("committed")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "committed", done.stderr
    assert "could not fold its write-ahead log in" in done.stderr
    with State.open(path, write=False) as st:
        assert st.con.execute("SELECT count(*) FROM settlements").fetchall() == [(3000,)]


def test_history_reads_times_in_utc_whatever_the_machine_s_time_zone(tmp_path):
    """The read-only open never set the session's time zone: `history --json` on a machine in New York gave the
    window of 2026-11-23 as 2026-11-22T19:00:00-05:00 (a consumer taking the date part got the day before)."""
    import os
    import subprocess
    import sys
    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
    env = dict(os.environ, TZ="America/New_York")
    out = subprocess.run([sys.executable, "-m", "reconcile", "history", "--state", str(tmp_path / "state.duckdb"),
                          "--json"], env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    rows = orjson.loads(out)
    rows = rows["windows"] if isinstance(rows, dict) else rows
    assert {r["window_start"] for r in rows} == {"2026-11-23T00:00:00+00:00"}, out[:400]
    empty = CliRunner().invoke(main, ["history", "--state", ""])
    assert empty.exit_code == 4 and "The state location is empty" in empty.output
