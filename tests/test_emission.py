"""Hop A on real Zendesk shapes, exact rows: the emission model (folded Create children, custom fields, unknown kinds,
kinds never on the bus), connector sequences as evidence, one connector event under two EventBridge ids, the window
edge. Same tiny-day harness as test_queries.py, tests/tinyday.py (window 2026-11-23, as of +26 h, tolerance 10 s,
grace 5 min)."""

import pytest

from reconcile.emission import load_model, verdicts as verdict_names
from reconcile.errors import ConfigError

from tinyday import judge, legacy, obs, table, webhook, z


def seq(eb, ticket, typ, t, pos, total, sid):
    return legacy(eb, ticket, typ, t, pos, sequence_id=sid, sequence_total=total)


def landed(events, n=100):
    """Each event in the bus log and once in the sink, committed."""
    bus = [obs(e, e["event_time"]) for e in events]
    sink = [obs(e, e["event_time"], sequence_number=str(n + i), committed=True) for i, e in enumerate(events)]
    return bus, sink


# A new ticket: five Create children (one per property set) and a Comment; the connector sends Ticket Created (1/2)
# and Comment Created (2/2). A webhook new ticket whose event id is that of its second Create child.
NEW = [z(101, 50, "Create", "08:00:00", 5000), z(102, 50, "Create", "08:00:00", 5000),
       z(103, 50, "Create", "08:00:00", 5000), z(104, 50, "Create", "08:00:00", 5000),
       z(105, 50, "Create", "08:00:00", 5000), z(106, 50, "Comment", "08:00:00", 5000),
       z(111, 51, "Create", "08:10:00", 5100), z(112, 51, "Create", "08:10:00", 5100)]
# [Comment, Change:sla_policy (a kind the model lacks), Change:status] -> positions 1, 2, 3: Status Changed at 3
# still matches; position 2 (SLA Policy Changed) pairs with the unknown child. In the second update position 2 never
# reached any store: the unknown child may be what was lost there, or not (the connector sends events no API child
# stands for, and Zendesk does not guarantee the order), so it stays unverified, with the position as evidence.
SHIFT = [z(201, 60, "Comment", "09:00:00", 6000), z(202, 60, "Change:sla_policy", "09:00:00", 6000),
         z(203, 60, "Change:status", "09:00:00", 6000),
         z(211, 61, "Comment", "09:10:00", 6100), z(212, 61, "Change:sla_policy", "09:10:00", 6100),
         z(213, 61, "Change:status", "09:10:00", 6100)]
# A custom field (numeric field_name) -> a typed Custom Field Changed; an unknown kind in an update whose sequence is
# complete without it (unverified); a known kind left out of a complete sequence (not emitted); a Notification.
MISC = [z(301, 70, "Change:360012345678", "10:00:00", 7000),
        z(311, 71, "Comment", "10:10:00", 7100), z(312, 71, "Change:satisfaction_score", "10:10:00", 7100),
        z(321, 72, "Comment", "10:20:00", 7200), z(322, 72, "Change:priority", "10:20:00", 7200),
        z(331, 73, "Notification", "10:30:00", 7300)]
# One legacy event sent twice under two EventBridge ids (same sequence id and position), both landed.
RESENT = [z(401, 80, "Comment", "11:00:00", 8000)]
# Window edge: an audit a second before the window whose bus occurred_at falls inside it.
EDGE = [z(501, 90, "Comment", "2026-11-22T23:59:59Z", 9000)]

BUS_EVENTS = [
    seq("N1", 50, "Ticket Created", "08:00:00.2", 1, 2, "S50"),
    seq("N2", 50, "Comment Created", "08:00:00.3", 2, 2, "S50"),
    webhook("W1", "112", 51, "created", "08:10:00"),
    seq("R1", 60, "Comment Created", "09:00:00.1", 1, 3, "S60"), seq("R2", 60, "SLA Policy Changed", "09:00:00.1", 2, 3,
                                                                      "S60"),
    seq("R3", 60, "Status Changed", "09:00:00.2", 3, 3, "S60"),
    seq("T1", 61, "Comment Created", "09:10:00.1", 1, 3, "S61"), seq("T3", 61, "Status Changed", "09:10:00.2", 3, 3,
                                                                      "S61"),
    seq("C1", 70, "Custom Field Changed - Checkbox", "10:00:00.1", 1, 1, "S70"),
    seq("U1", 71, "Comment Created", "10:10:00.1", 1, 1, "S71"),
    seq("P1", 72, "Comment Created", "10:20:00.1", 1, 1, "S72"),
    seq("D1", 80, "Comment Created", "11:00:00.1", 1, 1, "S80"), seq("D2", 80, "Comment Created", "11:00:00.1", 1, 1,
                                                                      "S80"),
    seq("E1", 90, "Comment Created", "2026-11-23T00:00:00.3Z", 1, 1, "S90"),
]


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    bus, sink = landed(BUS_EVENTS)
    e = judge(tmp_path_factory.mktemp("emission"), NEW + SHIFT + MISC + RESENT + EDGE, bus, sink, [])
    yield e
    e.close()


