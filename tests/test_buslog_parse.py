"""The bus log parse keeps every record where it came from: each ledger row carries its own line's ref, store
columns and export timestamp, and every line the parser cannot take whole is a reject naming its line, reason and
kind -- also when such lines sit between good ones (rows kept and dropped in the middle of an object), and for the
lines a shortcut reading fixed positions would misread: keys in another order, escaped characters, ids that are not
UUIDs, another producer's event, a damaged line."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pyarrow as pa
import pytest

from reconcile import ledger
from reconcile.config import AwsConfig, BusLogConfig, MatchConfig
from reconcile.sources import buslog, events

from busevents import NOW, WINDOW, iso, legacy, webhook


def uid(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-00000000000{i % 10}"


def stamp(i: int) -> str:
    return iso(NOW + timedelta(seconds=i))[:-4] + "Z"  # CloudWatch's millisecond export timestamp


def reordered(eb_id: str) -> str:
    """A legacy event with the envelope's keys in another order than EventBridge writes them (detail first)."""
    event = json.loads(legacy(eb_id, ticket=4242))
    return json.dumps({k: event[k] for k in reversed(list(event))})


def escaped(eb_id: str) -> str:
    """A webhook event whose id, source and detail-type are written with JSON escapes."""
    text = webhook(eb_id, zid="905", ticket=9)
    text = text.replace(f'"id": "{eb_id}"', '"id": "' + "".join(f"\\u{ord(c):04x}" for c in eb_id) + '"', 1)
    return text.replace('"zendesk.webhook"', '"zendesk\\/webhook \\"quoted\\""').replace(
        '"ticket.created"', '"ticket\\u002ecreated\\n"', 1)


LINES = [
    (uid(1), legacy(uid(1), ticket=11)),
    (uid(2), reordered(uid(2))),
    (uid(3), escaped(uid(3))),
    (None, legacy(uid(4), ticket=13).replace(uid(4), "not-a-uuid")),  # busevents would make a label a UUID
    (None, json.dumps({"version": "0", "id": uid(5), "detail-type": "Scheduled Event", "source": "aws.events",
                       "detail": {}})),
    (None, legacy(uid(6))[:-7]),  # damaged: cut short
    (uid(7), webhook(uid(7), zid="907", ticket=17)),
    (uid(8), legacy(uid(8), ticket=18, **{"replay-name": "nightly-replay"})),
]


def test_mixed_lines_keep_their_refs_and_every_reject(tmp_path):
    body = "".join(f"{stamp(i)} {text}\n" for i, (_, text) in enumerate(LINES, 1))
    body += "no-timestamp-here\n"
    obj = tmp_path / "exports" / "task" / "stream" / "000000.gz"
    obj.parent.mkdir(parents=True)
    obj.write_bytes(gzip.compress(body.encode()))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "exports"), format="cwl-export"), WINDOW, AwsConfig(),
                      match=MatchConfig())
    key = str(obj)
    rows = [dict(r, eb_id=str(r["eb_id"])) for r in res.ledger.to_pylist()]  # the ledger keeps ids as UUIDs
    good = [(i, eb) for i, (eb, _) in enumerate(LINES, 1) if eb]
    assert [r["eb_id"] for r in rows] == [eb for _, eb in good]  # in line order
    for r, (i, eb) in zip(rows, good):
        assert r["source_ref"] == r["source_id"] == f"{key}:{i}", eb
        assert iso(r["observed_at"])[:-4] + "Z" == stamp(i)
    by_id = {r["eb_id"]: r for r in rows}
    assert by_id[uid(1)]["ticket_id"] == 11 and by_id[uid(1)]["family"] == "legacy"
    assert by_id[uid(2)]["ticket_id"] == 4242 and by_id[uid(2)]["sequence_total"] == 2
    assert by_id[uid(3)]["family"] == "webhook" and by_id[uid(3)]["zendesk_key"] == "905"
    assert by_id[uid(3)]["ticket_id"] == 9
    assert by_id[uid(7)]["zendesk_key"] == "907" and by_id[uid(7)]["ticket_id"] == 17
    assert by_id[uid(8)]["replay_name"] == "nightly-replay" and by_id[uid(1)]["replay_name"] is None
    rej = res.rejects.to_pylist()
    assert [r["source_ref"] for r in rej] == [f"{key}:{i}" for i in (4, 5, 6, 9)]
    assert rej[0]["reason"] == ('EventBridge id "not-a-uuid" is not a UUID (8-4-4-4-12 hex digits, as every '
                                'EventBridge id is)')
    assert rej[1]["reason"].startswith('not a Zendesk event: source "aws.events"') and rej[1]["kind"] == "not_zendesk"
    assert rej[2]["reason"] == "not JSON" and rej[2]["raw"].endswith(LINES[5][1])
    assert rej[3]["reason"].startswith("not a CloudWatch export line")
    assert [r["kind"] for r in rej] == ["unparseable", "not_zendesk", "unparseable", "unparseable"]
    assert res.records == 5 and res.rejected == 4


