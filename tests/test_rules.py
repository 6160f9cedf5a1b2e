"""The judging rules are one: this window's events (hop_a.sql, verdicts.sql) and the pending events carried in from
earlier windows (settlements.sql) get the same verdict, cause and EventBridge id for the same facts, through the
macros of queries/rules.sql. Ambiguous pairs included: two updates of one ticket and kind seconds apart, one lost,
pair one-to-one on both paths (a carried event cannot claim an EventBridge id another one pairs with better).

The day (2026-11-23, as of 2026-11-24 02:00, horizon 3 h, hop-A grace 5 min, tolerance 10 s): 1 webhook, delivered ·
2 redelivered (two sequence numbers) · 3 dead-lettered · 4 in the bus log only, 13 h old (lost after the bus) ·
5 the same, 2.5 h old (pending) · 6 nowhere (lost before the bus) · 7/8 two comments 5 s apart (ambiguous, both
delivered) · 9/10 two comments 2 s apart, 9 lost (ambiguous, one pair) · 11 replayed from an archive ·
12 one Spark record written twice (re-batched) · 13 delivered under two EventBridge ids (a redelivered webhook).
"""

from datetime import timedelta

import pyarrow as pa
import pytest

from reconcile import completeness
from reconcile import engine as eng
from reconcile import ledger
from reconcile.emission import load_model
from reconcile.state import CARRIED_SCHEMA

from ledgers import DAY, PARAMS, at, uid, write

KIN = "arn:aws:kinesis:us-east-1:1:stream/zendesk-events"


def z(i, ticket, kind, t):
    return dict(source_id=str(i), zendesk_key=str(i), ticket_id=ticket, event_type=kind, family="api",
                event_time=t, observed_at=t, audit_id=100 * i, source_ref=f"page-00001.json.gz#audit={100 * i}")


def legacy(eb, ticket, typ, t):
    return dict(eb_id=eb, ticket_id=ticket, event_type=typ, family="legacy", event_time=t, sequence_position=1)


def webhook(eb, zkey, ticket, t):
    return dict(eb_id=eb, zendesk_key=zkey, ticket_id=ticket, event_type="zen:event-type:ticket.created",
                family="webhook", event_time=t)


def sunk(ev, t, seq, **kw):
    return dict(ev, observed_at=t, sequence_number=seq, committed=True, **kw)


ZENDESK = [z(1, 1, "Create", "10:00:00"), z(2, 2, "Comment", "11:00:00"), z(3, 3, "Change:status", "12:00:00"),
           z(4, 4, "Comment", "13:00:00"), z(5, 5, "Comment", "23:30:00"), z(6, 6, "Create", "09:00:00"),
           z(7, 7, "Comment", "15:00:00"), z(8, 7, "Comment", "15:00:05"), z(9, 9, "Comment", "19:00:00"),
           z(10, 9, "Comment", "19:00:02"), z(11, 11, "Comment", "20:00:00"), z(12, 12, "Comment", "21:00:00"),
           z(13, 13, "Create", "22:00:00")]
A = webhook("A", "1", 1, "10:00:00")
B = legacy("B", 2, "Comment Created", "11:00:00.3")
C = legacy("C", 3, "Status Changed", "12:00:00.2")
D = legacy("D", 4, "Comment Created", "13:00:00.1")
E = legacy("E", 5, "Comment Created", "23:30:00.4")
H = legacy("H", 7, "Comment Created", "15:00:00.5")
I = legacy("I", 7, "Comment Created", "15:00:05.2")
P = legacy("P", 9, "Comment Created", "19:00:02.7")  # 9 was lost, 10 arrived: P is within tolerance of both
R = legacy("R", 11, "Comment Created", "20:00:00.2")
K = legacy("K", 12, "Comment Created", "21:00:00.1")
W1, W2 = webhook("W1", "13", 13, "22:00:00"), webhook("W2", "13", 13, "22:00:00")
BUS = [dict(e, observed_at=e["event_time"], source_id=f"log:{e['eb_id']}") for e in (A, B, C, D, E, H, I, P, R, K, W1,
                                                                                       W2)]
SINK = [sunk(A, "10:00:02", "1"), sunk(B, "11:00:02", "2"), sunk(B, "11:00:09", "3"), sunk(H, "15:00:03", "4"),
        sunk(I, "15:00:08", "5"), sunk(P, "19:00:04", "6"), sunk(R, "20:00:02", "7"),
        sunk(R, "20:30:00", "8", replay_name="zendesk-replay"), sunk(K, "21:00:02", "9"), sunk(K, "21:00:02", "9"),
        sunk(W1, "22:00:02", "10")]
DLQ = [dict(C, observed_at="14:00:00.2", source_id="m1", error_code="THROTTLING", target_arn=KIN,
            retry_condition="MaximumEventAgeInSeconds", retry_attempts=40)]


