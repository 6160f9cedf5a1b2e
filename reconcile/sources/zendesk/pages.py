"""The saved-page cache: raw export pages kept gzipped beside an `index.jsonl`, bound to the account URL and query.

Each index line describes one page (`page`, `file`, `url`, `request`, `start_time`, `end_time`, `count`,
`end_of_stream`, `same_second`, `next_start_time`, `as_of`, `fetched_at`, `sha256` of the gzipped file; a collector's
page also `probed_at`, when Zendesk last answered nothing new after it; a page a run copied from a collector's cache
`collector_as_of` in place of `as_of`: cache.py). A chain of lines whose `start_time` follows the previous
`next_start_time` can be replayed instead of fetched: a file missing or changed, a torn line or a break ends the
chain. Pages fetched from another account URL (or by another query) are never replayed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import orjson

from .api import TAIL, export_request

logger = logging.getLogger(__name__)

INDEX = "index.jsonl"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def saved_pages(pages_dir: Path, start_time: int, base: str, scope: str) -> tuple[list[dict], Path | None]:
    """Index entries of pages that can be replayed: files present with their sha256, chained from start_time; and
    where pages of another account URL or query were set aside (None when none were).

    Reading stops at the first torn line, missing/changed file or break in the chain; the index is rewritten to the
    good prefix so new pages append after it. Pages of a run that began later than `start_time` are discarded.
    """
    index = pages_dir / INDEX
    if not index.exists():
        return [], None
    entries = []
    for line in index.read_bytes().splitlines():
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            break
    foreign = next((e for e in entries if bound_elsewhere(e, base, scope)), None)
    if foreign is not None:
        return [], set_aside(pages_dir, foreign)
    good: list[dict] = []
    for e in chain(entries):
        try:
            data = (pages_dir / e["file"]).read_bytes()
        except OSError:
            break
        if hashlib.sha256(data).hexdigest() != e["sha256"] or (not good and e["start_time"] > start_time):
            break
        good.append(e)
    if not good and index.exists():
        for p in pages_dir.glob("page-*.json.gz"):
            p.unlink()
    write_atomic(index, b"".join(orjson.dumps(e) + b"\n" for e in good))
    return good, None


def _requests(start_time, scope: str) -> tuple[str, ...]:
    """The requests a page for `scope` may have been saved by: today's, and for the export's default scope ("agent")
    the same query as saved before the scope was named (pages and caches of existing deployments stay valid)."""
    now = export_request(start_time, scope)
    return (now, now.removesuffix(f"&support_type_scope={scope}")) if scope == "agent" else (now,)


def bound_elsewhere(entry, base: str, scope: str) -> bool:
    """Whether a saved page was fetched from another account URL or by another query than the export's (for the
    tickets of `scope`, [zendesk] support_type_scope)."""
    if not isinstance(entry, dict) or type(entry.get("start_time")) is not int:
        return False  # a torn or malformed index line (no request to compare): the chain stops there (well_formed)
    request = entry.get("request")
    if not isinstance(request, str) or request not in _requests(entry.get("start_time"), scope):
        return True  # e.g. a page saved without the comment_events sideload (its comments have no child event), or
        # for another support type scope
    return entry.get("url") != base + request


def set_aside(pages_dir: Path, entry: dict) -> Path:
    """Move the index and every page into a new `set-aside-<n>` folder of `pages_dir`, unchanged."""
    n = 1
    while (pages_dir / f"set-aside-{n}").exists():
        n += 1
    aside = pages_dir / f"set-aside-{n}"
    aside.mkdir()
    for p in [pages_dir / INDEX, *pages_dir.glob("page-*.json.gz")]:
        if p.exists():
            os.replace(p, aside / p.name)
    logger.warning("Saved Zendesk pages in %s were fetched as %s, not by this read (its account URL, sideload and "
                   "[zendesk] support_type_scope): never replayed; moved to %s and fetched again.", pages_dir,
                   str(entry.get("url"))[:200], aside)
    return aside


# What an index entry says of its page that the page's body shows too (export.page_facts, which a replay checks it
# against), and every field of an entry with its type (bool is not taken for an int): a line of other types (an older
# or faulty writer, a hand edit) ends the chain there, as a torn line does.
FACTS = {"end_time": int, "count": int, "end_of_stream": bool, "same_second": bool, "next_start_time": int}
_FIELDS = {"page": int, "file": str, "sha256": str, "start_time": int, **FACTS}


def well_formed(entry) -> bool:
    """Whether an index line is an object holding every field a replay and the chain rest on, each of its type."""
    return isinstance(entry, dict) and all(type(entry.get(k)) is t for k, t in _FIELDS.items())


def chain(entries: list) -> list[dict]:
    """The entries up to the first that is not well formed or does not start where the previous one ended."""
    out: list[dict] = []
    expected = None
    for e in entries:
        if not well_formed(e) or (expected is not None and e["start_time"] != expected):
            break
        out.append(e)
        expected = e["next_start_time"]
    return out


def listed_until(entry: dict) -> float:
    """Unix time before which a chain ending with `entry` lists every audit: an end-of-stream page listed all older
    than its read's now − 60 s; any other page, all before its end_time (its last second may go on)."""
    as_of = entry.get("as_of")
    if entry.get("end_of_stream") and type(as_of) in (int, float):
        return max(float(entry["end_time"]), as_of - TAIL.total_seconds())
    return float(entry["end_time"])


def covers(entry: dict, stop_at: int) -> bool:
    """Whether a chain ending with `entry` lists every audit before `stop_at` (no request needed past it)."""
    return entry["end_time"] >= stop_at or (bool(entry.get("end_of_stream")) and listed_until(entry) >= stop_at)