def test_pass_through_columns_follow_their_rows_when_rows_between_are_rejected():
    raw = pa.array(["not json", legacy(uid(1)), json.dumps({"detail": {}}), webhook(uid(2)), "{"], pa.string())
    refs = pa.chunked_array([pa.array([f"m#{i}" for i in range(3)]), pa.array([f"m#{i}" for i in range(3, 5)])])
    extra = {"source_id": pa.array([f"msg-{i}" for i in range(5)]),
             "retry_attempts": pa.array(range(10, 15), pa.int32()),
             "committed": pa.array([False, True, False, True, False]),
             "observed_at": pa.array([f"2026-11-23T10:00:0{i}Z" for i in range(5)])}
    led, rej = events.parse(raw, refs, hop="dlq", source="dlq", extra=extra)
    assert [str(u) for u in led["eb_id"].to_pylist()] == [uid(1), uid(2)]
    assert led["source_ref"].to_pylist() == ["m#1", "m#3"]
    assert led["source_id"].to_pylist() == ["msg-1", "msg-3"]
    assert led["retry_attempts"].to_pylist() == [11, 13] and led["committed"].to_pylist() == [True, True]
    assert [t.second for t in led["observed_at"].to_pylist()] == [1, 3]
    assert rej["source_ref"].to_pylist() == ["m#0", "m#2", "m#4"]
    assert rej["reason"].to_pylist() == ["not JSON", "event has no id", "not JSON"]


def test_times_no_millisecond_timestamp_holds_are_rejected_not_fatal(tmp_path):
    """DuckDB reads "infinity" (and "-infinity") as times; the ledger's millisecond timestamps cannot hold them.
    Such an event time or export timestamp is a reject with its reason, and the object's other lines are kept
    (it used to fail the whole source as the ledger was conformed)."""
    good = legacy(uid(1), ticket=11)
    at_infinity = webhook(uid(2)).replace(f'"time": "{iso(NOW)}"', '"time": "infinity"')
    assert at_infinity != webhook(uid(2))
    body = (f"{stamp(1)} {good}\n{stamp(2)} {at_infinity}\ninfinity {legacy(uid(3))}\n"
            f"{stamp(4)} {legacy(uid(4))}\n")
    obj = tmp_path / "exports" / "task" / "stream" / "000000.gz"
    obj.parent.mkdir(parents=True)
    obj.write_bytes(gzip.compress(body.encode()))
    res = buslog.read(BusLogConfig(uri=str(tmp_path / "exports"), format="cwl-export"), WINDOW, AwsConfig(),
                      match=MatchConfig())
    assert res.complete
    assert [str(u) for u in res.ledger["eb_id"].to_pylist()] == [uid(1), uid(4)]
    assert [iso(t)[:-4] + "Z" for t in res.ledger["observed_at"].to_pylist()] == [stamp(1), stamp(4)]
    rej = res.rejects.to_pylist()
    assert [r["source_ref"] for r in rej] == [f"{obj}:2", f"{obj}:3"]
    assert rej[0]["reason"] == 'bad event time "infinity" at detail.time (not an ISO-8601 date and time)'
    assert rej[1]["reason"].startswith("not a CloudWatch export line")
    # a store's own timestamp given as text, the same way
    led, rej = events.parse(pa.array([good, good]), pa.array(["m#0", "m#1"]), hop="dlq", source="dlq",
                            extra={"observed_at": pa.array(["-infinity", iso(NOW)])})
    assert led["source_ref"].to_pylist() == ["m#1"]
    assert rej["reason"].to_pylist() == ['bad timestamp "-infinity" where the store records when it saw the event']


