"""Hop A on the vendors' own examples, not on our simulator: the Events Connector's documented Agent Assignment Changed
event (PIPELINE.md §1), a new ticket's audit with one Create child per property set (ticket audit events reference)
carried by one Ticket Created, a custom field change by numeric field id (ZIS ticket events: custom_field {id, title,
field_type}) and the documented webhook ticket.created event. The API side is served by the Zendesk-compatible server
and read by the real source; bus JSON goes through the real parser. Every verdict is given exactly."""

from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pytest

from reconcile import engine as eng
from reconcile import ledger
from reconcile.config import ZendeskConfig
from reconcile.emission import load_model
from reconcile.simulate import zendesk_server as zs
from reconcile.sources import events, zendesk
from reconcile.state import CARRIED_SCHEMA
from reconcile.window import Window

ENV = {"ZENDESK_EMAIL": "admin@example.com", "ZENDESK_API_TOKEN": "example-token"}

# PIPELINE.md §1, verbatim (https://developer.zendesk.com/api-reference/amazon-eventbridge/tickets/)
ASSIGNMENT = {
    "version": "0", "id": "ecd26460-0ca3-433b-b908-d891a0aa6fb4",
    "detail-type": "Support Ticket: Agent Assignment Changed",
    "source": "aws.partner/zendesk.com/9242270/default", "account": "123456789012", "time": "2019-05-25T01:23:48Z",
    "region": "us-east-1", "resources": ["Support Ticket"],
    "detail": {"ticket_event": {
        "meta": {"version": "1.0", "occurred_at": "2019-05-25T01:23:45.465719851Z", "ref": "1-1234567890",
                 "sequence": {"id": "CE4A698AF24F35B3208649C6951E000E", "position": 1, "total": 1},
                 "actor_id": 20978392},
        "type": "Agent Assignment Changed", "previous": 235323, "current": 235324,
        "ticket": {"id": 35436, "updated_at": "2019-05-25T01:23:45.789534301Z", "status": "open"}}}}


def legacy(eb, ticket, typ, occurred, seq, pos, total, **extra):
    """A connector event shaped like the documented one."""
    return {"version": "0", "id": eb, "detail-type": f"Support Ticket: {typ}",
            "source": "aws.partner/zendesk.com/9242270/default", "account": "123456789012", "time": occurred[:19] + "Z",
            "region": "us-east-1", "resources": ["Support Ticket"],
            "detail": {"ticket_event": {"meta": {"version": "1.0", "occurred_at": occurred, "ref": "1-1234567890",
                                                 "sequence": {"id": seq, "position": pos, "total": total},
                                                 "actor_id": 20978392},
                                        "type": typ, **extra, "ticket": {"id": ticket, "status": "open"}}}}


# A new ticket (ticket audit events reference: "A separate event is created for each property set"): five Create
# children, a Comment and a Notification; the connector emits Ticket Created (1/2) and Comment Created (2/2).
NEW_TICKET = [
    legacy("1f0e4c1a-7d55-4f4a-9a51-1c6f0b8d0a01", 35437, "Ticket Created", "2019-05-25T02:00:00.120000000Z",
           "0D1E2F3A4B5C6D7E8F90A1B2C3D4E5F6", 1, 2),
    legacy("1f0e4c1a-7d55-4f4a-9a51-1c6f0b8d0a02", 35437, "Comment Created", "2019-05-25T02:00:00.130000000Z",
           "0D1E2F3A4B5C6D7E8F90A1B2C3D4E5F6", 2, 2, comment={"is_public": True}),
]
# A custom field by numeric id: ZIS ticket events' "Custom Field Changed" with its custom_field object.
CUSTOM = legacy("2a7c0b55-3e0f-4c6e-8a4e-5b9f1d2e3c04", 35438, "Custom Field Changed",
                "2019-05-25T03:00:00.200000000Z", "11AA22BB33CC44DD55EE66FF77889900", 1, 1,
                custom_field={"id": 1000, "title": "VIP", "field_type": "checkbox"}, previous=False, current=True)

