"""Zendesk source throughput against the local server: does pacing use the request budget, exactly once?

    .venv/bin/python benchmarks/bench_zendesk.py [--pages 600] [--rpm 600] [--per-page 100]

Serves pages of `per_page` audits (one a second, so consecutive pages overlap by one audit) with the server enforcing
the same per-minute budget, reads them with `requests_per_minute = rpm`, and prints the achieved request rate, the
share of the budget it is, 429s, and duplicated / missed child events (both should be 0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconcile.config import ZendeskConfig  # noqa: E402
from reconcile.simulate import zendesk_server as zs  # noqa: E402
from reconcile.sources import zendesk  # noqa: E402
from reconcile.window import Window  # noqa: E402

T0 = 1_763_942_400


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=600)
    ap.add_argument("--rpm", type=float, default=600)
    ap.add_argument("--per-page", type=int, default=100)
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()

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
                             Path(d) / "pages", now=now, progress=a.progress,
                             environ={"ZENDESK_OAUTH_TOKEN": "bench"})
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


if __name__ == "__main__":
    main()