# Times as Zendesk and AWS write them (PIPELINE.md: the legacy connector's nanoseconds, EventBridge's seconds), and
# ISO-8601's other forms of a date and time, with the milliseconds since the epoch each is.
TIMES_TAKEN = {
    "2019-05-25T01:23:45.465719851Z": 1558747425465,
    "2019-05-25T01:23:48Z": 1558747428000,
    "2026-07-04T05:33:18.999+02:00": 1783135998999,
    "2026-07-04T05:33:18.5-0330": 1783155798500,
    "2026-07-04 05:33:18": 1783143198000,  # no offset: UTC
    "2026-07-04T05:33": 1783143180000,
    "1969-12-31T23:59:59.9995Z": -1,  # floored, as every time is cut to the millisecond
}
# What DuckDB's (or Python's) parser alone would read as some time, or not at all: each is a reject.
TIMES_REFUSED = ["epoch", "2026-07-04", "infinity", "-infinity", "now", "20260704T053318Z",
                 "2026-07-04T05:33:18 Europe/Paris", " 2026-07-04T05:33:18Z", "2026-02-30T00:00:00Z",
                 "1-01-01T00:00:00Z", "2026-07-04T05:33:18Z garbage", "",
                 # DuckDB alone reads these (the next midnight, a time 99 or 24 hours off, 1 BC); Python does not
                 "2026-11-23T24:00:00Z", "2026-11-23T10:00:00+99:00", "2026-11-23T10:00:00+24:00",
                 "0000-01-01T00:00:00Z", "2026-11-23T10:00:60Z", "2026-11-23T10:60:00Z"]


def test_one_rule_for_times_given_as_text_in_duckdb_and_python():
    """An event time, a store's timestamp or a Zendesk audit's created_at is read by ledger.TIME_TEXT's rule:
    ISO-8601's date and time. DuckDB alone reads "epoch" as 1970 and a bare date as its midnight, which would move an
    event decades or hours (and out of its window, or into another's). The DuckDB side (sources/events.py) and the
    Python side (ledger.time_ms: Zendesk audits, metrics) take the same texts to the same millisecond."""
    texts = list(TIMES_TAKEN) + TIMES_REFUSED
    raws = [webhook(uid(i)).replace(f'"time": "{iso(NOW)}"', f'"time": "{t}"') for i, t in enumerate(texts, 1)]
    assert all(r != webhook(uid(i)) for i, r in enumerate(raws, 1))
    led, rej = events.parse(pa.array(raws), pa.array(texts), hop="bus", source="bus_log")
    taken = {r["source_ref"]: r["event_time"] for r in led.to_pylist()}
    assert {t: int(when.timestamp() * 1000) for t, when in taken.items()} == TIMES_TAKEN
    assert rej["source_ref"].to_pylist() == TIMES_REFUSED
    assert rej["reason"][0].as_py() == 'bad event time "epoch" at detail.time (not an ISO-8601 date and time)'
    assert {t: ledger.time_ms(t) for t in TIMES_TAKEN} == TIMES_TAKEN
    assert [t for t in TIMES_REFUSED if ledger.time_ms(t) is not None] == []


@pytest.mark.parametrize("stamp_text", ["epoch", "2026-11-23"])
def test_store_timestamps_of_another_shape_are_rejects(stamp_text):
    good = legacy(uid(1), ticket=11)
    led, rej = events.parse(pa.array([good, good]), pa.array(["m#0", "m#1"]), hop="dlq", source="dlq",
                            extra={"observed_at": pa.array([stamp_text, iso(NOW)])})
    assert led["source_ref"].to_pylist() == ["m#1"]
    assert rej["reason"].to_pylist() == [f'bad timestamp "{stamp_text}" where the store records when it saw the event']


