"""A local HTTP server that speaks Zendesk's Incremental Ticket Event Export (PIPELINE.md §2).

It serves `stores/zendesk/ticket_events.parquet` (one row per audit) as
`GET /api/v2/incremental/ticket_events.json?start_time=<unix s>` pages, with the API's awkward parts kept on purpose:
pages overlap on the second of their last audit, the last minute is never returned, more than `per_page` audits in
one second make the same page repeat forever, and an over-budget client gets 429 + Retry-After. Faults (5xx bursts,
slow, trickled or truncated responses, dropped connections, forced 429s with any Retry-After or none, malformed
audits) can be switched at runtime for tests and the demo.

    handle = start(table_or_path, now=datetime.now(timezone.utc), rate_limit_per_minute=10)
    ... handle.url, handle.requests, handle.set_faults(errors=3) ...
    handle.stop()

`python -m reconcile.simulate.zendesk_server DIR` serves DIR/stores/zendesk/ticket_events.parquet until Ctrl-C.
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .generate import AUDIT_SCHEMA

EXPORT_PATH = "/api/v2/incremental/ticket_events.json"
TAIL_SECONDS = 60  # "events from the last minute are never returned"


@dataclass
class Faults:
    """What the server does wrong. Counters (`errors`, `truncate`, `drop`, `throttle`) count down per request;
    pass a huge number (10**9) for "never recovers"."""

    errors: int = 0  # answer `error_status` to the next N export requests
    error_status: int = 503
    throttle: int = 0  # answer 429 with Retry-After: `retry_after` to the next N requests
    retry_after: int | None = 1  # None: a 429 without a Retry-After header
    truncate: int = 0  # cut the next N JSON bodies in half (valid HTTP, invalid JSON)
    drop: int = 0  # close the next N connections without answering
    delay: float = 0.0  # seconds to wait before every answer
    trickle: int = 0  # send the next N bodies one byte every `trickle_interval` seconds (headers at once)
    trickle_interval: float = 2.0
    # answer the next N export requests with a page whose body never ends, sent as fast as the client takes it (no
    # Content-Length: the connection is closed when the client stops reading)
    endless: int = 0
    # audit id -> the bytes served in its place on every page (a malformed audit: no created_at, a child without
    # id, ticket_id "abc", bytes that are not UTF-8, ...)
    corrupt: dict = field(default_factory=dict)
    # answer the next N export requests with an empty page that is not the end of the stream and does not move on
    # (end_time = start_time): Zendesk's export never should; a proxy or a bug in between might
    stall: int = 0
    # fields of every page's tail served as given instead (e.g. {"end_of_stream": "false"}: drift in the API)
    tail: dict = field(default_factory=dict)
    # answer every request with 302 to this URL + the request's path and query (a proxy, or a domain moved elsewhere)
    redirect: str | None = None
    # serve the first page whatever start_time asks for (a caching proxy that drops the query string)
    ignore_start_time: bool = False


# --- data helpers (tests, benchmark, demo) --------------------------------------------------------------------------


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def audits_table(audits: list[dict]) -> pa.Table:
    """A ticket_events table from audit dicts; `created_at` defaults from `timestamp`, sorted by timestamp."""
    rows = []
    for a in audits:
        a = dict(a)
        if "created_at" not in a and a.get("timestamp") is not None:
            a["created_at"] = _iso(a["timestamp"])
        a.setdefault("event_type", "Audit")
        a.setdefault("via", "Web form")
        rows.append(a)
    rows.sort(key=lambda a: a.get("timestamp") or 0)
    return pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)


def synthetic_audits(n: int, *, start: int, per_second: int = 1, children: int = 2, first_id: int = 1) -> pa.Table:
    """`n` audits from unix second `start`, `per_second` audits a second, `children` child events each.

    Audit ids are first_id, first_id+1, ...; child ids are audit_id * 100 + k (unique while children < 100).
    """
    kinds = [("Create", None), ("Comment", None), ("Change", "status"), ("Change", "tags"), ("Change", "priority")]
    audits = []
    for i in range(n):
        aid = first_id + i
        ts = start + i // per_second
        kids = []
        for k in range(children):
            et, fname = kinds[(i + k) % len(kinds)]
            kids.append({"id": aid * 100 + k, "event_type": et, "field_name": fname,
                         "value": "open" if fname else None, "previous_value": "new" if fname else None})
        audits.append({"id": aid, "ticket_id": 1000 + i % 97, "timestamp": ts, "updater_id": 7, "child_events": kids})
    return audits_table(audits)


def same_second_audits(n: int, *, at: int, per_page: int = 1000, first_id: int = 1) -> pa.Table:
    """More audits than fit a page in one second (`per_page + n`), framed by one audit before and after.

    Served with the same `per_page`, the page starting at `at` repeats forever (PIPELINE.md §2).
    """
    before = synthetic_audits(1, start=at - 5, first_id=first_id)
    burst = synthetic_audits(per_page + n, start=at, per_second=per_page + n, first_id=first_id + 1)
    after = synthetic_audits(1, start=at + 5, first_id=first_id + 2 + per_page + n)
    return pa.concat_tables([before, burst, after])


def load(data: pa.Table | str | Path) -> pa.Table:
    """A table, a ticket_events.parquet file, a `stores` dir or a dir holding `stores/`."""
    if isinstance(data, pa.Table):
        return data
    p = Path(data)
    for cand in (p, p / "zendesk" / "ticket_events.parquet", p / "stores" / "zendesk" / "ticket_events.parquet"):
        if cand.is_file():
            return pq.read_table(cand)
    raise FileNotFoundError(f"No ticket_events.parquet at {p} (looked in {p}/zendesk and {p}/stores/zendesk).")


# --- the server -----------------------------------------------------------------------------------------------------


class _State:
    def __init__(self, table: pa.Table, now, per_page: int, rate_limit: float | None, faults: Faults, auth,
                 ai_agent_tickets: frozenset = frozenset()):
        rows = table.sort_by("timestamp").to_pylist()
        # Pre-serialise each audit once; absent child fields are left out, as the API does.
        blobs = [orjson.dumps(_api_audit(r)) for r in rows]
        # The audits each support_type_scope lists (the export's default: "agent"), filtered before paging
        ai = [r["ticket_id"] in ai_agent_tickets for r in rows]
        self.scopes = {scope: ([r["timestamp"] for r, a in zip(rows, ai) if keep(a)],
                               [r["id"] for r, a in zip(rows, ai) if keep(a)],
                               [b for b, a in zip(blobs, ai) if keep(a)])
                       for scope, keep in (("agent", lambda a: not a), ("ai_agent", lambda a: a),
                                           ("all", lambda a: True))}
        self.now = now
        self.per_page = per_page
        self.rate_limit = rate_limit
        self.faults = faults
        self.auth = auth
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.recent: deque[float] = deque()

    def now_ts(self) -> float:
        n = self.now() if callable(self.now) else self.now
        if n is None:
            return time.time()
        return n.timestamp() if isinstance(n, datetime) else float(n)

    def take(self, name: str) -> bool:
        """Use one unit of a counting fault."""
        left = getattr(self.faults, name)
        if left > 0:
            setattr(self.faults, name, left - 1)
            return True
        return False


def _api_audit(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "child_events" and v is not None}
    out["child_events"] = [{k: v for k, v in c.items() if v is not None} for c in (row.get("child_events") or [])]
    return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "ZendeskSim/1.0"
    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass made per server

    def log_message(self, format, *args):  # quiet: the request log is `handle.requests`
        pass

    def do_GET(self):
        st = self.state
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        entry = {"time": time.time(), "path": u.path, "query": q, "headers": dict(self.headers.items()),
                 "start_time": int(q["start_time"]) if q.get("start_time", "").lstrip("-").isdigit() else None}
        with st.lock:
            st.requests.append(entry)
            status, headers, body = self._answer(u.path, entry)
            delay = st.faults.delay
            trickle = st.faults.trickle_interval if status == 200 and st.take("trickle") else 0
            endless = status == 200 and st.take("endless")
        entry["status"] = status
        if delay:
            time.sleep(delay)
        if status == 0:  # dropped connection
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if endless:
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(body[:-1])  # the page without its closing brace, then spaces for ever
            try:
                while True:
                    self.wfile.write(b" " * (1 << 16))
            except OSError:  # the client stopped reading
                return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if trickle:
            self.wfile.flush()
            for i in range(len(body)):  # a byte at a time: every socket read returns well within any timeout
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(trickle)
            return
        self.wfile.write(body)

    def _answer(self, path: str, entry: dict) -> tuple[int, dict, bytes]:
        """(status, headers, body); status 0 means drop the connection. Called under the state lock."""
        st = self.state
        if st.faults.redirect:
            return 302, {"Location": st.faults.redirect + self.path}, b'{}'
        if st.auth is not None and self.headers.get("Authorization") != st.auth:
            return 401, {}, b'{"error":"Couldn\'t authenticate you"}'
        t = time.time()
        headers = {}
        if st.take("throttle"):
            ra = st.faults.retry_after
            return 429, ({} if ra is None else {"Retry-After": str(ra)}), b'{"error":"APIRateLimitExceeded"}'
        if st.rate_limit:
            while st.recent and st.recent[0] <= t - 60:
                st.recent.popleft()
            limit = int(st.rate_limit)
            if len(st.recent) >= limit:
                wait = max(1, math.ceil(st.recent[0] + 60 - t))
                return 429, {"Retry-After": str(wait), "X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": "0"}, \
                    b'{"error":"APIRateLimitExceeded"}'
            st.recent.append(t)
            headers = {"X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": str(limit - len(st.recent))}
        if path != EXPORT_PATH:
            return 404, headers, b'{"error":"InvalidEndpoint"}'
        if entry["start_time"] is None:
            return 400, headers, b'{"error":"InvalidValue","description":"start_time is required"}'
        if st.take("errors"):
            return st.faults.error_status, headers, b'{"error":"ServiceUnavailable"}'
        if st.take("drop"):
            return 0, {}, b""
        sideloads = entry["query"].get("include", "").split(",")
        scope = entry["query"].get("support_type_scope", "agent")
        if scope not in st.scopes:
            return 400, headers, b'{"error":"InvalidValue","description":"support_type_scope"}'
        body = self._page(0 if st.faults.ignore_start_time else entry["start_time"], "comment_events" in sideloads,
                          scope)
        if st.take("truncate"):
            body = body[: len(body) // 2]
        return 200, headers, body

    def _page(self, start_time: int, comment_events: bool, scope: str) -> bytes:
        st = self.state
        ts, ids, all_blobs = st.scopes[scope]
        cutoff = math.floor(st.now_ts()) - TAIL_SECONDS  # audits newer than now - 60 s are not served
        lo = bisect.bisect_left(ts, start_time)
        hi = bisect.bisect_right(ts, cutoff)
        stop = min(lo + st.per_page, hi)
        blobs = all_blobs[lo:stop] if lo < stop else []
        if st.faults.corrupt:
            blobs = [st.faults.corrupt.get(i, b) for i, b in zip(ids[lo:stop], blobs)]
        if not comment_events:
            blobs = [without_comment_events(b) for b in blobs]
        end_of_stream = lo + st.per_page >= hi
        if st.take("stall"):
            blobs, end_of_stream = [], False
        end_time = ts[stop - 1] if blobs else start_time
        host = self.headers.get("Host") or "%s:%s" % self.server.server_address[:2]
        tail = orjson.dumps({"next_page": f"http://{host}{EXPORT_PATH}?start_time={end_time}", "count": len(blobs),
                             "end_of_stream": end_of_stream, "end_time": end_time, **st.faults.tail})
        return b'{"ticket_events":[' + b",".join(blobs) + b"]," + tail[1:]


def without_comment_events(blob: bytes) -> bytes:
    """An audit as the export gives it without the comment_events sideload (Zendesk's Incremental Ticket Event Export
    reference: "any comment present in the ticket update is described only by Boolean comment_present and
    comment_public object properties in the event's child_events array"): no Comment child, the flags on the others."""
    try:
        audit = orjson.loads(blob)
        children = audit["child_events"]
        comments = [c for c in children if c.get("event_type") == "Comment"]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return blob  # a corrupt audit (a fault) stays as it is
    if not comments:
        return blob
    rest = [c for c in children if c.get("event_type") != "Comment"]
    public = any(c.get("public") is True for c in comments)
    audit["child_events"] = [{**c, "comment_present": True, "comment_public": public} for c in rest]
    return orjson.dumps(audit)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that timed out and hung up (a test of the reader's timeouts) is not a server error.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


@dataclass
class ServerHandle:
    url: str
    _server: ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _state: _State = field(repr=False)

    @property
    def requests(self) -> list[dict]:
        """Every request received: time, path, query, start_time, headers (incl. Authorization), status."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def faults(self) -> Faults:
        return self._state.faults

    def set_faults(self, faults: Faults | None = None, **changes) -> None:
        """Replace the faults (`set_faults(Faults(...))`) or change some (`set_faults(errors=3, delay=0.1)`)."""
        with self._state.lock:
            base = faults if faults is not None else self._state.faults
            self._state.faults = replace(base, **changes)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(data: pa.Table | str | Path, *, now: datetime | float | Callable | None = None, host: str = "127.0.0.1",
          port: int = 0, per_page: int = 1000, rate_limit_per_minute: float | None = None,
          faults: Faults | None = None, auth: str | None = None,
          ai_agent_tickets: frozenset = frozenset()) -> ServerHandle:
    """Serve `data` (see `load`) in a background thread; `handle.url` is the base URL (ZENDESK_URL).

    `now`: the server's clock (a datetime, unix seconds, a callable returning either, or None for the real clock);
    audits newer than now − 60 s are never served. `auth`: the exact Authorization header expected (401 otherwise).
    `rate_limit_per_minute`: over this many requests in the last 60 s the answer is 429 with Retry-After.
    `ai_agent_tickets`: tickets of the AI-agent support type, listed only when support_type_scope asks for them
    ("all" or "ai_agent"; the export's default is "agent").
    """
    state = _State(load(data), now, per_page, rate_limit_per_minute, faults or Faults(), auth, ai_agent_tickets)
    handler = type("Handler", (_Handler,), {"state": state})
    server = _Server((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="zendesk-sim",
                              daemon=True)
    thread.start()
    h, p = server.server_address[:2]
    return ServerHandle(url=f"http://{h}:{p}", _server=server, _thread=thread, _state=state)


def serve(stores_dir: str | Path, **kw) -> ServerHandle:
    """Serve a simulator output dir (the demo)."""
    return start(stores_dir, **kw)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m reconcile.simulate.zendesk_server", description=__doc__.split("\n")[0])
    ap.add_argument("stores", help="a dir with stores/zendesk/ticket_events.parquet (or the parquet file)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--per-page", type=int, default=1000)
    ap.add_argument("--rate-limit", type=float, default=None, help="requests per minute before 429")
    ap.add_argument("--now", default=None, help="the server's clock, ISO-8601 (default: the real clock)")
    args = ap.parse_args(argv)
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else None
    h = serve(args.stores, port=args.port, per_page=args.per_page, rate_limit_per_minute=args.rate_limit, now=now)
    print(f"ZENDESK_URL={h.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        h.stop()


if __name__ == "__main__":
    main()
