"""The sink parses only the payloads the bus log does not explain (issue 17, [sink] parse_payloads).

A sink row whose id (its partition-key column) the bus log, read whole, holds with the same payload bytes takes its
Zendesk fields from the log copy: its payload is not parsed. These tests hold the rule to its promises: the lookup is
exact in the id and keyed by the payload's digest (so a payload damaged in the sink alone is parsed, and rejected),
the bus log's digest is the sink's, a replay's row is always parsed, every other rule about a row still applies,
nothing is skipped when the bus log was not read whole, when asked, or when the id comes from the payload, and a
whole run judges exactly as it does with every payload parsed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import faultrun
from reconcile import ledger
from reconcile.config import AwsConfig, MatchConfig, SinkConfig
from reconcile.sources import bus_ids, events, explained, sink
from reconcile.window import Window

SPARK = Path(__file__).parent / "fixtures" / "spark"
SPARK_IDS = json.loads((SPARK / "ids.json").read_text())
DAY = Window(start=datetime(2026, 11, 23, tzinfo=timezone.utc), end=datetime(2026, 11, 24, tzinfo=timezone.utc),
             as_of=datetime(2026, 11, 25, tzinfo=timezone.utc))
LOCAL = AwsConfig()


def bus_of(ids: list[str | None], digests) -> explained.BusIds:
    """The lookup as a run builds it: from a ledger's eb_id (Arrow uuid) and payload_digest columns."""
    return explained.BusIds(ledger.uuids(pa.array(ids, pa.string()))[0], pa.array(digests, pa.uint64()))


def spark_bus(leave_out: tuple[str, ...] = ()) -> explained.BusIds:
    """A bus log holding every event of the Spark fixture, byte for byte as the sink holds it, but `leave_out`."""
    t = pa.concat_tables([pq.read_table(f, columns=["partitionKey", "data"])
                          for f in sorted((SPARK / "parquet").rglob("*.parquet"))])
    t = t.filter(pc.invert(pc.is_in(t["partitionKey"], pa.array(leave_out, pa.string()))))
    return bus_of(t["partitionKey"].to_pylist(), explained.digests(t["data"]))


def halves(text: str) -> list[int]:
    b = uuid.UUID(text).bytes
    return [int.from_bytes(b[:8], "big"), int.from_bytes(b[8:], "big")]


# ----------------------------------------------------------------------------------------------------- the lookup


def test_canonical_id_text_in_either_case_is_its_uuid_and_nothing_else_is_looked_up():
    good = ["5ea00000-0000-4000-8000-00000000000a", "5EA00000-0000-4000-8000-00000000000A"]
    bad = [None, "5ea00000000040008000000000000000", "{5ea00000-0000-4000-8000-00000000000a}",
           "5ea00000-0000-4000-8000-00000000000g", "5ea00000+0000-4000-8000-00000000000a", "5ea00000-0000-4000",
           "5ea00000-0000-4000-8000-0000000000é"]
    keys, ok = explained.uuid_keys(pa.chunked_array([pa.array(good[:1]), pa.array(good[1:] + bad)]))
    assert ok.tolist() == [True, True] + [False] * len(bad)
    assert keys[0].tolist() == keys[1].tolist() == halves(good[0])


def test_lookup_is_exact_for_ids_sharing_their_first_bits_copies_and_nulls():
    rng = np.random.default_rng(7)
    randoms = [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(2000)]
    digest = {i: int(d) for i, d in zip(randoms + SPARK_IDS, rng.integers(0, 2**63, 2000 + len(SPARK_IDS)))}
    # the Spark fixture's ids share their first 64 bits: they go to the sorted rest, searched in full
    held = randoms[:1000] + SPARK_IDS[::2]
    # the log copied some ids twice; one record had no id, one no digest
    bus = bus_of(held + held[:50] + [None, randoms[1500]], [digest[i] for i in held + held[:50]] + [1, None])
    near = [i[:-1] + ("0" if i[-1] != "0" else "1") for i in held[:100]]  # one hex digit off
    asked = randoms + SPARK_IDS + near
    keys, ok = explained.uuid_keys(pa.array(asked))
    assert ok.all()
    held_as = {i: digest[i] for i in held}
    same = explained.keyed(keys, np.array([digest.get(a, 0) for a in asked], np.uint64))
    assert bus.holds(same).tolist() == [a in held_as for a in asked]
    other = explained.keyed(keys, np.array([digest.get(a, 0) + 1 for a in asked], np.uint64))
    assert not bus.holds(other).any()  # the same id with other bytes: not held


