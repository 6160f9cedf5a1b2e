"""`reconcile collect zendesk`: the page cache kept through the day, against the Zendesk-compatible HTTP server."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from reconcile.aws import make_client
from reconcile.config import AwsConfig, ZendeskConfig
from reconcile.errors import ConfigError, StateError
from reconcile.simulate import zendesk_server as zs
from reconcile.sources import zendesk
from reconcile.sources.zendesk.cache import BUSY_EXIT, CacheBusy, PageCache
from reconcile.sources.zendesk.collect import collect
from reconcile.window import Window

T0 = 1_763_942_400  # 2025-11-24T00:00:00Z
TOKEN = "s3cr3t-collector-token"
EMAIL = "admin@example.com"
ENV = {"ZENDESK_EMAIL": EMAIL, "ZENDESK_API_TOKEN": TOKEN}
BASIC = "Basic " + base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()


def ts(sec: float) -> datetime:
    return datetime.fromtimestamp(sec, timezone.utc)


class Clock:
    """The server's and the collector's "now", moved on by the test (a simulated day)."""

    def __init__(self, sec: float):
        self.sec = sec

    def __call__(self) -> datetime:
        return ts(self.sec)


@pytest.fixture
def server(zendesk_servers):
    return lambda data, **kw: zendesk_servers(data, **{"per_page": 20, "auth": BASIC, **kw})


def spread(hours: int = 6, per_hour: int = 120) -> pa.Table:
    step = 3600 // per_hour
    audits = []
    for i in range(hours * per_hour):
        aid = i + 1
        audits.append({"id": aid, "ticket_id": 1000 + i % 97, "timestamp": T0 + 7 + i * step, "updater_id": 7,
                       "child_events": [{"id": aid * 100 + k, "event_type": "Comment"} for k in range(3)]})
    return zs.audits_table(audits)


def zcfg(h, cache, **kw) -> ZendeskConfig:
    kw.setdefault("requests_per_minute", 6000)
    kw.setdefault("max_wait", "10s")
    return ZendeskConfig(url=h.url, cache=str(cache) if cache else None, **kw)


def run_collect(h, cache, clock, **kw):
    start = kw.pop("start", ts(T0))
    aws = kw.pop("aws", AwsConfig())
    return collect(zcfg(h, cache, **kw), aws, start=start, clock=clock, environ=ENV)


def read(h, pages, start, end, now, cache=None, aws=None, **kw):
    return zendesk.read(zcfg(h, cache, **kw), Window(start=ts(start), end=ts(end), as_of=ts(now)), pages,
                        now=ts(now), progress=False, environ=ENV, aws=aws)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def sorted_ledger(r) -> list[dict]:
    return sorted(r.ledger.to_pylist(), key=lambda row: int(row["source_id"]))


def comparable(rows: list[dict]) -> list[dict]:
    """Ledger rows without source_ref (it names the page file, numbered per pages dir)."""
    return [{k: v for k, v in row.items() if k != "source_ref"} for row in rows]


def cached_ids(cache: Path) -> set[int]:
    out = set()
    for line in (cache / "index.jsonl").read_bytes().splitlines():
        doc = json.loads(gzip.decompress((cache / json.loads(line)["file"]).read_bytes()))
        out |= {c["id"] for a in doc["ticket_events"] for c in a["child_events"]}
    return out


def test_collecting_twice_is_idempotent_and_reports_how_far_behind(server, tmp_path):
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    first = run_collect(h, cache, clock)
    assert first.complete and first.new_pages == first.pages > 10
    assert first.listed_until == clock.sec - 60 and first.behind_s == 60  # the export's cut-off, no more
    files = snapshot(cache)
    last = json.loads((cache / "index.jsonl").read_bytes().splitlines()[-1])
    second = run_collect(h, cache, clock)
    assert second.complete and second.new_pages == 0 and second.requests == 1 and second.pages == first.pages
    # the page's bytes are still those fetched then: its fetched_at stays (the evidence said a fetch happened that
    # did not), and the probe that found nothing new is noted
    now_last = json.loads((cache / "index.jsonl").read_bytes().splitlines()[-1])
    assert now_last["fetched_at"] == last["fetched_at"] and now_last["probed_at"] >= last["fetched_at"]
    after = snapshot(cache)
    assert {k: v for k, v in after.items() if k not in ("index.jsonl", "collector.json")} == \
        {k: v for k, v in files.items() if k not in ("index.jsonl", "collector.json")}
    # every audit the export lists before now − 60 s is cached, once per page chain
    expected = {a["id"] * 100 + k for a in spread().to_pylist() if a["timestamp"] <= clock.sec - 60 for k in range(3)}
    assert cached_ids(cache) == expected
    clock.sec += 1800  # half an hour later: only the new pages
    third = run_collect(h, cache, clock)
    assert third.new_pages >= 1 and third.requests <= third.new_pages + 1
    assert third.to_dict()["behind_s"] == 60 and third.to_dict()["listed_until"] == "2025-11-24T03:29:00Z"


def test_a_run_after_collection_fetches_only_the_tail_and_reads_the_same(server, tmp_path):
    clock = Clock(T0 + 3 * 3600)
    data = spread()
    h = server(data, now=clock)
    cache = tmp_path / "cache"
    run_collect(h, cache, clock)
    clock.sec = T0 + 6 * 3600  # the nightly run, three hours later; the window is the first four hours
    before = snapshot(cache)
    n0 = len(h.requests)
    cached = read(h, tmp_path / "run-cached", T0, T0 + 4 * 3600, clock.sec, cache=cache)
    tail_requests = len(h.requests) - n0
    n1 = len(h.requests)
    fresh = read(h, tmp_path / "run-fresh", T0, T0 + 4 * 3600, clock.sec)
    all_requests = len(h.requests) - n1
    assert cached.complete and fresh.complete
    assert comparable(sorted_ledger(cached)) == comparable(sorted_ledger(fresh))
    assert cached.rejects.num_rows == fresh.rejects.num_rows == 0
    assert cached.details["cache"]["used"] and cached.details["cache"]["pages"] >= 15
    assert cached.details["replayed_pages"] == cached.details["cache"]["pages"]
    # only the hour after the collector stopped was fetched: about a quarter of the window's pages
    assert cached.details["requests"] == tail_requests <= all_requests // 3 + 2
    assert snapshot(cache) == before  # a run never writes the cache
    # the run's evidence holds every page it used, each with its sha256, so it stands alone
    pages = tmp_path / "run-cached"
    for line in (pages / "index.jsonl").read_bytes().splitlines():
        e = json.loads(line)
        assert hashlib.sha256((pages / e["file"]).read_bytes()).hexdigest() == e["sha256"]


def test_a_cache_that_covers_the_window_needs_no_request(server, tmp_path):
    clock = Clock(T0 + 5 * 3600)
    h = server(spread(), now=clock)
    run_collect(h, tmp_path / "cache", clock)
    n0 = len(h.requests)
    r = read(h, tmp_path / "run", T0, T0 + 4 * 3600, clock.sec + 3600, cache=tmp_path / "cache")
    assert r.complete and r.details["requests"] == 0 and len(h.requests) == n0
    assert len(r.ledger) == 4 * 120 * 3


def test_a_collector_whose_clock_runs_ahead_proves_nothing_past_zendesks_own_time(server, tmp_path):
    """The collector stamps its end-of-stream page with its own clock: five minutes fast, the page claimed to list
    every audit until four minutes after Zendesk's cut-off. The nightly run took that as proof, sent no request and
    was complete without the window's last audits. A cached page proves only Zendesk's end_time: the run asks Zendesk
    itself, and reads what a run without the cache reads."""
    zendesk_now = Clock(T0 + 4 * 3600 - 120)  # the collector's last cycle, two minutes before the window ends
    h = server(spread(), now=zendesk_now)
    run_collect(h, tmp_path / "cache", Clock(zendesk_now.sec + 300))  # its host's clock five minutes ahead
    zendesk_now.sec = T0 + 6 * 3600  # the nightly run
    n0 = len(h.requests)
    cached = read(h, tmp_path / "run", T0, T0 + 4 * 3600, zendesk_now.sec, cache=tmp_path / "cache")
    assert cached.details["cache"]["used"] and len(h.requests) > n0  # it asked Zendesk past the cached pages
    fresh = read(h, tmp_path / "fresh", T0, T0 + 4 * 3600, zendesk_now.sec)
    assert cached.complete and len(cached.ledger) == len(fresh.ledger) == 4 * 120 * 3
    assert comparable(sorted_ledger(cached)) == comparable(sorted_ledger(fresh))


def test_a_gap_in_the_cache_is_fetched(server, tmp_path):
    clock = Clock(T0 + 5 * 3600)
    data = spread()
    h = server(data, now=clock)
    cache = tmp_path / "cache"
    run_collect(h, cache, clock)
    entries = [json.loads(x) for x in (cache / "index.jsonl").read_bytes().splitlines()]
    (cache / entries[5]["file"]).write_bytes(b"not the page it was")  # a page changed or lost in the cache
    r = read(h, tmp_path / "run", T0, T0 + 4 * 3600, clock.sec, cache=cache)
    fresh = read(h, tmp_path / "fresh", T0, T0 + 4 * 3600, clock.sec)
    assert r.complete and r.details["cache"]["pages"] == 5 and r.details["requests"] > 0
    assert comparable(sorted_ledger(r)) == comparable(sorted_ledger(fresh))


def test_a_cache_bound_to_another_account_is_never_used(server, tmp_path):
    clock = Clock(T0 + 5 * 3600)
    other = server(spread(), now=clock)
    cache = tmp_path / "cache"
    run_collect(other, cache, clock)
    before = snapshot(cache)
    # this account's data differs: the other account's pages would give a wrong ledger
    mine = server(zs.synthetic_audits(200, start=T0 + 100, per_second=1, children=2, first_id=5000), now=clock)
    r = read(mine, tmp_path / "run", T0, T0 + 4 * 3600, clock.sec, cache=cache)
    assert r.complete and r.details["cache"]["used"] is False and "another account" in r.details["cache"]["why"]
    assert r.details["replayed_pages"] == 0
    assert {int(i) for i in r.ledger["source_id"].to_pylist()} == {(5000 + i) * 100 + k for i in range(200)
                                                                   for k in range(2)}
    assert snapshot(cache) == before
    with pytest.raises(ConfigError, match="another account"):
        run_collect(mine, cache, clock)
    assert snapshot(cache) == before


def test_the_rate_share_is_respected_by_server_count(server, tmp_path):
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock, rate_limit_per_minute=600)
    # 600/min account budget, a quarter of it: 150/min, a request every 0.4 s
    r = run_collect(h, tmp_path / "cache", clock, requests_per_minute=600, rate_share=0.25)
    log = h.requests
    assert r.complete and r.rate_limited == 0 and len(log) == r.requests > 10
    times = [q["time"] for q in log]
    span = times[-1] - times[0]
    assert (len(log) - 1) / span * 60 <= 150 * 1.05
    # in any 4 s the server saw at most 4 / 0.4 requests (+1 for the window's edge, +1 for arrival jitter: the
    # pacing keeps a fixed schedule, so one late request is followed by one on time)
    assert max(sum(1 for u in times if t <= u < t + 4) for t in times) <= 12
    # the next collector (cron, right after) keeps the pacing from the previous one's last request
    clock.sec += 600
    run_collect(h, tmp_path / "cache", clock, requests_per_minute=600, rate_share=0.25)
    assert h.requests[len(log)]["time"] - log[-1]["time"] >= 0.4 - 0.03


def cli(cache, h, *extra, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, **ENV, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "reconcile", "-v", "collect", "zendesk", "--zendesk-url", h.url,
                             "--cache", str(cache), "--start", ts(T0).isoformat(), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def config_file(tmp_path, rpm: float) -> str:
    p = tmp_path / "collect.toml"
    p.write_text(f"[zendesk]\nrequests_per_minute = {rpm}\nmax_wait = \"10s\"\n")
    return str(p)


def test_two_collectors_racing_one_wins_the_other_exits_cleanly(server, tmp_path):
    h = server(spread(), per_page=20)  # the real clock: all six hours are long listed
    cache = tmp_path / "cache"
    conf = config_file(tmp_path, 600)  # ~37 pages at 0.1 s: the winner holds the lock ~4 s
    procs = [cli(cache, h, "--config", conf, "--json") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, BUSY_EXIT], outs
    loser = outs[[p.returncode for p in procs].index(BUSY_EXIT)]
    winner = outs[[p.returncode for p in procs].index(0)]
    assert "being collected by another collector (pid" in loser[1] and json.loads(loser[0])["busy"] is True
    done = json.loads(winner[0])
    assert done["complete"] and done["new_pages"] == done["pages"] and done["behind_s"] < 600
    # each page fetched once: the loser sent no request
    starts = [q["start_time"] for q in h.requests]
    assert len(starts) == len(set(starts)) == done["requests"]
    for text in (*outs[0], *outs[1], *(p.read_bytes().decode("latin-1") for p in cache.iterdir() if p.is_file())):
        assert TOKEN not in text and BASIC.split()[1] not in text


def test_a_held_lock_makes_the_collector_exit_75(server, tmp_path):
    h = server(spread(), per_page=20)
    cache = tmp_path / "cache"
    with PageCache(str(cache), AwsConfig()).lock():
        p = cli(cache, h)
        out, err = p.communicate(timeout=60)
    assert p.returncode == BUSY_EXIT and "being collected by another collector" in err
    assert h.requests == [] and not (cache / "index.jsonl").exists()


def test_an_interrupted_collector_resumes(server, tmp_path):
    h = server(spread(), per_page=20)
    cache = tmp_path / "cache"
    p = cli(cache, h, "--config", config_file(tmp_path, 300))  # a page every 0.2 s
    deadline = time.monotonic() + 60
    while len(h.requests) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)  # no clean-up at all
    p.communicate(timeout=30)
    entries = [json.loads(x) for x in (cache / "index.jsonl").read_bytes().splitlines()]
    assert 5 <= len(entries) < 30
    n0 = len(h.requests)
    r = collect(zcfg(h, cache), AwsConfig(), start=ts(T0), environ=ENV)
    assert r.complete and r.pages == len(entries) + r.new_pages
    resumed = h.requests[n0]["start_time"]
    assert resumed == entries[-1]["next_start_time"] > T0  # where the killed one left off, not from the start
    everything = {a["id"] * 100 + k for a in spread().to_pylist() for k in range(3)}
    assert cached_ids(cache) == everything


def test_a_collector_that_steps_over_a_crowded_second_says_so(server, tmp_path):
    """More than a page of audits in one second: the export repeats that page for ever, and the collector steps one
    second past it, as a run does. It said complete (a warning in its log only), although a run of a window holding
    that second can never be complete from its cache: the cycle is incomplete (exit 3) and names the second; the
    collector still goes on to the end of the export."""
    clock = Clock(T0 + 3600)
    h = server(zs.same_second_audits(5, at=T0 + 100, per_page=20), per_page=20, now=clock)
    r = run_collect(h, tmp_path / "cache", clock)
    assert not r.complete
    assert [p for p in r.problems if "shares second" in p] == [
        f"More than a page of audits shares second {ts(T0 + 100):%Y-%m-%dT%H:%M:%SZ}: Zendesk's export repeats that "
        "page for ever, so the collector stepped one second past it; a run of a window holding that second is "
        "incomplete (events beyond its first page may be missing)."]
    assert json.loads((tmp_path / "cache" / "index.jsonl").read_bytes().splitlines()[-1])["end_of_stream"]


def test_a_collector_that_loses_its_s3_lock_writes_nothing_more(aws_cfg, monkeypatch):
    """Another collector took the lock over (this one paused past the lock's stale time): it wrote on until its
    cycle ended, every page and the whole index over the other's. The next write stops it, naming the lock."""
    import threading
    from reconcile import state
    monkeypatch.setattr(state, "LOCK_REFRESH_S", 0.3)
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="pages")
    cache = PageCache("s3://pages/zendesk/acme", aws_cfg)
    with pytest.raises(StateError, match=r"lost the lock s3://pages/zendesk/acme/collect.lock to another .* It wrote "
                                         r"nothing more; the next collector resumes"):
        with cache.lock():
            cache.write("page-00001.json.gz", b"first")
            s3.put_object(Bucket="pages", Key="zendesk/acme/collect.lock", Body=b'{"pid": 1, "host": "elsewhere"}')
            deadline = time.monotonic() + 10
            while any(t.name == "reconcile-state-lock" and t.is_alive() for t in threading.enumerate()) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            cache.write("page-00002.json.gz", b"second")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="pages")["Contents"]}
    assert "zendesk/acme/page-00001.json.gz" in keys and "zendesk/acme/page-00002.json.gz" not in keys