def run(tmp, carried: pa.Table, stores: dict[str, list[dict]] | None = None, excluded: tuple[str, ...] = (),
        **params) -> eng.Engine:
    """The day judged (its stores, or `stores`), with `carried` carried in from earlier windows (PARAMS, or as
    `params` change them); `excluded`: [exclude] event_types."""
    e = eng.Engine.open()
    for hop, rows in (stores or {"zendesk": ZENDESK, "bus": BUS, "sink": SINK, "dlq": DLQ}).items():
        e.bind_ledger(hop, write(tmp, hop, rows))
    e.bind_table("metrics", ledger.METRIC_SCHEMA.empty_table())
    e.bind_table("emission_model", load_model())
    e.bind_table("excluded_kinds", pa.table({"kind": pa.array(list(excluded), pa.string())}))
    e.bind_table("carried", carried)
    e.run_all({**PARAMS, **params})
    return e


@pytest.fixture(scope="module")
def this_window(tmp_path_factory):
    """The verdicts of the window's own events (nothing carried)."""
    e = run(tmp_path_factory.mktemp("window"), CARRIED_SCHEMA.empty_table())
    try:
        yield {r["source_id"]: r for r in e.arrow("verdicts").to_pylist()}
    finally:
        e.close()


def carried_from(verdicts: dict[str, dict], linked: bool) -> pa.Table:
    """The same events as carried from an earlier window: still unlinked (re-matched by the carried path's hop A) or
    with the ids an earlier run linked them to (the first, and its copies')."""
    rows = [dict(window_key="earlier", source_id=v["source_id"], zendesk_key=v["zendesk_key"],
                 eb_id=v["eb_id"] if linked else None, other_eb_ids=v["other_eb_ids"] if linked else None,
                 ticket_id=v["ticket_id"], kind=v["kind"], event_time=v["event_time"], position=v["position"])
            for v in verdicts.values()]
    return pa.Table.from_pylist(rows, schema=CARRIED_SCHEMA)


def test_the_window_covers_every_cause(this_window):
    got = {k: (v["verdict"], v["cause"]) for k, v in this_window.items()}
    assert got == {
        "1": ("delivered", None), "2": ("duplicated", "redelivery"), "3": ("dead_lettered", "THROTTLING"),
        "4": ("lost_after_bus", "no sink row, no DLQ message"), "5": ("pending", "within retry horizon"),
        "6": ("lost_before_bus", "not in any AWS store"), "7": ("delivered", None), "8": ("delivered", None),
        "9": ("lost_before_bus", "not in any AWS store"), "10": ("delivered", None), "11": ("duplicated", "replay"),
        "12": ("duplicated", "re-batched"), "13": ("delivered", None)}
    assert {k: this_window[k]["match_kind"] for k in ("7", "8", "10")} == {
        "7": "ambiguous", "8": "ambiguous", "10": "ambiguous"}
    assert this_window["13"]["eb_ids"] == 2


@pytest.mark.parametrize("linked", [False, True], ids=["re-matched", "linked-before"])
def test_carried_events_are_judged_like_the_window_s_own(tmp_path, this_window, linked):
    e = run(tmp_path, carried_from(this_window, linked))
    try:
        settled = {r["source_id"]: r for r in e.arrow("settlements").to_pylist()}
    finally:
        e.close()
    assert sorted(settled) == sorted(this_window)
    want = {k: (v["verdict"], v["cause"], v["eb_id"]) for k, v in this_window.items()}
    got = {k: (v["verdict"], v["cause"], v["eb_id"]) for k, v in settled.items()}
    assert got == want
    # one-to-one: the survivor P pairs with 10 (whose second it carries); 9 cannot claim it too
    assert (settled["9"]["verdict"], settled["10"]["eb_id"]) == ("lost_before_bus", uid("P"))
    assert settled["8"]["lateness_s"] == pytest.approx((at("15:00:08") - at("15:00:05")).total_seconds())


def test_a_carried_event_delivered_by_the_copy_its_first_id_is_not(tmp_path):
    """Webhook 13 was delivered twice (W1, W2) and neither copy had landed at its own run: the state keeps both ids
    (the first and the other), so a later run in which only W2 lands settles it delivered, as this window's own
    judging does -- not lost for want of W1."""
    sink = [s for s in SINK if s["eb_id"] != "W1"] + [sunk(W2, "22:00:02", "10")]
    stores = {"zendesk": ZENDESK, "bus": BUS, "sink": sink, "dlq": DLQ}
    e = run(tmp_path / "own", CARRIED_SCHEMA.empty_table(), stores)
    try:
        own = {r["source_id"]: r for r in e.arrow("verdicts").to_pylist()}
    finally:
        e.close()
    assert own["13"]["verdict"] == "delivered" and own["13"]["other_eb_ids"] == [uid("W2")]
    e = run(tmp_path / "carried", carried_from(own, True), stores)
    try:
        settled = {r["source_id"]: r for r in e.arrow("settlements").to_pylist()}
    finally:
        e.close()
    assert (settled["13"]["verdict"], settled["13"]["cause"]) == ("delivered", None)


