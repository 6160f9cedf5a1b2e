"""The export walk: `read` replays the pages saved for the read range, then fetches the rest, page by page.

`read` walks `GET {url}/api/v2/incremental/ticket_events.json?start_time=<unix s>&include=comment_events` (api.py
export_request: without the sideload a comment has no child event) from the window start, following
`end_time` (pages overlap on their last second: audits and child events are deduped on id), and writes one ledger
row per child event whose audit was created in the window. Every raw page is kept gzipped in `pages_dir` with an
`index.jsonl` (pages.py); a re-run with the same `pages_dir` replays those pages and resumes from the last saved
`end_time`. With `[zendesk] cache` set, the pages a collector saved through the day (collect.py) seed an empty
`pages_dir` first (cache.py), so only the tail is fetched.

Choices worth knowing (see also the `read` docstring):
- The export never returns the last minute. If the window ends after now − 60 s, the source is incomplete and
  `details["tail_pending"]` is True: events in that tail may exist and cannot be listed yet, so no list is complete.
- More than a page of audits in one second makes the API repeat the same page forever. We step one second, record
  the second in `details["same_second_steps"]` and mark the source incomplete (events of that second may be missing).
- Waiting on 429s and retries is bounded by `max_wait`, and so is the time failed requests took (a timeout spends
  `timeout`); past it the read stops, incomplete, and says how to resume (api.py). Worst case for a read of P
  pages: P x (60/requests_per_minute + timeout) + max_wait + timeout (README, "How long a run can take").
- Saved pages are bound to the account URL and the export query that produced them (each index entry's `url`):
  pages saved for another Zendesk URL (or query) are never replayed. They are set aside, unchanged, in a
  `set-aside-<n>` folder inside the pages dir (a warning and `details["pages_set_aside"]` say where), and the
  window is fetched again from the URL configured now.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa

from ...config import AwsConfig, ZendeskConfig
from ...errors import SourceError
from ...interrupt import Abandonable
from ...ledger import SourceResult
from ...window import Window, parse_duration
from .audits import NAME, AuditLedger, created_ms
from .api import (EXPORT_PATH, TAIL, URL_KEY, Client, GaveUp, Stats, auth_header, base_url, client_for,
                  export_request, load_page)
from .pages import FACTS, INDEX, covers, saved_pages, write_atomic

logger = logging.getLogger(__name__)


class Progress:
    """Pages, events, request rate and time waited, on stderr; a no-op when disabled."""

    def __init__(self, enabled: bool, stats: Stats):
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
        at = iso(self.cursor) if self.cursor else "-"
        self.bar.update(self.task, info=(
            f"pages {self.pages} · events {self.events:,} · {rate} req/min · "
            f"waited {s.waited_s:.0f}s ({s.rate_limited}×429) · at {at}"))


# --- one page -------------------------------------------------------------------------------------------------------


def fetch_page(client: Client, base: str, scope: str, cursor: int, page_no: int,
               as_of: datetime) -> tuple[dict, bytes, dict]:
    """The export page at start_time=`cursor`: (its index entry, the gzipped body to save, the parsed page).

    Raises GaveUp when waiting on the API would pass max_wait (api.py). `as_of` is the "now" of the read: an
    end-of-stream page lists every audit older than as_of − 60 s.
    """
    request = export_request(cursor, scope)
    fetched_at = datetime.now(timezone.utc)
    body, doc = client.get(request)
    facts = page_facts(cursor, doc)
    if facts["end_time"] < doc["end_time"]:
        logger.warning("Zendesk's export answered start_time=%d with end_time %d, after its last audit (%d): the next "
                       "page starts at %d", cursor, doc["end_time"], facts["end_time"], facts["end_time"])
    gz = gzip.compress(body, mtime=0)
    entry = {"page": page_no, "file": f"page-{page_no:05d}.json.gz", "url": base + request,
             "request": request, "start_time": cursor, **facts, "as_of": as_of.timestamp(),
             "fetched_at": fetched_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "sha256": hashlib.sha256(gz).hexdigest()}
    return entry, gz, doc


def _seed(uri: str, aws: AwsConfig, pages_dir: Path, base: str, scope: str, start_time: int, stop_at: int) -> dict:
    """cache.seed within [aws] read_deadline: an S3 cache trickling its bodies held the run past the deadline every
    other AWS read keeps (the Zendesk read is not bounded by it: a day may take hours of API requests). The pages are
    copied into a folder of their own, moved into `pages_dir` only once the copy ended in time: a copy left running
    writes where the run no longer looks."""
    from .cache import seed
    index = pages_dir / INDEX
    if index.exists() and index.stat().st_size > 0:
        return seed(uri, aws, pages_dir, base, scope, start_time, stop_at)  # says it holds pages already
    staging = Path(tempfile.mkdtemp(prefix="reconcile-cache-seed-"))
    copy = Abandonable(lambda: seed(uri, aws, staging, base, scope, start_time, stop_at), "reconcile-cache-seed")
    if not copy.ended_by(time.monotonic() + parse_duration(aws.read_deadline).total_seconds()):
        logger.warning("Zendesk page cache %s did not answer within [aws] read_deadline = %s; the whole window is "
                       "fetched", uri, aws.read_deadline)
        return {"uri": uri, "used": False, "pages": 0,
                "why": f"it did not answer within [aws] read_deadline = {aws.read_deadline}"}
    try:
        out = copy.result()
        pages_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(staging.iterdir(), key=lambda f: f.name == INDEX):  # the index last: it names the pages
            shutil.move(str(f), pages_dir / f.name)
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def page_facts(cursor: int, doc) -> dict | None:
    """What an export page answered for start_time=`cursor` proves, from its body alone (its index entry's FACTS):
    how far it lists, whether the stream ends there, and where the next page starts. None for a body that is not a
    page of the export (api.Client.get checks the same shape of every answer)."""
    if not (isinstance(doc, dict) and isinstance(doc.get("ticket_events"), list) and type(doc.get("end_time")) is int
            and type(doc.get("end_of_stream", False)) is bool):
        return None
    end_time, eos, count = doc["end_time"], doc.get("end_of_stream") is True, len(doc["ticket_events"])
    # end_time is "the most recent time present in the result set" (the export reference) and the next page starts
    # there. One beyond the page's last audit (items left out after paging, a proxy rewriting it) would step over
    # what lies between: the page counts as listed to its last audit's second, and the next starts there.
    # The end of the stream too: what it lists past its last audit is what its read's now - 60 s proves
    # (pages.listed_until), never its end_time, which the collector would resume from and the run take as covering.
    # An audit's time is its created_at, as the ledger judges it by (its `timestamp` given as a float, or not at all,
    # made the page prove its end_time: a day called complete from its first page).
    stamps = [ms // 1000 for ms, _ in map(created_ms, doc["ticket_events"]) if ms is not None]
    # A page with no audit time lists nothing: whatever end_time it gives (two days on, say), it proves no audit absent
    # before it (not documented; followed, an empty page called a day complete from 70 of 600 events). It counts as
    # listed to its start: not the end of the stream, the read stops there, incomplete (repeats, stalled).
    end_time = min(end_time, max(stamps)) if stamps else min(end_time, cursor)
    same_second = end_time <= cursor and not eos and count > 0
    return {"end_time": end_time, "count": count, "end_of_stream": eos, "same_second": same_second,
            "next_start_time": end_time + 1 if same_second else end_time}


def misstated(entry: dict, doc) -> list[str]:
    """The FACTS a saved page's index entry states otherwise than its body does (all of them for a body that is no
    export page): such an entry proves nothing (an older or faulty writer, a hand edit)."""
    facts = page_facts(entry["start_time"], doc)
    return [k for k in FACTS if facts is None or type(entry.get(k)) is not type(facts[k]) or entry.get(k) != facts[k]]


def repeats(entry: dict, cursor: int) -> bool:
    """An empty page that would repeat: nothing more to list from `cursor`."""
    return entry["count"] == 0 and entry["end_time"] <= cursor


def stalled(cursor: int) -> str:
    """What an empty page that is not the end of the stream leaves unproved."""
    return (f"Zendesk's export answered start_time={cursor} ({iso(cursor)}) with an empty page that is not the end of "
            f"the stream: it lists nothing after {iso(cursor)} (whatever end_time it gives), so audits after it were "
            f"not listed")


class Headway:
    """Whether the export's pages move on. A page of audits that end before its start_time does not follow the
    request; a second stepped over twice in a row with no audit the page before did not list is the same page
    answered again. Either way the walk would go on forever (each step a request), so it stops with a problem."""

    def __init__(self):
        self.last_ids: frozenset = frozenset()
        self.idle = 0

    def problem(self, entry: dict, doc: dict) -> str | None:
        cursor, end = entry["start_time"], entry["end_time"]
        if entry["count"] and not entry["end_of_stream"] and end < cursor:
            return (f"Zendesk's export answered start_time={cursor} ({iso(cursor)}) with audits up to {iso(end)}, "
                    f"before it: the answer does not follow start_time, so audits after {iso(cursor)} were not "
                    f"listed")
        ids = frozenset(a.get("id") for a in doc["ticket_events"] if isinstance(a, dict))
        self.idle = self.idle + 1 if entry["same_second"] and ids <= self.last_ids else 0
        self.last_ids = ids
        if self.idle >= 2:
            return (f"Zendesk's export answered start_time={cursor} ({iso(cursor)}) with the audits of the page "
                    f"before, again: it does not move on, so audits after {iso(cursor)} were not listed")
        return None


# --- the walk -------------------------------------------------------------------------------------------------------


class _Walk:
    """Pages replayed and fetched for one read: the cursor, the ledger they fill, the seconds stepped over."""

    def __init__(self, led: AuditLedger, pages_dir: Path, base: str, scope: str, client: Client, now: datetime,
                 bar: Progress):
        self.led, self.pages_dir, self.base, self.client, self.now, self.bar = led, pages_dir, base, client, now, bar
        self.scope = scope
        self.cursor = 0
        self.page_no = 0
        self.fingerprints: list[dict] = []
        self.steps: list[int] = []
        self.dropped = 0  # saved pages dropped as not what their index entries say (replay)

    def take(self, entry: dict, doc: dict) -> None:
        """Ledger rows from one page; the cursor moves to the next start_time (stepping a repeating second)."""
        self.led.add_page(entry["file"], doc["ticket_events"])
        self.fingerprints.append({k: entry[k] for k in ("file", "request", "start_time", "end_time", "count",
                                                        "sha256", "fetched_at")})
        self.page_no = entry["page"]
        self.cursor = entry["next_start_time"]
        self.bar.page(self.page_no, len(self.led.children), self.cursor)

    def step(self, second: int) -> None:
        """Record a repeating second that was stepped over, when it overlaps the window (else nothing was lost)."""
        if (second + 1) * 1000 > self.led.start_ms and second * 1000 < self.led.end_ms:
            self.steps.append(second)

    def replay(self, saved: list[dict], stop_at: int) -> bool:
        """Take the saved pages in order; True once one proves the read range listed (no request needed). A page
        whose index entry claims what its body does not say (page_facts: an older or faulty writer, a hand edit) ends
        the replay: it and the pages after it are dropped from the pages dir, and the walk fetches from its start."""
        for i, entry in enumerate(saved):
            try:
                doc = load_page(gzip.decompress((self.pages_dir / entry["file"]).read_bytes()))
            except (OSError, EOFError, zlib.error):  # its sha256 matched, yet it is no gzip: no page of ours
                doc = None
            wrong = misstated(entry, doc)
            if wrong:
                self.drop(saved[:i], saved[i:], wrong)
                return False
            self.take(entry, doc)
            if entry.get("same_second"):
                self.step(entry["start_time"])
            # An end-of-stream page listed everything older than its run's now − 60 s: if that covers the
            # window, nothing newer can belong to it and no request is needed.
            if covers(entry, stop_at):
                return True
        return False

    def drop(self, kept: list[dict], dropped: list[dict], wrong: list[str]) -> None:
        """Keep only `kept` of the saved pages: the index rewritten to them, the others' files removed (the walk
        fetches from the first dropped page's start and saves its pages under their numbers)."""
        first = dropped[0]
        logger.warning("Saved Zendesk page %s (start_time %s) is not what its index entry says (%s): it and the %d "
                       "page(s) after it are fetched again", first["file"], first["start_time"],
                       ", ".join(f"{k} {first.get(k)!r}" for k in wrong), len(dropped) - 1)
        write_atomic(self.pages_dir / INDEX, b"".join(orjson.dumps(e) + b"\n" for e in kept))
        for e in dropped:
            (self.pages_dir / e["file"]).unlink(missing_ok=True)
        self.dropped = len(dropped)

    def fetch(self, stop_at: int, max_wait: float) -> str | None:
        """Fetch, save and take pages from the cursor until the range is listed; a problem if the API wore us out."""
        headway = Headway()
        with open(self.pages_dir / INDEX, "ab") as index:
            while True:
                cursor = self.cursor
                try:
                    entry, gz, doc = fetch_page(self.client, self.base, self.scope, cursor, self.page_no + 1,
                                                self.now)
                except GaveUp as e:
                    return (f"Zendesk API kept answering {e} (waited {self.client.stats.waited_s:.0f}s; [zendesk] "
                            f"max_wait {fmt(max_wait)} would be passed); re-run with the same pages dir "
                            f"({self.pages_dir}) to resume from start_time={cursor} ({iso(cursor)}).")
                if stuck := headway.problem(entry, doc):  # not saved: a re-run asks again from here
                    return f"{stuck}. Check what answers at ZENDESK_URL ({self.base}), then re-run."
                write_atomic(self.pages_dir / entry["file"], gz)
                index.write(orjson.dumps(entry) + b"\n")
                index.flush()
                if entry["same_second"]:
                    logger.warning("Zendesk export repeats the page of second %d; stepping to %d", cursor,
                                   entry["next_start_time"])
                    self.step(cursor)
                self.take(entry, doc)
                if entry["end_of_stream"] or entry["end_time"] >= stop_at:
                    return None
                if repeats(entry, cursor):
                    # Not the end of the stream, yet nothing listed and no way on: what follows was never listed
                    return (f"{stalled(cursor)}. Re-run with the same pages dir ({self.pages_dir}) to resume from "
                            f"there; if it repeats, check what answers at ZENDESK_URL ({self.base}).")