def test_verdicts_follow_the_emission_model_and_the_sequences(day):
    got = {r[0]: r[1:] for r in table(day, "verdicts", ["source_id", "verdict", "eb_id", "expected_id", "match_kind"])}
    create = ("delivered", "N1", "101", "composite")
    assert got == {
        "101": create, "102": create, "103": create, "104": create, "105": create,
        "106": ("delivered", "N2", "106", "composite"),
        "111": ("delivered", "W1", "111", "exact"), "112": ("delivered", "W1", "111", "exact"),
        "201": ("delivered", "R1", "201", "composite"), "202": ("delivered", "R2", "202", "sequence"),
        "203": ("delivered", "R3", "203", "composite"),
        "211": ("delivered", "T1", "211", "composite"), "212": ("unverified", None, "212", "unmatched"),
        "213": ("delivered", "T3", "213", "composite"),
        "301": ("delivered", "C1", "301", "composite"),
        "311": ("delivered", "U1", "311", "composite"), "312": ("unverified", None, "312", "unmatched"),
        "321": ("delivered", "P1", "321", "composite"), "322": ("not_emitted", None, "322", "unmatched"),
        "331": ("excluded", None, "331", "unmatched"),
        "401": ("duplicated", "D1", "401", "composite"),
    }
    causes = dict(table(day, "verdicts", ["source_id", "cause"]))
    assert causes["212"].endswith(". Position 2 of sequence S61, where it would be, never reached any store: it, or "
                                  "an event no API child stands for, was lost")
    assert causes["401"] == "redelivery"
    assert causes["312"].startswith("kind Change:satisfaction_score is not in the emission model")
    assert causes["322"] == "sequence S72 (1 events) is complete without it"


def test_the_bus_events_of_edge_and_folded_events_are_no_orphans(day):
    assert table(day, "orphans", ["eb_id"]) == []
    assert [r for r in table(day, "gaps", ["verdict", "source_id", "eb_id"]) if r[0] == "orphan"] == []


def test_counts_are_of_expected_bus_events(day):
    counts = {r[0]: r[1:] for r in table(day, "verdict_counts", ["verdict", "events", "children"])}
    assert counts["delivered"] == (11, 16)  # the two new tickets' 7 Create children are 2 expected events
    assert (counts["unverified"], counts["not_emitted"], counts["lost_before_bus"]) == ((2, 2), (1, 1), (0, 0))
    assert table(day, "funnel", ["name", "in", "out", "lost", "pending"], order=True) == [
        ("zendesk_to_bus", 12, 12, 0, 0), ("bus_to_sink", 12, 12, 0, 0)]
    assert dict(table(day, "match_stats", ["match_kind", "events"]))["sequence"] == 1
    # latencies are per expected event too: the new tickets' Create children share their bus event's latency, and
    # counting each would weigh that event 5 and 2 times in the percentiles
    assert dict(table(day, "latency", ["hop", "events"])) == {"zendesk_to_bus": 12, "bus_to_sink": 12,
                                                              "end_to_end": 12}
    assert sum(n for hop, n in table(day, "latency_histogram", ["hop", "events"]) if hop == "end_to_end") == 12


def test_a_notification_is_not_emitted_when_not_excluded(tmp_path):
    import pyarrow as pa
    from reconcile import engine as eng
    from ledgers import PARAMS, write
    e = eng.Engine.open()
    try:
        e.bind_ledger("zendesk", write(tmp_path, "zendesk", [z(1, 1, "Notification", "10:00:00", 1)]))
        for hop in ("bus", "sink", "dlq", "metrics"):
            e.bind_ledger(hop, None)
        from reconcile import ledger
        e.bind_table("metrics", ledger.METRIC_SCHEMA.empty_table())
        e.bind_table("emission_model", load_model())
        e.bind_table("excluded_kinds", pa.table({"kind": pa.array([], pa.string())}))
        from reconcile.state import CARRIED_SCHEMA
        e.bind_table("carried", CARRIED_SCHEMA.empty_table())
        e.run_all(PARAMS)
        assert table(e, "verdicts", ["source_id", "verdict", "cause"]) == [
            ("1", "not_emitted", "the emission model says Notification never reaches the bus")]
    finally:
        e.close()


def test_custom_fields_are_excluded_by_their_model_kind(tmp_path):
    """[exclude] event_types names a kind as the model does: `Change:<custom field id>` excludes every custom field,
    which would otherwise need each field's numeric id listed."""
    zen = [z(801, 120, "Change:360012345678", "14:00:00", 12000), z(802, 121, "Change:360099999999", "14:00:00", 12100),
           z(803, 122, "Change:status", "14:00:00", 12200)]
    e = judge(tmp_path, zen, [], [], [], excluded=["Change:<custom field id>", "Change:status"])
    try:
        assert {r[0]: r[1] for r in table(e, "verdicts", ["source_id", "verdict"])} == {
            "801": "excluded", "802": "excluded", "803": "excluded"}
    finally:
        e.close()


def test_the_shipped_model_names_the_documented_types():
    m = load_model()
    types = set(m["bus_type"].to_pylist())
    for t in ("Ticket Created", "Brand Changed", "Form Changed", "Organization Changed", "Requester Changed",
              "Submitter Changed", "Followers Changed", "Email CCs Changed", "Problem Link Changed",
              "External ID Changed", "Task Due At Changed", "Ticket Type Changed", "Comment Made Private",
              "Comment Redacted", "Ticket Marked as Spam", "Custom Field Changed - Credit Card",
              "zen:event-type:ticket.custom_field_changed", "zen:event-type:ticket.form_changed",
              "zen:event-type:ticket.email_ccs_changed"):
        assert t in types, t
    create = [r for r in m.to_pylist() if r["api_kind"] == "Create"]
    assert {r["cardinality"] for r in create} == {"audit"}


