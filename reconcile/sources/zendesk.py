"""Zendesk source: what the source emitted, from the Incremental Ticket Event Export (PIPELINE.md §2).

`read` walks `GET {url}/api/v2/incremental/ticket_events.json?start_time=<unix s>` from the window start, following
`end_time` (pages overlap on their last second: audits and child events are deduped on id), and writes one ledger
row per child event whose audit was created in the window. Every raw page is kept gzipped in `pages_dir` with an
`index.jsonl`; a re-run with the same `pages_dir` replays those pages and resumes from the last saved `end_time`.

Choices worth knowing (see also the `read` docstring):
- The export never returns the last minute. If the window ends after now − 60 s, the source is incomplete and
  `details["tail_pending"]` is True: events in that tail may exist and cannot be listed yet, so no list is complete.
- More than a page of audits in one second makes the API repeat the same page forever. We step one second, record
  the second in `details["same_second_steps"]` and mark the source incomplete (events of that second may be missing).
- Waiting on 429s and retries is bounded by `max_wait`, and so is the time failed requests took (a timeout spends
  `timeout`); past it the read stops, incomplete, and says how to resume. A 429 waits at least RETRY_FLOOR even when
  Retry-After says 0 or is absent, so a server cannot make us spin.
- `timeout` is a deadline for the whole request (connect, headers and body), not per socket read: a watchdog shuts
  the socket down when it passes, so a body trickled a byte at a time still ends. Worst case for a read of P pages:
  P x (60/requests_per_minute + timeout) + max_wait + timeout (README, "How long a run can take").
- Saved pages are bound to the account URL and the export query that produced them (each index entry's `url`):
  pages saved for another Zendesk URL (or query) are never replayed. They are set aside, unchanged, in a
  `set-aside-<n>` folder inside the pages dir (a warning and `details["pages_set_aside"]` say where), and the
  window is fetched again from the URL configured now.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import ipaddress
import json
import logging
import math
import os
import random
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import orjson
import pyarrow as pa

from .. import interrupt
from ..config import ZendeskConfig
from ..errors import ConfigError, SourceError
from ..ledger import TS, SourceResult, conform, rejects_table
from ..window import Window, parse_duration

logger = logging.getLogger(__name__)

NAME = "zendesk"
EXPORT_PATH = "/api/v2/incremental/ticket_events.json"
TAIL = timedelta(seconds=60)  # "events from the last minute are never returned"
BACKOFF_BASE = 1.0  # seconds; doubled per consecutive failure, capped, with jitter
BACKOFF_CAP = 60.0
RETRY_FLOOR = 1.0  # seconds: the least a 429 waits, whatever Retry-After says (0, absent, garbage)
ENV_HELP = "Set ZENDESK_EMAIL and ZENDESK_API_TOKEN (API token auth) or ZENDESK_OAUTH_TOKEN (OAuth)"
_LOOPBACK = {"localhost"}


class _GaveUp(Exception):
    """Waiting on limits/errors would pass max_wait. Carries what the API kept answering."""


# --- configuration and auth -----------------------------------------------------------------------------------------


def _base_url(cfg: ZendeskConfig) -> str:
    if not cfg.url:
        raise ConfigError("No Zendesk URL. Set ZENDESK_URL (like https://acme.zendesk.com) or [zendesk] url.")
    u = urlsplit(cfg.url.strip())
    if u.scheme not in ("https", "http") or not u.hostname:
        raise ConfigError(f"Zendesk URL {cfg.url!r} is not an http(s) URL. Use one like https://acme.zendesk.com.")
    if u.username or u.password:
        raise ConfigError(f"The Zendesk URL must not carry credentials. {ENV_HELP} instead.")
    if u.scheme == "http" and not _is_loopback(u.hostname):
        raise ConfigError(f"Refusing to send Zendesk credentials over plain http to {u.hostname}. Use https://.")
    return f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_header(environ) -> tuple[str, str]:
    """(Authorization header value, scheme name). The value is a secret: never log or store it."""
    oauth = environ.get("ZENDESK_OAUTH_TOKEN")
    if oauth:
        return f"Bearer {oauth}", "bearer"
    email, token = environ.get("ZENDESK_EMAIL"), environ.get("ZENDESK_API_TOKEN")
    if email and token:
        raw = f"{email}/token:{token}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii"), "basic"
    missing = [v for v, val in (("ZENDESK_EMAIL", email), ("ZENDESK_API_TOKEN", token)) if not val]
    raise ConfigError(f"No Zendesk credentials ({' and '.join(missing)} not set). {ENV_HELP}.")


# --- HTTP: pacing, retries, bounded waiting -------------------------------------------------------------------------


@dataclass
class _Stats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    first_request: float | None = None


class _Deadline:
    """A whole-request deadline: when it passes, the request's socket is shut down, which ends any read blocked on
    it (a server trickling its body a byte at a time defeats a per-read timeout, not this)."""

    def __init__(self):
        self.expired = False
        self._sock = None
        self._lock = threading.Lock()

    def watch(self, sock) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shut()

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: nothing left to stop


def _watched(conn_class, deadline: _Deadline):
    """An http.client connection class whose socket (the raw one, before any TLS or proxy tunnel) `deadline` watches."""

    def make(*args, **kwargs):
        conn = conn_class(*args, **kwargs)
        create = conn._create_connection

        def create_watched(*a, **kw):
            sock = create(*a, **kw)
            deadline.watch(sock)
            return sock

        conn._create_connection = create_watched
        return conn

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req, context=self._context)


@dataclass
class _Client:
    base: str
    auth: str = field(repr=False)
    rpm: float
    timeout: float
    max_wait: float
    on_wait: Callable[[], None] = lambda: None
    stats: _Stats = field(default_factory=_Stats)
    _next_slot: float = 0.0
    _answered: bool = False

    def __post_init__(self):
        # Loopback (the simulator) never goes through an HTTP(S)_PROXY from the environment.
        host = urlsplit(self.base).hostname or ""
        self._handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        self._interval = 60.0 / self.rpm if self.rpm and self.rpm > 0 else 0.0

    def _pace(self) -> None:
        """Space requests 60/rpm apart on a fixed schedule, so sleep overshoot does not accumulate.

        A request sent late (slow answers) restarts the schedule from its own send time, so no burst follows it.
        """
        now = time.monotonic()
        if self._next_slot > now:
            interrupt.sleep(self._next_slot - now)
            now = time.monotonic()
        slot = self._next_slot or now
        self._next_slot = max(slot, now - min(0.02, self._interval / 10)) + self._interval

    def _wait(self, seconds: float, what: str, spent: float) -> None:
        """Sleep `seconds` before a retry; `spent` (the failed request's own time, up to `timeout`) counts too."""
        self.stats.waited_s += spent
        if self.stats.waited_s + seconds > self.max_wait:
            raise _GaveUp(what)
        self.stats.waited_s += seconds
        self.on_wait()
        interrupt.sleep(seconds)
        self._next_slot = 0.0  # the pause already spaced the next request

    def _backoff(self, attempt: int) -> float:
        d = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return d / 2 + random.uniform(0, d / 2)

    def get(self, path_query: str) -> tuple[bytes, dict]:
        """The body and parsed JSON of one export page, after pacing and any retries."""
        attempt = 0
        while True:
            self._pace()
            self.stats.requests += 1
            sent = time.monotonic()
            if self.stats.first_request is None:
                self.stats.first_request = sent
            what, retry_after = self._try(path_query)
            if isinstance(what, tuple):
                return what
            spent = time.monotonic() - sent
            attempt += 1
            self.stats.retries += 1
            if what.startswith("429"):
                self.stats.rate_limited += 1
                # Retry-After 0, absent or unreadable: never less than the floor or the pacing interval (no spin).
                delay = max(retry_after if retry_after is not None else self._backoff(attempt), RETRY_FLOOR,
                            self._interval)
                logger.info("Zendesk answered 429; waiting %.1f s (Retry-After %s)", delay, retry_after)
                self._wait(delay, what, spent)
            else:
                delay = self._backoff(attempt)
                logger.info("Zendesk request failed (%s); retry %d in %.1f s", what, attempt, delay)
                self._wait(delay, what, spent)

    def _try(self, path_query: str) -> tuple[tuple[bytes, dict] | str, float | None]:
        """One request: ((body, doc), None) on success, else (what went wrong, Retry-After or None)."""
        req = urllib.request.Request(self.base + path_query, headers={
            "Authorization": self.auth, "Accept": "application/json", "User-Agent": "reconcile"})
        deadline = _Deadline()
        opener = urllib.request.build_opener(*self._handlers, _HTTPHandler(deadline), _HTTPSHandler(deadline))
        watchdog = threading.Timer(self.timeout, deadline.expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            self._answered = True
            if deadline.expired:
                return "timeouts", None
            return self._http_error(e, path_query)
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
            return self._failure(e, deadline)
        finally:
            watchdog.cancel()
        self._answered = True
        doc = _load_page(body)
        if doc is None:
            return ("timeouts" if deadline.expired else "truncated or invalid JSON"), None
        if not (isinstance(doc, dict) and isinstance(doc.get("ticket_events"), list)
                and isinstance(doc.get("end_time"), int)):
            raise SourceError(f"{self.base}{EXPORT_PATH} did not answer like Zendesk's incremental export "
                              "(no ticket_events/end_time). Check ZENDESK_URL.")
        return (body, doc), None

    def _failure(self, e: Exception, deadline: _Deadline) -> tuple[str, None]:
        """What a request that got no answer counts as; raises for what no retry can fix."""
        if deadline.expired:
            return "timeouts", None
        if isinstance(e, urllib.error.URLError):
            reason = e.reason
            if isinstance(reason, socket.gaierror):
                raise SourceError(f"Cannot resolve the Zendesk host of {self.base}. Check ZENDESK_URL.") from None
            if isinstance(reason, ssl.SSLError):
                raise SourceError(f"TLS to {self.base} failed ({reason}). Check ZENDESK_URL.") from None
            if isinstance(reason, ConnectionRefusedError) and not self._answered:
                raise SourceError(f"Nothing answers at {self.base} (connection refused). Check ZENDESK_URL.") from None
            return ("timeouts" if isinstance(reason, TimeoutError) else "connection errors"), None
        if isinstance(e, TimeoutError):
            return "timeouts", None
        # resets, RemoteDisconnected, IncompleteRead (a body cut short of its Content-Length)
        return "connection errors", None

    def _http_error(self, e: urllib.error.HTTPError, path_query: str):
        code = e.code
        if code in (401, 403):
            raise SourceError(
                f"Zendesk refused the credentials (HTTP {code}). {ENV_HELP}; the incremental export needs a Zendesk "
                "admin's credentials (and API token access enabled for token auth).") from None
        if code == 429:
            try:
                ra = float(e.headers.get("Retry-After", ""))
            except ValueError:
                ra = None  # absent, or an HTTP date: the caller backs off (never less than RETRY_FLOOR)
            return "429 (rate limited)", ra if ra is not None and math.isfinite(ra) and ra >= 0 else None
        if code >= 500:
            return str(code), None
        raise SourceError(f"Zendesk answered HTTP {code} for {path_query.split('?')[0]}. Check ZENDESK_URL.") from None


def _load_page(body: bytes):
    """A page's JSON, or None when it is no JSON (cut short: worth a retry). Bytes that are not UTF-8 do not sink the
    page: they are read as lone surrogates, and the audit holding them is rejected (_Ledger.add_page)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None


# --- pages on disk --------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _saved_pages(pages_dir: Path, start_time: int, base: str) -> tuple[list[dict], Path | None]:
    """Index entries of pages that can be replayed: files present with their sha256, chained from start_time; and
    where pages of another account URL or query were set aside (None when none were).

    Reading stops at the first torn line, missing/changed file or break in the chain; the index is rewritten to the
    good prefix so new pages append after it. Pages of a run that began later than `start_time` are discarded.
    """
    index = pages_dir / "index.jsonl"
    if not index.exists():
        return [], None
    entries = []
    for line in index.read_bytes().splitlines():
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            break
    foreign = next((e for e in entries if _bound_elsewhere(e, base)), None)
    if foreign is not None:
        return [], _set_aside(pages_dir, foreign)
    good: list[dict] = []
    expected = None
    for e in entries:
        try:
            data = (pages_dir / e["file"]).read_bytes()
        except (KeyError, TypeError, OSError):
            break
        if hashlib.sha256(data).hexdigest() != e.get("sha256"):
            break
        if expected is None and e["start_time"] > start_time:
            break
        if expected is not None and e["start_time"] != expected:
            break
        good.append(e)
        expected = e["next_start_time"]
    if not good and index.exists():
        for p in pages_dir.glob("page-*.json.gz"):
            p.unlink()
    _write_atomic(index, b"".join(orjson.dumps(e) + b"\n" for e in good))
    return good, None


def _bound_elsewhere(entry, base: str) -> bool:
    """Whether a saved page was fetched from another account URL or by another query than the export's."""
    if not isinstance(entry, dict):
        return False  # a torn index line: the chain stops there (_saved_pages)
    request = entry.get("request")
    if not isinstance(request, str) or not request.startswith(EXPORT_PATH + "?start_time="):
        return True
    return entry.get("url") != base + request


def _set_aside(pages_dir: Path, entry: dict) -> Path:
    """Move the index and every page into a new `set-aside-<n>` folder of `pages_dir`, unchanged."""
    n = 1
    while (pages_dir / f"set-aside-{n}").exists():
        n += 1
    aside = pages_dir / f"set-aside-{n}"
    aside.mkdir()
    for p in [pages_dir / "index.jsonl", *pages_dir.glob("page-*.json.gz")]:
        if p.exists():
            os.replace(p, aside / p.name)
    logger.warning("Saved Zendesk pages in %s were fetched from %s, not this account's URL: never replayed; moved "
                   "to %s and fetched again.", pages_dir, str(entry.get("url"))[:200], aside)
    return aside


# --- normalisation --------------------------------------------------------------------------------------------------


@dataclass
class _Ledger:
    """Child events as ledger columns, deduped across overlapping pages; rejects with their reasons."""

    start_ms: int
    end_ms: int
    cols: dict = field(default_factory=lambda: {k: [] for k in (
        "source_id", "ticket_id", "event_type", "event_time", "audit_id", "source_ref")})
    rejects: tuple = field(default_factory=lambda: ([], [], []))
    audits: set = field(default_factory=set)
    children: set = field(default_factory=set)
    seen_raw: set = field(default_factory=set)
    overlap: int = 0
    outside: int = 0

    def add_page(self, file: str, audits: list) -> None:
        c = self.cols
        dirty = not _is_utf8(audits)  # one check a page; then audit by audit only on a page that needs it
        for a in audits:
            aid = a.get("id") if isinstance(a, dict) else None
            ref = f"{file}#audit={aid}"
            if isinstance(aid, int):
                if aid in self.audits:  # pages overlap on their last second
                    self.overlap += 1
                    continue
                self.audits.add(aid)
            ms, reason = _created_ms(a)
            if dirty and not _is_utf8(a):
                reason = "audit holds bytes that are not UTF-8"
            if reason is None and not isinstance(a.get("ticket_id"), int):
                reason = ("audit without ticket_id" if a.get("ticket_id") is None
                          else f"ticket_id {str(a.get('ticket_id'))[:40]!r} is not a number")
            if reason is None and not isinstance(aid, int):
                reason = "audit without id"
            if reason:
                self._reject(ref, reason, a)
                continue
            if not (self.start_ms <= ms < self.end_ms):
                self.outside += 1
                continue
            for ch in a.get("child_events") or []:
                cid = ch.get("id") if isinstance(ch, dict) else None
                if not isinstance(cid, int):
                    self._reject(ref, "child event without id", ch)
                    continue
                if cid in self.children:
                    continue
                self.children.add(cid)
                et = ch.get("event_type")
                if et == "Change" and ch.get("field_name"):
                    et = f"Change:{ch['field_name']}"
                c["source_id"].append(str(cid))
                c["ticket_id"].append(a["ticket_id"])
                c["event_type"].append(et)
                c["event_time"].append(ms)
                c["audit_id"].append(aid)
                c["source_ref"].append(ref)

    def _reject(self, ref: str, reason: str, raw) -> None:
        text = orjson.dumps(raw).decode() if _is_utf8(raw) else json.dumps(raw)  # \udcNN shows a byte that is not
        if reason == "audit without id":  # nothing to dedupe it on across overlapping pages but its content
            if text in self.seen_raw:
                return
            self.seen_raw.add(text)
        self.rejects[0].append(ref)
        self.rejects[1].append(reason)
        self.rejects[2].append(text)

    def tables(self) -> tuple[pa.Table, pa.Table]:
        c = self.cols
        n = len(c["source_id"])
        times = pa.array(c["event_time"], pa.int64()).cast(TS)
        ledger = pa.table({
            "hop": pa.array([NAME] * n, pa.string()),
            "source_id": pa.array(c["source_id"], pa.string()),
            "zendesk_key": pa.array(c["source_id"], pa.string()),
            "ticket_id": pa.array(c["ticket_id"], pa.int64()),
            "event_type": pa.array(c["event_type"], pa.string()),
            "family": pa.array(["api"] * n, pa.string()),
            "event_time": times,
            "observed_at": times,
            "source_ref": pa.array(c["source_ref"], pa.string()),
            "audit_id": pa.array(c["audit_id"], pa.int64()),
        })
        return conform(ledger), rejects_table(NAME, *self.rejects)


def _is_utf8(value) -> bool:
    """Whether a page's JSON value holds no byte that was not UTF-8 (read as a lone surrogate by _load_page)."""
    try:
        orjson.dumps(value)
        return True
    except orjson.JSONEncodeError:
        return False


def _created_ms(audit) -> tuple[int | None, str | None]:
    if not isinstance(audit, dict):
        return None, "audit is not an object"
    text = audit.get("created_at")
    if not text:
        return None, "audit without created_at"
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None, f"unreadable created_at {str(text)[:40]!r}"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000), None


# --- progress -------------------------------------------------------------------------------------------------------


class _Progress:
    """Pages, events, request rate and time waited, on stderr; a no-op when disabled."""

    def __init__(self, enabled: bool, stats: _Stats):
        self.stats = stats
        self.bar = None
        self.pages = self.events = 0
        self.cursor: int | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(SpinnerColumn(), TextColumn("zendesk {task.fields[info]}"), TimeElapsedColumn(),
                                console=Console(file=sys.stderr))
            self.task = self.bar.add_task("zendesk", total=None, info="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.update()
            self.bar.stop()

    def page(self, pages: int, events: int, cursor: int) -> None:
        self.pages, self.events, self.cursor = pages, events, cursor
        self.update()

    def update(self) -> None:
        if not self.bar:
            return
        s = self.stats
        elapsed = time.monotonic() - s.first_request if s.first_request else 0
        rate = f"{s.requests / elapsed * 60:.0f}" if elapsed > 1 else "-"
        at = _iso(self.cursor) if self.cursor else "-"
        self.bar.update(self.task, info=(
            f"pages {self.pages} · events {self.events:,} · {rate} req/min · "
            f"waited {s.waited_s:.0f}s ({s.rate_limited}×429) · at {at}"))


# --- the source -----------------------------------------------------------------------------------------------------


def read(cfg: ZendeskConfig, window: Window, pages_dir: Path, *, now: datetime | None = None, progress: bool = True,
         environ=None, edge: timedelta = timedelta(0)) -> SourceResult:
    """Every child event Zendesk's export holds for audits created in [window.start - edge, window.end + edge).

    `edge` is hop A's time tolerance: an audit just outside the window can explain a bus event inside it, which is
    then neither an orphan nor a gap (docs/design.md, "in window"). Completeness is about the window itself.

    Credentials come from the environment only (ZENDESK_EMAIL + ZENDESK_API_TOKEN, or ZENDESK_OAUTH_TOKEN); a
    missing URL or credentials is a ConfigError, refused credentials (401/403) a SourceError. Everything else the API
    does wrong (429, 5xx, timeouts, resets, bad JSON) is retried until `cfg.max_wait` of waiting is spent; then the
    result comes back with complete=False and a problem saying how to resume — this never raises for it.
    """
    environ = os.environ if environ is None else environ
    base = _base_url(cfg)
    auth, scheme = _auth_header(environ)
    now = now or datetime.now(timezone.utc)
    pages_dir = Path(pages_dir)
    pages_dir.mkdir(parents=True, exist_ok=True)

    lo, hi = window.start - edge, window.end + edge
    start_time = math.floor(lo.timestamp())
    stop_at = math.ceil(hi.timestamp())  # end_time >= this: every audit before hi was listed
    max_wait = parse_duration(cfg.max_wait).total_seconds()
    client = _Client(base, auth, cfg.requests_per_minute, parse_duration(cfg.timeout).total_seconds(), max_wait)
    led = _Ledger(int(lo.timestamp() * 1000), int(hi.timestamp() * 1000))
    fingerprints: list[dict] = []
    problems: list[str] = []
    steps: list[int] = []
    complete = True

    saved, set_aside = _saved_pages(pages_dir, start_time, base)
    cursor, page_no, done, replayed = start_time, 0, False, len(saved)
    index = open(pages_dir / "index.jsonl", "ab")
    bar = _Progress(progress, client.stats)
    client.on_wait = bar.update

    def take(entry: dict, doc: dict) -> int:
        """Ledger rows from one page; returns the next start_time (stepping a repeating second)."""
        led.add_page(entry["file"], doc["ticket_events"])
        fingerprints.append({k: entry[k] for k in ("file", "request", "start_time", "end_time", "count", "sha256",
                                                   "fetched_at")})
        return entry["next_start_time"]

    def step(second: int) -> None:
        """Record a repeating second that was stepped over, when it overlaps the window (else nothing was lost)."""
        if (second + 1) * 1000 > led.start_ms and second * 1000 < led.end_ms:
            steps.append(second)

    try:
        with bar:
            for entry in saved:
                page_no = entry["page"]
                doc = _load_page(gzip.decompress((pages_dir / entry["file"]).read_bytes()))
                cursor = take(entry, doc)
                if entry.get("same_second"):
                    step(entry["start_time"])
                bar.page(page_no, len(led.children), cursor)
                # An end-of-stream page listed everything older than its run's now − 60 s: if that covers the
                # window, nothing newer can belong to it and no request is needed.
                listed_until = entry.get("as_of", 0) - TAIL.total_seconds()
                if entry["end_time"] >= stop_at or (entry["end_of_stream"] and listed_until >= stop_at):
                    done = True
                    break
            while not done:
                request = f"{EXPORT_PATH}?start_time={cursor}"
                fetched_at = datetime.now(timezone.utc)
                try:
                    body, doc = client.get(request)
                except _GaveUp as e:
                    complete = False
                    problems.append(
                        f"Zendesk API kept answering {e} (waited {client.stats.waited_s:.0f}s; max_wait "
                        f"{_fmt(max_wait)} would be passed); re-run with the same pages dir ({pages_dir}) to resume "
                        f"from start_time={cursor} ({_iso(cursor)}).")
                    break
                end_time, eos, count = doc["end_time"], bool(doc.get("end_of_stream")), len(doc["ticket_events"])
                same_second = end_time <= cursor and not eos and count > 0
                next_start = end_time + 1 if same_second else end_time
                page_no += 1
                gz = gzip.compress(body, mtime=0)
                entry = {"page": page_no, "file": f"page-{page_no:05d}.json.gz", "url": base + request,
                         "request": request, "start_time": cursor, "end_time": end_time, "count": count,
                         "end_of_stream": eos, "same_second": same_second, "next_start_time": next_start, "as_of": now.timestamp(),
                         "fetched_at": fetched_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                         "sha256": hashlib.sha256(gz).hexdigest()}
                _write_atomic(pages_dir / entry["file"], gz)
                index.write(orjson.dumps(entry) + b"\n")
                index.flush()
                if same_second:
                    logger.warning("Zendesk export repeats the page of second %d; stepping to %d", cursor, next_start)
                    step(cursor)
                elif count == 0 and end_time <= cursor:
                    eos = True  # an empty page that would repeat: nothing more to list
                cursor = take(entry, doc)
                bar.page(page_no, len(led.children), cursor)
                done = eos or end_time >= stop_at
    finally:
        index.close()

    tail_pending = window.end > now - TAIL
    if tail_pending:
        # Events after now − 60 s can exist (or still arrive) and the export will not list them yet: the list is
        # partial whenever the window reaches into that tail, so it is never complete (see the module docstring).
        complete = False
        problems.append(
            f"The window ends at {_iso(window.end)} but Zendesk's export only lists events older than one minute "
            f"(before {_iso(now - TAIL)}); events in the window's last part may be missing. Re-run after "
            f"{_iso(window.end + TAIL)}.")
    if steps:
        complete = False
        problems.append(
            f"More than a page of audits shares second(s) {', '.join(_iso(s) for s in steps)}: Zendesk's export "
            "repeats that page forever, so the read stepped one second past each; events in those seconds beyond "
            "the first page may be missing.")

    ledger, rejects = led.tables()
    s = client.stats
    details = {
        "pages": page_no, "replayed_pages": replayed, "requests": s.requests, "retries": s.retries,
        "waited_s": round(s.waited_s, 3), "rate_limited": s.rate_limited, "same_second_steps": steps,
        "tail_pending": tail_pending, "end_time": cursor, "start_time": start_time, "audits": len(led.audits),
        "overlap_duplicates": led.overlap, "outside_window": led.outside, "auth": scheme,
        "pages_set_aside": str(set_aside) if set_aside else None,
    }
    return SourceResult(name=NAME, ledger=ledger, rejects=rejects, complete=complete, problems=problems,
                        fingerprints=fingerprints, details=details)


def _iso(t: datetime | int | float) -> str:
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(t, timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def probe(cfg: ZendeskConfig, *, now: datetime | None = None, environ=None) -> str:
    """One export request (the last few minutes) to prove the URL and credentials work: what it answered.

    For `reconcile check`: no retries and no waiting; a refusal or an unreadable answer is a SourceError.
    """
    environ = os.environ if environ is None else environ
    base = _base_url(cfg)
    auth, scheme = _auth_header(environ)
    now = now or datetime.now(timezone.utc)
    start = math.floor((now - 5 * TAIL).timestamp())  # the API wants start_time older than one minute
    client = _Client(base, auth, cfg.requests_per_minute, parse_duration(cfg.timeout).total_seconds(), max_wait=0)
    try:
        _, doc = client.get(f"{EXPORT_PATH}?start_time={start}")
    except _GaveUp as e:
        raise SourceError(f"Zendesk at {base} did not answer one export request ({e}). Check ZENDESK_URL and "
                          f"the network, or retry later if it was rate limited.") from None
    return f"{base}{EXPORT_PATH} answered ({len(doc['ticket_events'])} events in the last 5 minutes, {scheme} auth)"