AUDITS = [
    # the assignment change behind the documented event (PIPELINE.md §2 audit shape)
    {"id": 999001, "ticket_id": 35436, "timestamp": 1558747425, "updater_id": 20978392, "child_events": [
        {"id": 99101, "event_type": "Change", "field_name": "assignee_id", "value": "235324",
         "previous_value": "235323"}]},
    {"id": 999002, "ticket_id": 35437, "timestamp": 1558749600, "updater_id": 20978392, "child_events": [
        {"id": 99201, "event_type": "Create", "field_name": "status", "value": "new"},
        {"id": 99202, "event_type": "Create", "field_name": "priority", "value": "normal"},
        {"id": 99203, "event_type": "Create", "field_name": "subject", "value": "Printer on fire"},
        {"id": 99204, "event_type": "Create", "field_name": "requester_id", "value": "20978392"},
        {"id": 99205, "event_type": "Create", "field_name": "tags", "value": "printer"},
        {"id": 99206, "event_type": "Comment"},
        {"id": 99207, "event_type": "Notification"}]},
    {"id": 999003, "ticket_id": 35438, "timestamp": 1558753200, "updater_id": 20978392, "child_events": [
        {"id": 99301, "event_type": "Change", "field_name": "1000", "value": "true", "previous_value": "false"}]},
    # an update whose connector event never reached any store: lost before the bus
    {"id": 999004, "ticket_id": 35439, "timestamp": 1558756800, "updater_id": 20978392, "child_events": [
        {"id": 99401, "event_type": "Change", "field_name": "status", "value": "solved", "previous_value": "open"}]},
]

DAY = datetime(2019, 5, 25, tzinfo=timezone.utc)
AS_OF = DAY + timedelta(days=1, hours=2)


def parse(docs: list[dict], hop: str, **extra) -> pa.Table:
    raw = pa.array([orjson.dumps(d).decode() for d in docs], pa.string())
    refs = pa.array([f"{hop}#{i}" for i in range(len(docs))], pa.string())
    n = len(docs)
    cols = {"observed_at": pa.array([d["time"] for d in docs], pa.string())}
    cols |= {k: pa.array([v] * n) for k, v in extra.items()}
    table, rejects = events.parse(raw, refs, hop=hop, source=hop, extra=cols)
    assert rejects.num_rows == 0
    return table


def judge(tmp, audits: list[dict], docs: list[dict], edge: timedelta = timedelta(seconds=10)) -> eng.Engine:
    """Serve `audits` over the Zendesk-compatible server, read them with the real source (audits up to `edge` outside
    the window too, as a run does with [match] tolerance_seconds), parse `docs` as the bus log and the sink, judge."""
    with zs.start(zs.audits_table(audits), now=AS_OF, per_page=1000) as h:
        api = zendesk.read(ZendeskConfig(url=h.url, requests_per_minute=6000, max_wait="10s"),
                           Window(start=DAY, end=DAY + timedelta(days=1), as_of=AS_OF), tmp / "pages", now=AS_OF,
                           progress=False, environ=ENV, edge=edge)
    e = eng.Engine.open()
    e.bind_table("zendesk", api.ledger)
    e.bind_table("bus", parse(docs, "bus"))
    sink = parse(docs, "sink", committed=True)
    e.bind_table("sink", sink.set_column(sink.schema.get_field_index("sequence_number"), "sequence_number",
                                         pa.array([str(i) for i in range(sink.num_rows)])))
    e.bind_table("dlq", ledger.empty())
    e.bind_table("metrics", ledger.METRIC_SCHEMA.empty_table())
    e.bind_table("emission_model", load_model())
    e.bind_table("excluded_kinds", pa.table({"kind": pa.array([], pa.string())}))
    e.bind_table("carried", CARRIED_SCHEMA.empty_table())
    e.run_all(dict(window_start=DAY, window_end=DAY + timedelta(days=1), as_of=AS_OF, horizon=timedelta(hours=3),
                   hop_a_grace=timedelta(minutes=5), tolerance_s=edge.total_seconds(), both_families=False,
                   kinesis_target=":kinesis:",
                   bucket_s=3600, unsettled_zendesk_to_bus=None, unsettled_bus_to_sink=None, dlq_reach=None,
                   dlq_in_part=None, bus_log_covered=None, unexpired_files=[], sink_read_start=DAY,
                   bus_read_start=DAY - timedelta(hours=1),
                   outside_log="expired", stream_retention=timedelta(0)))
    return e


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    e = judge(tmp_path_factory.mktemp("vendor"), AUDITS, [ASSIGNMENT, *NEW_TICKET, CUSTOM])
    yield e
    e.close()