def test_a_model_file_extends_and_overrides(tmp_path):
    f = tmp_path / "model.csv"
    f.write_text("api_kind,family,bus_type,cardinality\nChange:satisfaction_score,legacy,Satisfaction Changed,child\n"
                 "Change:priority,,,none\n")
    m = load_model(str(f)).to_pylist()
    assert {"api_kind": "Change:satisfaction_score", "family": "legacy", "bus_type": "Satisfaction Changed",
            "cardinality": "child"} in m
    assert [r["cardinality"] for r in m if r["api_kind"] == "Change:priority"] == ["none"]
    old = tmp_path / "kinds.csv"
    old.write_text("api_kind,bus_type\nChange:x,X Changed\n")
    assert {"api_kind": "Change:x", "family": "legacy", "bus_type": "X Changed", "cardinality": "child"} in \
        load_model(kind_map=str(old)).to_pylist()
    bad = tmp_path / "bad.csv"
    bad.write_text("api_kind,family,bus_type,cardinality\nComment,legacy,Status Changed,child\n")
    with pytest.raises(ConfigError, match="Status Changed"):
        load_model(str(bad))


def test_the_verdict_vocabulary_is_one_table():
    from reconcile import summary
    from reconcile.simulate import generate
    assert summary.VERDICTS == generate.VERDICTS == verdict_names()
    assert {"unverified", "not_emitted"} <= set(verdict_names())


# Positions are assumed to follow the audit's child order; Zendesk documents no order (PIPELINE.md §2), so a position
# decides between candidates but never rules the only one out:
# - ORDER: [Comment 601, Change:status 602], the connector numbered Status Changed 1 and Comment Created 2;
# - NEWT: a new ticket whose Comment child has a lower id than its Create children, Ticket Created at 1 (the ZIS
#   example's "Ticket Created at position 1");
# - SKIP: [status 621, priority 622, Comment 623], no Priority Changed sent (total 2, both positions linked): the
#   comment at 2 is out of the assumed order, and the priority change is not emitted -- the sequence is complete
#   without it, whatever the order;
# - NOTOTAL: a sequence without a readable total: no position is known missing, so it proves nothing complete.
ORDER = [z(601, 100, "Comment", "12:00:00", 10000), z(602, 100, "Change:status", "12:00:00", 10000)]
NEWT = [z(611, 101, "Comment", "12:10:00", 10100), z(612, 101, "Create", "12:10:00", 10100),
        z(613, 101, "Create", "12:10:00", 10100)]
SKIP = [z(621, 102, "Change:status", "12:20:00", 10200), z(622, 102, "Change:priority", "12:20:00", 10200),
        z(623, 102, "Comment", "12:20:00", 10200)]
NOTOTAL = [z(631, 103, "Comment", "12:30:00", 10300), z(632, 103, "Change:status", "12:30:00", 10300)]
OUT_OF_ORDER_BUS = [
    seq("O1", 100, "Status Changed", "12:00:00.4", 1, 2, "S100"), seq("O2", 100, "Comment Created", "12:00:00.4", 2, 2,
                                                                      "S100"),
    seq("K1", 101, "Ticket Created", "12:10:00.2", 1, 2, "S101"), seq("K2", 101, "Comment Created", "12:10:00.2", 2, 2,
                                                                      "S101"),
    seq("Q1", 102, "Status Changed", "12:20:00.1", 1, 2, "S102"), seq("Q3", 102, "Comment Created", "12:20:00.1", 2, 2,
                                                                      "S102"),
    seq("V1", 103, "Comment Created", "12:30:00.1", 1, None, "S103"),
]


def test_a_position_out_of_the_assumed_order_never_makes_a_loss(tmp_path):
    bus, sink = landed(OUT_OF_ORDER_BUS)
    e = judge(tmp_path, ORDER + NEWT + SKIP + NOTOTAL, bus, sink, [])
    try:
        got = {r[0]: r[1:] for r in table(e, "verdicts", ["source_id", "verdict", "eb_id", "match_kind"])}
        assert got == {
            "601": ("delivered", "O2", "out_of_order"), "602": ("delivered", "O1", "out_of_order"),
            "611": ("delivered", "K2", "out_of_order"), "612": ("delivered", "K1", "out_of_order"),
            "613": ("delivered", "K1", "out_of_order"),
            "621": ("delivered", "Q1", "composite"), "622": ("not_emitted", None, "unmatched"),
            "623": ("delivered", "Q3", "out_of_order"),
            "631": ("delivered", "V1", "composite"), "632": ("lost_before_bus", None, "unmatched"),
        }
        causes = dict(table(e, "verdicts", ["source_id", "cause"]))
        assert causes["622"] == "sequence S102 (2 events) is complete without it"
        assert causes["632"] == "not in any AWS store"
        assert table(e, "orphans", ["eb_id"]) == []
        assert dict(table(e, "match_stats", ["match_kind", "events"]))["out_of_order"] == 5  # expected events: the folded Create children are one
    finally:
        e.close()