def test_values_held_twice_are_found_as_pandas_finds_duplicates():
    import pandas as pd
    rng = np.random.default_rng(3)
    for n, repeats in ((0, 0), (1, 0), (1_000, 0), (1_000, 40), (50_000, 5_000), (4, 4)):
        values = rng.integers(0, 2**64, n, dtype=np.uint64)  # keys use all 64 bits
        if repeats:
            values[rng.integers(0, n, repeats)] = values[rng.integers(0, n, repeats)]
        assert (explained._held_twice(values) == pd.Series(values).duplicated(keep=False).to_numpy()).all(), n


def test_the_bus_log_s_digest_of_a_payload_is_the_sink_s():
    payload = next((SPARK / "parquet").rglob("*.parquet"))
    data = pq.read_table(payload, columns=["data"])["data"].slice(0, 2)
    led, rej = events.parse(data.cast(pa.string()), pa.array(["a", "b"]), hop="bus", source="bus_log")
    assert rej.num_rows == 0
    assert led["payload_digest"].to_pylist() == explained.digests(data).tolist()


def test_explained_rows_and_parsed_ones_come_out_as_with_every_payload_parsed_and_in_the_input_s_order(monkeypatch):
    """events.parse builds an explained row's ledger row without its payload and puts the parsed rows between them:
    the rows, their order and the rejects are those of parsing everything, but for the explained rows' Zendesk
    fields. Few runs of each (slices) and many (one take), with rejected rows among them and without (then the
    pass-through columns are the input's own arrays)."""
    runs = []

    def in_order(known, rows, parsed, at, aligned):  # watched, not replaced: how many runs each call put in order
        label = np.where(rows, 0, -1)
        label[at] = 1
        runs.append(int((np.diff(label) != 0).sum()))
        return real(known, rows, parsed, at, aligned)
    real = events._in_order
    monkeypatch.setattr(events, "_in_order", in_order)
    t = pa.concat_tables([pq.read_table(f, columns=["partitionKey", "data", "approximateArrivalTimestamp"])
                          for f in sorted((SPARK / "parquet").rglob("*.parquet"))])
    # 30 rows, explained in long runs; 600 alternating (> _RUNS runs), with damaged payloads and without
    for copies, every, damage in ((2, 9, 7), (40, 2, 7), (40, 2, None)):
        n = t.num_rows * copies
        data = t["data"].to_pylist() * copies
        damaged = np.arange(n) % damage == 3 if damage else np.zeros(n, bool)
        for i in np.flatnonzero(damaged):
            data[i] = b"{not json"  # a payload damaged in the sink: parsed, and a reject
        data = pa.array(data, pa.binary())
        ids = pa.chunked_array([t["partitionKey"]] * copies)
        refs = pa.array([f"part-0.parquet#{i}" for i in range(n)])
        extra = {"source_id": refs, "observed_at": pa.chunked_array([t["approximateArrivalTimestamp"]] * copies)}
        rows = (np.arange(n) % every != 1) & ~damaged
        known = events.Explained(rows, explained.as_uuids(explained.uuid_keys(ids)[0]),
                                 pa.array(explained.digests(data)))
        args = {"hop": "sink", "source": "sink", "extra": extra, "eb_id": ids, "match": MatchConfig()}
        full, full_rej = events.parse(data, refs, **args)
        lazy, lazy_rej = events.parse(data, refs, explained=known, **args)
        assert lazy_rej.equals(full_rej) and full_rej.num_rows == damaged.sum()
        assert lazy["source_ref"].to_pylist() == full["source_ref"].to_pylist()  # the input's order
        parsed = pa.array(~rows[~damaged])
        assert lazy.filter(parsed).equals(full.filter(parsed))
        zendesk = ["zendesk_key", "ticket_id", "event_type", "family", "event_time", "sequence_id", "sequence_position",
                   "sequence_total", "replay_name"]
        assert lazy.filter(pc.invert(parsed)).drop_columns(zendesk).equals(
            full.filter(pc.invert(parsed)).drop_columns(zendesk))
        assert lazy.filter(pc.invert(parsed))["ticket_id"].null_count == int(rows.sum())
    assert len(runs) == 3 and runs[0] < events._RUNS <= min(runs[1:])  # the explained rows went aside, every way


