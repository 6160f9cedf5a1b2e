"""Each queries/*.sql on a tiny hand-built day with exact expected rows.

The day and what each event is: tests/tinyday.py.
"""


import re

import pytest

from reconcile import engine as eng

from tinyday import BUS, D, DLQ, E, KIN, LOGS, M, METRICS, SINK, ZENDESK, judge, legacy, obs, table, webhook, z
from ledgers import at, label

@pytest.fixture(scope="module")
def day(tmp_path_factory):
    e = judge(tmp_path_factory.mktemp("ledgers"), ZENDESK, BUS, SINK, DLQ, METRICS)
    yield e
    e.close()


def test_source_events(day):
    rows = table(day, "source_events", ["source_id", "kind", "position", "excluded", "in_window", "emission"])
    assert len(rows) == 14  # z14 is just outside the window: kept to match its bus events, not judged
    assert ("14", "Create", 1, False, False, "audit") in rows
    assert ("7", "Notification", None, True, True, "none") in rows
    assert ("8", "Comment", 1, False, True, "child") in rows and ("9", "Comment", 2, False, True, "child") in rows


def test_bus_events(day):
    rows = {label(r["eb_id"]): r for r in day.arrow("bus_events").to_pylist()}
    assert sorted(rows) == list("ABCDEGHIJKLM")
    assert (rows["B"]["sink_rows"], rows["B"]["sink_sequences"], rows["B"]["log_copies"]) == (2, 2, 1)
    assert (rows["K"]["sink_rows"], rows["K"]["sink_sequences"], rows["K"]["uncommitted_rows"]) == (2, 1, 1)
    assert (rows["C"]["dlq_kinesis"], rows["C"]["error_code"]) == (1, "THROTTLING")
    assert (rows["J"]["dlq_kinesis"], rows["J"]["dlq_other"], rows["J"]["log_copies"]) == (0, 1, 0)


def test_hop_a(day):
    assert table(day, "hop_a", ["source_id", "eb_id", "match_kind"]) == sorted([
        ("1", "A", "exact"), ("12", "J", "exact"), ("2", "B", "composite"), ("3", "C", "composite"),
        ("4", "D", "composite"), ("5", "E", "composite"), ("9", "G", "composite"), ("13", "K", "composite"),
        ("10", "H", "ambiguous"), ("11", "I", "ambiguous"),
    ], key=lambda r: tuple(str(x) for x in r))


def test_verdicts(day):
    got = dict(table(day, "verdicts", ["source_id", "verdict"]))
    assert got == {"1": "delivered", "2": "duplicated", "3": "dead_lettered", "4": "lost_after_bus",
                   "5": "pending", "6": "lost_before_bus", "7": "excluded", "8": "lost_before_bus",
                   "9": "delivered", "10": "delivered", "11": "delivered", "12": "delivered", "13": "duplicated"}
    causes = dict(table(day, "verdicts", ["source_id", "cause"]))
    assert (causes["2"], causes["13"], causes["3"]) == ("redelivery", "re-batched", "THROTTLING")
    unlogged = {r[0] for r in table(day, "verdicts", ["source_id", "unlogged_at_bus"]) if r[1]}
    assert unlogged == {"12"}


def test_orphans(day):
    assert table(day, "orphans", ["eb_id", "ticket_id", "sink_rows"]) == [("L", 99, 1)]


def test_verdict_counts(day):
    assert dict(table(day, "verdict_counts", ["verdict", "events"])) == {
        "delivered": 5, "duplicated": 2, "dead_lettered": 1, "lost_after_bus": 1, "lost_before_bus": 2,
        "pending": 1, "unverified": 0, "not_emitted": 0, "excluded": 1, "recovered": 0}


def test_funnel(day):
    assert table(day, "funnel", ["name", "in", "out", "lost", "pending"], order=True) == [
        ("zendesk_to_bus", 12, 10, 2, 0), ("bus_to_sink", 10, 7, 2, 1)]


def test_match_stats(day):
    assert dict(table(day, "match_stats", ["match_kind", "events"])) == {
        "exact": 2, "composite": 6, "ambiguous": 2, "out_of_order": 0, "sequence": 0, "unmatched": 2}