def test_a_position_holding_another_kind_pairs_no_child_of_its_segment(tmp_path):
    """One update: a comment, a custom status change (a kind the model does not know) and a priority change. The
    connector sent Comment Created (1/3), lost Priority Changed (2/3) and sent Attachment Linked to Comment (3/3), an
    event no API child stands for. Paired in child order, the unknown child took the lost position (a false loss) and
    the priority change the attachment's event (a false delivery). A segment where a position holds another kind's
    event pairs nothing: the priority change is lost, the unknown kind unverified."""
    zen = [z(701, 110, "Comment", "13:00:00", 11000), z(702, 110, "Change:custom_status_id", "13:00:00", 11000),
           z(703, 110, "Change:priority", "13:00:00", 11000)]
    bus, sink = landed([seq("A1", 110, "Comment Created", "13:00:00.1", 1, 3, "S110"),
                        seq("A3", 110, "Attachment Linked to Comment", "13:00:00.1", 3, 3, "S110")])
    e = judge(tmp_path, zen, bus, sink, [])
    try:
        got = {r[0]: r[1:] for r in table(e, "verdicts", ["source_id", "verdict", "eb_id", "match_kind"])}
        assert got == {"701": ("delivered", "A1", "composite"), "702": ("unverified", None, "unmatched"),
                       "703": ("lost_before_bus", None, "unmatched")}
        assert dict(table(e, "verdicts", ["source_id", "cause"]))["703"] == "not in any AWS store"
    finally:
        e.close()


def test_a_bus_event_an_unknown_kind_takes_by_its_assumed_position_is_lost_whichever_event_it_is(tmp_path):
    """One update: a comment and a change of a field the model does not know. The connector sent Comment Created (1/2)
    and Attachment Linked to Comment (2/2), an event no API child stands for, which reached the bus and not the sink.
    Paired in child order, the unknown child takes position 2 (an unknown kind fits any type the model does not know).
    Which event it is rests on that assumed order, but the bus event is lost whichever it is: lost after the bus (not
    an orphan, not unverified, where the loss would count nowhere), its cause naming the assumption; landed, it is
    delivered."""
    zen = [z(711, 111, "Comment", "14:00:00", 11100), z(712, 111, "Change:foo_field", "14:00:00", 11100)]
    c = seq("B1", 111, "Comment Created", "14:00:00.1", 1, 2, "S111")
    a = seq("B2", 111, "Attachment Linked to Comment", "14:00:00.2", 2, 2, "S111")
    bus = [obs(x, x["event_time"], source_id="log:" + x["eb_id"]) for x in (c, a)]
    for sink, want in (([obs(c, "14:00:02", sequence_number="1", committed=True)], "lost_after_bus"),
                       ([obs(x, "14:00:02", sequence_number=n, committed=True) for n, x in (("1", c), ("2", a))],
                        "delivered")):
        e = judge(tmp_path / want, zen, bus, sink, [])
        try:
            got = {r[0]: r[1:] for r in table(e, "verdicts", ["source_id", "verdict", "eb_id", "match_kind"])}
            assert got == {"711": ("delivered", "B1", "composite"), "712": (want, "B2", "sequence")}
            if want == "lost_after_bus":
                assert dict(table(e, "verdicts", ["source_id", "cause"]))["712"] == (
                    "no sink row, no DLQ message (the event at position 2 of sequence S111, paired with this kind "
                    "the model does not know by assumed order: it may be one no API child stands for)")
                assert table(e, "orphans", ["eb_id"]) == [] and dict(table(e, "funnel", ["name", "lost"])) == {
                    "bus_to_sink": 1, "zendesk_to_bus": 0}
        finally:
            e.close()


def test_a_webhook_delivered_twice_is_one_event_under_two_ids(tmp_path):
    """A webhook's `id` is Zendesk's webhook event id (a UUID), not the API's child id, so webhook events match on
    the composite key. Webhooks can be delivered more than once (PIPELINE.md §1): two EventBridge ids with one webhook
    event id are one event, both linked to it -- one copy landed: delivered (not lost after the bus because the other
    copy was picked); both landed: duplicated, a redelivery. Neither copy is an orphan."""
    zen = [z(701, 110, "Comment", "13:00:00", 11000), z(702, 111, "Comment", "13:10:00", 11100)]
    first, second = "2b24ef10-19d4-4740-93cf-8f98ec4776c0", "3c35f021-2ae5-4851-a4d0-9fa9fd5887d1"
    bus = [webhook(eb, wid, ticket, "comment_added", t)
           for eb, wid, ticket, t in (("WA", first, 110, "13:00:00.3"), ("WB", first, 110, "13:00:00.3"),
                                      ("WC", second, 111, "13:10:00.2"), ("WD", second, 111, "13:10:00.2"))]
    logged, sunk = landed(bus)
    e = judge(tmp_path, zen, logged, [sunk[1], sunk[2], sunk[3]], [])  # WA's copy never reached the sink
    try:
        got = {r[0]: r[1:] for r in table(e, "verdicts", ["source_id", "verdict", "eb_ids", "match_kind", "cause"])}
        assert got == {"701": ("delivered", 2, "composite", None), "702": ("duplicated", 2, "composite", "redelivery")}
        assert table(e, "orphans", ["eb_id"]) == []
    finally:
        e.close()