def test_a_replay_marker_marks_its_row_wherever_it_lies():
    values = [b'{"id": "a"}', b'{"replay-name": "r"}', None, b"", b'{"x": "replay-', b'name"}', b'{"y": 1}']
    for arr in (pa.array(values, pa.binary()), pa.array(values, pa.large_binary()),
                pa.array(values, pa.binary()).slice(1), pa.array(values, pa.binary()).slice(1, 5),
                pa.array([v and v.decode() for v in values], pa.large_string()).slice(2)):
        marked = (b'{"replay-name": "r"}', b'{"x": "replay-', b'name"}')
        want = [v is not None and (v.encode() if isinstance(v, str) else v) in marked for v in arr.to_pylist()]
        assert explained._holding(arr, explained.REPLAY_KEY).tolist() == want  # across two values: both parsed
    # a day of replays: every match found, in text as in bytes
    for kind in (pa.binary(), pa.string()):
        many = pa.array(['{"replay-name": "r", "x": "replay-name"}', '{"y": 1}', ""] * 5_000, kind)
        assert explained._holding(many, explained.REPLAY_KEY).tolist() == [True, False, False] * 5_000
    none = pa.array([None, None], pa.binary())
    assert explained._holding(none, explained.REPLAY_KEY).tolist() == [False, False]


# ------------------------------------------------------------------------------------- the sink over Spark output


def spark_rows(tmp_path: Path, edit) -> Path:
    """The real Spark fixture (parquet) with one file's rows edited by `edit(table) -> table`."""
    root = Path(shutil.copytree(SPARK / "parquet", tmp_path / "parquet"))
    f = sorted(root.glob("dt=2026-11-23/hr=10/*.parquet"))[0]
    pq.write_table(edit(pq.read_table(f)), f)
    return root


def with_data(t: pa.Table, row: int, data: bytes) -> pa.Table:
    col = t["data"].to_pylist()
    col[row] = data
    return t.set_column(t.schema.get_field_index("data"), "data", pa.array(col, pa.binary()))


def by_id(res) -> dict[str, dict]:
    return {str(r["eb_id"]): r for r in res.ledger.to_pylist()}


def test_explained_rows_keep_their_own_fields_and_a_payload_damaged_in_the_sink_is_a_reject(tmp_path):
    first = pq.read_table(sorted((SPARK / "parquet").glob("dt=2026-11-23/hr=10/*.parquet"))[0])
    broken, replayed = first["partitionKey"][0].as_py(), first["partitionKey"][1].as_py()
    replay_payload = json.loads(first["data"][1].as_py()) | {"replay-name": "zendesk-replay-1"}

    def edit(t):
        return with_data(with_data(t, 0, b"\x00 not json"), 1, json.dumps(replay_payload).encode())
    root = spark_rows(tmp_path, edit)
    cfg = SinkConfig(uri=str(root))
    everything = sink.read(cfg, DAY, LOCAL, match=MatchConfig())  # no bus log: every payload is parsed
    assert everything.details["payloads_not_parsed"] == 0 and everything.details["payloads_parsed"].startswith("all")
    assert everything.rejected == 1 and everything.rejects["source_ref"][0].as_py().endswith("#0")

    # the bus log holds every event as the fixture wrote it, but the last (a log-target failure)
    lazy = sink.read(cfg, DAY, LOCAL, match=MatchConfig(), bus_ids=lambda: spark_bus(leave_out=(SPARK_IDS[-1],)))
    rows, full = by_id(lazy), by_id(everything)
    # the damaged payload is not the bytes the bus log parsed under its id: parsed, and a reject, as before
    assert lazy.rejected == 1 and lazy.rejects.equals(everything.rejects) and broken not in rows
    assert rows.keys() == full.keys()
    assert lazy.details["payloads_not_parsed"] == len(rows) - 2  # all but the replay and the id the log lacks
    own = ("eb_id", "source_ref", "observed_at", "sequence_number", "committed", "hop", "source_id",
           "payload_digest")
    for eb_id in full:
        assert {k: rows[eb_id][k] for k in own} == {k: full[eb_id][k] for k in own}
    assert all(rows[i]["ticket_id"] is None for i in rows if i not in (replayed, SPARK_IDS[-1]))
    # a replay's row and the id the bus log lacks are parsed in full
    assert rows[replayed]["replay_name"] == "zendesk-replay-1" and rows[replayed]["ticket_id"] is not None
    assert rows[SPARK_IDS[-1]] == full[SPARK_IDS[-1]] and rows[SPARK_IDS[-1]]["ticket_id"] is not None


def test_nothing_is_skipped_when_asked_or_when_the_id_comes_from_the_payload(tmp_path):
    for cfg, said in ((SinkConfig(uri=str(SPARK / "parquet"), parse_payloads="all"), "parse_payloads = all"),
                      (SinkConfig(uri=str(SPARK / "parquet"), id_path="$.id"), "id_path")):
        res = sink.read(cfg, DAY, LOCAL, match=MatchConfig(), bus_ids=spark_bus)
        assert res.details["payloads_not_parsed"] == 0 and said in res.details["payloads_parsed"]
        assert pc.all(pc.is_valid(res.ledger["ticket_id"])).as_py()
    unheld = sink.read(SinkConfig(uri=str(SPARK / "parquet")), DAY, LOCAL, bus_ids=lambda: None)
    assert unheld.details["payloads_not_parsed"] == 0 and "no bus log read whole" in unheld.details["payloads_parsed"]