def test_match_kinds_come_from_the_vocabulary(day):
    """match_stats has one row per kind in queries/match_kinds.csv, in its order, and no verdict carries a kind the
    vocabulary lacks (it would be counted nowhere): a query that adds a kind must add it there."""
    from reconcile import emission
    vocab = emission.match_kind_table()["match_kind"].to_pylist()
    assert [k for k, in table(day, "match_stats", ["match_kind"], order=True)] == vocab
    assert set(day.arrow("verdicts")["match_kind"].to_pylist()) <= set(vocab)


def test_loss_by_hour(day):
    rows = {r["bucket"].hour: r for r in day.arrow("loss_by_hour").to_pylist()}
    assert sorted(rows) == [9, 10, 11, 12, 13, 14, 15, 16, 17, 23]
    assert (rows[9]["events"], rows[9]["lost_before_bus"], rows[9]["excluded"]) == (2, 1, 1)
    assert (rows[14]["events"], rows[14]["delivered"], rows[14]["lost_before_bus"], rows[14]["at_sink"]) == (2, 1, 1, 1)
    assert (rows[23]["pending"], rows[23]["at_bus"]) == (1, 1)


def test_loss_by_type(day):
    rows = table(day, "loss_by_type", ["kind", "events", "delivered", "duplicated", "lost_before_bus"], order=True)
    assert rows == [("Comment", 8, 3, 2, 1), ("Create", 3, 2, 0, 1), ("Change:status", 1, 0, 0, 0),
                    ("Notification", 1, 0, 0, 0)]


def test_dlq_causes(day):
    assert table(day, "dlq_causes", ["error_code", "target_arn", "kinesis_target", "messages", "events"]) == sorted(
        [("THROTTLING", KIN, True, 1, 1), ("THROTTLING", LOGS, False, 1, 1)], key=lambda r: tuple(map(str, r)))


def test_dlq_causes_are_the_window_s_dead_letters(tmp_path):
    """A queue read whole holds earlier days' dead letters too (never deleted, kept up to 14 days): the causes
    counted them all, three times the window's by its third day (outputs review)."""
    the_day_before = legacy("C0", 3, "Comment Created", "2026-11-22T13:59:00Z", 1)
    earlier = obs(the_day_before, "2026-11-22T14:00:00Z", source_id="m0", error_code="NO_PERMISSIONS",
                  retry_condition="MaximumRetryAttempts", target_arn=KIN, retry_attempts=185)
    e = judge(tmp_path, ZENDESK, BUS, SINK, [earlier, *DLQ], METRICS)
    try:
        assert [r[0] for r in table(e, "dlq_causes", ["error_code"])] == ["THROTTLING", "THROTTLING"]
        assert [r[0] for r in table(e, "dlq_errors", ["error_code"])] == ["THROTTLING", "THROTTLING"]
    finally:
        e.close()


def test_duplicates(day):
    assert table(day, "duplicates", ["cause", "events", "extra_copies", "uncommitted_rows"]) == [
        ("re-batched", 1, 1, 1), ("redelivery", 1, 1, 0)]


def test_latency(day):
    rows = {r["hop"]: r for r in day.arrow("latency").to_pylist()}
    # bus latency: event time to bus-log time; here the log times equal the payload times, so the legacy
    # events show their sub-second occurred_at offsets and the webhook one 0.
    assert rows["zendesk_to_bus"]["events"] == 9  # every event the bus log holds
    assert rows["bus_to_sink"]["events"] == 6  # delivered/duplicated events seen in the bus log
    assert rows["end_to_end"]["events"] == 7
    assert rows["end_to_end"]["max"] == pytest.approx(4.0)


@pytest.mark.parametrize("n", [1, 2, 3, 101, 5_000])
def test_latency_percentiles_are_quantile_cont_without_holding_every_value(n):
    """latency.sql finds each percentile from the hops' distinct values and their counts (bounded memory at 100 M
    events): the figures must be quantile_cont's, with ties, NULLs and a hop that has no value at all."""
    import random
    rnd = random.Random(n)
    e = eng.Engine.open()
    try:
        rows = [(rnd.choice([None, rnd.randrange(40) / 8, rnd.random() * 1e4]), None, rnd.randrange(5) * 0.5)
                for _ in range(n)]
        e.con.execute("CREATE TABLE verdicts (bus_latency_s DOUBLE, sink_latency_s DOUBLE, end_to_end_s DOUBLE, "
                      "source_id VARCHAR DEFAULT 'e', expected_id VARCHAR DEFAULT 'e')")  # each row an expected event
        e.con.executemany("INSERT INTO verdicts (bus_latency_s, sink_latency_s, end_to_end_s) VALUES (?, ?, ?)", rows)
        e.run_query("latency_values", {})
        e.run_query("latency", {})
        got = {r["hop"]: r for r in e.arrow("latency").to_pylist()}
        for hop, column in (("zendesk_to_bus", "bus_latency_s"), ("bus_to_sink", "sink_latency_s"),
                            ("end_to_end", "end_to_end_s")):
            want = e.con.sql(f"SELECT count({column}), quantile_cont({column}, [0.5, 0.95, 0.99]), max({column}) "
                             f"FROM verdicts").fetchall()[0]
            q = want[1] or [None] * 3
            assert (got[hop]["events"], [got[hop][p] for p in ("p50", "p95", "p99")], got[hop]["max"]) == \
                (want[0], q, want[2]), hop
    finally:
        e.close()