def test_every_documented_child_gets_its_verdict(judged):
    rows = judged.con.sql("SELECT source_id, verdict, eb_id::VARCHAR, expected_id, match_kind FROM verdicts "
                          "ORDER BY source_id").fetchall()
    created = ("delivered", "1f0e4c1a-7d55-4f4a-9a51-1c6f0b8d0a01", "99201", "composite")
    assert rows == [
        ("99101", "delivered", "ecd26460-0ca3-433b-b908-d891a0aa6fb4", "99101", "composite"),
        ("99201", *created), ("99202", *created), ("99203", *created), ("99204", *created), ("99205", *created),
        ("99206", "delivered", "1f0e4c1a-7d55-4f4a-9a51-1c6f0b8d0a02", "99206", "composite"),
        ("99207", "not_emitted", None, "99207", "unmatched"),
        ("99301", "delivered", "2a7c0b55-3e0f-4c6e-8a4e-5b9f1d2e3c04", "99301", "composite"),
        ("99401", "lost_before_bus", None, "99401", "unmatched"),
    ]
    assert judged.con.sql("SELECT count(*) FROM orphans").fetchall() == [(0,)]
    # the hop's figures count expected bus events: the new ticket's five Create children are one
    assert judged.con.sql("SELECT name, \"in\", \"out\", lost FROM funnel ORDER BY ord").fetchall() == [
        ("zendesk_to_bus", 5, 4, 1), ("bus_to_sink", 4, 4, 0)]


def test_the_documented_sequence_reaches_the_ledger(judged):
    assert judged.con.sql("SELECT sequence_id, sequence_position, sequence_total FROM bus_events WHERE eb_id = "
                          "'ecd26460-0ca3-433b-b908-d891a0aa6fb4'").fetchall() == [
        ("CE4A698AF24F35B3208649C6951E000E", 1, 1)]


# An update one second before the window whose connector event's occurred_at (fractional seconds) lies inside it:
# "in window" is decided by the Zendesk event time, so it is neither judged nor an orphan (docs/design.md).
EDGE_AUDIT = {"id": 999005, "ticket_id": 35440, "timestamp": 1558742399, "updater_id": 20978392, "child_events": [
    {"id": 99501, "event_type": "Change", "field_name": "status", "value": "open", "previous_value": "new"}]}
EDGE_EVENT = legacy("3b8d1c66-4f10-4d7f-9b5f-6ca02e3f4d05", 35440, "Status Changed", "2019-05-25T00:00:00.400000000Z",
                    "22BB33CC44DD55EE66FF778899AA0011", 1, 1, previous="new", current="open")


@pytest.mark.parametrize("edge_s,orphans", [(10, 0), (0, 1)])
def test_an_audit_just_before_the_window_explains_its_bus_event(tmp_path, edge_s, orphans):
    e = judge(tmp_path, [EDGE_AUDIT], [EDGE_EVENT], edge=timedelta(seconds=edge_s))
    try:
        assert e.con.sql("SELECT count(*) FROM verdicts").fetchall() == [(0,)]  # its audit is outside the window
        # read with the tolerance, the audit explains the bus event; without it, nothing does: an orphan
        assert e.con.sql("SELECT count(*) FROM orphans").fetchall() == [(orphans,)]
    finally:
        e.close()
