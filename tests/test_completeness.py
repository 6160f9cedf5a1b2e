"""The one completeness rule (reconcile/completeness.py), and the property it exists for: a fault in a required store
never lets a run say "clean" when it is not true.

The rule's parts are tested on SourceResults; the property on whole runs of a small simulated day whose stores are
local folders (the store readers take a folder and an S3 prefix alike; test_fault_matrix.py runs its faults over
moto) and whose Zendesk side is the Zendesk-compatible HTTP server.
"""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from reconcile import completeness, config, ledger, resources
from reconcile.ledger import SourceResult
from reconcile.run import execute
from reconcile.simulate import zendesk_server
from reconcile.simulate.demo import demo_environment
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores

import faultrun

pytestmark = pytest.mark.usefixtures("restore_environment")


def result(name: str, rows: int = 1, kinds: list[str | None] | None = None, complete: bool = True) -> SourceResult:
    kinds = kinds or []
    rej = ledger.rejects_table(name, [f"r{i}" for i in range(len(kinds))], ["why"] * len(kinds), ["{}"] * len(kinds),
                               kind=pa.array(kinds, pa.string()))
    led = ledger.conform(pa.table({"hop": pa.array(["bus"] * rows, pa.string())}))
    return SourceResult(name, led, rejects=rej, complete=complete)


# --- the rule ---------------------------------------------------------------------------------------------------------


def test_every_reject_kind_says_whether_it_hides_events_and_why():
    t = pacsv.read_csv(resources.query_file("reject_kinds.csv"))
    assert t.column_names == ["kind", "hides_events", "why"]
    assert all(len(w) > 40 for w in t["why"].to_pylist())
    assert completeness.reject_kinds() == {"unparseable": True, "unreadable_unit": True, "not_zendesk": False,
                                           "not_an_event": False}


@pytest.mark.parametrize("kinds,complete", [
    (["not_zendesk", "not_an_event"], True),  # harmless by their documented format
    (["unparseable"], False),
    (["unreadable_unit"], False),
    ([None], False),  # no kind: the safe side
    (["a_kind_nobody_declared"], False),  # unknown: the safe side
    (["not_zendesk", "unparseable"], False),
])
def test_rejects_that_may_hide_an_event_make_a_required_store_incomplete(kinds, complete):
    r = completeness.decide(result("bus_log", kinds=kinds), others_have_records=True)
    assert r.complete is complete
    if not complete:
        hiding = sum(k not in ("not_zendesk", "not_an_event") for k in kinds)
        assert any(p.startswith(f"{hiding:,} record(s) could not be read") and "r" in p for p in r.problems)


def test_an_empty_required_store_is_incomplete_only_while_others_have_records():
    assert not completeness.decide(result("sink", rows=0), others_have_records=True).complete
    assert completeness.decide(result("sink", rows=0), others_have_records=False).complete
    # an empty DLQ is the healthy state
    assert completeness.decide(result("dlq", rows=0), others_have_records=True).complete
    # metrics are a sanity check: never incomplete, whatever they say
    assert completeness.decide(result("metrics", kinds=["unparseable"], complete=False), True).complete


def test_a_source_that_could_not_read_a_unit_stays_incomplete():
    r = completeness.decide(result("zendesk", complete=False), others_have_records=True)
    assert not r.complete


# --- the property -----------------------------------------------------------------------------------------------------

QUIET = dict(loss_before_bus=0, spike_late=0, spike_dlq=0, spike_drop=0, dlq_rate=0, drop_rate=0, redelivery=0,
             replay=0, log_target_failure=0, in_flight=0, straddlers=0, orphans=0, not_mapped=0, echo_updates=0,
             rebatch_batches=0, bad_records=False)
SMALL = dict(events=150, batch_seconds=3600, files_per_batch=1, log_streams=2)
SAMPLES = 2  # records corrupted per store and corruption; the seed varies which