def test_vocabularies_agree():
    """A verdict's loss hop is a funnel hop of queries/hops.csv, and each funnel hop has its [thresholds] key."""
    from dataclasses import fields

    from reconcile import emission
    from reconcile.config import ThresholdConfig
    funnel = [h["hop"] for h in emission.hop_rows() if h["in_funnel"]]
    assert {v["loss_hop"] for v in emission.verdict_rows() if v["loss_hop"]} == set(funnel)
    assert [f.name for f in fields(ThresholdConfig)] == funnel
    assert set(emission.chart_verdicts()) <= {v["verdict"] for v in emission.verdict_rows() if v["in_gaps"]}


def test_every_verdict_is_counted_in_every_breakdown(tmp_path):
    """The per-verdict breakdowns pivot over the vocabulary: a new verdict is a column there without editing them."""
    from reconcile import emission
    names = list(emission.verdicts())
    e = run(tmp_path, CARRIED_SCHEMA.empty_table())
    try:
        assert e.arrow("loss_by_type").column_names == ["kind", "events", *names]
        assert e.arrow("loss_by_hour").column_names == ["bucket", "events", "at_bus", "at_sink", *names]
        assert [r["verdict"] for r in e.arrow("verdict_counts").to_pylist()] == names
        assert sorted(r["name"] for r in e.arrow("funnel").to_pylist()) == sorted(
            h["hop"] for h in emission.hop_rows() if h["in_funnel"])
    finally:
        e.close()


def settle(tmp, carried_ids: list[str], bus: list[dict], sink: list[dict], **params) -> dict[str, tuple]:
    """Comments of ticket 500 carried from yesterday (23:00:00, one update), judged against today's stores."""
    carried = pa.Table.from_pylist([
        dict(window_key="earlier", source_id=s, zendesk_key=s, eb_id=None, ticket_id=500, kind="Comment",
             event_time=DAY - timedelta(hours=1), position=p) for p, s in enumerate(carried_ids, 1)],
        schema=CARRIED_SCHEMA)
    logged = [dict(b, observed_at=b["event_time"], source_id=f"log:{b['eb_id']}") for b in bus]
    e = run(tmp, carried, {"zendesk": [], "bus": logged, "sink": sink, "dlq": []}, **params)
    try:
        return {r["source_id"]: (r["verdict"], r["eb_id"], r["cause"]) for r in e.arrow("settlements").to_pylist()}
    finally:
        e.close()


def test_a_carried_event_of_a_state_without_emission_facts_is_judged_by_the_model(tmp_path):
    """A state written before the emission was kept gives its pending events none. A kind the model does not know is
    then unverified, as the run that held it judged it, never lost; a kind it knows is lost as before."""
    carried = pa.Table.from_pylist([
        dict(window_key="earlier", source_id=s, zendesk_key=s, eb_id=None, ticket_id=500, kind=kind,
             event_time=DAY - timedelta(hours=1), position=1, emission=None)
        for s, kind in (("41", "Change:foo_field"), ("42", "Comment"))], schema=CARRIED_SCHEMA)
    e = run(tmp_path, carried, {"zendesk": [], "bus": [], "sink": [], "dlq": []})
    try:
        got = {r["source_id"]: r["verdict"] for r in e.arrow("settlements").to_pylist()}
    finally:
        e.close()
    assert got == {"41": "unverified", "42": "lost_before_bus"}


def read_in_part(*stores: str) -> dict:
    """The queries' held parameters for a run that read `stores` only in part (completeness.unsettled's rule)."""
    results = {n: ledger.SourceResult(n, ledger.empty(), complete=n not in stores) for n in ("bus_log", "sink", "dlq")}
    return {**completeness.held_params(completeness.unsettled(results)),
            "dlq_in_part": completeness.dlq_in_part(results)}


@pytest.mark.parametrize("partial", [("sink",), ("bus_log",), ("dlq",)])
def test_this_window_holds_the_losses_a_store_read_in_part_could_undo(tmp_path, this_window, partial):
    """This window's events are held as carried ones are (one rule: rules.sql loss_held_by): with the sink read in
    part no loss is final; with the bus log read in part only the losses before the bus are held (a record there puts
    the event on the bus, it cannot land it); with the DLQ read in part a loss after the bus is held too (its message
    may be in the unread part: rules.sql beyond_dlq). Everything else is judged as on a whole read."""
    e = run(tmp_path, CARRIED_SCHEMA.empty_table(), **read_in_part(*partial))
    try:
        got = {r["source_id"]: r for r in e.arrow("verdicts").to_pylist()}
    finally:
        e.close()
    holds = {("sink",): {"lost_before_bus", "lost_after_bus", "dead_lettered"}, ("bus_log",): {"lost_before_bus"},
             ("dlq",): {"lost_before_bus", "lost_after_bus"}}[partial]
    held = {i for i, r in this_window.items() if r["verdict"] in holds}
    assert held and set(got) == set(this_window)
    for i, r in got.items():
        if i in held:
            want = f"would be {this_window[i]['verdict']}, but {partial[0]} read only in part: judged again"
            assert r["verdict"] == "pending" and r["cause"].startswith(want), (i, r["cause"])
            assert r["unlogged_at_bus"] == this_window[i]["unlogged_at_bus"]  # the evidence is kept
        else:
            assert (r["verdict"], r["cause"]) == (this_window[i]["verdict"], this_window[i]["cause"])


