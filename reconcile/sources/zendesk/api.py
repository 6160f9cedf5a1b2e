"""Zendesk's HTTP side: the account URL and credentials, and one export request at a time, paced, retried and bounded.

`Client.get` spaces requests 60/requests_per_minute apart, waits out 429s (at least RETRY_FLOOR, whatever
Retry-After says) and retries 5xx, timeouts, resets and cut-short bodies with jittered backoff, until `max_wait` of
waiting (plus the failed requests' own time) is spent; then it raises GaveUp. `timeout` is a deadline for the whole
request (connect, headers and body): a watchdog shuts the socket down when it passes, so a body trickled a byte at a
time still ends, and its body may hold `max_bytes` (`[zendesk] max_page_size`): one streamed fast and without end
is refused when it passes that, not held in memory until the deadline. Refused credentials and answers no retry can
fix are a SourceError.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import math
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable
from urllib.parse import urlsplit

import orjson

from ... import interrupt
from ...config import ZendeskConfig, memory_bytes
from ...errors import AccessDenied, ConfigError, SourceError
from ...window import parse_duration

logger = logging.getLogger(__name__)

EXPORT_PATH = "/api/v2/incremental/ticket_events.json"
URL_KEY = "[zendesk] url (or --zendesk-url, ZENDESK_URL)"  # where the account URL comes from, for errors
# Without the comment_events sideload a comment is only `comment_present`/`comment_public` on the audit's children, with
# no child event of its own (Zendesk's Incremental Ticket Event Export reference, "Sideloading"): its Comment child,
# which the bus's Comment Created stands for, would be missing from the list of what Zendesk emitted.
EXPORT_QUERY = "include=comment_events"
# Which tickets the export lists by support type is `support_type_scope` (Zendesk's export reference: "agent" by
# default). Whether the EventBridge connector emits the events of AI-agent tickets is not documented: [zendesk]
# support_type_scope says which tickets a run expects on the bus, and every request names it.


def export_request(start_time: int, scope: str) -> str:
    """The path and query of the export page at `start_time` for tickets of `scope` ([zendesk] support_type_scope):
    what a saved page's index entry names."""
    return f"{EXPORT_PATH}?start_time={start_time}&{EXPORT_QUERY}&support_type_scope={scope}"
TAIL = timedelta(seconds=60)  # "events from the last minute are never returned"
BACKOFF_BASE = 1.0  # seconds; doubled per consecutive failure, capped, with jitter
BACKOFF_CAP = 60.0
RETRY_FLOOR = 1.0  # seconds: the least a 429 waits, whatever Retry-After says (0, absent, garbage)
ENV_HELP = "Set ZENDESK_EMAIL and ZENDESK_API_TOKEN (API token auth) or ZENDESK_OAUTH_TOKEN (OAuth)"
_LOOPBACK = {"localhost"}



class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urllib would send the Authorization header on to wherever it points (another host, even
    plain http). The 3xx reaches Client._http_error, which names ZENDESK_URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def client_for(cfg: ZendeskConfig, base: str, auth: str, rpm: float, max_wait: float) -> Client:
    """A Client paced at `rpm` with the config's per-request timeout and page size bound."""
    timeout = parse_duration(cfg.timeout).total_seconds()
    return Client(base, auth, rpm, timeout, max_wait, memory_bytes(cfg.max_page_size))


class GaveUp(Exception):
    """Waiting on limits/errors would pass max_wait. Carries what the API kept answering."""


# --- configuration and auth -----------------------------------------------------------------------------------------