def test_metrics_check(day):
    rows = {r["metric"]: r for r in day.arrow("metrics_check").to_pylist()}
    assert (rows["MatchedEvents"]["metric_value"], rows["MatchedEvents"]["per_event_value"]) == (11.0, 11)
    assert (rows["InvocationsSentToDlq"]["metric_value"], rows["InvocationsSentToDlq"]["per_event_value"]) == (2.0, 2)
    assert rows["Invocations"]["metric_value"] is None and rows["Invocations"]["datapoints"] == 0
    assert rows["ThrottledRules"]["per_event_value"] is None


def test_metrics_check_counts_dead_letters_when_they_were_sent(tmp_path):
    """EventBridge counts a dead letter (InvocationsSentToDlq) when it sends it, after up to max_event_age of retries:
    the window's own figure is the DLQ messages sent in it, one for the previous day's M included, those its events'
    retries sent the next day left out (counted by event time, the check compared different days' dead letters)."""
    late = dict(error_code="THROTTLING", retry_condition="MaximumEventAgeInSeconds", target_arn=KIN, retry_attempts=185)
    dlq = DLQ + [obs(M, "08:00:00", source_id="m3", **late), obs(D, "2026-11-24T13:00:00Z", source_id="m4", **late),
                 obs(E, "2026-11-24T23:30:00Z", source_id="m5", **late)]
    e = judge(tmp_path, ZENDESK, BUS, SINK, dlq, METRICS)
    try:
        rows = {r["metric"]: r for r in e.arrow("metrics_check").to_pylist()}
    finally:
        e.close()
    assert rows["InvocationsSentToDlq"]["per_event_value"] == 3  # m1, m2, m3
    assert rows["InvocationsSentToDlq"]["per_event_basis"] == "DLQ messages sent in the window"


def test_gaps(day):
    rows = table(day, "gaps", ["verdict", "source_id", "eb_id"], order=True)
    assert rows == [("lost_before_bus", "6", None), ("duplicated", "2", "B"), ("dead_lettered", "3", "C"),
                    ("lost_after_bus", "4", "D"), ("lost_before_bus", "8", None), ("delivered", "12", "J"),
                    ("duplicated", "13", "K"), ("orphan", None, "L"), ("pending", "5", "E")]


def test_silent_losses(day):
    rows = table(day, "silent_losses", ["hour", "kind", "lost", "lost_before_bus", "lost_after_bus"], order=True)
    assert [(r[0].hour,) + r[1:] for r in rows] == [
        (9, "Create", 1, 1, 0), (13, "Comment", 1, 0, 1), (14, "Comment", 1, 1, 0)]


def test_latency_histogram(day):
    rows = table(day, "latency_histogram", ["hop", "ord", "events"], order=True)
    assert len(rows) == 27  # 3 hops x 9 buckets, zeros included
    counts = {(h, o): n for h, o, n in rows if n}
    # bus: log times equal payload times, so the 0-0.1 s offsets of A, K and D (<100 ms) and the others' 0.2-0.6 s
    assert counts == {("zendesk_to_bus", 2): 3, ("zendesk_to_bus", 3): 6, ("bus_to_sink", 4): 6,
                      ("end_to_end", 4): 7}
    assert sum(n for h, _, n in rows if h == "end_to_end") == 7  # = latency.events