def test_a_cut_short_last_page_does_not_stop_the_next_collectors(server, tmp_path):
    """A crash can leave the last page's bytes short of what its index line says (the line is synced, the page is
    not): every later collector died on it with "unexpected EOFError". A page whose bytes are not its sha256 is no
    page: the next collector goes on, and a run reads the window whole (it fetches from the damaged page)."""
    clock = Clock(T0 + 7 * 3600)  # every audit listed: the next cycle finds nothing new
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    assert run_collect(h, cache, clock).complete
    last = json.loads((cache / "index.jsonl").read_bytes().splitlines()[-1])
    page = cache / last["file"]
    page.write_bytes(page.read_bytes()[: len(page.read_bytes()) // 2])
    clock.sec += 600
    again = run_collect(h, cache, clock)
    assert again.complete, again.problems
    # the damaged page is fetched again, not left in the chain for every run spanning it to fetch past
    chain_now = [json.loads(x) for x in (cache / "index.jsonl").read_bytes().splitlines()]
    assert all(hashlib.sha256((cache / e["file"]).read_bytes()).hexdigest() == e["sha256"] for e in chain_now)
    assert chain_now[-1]["start_time"] == last["start_time"] and again.new_pages == 1
    r = read(h, tmp_path / "run", T0, T0 + 4 * 3600, clock.sec, cache=cache)
    assert r.complete and len(r.ledger) == 4 * 120 * 3


def test_the_collector_keeps_an_s3_cache_and_a_run_reads_it(server, tmp_path, aws_cfg):
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="pages")
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    uri = "s3://pages/zendesk/acme"
    first = run_collect(h, uri, clock, aws=aws_cfg)
    assert first.complete and first.pages > 10
    again = run_collect(h, uri, clock, aws=aws_cfg)
    assert again.new_pages == 0 and again.requests == 1
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="pages")["Contents"]}
    assert "zendesk/acme/index.jsonl" in keys and "zendesk/acme/collect.lock" not in keys  # released
    clock.sec = T0 + 6 * 3600
    r = read(h, tmp_path / "run", T0, T0 + 4 * 3600, clock.sec, cache=uri, aws=aws_cfg)
    fresh = read(h, tmp_path / "fresh", T0, T0 + 4 * 3600, clock.sec)
    assert r.complete and r.details["cache"]["used"] and r.details["requests"] < fresh.details["requests"]
    assert comparable(sorted_ledger(r)) == comparable(sorted_ledger(fresh))
    # one collector holds the S3 lock (a conditional put): another exits busy without writing
    with PageCache(uri, aws_cfg).lock():
        with pytest.raises(CacheBusy, match="being collected by another collector"):
            run_collect(h, uri, clock, aws=aws_cfg)
    # a bucket that is not there is no busy cache (exit 75, "try again later", forever): the lock it cannot write
    # is named, with the key to check
    with pytest.raises(StateError, match=r"Cannot write the lock s3://no-such-bucket/acme/collect.lock: NoSuchBucket. "
                                         r"Check \[zendesk\] cache") as e:
        run_collect(h, "s3://no-such-bucket/acme", clock, aws=aws_cfg)
    assert not isinstance(e.value, CacheBusy) and e.value.exit_code == 4