def test_a_loss_after_the_bus_past_the_dlq_archive_is_held(tmp_path, this_window):
    """A DLQ archive's newest object ($dlq_reach) written before an event's retries may have ended: its dead letter
    may come in a later object, so "no DLQ message" is not proof yet, and its loss after the bus is held (a daily
    archiver's object of the next morning passed the source's lag check and made final lost_after_bus verdicts of
    events that were dead-lettered later that day). A dead-lettered event, and a reach past the retries, change
    nothing."""
    lost = [i for i, r in this_window.items() if r["verdict"] == "lost_after_bus"]
    assert lost
    for reach, held in ((DAY + timedelta(hours=13), True), (DAY + timedelta(days=2), False)):
        e = run(tmp_path / str(held), CARRIED_SCHEMA.empty_table(), dlq_reach=reach)
        try:
            got = {r["source_id"]: r for r in e.arrow("verdicts").to_pylist()}
        finally:
            e.close()
        for i, r in got.items():
            if held and i in lost:
                assert r["verdict"] == "pending" and r["would_be"] == "lost_after_bus", (i, r)
                assert r["cause"].startswith("would be lost_after_bus, but the DLQ archive holds messages written "
                                             "until 2026-11-23T13:00:00Z"), r["cause"]
            else:
                assert (r["verdict"], r["cause"]) == (this_window[i]["verdict"], this_window[i]["cause"]), i


def test_a_loss_after_the_bus_the_spark_job_may_not_have_read_yet_is_held(tmp_path, this_window):
    """The Spark job stopped at noon (or fell that far behind): the sink holds what the stream received until 11:00:09,
    its newest row's arrival. An event on the bus whose retries went on past then, in neither the sink nor the DLQ,
    may be in the stream unread: held, with why, until the stream would have dropped it ([sink] stream_retention past
    its retries), then lost -- in the window and carried alike (a stopped job judged a day's losses final, and the
    recovery re-sent what then landed twice). A dead letter stays dead_lettered; a loss before the bus is not held."""
    stopped = {"zendesk": ZENDESK, "bus": BUS, "sink": [r for r in SINK if r["observed_at"] < "12:00:00"], "dlq": DLQ}
    after = {i for i, r in this_window.items() if r["verdict"] in ("delivered", "duplicated", "lost_after_bus")
             and i not in ("1", "2")}  # the two whose rows arrived before noon
    assert after == {"4", "7", "8", "10", "11", "12", "13"}
    # retries end 3 h after each event; as of 02:00 the next day, 9 h of retention keep those after 17:00
    for retention, held in ((timedelta(hours=24), after), (timedelta(hours=9), after - {"4"})):
        e = run(tmp_path / str(retention.seconds), carried_from(this_window, True), stopped,
                stream_retention=retention)
        try:
            tables = {t: {r["source_id"]: r for r in e.arrow(t).to_pylist()} for t in ("verdicts", "settlements")}
        finally:
            e.close()
        for table, got in tables.items():
            assert {i for i, r in got.items()
                    if r["verdict"] == "pending" and r["would_be"] == "lost_after_bus"} == held
            assert got["4"]["verdict"] == ("pending" if "4" in held else "lost_after_bus"), table
            assert {i: got[i]["verdict"] for i in ("3", "6", "9")} == {
                "3": "dead_lettered", "6": "lost_before_bus", "9": "lost_before_bus"}, table
        assert tables["verdicts"]["7"]["cause"] == (
            "would be lost_after_bus, but the sink holds what the stream received until 2026-11-23T11:00:09Z (its "
            "newest row's arrival), and EventBridge may have put it on the stream until 2026-11-23T18:00:00Z: Spark "
            "may not have read it yet (the stream keeps it until " + ("2026-11-24T18:00:00Z" if retention.days else
                                                                      "2026-11-24T03:00:00Z")
            + ": [sink] stream_retention): judged again by the next run")
    # no row with an arrival time (an empty sink, a job writing none): nothing is proven read
    blind = dict(stopped, sink=[dict(r, observed_at=None) for r in SINK])
    e = run(tmp_path / "blind", CARRIED_SCHEMA.empty_table(), blind, stream_retention=timedelta(hours=24))
    try:
        got = {r["source_id"]: r for r in e.arrow("verdicts").to_pylist()}
    finally:
        e.close()
    assert got["4"]["verdict"] == "pending" and "no row in the sink has an arrival time" in got["4"]["cause"]
    assert got["7"]["verdict"] == "delivered"