def test_only_a_bus_log_read_whole_explains_rows(tmp_path):
    """The one completeness rule decides: a bus log with a reject that may hide an event, or read in part, or
    failed, explains nothing; one read whole gives its ids."""
    path = tmp_path / "bus.parquet"
    ledger.write_atomic(ledger.conform(pa.table({"hop": ["bus"] * 2, "eb_id": SPARK_IDS[:2],
                                                 "payload_digest": pa.array([7, 7], pa.uint64())})), path)
    whole = ledger.SourceResult("bus_log", None, path=path, rows=2)
    keys = explained.keyed(explained.uuid_keys(pa.array(SPARK_IDS[:3]))[0], np.full(3, 7, np.uint64))
    assert bus_ids(lambda: whole).holds(keys).tolist() == [True, True, False]
    hiding = dataclasses.replace(whole, rejects=ledger.rejects_table("bus_log", ["x:1"], ["not JSON"], ["{"]))
    assert bus_ids(lambda: hiding) is None
    assert bus_ids(lambda: dataclasses.replace(whole, complete=False)) is None
    assert bus_ids(lambda: dataclasses.replace(whole, path=None, rows=0)) is None

    def failed():
        raise OSError("the bus log's read failed")
    assert bus_ids(failed) is None and bus_ids(None) is None


def test_other_row_rules_still_apply_to_explained_ids(tmp_path):
    def edit(t):
        ids = t["partitionKey"].to_pylist()
        ids[0] = ids[0].upper()  # the same id in upper case: explained, stored as the same UUID
        return t.set_column(t.schema.get_field_index("partitionKey"), "partitionKey", pa.array(ids))
    root = spark_rows(tmp_path, edit)
    cfg = SinkConfig(uri=str(root))
    # an id shape the run does not accept is a reject even though the bus log "holds" it
    res = sink.read(cfg, DAY, LOCAL, match=MatchConfig(eb_id_pattern="[0-9a-f-]{36}"), bus_ids=spark_bus)
    assert res.rejected == 1 and "expected shape" in res.rejects["reason"][0].as_py()
    ok = sink.read(cfg, DAY, LOCAL, match=MatchConfig(), bus_ids=spark_bus)
    assert ok.details["payloads_not_parsed"] == len(SPARK_IDS)  # upper case or not, the same UUID
    assert ok.rejected == 0 and sorted(map(str, ok.ledger["eb_id"].to_pylist())) == sorted(SPARK_IDS)


# ---------------------------------------------------------------------------------------------------- whole runs


def test_a_run_judges_exactly_as_with_every_payload_parsed(moto, tmp_path):
    """Replays, redeliveries and log-target failures (sink rows the bus log lacks) on one simulated day: the
    verdicts, and every other output figure, are those of a run that parses every payload."""
    params = {"replay": 0.05, "log_target_failure": 0.05, "redelivery": 0.02, "bad_records": True}
    lazy = faultrun.run(moto, tmp_path / "lazy", **params)
    moto.reset()  # the second run loads the same stores: the DLQ would hold every message twice
    full = faultrun.run(moto, tmp_path / "full", sink={"parse_payloads": "all"}, **params)
    skipped, records = lazy.input("sink")["details"]["payloads_not_parsed"], lazy.input("sink")["records"]
    assert 0 < skipped < records and full.input("sink")["details"]["payloads_not_parsed"] == 0
    assert lazy.changed == {} and full.changed == {}
    assert {"replay", "redelivery"} <= set(lazy.truth_table["cause"].to_pylist())  # what the rule must keep
    # dlq_at is when moto's queue took the message: the load time of each run's stores
    verdicts = [pq.read_table(r / "run" / "verdicts.parquet").drop_columns(["dlq_at"])
                for r in (tmp_path / "lazy", tmp_path / "full")]
    assert verdicts[0].num_rows and verdicts[0].equals(verdicts[1])
    rejects = [pq.read_table(r / "run" / "evidence" / "sink.rejects.parquet") for r in (tmp_path / "lazy",
                                                                                    tmp_path / "full")]
    assert rejects[0].num_rows == 1 and rejects[0].equals(rejects[1])  # the other producer's row, parsed
    assert {k: v for k, v in lazy.outcome.summary.items() if k not in ("generated_at", "inputs")} == \
        {k: v for k, v in full.outcome.summary.items() if k not in ("generated_at", "inputs")}