def _legacy_with(eb_id: str, ticket=35436, position=2, total=2) -> str:
    event = json.loads(legacy(eb_id))
    te = event["detail"]["ticket_event"]
    te["ticket"]["id"], te["meta"]["sequence"]["position"], te["meta"]["sequence"]["total"] = ticket, position, total
    return json.dumps(event)


def _webhook_with(eb_id: str, detail_id, subject: str, kind: str = "ticket.created") -> str:
    event = json.loads(webhook(eb_id))
    event["detail"].update({"type": f"zen:event-type:{kind}", "subject": subject, "detail": {"id": detail_id}})
    return json.dumps(event)


# A number a match rests on given in another shape than a whole number: a cast alone reads "35436.6" as 35437 and
# "0x2" as 2 (and a fraction as the next ticket would pin the event on another ticket).
NUMBERS_REFUSED = {
    "ticket 35436.6": (_legacy_with(uid(1), ticket=35436.6),
                       'bad ticket id "35436.6" at detail.ticket_event.ticket.id (not a whole number)'),
    "ticket -5": (_legacy_with(uid(2), ticket=-5), 'bad ticket id "-5" at detail.ticket_event.ticket.id'),
    "ticket true": (_legacy_with(uid(3), ticket=True), 'bad ticket id "true" at detail.ticket_event.ticket.id'),
    "position 0x2": (_legacy_with(uid(4), position="0x2"),
                     'bad sequence position "0x2" at detail.ticket_event.meta.sequence.position (not a whole number)'),
    "total 2.5": (_legacy_with(uid(5), total=2.5), 'bad sequence total "2.5" at detail.ticket_event.meta.sequence.total'),
    "position too big": (_legacy_with(uid(6), position=2 ** 31), 'bad sequence position "2147483648"'),
    "detail.id 1e3": (_webhook_with(uid(7), "1e3", "zen:ticket:1000"), 'bad ticket id "1e3" at detail.detail.id'),
    "subject 12a": (_webhook_with(uid(8), None, "zen:ticket:12a"), 'bad ticket id "12a" at detail.subject'),
}
# ...and what is kept: digits as a JSON number or a string, a ticket named by the subject alone, and a webhook of
# another subject (a user event: its detail.id is a user's id, no ticket's).
NUMBERS_TAKEN = {
    "ticket 35436": (_legacy_with(uid(11), ticket=35436), 35436, 2, 2),
    "ticket '35437'": (_legacy_with(uid(12), ticket="35437", position="1", total="3"), 35437, 1, 3),
    "no sequence numbers": (_legacy_with(uid(13), position=None, total=None), 35436, None, None),
    "detail.id": (_webhook_with(uid(14), "905", "zen:ticket:905"), 905, None, None),
    "subject alone": (_webhook_with(uid(15), None, "zen:ticket:906"), 906, None, None),
    "user event": (_webhook_with(uid(16), "12", "zen:user:12", kind="user.created"), None, None, None),
}


def test_numbers_a_match_rests_on_are_whole_numbers_or_rejects():
    cases = {**NUMBERS_REFUSED, **{k: v[:1] for k, v in NUMBERS_TAKEN.items()}}
    led, rej = events.parse(pa.array([v[0] for v in cases.values()]), pa.array(list(cases)), hop="bus",
                            source="bus_log")
    reasons = dict(zip(rej["source_ref"].to_pylist(), rej["reason"].to_pylist()))
    assert sorted(reasons) == sorted(NUMBERS_REFUSED)
    assert {k: reasons[k][:len(v[1])] for k, v in NUMBERS_REFUSED.items()} == {k: v[1] for k, v in
                                                                               NUMBERS_REFUSED.items()}
    assert set(rej["kind"].to_pylist()) == {"unparseable"}  # may hide an event: the source is incomplete
    kept = {r["source_ref"]: (r["ticket_id"], r["sequence_position"], r["sequence_total"]) for r in led.to_pylist()}
    assert kept == {k: v[1:] for k, v in NUMBERS_TAKEN.items()}