def test_a_latency_below_zero_is_shown_as_such_not_as_fast(tmp_path):
    """The sink stamping A's record before the bus log's copy of it (the log copy written after the Kinesis arrival,
    or clocks apart): a negative latency, counted in a bucket of its own rather than in "< 100 ms"."""
    sink = [dict(r, observed_at="09:59:59") if r["eb_id"] == SINK[0]["eb_id"] else r for r in SINK]
    e = judge(tmp_path, ZENDESK, BUS, sink, DLQ, METRICS)
    try:
        rows = table(e, "latency_histogram", ["hop", "ord", "label", "events"], order=True)
    finally:
        e.close()
    assert ("bus_to_sink", 1, "< 0 (clocks apart)", 1) in rows
    assert sum(n for h, o, _, n in rows if h == "bus_to_sink" and o == 2) == 0


def test_pending_events(day):
    assert table(day, "pending_events", ["source_id", "eb_id", "age_s", "at_bus", "cause"], order=True) == [
        ("5", "E", 9000.0, True, "within retry horizon")]


def test_orphan_causes(day):
    assert table(day, "orphan_causes", ["event_type", "family", "events", "in_bus_log", "in_sink", "in_dlq",
                                        "with_zendesk_id"]) == [("Ticket Created", "legacy", 1, 0, 1, 0, 0)]


def test_unlogged_causes(day):
    # z12 reached the sink; its log-group target dead-lettered it (m2), so the bus log has no copy
    assert table(day, "unlogged_causes", ["verdict", "reason", "events"]) == [
        ("delivered", "log target dead-lettered", 1)]


def test_dlq_errors(day):
    assert table(day, "dlq_errors", ["error_code", "target_arn", "error_message", "with_message", "messages"]) == [
        ("THROTTLING", KIN, "Rate exceeded.", 1, 1), ("THROTTLING", LOGS, "(none)", 1, 1)]


def test_trace_hints(day):
    assert table(day, "trace_hints", ["verdict", "cause", "events", "trace_id"], order=True) == [
        ("lost_before_bus", "not in any AWS store", 2, "6"), ("duplicated", "redelivery", 1, "2"),
        ("dead_lettered", "THROTTLING", 1, "3"), ("lost_after_bus", "no sink row, no DLQ message", 1, "4"),
        ("delivered", "not in the bus log", 1, "12"), ("duplicated", "re-batched", 1, "13"),
        ("orphan", "no source event", 1, "L"), ("pending", "within retry horizon", 1, "5")]


def test_trace_hints_count_expected_bus_events_not_every_child(tmp_path):
    """A new ticket's three Create children are one `Ticket Created` on the bus: lost, they are one event beside the
    figures that count it once (the hint said 3 events), and three rows of gaps.csv."""
    more = [z(15, 6, "Create", "09:00:00", 600), z(16, 6, "Create", "09:00:00", 600)]  # ticket 6's other children
    e = judge(tmp_path, ZENDESK + more, BUS, SINK, DLQ, METRICS)
    try:
        hint = [r for r in table(e, "trace_hints", ["verdict", "cause", "events", "trace_id"])
                if r[0] == "lost_before_bus"]
        assert hint == [("lost_before_bus", "not in any AWS store", 2, "15")]  # its earliest, the id as text
        assert e.count("gaps", "verdict = 'lost_before_bus'") == 4
    finally:
        e.close()


def test_every_query_file_is_run():
    """Engine queries are listed in engine.QUERIES; state and trace queries are named by the module that runs them."""
    assert {p.stem for p in eng.QUERY_DIR.glob("*.sql")} == set(eng.QUERIES)
    from pathlib import Path
    import reconcile.calibrate, reconcile.partition, reconcile.state, reconcile.trace
    for folder, module in (("state", reconcile.state), ("trace", reconcile.trace),
                           ("calibrate", reconcile.calibrate), ("partition", reconcile.partition)):
        source = Path(module.__file__).read_text()
        for p in (eng.QUERY_DIR / folder).glob("*.sql"):
            assert f'"{p.stem}' in source, f"queries/{folder}/{p.name} is run by nobody"


def test_missing_parameter_is_a_query_error(day):
    from reconcile.errors import QueryError
    with pytest.raises(QueryError, match=r"\$window_start"):
        day.run_query("orphan_candidates", {})


def logged_and_landed(events, arrivals):
    """Each event in the bus log at its own time and once in the sink at its arrival, committed."""
    bus = [obs(e, e["event_time"]) for e in events]
    sink = [obs(e, t, sequence_number=str(i), committed=True) for i, (e, t) in enumerate(zip(events, arrivals), 1)]
    return bus, sink


