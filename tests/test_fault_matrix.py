"""The fault matrix: a fault in any store must never yield a false "clean", a hang or a crash (issue 12).

Each row of CASES is one store x fault, run through the whole job over the real servers (moto's S3/SQS/CloudWatch,
the Zendesk-compatible HTTP server with its fault modes): the stores of a small simulated day are changed on disk
before they are served, and/or the Zendesk server misbehaves, and/or the config is changed. Every row asserts

- the exit code and status (a harmless fault leaves the day as it is: it has losses by design, so "loss", exit 2),
- that the store's problems and the report name the problem (a phrase of it),
- that no event changed verdict silently: a run that does not say "incomplete" gives every event the simulator's
  verdict, and an incomplete run names the store that is incomplete in the report's alerts,
- that the run ended in bounded time.

To add a case, add a row (sink and DLQ faults go here too); `stores` gets the stores folder and the simulation and
may return config overrides.
"""

from __future__ import annotations

import base64
import gzip
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from datetime import datetime, timezone

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup

from reconcile import completeness, config, emission
from reconcile.aws import make_client
from reconcile.config import BusLogConfig
from reconcile.run import execute
from reconcile.simulate import aws_load, zendesk_server
from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN, ZENDESK_BUDGET, demo_config, demo_environment
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import FOREIGN_SOURCE, FOREIGN_TEXT, write_stores
from reconcile.sources import buslog, zendesk
from reconcile.window import Window

pytestmark = pytest.mark.usefixtures("restore_environment")  # demo_environment sets env vars

SMALL = dict(events=300, batch_seconds=3600, files_per_batch=1, log_streams=2)
DAYS = {
    "default": SimParams(seed=31, **SMALL),  # another producer's events planted in the log, sink and DLQ
    "garbage": SimParams(seed=32, garbage_records=True, **SMALL),  # and a cut-off JSON / a line without "id"
}
AUTH = "Basic " + base64.b64encode(f"{DEMO_EMAIL}/token:{DEMO_TOKEN}".encode()).decode()
QUICK = {"zendesk": {"max_wait": "2s", "timeout": "1s"}}  # a misbehaving Zendesk gives up within seconds


# --- faults on disk ---------------------------------------------------------------------------------------------------


def log_objects(stores: Path) -> list[Path]:
    return sorted((stores / "logs-archive" / "exports").rglob("*.gz"))


def rewrite_log(stores: Path, change: Callable[[bytes], bytes]) -> None:
    obj = log_objects(stores)[0]
    obj.write_bytes(gzip.compress(change(gzip.decompress(obj.read_bytes())), mtime=0))


def empty_object(stores, sim):
    log_objects(stores)[0].write_bytes(b"")


def random_bytes(stores, sim):
    log_objects(stores)[0].write_bytes(b"\x00" + random.Random(7).randbytes(4095))  # no gzip magic


def truncated_gzip(stores, sim):
    obj = log_objects(stores)[0]
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])


def no_log_objects(stores, sim):
    """The export prefix holds only CloudWatch's aws-logs-write-test probe: no log object at all."""
    for obj in log_objects(stores):
        obj.unlink()


def no_prefix(stores, sim):
    shutil.rmtree(stores / "logs-archive" / "exports")


def non_utf8_id(stores, sim):
    def change(text: bytes) -> bytes:
        at = text.index(b'"id":"') + len(b'"id":"') + 3
        return text[:at] + b"\xff" + text[at + 1:]
    rewrite_log(stores, change)


def id_not_uuid(stores, sim):
    def change(text: bytes) -> bytes:
        at = text.index(b'"id":"') + len(b'"id":"')
        end = text.index(b'"', at)
        return text[:at] + b"evt-00000000001" + text[end:]
    rewrite_log(stores, change)


def bad_metrics_timestamp(stores, sim):
    doc = orjson.loads((stores / "metrics" / "get-metric-data.json").read_bytes())
    doc["MetricDataResults"][0]["Timestamps"][0] = "yesterday-ish"
    saved = stores.parent / "saved-metrics.json"  # not in the stores: moto's loader would choke on it
    saved.write_bytes(orjson.dumps(doc))
    return {"metrics": {"uri": str(saved)}}


def in_window_audit(sim) -> int:
    """An audit created in the middle of the window (its events are judged)."""
    t = sim.audits
    mid = int(sim.window.start.timestamp()) + 12 * 3600
    ids = t.filter(pc.greater_equal(t["timestamp"], mid))["id"]
    return ids[0].as_py()


def corrupt_audit(make: Callable[[int], bytes]) -> Callable:
    def fault(stores, sim):
        return {"_zendesk_faults": {"corrupt": {(aid := in_window_audit(sim)): make(aid)}}}
    return fault


