"""`reconcile collect zendesk`: keep the account's export pages in the page cache up to now − 60 s, through the day.

At 10 requests a minute a 10 M-event day is ~6,000 pages, ~10 hours of requests: a nightly run that fetched them all
would finish at noon. Run from cron every few minutes (or with --follow), the collector fetches each page once, as
soon as the export lists it, into `[zendesk] cache` (cache.py); the nightly run replays the cached pages for its
window and fetches only the tail.

One cycle: take the lock (else CacheBusy, exit 75), resume from the cached chain's last `next_start_time` (or
`start`, for an empty cache), fetch pages until the export's end of stream, and save each page before the index
line naming it. Idempotent: a cycle with nothing new re-fetches one page and, when it is byte-identical to the last
one cached, only moves that entry's `as_of` on (nothing else is written). Resumable: a collector killed at any point
leaves a chain the next one continues; pages written but not yet indexed are fetched again and overwritten. Paced at
`requests_per_minute x rate_share`, and not before the previous collector's last request + one interval.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ... import interrupt
from ...config import AwsConfig, ZendeskConfig
from ...errors import ConfigError
from ...window import parse_duration
from .cache import PageCache, last_request, lag, note_request
from .api import Client, GaveUp, auth_header, base_url, client_for, load_page
from .export import Headway, effective_rpm, fetch_page, fmt, iso, misstated, repeats, stalled
from .pages import bound_elsewhere, chain

logger = logging.getLogger(__name__)

S3_SAVE_EVERY = 20  # pages between index uploads to an s3:// cache (a local index is appended page by page)


@dataclass
class Collected:
    """What one cycle did and how far behind real time the cache is."""

    cache: str
    account: str
    now: float
    pages: int = 0  # in the cached chain
    new_pages: int = 0
    requests: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    requests_per_minute: float = 0.0
    listed_until: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    @property
    def behind_s(self) -> float | None:
        return None if self.listed_until is None else max(0.0, self.now - self.listed_until)

    def to_dict(self) -> dict:
        return {"cache": self.cache, "account": self.account, "now": iso(self.now),
                "listed_until": iso(self.listed_until) if self.listed_until is not None else None,
                "behind_s": None if self.behind_s is None else round(self.behind_s, 1),
                "pages": self.pages, "new_pages": self.new_pages, "requests": self.requests,
                "rate_limited": self.rate_limited, "waited_s": round(self.waited_s, 3),
                "requests_per_minute": self.requests_per_minute, "complete": self.complete,
                "problems": self.problems}

    def line(self) -> str:
        if self.listed_until is None:
            where = "the cache is empty"
        else:
            where = (f"cached up to {iso(self.listed_until)}, {fmt(round(self.behind_s))} behind now (the export "
                     f"never lists the last minute)")
        trouble = "" if self.complete else " — INCOMPLETE: " + "; ".join(self.problems)
        return (f"zendesk: {where}; {self.pages} pages ({self.new_pages} new), {self.requests} requests at "
                f"{self.requests_per_minute:g}/min{trouble}")


def collect(cfg: ZendeskConfig, aws: AwsConfig, *, start: datetime | None = None,
            clock: Callable[[], datetime] | None = None, environ=None, follow: bool = False, interval: float = 60.0,
            on_cycle: Callable[[Collected], None] = lambda c: None) -> Collected:
    """Bring `cfg.cache` up to the export's end (one cycle; with `follow`, a cycle every `interval` s until a
    signal). `start`: where an empty cache begins (default: 00:00 UTC today minus an hour). `clock`: "now" (the real
    clock by default). Raises CacheBusy when another collector holds the lock, ConfigError when the cache is
    another account's; a cycle the API wears out (max_wait) returns with problems: the next one resumes."""
    if not cfg.cache:
        raise ConfigError("No page cache to collect into. Set [zendesk] cache (a folder or s3://bucket/prefix) or "
                          "pass --cache.")
    environ = os.environ if environ is None else environ
    clock = clock or (lambda: datetime.now(timezone.utc))
    base = base_url(cfg)
    auth, _ = auth_header(environ)
    if start is None:
        start = clock().replace(hour=0, minute=0, second=0, microsecond=0) - parse_duration("1h")
    cache = PageCache(cfg.cache, aws)
    max_wait = parse_duration(cfg.max_wait).total_seconds()
    client = client_for(cfg, base, auth, effective_rpm(cfg), max_wait)
    with cache.lock():
        previous = last_request(cache)
        if previous is not None:
            client.defer_until(previous + 60.0 / client.rpm)
        while True:
            result = _cycle(cache, client, base, cfg.support_type_scope, math.floor(start.timestamp()), clock,
                            max_wait)
            on_cycle(result)
            if not follow:
                return result
            interrupt.sleep(interval)