def hop_a_outcome(tmp_path, zendesk, events, arrivals):
    """The day of `zendesk` with `events` logged and landed (logged_and_landed), judged: (hop A's links as
    (source_id, eb_id, match_kind), the verdicts by source_id, the orphans' ids)."""
    bus, sink = logged_and_landed(events, arrivals)
    e = judge(tmp_path, zendesk, bus, sink, [])
    try:
        return (table(e, "hop_a", ["source_id", "eb_id", "match_kind"]),
                dict(table(e, "verdicts", ["source_id", "verdict"])), table(e, "orphans", ["eb_id"]))
    finally:
        e.close()


def test_hop_a_pairs_rapid_repeat_updates_by_nearest_time(tmp_path):
    """Two updates of one ticket and kind seconds apart, one of them lost: the survivor pairs with the update whose
    second it carries (bus times are the audit's second plus a fraction), not with the first in time order."""
    zendesk = [z(31, 30, "Comment", "19:00:00", 3100), z(32, 30, "Comment", "19:00:02", 3200),
               z(33, 31, "Comment", "20:00:00", 3300), z(34, 31, "Comment", "20:00:01", 3400)]
    p = legacy("P", 30, "Comment Created", "19:00:02.7", 1)  # 31 was lost, 32 arrived
    q = legacy("Q", 31, "Comment Created", "20:00:00.95", 1)  # 33 arrived (closer to 34 in raw time), 34 lost
    links, verdicts, _ = hop_a_outcome(tmp_path, zendesk, (p, q), ("19:00:04", "20:00:03"))
    assert links == [("32", "P", "ambiguous"), ("33", "Q", "ambiguous")]
    assert verdicts == {"31": "lost_before_bus", "32": "delivered", "33": "delivered", "34": "lost_before_bus"}


def test_hop_a_pairs_a_group_in_time_order_when_that_pairs_everything(tmp_path):
    """Two comments on one ticket 5 s apart and two bus events 6 and 9 s after the first comment (a slow bus), each
    within tolerance of its own: the second comment's nearest is the first bus event, and pairing it first left the
    first comment (and the second bus event) unpaired: a false loss and an orphan. A group with as many events as
    ids that time order pairs whole is paired that way."""
    zendesk = [z(31, 30, "Comment", "19:00:00", 3100), z(32, 30, "Comment", "19:00:05", 3200)]
    p = legacy("P", 30, "Comment Created", "19:00:06.2", 1)
    q = legacy("Q", 30, "Comment Created", "19:00:14.1", 1)
    links, verdicts, orphans = hop_a_outcome(tmp_path, zendesk, (p, q), ("19:00:08", "19:00:16"))
    assert links == [("31", "P", "ambiguous"), ("32", "Q", "ambiguous")]
    assert verdicts == {"31": "delivered", "32": "delivered"}
    assert orphans == []


def test_an_ambiguity_on_the_ticket_at_another_time_leaves_a_group_paired_in_time_order(tmp_path):
    """The pair above (two comments 5 s apart, their bus events 4 and 9 s after each) and, 20 minutes later on the same
    ticket, a comment with two candidates (its bus event and an extra id: another copy, or a comment not read). Taken
    as one (ticket, kind) group, the far ambiguity sent the near pair to nearest-first pairing: a false loss before
    the bus and an orphan. A group is the candidates whose time spans overlap: the near pair is paired in time order."""
    zendesk = [z(31, 30, "Comment", "19:00:00", 3100), z(32, 30, "Comment", "19:00:05", 3200),
               z(35, 30, "Comment", "19:20:00", 3500)]
    near = [legacy("P", 30, "Comment Created", "19:00:04", 1), legacy("Q", 30, "Comment Created", "19:00:14", 1)]
    far = [legacy("R", 30, "Comment Created", "19:20:01", 1), legacy("S", 30, "Comment Created", "19:20:02", 1)]
    links, verdicts, orphans = hop_a_outcome(tmp_path, zendesk, near + far,
                                             ("19:00:06", "19:00:16", "19:20:03", "19:20:04"))
    assert links == [("31", "P", "ambiguous"), ("32", "Q", "ambiguous"), ("35", "R", "ambiguous")]
    assert verdicts == {"31": "delivered", "32": "delivered", "35": "delivered"}
    assert orphans == [("S",)]