def audit_json(aid: int, **fields) -> bytes:
    base = {"id": aid, "ticket_id": 5, "timestamp": 0, "created_at": "2026-11-23T12:00:00Z", "event_type": "Audit",
            "child_events": [{"id": aid * 10, "event_type": "Comment"}]}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


# --- the table --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    store: str  # the input the fault hits (summary inputs[].source)
    fault: str  # the test id
    status: str  # what the run must say
    names: str  # a phrase the store's problems and the report must contain ("" when the fault is harmless)
    stores: Callable | None = None  # (stores dir, simulation) -> config overrides or None
    zendesk: dict = field(default_factory=dict)  # zendesk_server.Faults fields
    config: dict = field(default_factory=dict)  # {section: {key: value}}
    day: str = "default"
    max_seconds: float = 60


EXIT = {"clean": 0, "pending": 1, "loss": 2, "incomplete": 3}
UNREADABLE = "could not be read and may be in-window events"  # completeness.decide's problem

CASES = [
    # harmless: the day's own non-Zendesk records (another producer's events) and a metrics hiccup
    Case("bus_log", "another_producers_event", "loss", ""),
    Case("metrics", "saved_response_bad_timestamp", "loss", "unreadable timestamp", stores=bad_metrics_timestamp),
    # the bus log
    Case("bus_log", "zero_byte_object", "incomplete", "empty object (0 bytes)", stores=empty_object),
    Case("bus_log", "random_bytes_not_gzip", "incomplete", "not gzip data", stores=random_bytes),
    Case("bus_log", "truncated_gzip", "incomplete", "truncated gzip stream", stores=truncated_gzip),
    Case("bus_log", "export_prefix_without_log_objects", "incomplete", "No log objects under", stores=no_log_objects),
    Case("bus_log", "export_prefix_missing", "incomplete", "does not exist", stores=no_prefix),
    Case("bus_log", "non_utf8_byte_in_id", "incomplete", UNREADABLE, stores=non_utf8_id),
    Case("bus_log", "eventbridge_id_not_a_uuid", "incomplete", UNREADABLE, stores=id_not_uuid),
    Case("bus_log", "unparseable_lines", "incomplete", UNREADABLE, day="garbage"),
    Case("sink", "unparseable_row", "incomplete", UNREADABLE, day="garbage"),
    Case("dlq", "unparseable_message", "incomplete", UNREADABLE, day="garbage"),
    # Zendesk: malformed audits (served by the Zendesk-compatible server in place of a real one)
    Case("zendesk", "audit_without_created_at", "incomplete", UNREADABLE,
         stores=corrupt_audit(lambda aid: audit_json(aid, created_at=None))),
    Case("zendesk", "child_without_id", "incomplete", UNREADABLE,
         stores=corrupt_audit(lambda aid: audit_json(aid, child_events=[{"event_type": "Comment"}]))),
    Case("zendesk", "ticket_id_abc", "incomplete", UNREADABLE,
         stores=corrupt_audit(lambda aid: audit_json(aid, ticket_id="abc"))),
    Case("zendesk", "non_utf8_bytes", "incomplete", UNREADABLE,
         stores=corrupt_audit(lambda aid: audit_json(aid).replace(b'"Audit"', b'"Au\xffdit"'))),
    # Zendesk: a server that would keep a naive client busy forever
    Case("zendesk", "retry_after_0_forever", "incomplete", "429", config=QUICK, max_seconds=15,
         zendesk={"throttle": 10**9, "retry_after": 0}),
    Case("zendesk", "429_without_retry_after_forever", "incomplete", "429", config=QUICK, max_seconds=15,
         zendesk={"throttle": 10**9, "retry_after": None}),
    Case("zendesk", "body_trickled_1_byte_per_2s", "incomplete", "timeouts", config=QUICK, max_seconds=15,
         zendesk={"trickle": 10**9, "trickle_interval": 2.0}),
]


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Each simulated day once, written to disk: {name: (simulation, folder)}."""
    out = {}
    for name, params in DAYS.items():
        sim = simulate(params)
        folder = tmp_path_factory.mktemp(f"day-{name}")
        write_stores(sim, folder)
        out[name] = (sim, folder)
    return out


class Served:
    """A moto server of this module's own, holding the stores of the last case: a case whose stores are the same
    (a Zendesk or metrics fault) reuses them instead of loading them again (a load is most of a case's time)."""

    def __init__(self):
        self.moto = aws_load.start_moto()
        self.aws = config.AwsConfig(endpoint_url=self.moto.endpoint, region="us-east-1")
        self.key = None
        self.loaded: dict = {}

    def load(self, stores: Path, day: str) -> dict:
        files = sorted(p for p in stores.rglob("*") if p.is_file())
        key = (day, tuple((p.relative_to(stores).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
        if key != self.key:
            self.moto.reset()
            self.loaded = aws_load.load_stores(stores, self.aws)
            self.key = key
        return self.loaded


@pytest.fixture(scope="module")
def served():
    s = Served()
    yield s
    s.moto.stop()


def overridden(cfg: config.Config, overrides: dict) -> config.Config:
    for section, values in overrides.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    return cfg


def run_case(case: Case, days, served: Served, tmp_path):
    """Serve the (changed) stores and run the job; returns (outcome, seconds, simulation, run folder)."""
    sim, folder = days[case.day]
    shutil.copytree(folder, tmp_path / "sim")  # copy2 keeps mtimes: unchanged stores keep Served's key
    stores = tmp_path / "sim" / "stores"
    overrides = {k: dict(v) for k, v in case.config.items()}
    for k, v in ((case.stores(stores, sim) if case.stores else None) or {}).items():
        overrides.setdefault(k, {}).update(v)
    faults = dict(case.zendesk, **overrides.pop("_zendesk_faults", {}))
    demo_environment()
    loaded = served.load(stores, case.day)
    run_dir = tmp_path / "run"
    with zendesk_server.start(zendesk_server.load(tmp_path / "sim"), now=sim.window.as_of,
                              rate_limit_per_minute=ZENDESK_BUDGET, auth=AUTH,
                              faults=zendesk_server.Faults(**faults)) as zd:
        # The DLQ is read from its S3 archive: a live read leaves the messages invisible for the visibility timeout,
        # and the next case reuses the loaded stores (Served).
        overrides.setdefault("dlq", {}).setdefault("uri", loaded["dlq_uri"])
        cfg = overridden(demo_config(loaded, zd.url, served.moto.endpoint, sim.params), overrides)
        t = time.monotonic()
        outcome = execute(cfg, sim.window, run_dir, progress=False)
        seconds = time.monotonic() - t
    return outcome, seconds, sim, run_dir


def verdicts(run_dir: Path) -> dict:
    t = pq.read_table(run_dir / "verdicts.parquet", columns=["source_id", "verdict"])
    return dict(zip(t["source_id"].to_pylist(), t["verdict"].to_pylist()))


def truth(sim) -> dict:
    return dict(zip(sim.truth["source_id"].to_pylist(), sim.truth["verdict"].to_pylist()))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.store}-{c.fault}" for c in CASES])
def test_fault(case: Case, days, served, tmp_path):
    outcome, seconds, sim, run_dir = run_case(case, days, served, tmp_path)
    s = outcome.summary
    assert (s["status"], outcome.exit_code) == (case.status, EXIT[case.status]), s["inputs"]
    assert seconds < case.max_seconds
    store = next(i for i in s["inputs"] if i["source"] == case.store)
    report = BeautifulSoup((run_dir / "report.html").read_text(), "html.parser")
    if case.names:
        assert any(case.names in p for p in store["problems"]), store["problems"]
        assert case.names in report.get_text(" ")
    else:
        assert store["complete"] and not store["problems"], store
    if case.status == "incomplete":
        # the store is named in the report's alerts, and only required stores with a problem are incomplete
        assert not store["complete"]
        alerts = [li.get_text(" ", strip=True) for li in report.select("#status ul.alerts li")]
        assert any(a.startswith(f"{case.store} incomplete") for a in alerts), alerts
        assert all(i["complete"] or i["problems"] for i in s["inputs"])
        # a loss rests on what the stores do not hold: with a store a loss at a hop rests on read in part, no loss at
        # that hop is final (held pending, and carried to the next run: queries/rules.sql loss_held_by)
        partial = {i["source"] for i in s["inputs"] if not i["complete"]}
        found = set(verdicts(run_dir).values())
        for hop, stores in emission.rests_on().items():
            if partial & set(stores):
                assert not found & {r["verdict"] for r in emission.verdict_rows() if r["loss_hop"] == hop}, hop
    else:
        assert verdicts(run_dir) == truth(sim)  # nothing changed silently


def test_harmless_rejects_are_counted_and_shown_with_their_kind(days, served, tmp_path):
    """Another producer's events are rejected as `not_zendesk` (counted, kept in evidence), and do not make the
    day incomplete; the cut-off and id-less records of the garbage day are `unparseable` and do."""
    for day, kinds in (("default", {"not_zendesk"}), ("garbage", {"not_zendesk", "unparseable"})):
        case = Case("bus_log", day, "loss" if day == "default" else "incomplete", "", day=day)
        outcome, _, _, run_dir = run_case(case, days, served, tmp_path / day)
        for store in ("bus_log", "sink", "dlq"):
            rej = pq.read_table(run_dir / "evidence" / f"{store}.rejects.parquet")
            assert set(rej["kind"].to_pylist()) == kinds, (day, store)
            foreign = rej.filter(pc.equal(rej["kind"], "not_zendesk"))
            assert foreign.num_rows >= 1 and all(FOREIGN_SOURCE in r for r in foreign["reason"].to_pylist())
        assert outcome.summary["status"] == case.status


def test_non_utf8_id_is_a_reject_never_an_id_with_a_replacement_character(days, served, tmp_path):
    case = Case("bus_log", "non_utf8_byte_in_id", "incomplete", UNREADABLE, stores=non_utf8_id)
    _, _, _, run_dir = run_case(case, days, served, tmp_path)
    ids = pq.read_table(run_dir / "evidence" / "bus.parquet", columns=["eb_id"])["eb_id"].to_pylist()
    assert ids and not any("\ufffd" in str(i) for i in ids)
    rej = pq.read_table(run_dir / "evidence" / "bus_log.rejects.parquet").to_pylist()
    assert [r["kind"] for r in rej if "\\xff" in (r["raw"] or "")] == ["unparseable"]


def test_saved_pages_of_another_account_are_never_replayed(days, tmp_path):
    """Pages saved for one Zendesk URL, offered to a run against another account: never replayed (none of the first
    account's events is credited to the second), set aside unchanged, and the window fetched from the second."""
    sim, folder = days["default"]
    demo_environment()
    pages = tmp_path / "pages"
    audits = zendesk_server.load(folder)
    with zendesk_server.start(audits, now=sim.window.as_of, auth=AUTH) as first:
        cfg = config.ZendeskConfig(url=first.url, requests_per_minute=600)
        r1 = zendesk.read(cfg, sim.window, pages, now=sim.window.as_of, progress=False)
        assert r1.complete and r1.records
    before = {p.name: p.read_bytes() for p in pages.iterdir()}
    other_audits = audits.slice(0, audits.num_rows // 2)  # another account: other events
    with zendesk_server.start(other_audits, now=sim.window.as_of, auth=AUTH) as other:
        r2 = zendesk.read(replace(cfg, url=other.url), sim.window, pages, now=sim.window.as_of, progress=False)
        assert other.requests and other.requests[0]["start_time"] == int(sim.window.start.timestamp())
    assert r2.complete and r2.details["replayed_pages"] == 0
    expected = {str(c["id"]) for a in other_audits.to_pylist() for c in a["child_events"]
                if sim.window.start.timestamp() <= a["timestamp"] < sim.window.end.timestamp()}
    assert set(r2.ledger["source_id"].to_pylist()) == expected < set(r1.ledger["source_id"].to_pylist())
    aside = Path(r2.details["pages_set_aside"])
    assert aside.parent == pages and {p.name: p.read_bytes() for p in aside.iterdir()} == before


@pytest.mark.parametrize("name,body,names", [
    ("2026/11/23/10/delivery-1.gz", b"", "empty object (0 bytes)"),
    ("2026/11/23/10/delivery-1.gz", b"\x00" + random.Random(3).randbytes(2047), "not gzip data"),
    ("2026/11/23/10/delivery-1", b"", "empty object (0 bytes)"),
    ("2026/11/23/10/delivery-1", random.Random(4).randbytes(2048), UNREADABLE),  # plain text allowed: no record
], ids=["gz-zero-bytes", "gz-not-gzip", "plain-zero-bytes", "plain-random-bytes"])
def test_firehose_objects_that_cannot_be_read_make_the_bus_log_incomplete(moto, name, body, names):
    """The same faults in a Firehose delivery (format firehose) over moto's S3, next to a good object."""
    aws = config.AwsConfig(endpoint_url=moto.endpoint, region="us-east-1")
    s3 = make_client("s3", aws)
    s3.create_bucket(Bucket="firehose")
    good = orjson.dumps({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g", "logStream": "s",
                         "subscriptionFilters": [], "logEvents": [{"id": "1", "timestamp": 0,
                                                                   "message": FOREIGN_TEXT}]})
    s3.put_object(Bucket="firehose", Key="2026/11/23/10/delivery-0.gz", Body=gzip.compress(good))
    s3.put_object(Bucket="firehose", Key=name, Body=body)
    w = Window(start=datetime(2026, 11, 23, tzinfo=timezone.utc), end=datetime(2026, 11, 24, tzinfo=timezone.utc),
               as_of=datetime(2026, 11, 24, 2, tzinfo=timezone.utc))
    r = completeness.decide(buslog.read(BusLogConfig(uri="s3://firehose/2026", format="firehose"), w, aws),
                            others_have_records=True)
    assert not r.complete and any(names in p for p in r.problems), r.problems
    assert r.details["objects"] == 2