def test_an_event_both_families_carried_is_judged_by_both_copies(tmp_path):
    """While the connector and the webhook route both ran (a migration; both families in one run, PIPELINE.md §1),
    one Zendesk event is on the bus once in each. Paired together, one copy was an orphan and the event was judged by
    whichever copy was paired: lost after the bus though its other copy landed (trust review round 5). With [match]
    both_families each family is paired on its own: the event is linked in each, delivered when one copy landed,
    duplicated ("both families") when both did, lost only when neither did (its match kind the weaker link's). Two
    comments a second apart, each carried by one family only, are still two deliveries (each family's copy nearest
    its own). Off (the default: on a day when each event took one route, pairing each family on its own could give
    one event another's copy), the copy stays an orphan, as before, counted in the report's orphan table as beside
    the other family."""
    zen = [z(21, 50, "Comment", "12:00:00", 500), z(22, 51, "Comment", "12:10:00", 510),
           z(23, 52, "Comment", "12:20:00", 520), z(24, 53, "Comment", "12:30:00", 530),
           z(25, 54, "Comment", "12:40:00", 540), z(26, 54, "Comment", "12:40:01", 541)]
    legacy_copies = [seq("L1", 50, "Comment Created", "12:00:00.2", 1, 1, "S1"),
                     seq("L2", 51, "Comment Created", "12:10:00.2", 1, 1, "S2"),
                     seq("L3", 52, "Comment Created", "12:20:00.2", 1, 1, "S3"),
                     seq("L4", 53, "Comment Created", "12:30:00.2", 1, 1, "S4"),
                     seq("L5", 54, "Comment Created", "12:40:00.2", 1, 1, "S5")]
    webhook_copies = [webhook("W1", "3c35f021-2ae5-4851-a4d0-9fa9fd588701", 50, "comment_added", "12:00:00"),
                      webhook("W2", "22", 51, "comment_added", "12:10:00"),  # the API's child id: exact
                      webhook("W3", "3c35f021-2ae5-4851-a4d0-9fa9fd588703", 52, "comment_added", "12:20:00"),
                      webhook("W4", "3c35f021-2ae5-4851-a4d0-9fa9fd588704", 53, "comment_added", "12:30:00"),
                      webhook("W6", "3c35f021-2ae5-4851-a4d0-9fa9fd588706", 54, "comment_added", "12:40:01")]
    logged, sunk = landed(legacy_copies + webhook_copies)
    labels = [e["eb_id"] for e in legacy_copies + webhook_copies]
    # 21: the webhook copy lost after the bus; 22: the exact webhook copy lost; 23: the legacy copy lost; 24: both lost
    kept = [row for label, row in zip(labels, sunk) if label not in ("W1", "W2", "L3", "L4", "W4")]
    e = judge(tmp_path, zen, logged, kept, [], both_families=True)
    try:
        got = {r[0]: r[1:] for r in table(e, "verdicts", ["source_id", "verdict", "eb_ids", "match_kind", "cause"])}
        assert got == {"21": ("delivered", 2, "composite", None), "22": ("delivered", 2, "composite", None),
                       "23": ("delivered", 2, "composite", None),
                       "24": ("lost_after_bus", 2, "composite", "no sink row, no DLQ message"),
                       "25": ("delivered", 1, "ambiguous", None), "26": ("delivered", 1, "ambiguous", None)}
        assert table(e, "orphans", ["eb_id"]) == []
    finally:
        e.close()
    # each family is paired on its own (trust review round 6): two updates in one second, the webhook ids the API's:
    # 61's connector copy never reached the bus and its webhook copy did not land (lost); 62's and 63's connector
    # sequence SY and webhooks landed. A leftover connector copy went to 61 (a comment in the same second), its loss
    # called delivered: SY is 63's update's (its one candidate each way), so its comment is 62's. And two comments 5 s
    # apart (webhook ids not the API's), both copies of 71 lost, both of 72 landed: pooled, each family's copies were
    # crossed and 71's loss delivered by 72's copies.
    # (and, 62's update one comment only, nothing anchors SY: a connector copy is taken by an event its webhook links
    # only when it is the one candidate each way, diff review 8)
    zen_s = [z(61, 60, "Comment", "12:00:00", 600), z(62, 60, "Comment", "12:00:00", 601),
             z(63, 60, "Change:status", "12:00:00", 601),
             z(65, 61, "Comment", "12:00:00", 610), z(66, 61, "Comment", "12:00:00", 611),
             z(71, 70, "Comment", "12:00:00", 700), z(72, 70, "Comment", "12:00:05", 701)]
    made = [webhook("WX", "61", 60, "comment_added", "12:00:00"), webhook("WY", "62", 60, "comment_added", "12:00:00"),
            webhook("WYS", "63", 60, "status_changed", "12:00:00"),
            seq("LY1", 60, "Comment Created", "12:00:00.2", 1, 2, "SY"),
            seq("LY2", 60, "Status Changed", "12:00:00.3", 2, 2, "SY"),
            webhook("VX", "3c35f021-2ae5-4851-a4d0-9fa9fd588771", 70, "comment_added", "12:00:00"),
            seq("KX", 70, "Comment Created", "12:00:00.2", 1, 1, "SX"),
            webhook("VY", "3c35f021-2ae5-4851-a4d0-9fa9fd588772", 70, "comment_added", "12:00:05"),
            seq("KY", 70, "Comment Created", "12:00:05.2", 1, 1, "SZ"),
            webhook("UX", "65", 61, "comment_added", "12:00:00"), webhook("UY", "66", 61, "comment_added", "12:00:00"),
            seq("JY", 61, "Comment Created", "12:00:00.2", 1, 1, "SJ")]
    made_logged, made_sunk = landed(made)
    e = judge(tmp_path / "same second", zen_s, made_logged,
              [row for ev, row in zip(made, made_sunk) if ev["eb_id"] not in ("WX", "VX", "KX", "UX")], [],
              both_families=True)
    try:
        assert table(e, "verdicts", ["source_id", "verdict", "eb_ids"]) == [
            ("61", "lost_after_bus", 1), ("62", "duplicated", 2), ("63", "duplicated", 2),
            ("65", "lost_after_bus", 1), ("66", "delivered", 1),
            ("71", "lost_after_bus", 2), ("72", "duplicated", 2)]
    finally:
        e.close()
    e = judge(tmp_path / "both", zen[:1], *landed(legacy_copies[:1] + webhook_copies[:1]), [], both_families=True)
    try:
        assert table(e, "verdicts", ["source_id", "verdict", "cause"]) == [("21", "duplicated", "both families")]
        assert table(e, "duplicates", ["cause", "events", "extra_copies"]) == [("both families", 1, 1)]
    finally:
        e.close()
    e = judge(tmp_path / "off", zen, logged, kept, [])
    try:
        assert len(table(e, "orphans", ["eb_id"])) == 4  # one copy of each of 21..24
        # ...which the report's orphan table shows beside the other family's links, naming the setting
        assert sum(n for (n,) in table(e, "orphan_causes", ["beside_other_family"])) == 4
        assert table(e, "verdicts", ["source_id", "eb_ids"]) == [(s, 1) for s in ("21", "22", "23", "24", "25", "26")]
    finally:
        e.close()