def test_an_s3_cache_that_trickles_is_left_at_the_read_deadline(server, tmp_path, aws_cfg):
    """A gateway sends the S3 cache's pages a byte every half second (faster than pyarrow's low-speed limit, slower
    than any day): the run waited on it past [aws] read_deadline, which every other AWS read keeps (hang review). The
    copy is left at the deadline, the window fetched from the API, the same events read."""
    from dataclasses import replace

    from proxy import Proxy
    make_client("s3", aws_cfg).create_bucket(Bucket="pages")
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    uri = "s3://pages/zendesk/acme"
    assert run_collect(h, uri, clock, aws=aws_cfg).complete
    proxy = Proxy(aws_cfg.endpoint_url, trickle=lambda method, path: method == "GET" and ".json.gz" in path)
    started = time.monotonic()
    try:
        r = read(h, tmp_path / "run", T0, T0 + 2 * 3600, clock.sec, cache=uri,
                 aws=replace(aws_cfg, endpoint_url=proxy.endpoint, read_deadline="3s"))
    finally:
        proxy.close()
    assert time.monotonic() - started < 3 + 30
    assert r.complete and r.details["cache"] == {"uri": uri, "used": False, "pages": 0,
                                                 "why": "it did not answer within [aws] read_deadline = 3s"}
    fresh = read(h, tmp_path / "fresh", T0, T0 + 2 * 3600, clock.sec)
    assert comparable(sorted_ledger(r)) == comparable(sorted_ledger(fresh))
    assert not list((tmp_path / "run").glob("*seed*"))  # nothing of the copy left running in the pages dir