@pytest.fixture(scope="module")
def clean_day(tmp_path_factory):
    """A day with no fault at all: the run says "clean"."""
    return _day(tmp_path_factory, SimParams(seed=41, **SMALL, **QUIET))


@pytest.fixture(scope="module")
def dlq_day(tmp_path_factory):
    """A quiet day with a few dead-lettered events (a DLQ to corrupt)."""
    return _day(tmp_path_factory, SimParams(seed=42, **SMALL, **dict(QUIET, dlq_rate=0.02)))


def _day(factory, params):
    sim = simulate(params)
    folder = factory.mktemp("day")
    write_stores(sim, folder)
    return sim, folder


def run(sim, folder: Path, out: Path, corrupt: dict | None = None, drop: set | None = None, tail: dict | None = None,
        per_page: int = 1000):
    """The whole job over `folder`'s stores (local), Zendesk served with `corrupt` audits and without `drop` ones
    (`tail`, `per_page`: zendesk_server.Faults and start's)."""
    demo_environment()
    st = folder / "stores"
    audits = zendesk_server.load(folder)
    if drop:
        audits = audits.filter(pc.invert(pc.is_in(audits["id"], pa.array(sorted(drop), pa.int64()))))
    with zendesk_server.start(audits, now=sim.window.as_of, per_page=per_page,
                              faults=zendesk_server.Faults(corrupt=corrupt or {}, tail=tail or {})) as zd:
        p = sim.params
        cfg = config.build(None, {
            "zendesk": {"url": zd.url, "requests_per_minute": 6000},
            "bus_log": {"uri": str(st / "logs-archive" / "exports")},
            "sink": {"uri": str(st / "spark-output" / "events")},
            # the simulator's archive is one file of every message sent since its day began, written after it: on a
            # quiet day it holds none, so nothing in it shows how far back it reaches (sources/dlq.py)
            "dlq": {"uri": str(st / "dlq-archive" / "messages.jsonl"),
                    "archive_since": sim.window.read_start.isoformat()},
            "metrics": {"uri": str(st / "metrics" / "get-metric-data.json")},
            "window": {"max_event_age": f"{p.max_event_age.total_seconds():.0f}s",
                       "margin_before": f"{p.margin_before.total_seconds():.0f}s",
                       "hop_a_grace": f"{p.hop_a_grace.total_seconds():.0f}s"},
            "exclude": {"event_types": list(p.excluded_kinds)}}, environ={})
        return execute(cfg, sim.window, out, progress=False)


def copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