def _cycle(cache: PageCache, client: Client, base: str, scope: str, start_time: int, clock,
           max_wait: float) -> Collected:
    before = (client.stats.requests, client.stats.rate_limited, client.stats.waited_s)
    entries, lines = cache.index()
    foreign = next((e for e in entries if bound_elsewhere(e, base, scope)), None)
    if foreign is not None:
        raise ConfigError(f"The Zendesk page cache {cache.uri} holds pages of {str(foreign.get('url'))[:200]}, not of "
                          f"{base}: it is another account's (or another query's). Point [zendesk] cache at a folder "
                          f"or prefix of this account's own.")
    good = chain(entries)
    present = cache.names() if good else set()
    lost = next((i for i, e in enumerate(good) if e["file"] not in present), None)
    if lost is not None:  # a page gone from the middle (a lifecycle rule, a partial copy): fetched again from there,
        # or every run would fetch from it while the cache claimed to be up to date
        logger.warning("Zendesk page cache %s: %s (start_time %d) is missing; fetching again from there", cache.uri,
                       good[lost]["file"], good[lost]["start_time"])
        good = good[:lost]
    if good and not _intact(cache, good[-1]):
        good = good[:-1]  # its bytes cut short by a crash (page writes are not synced): fetched again from its start
    if len(good) < lines:  # a torn last line (a collector killed mid-write) or a break: keep the good chain only
        logger.warning("Zendesk page cache %s: index cut to its first %d good entries of %d lines", cache.uri,
                       len(good), lines)
        cache.save_index(good, -1)
    entries = good
    result = Collected(cache=cache.uri, account=base, now=clock().timestamp(),
                       requests_per_minute=client.rpm)
    cursor = entries[-1]["next_start_time"] if entries else start_time
    page_no = entries[-1]["page"] if entries else 0
    unsaved = 0
    changed = False
    headway = Headway()
    try:
        while True:
            try:
                entry, gz, doc = fetch_page(client, base, scope, cursor, page_no + 1, clock())
            except GaveUp as e:
                result.problems.append(
                    f"Zendesk API kept answering {e} (waited {client.stats.waited_s:.0f}s; [zendesk] max_wait "
                    f"{fmt(max_wait)} would be passed); the next collector resumes from start_time={cursor} "
                    f"({iso(cursor)}).")
                break
            last = entries[-1] if entries else None
            if last is not None and _nothing_new(cache, last, entry, doc):
                # The export's end again, listing only audits the last cached page holds: nothing new up to this
                # request's now − 60 s, so that page's `as_of` moves on (it lists all older than that). Its bytes
                # stay those fetched at `fetched_at`; `probed_at` is when Zendesk last answered nothing new.
                last.update(as_of=entry["as_of"], probed_at=entry["fetched_at"], end_of_stream=entry["end_of_stream"])
                changed = True
                break
            if stuck := headway.problem(entry, doc):
                result.problems.append(f"{stuck} (not cached); the next collector asks again.")
                break
            if not entry["end_of_stream"] and repeats(entry, cursor):
                # not kept: a stalled API would otherwise add an empty page to the cache every cycle
                result.problems.append(f"{stalled(cursor)} (not cached); the next collector asks again.")
                break
            cache.write(entry["file"], gz)  # the page before the index line naming it
            entries.append(entry)
            unsaved += 1
            result.new_pages += 1
            page_no = entry["page"]
            if entry["same_second"]:
                # the cache now holds only that second's first page: a run of a window holding it can never be
                # complete from the cache (nor from Zendesk: the export repeats that page for ever), so it is said
                second = iso(entry["start_time"])
                result.problems.append(f"More than a page of audits shares second {second}: Zendesk's export repeats "
                                       f"that page for ever, so the collector stepped one second past it; a run of a "
                                       f"window holding that second is incomplete (events beyond its first page may "
                                       f"be missing).")
            if not cache.s3 or unsaved >= S3_SAVE_EVERY:
                cache.save_index(entries, unsaved)
                unsaved = 0
            if entry["end_of_stream"]:
                break
            cursor = entry["next_start_time"]
            logger.debug("zendesk page %d: %d audits up to %s", page_no, len(doc["ticket_events"]),
                         iso(entry["end_time"]))
    finally:
        if client.stats.requests > before[0]:
            note_request(cache, time.time())  # the next collector keeps the pacing from here
        if changed:
            cache.save_index(entries, -1)
        elif unsaved:
            cache.save_index(entries, unsaved)
    s = client.stats
    result.requests, result.rate_limited = s.requests - before[0], s.rate_limited - before[1]
    result.waited_s = s.waited_s - before[2]
    result.pages = len(entries)
    result.listed_until, _ = lag(entries, result.now)
    result.now = clock().timestamp()
    return result


def _intact(cache: PageCache, entry: dict) -> bool:
    """Whether a cached page's bytes are the ones its index line names (its sha256), and the line says of it what
    its body does (export.page_facts): the collector resumes from its next_start_time, which a line claiming more
    would carry past audits never cached."""
    raw = cache.read(entry["file"]) if isinstance(entry.get("file"), str) else None
    if raw is None or hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
        return False
    try:
        doc = load_page(gzip.decompress(raw))
    except (OSError, EOFError, zlib.error):
        return False
    return not misstated(entry, doc)


def _nothing_new(cache: PageCache, last: dict, entry: dict, doc: dict) -> bool:
    """Whether a freshly fetched end-of-stream page lists nothing the last cached page does not already hold."""
    if not (entry["end_of_stream"] and last.get("end_of_stream") and entry["start_time"] == last["next_start_time"]
            and entry["end_time"] == last["end_time"]):
        return False
    if entry["sha256"] == last["sha256"]:
        return True
    raw = cache.read(last["file"])  # intact: a cycle drops a last page whose bytes are not its sha256 (_intact)
    old = load_page(gzip.decompress(raw)) if raw is not None else None
    if not isinstance(old, dict) or not isinstance(old.get("ticket_events"), list):
        return False
    held = {json.dumps(a, sort_keys=True) for a in old["ticket_events"]}
    return all(json.dumps(a, sort_keys=True) in held for a in doc["ticket_events"])