def test_a_collector_the_api_wears_out_says_so_and_the_next_resumes(server, tmp_path):
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    h.set_faults(errors=10**9)
    r = run_collect(h, cache, clock, max_wait="1s")
    assert not r.complete and "resumes from start_time" in r.problems[0] and r.pages == 0
    h.set_faults(errors=0)
    again = run_collect(h, cache, clock)
    assert again.complete and again.pages > 10


def test_follow_collects_a_cycle_every_interval_until_sigterm(server, tmp_path):
    h = server(spread(hours=1), per_page=20)
    cache = tmp_path / "cache"
    p = cli(cache, h, "--follow", "--interval", "1s", "--json", "--config", config_file(tmp_path, 6000))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for q in h.requests if q["status"] == 200) < 11:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    cycles = [json.loads(line) for line in out.splitlines()]
    assert len(cycles) >= 2 and all(c["complete"] for c in cycles)
    assert cycles[0]["new_pages"] == cycles[0]["pages"] > 3 and cycles[-1]["new_pages"] == 0
    assert cycles[-1]["behind_s"] is not None and cycles[-1]["behind_s"] < 120


def test_the_whole_job_gives_the_same_verdicts_with_the_cache(moto, tmp_path):
    """A simulated day over moto and the Zendesk server: collected through the day, then judged with and without the
    cache — the same verdicts and exit code; with the cache, fewer export requests."""
    from dataclasses import replace

    import pyarrow.parquet as pq

    import simday
    from reconcile.run import execute
    from reconcile.simulate.demo import DEMO_EMAIL, DEMO_TOKEN, ZENDESK_BUDGET, demo_config
    sim, stores, aws = simday.load(moto, tmp_path)
    auth = simday.AUTH
    w = sim.window
    clock = Clock((w.start + (w.end - w.start) * 0.75).timestamp())  # three quarters through the day
    cache = tmp_path / "cache"
    with zs.start(zs.load(tmp_path / "sim"), now=clock, per_page=50, rate_limit_per_minute=ZENDESK_BUDGET,
                  auth=auth) as zd:
        cfg = demo_config(stores, zd.url, moto.endpoint, sim.params)
        got = collect(replace(cfg.zendesk, cache=str(cache)), aws, start=w.start - timedelta(hours=1), clock=clock,
                      environ={"ZENDESK_EMAIL": DEMO_EMAIL, "ZENDESK_API_TOKEN": DEMO_TOKEN})
        assert got.complete and got.pages > 3
        clock.sec = w.as_of.timestamp()
        n0 = len(zd.requests)
        with_cache = execute(replace(cfg, zendesk=replace(cfg.zendesk, cache=str(cache))), w, tmp_path / "a",
                             progress=False)
        n1 = len(zd.requests)
        without = execute(cfg, w, tmp_path / "b", progress=False)
        n2 = len(zd.requests)
    assert with_cache.exit_code == without.exit_code
    verdicts = [sorted(pq.read_table(d / "verdicts.parquet", columns=["source_id", "verdict"]).to_pylist(),
                       key=lambda r: r["source_id"]) for d in (tmp_path / "a", tmp_path / "b")]
    assert verdicts[0] == verdicts[1] and len(verdicts[0]) > 100
    zin = next(i for i in with_cache.summary["inputs"] if i["source"] == "zendesk")
    assert zin["complete"]
    assert 0 < n1 - n0 < n2 - n1  # only the tail was fetched