def test_hop_a_candidate_time_is_at_the_audit_s_second(tmp_path):
    """An audit's time is its whole second; the bus event came 10.4 s after that second began, so 9.4 s after an
    audit late in it: within the 10 s tolerance, a candidate (compared with the fraction, it was none: a false loss
    and an orphan). 11.2 s after is beyond any instant of the second."""
    zendesk = [z(31, 30, "Comment", "19:00:00", 3100), z(41, 40, "Comment", "19:00:00", 4100)]
    p = legacy("P", 30, "Comment Created", "19:00:10.4", 1)
    q = legacy("Q", 40, "Comment Created", "19:00:11.2", 1)
    links, verdicts, orphans = hop_a_outcome(tmp_path, zendesk, (p, q), ("19:00:12", "19:00:13"))
    assert links == [("31", "P", "composite")]
    assert verdicts == {"31": "delivered", "41": "lost_before_bus"}
    assert orphans == [("Q",)]


def test_a_bus_event_claimed_before_the_window_is_not_taken_by_an_event_in_it(tmp_path):
    """A comment 13 s before the window and its bus event 8 s later, 5 s before the window; a comment of the same
    ticket 4 s into the window never reached the bus. With Zendesk events kept only a tolerance (10 s) beyond the
    window, the first comment was not there to claim its bus event, which the second took: a false delivery (the
    next day's run of the day before would have linked it too). Every Zendesk event that could claim a bus event
    hop A may pair takes part (queries/rules.sql zendesk_reach, bus_reach)."""
    zendesk = [z(81, 80, "Comment", "2026-11-22T23:59:47Z", 8100), z(82, 80, "Comment", "00:00:04", 8200)]
    x = legacy("X", 80, "Comment Created", "2026-11-22T23:59:55.3Z", 1)
    e = judge(tmp_path, zendesk, [obs(x, x["event_time"])], [obs(x, "2026-11-22T23:59:58Z", sequence_number="1",
                                                                      committed=True)], [])
    try:
        assert table(e, "hop_a", ["source_id", "eb_id"]) == [("81", "X")]
        assert table(e, "verdicts", ["source_id", "verdict", "eb_id"]) == [("82", "lost_before_bus", None)]
        assert table(e, "orphans", ["eb_id"]) == []
    finally:
        e.close()


def test_the_zendesk_source_reads_as_far_as_hop_a_reaches():
    from reconcile.emission import load_model
    from reconcile.window import zendesk_reach
    e = eng.Engine.open()
    try:
        e.bind_table("emission_model", load_model())
        e.run_query("rules", {})
        for tol in (0, 2.5, 10):
            got = e.con.sql(f"SELECT zendesk_reach({tol})").fetchall()[0][0]
            assert got == zendesk_reach(tol), tol
    finally:
        e.close()