def test_unlogged_and_lost_after_the_bus_count_a_folded_event_once(tmp_path):
    """Two new tickets of three Create children each (one Ticket Created apiece). Ticket 90's bus event reached the sink
    but not the bus log (unlogged at the bus); ticket 91's reached the bus log and never the sink (lost after the bus,
    what InvocationsFailedToBeSentToDlq counts). Each is one event, not three."""
    zd = [z(901 + i, 90, "Create", "08:00:00", 9000) for i in range(3)] + \
         [z(911 + i, 91, "Create", "09:00:00", 9100) for i in range(3)]
    n90 = legacy("N90", 90, "Ticket Created", "08:00:00.2", 1)
    n91 = legacy("N91", 91, "Ticket Created", "09:00:00.2", 1)
    e = judge(tmp_path, zd, [obs(n91, n91["event_time"])], [obs(n90, "08:00:02", sequence_number="1", committed=True)],
              [])
    try:
        assert sum(n for _, _, n in table(e, "unlogged_causes", ["verdict", "reason", "events"])) == 1
        assert e.count("verdicts", "unlogged_at_bus") == 3  # the rows: every child of the folded event
        lost = {m: v for m, v in table(e, "metrics_check", ["metric", "per_event_value"])}
        assert lost["InvocationsFailedToBeSentToDlq"] == 1
    finally:
        e.close()


def test_events_of_two_tickets_at_one_sequence_position_are_two_events(tmp_path):
    """One update (a merge) makes events on two tickets under one connector sequence id, each numbered from 1 on its
    ticket; or two events of one position differ in type. A resent event has the same ticket and type as its first
    copy: these are two events, both delivered, not one resent and the other lost before the bus."""
    zen = [z(21, 600, "Comment", "10:00:00", 60), z(22, 601, "Comment", "10:00:00", 61),
           z(31, 700, "Change:status", "11:00:00", 70), z(32, 701, "Comment", "11:00:00", 71)]
    bus, sink = landed([seq("C1", 600, "Comment Created", "10:00:00.1", 1, 1, "SM"),
                        seq("C2", 601, "Comment Created", "10:00:00.1", 1, 1, "SM"),
                        seq("D1", 700, "Status Changed", "11:00:00.1", 1, 1, "SX"),
                        seq("D2", 701, "Comment Created", "11:00:00.2", 1, 1, "SX")])
    e = judge(tmp_path, zen, bus, sink, [])
    try:
        assert dict(table(e, "verdicts", ["source_id", "verdict"])) == {
            "21": "delivered", "22": "delivered", "31": "delivered", "32": "delivered"}
        assert table(e, "orphans", ["eb_id"]) == []
    finally:
        e.close()


def test_an_update_whose_every_sequence_position_reached_the_bus_lost_nothing_before_it(tmp_path):
    """A new ticket by email: a Comment, the Create children and a trigger's group change in one audit. The connector
    numbered three events, all in the log and the sink: Ticket Created, Comment Created and Attachment Linked to
    Comment (no API child stands for it, PIPELINE.md §2) -- no Group Assignment Changed. Every event it made for the
    update reached the bus, so the group change, which no position fits, is not emitted, not lost before the bus.
    Likewise a ZIS Ticket Created at 1 of 9 whose other positions are all held. One position missing from every store
    and the child is lost again (the sequence rule's evidence)."""
    zen = [z(1, 500, "Comment", "08:00:00", 50), z(2, 500, "Create", "08:00:00", 50),
           z(3, 500, "Create", "08:00:00", 50), z(4, 500, "Change:group_id", "08:00:00", 50),
           z(11, 510, "Create", "09:00:00", 51), z(13, 510, "Comment", "09:00:00", 51),
           z(14, 510, "Change:status", "09:00:00", 51)]
    update = [seq("A1", 500, "Ticket Created", "08:00:00.2", 1, 3, "S1"),
              seq("A2", 500, "Comment Created", "08:00:00.2", 2, 3, "S1"),
              seq("A3", 500, "Attachment Linked to Comment", "08:00:00.3", 3, 3, "S1")]
    zis = [seq("B1", 510, "Ticket Created", "09:00:00.1", 1, 9, "S9"),
           seq("B2", 510, "Comment Created", "09:00:00.1", 2, 9, "S9")]
    zis += [seq(f"B{p}", 510, "Attachment Linked to Comment", "09:00:00.1", p, 9, "S9") for p in range(3, 10)]
    for name, events, want in (("all held", update + zis, "not_emitted"), ("one missing", update[:2] + zis[:-1],
                                                                            "lost_before_bus")):
        bus, sink = landed(events)
        e = judge(tmp_path / name, zen, bus, sink, [])
        try:
            got = dict(table(e, "verdicts", ["source_id", "verdict"]))
            assert (got["4"], got["14"]) == (want, want), name
            assert {got[s] for s in ("1", "2", "11", "13")} == {"delivered"}
        finally:
            e.close()