@pytest.mark.parametrize("values,named", [
    ({"rate_share": 0}, "[zendesk] rate_share = 0 is not valid"),
    ({"rate_share": 1.5}, "[zendesk] rate_share = 1.5 is not valid"),
    ({"cache": "https://acme.zendesk.com"}, "[zendesk] cache"),
    ({"cache": "/srv/pages", "pages_dir": "/srv/pages/"}, "cache and pages_dir are the same folder"),
])
def test_collector_keys_are_validated(values, named):
    from reconcile import config
    with pytest.raises(ConfigError) as e:
        config.build(None, {"zendesk": values}, environ={})
    assert named in str(e.value)


def test_collect_without_a_cache_is_a_configuration_error(server, tmp_path):
    h = server(spread(hours=1))
    p = subprocess.run([sys.executable, "-m", "reconcile", "collect", "zendesk", "--zendesk-url", h.url],
                       capture_output=True, text=True, env={**os.environ, **ENV}, timeout=60)
    assert p.returncode == 4 and "Set [zendesk] cache" in p.stderr and h.requests == []


def test_an_empty_page_that_is_not_the_end_stops_the_collector_with_a_problem(server, tmp_path):
    """The collector meets a page that lists nothing, is not the end of the stream and does not move on: it stops
    with that as a problem (not "complete"), and the next collector carries on from there. A run reading the cache
    meanwhile fetches past it itself, and is incomplete while the API still answers that way."""
    clock = Clock(T0 + 3 * 3600)
    data = spread()
    h = server(data, now=clock)
    cache = tmp_path / "cache"
    h.set_faults(stall=1)
    stalled = run_collect(h, cache, clock)
    assert not stalled.complete and stalled.requests == 1
    assert "empty page that is not the end of the stream" in stalled.problems[0]
    h.set_faults(stall=1)
    r = read(h, tmp_path / "run", T0, T0 + 2 * 3600, clock.sec, cache=cache)
    assert not r.complete and any("not the end of the stream: it lists nothing" in p for p in r.problems)
    resumed = run_collect(h, cache, clock)
    assert resumed.complete and resumed.listed_until == clock.sec - 60
    expected = {a["id"] * 100 + k for a in data.to_pylist() if a["timestamp"] <= clock.sec - 60 for k in range(3)}
    assert cached_ids(cache) == expected
    again = read(h, tmp_path / "run-again", T0, T0 + 2 * 3600, clock.sec, cache=cache)
    direct = read(h, tmp_path / "run-direct", T0, T0 + 2 * 3600, clock.sec)  # no cache, no fault
    assert again.complete and direct.complete
    assert comparable(sorted_ledger(again)) == comparable(sorted_ledger(direct)) and again.ledger.num_rows > 0