@pytest.mark.parametrize("outside_log", ["expired", "counted", "leftover", "expired-too-recent"])
def test_copies_outside_the_commit_log_count_as_the_readers_see_them(tmp_path, outside_log):
    """Sink rows in files outside Spark's commit log (committed = false): a retried batch's leftover beside the
    committed copy (the same Kinesis record), or an entry the sink's `retention` expired (its file stays). With a
    retention ('expired'), for readers that honour the log a row there counts once per Kinesis record no committed
    row holds, and an event found only there landed, shown as such; for readers that ignore the log ('counted')
    every copy counts. Without a retention ('leftover', Spark's default) no entry expires: a file outside the log is
    a leftover Spark's readers never see, so an event found only there did not land for them, and says why. With a
    retention, a file whose rows arrived after the latest compaction less the retention cannot be an expired entry
    (sink.unexpired: 'expired-too-recent', all of them such): a leftover, as without one (they were delivered)."""
    zendesk = [z(51 + i, 50 + i, "Comment", f"19:{i}0:00", 5100 + 100 * i) for i in range(5)]
    ev = [legacy(label_, 50 + i, "Comment Created", f"19:{i}0:00.3", 1) for i, label_ in enumerate("PQRST")]
    bus = [obs(e, e["event_time"]) for e in ev]
    row = lambda e, seq, committed: obs(e, e["event_time"], sequence_number=seq, committed=committed,  # noqa: E731
                                        source_ref=f"dt=a#b/part-{seq}-{committed}.parquet#0")  # '#' in a path
    sink = [row(ev[0], "1", True), row(ev[0], "1", False),  # a committed copy and a retried batch's leftover
            row(ev[1], "2", False),  # only in a file whose entry expired (or a leftover)
            row(ev[2], "3", False), row(ev[2], "3", False),  # a leftover and its retry, both expired (or leftovers)
            row(ev[3], "4", True), row(ev[3], "5", False)]  # a redelivered record, its second file expired
    # ev[4] (T) reached no file at all
    recent = [r["source_ref"].rsplit("#", 1)[0] for r in sink if not r["committed"]]
    e = judge(tmp_path, zendesk, bus, sink, [], outside_log=outside_log.removesuffix("-too-recent"),
              unexpired_files=recent if outside_log.endswith("too-recent") else [])
    try:
        got = {r[0]: r[1:] for r in table(e, "verdicts", ["source_id", "verdict", "sink_rows", "uncommitted_rows",
                                                          "cause"])}
        outside = ("delivered", 1, 1, "only in files outside Spark's commit log (an entry the sink's retention "
                                      "expired, or a retried batch's leftover): Spark's readers do not see it")
        lost = ("lost_after_bus", 0, 0, "no sink row, no DLQ message")
        leftover = "only in files outside Spark's commit log, a failed or retried batch's leftover (no [sink] " \
                   "retention, or written too recently for it to have expired the entry): Spark's readers do not see " \
                   "it, and no DLQ message"
        want = {
            "counted": {"51": ("duplicated", 2, 1, "re-batched"), "52": outside,
                        "53": ("duplicated", 2, 2, "re-batched"), "54": ("duplicated", 2, 1, "redelivery"),
                        "55": lost},
            "expired": {"51": ("delivered", 1, 0, None), "52": outside, "53": outside,
                        "54": ("duplicated", 2, 1, "redelivery"), "55": lost},
            "leftover": {"51": ("delivered", 1, 0, None), "52": ("lost_after_bus", 0, 1, leftover),
                         "53": ("lost_after_bus", 0, 2, leftover), "54": ("delivered", 1, 0, None), "55": lost},
        }
        want["expired-too-recent"] = want["leftover"]
        assert got == want[outside_log]
        outside_only = {r["verdict"]: r["outside_log"] for r in e.arrow("verdict_counts").to_pylist() if r["outside_log"]}
        assert outside_only == {"counted": {"delivered": 1, "duplicated": 1}, "expired": {"delivered": 2},
                                "leftover": {"lost_after_bus": 2},
                                "expired-too-recent": {"lost_after_bus": 2}}[outside_log]
    finally:
        e.close()


def test_an_event_of_two_ids_with_a_committed_copy_is_not_only_outside_the_log(tmp_path):
    """A webhook delivered twice (W1, W2: one event): W1 committed, W2 only in a failed batch's leftover. Without
    [sink] retention the leftover is no copy: delivered once, and not "only outside the commit log" (the counts are
    summed over the event's ids)."""
    zendesk = [z(61, 60, "Comment", "20:00:00", 6100)]
    w1 = webhook("W1", "u-61", 60, "comment_added", "20:00:00.2")
    w2 = dict(w1, eb_id="W2")
    bus = [obs(w, w["event_time"]) for w in (w1, w2)]
    sink = [obs(w1, "20:00:02", sequence_number="1", committed=True),
            obs(w2, "20:00:03", sequence_number="2", committed=False)]
    e = judge(tmp_path, zendesk, bus, sink, [], outside_log="leftover")
    try:
        assert table(e, "verdicts", ["source_id", "verdict", "eb_ids", "cause"]) == [("61", "delivered", 2, None)]
        assert sum(r["outside_log"] for r in e.arrow("verdict_counts").to_pylist()) == 0
    finally:
        e.close()


