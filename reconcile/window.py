"""The time window of a run: which Zendesk events are judged, which slices of downstream stores are read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> timedelta:
    """'90s', '15m', '1h', '1.5d' or a number of seconds -> timedelta."""
    if isinstance(text, (int, float)):
        return timedelta(seconds=text)
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"Cannot read duration {text!r}. Use a number with a unit, like 90s, 15m, 1h or 1d.")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_time(text: str | datetime) -> datetime:
    """ISO-8601 (a date alone means its midnight) -> aware UTC datetime."""
    if isinstance(text, datetime):
        dt = text
    else:
        shown = str(text).strip()
        # Python reads any character between an extended date and a time as the separator: "2026-11-23+05:00" would
        # be 05:00 (no offset at all), not midnight at +05:00
        if len(shown) > 10 and shown[4] == "-" and shown[7] == "-" and shown[10] not in "Tt ":
            raise ConfigError(f"Cannot read time {text!r}: a date and a time are joined by T (like "
                              f"2026-11-23T00:00:00+05:00); a date alone is its UTC midnight.")
        try:
            dt = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"Cannot read time {text!r}. Use ISO-8601, like 2026-11-23 or 2026-11-23T05:00:00Z.")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def zendesk_reach(tolerance_s: float) -> timedelta:
    """How far beyond the window the Zendesk events hop A matches reach: queries/rules.sql zendesk_reach, which says
    why (every bus event hop A may pair meets every Zendesk event that could claim it)."""
    return timedelta(seconds=2 * tolerance_s + 1)


@dataclass(frozen=True)
class Window:
    """[start, end) selects Zendesk events by event time; downstream stores are read over [read_start, read_end).

    An event missing downstream is `pending`, not lost, while `as_of - event_time < horizon`
    (the rule's maximum event age plus the margin after it, PIPELINE.md §7).
    """

    start: datetime
    end: datetime
    as_of: datetime
    margin_before: timedelta = timedelta(hours=1)
    margin_after: timedelta = timedelta(hours=24)
    max_event_age: timedelta = timedelta(hours=24)
    hop_a_grace: timedelta = timedelta(minutes=5)
    carry_back: timedelta = timedelta(days=7)  # [window] carry_back: how far the sink's read may reach beyond
    # When `reconcile recover` sent some of this window's events (the state's journal): as_of, recorded so the report
    # says why the sink was read past read_end (every run reads it up to as_of: sink_read_end).
    sink_until: datetime | None = None
    # When pending events of earlier windows are carried in (the state): the sink is read from here too (the
    # earliest one's event time), since one that landed after its own run did so in a partition of that day or a
    # later one, which a run after a gap of days would not otherwise read (queries/settlements.sql judges them).
    sink_from: datetime | None = None

    def __post_init__(self):
        if self.end <= self.start:
            raise ConfigError(f"The window ends ({self.end:%Y-%m-%dT%H:%M:%SZ}) before it starts. Check --start/--end.")

    @property
    def read_start(self) -> datetime:
        return self.start - self.margin_before

    @property
    def read_end(self) -> datetime:
        return self.end + self.margin_after

    @property
    def sink_read_start(self) -> datetime:
        return min(self.read_start, self.sink_from) if self.sink_from else self.read_start

    @property
    def sink_read_end(self) -> datetime:
        """The sink is read up to as_of when that is later than read_end, at most [window] carry_back past it: an
        event lands in the partition of the day it arrives, and one that arrived days late (Spark catching up from
        Kinesis's retention after an outage, a DLQ redrive or a replay by hand) is in the sink as of then, not lost;
        a window judged long after does not read every day since. A recovery sent for the window (sink_until) is read
        up to as_of, however late."""
        reach = min(self.as_of, self.read_end + self.carry_back)
        return max(self.read_end, reach, self.sink_until or self.read_end)

    @property
    def horizon(self) -> timedelta:
        return self.max_event_age + self.margin_before

    @property
    def key(self) -> str:
        """A name for this window, used to key outputs so that a re-run replaces."""
        return f"{self.start:%Y%m%dT%H%M%SZ}-{self.end:%Y%m%dT%H%M%SZ}"


def key_of(record: dict) -> str:
    """The key of a window as a manifest or a summary records it (start, end and as_of in ISO-8601)."""
    start, end, as_of = (parse_time(record[k]) for k in ("start", "end", "as_of"))
    return Window(start=start, end=end, as_of=as_of).key