def test_a_failed_batchs_leftover_is_no_proof_the_spark_job_read_the_stream(tmp_path):
    """[sink] retention set: a file outside the commit log may be an entry it expired (landed), unless no compaction
    can have expired it ($unexpired_files: a failed batch's leftover, no copy). The job committed up to 11:00:09; its
    catch-up batch read up to 20:00 and failed (a crash loop): its leftover's rows moved the sink's reach, and comment 4
    (13:00, retries to 16:00), still in the stream, was lost for good. A leftover proves no read; an expired entry's
    file does."""
    left = "s3://b/events/dt=2026-11-23/part-left.parquet"
    sink = [r for r in SINK if r["observed_at"] < "12:00:00"] + [
        dict(R, observed_at="20:00:02", sequence_number="7", committed=False, source_ref=left + "#0")]
    stores = {"zendesk": ZENDESK, "bus": BUS, "sink": sink, "dlq": DLQ}
    for unexpired, reach, four in (([left], "11:00:09", "pending"), ([], "20:00:02", "lost_after_bus")):
        e = run(tmp_path / str(len(unexpired)), CARRIED_SCHEMA.empty_table(), stores,
                stream_retention=timedelta(hours=24), unexpired_files=unexpired)
        try:
            assert e.arrow("reach")["sink_reach"][0].as_py() == at(reach)
            assert {r["source_id"]: r["verdict"] for r in e.arrow("verdicts").to_pylist()}["4"] == four
        finally:
            e.close()


def test_an_event_the_bus_received_late_is_retried_until_the_horizon_past_then(tmp_path, this_window):
    """D (13:00) reached the bus -- its log copy -- only at midnight (a connector backlog, a webhook's retries):
    EventBridge retries it until the horizon past then, 03:00 the next day, after as_of (02:00). Judged by its Zendesk
    time it was lost after the bus while still retried, and a loss is not looked at again. It is pending, in the
    window and carried alike; its cause as before once the retries are over."""
    assert this_window["4"]["verdict"] == "lost_after_bus"
    late = [dict(b, observed_at="2026-11-24T00:00:00Z") if b["eb_id"] == "D" else b for b in BUS]
    stores = {"zendesk": ZENDESK, "bus": late, "sink": SINK, "dlq": DLQ}
    for as_of, want in ((PARAMS["as_of"], "pending"), (PARAMS["as_of"] + timedelta(hours=2), "lost_after_bus")):
        e = run(tmp_path / want, carried_from(this_window, True), stores, as_of=as_of)
        try:
            got = {r["source_id"]: r["verdict"] for r in e.arrow("verdicts").to_pylist()}
            settled = {r["source_id"]: r["verdict"] for r in e.arrow("settlements").to_pylist()}
        finally:
            e.close()
        assert (got["4"], settled["4"]) == (want, want), as_of


def test_a_carried_event_the_bus_received_late_is_retried_until_the_horizon_past_then(tmp_path):
    """Six-hour windows: comment 4 at 01:00, its log copy at 05:00 (four hours late); as of 02:00 the next day with a
    25 h horizon EventBridge retries it until 06:00. Its own window's judging says pending; a later window's run, whose
    bus log read starts at 17:00 (no copy), judged the carried event by its Zendesk time: lost after the bus, final.
    The state keeps the first log copy's time (bus_at), and the carried judging retries from it alike."""
    as_of, horizon = DAY + timedelta(hours=26), timedelta(hours=25)
    d = dict(legacy("D", 4, "Comment Created", "01:00:00.1"), sequence_id="S4", sequence_total=1)
    e = run(tmp_path / "own", CARRIED_SCHEMA.empty_table(),
            {"zendesk": [dict(z(4, 4, "Comment", "01:00:00"), audit_id=400)],
             "bus": [dict(d, observed_at="05:00:00", source_id="log:D")], "sink": [], "dlq": []},
            window_end=DAY + timedelta(hours=6), as_of=as_of, horizon=horizon)
    try:
        [own] = e.arrow("verdicts").to_pylist()
    finally:
        e.close()
    assert own["verdict"] == "pending" and own["bus_at"] == at("05:00:00")
    carried = pa.Table.from_pylist([dict(window_key="w1", source_id="4", zendesk_key="4", eb_id=uid("D"), ticket_id=4,
                                         kind="Comment", event_time=at("01:00:00"), position=1, audit_id=400,
                                         bus_at=own["bus_at"])], schema=CARRIED_SCHEMA)
    later = dict(window_start=DAY + timedelta(hours=18), window_end=DAY + timedelta(hours=24), as_of=as_of,
                 horizon=horizon, bus_read_start=DAY + timedelta(hours=17))
    for kept, want in ((own["bus_at"], "pending"), (None, "lost_after_bus")):  # a state without it: as before
        e = run(tmp_path / want, carried.set_column(carried.schema.get_field_index("bus_at"), "bus_at",
                                                    pa.array([kept], CARRIED_SCHEMA.field("bus_at").type)),
                {"zendesk": [], "bus": [], "sink": [], "dlq": []}, **later)
        try:
            [settled] = e.arrow("settlements").to_pylist()
        finally:
            e.close()
        assert settled["verdict"] == want, (kept, settled)