def test_an_answer_that_ignores_start_time_stops_the_collector(server, tmp_path):
    """The first page served to every request (a proxy dropping the query string): the collector stops with a problem
    within a few requests instead of stepping a 'repeating second' forever, and caches nothing past it."""
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    h.set_faults(ignore_start_time=True)
    got = run_collect(h, tmp_path / "cache", clock)
    assert not got.complete and got.requests == 3
    assert any("does not follow start_time" in p and "(not cached)" in p for p in got.problems), got.problems


def _rewrite_index(cache: Path, edit) -> None:
    lines = [json.loads(x) for x in (cache / "index.jsonl").read_bytes().splitlines()]
    (cache / "index.jsonl").write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in edit(lines)))


@pytest.mark.parametrize("how", ["end_time later", "lines skipped"])
def test_an_index_line_that_claims_more_than_its_page_is_not_proof(server, tmp_path, how):
    """Only a cached page's bytes were checked (sha256), never what its index line says of them: one line's end_time
    moved five hours on made the run complete with 345 of 1,440 events and no request; lines 7-12 cut out with line
    6's next_start_time pointing at line 13 skipped an hour. What a page proves is read from its body: a line that
    says more ends the replay there, and the run fetches from that page's start."""
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    run_collect(h, cache, clock)

    def edit(lines):
        if how == "end_time later":
            lines[5]["end_time"] = T0 + 5 * 3600
            return lines
        lines[5]["next_start_time"] = lines[12]["start_time"]
        return lines[:6] + lines[12:]
    _rewrite_index(cache, edit)
    clock.sec = T0 + 6 * 3600
    end = T0 + (4 if how == "end_time later" else 2) * 3600
    cached = read(h, tmp_path / "run", T0, end, clock.sec, cache=cache)
    fresh = read(h, tmp_path / "fresh", T0, end, clock.sec)
    assert cached.complete and len(cached.ledger) == len(fresh.ledger) == (end - T0) // 3600 * 120 * 3
    assert comparable(sorted_ledger(cached)) == comparable(sorted_ledger(fresh))
    assert cached.details["requests"] > 0 and cached.details["saved_pages_dropped"] >= 1
    # the run's own pages dir holds the pages it took, each line what its page says
    pages = tmp_path / "run"
    lines = [json.loads(x) for x in (pages / "index.jsonl").read_bytes().splitlines()]
    assert [e["start_time"] for e in lines[1:]] == [e["next_start_time"] for e in lines[:-1]]
    assert sorted(p.name for p in pages.glob("page-*.json.gz")) == sorted(e["file"] for e in lines)