def _ledger(window: Window, edge: timedelta) -> AuditLedger:
    """The ledger of the audits created in [window.start - edge, window.end + edge) (read's range)."""
    return AuditLedger(int((window.start - edge).timestamp() * 1000), int((window.end + edge).timestamp() * 1000))


def from_pages(pages_dir: Path, taken: list[dict], window: Window, edge: timedelta) -> tuple[pa.Table, pa.Table]:
    """The ledger and rejects the pages a read took make, as read() makes them (`taken`: its fingerprints, in the
    order it took them; `edge` as read's): `reconcile verify` re-derives a run's Zendesk ledger from the pages its
    evidence bundles. Raises ValueError naming a page that is missing, or is not the one the read took (sha256)."""
    led = _ledger(window, edge)
    for fp in taken:
        try:
            data = (pages_dir / fp["file"]).read_bytes()
        except OSError as e:
            raise ValueError(f"{fp['file']}, a page the read took, cannot be read ({e.strerror or e})") from e
        if hashlib.sha256(data).hexdigest() != fp["sha256"]:
            raise ValueError(f"{fp['file']} is not the page the read took (its sha256 differs from the manifest's)")
        led.add_page(fp["file"], load_page(gzip.decompress(data))["ticket_events"])
    return led.tables()


# --- the source -----------------------------------------------------------------------------------------------------