def test_an_update_none_of_whose_events_links_is_judged_by_its_own_complete_sequence(tmp_path):
    """A merge (a private Comment and status closed: Zendesk's children), a soft delete (status deleted) and spam: the
    connector made one event each (Ticket Merged, Ticket Soft Deleted, Ticket Marked as Spam, 1 of 1), all in the
    log and the sink. No child links to them, so no sequence was the audit's and every child was `lost_before_bus`
    ("not in any AWS store"), though every event the connector made for the update reached the bus (the rule a
    single linked child already brings into play). The update's one unclaimed sequence on its ticket and second is
    its own: complete, its children not emitted. Not when two unlinked updates are as near it (which one's is unknown:
    a lost update beside a merge keeps its loss), nor when a position is missing from every store. The events of a
    sequence so aligned stay orphans, marked a listed update's (`lone_update`: unmarked, a merge made the Zendesk
    listing's shortfall rule hold off, trust review round 4). An update in the same second whose events link to a
    sequence of their own is no claimant (one update, one sequence): a priority change beside a soft delete left the
    deletion's status change lost before the bus (trust review round 5). Not when that link is a guess (ambiguous:
    a comment beside a merge's private comment), which lent a merge another update's sequence and that update's
    loss the merge's complete one (trust review round 6), nor when its links carry two sequences."""
    merge = [z(21, 502, "Comment", "10:00:00", 52), z(22, 502, "Change:status", "10:00:00", 52)]
    delete = [z(31, 503, "Change:status", "11:00:00", 53)]
    spam = [z(41, 504, "Change:status", "12:00:00", 54)]
    events = [seq("MG", 502, "Ticket Merged", "10:00:00.4", 1, 1, "SM"),
              seq("SD", 503, "Ticket Soft Deleted", "11:00:00.4", 1, 1, "SD"),
              seq("SP", 504, "Ticket Marked as Spam", "12:00:00.4", 1, 1, "SP")]
    lost_too = [z(23, 502, "Comment", "10:00:01", 55)]  # another update of the merged ticket, a second later, lost
    # a lost comment beside an update of Notification children only, whose connector sequence (a type no child
    # stands for) is the one unclaimed: every audit of the ticket counts as a claimant, whatever its events
    beside = [z(61, 506, "Comment", "10:00:00", 66), z(62, 506, "Notification", "10:00:04", 67)]
    other = [seq("OB", 506, "Ticket Merged", "10:00:04.2", 1, 1, "SO")]
    two_missing = [seq("SD", 503, "Ticket Soft Deleted", "11:00:00.4", 1, 2, "SD")]  # position 2 in no store
    # a priority change linked on its own (composite), and a comment linked beside the merge's private comment
    # (ambiguous: both are Comment candidates of its Comment Created, a guess), each in the deletion's or merge's
    # second
    linked_beside = [z(71, 503, "Change:priority", "11:00:00", 72), z(19, 502, "Comment", "10:00:00", 74)]
    own = [seq("PC", 503, "Priority Changed", "11:00:00.2", 1, 1, "SPC"),
           seq("CC", 502, "Comment Created", "10:00:00.2", 1, 1, "SCC")]
    # ...nor one linked by its webhook alone (a webhook carries a sequence of its own): its connector copy, an orphan
    # with the option off, is no unclaimed sequence a lost comment beside it can take (diff review 8)
    lost_comment = [z(1, 507, "Comment", "10:00:00", 75), z(8, 507, "Change:priority", "10:00:00", 76)]
    routes = [webhook("WP", "8", 507, "priority_changed", "10:00:00", sequence_id="WS", sequence_position=1,
                      sequence_total=1),
              seq("PC", 507, "Priority Changed", "10:00:00.2", 1, 1, "SP")]
    # ...but not one whose links carry two sequences (which is its own is unknown): the merge keeps its loss
    split = [z(17, 502, "Comment", "10:00:00", 85), z(18, 502, "Change:priority", "10:00:00", 85)]
    two_seqs = [seq("CC", 502, "Comment Created", "10:00:00.2", 1, 1, "SCC"),
                seq("PP", 502, "Priority Changed", "10:00:00.3", 1, 1, "SPP")]
    for name, zen, evs, want, orphans in (
            ("one each", merge + delete + spam, events, {s: "not_emitted" for s in ("21", "22", "31", "41")},
             [("MG", True), ("SD", True), ("SP", True)]),
            ("two updates near", merge + lost_too, events[:1], {s: "lost_before_bus" for s in ("21", "22", "23")},
             [("MG", False)]),
            ("a position missing", delete, two_missing, {"31": "lost_before_bus"}, [("SD", True)]),
            ("another update's", beside, other, {"61": "lost_before_bus", "62": "excluded"}, [("OB", False)]),
            ("linked beside", merge + delete + linked_beside, events[:2] + own,
             {"21": "lost_before_bus", "22": "lost_before_bus", "31": "not_emitted", "71": "delivered",
              "19": "delivered"},
             [("MG", False), ("SD", True)]),
            ("webhook beside", lost_comment, routes, {"1": "lost_before_bus", "8": "delivered"}, [("PC", False)]),
            ("linked to two", merge + split, events[:1] + two_seqs,
             {"21": "lost_before_bus", "22": "lost_before_bus", "17": "delivered", "18": "delivered"},
             [("MG", False)])):
        bus, sink = landed(evs)
        e = judge(tmp_path / name, zen, bus, sink, [])
        try:
            assert dict(table(e, "verdicts", ["source_id", "verdict"])) == want, name
            assert table(e, "orphans", ["eb_id", "lone_update"]) == orphans, name
            # the report's orphan table shows them apart ("A listed update's")
            assert sum(n for (n,) in table(e, "orphan_causes", ["listed_update"])) == sum(o[1] for o in orphans), name
        finally:
            e.close()