# Ways to corrupt one record of each store's format. Each leaves the rest of the object readable.
def _cut(text: bytes) -> bytes:
    return text[: len(text) // 2]


def _no_id(text: bytes) -> bytes:
    doc = orjson.loads(text)
    doc.pop("id")
    return orjson.dumps(doc)


def _bad_byte(text: bytes) -> bytes:
    at = text.index(b'"id":"') + 8
    return text[:at] + b"\xfe" + text[at + 1:]


def _bad_time(text: bytes) -> bytes:
    doc = orjson.loads(text)
    d = doc["detail"]
    if "ticket_event" in d:
        d["ticket_event"]["meta"]["occurred_at"] = "sometime"
    else:
        d["time"] = "sometime"
    return orjson.dumps(doc)


def _no_key(text: bytes) -> bytes:
    """The sink keys on its partitionKey column, then on the event's own id: no id in either (see corrupt_sink_row)."""
    return _no_id(text)


EVENT_CORRUPTIONS = (_cut, _no_id, _bad_byte, _bad_time)
# the sink keys on its partitionKey column first (a row without the event's own id is still read): both go
SINK_CORRUPTIONS = (_cut, _no_key, _bad_byte, _bad_time)


def corrupt_log_line(stores: Path, rng: random.Random, how) -> str:
    obj = rng.choice(sorted((stores / "logs-archive" / "exports").rglob("*.gz")))
    lines = gzip.decompress(obj.read_bytes()).split(b"\n")
    i = rng.randrange(len(lines) - 1)  # the text ends with a newline
    stamp, _, event = lines[i].partition(b" ")
    lines[i] = stamp + b" " + how(event)
    obj.write_bytes(gzip.compress(b"\n".join(lines), mtime=0))
    return f"{obj.name}:{i + 1}"


def corrupt_sink_row(stores: Path, rng: random.Random, how) -> str:
    f = rng.choice(sorted((stores / "spark-output" / "events").rglob("*.parquet")))
    t = pq.read_table(f)
    i = rng.randrange(t.num_rows)
    data, keys = t["data"].to_pylist(), t["partitionKey"].to_pylist()
    data[i] = how(data[i])
    if how is _no_key:
        keys[i] = None
    t = t.set_column(0, "data", pa.array(data, pa.binary()))
    pq.write_table(t.set_column(2, "partitionKey", pa.array(keys, pa.string())), f)
    return f"{f.name}#{i}"


def corrupt_dlq_message(stores: Path, rng: random.Random, how) -> str:
    f = stores / "dlq-archive" / "messages.jsonl"
    lines = f.read_bytes().split(b"\n")
    i = rng.randrange(len(lines) - 1)
    m = orjson.loads(lines[i])
    m["Body"] = how(m["Body"].encode()).decode("utf-8", "surrogateescape")
    lines[i] = orjson.dumps(m) if "\udcfe" not in m["Body"] else _cut(lines[i])  # JSON cannot carry the raw byte
    f.write_bytes(b"\n".join(lines))
    return f"messages.jsonl:{i + 1}"


def in_window_audits(sim) -> list[int]:
    t = sim.audits
    start, end = int(sim.window.start.timestamp()), int(sim.window.end.timestamp())
    keep = pc.and_(pc.greater_equal(t["timestamp"], start), pc.less(t["timestamp"], end))
    return t.filter(keep)["id"].to_pylist()


def audit_corruption(sim, rng: random.Random, k: int) -> dict:
    """One in-window audit served malformed, the k-th way: no created_at, a child without id, ticket_id "abc",
    bytes that are not UTF-8."""
    aid = rng.choice(in_window_audits(sim))
    row = next(r for r in sim.audits.filter(pc.equal(sim.audits["id"], aid)).to_pylist())
    audit = {k_: v for k_, v in row.items() if v is not None}
    audit["child_events"] = [{k_: v for k_, v in c.items() if v is not None} for c in row["child_events"]]
    if k == 0:
        audit.pop("created_at")
    elif k == 1:
        audit["child_events"][0].pop("id")
    elif k == 2:
        audit["ticket_id"] = "abc"
    else:
        return {aid: orjson.dumps(audit).replace(b'"Audit"', b'"Au\xffdit"')}
    return {aid: orjson.dumps(audit)}


def test_the_clean_day_is_clean(clean_day, tmp_path):
    sim, folder = clean_day
    outcome = run(sim, folder, tmp_path / "run")
    assert (outcome.summary["status"], outcome.exit_code) == ("clean", 0)


def test_corrupting_any_readable_record_of_a_required_store_never_yields_clean(clean_day, dlq_day, tmp_path):
    """Property: pick records at random (seeded), corrupt one the ways a store gets damaged; the run is incomplete
    (exit 3) and names the store, every time."""
    rng = random.Random(2026)
    n = 0
    for day, stores_faults in ((clean_day, ("bus_log", "sink", "zendesk")), (dlq_day, ("dlq",))):
        sim, folder = day
        for store in stores_faults:
            for k in range(SAMPLES if store != "dlq" else 2):
                n += 1
                how = (SINK_CORRUPTIONS if store == "sink" else EVENT_CORRUPTIONS)[(k + n) % 4]
                work = copy(folder, tmp_path / f"case{n}")
                corrupt = None
                if store == "bus_log":
                    where = corrupt_log_line(work / "stores", rng, how)
                elif store == "sink":
                    where = corrupt_sink_row(work / "stores", rng, how)
                elif store == "dlq":
                    where = corrupt_dlq_message(work / "stores", rng, how)
                else:
                    corrupt = audit_corruption(sim, rng, (k + n) % 4)
                    where = f"audit {next(iter(corrupt))}"
                outcome = run(sim, work, tmp_path / f"run{n}", corrupt=corrupt)
                s = outcome.summary
                what = f"{store} {where} {how.__name__ if store != 'zendesk' else ''}"
                assert (s["status"], outcome.exit_code) == ("incomplete", 3), what
                entry = next(i for i in s["inputs"] if i["source"] == store)
                assert not entry["complete"] and entry["problems"], what


@pytest.mark.parametrize("drift,reason", [
    ({"child_events": None}, "audit without child_events"),
    ({"child_events": 5}, "child_events '5' is not a list"),
    ({"event_type": 7}, "child event_type '7' is not text"),
])
def test_an_audit_whose_events_drifted_is_no_clean_and_no_crash(clean_day, tmp_path, drift, reason):
    """Drift in the API's shape: an in-window audit whose child_events is null or no list, or a child whose
    event_type is no text. Its events cannot be counted, so the read is not whole (before, the first two dropped the
    audit's events unseen and the day could be clean; the others stopped the run)."""
    sim, folder = clean_day
    aid = in_window_audits(sim)[3]
    row = sim.audits.filter(pc.equal(sim.audits["id"], aid)).to_pylist()[0]
    audit = {k: v for k, v in row.items() if v is not None}
    audit["child_events"] = [{k: v for k, v in c.items() if v is not None} for c in row["child_events"]]
    if "event_type" in drift:
        audit["child_events"][0]["event_type"] = drift["event_type"]
    else:
        audit.update(drift)
    outcome = run(sim, folder, tmp_path / "run", corrupt={aid: orjson.dumps(audit)})
    assert (outcome.summary["status"], outcome.exit_code) == ("incomplete", 3)
    rejects = pq.read_table(tmp_path / "run" / "evidence" / "zendesk.rejects.parquet").to_pylist()
    assert [r["reason"] for r in rejects] == [reason]


def test_removing_a_record_never_yields_a_false_clean(clean_day, tmp_path):
    """Removing a sink row loses its event (exit 2, that event lost); removing a bus log line or a Zendesk audit
    loses nothing that was emitted and delivered, so a clean run then is true -- with the gap shown (an unlogged event,
    an orphan), and every verdict still the truth."""
    sim, folder = clean_day
    truth = dict(zip(sim.truth["source_id"].to_pylist(), sim.truth["verdict"].to_pylist()))
    rng = random.Random(7)

    work = copy(folder, tmp_path / "sink")
    f = rng.choice(sorted((work / "stores" / "spark-output" / "events").rglob("*.parquet")))
    t = pq.read_table(f)
    gone = t["partitionKey"][0].as_py()
    pq.write_table(t.slice(1), f)
    faultrun.recommit(work / "stores", f)  # as Spark wrote it, without the row (cut after the commit: incomplete)
    outcome = run(sim, work, tmp_path / "run-sink")
    assert (outcome.summary["status"], outcome.exit_code) == ("loss", 2)
    v = pq.read_table(tmp_path / "run-sink" / "verdicts.parquet", columns=["eb_id", "verdict"]).to_pylist()
    assert {r["verdict"] for r in v if r["eb_id"] == gone} == {"lost_after_bus"}

    work = copy(folder, tmp_path / "log")
    judged = {e.encode() for e in sim.truth["eb_id"].to_pylist() if e}
    obj = rng.choice(sorted((work / "stores" / "logs-archive" / "exports").rglob("*.gz")))
    lines = gzip.decompress(obj.read_bytes()).split(b"\n")
    i = next(i for i, line in enumerate(lines) if line[line.index(b'"id":"') + 6:][:36] in judged)
    obj.write_bytes(gzip.compress(b"\n".join(lines[:i] + lines[i + 1:]), mtime=0))
    outcome = run(sim, work, tmp_path / "run-log")
    assert outcome.summary["status"] == "clean" and outcome.summary["unlogged_at_bus"] >= 1
    got = pq.read_table(tmp_path / "run-log" / "verdicts.parquet", columns=["source_id", "verdict"])
    assert dict(zip(got["source_id"].to_pylist(), got["verdict"].to_pylist())) == truth

    aid = rng.choice(in_window_audits(sim))
    outcome = run(sim, folder, tmp_path / "run-audit", drop={aid})
    assert outcome.summary["status"] == "clean" and outcome.summary["orphans"] >= 1
    got = pq.read_table(tmp_path / "run-audit" / "verdicts.parquet", columns=["source_id", "verdict"])
    found = dict(zip(got["source_id"].to_pylist(), got["verdict"].to_pylist()))
    assert found.items() <= truth.items() and len(found) < len(truth)


def test_an_export_that_ends_too_soon_is_no_clean(clean_day, tmp_path):
    """The export's first page says end_of_stream: its read is complete by its own account, listing 50 of the day's
    audits, and the day was `clean`, exit 0, with most of it never judged (losses there unseen; false-clean review
    round 3). The bus holds events of tickets it lists past the newest audit it lists, which none of its events
    links to: the listing ended early, and the read is incomplete (queries/zendesk_shortfall.sql). An export read
    whole says clean as before."""
    sim, folder = clean_day
    outcome = run(sim, folder, tmp_path / "short", tail={"end_of_stream": True}, per_page=50)
    s = outcome.summary
    assert (s["status"], outcome.exit_code) == ("incomplete", 3)
    entry = next(i for i in s["inputs"] if i["source"] == "zendesk")
    assert not entry["complete"] and "the export ended before the window did" in entry["problems"][-1]
    whole = run(sim, folder, tmp_path / "whole", per_page=50)
    assert (whole.summary["status"], whole.exit_code) == ("clean", 0)


def tiny_day(tmp_path, listed: list[dict], others: list[tuple[int, str]], made: list[dict] = ()):
    """The tiny day's job over two updates this account made (tickets 1 and 2, at 09:00 and 10:00: delivered), of
    which the Zendesk read lists `listed`, and comments on those tickets no listed event stands for (`others`: ticket,
    time), all on the bus and landed, and the bus events `made` besides (on the bus and landed too)."""
    from datetime import timedelta

    from tinyday import CONFIG, day_results, legacy, obs, webhook
    from ledgers import DAY
    from reconcile import run as job
    a, b = legacy("A", 1, "Ticket Created", "09:00:00.1", 1), legacy("B", 2, "Comment Created", "10:00:00.2", 1)
    other = [webhook(f"X{i}", f"other-{i}", ticket, "comment_added", t) for i, (ticket, t) in enumerate(others)]
    bus = [obs(e, e["event_time"], source_id=f"log:{e['eb_id']}") for e in (a, b, *other, *made)]
    sink = [obs(e, e["event_time"], sequence_number=str(i), committed=True)
            for i, e in enumerate((a, b, *other, *made))]
    cfg = config.build(None, CONFIG)
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    results = day_results(listed, bus, sink, [])
    out = job.finish(cfg, window, tmp_path, results, job.write_evidence(results, tmp_path / "evidence"),
                     audience="daily", generated_at=window.as_of)
    return out, next(i for i in out.summary["inputs"] if i["source"] == "zendesk")


def test_a_second_zendesk_account_on_the_bus_is_no_sign_of_a_short_export(tmp_path):
    """A second account (a sandbox) puts its webhook events on the same bus: Zendesk numbers its tickets from 1 too,
    so they fall on ticket ids this read lists, and past its newest audit they looked like a listing cut short: every
    healthy day was incomplete (exit 3, "re-run", which never helps; diff review). Such orphans before the newest audit
    show they are a thing of this pipeline: the rule holds off, says so, and the day is clean."""
    from ledgers import uid
    from tinyday import z
    ours = [z(1, 1, "Create", "09:00:00", 100), z(2, 2, "Comment", "10:00:00", 200)]
    out, zendesk = tiny_day(tmp_path, ours, [(2, "08:00:00"), (2, "20:00:00"), (1, "21:00:00")])
    assert (out.summary["status"], out.exit_code, out.summary["orphans"]) == ("clean", 0, 3)
    assert all(i["complete"] for i in out.summary["inputs"])
    assert zendesk["problems"] == [
        "the bus holds 2 event(s) of tickets this read lists, of kinds an audit stands for, after the newest audit it "
        "lists (2026-11-23T10:00:00Z), which none of its events links to (the first: " + uid("X1") + "); 1 such "
        "event(s) lie before it too (another Zendesk account on the same bus? see the report's orphans), so they do "
        "not show the export ended early, and the read counts as whole. If it did end early, re-run the window."]


def test_a_merge_earlier_in_the_day_does_not_hold_the_short_export_rule_off(tmp_path):
    """The listing ends at 10:00, ticket 2's updates at 11:00 and 12:00 on the bus but not listed: incomplete. A merge
    at 09:00 (its children judged by the connector's Ticket Merged, the one sequence near them: not emitted) left that
    Ticket Merged an orphan before the newest audit, and the rule held off as for a second account: clean, exit 0,
    the 12:00 update's loss unseen (trust review round 4). The merge's event is a listed update's: no such sign."""
    from tinyday import legacy, z
    seq = {"sequence_total": 1}
    for merged in (False, True):
        ours = [z(2, 2, "Comment", "10:00:00", 200)]
        made = [legacy("C", 2, "Comment Created", "11:00:00.2", 1, sequence_id="SC", **seq),
                legacy("D", 2, "Status Changed", "12:00:00.2", 1, sequence_id="SD", **seq)]
        if merged:
            ours = [z(31, 3, "Comment", "09:00:00", 300), z(32, 3, "Change:status", "09:00:00", 300)] + ours
            made.append(legacy("MG", 3, "Ticket Merged", "09:00:00.4", 1, sequence_id="SM", **seq))
        out, zendesk = tiny_day(tmp_path / str(merged), ours, [], made)
        assert (out.summary["status"], out.exit_code) == ("incomplete", 3), merged
        assert not zendesk["complete"] and "the export ended before the window did" in zendesk["problems"][-1]


def test_an_export_cut_seconds_before_the_next_update_is_no_clean(tmp_path):
    """The listing ends at 09:00 (ticket 1's first update), ticket 1's next three updates not listed: the next on
    the bus comes 10 s after the cut, within the composite tolerance of the newest audit, and counted as an orphan
    "before" it, it turned the rule off (a clean day from a cut listing; diff review). Within the tolerance it counts
    neither way."""
    from tinyday import z
    out, zendesk = tiny_day(tmp_path, [z(1, 1, "Create", "09:00:00", 100)],
                            [(1, "09:00:10"), (1, "11:00:00"), (1, "12:00:00")])
    assert (out.summary["status"], out.exit_code) == ("incomplete", 3)
    assert not zendesk["complete"] and "the export ended before the window did" in zendesk["problems"][-1]


# --- what the parsers report ------------------------------------------------------------------------------------------

UUID = "5e0f1c2a-3b4c-4d5e-8f60-7182930a4b5c"


def _event(eb_id: str | None, source: str, detail: dict) -> str:
    doc = {"version": "0", "id": eb_id, "source": source, "detail-type": "x", "detail": detail}
    return orjson.dumps({k: v for k, v in doc.items() if v is not None}).decode()


WEBHOOK = {"type": "zen:event-type:ticket.created", "id": "9", "time": "2026-11-23T10:00:00Z",
           "subject": "zen:ticket:5", "detail": {"id": "5"}}


def test_parse_tags_each_reject_with_whether_it_can_hide_an_event():
    from reconcile.sources import events
    raw = pa.array([
        _event(UUID, "zendesk.webhook", WEBHOOK),  # fine
        _event("not-a-uuid", "zendesk.webhook", WEBHOOK),  # a Zendesk event we cannot key: hides
        _event(UUID, "aws.events", {}),  # another producer's event: harmless
        _event(UUID, "zendesk.webhook", {"payload": {}}),  # Zendesk's, of an unknown shape: hides
        _event(UUID, None, {}),  # no source: nothing proves it is not Zendesk's: hides
        _event(None, "aws.events", {}),  # no id: no EventBridge event at all: hides
    ])
    led, rej = events.parse(raw, pa.array([f"r{i}" for i in range(6)]), hop="bus", source="bus_log",
                            match=config.MatchConfig())
    assert [str(i) for i in led["eb_id"].to_pylist()] == [UUID]
    got = dict(zip(rej["source_ref"].to_pylist(), zip(rej["kind"].to_pylist(), rej["reason"].to_pylist())))
    assert {k: v[0] for k, v in got.items()} == {"r1": "unparseable", "r2": "not_zendesk", "r3": "unparseable",
                                                 "r4": "unparseable", "r5": "unparseable"}
    assert "is not a UUID" in got["r1"][1] and '"aws.events"' in got["r2"][1]
    assert got["r3"][1].startswith("unknown event shape")
    # a team whose Lambda sets another source says so, and then that source is Zendesk's
    _, rej = events.parse(raw, pa.array([f"r{i}" for i in range(6)]), hop="bus", source="bus_log",
                          match=config.MatchConfig(zendesk_source_pattern="^(zendesk|aws)"))
    assert "not_zendesk" not in rej["kind"].to_pylist()
    # with no shape asked for, an id that is no UUID is still a reject: ledgers keep EventBridge ids as UUIDs
    led, rej = events.parse(raw, pa.array([f"r{i}" for i in range(6)]), hop="bus", source="bus_log",
                            match=config.MatchConfig(eb_id_pattern=""))
    assert [str(i) for i in led["eb_id"].to_pylist()] == [UUID]
    got = dict(zip(rej["source_ref"].to_pylist(), zip(rej["kind"].to_pylist(), rej["reason"].to_pylist())))
    assert got["r1"] == ("unparseable", 'EventBridge id "not-a-uuid" is not a UUID (8-4-4-4-12 hex digits, as every '
                                        'EventBridge id is)')


def test_a_pattern_that_does_not_compile_is_a_config_error_naming_the_key():
    from reconcile.errors import ConfigError
    from reconcile.sources import events
    with pytest.raises(ConfigError, match=r"\[match\] eb_id_pattern"):
        events.parse(pa.array([_event(UUID, "zendesk.webhook", WEBHOOK)]), pa.array(["r0"]), hop="bus",
                     source="bus_log", match=config.MatchConfig(eb_id_pattern="(["))


def test_a_saved_metrics_response_with_unreadable_points_is_a_problem_never_an_abort(tmp_path):
    from reconcile.sources import metrics
    doc = [{"MetricDataResults": [
        {"Label": "Invocations", "StatusCode": "Complete", "Timestamps": ["2026-11-23T10:00:00Z", "soon", None,
                                                                          "2026-11-23T10:10:00"],
         "Values": [4.0, 2.0, 1.0, "NaN"]},
        {"Label": "MatchedEvents", "Timestamps": "not a list", "Values": []},
        "not a result"]}, "not a page"]
    path = tmp_path / "metrics.json"
    path.write_bytes(orjson.dumps(doc))
    r = metrics.read(config.MetricsConfig(uri=str(path)), None, config.AwsConfig())  # a saved response: no window
    assert r.complete and r.ledger["value"].to_pylist() == [4.0]
    text = " ".join(r.problems)
    assert "unreadable timestamp or value" in text and "'soon'" in text and "not a list" in text
    assert "2 part(s)" in text