def test_an_id_of_a_carried_event_s_copy_group_is_taken_by_it(tmp_path):
    """Carried 901 is linked to Db; the connector resent its event as Da (the lower id: its copy group's first), and
    only Da landed. Carried 902 (same ticket, kind and second, unlinked) took Da by kind and time while 901 took it as
    Db's copy: both delivered on one sink row, where one pass says 901 delivered and 902 lost before the bus."""
    t = DAY - timedelta(hours=1)

    def ev(eb):
        return dict(eb_id=eb, ticket_id=500, event_type="Comment Created", family="legacy",
                    event_time="2026-11-22T23:00:00.3Z", sequence_id="S1", sequence_position=1, sequence_total=2)
    db, da = ev("Db"), ev("Da")
    carried = pa.Table.from_pylist([
        dict(window_key="earlier", source_id="901", zendesk_key="901", eb_id=uid("Db"), ticket_id=500,
             kind="Comment", event_time=t, position=1),
        dict(window_key="earlier", source_id="902", zendesk_key="902", eb_id=None, ticket_id=500,
             kind="Comment", event_time=t, position=2)], schema=CARRIED_SCHEMA)
    bus = [dict(b, observed_at=b["event_time"], source_id=f"log:{b['eb_id']}") for b in (db, da)]
    e = run(tmp_path, carried, {"zendesk": [], "bus": bus, "sink": [sunk(da, "2026-11-22T23:00:02Z", "1")], "dlq": []})
    try:
        got = {r["source_id"]: r["verdict"] for r in e.arrow("settlements").to_pylist()}
    finally:
        e.close()
    assert got == {"901": "delivered", "902": "lost_before_bus"}, got


def test_a_loss_after_the_bus_with_the_dlq_read_in_part_is_held(tmp_path, this_window):
    """With the DLQ read in part, "no DLQ message" is no proof: a loss after the bus is held (it would be
    dead_lettered if its message was in the unread part); a dead-lettered one is not (its message was read)."""
    e = run(tmp_path, CARRIED_SCHEMA.empty_table(), dlq_in_part=completeness.in_part("dlq"))
    try:
        got = {r["source_id"]: r for r in e.arrow("verdicts").to_pylist()}
    finally:
        e.close()
    for i, r in this_window.items():
        if r["verdict"] == "lost_after_bus":
            assert got[i]["verdict"] == "pending" and got[i]["cause"].startswith(
                "would be lost_after_bus, but dlq read only in part"), got[i]
        else:
            assert (got[i]["verdict"], got[i]["cause"]) == (r["verdict"], r["cause"]), i


def comment_webhook(eb: str, key: str) -> dict:
    return dict(webhook(eb, key, 500, "2026-11-22T23:00:00.3Z"), event_type="zen:event-type:ticket.comment_added")


def test_a_carried_event_cannot_take_the_id_another_carried_event_took_exactly(tmp_path):
    """Two comments of one update carried from yesterday; today a webhook carrying the first one's id lands. The
    first settles on it exactly; the second is no composite candidate for the same id (one-to-one, as in hop A), so
    it stays lost rather than delivered by another event's copy."""
    x = comment_webhook("X", "901")
    assert settle(tmp_path, ["901", "902"], [x], [sunk(x, "2026-11-22T23:00:02Z", "1")]) == {
        "901": ("delivered", uid("X"), None), "902": ("lost_before_bus", None, "not in any AWS store")}


