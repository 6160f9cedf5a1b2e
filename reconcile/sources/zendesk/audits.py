"""Audits to ledger rows: one row per child event of an audit created in the read range, deduped across the
export's overlapping pages; every malformed audit or child a reject with its reason (docs/design.md, "Completeness")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from ...ledger import ID_DIGITS, TS, conform, rejects_table, time_ms

NAME = "zendesk"
# The child events that are an audit's comment (its `comment_present`): a written one, or a voice comment (Zendesk's
# Ticket Audit events reference, "Voice comment event": a call's recording and transcript as the comment)
COMMENT_KINDS = ("Comment", "VoiceComment")


@dataclass
class AuditLedger:
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
        dirty = not is_utf8(audits)  # one check a page; then audit by audit only on a page that needs it
        for a in audits:
            aid = a.get("id") if isinstance(a, dict) else None
            ref = f"{file}#audit={aid}"
            if whole(aid):
                if aid in self.audits:  # pages overlap on their last second
                    self.overlap += 1
                    continue
                self.audits.add(aid)
            ms, reason = created_ms(a)
            if dirty and not is_utf8(a):
                reason = "audit holds bytes that are not UTF-8"
            if reason is None and not whole(a.get("ticket_id")):
                reason = ("audit without ticket_id" if a.get("ticket_id") is None
                          else f"ticket_id {str(a.get('ticket_id'))[:40]!r} is not a number")
            if reason is None and not whole(aid):
                reason = "audit without id" if aid is None else f"audit id {str(aid)[:40]!r} is not a number"
            if reason:
                # an audit without a usable id is met again where pages overlap: nothing to dedupe it on but its content
                self._reject(ref, reason, a, by_content=not whole(aid))
                continue
            if not (self.start_ms <= ms < self.end_ms):
                self.outside += 1
                continue
            children = a.get("child_events")
            if not isinstance(children, list):  # drift: its events cannot be counted, so the read is not whole
                self._reject(ref, "audit without child_events" if children is None else
                             f"child_events {str(children)[:40]!r} is not a list", a)
                continue
            flagged, commented = a.get("comment_present") is True, False
            for ch in children:
                if isinstance(ch, dict):
                    flagged = flagged or ch.get("comment_present") is True
                    commented = commented or ch.get("event_type") in COMMENT_KINDS
                cid = ch.get("id") if isinstance(ch, dict) else None
                if not whole(cid):
                    self._reject(ref, "child event without id" if cid is None else
                                 f"child event id {str(cid)[:40]!r} is not a number", ch)
                    continue
                et = ch.get("event_type")
                if not isinstance(et, str):  # no type: it may be any kind, one the model knows among them
                    self._reject(ref, "child event without event_type" if et is None else
                                 f"child event_type {str(et)[:40]!r} is not text", ch)
                    continue
                if cid in self.children:
                    continue
                self.children.add(cid)
                if et == "Change" and ch.get("field_name"):
                    et = f"Change:{ch['field_name']}"
                c["source_id"].append(str(cid))
                c["ticket_id"].append(a["ticket_id"])
                c["event_type"].append(et)
                c["event_time"].append(ms)
                c["audit_id"].append(aid)
                c["source_ref"].append(ref)
            if flagged and not commented:
                # the export answers so when asked without the comment_events sideload (api.export_request)
                self._reject(ref, "the audit has a comment (comment_present) but no Comment (or VoiceComment) child "
                             "event: the page was fetched without include=comment_events", a)

    def _reject(self, ref: str, reason: str, raw, by_content: bool = False) -> None:
        text = orjson.dumps(raw).decode() if is_utf8(raw) else json.dumps(raw)  # \udcNN shows a byte that is not
        if by_content:
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


def whole(value) -> bool:
    """An id as the ledger keeps it: a JSON integer (not a boolean, which Python counts as one), not negative, of at
    most ledger.ID_DIGITS digits, as the AWS sources take ticket ids (sources/events.py WHOLE_ID)."""
    return type(value) is int and 0 <= value < 10**ID_DIGITS


def is_utf8(value) -> bool:
    """Whether a page's JSON value holds no byte that was not UTF-8 (read as a lone surrogate by load_page)."""
    try:
        orjson.dumps(value)
        return True
    except orjson.JSONEncodeError:
        return False


def created_ms(audit) -> tuple[int | None, str | None]:
    if not isinstance(audit, dict):
        return None, "audit is not an object"
    text = audit.get("created_at")
    if not text:
        return None, "audit without created_at"
    ms = time_ms(str(text))  # ledger.TIME_TEXT: ISO-8601 date and time, as Zendesk writes every time
    if ms is None:
        return None, f"unreadable created_at {str(text)[:40]!r} (not an ISO-8601 date and time)"
    return ms, None