def test_records_read_twice_take_the_aggregating_path(tmp_path):
    """Most keys occur once in a store and skip aggregation (source_events, bus_events, verdicts); the rare ones
    seen twice must still come out as one row: an API event on two overlapping pages, a bus event logged twice,
    a sink row written under three sequence numbers, a webhook delivered under two EventBridge ids."""
    zendesk = [z(41, 40, "Create", "19:00:00", 4100), z(41, 40, "Create", "19:00:00", 4100),
               z(42, 41, "Create", "19:30:00", 4200)]
    x = webhook("X", "41", 40, "created", "19:00:00")
    y = webhook("Y", "42", 41, "created", "19:30:00")
    y2 = webhook("Y2", "42", 41, "created", "19:30:00")
    bus = [obs(x, "19:00:01"), obs(x, "19:00:00.5"), obs(y, "19:30:01"), obs(y2, "19:30:02")]
    sink = [obs(x, "19:00:04", sequence_number=s, committed=True) for s in ("1", "2", "2")]
    sink += [obs(y, "19:30:04", sequence_number="3", committed=True)]
    e = judge(tmp_path, zendesk, bus, sink, [])
    try:
        assert table(e, "source_events", ["source_id", "kind"]) == [("41", "Create"), ("42", "Create")]
        rows = {label(r["eb_id"]): r for r in e.arrow("bus_events").to_pylist()}
        assert sorted(rows) == ["X", "Y", "Y2"]
        assert (rows["X"]["log_copies"], rows["X"]["bus_at"], rows["X"]["sink_rows"], rows["X"]["sink_sequences"]
                ) == (2, at("19:00:00.5"), 3, 2)
        assert (rows["Y2"]["log_copies"], rows["Y2"]["sink_rows"], rows["Y2"]["sink_sequences"]) == (1, 0, 0)
        assert table(e, "verdicts", ["source_id", "verdict", "eb_ids", "eb_id", "log_copies", "sink_rows"]) == [
            ("41", "duplicated", 1, "X", 2, 3), ("42", "delivered", 2, "Y", 2, 1)]
    finally:
        e.close()


def test_a_query_out_of_memory_and_spill_says_what_to_try(tmp_path):
    from reconcile.errors import QueryError
    e = eng.Engine.open(memory_limit="30MB", temp_directory=str(tmp_path / "spill"))
    try:
        e.con.execute("SET max_temp_directory_size = '1MB'")
        sql = tmp_path / "big.sql"
        sql.write_text("CREATE TABLE big AS SELECT range AS r, md5(range::VARCHAR) AS s FROM range(3000000) ORDER BY s")
        with pytest.raises(QueryError, match=r"temp_directory \(.*spill.*GiB free\).*larger disk"):
            eng.execute_file(e.con, sql, {})
    finally:
        e.close()


def test_a_streamed_query_out_of_memory_says_what_to_try_as_its_rows_are_read(tmp_path):
    """A streamed query (partitioned judging's bus_events and verdicts) runs as its rows are read, not when
    execute_file returns: its failure is the same QueryError, naming the query and what to try."""
    from reconcile.errors import QueryError
    e = eng.Engine.open(memory_limit="30MB", temp_directory=str(tmp_path / "spill"))
    try:
        e.con.execute("SET max_temp_directory_size = '1MB'")
        sql = tmp_path / "big.sql"
        sql.write_text("CREATE OR REPLACE TABLE big AS\n"
                       "SELECT range AS r, md5(range::VARCHAR) AS s FROM range($n) ORDER BY s")
        rows = eng.execute_file(e.con, sql, {"n": 3_000_000}, stream=True)  # nothing has run yet
        with pytest.raises(QueryError, match=r"big.sql ran out of room: .*temp_directory \(.*spill.*larger disk"):
            schema, batches = eng.streamed(e.con, rows, "big.sql")
            for _ in batches:
                pass
        bad = tmp_path / "bad.sql"
        bad.write_text("CREATE OR REPLACE TABLE bad AS SELECT error('the data was not what it said') FROM range(3)")
        bad = eng.execute_file(e.con, bad, {}, stream=True)
        with pytest.raises(QueryError, match="bad.sql failed: .*the data was not what it said"):
            for _ in eng.streamed(e.con, bad, "bad.sql")[1]:
                pass
    finally:
        e.close()


def test_a_streamed_query_logs_how_many_rows_it_gave_and_how_long_they_took(tmp_path, caplog):
    """run_query logs each query's time; a streamed one's rows come while the caller reads them, so `streamed`
    logs the count and time when they run out (debugging a slow partitioned run starts from these lines)."""
    e = eng.Engine.open(temp_directory=str(tmp_path / "spill"))
    try:
        sql = tmp_path / "some.sql"
        sql.write_text("CREATE OR REPLACE TABLE some AS SELECT range AS r FROM range($n)")
        with caplog.at_level("DEBUG", logger="reconcile.engine"):
            schema, batches = eng.streamed(e.con, eng.execute_file(e.con, sql, {"n": 250_000}, stream=True),
                                           "some.sql", batch_rows=100_000)
            assert sum(b.num_rows for b in batches) == 250_000
        assert re.search(r"some\.sql streamed 250000 rows in \d+\.\d\d s", caplog.text)
    finally:
        e.close()