def base_url(cfg: ZendeskConfig) -> str:
    if not cfg.url:
        raise ConfigError("No Zendesk URL. Set ZENDESK_URL (like https://acme.zendesk.com) or [zendesk] url.")
    u = urlsplit(cfg.url.strip())
    if u.scheme not in ("https", "http") or not u.hostname:
        raise ConfigError(f"Zendesk URL {cfg.url!r} is not an http(s) URL. Use one like https://acme.zendesk.com.")
    if u.username or u.password:
        raise ConfigError(f"The Zendesk URL must not carry credentials. {ENV_HELP} instead.")
    if u.scheme == "http" and not is_loopback(u.hostname):
        raise ConfigError(f"Refusing to send Zendesk credentials over plain http to {u.hostname}. Use https://.")
    return f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}"


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_header(environ) -> tuple[str, str]:
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
class Stats:
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
class Client:
    base: str
    auth: str = field(repr=False)
    rpm: float
    timeout: float
    max_wait: float
    max_bytes: int  # [zendesk] max_page_size (client_for)
    on_wait: Callable[[], None] = lambda: None
    stats: Stats = field(default_factory=Stats)
    _next_slot: float = 0.0
    _answered: bool = False

    def __post_init__(self):
        # Loopback (the simulator) never goes through an HTTP(S)_PROXY from the environment.
        host = urlsplit(self.base).hostname or ""
        self._handlers = [_NoRedirect()] + ([urllib.request.ProxyHandler({})] if is_loopback(host) else [])
        self._interval = 60.0 / self.rpm if self.rpm and self.rpm > 0 else 0.0

    def defer_until(self, wall: float) -> None:
        """Send no request before unix time `wall` (where another process's last request leaves off)."""
        wait = wall - time.time()
        if wait > 0:
            self._next_slot = max(self._next_slot, time.monotonic() + min(wait, self._interval))

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
            # the wait it asked for, when that alone passes max_wait (a Retry-After of days hid behind "kept answering")
            raise GaveUp(what if seconds <= self.max_wait else f"{what}, asking for a wait of {seconds:,.0f} s")
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
                body = self._body(resp, path_query)
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
        doc = load_page(body)
        if doc is None:
            return ("timeouts" if deadline.expired else "truncated or invalid JSON"), None
        # end_time an integer and end_of_stream (when given) a boolean, as documented: `true` read as an end_time,
        # or the text "false" read as the end of the stream, would end the walk with the rest unlisted
        if not (isinstance(doc, dict) and isinstance(doc.get("ticket_events"), list)):
            raise SourceError(f"{self.base}{EXPORT_PATH} did not answer like Zendesk's incremental export (no "
                              f"ticket_events list). Check {URL_KEY}.")
        drift = [f"{k} {str(doc.get(k))[:40]!r}" for k, ok in (("end_time", type(doc.get("end_time")) is int),
                 ("end_of_stream", type(doc.get("end_of_stream", False)) is bool)) if not ok]
        if drift:
            raise SourceError(f"{self.base}{path_query} answered with {' and '.join(drift)} (documented: "
                              "end_time an integer, end_of_stream true or false): the walk cannot tell where the "
                              "export ends, so it stops here. Check that ZENDESK_URL reaches Zendesk itself, not a "
                              "proxy that rewrites its answers.")
        return (body, doc), None

    def _body(self, resp, path_query: str) -> bytes:
        """The answer's body, read a megabyte at a time up to `max_bytes` (no retry makes a page smaller)."""
        parts, held = [], 0
        while held <= self.max_bytes and (resp.length or 0) <= self.max_bytes:  # http.client's Content-Length
            part = resp.read(min(1 << 20, self.max_bytes + 1 - held))
            if not part:
                return b"".join(parts)
            parts.append(part)
            held += len(part)
        raise SourceError(f"{self.base}{path_query} answered with a body of more than {self.max_bytes:,} bytes "
                          f"([zendesk] max_page_size): no export page of Zendesk's is that big, so the read stops "
                          f"here rather than hold it. Check that {URL_KEY} reaches Zendesk itself, or raise "
                          f"max_page_size if its pages (up to 1,000 events) carry comments that long.")

    def _failure(self, e: Exception, deadline: _Deadline) -> tuple[str, None]:
        """What a request that got no answer counts as; raises for what no retry can fix."""
        if deadline.expired:
            return "timeouts", None
        if isinstance(e, urllib.error.URLError):
            reason = e.reason
            if isinstance(reason, socket.gaierror):
                raise SourceError(f"Cannot resolve the Zendesk host of {self.base}. Check {URL_KEY}.") from None
            if isinstance(reason, ssl.SSLError):
                raise SourceError(f"TLS to {self.base} failed ({reason}). Check {URL_KEY}.") from None
            if isinstance(reason, ConnectionRefusedError) and not self._answered:
                raise SourceError(f"Nothing answers at {self.base} (connection refused). Check {URL_KEY}.") from None
            return ("timeouts" if isinstance(reason, TimeoutError) else "connection errors"), None
        if isinstance(e, TimeoutError):
            return "timeouts", None
        # resets, RemoteDisconnected, IncompleteRead (a body cut short of its Content-Length)
        return "connection errors", None

    def _http_error(self, e: urllib.error.HTTPError, path_query: str):
        code = e.code
        if 300 <= code < 400:
            where = urlsplit(e.headers.get("Location") or "")
            to = f" to {where.scheme}://{where.hostname}" if where.scheme and where.hostname else ""
            raise SourceError(
                f"Zendesk answered HTTP {code}{to} for {path_query.split('?')[0]}: a redirect is not followed (the "
                f"credentials would go with it). Set ZENDESK_URL to the account's own https://<subdomain>.zendesk.com "
                f"URL.") from None
        if code in (401, 403):
            raise AccessDenied(
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
        raise SourceError(f"Zendesk answered HTTP {code} for {path_query.split('?')[0]}. Check {URL_KEY}.") from None


def load_page(body: bytes):
    """A page's JSON, or None when it is no JSON (cut short: worth a retry). Bytes that are not UTF-8 do not sink the
    page: they are read as lone surrogates, and the audit holding them is rejected (AuditLedger.add_page)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None