def test_a_run_that_read_a_store_in_part_settles_no_carried_event_as_lost(tmp_path):
    """A loss is what the stores do not hold. A run that read one of them only in part (completeness.settles false)
    settles no carried event as lost: it stays pending, to be judged again by the next run (the state records no
    settlement for it), with the reason as its cause. What the stores do hold settles as usual."""
    x = comment_webhook("X", "901")
    sink = [sunk(x, "2026-11-22T23:00:02Z", "1")]
    assert settle(tmp_path / "part", ["901", "902"], [x], sink, **read_in_part("bus_log")) == {
        "901": ("delivered", uid("X"), None),
        "902": ("pending", None, "would be lost_before_bus, but bus_log read only in part: judged again by the next "
                                 "run")}
    # the bus log holds it, the sink does not: lost after the bus only once the sink was read whole
    y = comment_webhook("Y", "902")
    assert settle(tmp_path / "whole", ["902"], [y], [])["902"][0] == "lost_after_bus"
    assert settle(tmp_path / "sink-part", ["902"], [y], [], **read_in_part("sink"))["902"][:2] == (
        "pending", uid("Y"))
    # a bus log read in part cannot land it: lost after the bus all the same; a DLQ read in part may hold its dead
    # letter (dead_lettered, not lost_after_bus): held, with the reason (rules.sql beyond_dlq)
    assert settle(tmp_path / "bus_log-part", ["902"], [y], [], **read_in_part("bus_log"))["902"][0] == "lost_after_bus"
    assert settle(tmp_path / "dlq-part", ["902"], [y], [], **read_in_part("dlq"))["902"] == (
        "pending", uid("Y"), "would be lost_after_bus, but dlq read only in part: judged again by the next run")
    # dead-lettered is a loss too (in the DLQ and not in the sink): held the same way
    lettered = {"zendesk": [], "bus": [dict(y, observed_at=y["event_time"], source_id="log:Y")], "sink": [],
                "dlq": [dict(y, observed_at=y["event_time"], source_id="m1", error_code="THROTTLING",
                             target_arn=KIN)]}
    carried = pa.Table.from_pylist([dict(window_key="earlier", source_id="902", zendesk_key="902", ticket_id=500,
                                         kind="Comment", event_time=DAY - timedelta(hours=1), position=1)],
                                   schema=CARRIED_SCHEMA)
    for partial, want in (((), "dead_lettered"), (("sink",), "pending")):
        e = run(tmp_path / f"dlq-{want}", carried, lettered, **read_in_part(*partial))
        try:
            assert e.arrow("settlements").to_pylist()[0]["verdict"] == want
        finally:
            e.close()
    # a carried event older than the sink was read back to ([window] carry_back): not settled as lost either
    old = settle(tmp_path / "old", ["902"], [y], [], sink_read_start=DAY)["902"]
    assert old[0] == "pending" and "the sink was not read back to it ([window] carry_back)" in old[2]


def test_a_carried_event_delivered_twice_as_a_webhook_is_one_event_under_two_ids(tmp_path):
    """A carried comment whose webhook (its own event id, not the API's) was delivered twice today: both ids link to
    it, as hop A links them (queries/rules.sql bus_copies), so the copy that landed delivers it whichever was picked."""
    wid = "2b24ef10-19d4-4740-93cf-8f98ec4776c0"
    copies = [comment_webhook("WA", wid), comment_webhook("WB", wid)]
    for landed in copies:
        got = settle(tmp_path / landed["eb_id"], ["900"], copies, [sunk(landed, "2026-11-22T23:00:02Z", "1")])
        assert got["900"][0] == "delivered"
    both = settle(tmp_path / "both", ["900"], copies, [sunk(c, "2026-11-22T23:00:02Z", str(i)) for i, c in
                                                         enumerate(copies)])
    assert (both["900"][0], both["900"][2]) == ("duplicated", "redelivery")  # two ids linked: a redelivery


def test_a_bus_log_read_that_ends_early_holds_the_losses_after_its_end(tmp_path):
    """The bus log read ends at 12:00 (a CloudWatch export made before its data was exportable) while the sink holds
    events the bus received until 17:00. A Zendesk event at 16:00 that no store holds may yet be in the log: its loss
    before the bus is held, with what it would be. One at 11:00, before the end, is lost. When the sink ends with the
    log (the bus itself went quiet: an outage), the 16:00 event is lost too."""
    from tinyday import judge, legacy, obs, table, z
    zd = [z(1, 1, "Comment", "10:00:00", 100), z(2, 2, "Comment", "11:00:00", 200),
          z(3, 3, "Comment", "12:00:00", 300), z(4, 4, "Comment", "16:00:00", 400), z(5, 5, "Comment", "17:00:00", 500)]
    a, c, e5 = (legacy(x, t, "Comment Created", f"{h}:00:00.1", 1) for x, t, h in (("A", 1, 10), ("C", 3, 12),
                                                                                  ("E", 5, 17)))
    bus = [obs(a, a["event_time"]), obs(c, c["event_time"])]
    sink = [obs(x, x["event_time"][:6] + "02", sequence_number=str(i), committed=True)
            for i, x in enumerate((a, c, e5))]
    short = judge(tmp_path / "short", zd, bus, sink, [])
    assert table(short, "verdicts", ["source_id", "verdict", "would_be"]) == [
        ("1", "delivered", None), ("2", "lost_before_bus", None), ("3", "delivered", None),
        ("4", "pending", "lost_before_bus"), ("5", "delivered", None)]
    (cause,) = [r["cause"] for r in short.arrow("verdicts").to_pylist() if r["source_id"] == "4"]
    assert cause == ("would be lost_before_bus, but the bus log read ends at 2026-11-23T12:00:00Z while the sink or "
                     "the DLQ holds events until 2026-11-23T17:00:00Z: judged again by the next run")
    assert table(short, "funnel", ["name", "lost", "held"]) == [("bus_to_sink", 0, 0), ("zendesk_to_bus", 1, 1)]
    quiet = judge(tmp_path / "quiet", zd[:4], bus, sink[:2], [])
    assert [v for s, v in table(quiet, "verdicts", ["source_id", "verdict"]) if s in ("2", "4")] == \
        ["lost_before_bus", "lost_before_bus"]