def read(cfg: ZendeskConfig, window: Window, pages_dir: Path, *, now: datetime | None = None, progress: bool = True,
         environ=None, edge: timedelta = timedelta(0), aws: AwsConfig | None = None) -> SourceResult:
    """Every child event Zendesk's export holds for audits created in [window.start - edge, window.end + edge).

    `edge` is hop A's reach (window.zendesk_reach): an audit just outside the window can explain a bus event inside
    it, which is then neither an orphan, nor a gap, nor taken by another event (docs/design.md, "in window").
    Completeness is about the window itself.

    Credentials come from the environment only (ZENDESK_EMAIL + ZENDESK_API_TOKEN, or ZENDESK_OAUTH_TOKEN); a
    missing URL or credentials is a ConfigError, refused credentials (401/403) a SourceError. Everything else the API
    does wrong (429, 5xx, timeouts, resets, bad JSON) is retried until `cfg.max_wait` of waiting is spent; then the
    result comes back with complete=False and a problem saying how to resume — this never raises for it.

    `aws` reaches an `s3://` `[zendesk] cache` (the collector's pages, never written here).
    """
    environ = os.environ if environ is None else environ
    base = base_url(cfg)
    auth, scheme = auth_header(environ)
    # The export's cut-off is Zendesk's "one minute before the request", not the run's as_of: a --as-of ahead of the
    # clock would have a page list the last minute it cannot hold, and a re-run would replay that page as proof.
    now = min(now or datetime.now(timezone.utc), datetime.now(timezone.utc))
    pages_dir = Path(pages_dir)
    pages_dir.mkdir(parents=True, exist_ok=True)

    lo, hi = window.start - edge, window.end + edge
    start_time = math.floor(lo.timestamp())
    stop_at = math.ceil(hi.timestamp())  # end_time >= this: every audit before hi was listed
    max_wait = parse_duration(cfg.max_wait).total_seconds()
    client = client_for(cfg, base, auth, effective_rpm(cfg), max_wait)
    led = _ledger(window, edge)
    problems: list[str] = []

    scope = cfg.support_type_scope
    cached = _seed(cfg.cache, aws or AwsConfig(), pages_dir, base, scope, start_time, stop_at) if cfg.cache else None
    saved, set_aside = saved_pages(pages_dir, start_time, base, scope)
    bar = Progress(progress, client.stats)
    client.on_wait = bar.update
    walk = _Walk(led, pages_dir, base, scope, client, now, bar)
    walk.cursor = start_time
    with bar:
        if not walk.replay(saved, stop_at):
            gave_up = walk.fetch(stop_at, max_wait)
            if gave_up:
                problems.append(gave_up)

    tail_pending = window.end > now - TAIL
    if tail_pending:
        # Events after now − 60 s can exist (or still arrive) and the export will not list them yet: the list is
        # partial whenever the window reaches into that tail, so it is never complete (see the module docstring).
        problems.append(
            f"The window ends at {iso(window.end)} but Zendesk's export only lists events older than one minute "
            f"(before {iso(now - TAIL)}); events in the window's last part may be missing. Re-run after "
            f"{iso(window.end + TAIL)}.")
    steps = walk.steps
    if steps:
        problems.append(
            f"More than a page of audits shares second(s) {', '.join(iso(s) for s in steps)}: Zendesk's export "
            "repeats that page forever, so the read stepped one second past each; events in those seconds beyond "
            "the first page may be missing.")

    ledger, rejects = led.tables()
    s = client.stats
    details = {
        "pages": walk.page_no, "replayed_pages": len(saved) - walk.dropped,
        "saved_pages_dropped": walk.dropped, "requests": s.requests, "retries": s.retries,
        "waited_s": round(s.waited_s, 3), "rate_limited": s.rate_limited, "same_second_steps": steps,
        "tail_pending": tail_pending, "end_time": walk.cursor, "start_time": start_time, "audits": len(led.audits),
        "overlap_duplicates": led.overlap, "outside_window": led.outside, "auth": scheme,
        "pages_set_aside": str(set_aside) if set_aside else None,
    }
    if cached is not None:
        details["cache"] = cached
    return SourceResult(name=NAME, ledger=ledger, rejects=rejects, complete=not problems, problems=problems,
                        fingerprints=walk.fingerprints, details=details)


def effective_rpm(cfg: ZendeskConfig) -> float:
    """This process's share of the account's export budget: requests_per_minute x rate_share."""
    return cfg.requests_per_minute * cfg.rate_share


def iso(t: datetime | int | float) -> str:
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(t, timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt(seconds: float) -> str:
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
    base = base_url(cfg)
    auth, scheme = auth_header(environ)
    now = now or datetime.now(timezone.utc)
    start = math.floor((now - 5 * TAIL).timestamp())  # the API wants start_time older than one minute
    client = client_for(cfg, base, auth, cfg.requests_per_minute, max_wait=0)
    try:
        _, doc = client.get(export_request(start, cfg.support_type_scope))
    except GaveUp as e:
        raise SourceError(f"Zendesk at {base} did not answer one export request ({e}). Check {URL_KEY} and "
                          f"the network, or retry later if it was rate limited.") from None
    return f"{base}{EXPORT_PATH} answered ({len(doc['ticket_events'])} events in the last 5 minutes, {scheme} auth)"
