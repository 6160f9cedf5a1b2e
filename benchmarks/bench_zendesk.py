"""The Zendesk source at the documented budget, in accelerated simulated time, against the local Zendesk server.

    .venv/bin/python benchmarks/bench_zendesk.py [--events 1000000] [--budget 10 30] [--real-rpm 240] [--day-speed 720]
    .venv/bin/python benchmarks/bench_zendesk.py --pacing [--pages 600] [--rpm 600] [--per-page 100]

Accelerated time: the server's clock (what the export lists: audits older than now − 60 s) runs `speed` times faster
than the real one, and the budget the server enforces and the client paces at is scaled by the same factor, so a
real second is `speed` simulated seconds in every respect (speed = real_rpm / budget when fetching the day, so the
machine sees the same real request rate at every budget; `--day-speed` through the day). Three figures:

1. Without a collector: the nightly run fetches the whole day at `budget` requests/minute (10, the documented limit
   of the incremental export; 30 with High Volume): pages per simulated hour and the simulated length of the stage.
2. The collector through the day: cron every `--cron` simulated minutes over a day whose audits arrive through it
   (the server's clock sweeps the day at `--day-speed`): pages, requests, and how far behind real time it stayed.
3. The nightly run with that cache, in real time (the server at the real budget, its clock fixed at day end + 2 h):
   the Zendesk stage's wall time, pages replayed, requests sent, and the same ledger as the run of step 1.

`--pacing` keeps the older check: does the pacing use the budget, exactly once (duplicates / missed both 0)?
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconcile.config import AwsConfig, ZendeskConfig  # noqa: E402
from reconcile.simulate import zendesk_server as zs  # noqa: E402
from reconcile.simulate.generate import AUDIT_SCHEMA, CHILD_TYPE  # noqa: E402
from reconcile.sources import zendesk  # noqa: E402
from reconcile.sources.zendesk.collect import collect  # noqa: E402
from reconcile.window import Window  # noqa: E402

T0 = 1_763_942_400  # 2025-11-24T00:00:00Z, the simulated day
DAY = 86_400
ENV = {"ZENDESK_OAUTH_TOKEN": "bench"}


def ts(sec: float) -> datetime:
    return datetime.fromtimestamp(sec, timezone.utc)


def day_of_audits(events: int, children: int, seed: int = 7) -> pa.Table:
    """`events` child events in audits of `children`, created at random seconds through the day (vectorised)."""
    n = events // children
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(T0, T0 + DAY, n))
    ids = np.arange(1, n + 1, dtype=np.int64)
    child_ids = (ids[:, None] * 100 + np.arange(children)[None, :]).ravel()
    kinds = np.array(["Create", "Comment", "Change", "Change", "Notification"])[(np.arange(n * children)) % 5]
    fields = np.where(kinds == "Change", "status", None)
    kids = pa.StructArray.from_arrays(
        [pa.array(child_ids), pa.array(kinds), pa.array(fields, pa.string()),
         pa.array(np.where(kinds == "Change", "open", None), pa.string()),
         pa.array(np.where(kinds == "Change", "new", None), pa.string())], fields=list(CHILD_TYPE))
    created = pc.strftime(pa.array(times * 1_000_000, pa.timestamp("us", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    return pa.table({
        "id": pa.array(ids), "ticket_id": pa.array(1000 + ids % 50_000), "timestamp": pa.array(times),
        "created_at": created, "updater_id": pa.array(np.full(n, 7)), "via": pa.array(["Web form"] * n),
        "event_type": pa.array(["Audit"] * n),
        "child_events": pa.ListArray.from_arrays(pa.array(np.arange(0, n * children + 1, children, dtype=np.int32)),
                                                 kids),
    }, schema=AUDIT_SCHEMA)


class SimClock:
    """Simulated time: `start` when set, running `speed` times the real clock (the server and the client share it)."""

    def __init__(self, start: float, speed: float):
        self.set(start, speed)

    def set(self, start: float, speed: float) -> "SimClock":
        self.base, self.real0, self.speed = start, time.monotonic(), speed
        return self

    def sec(self) -> float:
        return self.base + (time.monotonic() - self.real0) * self.speed

    def __call__(self) -> datetime:
        return ts(self.sec())


class Account:
    """One simulated Zendesk account (one server, one URL: cached pages are bound to it) whose clock and enforced
    budget each step sets."""

    def __init__(self, data: pa.Table, per_page: int):
        self.clock = SimClock(T0, 0)
        self.h = zs.start(data, now=self.clock, per_page=per_page, rate_limit_per_minute=10)

    def at(self, start: float, speed: float, rpm: float) -> SimClock:
        self.h._state.rate_limit = rpm  # the budget the server enforces, per real minute
        self.h._state.recent.clear()
        n = len(self.h.requests)
        self.first = n
        return self.clock.set(start, speed)

    def log(self) -> list[dict]:
        return self.h.requests[self.first:]


def cfg(url: str, rpm: float, cache: str | None = None) -> ZendeskConfig:
    return ZendeskConfig(url=url, requests_per_minute=rpm, max_wait="10m", cache=cache)


def fetch_whole_day(acct: Account, a, budget: float) -> tuple[dict, object]:
    """Step 1: the run alone, the day fetched at `budget` requests a simulated minute."""
    speed = a.real_rpm / budget  # the same real request rate whatever the budget: the machine keeps up
    clock = acct.at(T0 + DAY + 2 * 3600, speed, a.real_rpm)  # the nightly run at 02:00
    with tempfile.TemporaryDirectory() as d:
        t = time.monotonic()
        r = zendesk.read(cfg(acct.h.url, a.real_rpm), Window(ts(T0), ts(T0 + DAY), clock()), Path(d) / "pages",
                         now=clock(), progress=a.progress, environ=ENV)
        wall = time.monotonic() - t
    log = acct.log()
    sim_hours = wall * speed / 3600
    span = (log[-1]["time"] - log[0]["time"]) * speed / 3600 if len(log) > 1 else None  # one request: no rate
    return {"budget": budget, "pages": r.details["pages"], "requests": r.details["requests"],
            "rate_limited": r.details["rate_limited"], "sim_hours": sim_hours,
            "pages_per_sim_hour": (len(log) - 1) / span if span else None, "complete": r.complete}, r


def collect_through_day(acct: Account, a, budget: float, cache: str) -> dict:
    """Step 2: cron every `a.cron` simulated minutes from 00:00 to day end + 5 min, while the audits arrive."""
    clock = acct.at(T0, a.day_speed, budget * a.day_speed)
    cycles, worst, pages, requests, cpu, r = 0, 0.0, 0, 0, 0.0, None
    while clock.sec() < T0 + DAY + 300:
        next_at = clock.sec() + a.cron * 60
        c0 = time.process_time()
        r = collect(cfg(acct.h.url, budget * a.day_speed, cache), AwsConfig(), start=ts(T0 - 3600), clock=clock,
                    environ=ENV)
        cpu += time.process_time() - c0
        cycles += 1
        requests += r.requests
        pages = r.pages
        if r.behind_s is not None and clock.sec() > T0 + 600:
            worst = max(worst, r.behind_s)
        pause = (next_at - clock.sec()) / a.day_speed
        if pause > 0:
            time.sleep(pause)
    rl = sum(1 for q in acct.log() if q["status"] == 429)
    return {"cycles": cycles, "pages": pages, "requests": requests, "worst_behind_s": worst, "rate_limited": rl,
            "collector_cpu_s": cpu, "final_behind_s": r.behind_s if r else None}


def nightly_with_cache(acct: Account, a, budget: float, cache: str) -> tuple[dict, object]:
    """Step 3: the nightly run at 02:00 with the cache, in real time at the real budget."""
    clock = acct.at(T0 + DAY + 2 * 3600, 1, budget)
    with tempfile.TemporaryDirectory() as d:
        t, c0 = time.monotonic(), time.process_time()
        r = zendesk.read(cfg(acct.h.url, budget, cache), Window(ts(T0), ts(T0 + DAY), clock()), Path(d) / "pages",
                         now=clock(), progress=a.progress, environ=ENV, aws=AwsConfig())
        wall, cpu = time.monotonic() - t, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "replayed": r.details["replayed_pages"], "requests": r.details["requests"],
            "events": r.records, "complete": r.complete}, r


def day(a) -> dict:
    """The three figures (module docstring), printed as they come and returned for `--json` (bench.py's report)."""
    t = time.monotonic()
    data = day_of_audits(a.events, a.children)
    acct = Account(data, a.per_page)
    print(f"setup: {a.events:,} child events in {data.num_rows:,} audits through one day, {a.per_page} audits a "
          f"page, {time.monotonic() - t:.1f}s", file=sys.stderr)
    fetched, without = {}, []
    for budget in a.budget:
        s, fetched[budget] = fetch_whole_day(acct, a, budget)
        without.append(s)
        rate = "?" if s["pages_per_sim_hour"] is None else f"{s['pages_per_sim_hour']:.0f}"
        print(f"without collector, {budget:g} req/min: {s['pages']} pages, {rate} pages per simulated hour, Zendesk "
              f"stage {s['sim_hours'] * 60:.0f} simulated minutes ({s['requests']} requests, {s['rate_limited']} × "
              f"429, complete {s['complete']})")
    budget = a.budget[0]
    with tempfile.TemporaryDirectory() as cache:
        t = time.monotonic()
        c = collect_through_day(acct, a, budget, cache)
        print(f"collector through the day at {budget:g} req/min, cron every {a.cron:g} simulated min: {c['cycles']} "
              f"cycles, {c['pages']} pages cached with {c['requests']} requests ({c['rate_limited']} × 429), at most "
              f"{c['worst_behind_s'] / 60:.1f} simulated min behind real time (60 s is the export's cut-off); "
              f"{c['collector_cpu_s']:.1f} CPU-s in all ({time.monotonic() - t:.0f}s real)")
        n, r = nightly_with_cache(acct, a, budget, cache)
    same = sorted(r.ledger["source_id"].to_pylist()) == sorted(fetched[budget].ledger["source_id"].to_pylist())
    print(f"nightly run with the cache ({budget:g} req/min, real time): Zendesk stage {n['wall_s']:.1f}s wall, "
          f"{n['cpu_s']:.1f} CPU-s, {n['replayed']} pages replayed, {n['requests']} requests, {n['events']:,} events, "
          f"complete {n['complete']}, same events as the run without cache: {same}")
    acct.h.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (server, client and data): {peak:.0f} MiB", file=sys.stderr)
    return {"events": a.events, "audits": data.num_rows, "per_page": a.per_page, "real_rpm": a.real_rpm,
            "day_speed": a.day_speed, "cron_min": a.cron, "without_collector": without,
            "collector": dict(c, budget=budget), "nightly_with_cache": dict(n, budget=budget, same_events=same),
            "peak_rss_mb": round(peak, 1)}


def pacing(a) -> None:
    advance = a.per_page - 1  # each page repeats the previous page's last audit
    n = a.pages * advance + 1
    t = time.perf_counter()
    data = zs.synthetic_audits(n, start=T0, per_second=1, children=2)
    expected = {str(c["id"]) for cs in data["child_events"].to_pylist() for c in cs}
    now = datetime.fromtimestamp(T0 + n + 3600, timezone.utc)
    window = Window(start=datetime.fromtimestamp(T0, timezone.utc),
                    end=datetime.fromtimestamp(T0 + a.pages * advance, timezone.utc), as_of=now)
    expected_in_window = {i for i in expected if int(i) // 100 - 1 < a.pages * advance}
    h = zs.start(data, now=now, per_page=a.per_page, rate_limit_per_minute=a.rpm)
    print(f"setup: {n:,} audits, {len(expected):,} child events, {time.perf_counter() - t:.1f}s", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            r = zendesk.read(ZendeskConfig(url=h.url, requests_per_minute=a.rpm, max_wait="5m"), window,
                             Path(d) / "pages", now=now, progress=a.progress, environ=ENV)
            wall = time.perf_counter() - t
        log = h.requests
    finally:
        h.stop()

    times = [q["time"] for q in log]
    span = times[-1] - times[0]
    achieved = (len(times) - 1) / span * 60 if span else float("nan")
    got = r.ledger["source_id"].to_pylist()
    dups = sum(c - 1 for c in Counter(got).values() if c > 1)
    missed = len(expected_in_window - set(got))
    print(f"pages {r.details['pages']}  requests {r.details['requests']}  429s {r.details['rate_limited']}  "
          f"wall {wall:.1f}s  complete {r.complete}")
    print(f"achieved {achieved:.1f} requests/min = {achieved / a.rpm:.1%} of the {a.rpm:g}/min budget "
          f"(server-side request log, first to last request)")
    print(f"events {len(got):,}  duplicates {dups}  missed {missed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="child events in the simulated day")
    ap.add_argument("--children", type=int, default=2, help="child events an audit")
    ap.add_argument("--budget", type=float, nargs="+", default=[10, 30], help="requests/min (10; 30 High Volume)")
    ap.add_argument("--real-rpm", type=float, default=240,
                    help="real requests/min of the accelerated fetch (speed-up = this / budget)")
    ap.add_argument("--day-speed", type=float, default=720, help="simulated seconds a real second, through the day")
    ap.add_argument("--cron", type=float, default=5, help="simulated minutes between collector runs")
    ap.add_argument("--pacing", action="store_true", help="the pacing check instead (--pages, --rpm, --per-page)")
    ap.add_argument("--pages", type=int, default=600)
    ap.add_argument("--rpm", type=float, default=600)
    ap.add_argument("--per-page", type=int, default=None, help="audits a page (1000, as Zendesk; 100 for --pacing)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the day's figures here as JSON (what bench.py reads)")
    a = ap.parse_args()
    if a.pacing:
        a.per_page = a.per_page or 100
        pacing(a)
    else:
        a.per_page = a.per_page or 1000
        figures = day(a)
        if a.json:
            a.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