def test_a_bus_log_that_ends_with_a_stalled_sink_holds_what_was_not_yet_exportable(tmp_path):
    """Spark stopped at 12:00 (records wait in Kinesis), and the CloudWatch export made at 18:00 holds data until
    12:00: data can take up to 12 h to become exportable (PIPELINE.md §3). The sink ends with the log, so the quiet
    rule above would call the 16:00 event lost before the bus; but the export proves the bus only up to its newest
    object's time less the lag ([bus_log] export_lag, sources.buslog.covered): held. An object written at 17:00 by a
    Firehose delivery (15 min) proves the bus quiet until 16:45: lost. A live read (format api): as before."""
    from tinyday import judge, legacy, obs, z
    zd = [z(1, 1, "Comment", "11:59:00", 100), z(2, 2, "Comment", "16:00:00", 200)]
    a = legacy("A", 1, "Comment Created", "11:59:00.1", 1)
    bus, sink = [obs(a, a["event_time"])], [obs(a, "11:59:02", sequence_number="1", committed=True)]
    verdicts = {}
    for name, covered in (("export", DAY + timedelta(hours=6)), ("firehose", DAY + timedelta(hours=16, minutes=45)),
                          ("api", None), ("empty export", DAY + timedelta(hours=6))):
        e = judge(tmp_path / name, zd, [] if name == "empty export" else bus, sink, [], bus_log_covered=covered)
        try:
            verdicts[name] = {r["source_id"]: (r["verdict"], r["would_be"], r["cause"])
                              for r in e.arrow("verdicts").to_pylist()}
        finally:
            e.close()
    assert verdicts["export"]["1"][0] == "delivered"
    assert verdicts["export"]["2"] == ("pending", "lost_before_bus", (
        "would be lost_before_bus, but the bus log holds for certain only what the bus received until "
        "2026-11-23T11:59:00Z (what was not yet exportable when its newest object was written is not in it: "
        "[bus_log] export_lag): judged again by the next run"))
    assert verdicts["firehose"]["2"][:2] == verdicts["api"]["2"][:2] == ("lost_before_bus", None)
    # an export holding no record proves less, not more: still held
    assert verdicts["empty export"]["2"][:2] == ("pending", "lost_before_bus")


def test_a_carried_event_older_than_the_bus_log_read_is_held_within_the_retry_horizon(tmp_path):
    """A carried comment (23:00 yesterday) that no sink or DLQ holds, judged by a run that reads the bus log only from
    05:00: whether it reached the bus is unknown, and within EventBridge's retry horizon it may land yet -- held, not
    lost. Past the horizon it is a loss either way, at a hop this run cannot tell (its cause says so)."""
    later = dict(bus_read_start=DAY + timedelta(hours=5), as_of=DAY + timedelta(hours=12))
    within = settle(tmp_path / "within", ["71"], [], [], horizon=timedelta(hours=25), **later)
    assert within["71"] == ("pending", None, "would be lost_before_bus, but this run reads the bus log from "
                                             "2026-11-23T05:00:00Z, after it, and it is within the retry horizon: "
                                             "judged again by the next run")
    past = settle(tmp_path / "past", ["71"], [], [], horizon=timedelta(hours=3), **later)
    assert past["71"][0] == "lost_before_bus" and "it may have reached the bus (lost after it then)" in past["71"][2]


def test_a_carried_event_of_a_kind_excluded_since_is_excluded_not_lost(tmp_path):
    """[exclude] event_types changed after an event was carried: the rule that excludes the window's events of that
    kind (source_events.sql is_excluded) excludes the carried one too, rather than settling it lost."""
    carried = pa.Table.from_pylist([dict(window_key="earlier", source_id="81", zendesk_key="81", ticket_id=800,
                                         kind="Comment", event_time=DAY - timedelta(hours=1), position=1,
                                         emission="child")], schema=CARRIED_SCHEMA)
    empty = {"zendesk": [], "bus": [], "sink": [], "dlq": []}
    for excluded, want in (((), "lost_before_bus"), (("Comment",), "excluded")):
        e = run(tmp_path / want, carried, empty, excluded=excluded)
        try:
            assert [r["verdict"] for r in e.arrow("settlements").to_pylist()] == [want]
        finally:
            e.close()