def test_calibrate_writes_every_line_of_the_kinds_it_names(tmp_path):
    """A [match] emission_model file replaces every line of each kind it names, and `calibrate --write` wrote only
    the missing lines: following its advice for a kind the model lists dropped the kind's other lines (a webhook
    type added for Change:status removed its legacy line: delivered events became not_emitted or lost) and wrote a
    `Create` line as `child` (one bus event per child, where the model folds them into one). The file holds each
    named kind's lines whole, each line the kind's cardinality; a `none` line says how many of the kind's events were
    judged lost."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reconcile.calibrate import calibrate
    from tinyday import produce_report
    produce_report(tmp_path)
    kind_map = tmp_path / "evidence" / "kind_map.parquet"
    model = pq.read_table(kind_map)
    # the run was judged by a model without the legacy Status Changed and the webhook ticket.created lines
    gone = pc.is_in(model["bus_type"], pa.array(["Status Changed", "zen:event-type:ticket.created"]))
    pq.write_table(model.filter(pc.invert(gone)), kind_map)
    c = calibrate([tmp_path])
    written = tmp_path / "m.csv"
    written.write_text(c.model_csv())
    lines = written.read_text().splitlines()
    assert {"Change:status,legacy,Status Changed,child",
            "Change:status,webhook,zen:event-type:ticket.status_changed,child",
            "Create,webhook,zen:event-type:ticket.created,audit", "Create,legacy,Ticket Created,audit"} <= set(lines)
    extended = load_model(str(written))
    shipped = load_model()
    def lines_of(model, kind):
        return sorted(tuple(r.values()) for r in model.filter(pc.equal(model["api_kind"], kind)).to_pylist())
    for kind in ("Change:status", "Create"):  # the file gives back the kinds' lines the run's model lacked
        assert lines_of(extended, kind) == lines_of(shipped, kind)


def test_a_never_emitted_suggestion_says_how_many_of_the_kinds_events_were_judged_lost(tmp_path):
    """A `none` line turns the kind's losses into not_emitted: its reason said only how many complete sequences the
    kind was absent from."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reconcile.calibrate import calibrate
    from tinyday import produce_report
    produce_report(tmp_path)
    path = tmp_path / "verdicts.parquet"
    t = pq.read_table(path)
    # two events of a kind never on the bus (6 and 8, lost before the bus): one absent from a complete sequence
    odd = pc.is_in(t["source_id"], pa.array(["6", "8"]))
    for name, value in (("kind", "Change:custom_x"), ("model_kind", "Change:custom_x"), ("emission", "child")):
        t = t.set_column(t.schema.get_field_index(name), name, pc.if_else(odd, value, t[name]))
    six = pc.equal(t["source_id"], "6")
    t = t.set_column(t.schema.get_field_index("verdict"), "verdict", pc.if_else(six, "not_emitted", t["verdict"]))
    t = t.set_column(t.schema.get_field_index("sequence_complete"), "sequence_complete",
                     pc.if_else(six, True, t["sequence_complete"]))
    pq.write_table(t, path)
    (line,) = [s for s in calibrate([tmp_path]).suggest if s["api_kind"] == "Change:custom_x"]
    assert line["cardinality"] == "none" and line["why"] == (
        "absent from 1 complete sequence(s), never on the bus, and 1 of its events were judged lost, which this line "
        "would call not_emitted")


def test_calibrate_from_the_state_leaves_out_a_run_whose_folder_is_gone(tmp_path, caplog):
    """One of the state's runs cleaned up (a demo, a temporary --out) made calibrate over all the others fail with
    exit 4; trace leaves such a run out. So does calibrate now, naming it; a folder given with --run stays an
    error."""
    import shutil

    from click.testing import CliRunner

    from reconcile.cli import main
    from reconcile.state import State
    from tinyday import day1, day2
    with State.open(tmp_path / "state.duckdb") as st:
        day1(tmp_path, st)
        day2(tmp_path, st)
    shutil.rmtree(tmp_path / "day1")
    out = CliRunner().invoke(main, ["calibrate", "--state", str(tmp_path / "state.duckdb")])
    assert out.exit_code == 0, out.output
    assert "calibrated over 1 run(s)" in out.stdout
    assert any("not calibrated from" in r.getMessage() and "day1" in r.getMessage() for r in caplog.records)
    gone = CliRunner().invoke(main, ["calibrate", "--run", str(tmp_path / "day1")])
    assert gone.exit_code == 4 and "holds no verdicts.parquet" in gone.output