@pytest.mark.parametrize("field", ["end_time", "next_start_time", "start_time", "end_of_stream"])
def test_an_index_line_of_the_wrong_types_ends_the_chain(server, tmp_path, field):
    """A line that parses but holds null for a field crashed the run (TypeError, no report) or sent start_time=None
    to Zendesk (HTTP 400, "check [zendesk] url") from the run and from every collector cycle after. It ends the chain
    as a torn line does: the run fetches from there, the collector cuts the index there and goes on."""
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    run_collect(h, cache, clock)

    def edit(lines):
        lines[-1 if field == "next_start_time" else 5][field] = None
        return lines
    _rewrite_index(cache, edit)
    clock.sec = T0 + 4 * 3600
    cached = read(h, tmp_path / "run", T0, T0 + 2 * 3600, clock.sec, cache=cache)
    fresh = read(h, tmp_path / "fresh", T0, T0 + 2 * 3600, clock.sec)
    assert cached.complete and comparable(sorted_ledger(cached)) == comparable(sorted_ledger(fresh))
    again = run_collect(h, cache, clock)
    assert again.complete and again.new_pages >= 1 and again.behind_s == 60
    assert all(json.loads(x)[field] is not None for x in (cache / "index.jsonl").read_bytes().splitlines())


def test_a_page_lost_from_the_middle_of_the_cache_is_fetched_again_by_the_collector(server, tmp_path):
    """The collector checked only its last page: with page 3 of 19 gone it said "1m behind", complete, on every
    cycle, while every nightly run could use two pages and fetched the rest of the day from Zendesk. It lists the
    cache: a page gone is fetched again from its start, and a run then needs the cache only."""
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    first = run_collect(h, cache, clock)
    lines = [json.loads(x) for x in (cache / "index.jsonl").read_bytes().splitlines()]
    (cache / lines[2]["file"]).unlink()
    again = run_collect(h, cache, clock)
    assert again.complete and again.new_pages == first.pages - 2 and again.pages == first.pages
    clock.sec = T0 + 6 * 3600
    n0 = len(h.requests)
    r = read(h, tmp_path / "run", T0, T0 + 2 * 3600, clock.sec, cache=cache)
    assert r.complete and len(h.requests) == n0 and r.details["cache"]["pages"] >= 10
    assert r.details["cache"]["listed_until"] >= "2025-11-24T02:00:00Z"  # a time a person reads, as is read_until
    assert r.details["cache"]["read_until"] == "2025-11-24T02:00:00Z"  # the window end (no reach here)


def test_the_collector_resumes_only_from_what_its_last_page_says(server, tmp_path):
    """The collector resumed from its last index line's next_start_time, trusting it: a line claiming an hour more
    left that hour out of the cache for good (every run then dropped the page and fetched the rest of the day). The
    line is checked against its page's body, as a run's replay checks it, and fetched again when it says more."""
    clock = Clock(T0 + 3 * 3600)
    h = server(spread(), now=clock)
    cache = tmp_path / "cache"
    run_collect(h, cache, clock)

    def edit(lines):
        lines[-1]["next_start_time"] += 3600
        return lines
    _rewrite_index(cache, edit)
    clock.sec += 600
    again = run_collect(h, cache, clock)
    assert again.complete and again.behind_s == 60
    lines = [json.loads(x) for x in (cache / "index.jsonl").read_bytes().splitlines()]
    assert [e["start_time"] for e in lines[1:]] == [e["next_start_time"] for e in lines[:-1]]
    expected = {a["id"] * 100 + k for a in spread().to_pylist() if a["timestamp"] <= clock.sec - 60 for k in range(3)}
    assert cached_ids(cache) == expected
