"""Zendesk source: what the source emitted, from the Incremental Ticket Event Export (PIPELINE.md §2).

    api.py      the account URL, credentials, and one paced, retried, deadline-bounded export request at a time
    export.py   the page walk: `read` replays saved pages, fetches the rest, and returns the ledger (+ `probe`)
    pages.py    the saved-page cache on disk: index.jsonl + gzipped pages, bound to the account URL and query
    audits.py   audits → ledger rows, deduped across overlapping pages; malformed ones → rejects
    cache.py    the collector's shared page cache (a folder or s3:// prefix): locked writes, read-only seeding
    collect.py  `reconcile collect zendesk`: keeps that cache up to now − 60 s through the day
"""

from .audits import NAME
from .api import EXPORT_PATH, RETRY_FLOOR, TAIL
from .export import from_pages, probe, read

__all__ = ["EXPORT_PATH", "NAME", "RETRY_FLOOR", "TAIL", "from_pages", "probe", "read"]
