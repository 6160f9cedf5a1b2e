"""The pipeline simulator's model: one day of Zendesk ticket updates, what each hop did with them, and the truth.

Everything is a column (numpy / Arrow), never a Python object per event: ten million events must take well under a
minute. The model keeps, per EventBridge event, *when* each store would see it (log line, Kinesis arrival, DLQ
message); what a store holds is then "every record with a time <= as_of", and the truth is docs/design.md's verdict
rules applied to exactly that. `stores.write_stores` turns a `Simulation` into the real file formats.

Shapes and names follow /work/shared/reference/PIPELINE.md. Ids are made so that the engine's keys line up with the
real ones: the API child event id is the webhook `detail.id`; `meta.sequence.position` is the rank of the child's bus
event among its audit's bus events in child id order, and `total` counts them all -- also the events of kinds the
shipped emission model lacks (queries/sequences.sql pairs those by position). A new ticket's Create children share
one Ticket Created (carried by the first); the truth follows docs/design.md, including 'unverified'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..emission import verdicts
from ..errors import ConfigError
from ..window import Window, parse_time

# Child event kinds. Notification never goes to the bus; a custom field change carries the field's numeric id as
# field_name; Change:custom_status_id is a kind the connector emits ("Custom Status Changed") that the shipped
# emission model (queries/emission_model.csv) lacks; Change:satisfaction_score is one the model lacks and the
# connector never emits. A new ticket's audit has one Create child per property set (CREATE_FIELDS), all carried by
# one Ticket Created (PIPELINE.md §2).
KINDS = ("Create", "Comment", "Change:status", "Change:tags", "Change:priority", "Change:assignee_id", "Notification",
         "Change:<custom field id>", "Change:custom_status_id", "Change:satisfaction_score")
CREATE, COMMENT, STATUS, TAGS, PRIORITY, ASSIGNEE, NOTIFICATION, CUSTOM, UNKNOWN, SILENT = range(10)
CHANGES = (STATUS, TAGS, PRIORITY, ASSIGNEE, CUSTOM, UNKNOWN, SILENT)
API_TYPES = ("Create", "Comment", "Change", "Change", "Change", "Change", "Notification", "Change", "Change", "Change")
FIELDS = (None, None, "status", "tags", "priority", "assignee_id", None, None, "custom_status_id",
          "satisfaction_score")
CREATE_FIELDS = ("status", "priority", "subject", "requester_id", "tags")
LEGACY_TYPES = ("Ticket Created", "Comment Created", "Status Changed", "Tags Changed", "Priority Changed",
                "Agent Assignment Changed", "", "Custom Field Changed", "Custom Status Changed", "")
WEBHOOK_TYPES = ("created", "comment_added", "status_changed", "tags_changed", "priority_changed",
                 "agent_assignment_changed", "", "custom_field_changed", "custom_status_changed", "")
# The account's custom ticket fields: numeric ids and their types (legacy type "Custom Field Changed - <type>").
CUSTOM_FIELDS = (360012345601, 360012345602, 360012345603, 360012345604, 360012345605)
CUSTOM_TYPES = ("Checkbox", "Date", "Tagger", "Text", "Integer")
LEGACY, WEBHOOK = 0, 1
# Kinesis outcome of one bus event.
OK, LATE, DLQ, DROP, IN_FLIGHT = range(5)
KINESIS, LOGS = 0, 1  # DLQ target
VERDICTS = verdicts()
# Order matters: the first fault an event carries is its `cause` unless the verdict has its own (design.md).
FAULTS = ("loss_before_bus", "spike_drop", "drop", "spike_dlq", "dlq", "in_flight", "spike_late", "redelivery",
          "replay", "resent", "rebatch", "log_target_failure", "log_target_dlq", "midnight_straddler", "not_mapped",
          "kind_not_in_model", "kind_never_emitted")

VALUES = {STATUS: ("new", "open", "pending", "hold", "solved"), TAGS: ("billing", "vip", "refund", "followup", "spam"),
          PRIORITY: ("low", "normal", "high", "urgent"), CUSTOM: ("true", "false", "2026-12-01", "gold", "42"),
          UNKNOWN: ("1500001", "1500002", "1500003"), SILENT: ("good", "bad", "offered")}
# (ERROR_CODE, ERROR_MESSAGE, EXHAUSTED_RETRY_CONDITION) for Kinesis failures outside the spike.
OTHER_ERRORS = (
    ("NO_PERMISSIONS", "User is not authorized to perform: kinesis:PutRecord", "MaximumRetryAttempts"),
    ("TIMEOUT", "Request to the target timed out", "MaximumEventAgeInSeconds"),
    ("CONNECTION_FAILURE", "Unable to connect to the target", "MaximumEventAgeInSeconds"),
)
THROTTLING_MESSAGE = "Rate exceeded for shard shardId-000000000001 in stream zendesk-events"
ERROR_CODES = ("CONNECTION_FAILURE", "NO_PERMISSIONS", "THROTTLING", "TIMEOUT")  # sorted: searchsorted maps them
# truth `cause`: design.md's cause for duplicated / dead-lettered events, else the first injected fault
CAUSES = ERROR_CODES + ("replay", "redelivery", "re-batched") + FAULTS
HOUR_MS = 3_600_000
# Codes of records that are no Zendesk event (SimParams.bad_records / garbage_records; stores.event_json's texts)
MALFORMED, NO_ID, FOREIGN = 1, 2, 3
METRIC_PERIOD_S = 300


@dataclass(frozen=True)
class SimParams:
    """What to simulate. Rates are shares of the population named in the comment; a rate > 0 always injects at
    least one in-window case, so small runs still exercise every fault."""

    events: int = 20_000  # Zendesk child events inside the window (Notification included)
    seed: int = 7
    day: str = "2026-11-23"  # the window is [day 00:00, day+1 00:00) UTC
    webhook_share: float = 0.5  # share of audits whose bus events are webhook-family (rest: legacy connector)
    as_of_after_end: timedelta = timedelta(hours=2)
    # Multi-day demos: look at the stores later than the run they were simulated for (same events and fates,
    # more of them landed), and keep ids of consecutive days apart.
    view_after_end: timedelta | None = None
    id_offset: int = 0
    max_event_age: timedelta = timedelta(hours=2)  # the rule's MaximumEventAgeInSeconds
    margin_before: timedelta = timedelta(hours=1)
    hop_a_grace: timedelta = timedelta(minutes=5)
    stream_retention: timedelta = timedelta(hours=24)  # the Kinesis stream's retention ([sink] stream_retention)
    margin_events: bool = True  # also events in the hour before start and after end (in the stores, not judged)
    excluded_kinds: tuple[str, ...] = ("Notification",)
    # faults
    loss_before_bus: float = 0.002  # of bus-bound events: never reach the bus
    spike_hour: int = 14
    spike_factor: float = 4.0  # the spike hour gets this times its usual volume
    spike_late: float = 0.15  # of spike-hour events: delivered minutes..max_event_age late
    spike_dlq: float = 0.03  # ... dead-lettered with THROTTLING
    spike_drop: float = 0.01  # ... silently dropped (in the bus log only)
    dlq_rate: float = 0.0005  # outside the spike: dead-lettered (NO_PERMISSIONS, TIMEOUT, CONNECTION_FAILURE)
    drop_rate: float = 0.0005  # outside the spike: silently dropped
    redelivery: float = 0.003  # of delivered events: two Kinesis records (distinct sequence numbers)
    rebatch_batches: int = 1  # Spark micro-batches written twice (second copy not in _spark_metadata)
    replay: float = 0.0005  # of delivered events: replayed (extra sink row with replay-name)
    replay_name: str = "zendesk-replay-1"
    resent: float = 0.001  # of delivered legacy events: sent again by the connector under a second EventBridge id
    log_target_failure: float = 0.002  # of delivered events: missing from the log copy (half: DLQ for the log target)
    in_flight: float = 0.003  # of events in the window's last 2 h: reach Kinesis after as_of
    straddlers: float = 0.0005  # of events: pushed into the last 90 s of the window (at least 3), land after midnight
    orphans: float = 0.0005  # of events: extra bus/sink records whose ticket Zendesk never emitted
    not_mapped: float = 0.01  # of non-Create child events: Notification (API only)
    custom_fields: float = 0.05  # of non-Create child events: a custom field change (numeric field_name)
    unknown_kind: float = 0.01  # ... Change:custom_status_id: emitted by the connector, not in the emission model
    silent_kind: float = 0.01  # ... Change:satisfaction_score: not in the model, never emitted
    echo_updates: float = 0.003  # of audits: followed 1-5 s later by an update of the same ticket and first kind
    # Records that are no Zendesk event. bad_records: well-formed events of another producer (source aws.events),
    # two in the log and one each in the sink and DLQ: rejected as `not_zendesk`, which cannot hide an event.
    # garbage_records: a cut-off JSON document in the log, sink and DLQ and a log line without "id": rejected as
    # `unparseable`, which may hide an event, so the run is incomplete (exit 3).
    bad_records: bool = True
    garbage_records: bool = False
    truth_json: bool = True  # also write truth.json's per-event map (big runs: truth.parquet only)
    metric_noise: float = 0.001
    max_retry_attempts: int = 185  # the rule's MaximumRetryAttempts (RETRY_ATTEMPTS when that condition ends it)
    # formats
    legacy_source: str = "aws.partner/zendesk.com/9242270/default"
    webhook_source: str = "zendesk.webhook"  # PIPELINE.md §1: set by the forwarding Lambda, unverified
    webhook_detail_type: str = "Zendesk Webhook Event"
    batch_seconds: int = 300  # Spark trigger interval
    files_per_batch: int = 2
    log_streams: int = 4
    log_object_lines: int = 50_000

    def __post_init__(self):
        rates = ("webhook_share", "loss_before_bus", "spike_late", "spike_dlq", "spike_drop", "dlq_rate", "drop_rate",
                 "redelivery", "replay", "log_target_failure", "in_flight", "straddlers", "orphans", "not_mapped",
                 "echo_updates", "custom_fields", "unknown_kind", "silent_kind", "resent")
        for name in rates:
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"Simulator rate {name}={getattr(self, name)} is not between 0 and 1.")
        if self.spike_late + self.spike_dlq + self.spike_drop > 1:
            raise ConfigError("spike_late + spike_dlq + spike_drop must not exceed 1.")
        if self.events < 1:
            raise ConfigError("Simulate at least one event (events >= 1).")
        if not 0 <= self.spike_hour <= 23:
            raise ConfigError(f"spike_hour={self.spike_hour} is not an hour of the day (0-23).")
        if self.batch_seconds <= 0 or 3600 % self.batch_seconds:
            raise ConfigError(f"batch_seconds={self.batch_seconds} must divide an hour (e.g. 60, 300, 600).")
        if self.files_per_batch < 1 or self.log_streams < 1 or self.log_object_lines < 1:
            raise ConfigError("files_per_batch, log_streams and log_object_lines must be at least 1.")

    @property
    def start(self) -> datetime:
        return parse_time(self.day)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)

    @property
    def as_of(self) -> datetime:
        """When the stores are looked at (the run's as_of)."""
        return self.end + (self.view_after_end if self.view_after_end is not None else self.as_of_after_end)

    @property
    def window(self) -> Window:
        return Window(start=self.start, end=self.end, as_of=self.as_of, margin_before=self.margin_before,
                      max_event_age=self.max_event_age, hop_a_grace=self.hop_a_grace)

    def to_json(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, timedelta):
                out[k] = v.total_seconds()
            elif isinstance(v, tuple):
                out[k] = list(v)
        return out


@dataclass
class Simulation:
    """The simulated day. Tables hold what each store shows at `window.as_of` (sink, log, dlq), except `bus`
    (every EventBridge event, visible or not). `bus_idx` columns index rows of `bus`; -1 marks a bad record."""

    params: SimParams
    window: Window
    audits: pa.Table  # the Zendesk API's rows (AUDIT_SCHEMA), sorted by timestamp, margins included
    bus: pa.Table  # one row per EventBridge event: what its JSON is built from
    sink: pa.Table  # one row per Kinesis record landed in a Spark file (re-batched copies included)
    log: pa.Table  # one row per bus log line, sorted by (stream, ts_ms)
    dlq: pa.Table  # one row per DLQ message
    metrics: dict  # the GetMetricData response
    truth: pa.Table  # one row per in-window Zendesk child event
    summary: dict  # truth.json without "events"
    names: dict = field(default_factory=dict)  # random names of log streams / export folders


CHILD_TYPE = pa.struct([("id", pa.int64()), ("event_type", pa.string()), ("field_name", pa.string()),
                        ("value", pa.string()), ("previous_value", pa.string())])
AUDIT_SCHEMA = pa.schema([("id", pa.int64()), ("ticket_id", pa.int64()), ("timestamp", pa.int64()),
                          ("created_at", pa.string()), ("updater_id", pa.int64()), ("via", pa.string()),
                          ("event_type", pa.string()), ("child_events", pa.list_(CHILD_TYPE))])
TRUTH_SCHEMA = pa.schema([("source_id", pa.string()), ("verdict", pa.string()), ("fate", pa.string()),
                          ("eb_id", pa.string()), ("cause", pa.string()), ("faults", pa.list_(pa.string()))])


# --- vectorised string helpers ---------------------------------------------------------------------------------------

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def fixed_strings(chars: np.ndarray) -> pa.StringArray:
    """An (n, w) uint8 array of ASCII codes -> n strings of width w, with no per-row Python."""
    n, w = chars.shape
    offsets = (np.arange(n + 1, dtype=np.int64) * w).astype(np.int32 if n * w < 2**31 else np.int64)
    data = pa.py_buffer(np.ascontiguousarray(chars).tobytes())
    typ = pa.string() if offsets.dtype == np.int32 else pa.large_string()
    return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(offsets.tobytes()), data])


def _nibbles(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    b = np.frombuffer(rng.bytes(n * ((width + 1) // 2)), dtype=np.uint8).reshape(n, (width + 1) // 2)
    return np.stack([b >> 4, b & 15], axis=2).reshape(n, 2 * b.shape[1])[:, :width]


def hex_strings(rng: np.random.Generator, n: int, width: int, upper: bool = False) -> pa.StringArray:
    return fixed_strings((_HEX_UPPER if upper else _HEX)[_nibbles(rng, n, width)])


def uuids(rng: np.random.Generator, n: int) -> pa.StringArray:
    """Random version-4 UUID strings (8-4-4-4-12)."""
    nib = _nibbles(rng, n, 32)
    nib[:, 12] = 4
    nib[:, 16] = 8 + (nib[:, 16] & 3)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    cols = np.r_[0:8, 9:13, 14:18, 19:23, 24:36]
    out[:, cols] = _HEX[nib]
    return fixed_strings(out)


_EPOCH = datetime(1970, 1, 1)
_PER_SECOND = {"s": 1, "ms": 1000, "ns": 1_000_000_000}


def iso_times(values: np.ndarray, unit: str = "s") -> pa.StringArray:
    """Epoch counts in `unit` -> 'YYYY-MM-DDTHH:MM:SS[.fff|.fffffffff]Z', by digit arithmetic (pc.strftime is
    ~1 us a value; this is ~20x faster)."""
    values = np.asarray(values, dtype=np.int64)
    per_s = _PER_SECOND[unit]
    digits = len(str(per_s)) - 1
    secs, frac = np.divmod(values, per_s)
    days, sod = np.divmod(secs, 86400)
    d0 = int(days.min()) if len(days) else 0
    span = (int(days.max()) - d0 + 1) if len(days) else 1
    table = np.frombuffer("".join((_EPOCH + timedelta(days=d0 + i)).strftime("%Y-%m-%dT") for i in range(span))
                          .encode(), dtype=np.uint8).reshape(span, 11)
    width = 20 + (digits + 1 if digits else 0)
    out = np.empty((len(values), width), dtype=np.uint8)
    out[:, :11] = table[days - d0]
    for col, v in ((11, sod // 3600), (14, sod // 60 % 60), (17, sod % 60)):
        out[:, col] = 48 + v // 10
        out[:, col + 1] = 48 + v % 10
    out[:, 13] = out[:, 16] = ord(":")
    if digits:
        out[:, 19] = ord(".")
        for i in range(digits):
            out[:, 20 + i] = 48 + (frac // 10 ** (digits - 1 - i)) % 10
    out[:, -1] = ord("Z")
    return fixed_strings(out)


def _ms(td: timedelta) -> int:
    return int(round(td.total_seconds() * 1000))


def _count(rate: float, n: int, at_least_one: bool) -> int:
    if rate <= 0 or n == 0:
        return 0
    k = int(round(rate * n))
    return min(n, max(k, 1)) if at_least_one else min(n, k)


def _pick(rng, pool: np.ndarray, rate: float, in_window: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Pick round(rate * |base|) rows of `pool` (base defaults to pool), in-window and margin rows separately;
    a positive rate always picks at least one in-window row (when the pool has one)."""
    base = pool if base is None else base
    out = np.zeros(pool.shape[0], dtype=bool)
    for part, floor in ((in_window, True), (~in_window, False)):
        cand = np.flatnonzero(pool & part)
        k = min(len(cand), _count(rate, int((base & part).sum()), floor))
        if k:
            out[rng.choice(cand, size=k, replace=False)] = True
    return out


# --- the model -------------------------------------------------------------------------------------------------------


def _hour_weights(p: SimParams) -> tuple[np.ndarray, np.ndarray]:
    """Share of the day's audits per hour: quiet nights, a working-day hump peaking ~14:00, times the spike."""
    h = np.arange(24) + 0.5
    base = 0.15 + np.clip(np.sin(np.pi * (h - 6) / 16), 0, None)
    w = base.copy()
    w[p.spike_hour] *= p.spike_factor
    return base / w.sum(), w / w.sum()


SLOTS = 4  # children per audit: 1..SLOTS
SLOT_P = [0.40, 0.30, 0.18, 0.12]


def _children_counts(rng, events: int) -> np.ndarray:
    """Children per audit (1-SLOTS) adding up to exactly `events`."""
    counts = np.empty(0, dtype=np.int64)
    while counts.sum() < events:
        counts = np.concatenate([counts, rng.choice(np.arange(1, SLOTS + 1), size=int(events / 2.0 * 1.05) + 16,
                                                    p=SLOT_P)])
    cs = np.cumsum(counts)
    i = int(np.searchsorted(cs, events))
    counts = counts[: i + 1]
    counts[i] -= cs[i] - events
    return counts


def _audits(p: SimParams, rng, start_s: int, end_s: int) -> dict:
    base, w = _hour_weights(p)
    nk_in = _children_counts(rng, p.events)
    n_in = len(nk_in)
    t_in = start_s + rng.choice(24, size=n_in, p=w) * 3600 + rng.integers(0, 3600, n_in)
    n_str = 0 if p.straddlers <= 0 else min(n_in, max(3, int(round(p.straddlers * p.events))))
    t_in[:n_str] = end_s - rng.integers(1, 91, n_str)  # midnight straddlers: delivered after 00:00
    # echo updates: a second update of the same ticket 1-5 s after another, with the same first kind (a trigger
    # firing after an agent's update). Legacy events then have no unique composite key: ambiguous groups.
    cand = np.arange(n_str, n_in)[t_in[n_str:] < end_s - 10]
    k = min(_count(p.echo_updates, n_in, True), len(cand) // 2)
    pair = rng.choice(cand, size=2 * k, replace=False)
    orig, echo = pair[:k], pair[k:]
    t_in[echo] = t_in[orig] + rng.integers(1, 6, k)
    parts_t, parts_k = [t_in], [nk_in]
    if p.margin_events:
        ratio = n_in / (w.sum() if w.sum() else 1)
        for hour_start, share in ((start_s - 3600, base[23]), (end_s, base[0])):
            m = max(2, int(round(share * ratio)))
            parts_t.append(hour_start + rng.integers(0, 3600, m))
            parts_k.append(rng.choice(np.arange(1, SLOTS + 1), size=m, p=SLOT_P))
    t = np.concatenate(parts_t)
    nk = np.concatenate(parts_k)
    straddle = np.zeros(len(t), dtype=bool)
    straddle[:n_str] = True
    order = np.argsort(t, kind="stable")
    t, nk, straddle = t[order], nk[order], straddle[order]
    n = len(t)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    orig, echo = rank[orig], rank[echo]

    audit_id = 9_000_000_000 + p.id_offset + np.cumsum(rng.integers(1, 8, n))
    n_tickets = max(2, n // 3)
    tix = rng.integers(0, n_tickets, n)
    tix[echo] = tix[orig]
    _, first = np.unique(tix, return_index=True)
    is_new = np.zeros(n, dtype=bool)
    is_new[first[tix[first] < int(0.4 * n_tickets)]] = True  # 40% of tickets are created today

    # children laid out as (audit, slot) with slot < nk
    probs = np.zeros(len(KINDS))
    probs[[COMMENT, STATUS, TAGS, PRIORITY, ASSIGNEE]] = (0.35, 0.25, 0.15, 0.10, 0.15)
    rare = {NOTIFICATION: p.not_mapped, CUSTOM: p.custom_fields, UNKNOWN: p.unknown_kind, SILENT: p.silent_kind}
    probs *= 1 - sum(rare.values())
    for k, rate in rare.items():
        probs[k] = rate
    kind = rng.choice(len(KINDS), size=(n, SLOTS), p=probs / probs.sum())
    # a new ticket's audit: one Create child per property set first (2-4 of them, as many as it has children)
    is_new[orig] = is_new[echo] = False
    n_create = np.where(is_new, np.minimum(nk, rng.integers(2, 5, n)), 0)
    kind[np.arange(SLOTS)[None, :] < n_create[:, None]] = CREATE
    first_kinds = [CREATE, NOTIFICATION, UNKNOWN, SILENT]
    kind[orig, 0] = np.where(np.isin(kind[orig, 0], first_kinds), COMMENT, kind[orig, 0])
    kind[echo, 0] = kind[orig, 0]
    kind[echo, 1:] = np.where(kind[echo, 1:] == CREATE, COMMENT, kind[echo, 1:])
    # one audit changes a field at most once (two Comments in one update are fine: ambiguous composite groups), and
    # has at most one child of a kind the model lacks
    is_change = np.isin(kind, CHANGES)
    odd = np.isin(kind, [UNKNOWN, SILENT])
    for j in range(1, SLOTS):
        dup = (is_change[:, j] & (kind[:, :j] == kind[:, j:j + 1]).any(axis=1)) | (odd[:, j] & odd[:, :j].any(axis=1))
        kind[:, j] = np.where(dup, COMMENT, kind[:, j])
    present = np.arange(SLOTS)[None, :] < nk[:, None]
    # bus events: one per emitted child, one for all the Create children (carried by the first)
    carrier = present & ~np.isin(kind, [NOTIFICATION, SILENT]) & ~((kind == CREATE) & (np.arange(SLOTS)[None, :] > 0))
    position = np.cumsum(carrier, axis=1)
    total = carrier.sum(axis=1)

    c_audit = np.repeat(np.arange(n), nk)
    c_kind = kind[present]
    m = len(c_kind)
    c_id = 40_000_000_000 + p.id_offset + np.cumsum(rng.integers(1, 4, m))
    # Change values: index into a small vocabulary (assignee: a user id)
    c_value, c_prev = _change_values(rng, c_kind)
    slot = np.broadcast_to(np.arange(SLOTS)[None, :], (n, SLOTS))[present]
    c_field = rng.integers(0, len(CUSTOM_FIELDS), m)  # which custom field (CUSTOM children)
    return dict(
        t=t, nk=nk, straddle=straddle, audit_id=audit_id, ticket_id=1_000_000 + tix,
        updater_id=360_000_000_000 + rng.integers(0, 5000, n),
        via=pc.take(pa.array(["Web form", "Mail", "API"]), pa.array(rng.choice(3, n, p=[0.5, 0.3, 0.2]))),
        family=np.where(rng.random(n) < p.webhook_share, WEBHOOK, LEGACY).astype(np.int8),
        seq_hex=hex_strings(rng, n, 32, upper=True),
        c_audit=c_audit, c_kind=c_kind, c_id=c_id, c_value=c_value, c_prev=c_prev,
        c_pos=np.where(carrier, position, 0)[present], c_tot=total[c_audit], echo_pairs=k,
        c_slot=slot, c_field=c_field, c_carrier=carrier[present],
    )


def _change_values(rng, kind: np.ndarray) -> tuple[pa.Array, pa.Array]:
    m = len(kind)
    vocab, offset, size = [], np.zeros(len(KINDS), dtype=np.int64), np.ones(len(KINDS), dtype=np.int64)
    for k, words in VALUES.items():
        offset[k], size[k] = len(vocab), len(words)
        vocab.extend(words)
    local = rng.integers(0, 1 << 30, m) % size[kind]
    prev_local = (local + 1 + rng.integers(0, 1 << 30, m) % np.maximum(size[kind] - 1, 1)) % size[kind]
    voc = pa.array(vocab)
    value = pc.take(voc, pa.array(offset[kind] + local))
    prev = pc.take(voc, pa.array(offset[kind] + prev_local))
    who = rng.integers(0, 900, m)
    people = pc.cast(pa.array(361_000_000_000 + who), pa.string())
    people_prev = pc.cast(pa.array(361_000_000_000 + (who + rng.integers(1, 900, m)) % 900), pa.string())
    is_assignee = pa.array(kind == ASSIGNEE)
    is_change = pa.array(np.isin(kind, CHANGES))
    null = pa.scalar(None, pa.string())
    value = pc.if_else(is_change, pc.if_else(is_assignee, people, value), null)
    prev = pc.if_else(is_change, pc.if_else(is_assignee, people_prev, prev), null)
    return value, prev


CREATE_VALUES = ("new", "normal", "Printer on fire", "361000000001", "vip")  # per CREATE_FIELDS


def _audits_table(a: dict) -> pa.Table:
    n = len(a["t"])
    kind = pa.array(a["c_kind"])
    is_create, is_custom = pa.array(a["c_kind"] == CREATE), pa.array(a["c_kind"] == CUSTOM)
    slot = pa.array(np.minimum(a["c_slot"], len(CREATE_FIELDS) - 1))
    custom_id = pc.take(pc.cast(pa.array(CUSTOM_FIELDS), pa.string()), pa.array(a["c_field"]))
    field_name = pc.if_else(is_create, pc.take(pa.array(CREATE_FIELDS), slot),
                            pc.if_else(is_custom, custom_id, pc.take(pa.array(FIELDS, pa.string()), kind)))
    value = pc.if_else(is_create, pc.take(pa.array(CREATE_VALUES), slot), a["c_value"])
    children = pa.StructArray.from_arrays(
        [pa.array(a["c_id"]), pc.take(pa.array(API_TYPES), kind), field_name, value, a["c_prev"]],
        fields=list(CHILD_TYPE))
    offsets = pa.array(np.concatenate([[0], np.cumsum(a["nk"])]).astype(np.int32))
    ts = pa.array(a["t"])
    return pa.Table.from_arrays([
        pa.array(a["audit_id"]), pa.array(a["ticket_id"]), ts, iso_times(a["t"], "s"),
        pa.array(a["updater_id"]), a["via"], pa.repeat(pa.scalar("Audit"), n),
        pa.ListArray.from_arrays(offsets, children),
    ], schema=AUDIT_SCHEMA)


def simulate(params: SimParams | None = None) -> Simulation:
    """Simulate one day of the pipeline (deterministic for `params.seed`)."""
    p = params or SimParams()
    rng = np.random.default_rng(p.seed)
    window = p.window
    start_s, end_s = int(window.start.timestamp()), int(window.end.timestamp())
    end_ms, as_of_ms, age_ms = end_s * 1000, int(window.as_of.timestamp() * 1000), _ms(p.max_event_age)
    in_flight_ms = end_ms + _ms(p.as_of_after_end)  # in-flight events land after this, whenever we look

    a = _audits(p, rng, start_s, end_s)
    ca = a["c_audit"]
    created = a["t"][ca]
    in_win = (created >= start_s) & (created < end_s)
    kind = a["c_kind"]
    n_child = len(kind)

    # --- fates at the source and the bus -------------------------------------------------------------------------
    bound = a["c_carrier"]  # children that make a bus event (a new ticket's first Create carries the others)
    eligible = bound & ~a["straddle"][ca]
    f = {name: np.zeros(n_child, dtype=bool) for name in FAULTS}
    f["not_mapped"] = kind == NOTIFICATION
    f["kind_not_in_model"] = kind == UNKNOWN
    f["kind_never_emitted"] = kind == SILENT
    f["loss_before_bus"] = _pick(rng, eligible, p.loss_before_bus, in_win)
    on_bus = bound & ~f["loss_before_bus"]
    free = eligible & on_bus
    spike = in_win & ((created - start_s) // 3600 == p.spike_hour)
    sp = free & spike
    f["spike_late"] = _pick(rng, sp, p.spike_late, in_win)
    f["spike_dlq"] = _pick(rng, sp & ~f["spike_late"], p.spike_dlq, in_win, base=sp)
    f["spike_drop"] = _pick(rng, sp & ~f["spike_late"] & ~f["spike_dlq"], p.spike_drop, in_win, base=sp)
    calm = free & ~spike
    f["dlq"] = _pick(rng, calm, p.dlq_rate, in_win)
    f["drop"] = _pick(rng, calm & ~f["dlq"], p.drop_rate, in_win, base=calm)
    last2h = calm & ~f["dlq"] & ~f["drop"] & in_win & (created >= end_s - 7200)
    f["in_flight"] = _pick(rng, last2h, p.in_flight, in_win)
    outcome = np.full(n_child, OK, dtype=np.int8)
    outcome[f["spike_late"]] = LATE
    outcome[f["spike_dlq"] | f["dlq"]] = DLQ
    outcome[f["spike_drop"] | f["drop"]] = DROP
    outcome[f["in_flight"]] = IN_FLIGHT
    landed = free & ((outcome == OK) | (outcome == LATE))
    f["redelivery"] = _pick(rng, landed, p.redelivery, in_win)
    f["replay"] = _pick(rng, landed & ~f["redelivery"], p.replay, in_win, base=landed)
    f["log_target_failure"] = _pick(rng, landed & ~f["redelivery"] & ~f["replay"], p.log_target_failure, in_win,
                                    base=landed)
    f["log_target_dlq"] = _pick(rng, f["log_target_failure"], 0.5, in_win)
    # the connector sends one event twice under two EventBridge ids (same sequence id and position)
    f["resent"] = _pick(rng, landed & ~f["redelivery"] & ~f["replay"] & ~f["log_target_failure"] & (kind != UNKNOWN)
                        & (a["family"][ca] == LEGACY), p.resent, in_win, base=landed)

    # --- the bus: one EventBridge event per on-bus child, plus orphans -------------------------------------------
    ci = np.flatnonzero(on_bus)
    n_orph = _count(p.orphans, p.events, True)
    nb = len(ci) + n_orph
    o_created = start_s + rng.integers(600, 86400 - 600, n_orph)
    o_kind = rng.choice([CREATE, COMMENT], n_orph)
    bus_created = np.concatenate([created[ci], o_created])
    child = np.concatenate([ci, np.full(n_orph, -1)])
    bus_ms = bus_created * 1000 + rng.integers(200, 3001, nb)
    family = np.concatenate([a["family"][ca[ci]],
                             np.where(rng.random(n_orph) < p.webhook_share, WEBHOOK, LEGACY)]).astype(np.int8)
    value = pa.concat_arrays([pc.take(a["c_value"], pa.array(ci)), pa.nulls(n_orph, pa.string())])
    prev = pa.concat_arrays([pc.take(a["c_prev"], pa.array(ci)), pa.nulls(n_orph, pa.string())])
    bus = pa.table({
        "eb_id": uuids(rng, nb),
        "family": family,
        "kind": np.concatenate([kind[ci], o_kind]).astype(np.int8),
        "ticket_id": np.concatenate([a["ticket_id"][ca[ci]], 990_000_000 + np.arange(n_orph)]),
        "actor_id": np.concatenate([a["updater_id"][ca[ci]], 360_000_000_000 + rng.integers(0, 5000, n_orph)]),
        "zendesk_id": np.concatenate([a["c_id"][ci], 99_000_000_000 + np.arange(n_orph)]),
        "field": np.concatenate([a["c_field"][ci], np.zeros(n_orph, dtype=np.int64)]),
        "created_s": bus_created,
        "occurred_ns": bus_created * 1_000_000_000 + rng.integers(0, 200_000_000, nb),
        "bus_ms": bus_ms,
        "seq_id": pa.concat_arrays([pc.take(a["seq_hex"], pa.array(ca[ci])), hex_strings(rng, n_orph, 32, True)]),
        "position": np.concatenate([a["c_pos"][ci], np.ones(n_orph, dtype=np.int64)]),
        "total": np.concatenate([a["c_tot"][ci], np.ones(n_orph, dtype=np.int64)]),
        "value": value,
        "previous": prev,
        "child": child,
    })
    bf = {k: np.concatenate([v[ci], np.zeros(n_orph, dtype=bool)]) for k, v in f.items()}
    b_out = np.concatenate([outcome[ci], np.full(n_orph, OK, dtype=np.int8)])
    b_straddle = np.concatenate([a["straddle"][ca[ci]], np.zeros(n_orph, dtype=bool)])
    # resent events: a second bus row (new EventBridge id, a little later), otherwise the same event
    again = np.flatnonzero(bf["resent"])
    copy_of = again
    if len(again):
        extra = bus.take(pa.array(again))
        extra = extra.set_column(extra.schema.get_field_index("eb_id"), "eb_id", uuids(rng, len(again)))
        extra = extra.set_column(extra.schema.get_field_index("bus_ms"), "bus_ms",
                                 pa.array(bus_ms[again] + rng.integers(1_000, 60_000, len(again))))
        bus = pa.concat_tables([bus, extra])
        bus_ms = bus["bus_ms"].to_numpy()
        child = np.concatenate([child, child[again]])
        bf = {k: np.concatenate([v, v[again] if k == "resent" else np.zeros(len(again), bool)]) for k, v in bf.items()}
        b_out = np.concatenate([b_out, np.full(len(again), OK, dtype=np.int8)])
        b_straddle = np.concatenate([b_straddle, np.zeros(len(again), dtype=bool)])
        nb = bus.num_rows
    copies = np.arange(nb - len(again), nb)

    # --- Kinesis records: first delivery, redeliveries, replays ----------------------------------------------------
    lat = 50 + rng.exponential(700, nb).astype(np.int64)
    lat = np.where(b_out == LATE, rng.integers(60_000, max(age_ms, 60_001) + 1, nb), lat)
    lat = np.where(b_straddle & (b_out == OK), end_ms - bus_ms + rng.integers(1_000, 90_001, nb), lat)
    lat = np.where(b_out == IN_FLIGHT, in_flight_ms - bus_ms + rng.integers(60_000, 2 * HOUR_MS, nb), lat)
    arrival = bus_ms + lat
    first = np.flatnonzero((b_out == OK) | (b_out == LATE) | (b_out == IN_FLIGHT))
    redo = np.flatnonzero(bf["redelivery"])
    rep = np.flatnonzero(bf["replay"])
    replay_at = bus_ms[rep] + rng.integers(10 * 60_000, HOUR_MS, len(rep))
    s_bus = np.concatenate([first, redo, rep])
    s_arr = np.concatenate([arrival[first], arrival[redo] + rng.integers(1_000, 300_000, len(redo)),
                            replay_at + 50 + rng.exponential(700, len(rep)).astype(np.int64)])
    s_replay = np.concatenate([np.zeros(len(first) + len(redo), bool), np.ones(len(rep), bool)])
    rank = np.empty(len(s_arr), dtype=np.int64)
    rank[np.argsort(s_arr, kind="stable")] = np.arange(len(s_arr))
    s_seq = rank * 16 + rng.integers(0, 16, len(s_arr))  # unique, increasing with arrival
    s_vis = s_arr <= as_of_ms

    # --- DLQ messages ------------------------------------------------------------------------------------------------
    d_k = np.flatnonzero(b_out == DLQ)
    n_dk = len(d_k)
    spiked = bf["spike_dlq"][d_k]
    other = rng.integers(0, len(OTHER_ERRORS), n_dk)
    by_attempts = np.where(spiked, rng.random(n_dk) < 0.2, other == 0)  # NO_PERMISSIONS is never retried
    d_k_sent = np.where(by_attempts, bus_ms[d_k] + (age_ms * rng.uniform(0.5, 1.0, n_dk)).astype(np.int64),
                        bus_ms[d_k] + age_ms)
    d_k_sent = np.where(~spiked & (other == 0), bus_ms[d_k] + rng.integers(100, 2_000, n_dk), d_k_sent)
    codes = np.where(spiked, "THROTTLING", np.array([e[0] for e in OTHER_ERRORS])[other])
    messages = np.where(spiked, THROTTLING_MESSAGE, np.array([e[1] for e in OTHER_ERRORS])[other])
    conditions = np.where(by_attempts, "MaximumRetryAttempts", "MaximumEventAgeInSeconds")
    attempts = np.where(by_attempts, np.where(spiked, p.max_retry_attempts, 0), rng.integers(8, 60, n_dk))
    d_l = np.flatnonzero(bf["log_target_dlq"])
    dlq_all = pa.table({
        "bus_idx": np.concatenate([d_k, d_l]),
        "sent_ms": np.concatenate([d_k_sent, bus_ms[d_l] + age_ms]),
        "target": np.concatenate([np.full(n_dk, KINESIS), np.full(len(d_l), LOGS)]).astype(np.int8),
        "error_code": np.concatenate([codes, np.full(len(d_l), "THROTTLING")]).astype(object),
        "error_message": np.concatenate([messages, np.full(len(d_l), "Rate exceeded for log group")]).astype(object),
        "condition": np.concatenate([conditions, np.full(len(d_l), "MaximumEventAgeInSeconds")]).astype(object),
        "attempts": np.concatenate([attempts, rng.integers(8, 60, len(d_l))]).astype(np.int32),
    })

    # --- bus log lines -------------------------------------------------------------------------------------------
    logged = np.flatnonzero(~bf["log_target_failure"])
    l_bus = np.concatenate([logged, rep])
    l_ts = np.concatenate([bus_ms[logged], replay_at]) + rng.integers(0, 1000, len(l_bus))
    l_replay = np.concatenate([np.zeros(len(logged), bool), np.ones(len(rep), bool)])
    l_vis = l_ts <= as_of_ms

    # --- truth ---------------------------------------------------------------------------------------------------
    dlq_vis = dlq_all.filter(pa.array(dlq_all["sent_ms"].to_numpy() <= as_of_ms))
    sink = _sink_files(p, rng, s_bus[s_vis], s_arr[s_vis], s_seq[s_vis], s_replay[s_vis], child, in_win,
                       start_s, bus)
    b_rebatch = np.bincount(sink["bus_idx"].to_numpy()[~sink["committed"].to_numpy()], minlength=nb) > 0
    bf["rebatch"] = b_rebatch
    bf["midnight_straddler"] = np.bincount(s_bus[s_vis & (s_arr >= end_ms)], minlength=nb) > 0
    for name in ("rebatch", "midnight_straddler"):
        np.logical_or.at(f[name], child[child >= 0], bf[name][child >= 0])
    # Readers honour Spark's commit log (sink.honour_commit_log, the default): a re-batched copy outside the log is
    # a leftover that neither delivers nor duplicates an event.
    committed = sink["committed"].to_numpy()
    seen_now = _seen(nb, sink["bus_idx"].to_numpy()[committed], np.ones(int(committed.sum()), bool),
                     sink["replay"].to_numpy()[committed], l_bus[l_vis], dlq_vis)
    seen_ever = _seen(nb, s_bus, np.ones(len(s_bus), bool), s_replay, l_bus, dlq_all)
    # a resent event is judged over both of its EventBridge ids (the engine links both)
    for seen in (seen_now, seen_ever):
        for k in ("sink", "seqs", "replays", "log", "dlq_k", "dlq_l"):
            np.add.at(seen[k], copy_of, seen[k][copies])
    # a new ticket's folded Create children share the fate of the one carrying their Ticket Created
    first = np.concatenate([[0], np.cumsum(a["nk"])[:-1]])
    carrier_of = np.where(kind == CREATE, first[ca], np.arange(n_child))
    for name in FAULTS:
        f[name] = f[name][carrier_of]
    # where the sink is proven to have read the stream to (its newest committed row's arrival), and when each bus
    # event's retries began (its first visible log copy; docs/design.md, "the sink alike ends ...")
    arrivals = sink["arrival_ms"].to_numpy()[committed]
    sink_reach_ms = int(arrivals.max()) if len(arrivals) else None
    bus_at_ms = np.full(nb, np.iinfo(np.int64).max)
    np.minimum.at(bus_at_ms, l_bus[l_vis], l_ts[l_vis])
    truth, summary, unlinked = _truth(p, window, a, f, in_win, child, bus, seen_now, seen_ever, as_of_ms,
                                      carrier_of, sink_reach_ms, bus_at_ms)
    orphan_seen = ((child < 0) | unlinked) & (bus["created_s"].to_numpy() >= start_s) \
        & (bus["created_s"].to_numpy() < end_s) & ((seen_now["sink"] > 0) | (seen_now["log"] > 0))
    summary["orphans"] = int(orphan_seen.sum())
    summary["injected"]["orphans"] = n_orph
    summary["injected"]["echo_updates"] = int(a["echo_pairs"])
    summary["injected"]["rebatch_batches"] = int(len(np.unique(sink["batch_id"].to_numpy()[~sink["committed"]
                                                                                        .to_numpy()])))

    log = pa.table({"bus_idx": l_bus[l_vis], "ts_ms": l_ts[l_vis], "replay": l_replay[l_vis],
                    "stream": rng.integers(0, p.log_streams, int(l_vis.sum())).astype(np.int16),
                    "bad": np.zeros(int(l_vis.sum()), dtype=np.int8)})
    dlq = dlq_vis.append_column("message_id", uuids(rng, dlq_vis.num_rows))
    bad, garbage = {}, {}
    if p.bad_records:
        log, sink, dlq, bad = _bad_records(rng, log, sink, dlq, start_s, (FOREIGN, FOREIGN), FOREIGN)
    if p.garbage_records:
        log, sink, dlq, garbage = _bad_records(rng, log, sink, dlq, start_s, (MALFORMED, NO_ID), MALFORMED)
    summary["bad_records"] = bad
    summary["garbage_records"] = garbage
    log = log.sort_by([("stream", "ascending"), ("ts_ms", "ascending")])
    dlq = dlq.sort_by("sent_ms")
    metrics = _metrics(p, rng, window, bus_ms, bf, b_out, rep, replay_at, dlq_all, as_of_ms)
    names = {"folders": [s.as_py() for s in hex_strings(rng, p.log_streams, 8)],
             "streams": [s.as_py() for s in hex_strings(rng, p.log_streams, 32)]}
    return Simulation(p, window, _audits_table(a), bus, sink, log, dlq, metrics, truth, summary, names)


STREAM_ORIGIN_S = 1_577_836_800  # 2020-01-01T00:00Z: the simulated Spark stream's batch 0


def _sink_files(p, rng, s_bus, s_arr, s_seq, s_replay, child, in_win, start_s, bus) -> pa.Table:
    """Assign visible Kinesis records to Spark micro-batch files; write `rebatch_batches` batches twice."""
    origin_ms = (start_s - 2 * 3600) * 1000
    batch = (s_arr - origin_ms) // (p.batch_seconds * 1000)
    rng.integers(1000, 9000)  # once a random batch offset: still drawn, so every seed keeps its random streams
    # Batch ids count from one fixed origin: consecutive simulated days continue one Spark stream (aws_load merges
    # their commit logs).
    batch_offset = (origin_ms // 1000 - STREAM_ORIGIN_S) // p.batch_seconds
    part = s_bus % p.files_per_batch
    in_window_child = (child[s_bus] >= 0) & in_win[np.maximum(child[s_bus], 0)]
    cand = np.unique(batch[in_window_child])
    chosen = rng.choice(cand, size=min(len(cand), p.rebatch_batches), replace=False) if len(cand) else cand
    again = np.flatnonzero(np.isin(batch, chosen))
    idx = np.concatenate([np.arange(len(s_bus)), again])
    copy = np.concatenate([np.zeros(len(s_bus), np.int8), np.ones(len(again), np.int8)])
    t = pa.table({"bus_idx": s_bus[idx], "arrival_ms": s_arr[idx], "seq": s_seq[idx], "replay": s_replay[idx],
                  "batch_id": batch[idx] + batch_offset, "part": part[idx].astype(np.int16), "copy": copy,
                  "committed": copy == 0})
    t = t.sort_by([("batch_id", "ascending"), ("copy", "ascending"), ("part", "ascending"),
                   ("arrival_ms", "ascending")])
    # one Spark job uuid per (batch, attempt); the batch commits a few seconds after its last record
    batch_id, copy_, part_ = (t[c].to_numpy().astype(np.int64) for c in ("batch_id", "copy", "part"))
    jobs, job_of = np.unique(batch_id * 2 + copy_, return_inverse=True)
    last = np.zeros(len(jobs), dtype=np.int64)
    np.maximum.at(last, job_of, t["arrival_ms"].to_numpy())
    commit = (last + rng.integers(2_000, 20_000, len(jobs)))[job_of]
    # names are made per file, not per row: a dictionary column
    files, file_of = np.unique((batch_id * 2 + copy_) * 1000 + part_, return_inverse=True)
    f_job = np.searchsorted(jobs, files // 1000)
    f_start = origin_ms + ((files // 2000) - batch_offset) * p.batch_seconds * 1000
    prefix = pc.strftime(pa.array(f_start).cast(pa.timestamp("ms", tz="UTC")), format="dt=%Y-%m-%d/hr=%H/part-")
    names = pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(pa.array(files % 1000), pa.string()), 5, "0"),
                                        "-", pc.take(uuids(rng, len(jobs)), pa.array(f_job)), ".c000.snappy.parquet",
                                        "")
    path = pa.DictionaryArray.from_arrays(pa.array(file_of.astype(np.int32)), names)
    return t.append_column("path", path).append_column("commit_ms", pa.array(commit))


def _seen(nb: int, s_bus, s_first_copy, s_replay, l_bus, dlq: pa.Table) -> dict:
    """Per bus event: how many sink rows / distinct sequence numbers / replay rows / log lines / DLQ messages, and
    the ERROR_CODE (index into CAUSES) of its first Kinesis-target DLQ message."""
    d_bus = dlq["bus_idx"].to_numpy()
    d_k = dlq["target"].to_numpy() == KINESIS
    codes = np.searchsorted(np.array(CAUSES[:len(ERROR_CODES)]), dlq["error_code"].to_numpy(zero_copy_only=False))
    code = np.full(nb, -1, dtype=np.int16)
    code[d_bus[d_k][::-1]] = codes[d_k][::-1]  # fancy assignment keeps the last write: reversed, the first wins
    return {"sink": np.bincount(s_bus, minlength=nb), "seqs": np.bincount(s_bus[s_first_copy], minlength=nb),
            "replays": np.bincount(s_bus[s_replay], minlength=nb), "log": np.bincount(l_bus, minlength=nb),
            "dlq_k": np.bincount(d_bus[d_k], minlength=nb), "dlq_l": np.bincount(d_bus[~d_k], minlength=nb),
            "code": code}


def _judge(excluded, bidx, seen, age_ms, horizon_ms, grace_ms):
    """docs/design.md's verdict rules, in priority order, for events with bus index `bidx` (-1: never on the bus).
    Returns (verdict index into VERDICTS, cause index into CAUSES or -1, log lines)."""
    on = bidx >= 0
    b = np.maximum(bidx, 0)
    get = {k: np.where(on, v[b], 0 if k != "code" else -1) for k, v in seen.items()}
    anything = (get["sink"] + get["log"] + get["dlq_k"] + get["dlq_l"]) > 0
    V = {v: i for i, v in enumerate(VERDICTS)}
    verdict = np.select(
        [excluded, ~anything & (age_ms < grace_ms), ~anything, get["sink"] > 1, get["sink"] == 1, get["dlq_k"] > 0,
         age_ms < horizon_ms],
        [V["excluded"], V["pending"], V["lost_before_bus"], V["duplicated"], V["delivered"], V["dead_lettered"],
         V["pending"]], V["lost_after_bus"]).astype(np.int8)
    C = {c: i for i, c in enumerate(CAUSES)}
    dup_cause = np.where(get["replays"] > 0, C["replay"], np.where(get["seqs"] > 1, C["redelivery"], C["re-batched"]))
    cause = np.where(verdict == V["duplicated"], dup_cause, np.where(verdict == V["dead_lettered"], get["code"], -1))
    return verdict, cause, get["log"]


def _unverified(a, bus_of, seen, family) -> np.ndarray:
    """Per child: judged 'unverified' (docs/design.md): a kind the emission model lacks that the engine cannot tie to
    a bus event it saw. Satisfaction score changes never reach the bus; a custom status change does, and is tied to
    its bus event by the webhook's Zendesk id, or by its update's connector sequence when another event of the update
    was seen (queries/sequences.sql), when that event was seen -- else the engine cannot tell it from a kind never
    emitted (a lost position may have been an event no API child stands for)."""
    kind, ca = a["c_kind"], a["c_audit"]
    on = bus_of >= 0
    b = np.maximum(bus_of, 0)
    seen_any = on & ((seen["sink"] + seen["log"] + seen["dlq_k"] + seen["dlq_l"])[b] > 0)
    known = a["c_carrier"] & (kind != UNKNOWN)
    aligned = np.bincount(ca[known & seen_any], minlength=len(a["t"])) > 0
    tied = aligned[ca] | (seen_any & (family[ca] == WEBHOOK))
    return (kind == SILENT) | ((kind == UNKNOWN) & ~(tied & seen_any))


def _truth(p, window, a, f, in_win, child, bus, seen_now, seen_ever, as_of_ms, carrier_of, sink_reach_ms,
           bus_at_ms):
    idx = np.flatnonzero(in_win)
    bus_of = np.full(len(in_win), -1, dtype=np.int64)
    first = np.flatnonzero(child >= 0)[::-1]  # reversed: a resent event's first id wins the assignment
    bus_of[child[first]] = first
    bus_of = bus_of[carrier_of]
    bidx = bus_of[idx]
    excluded = np.isin(a["c_kind"][idx], [KINDS.index(k) for k in p.excluded_kinds if k in KINDS])
    age = as_of_ms - a["t"][a["c_audit"][idx]] * 1000
    horizon, grace = _ms(p.max_event_age + p.margin_before), _ms(p.hop_a_grace)
    verdict, cause, logs = _judge(excluded, bidx, seen_now, age, horizon, grace)
    fate, _, _ = _judge(excluded, bidx, seen_ever, np.full(len(idx), 2**62), horizon, grace)
    V = {v: i for i, v in enumerate(VERDICTS)}
    # a loss after the bus whose retries ended after the sink's reach may be in the stream, unread, until the stream
    # drops it: pending (rules.sql beyond_sink)
    t_ms = a["t"][a["c_audit"][idx]] * 1000
    bus_at = np.where(bidx >= 0, bus_at_ms[np.maximum(bidx, 0)], t_ms)
    retry_end = np.maximum(t_ms, np.where(bus_at < np.iinfo(np.int64).max, bus_at, t_ms)) + horizon
    unread = (retry_end > (sink_reach_ms if sink_reach_ms is not None else -2**62)) \
        & (as_of_ms < retry_end + _ms(p.stream_retention))
    verdict = np.where((verdict == V["lost_after_bus"]) & unread, V["pending"], verdict).astype(np.int8)
    unverified_now = _unverified(a, bus_of, seen_now, a["family"])
    verdict = np.where(unverified_now[idx] & ~excluded, V["unverified"], verdict).astype(np.int8)
    cause = np.where(unverified_now[idx] & ~excluded, -1, cause)
    fate = np.where(_unverified(a, bus_of, seen_ever, a["family"])[idx] & ~excluded, V["unverified"], fate)
    # a kind the emission model says never reaches the bus (Notification: cardinality none) is not_emitted, unless
    # the user excluded it (docs/design.md, verdict 2)
    silent = (a["c_kind"][idx] == NOTIFICATION) & ~excluded
    verdict = np.where(silent, V["not_emitted"], verdict).astype(np.int8)
    cause = np.where(silent, -1, cause)
    fate = np.where(silent, V["not_emitted"], fate)
    # bus events of unverified children are records the engine cannot tie to Zendesk: orphans
    unlinked = np.zeros(len(child), dtype=bool)
    unlinked[bus_of[unverified_now & (bus_of >= 0)]] = True

    flags = np.stack([f[name][idx] for name in FAULTS], axis=1)
    rows, cols = np.nonzero(flags)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(idx)))]).astype(np.int32)
    faults = pa.ListArray.from_arrays(pa.array(offsets), pc.take(pa.array(FAULTS), pa.array(cols)))
    # no cause of its own (design.md): the first injected fault explains the verdict
    has = offsets[1:] > offsets[:-1]
    first_fault = np.full(len(idx), -1, dtype=np.int64)
    first_fault[has] = len(ERROR_CODES) + 3 + cols[offsets[:-1][has]]
    cause = np.where(cause < 0, first_fault, cause)
    null = pa.scalar(None, pa.string())
    eb = pc.if_else(pa.array(bidx >= 0), pc.take(bus["eb_id"], pa.array(np.maximum(bidx, 0))), null)
    cause_s = pc.if_else(pa.array(cause >= 0), pc.take(pa.array(CAUSES), pa.array(np.maximum(cause, 0))), null)
    vocab = pa.array(VERDICTS)
    truth = pa.Table.from_arrays([pc.cast(pa.array(a["c_id"][idx]), pa.string()), pc.take(vocab, pa.array(verdict)),
                                  pc.take(vocab, pa.array(fate)), eb, cause_s, faults], schema=TRUTH_SCHEMA)
    summary = {
        "window": {"start": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "end": window.end.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "as_of": window.as_of.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "params": p.to_json(),
        "verdicts": dict(zip(VERDICTS, np.bincount(verdict, minlength=len(VERDICTS)).tolist())),
        "fates": dict(zip(VERDICTS, np.bincount(fate, minlength=len(VERDICTS)).tolist())),
        "orphans": 0,
        "unlogged_at_bus": int((np.isin(verdict, [0, 1, 2]) & (logs == 0)).sum()),  # delivered, duplicated, DLQ
        "injected": dict(zip(FAULTS, flags.sum(axis=0).tolist())),
    }
    return truth, summary, unlinked


def _bad_records(rng, log, sink, dlq, start_s, log_codes: tuple[int, int], code: int):
    """Records that are not Zendesk events (PIPELINE.md: sources must reject them, never drop them silently): two
    log lines of `log_codes`, one sink row and one DLQ message of `code` (stores.event_json writes each code's
    text). Their `bus_idx` is -code: no bus event."""
    t = (start_s + 6 * 3600) * 1000 + int(rng.integers(0, HOUR_MS))
    log = pa.concat_tables([log, pa.table({
        "bus_idx": -np.array(log_codes, np.int64), "ts_ms": np.array([t, t + 1234]),
        "replay": np.array([False, False]), "stream": np.array([0, 0], np.int16),
        "bad": np.array(log_codes, np.int8)})])
    row = sink.slice(0, 1).to_pydict()
    row.update(bus_idx=[-code], replay=[False], seq=[int(sink["seq"].to_numpy().max()) + 1])
    sink = pa.concat_tables([sink, pa.table(row, schema=sink.schema)])
    dlq = pa.concat_tables([dlq, pa.table({
        "bus_idx": [-code], "sent_ms": [t], "target": pa.array([KINESIS], pa.int8()), "error_code": ["THROTTLING"],
        "error_message": [THROTTLING_MESSAGE], "condition": ["MaximumEventAgeInSeconds"],
        "attempts": pa.array([3], pa.int32()), "message_id": uuids(rng, 1)}, schema=dlq.schema)])
    return log, sink, dlq, {"bus_log": 2, "sink": 1, "dlq": 1}


def _metrics(p, rng, window, bus_ms, bf, b_out, rep, replay_at, dlq_all, as_of_ms) -> dict:
    """A GetMetricData response: 5-minute Sums derived from the events by bus time (best effort: a little noise)."""
    age_ms = _ms(p.max_event_age)
    t0 = (int(window.read_start.timestamp()) // METRIC_PERIOD_S) * METRIC_PERIOD_S * 1000
    nbins = -(-(as_of_ms - t0) // (METRIC_PERIOD_S * 1000))

    def sums(times, weights=None):
        times = np.asarray(times)
        keep = (times >= t0) & (times < as_of_ms)
        w = None if weights is None else np.asarray(weights)[keep]
        return np.bincount((times[keep] - t0) // (METRIC_PERIOD_S * 1000), weights=w, minlength=nbins)[:nbins]

    failed_silently = (b_out == DROP) | (bf["log_target_failure"] & ~bf["log_target_dlq"])
    failed_silently &= bus_ms + age_ms <= as_of_ms
    d = dlq_all.filter(pa.array(dlq_all["sent_ms"].to_numpy() <= as_of_ms))
    d_bus_ms = bus_ms[d["bus_idx"].to_numpy()]
    throttled = bf["spike_late"] | bf["spike_dlq"] | bf["spike_drop"]
    series = {
        "Invocations": sums(np.concatenate([bus_ms, replay_at]),
                            np.concatenate([2 + bf["redelivery"].astype(int), np.full(len(rep), 2)])),
        "FailedInvocations": sums(np.concatenate([d_bus_ms, bus_ms[failed_silently]])),
        "InvocationsSentToDlq": sums(d_bus_ms),
        "InvocationsFailedToBeSentToDlq": sums(bus_ms[failed_silently]),
        "ThrottledRules": sums(bus_ms[throttled]),
        "MatchedEvents": sums(np.concatenate([bus_ms, replay_at])),
    }
    results = []
    stamps = pa.array(t0 + np.arange(nbins, dtype=np.int64) * METRIC_PERIOD_S * 1000).cast(pa.timestamp("ms", "UTC"))
    iso = pc.strftime(stamps.cast(pa.timestamp("s", "UTC")), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    for i, (label, v) in enumerate(series.items()):
        noisy = np.maximum(0, np.round(v * (1 + rng.normal(0, p.metric_noise, nbins))))
        keep = np.flatnonzero(v > 0)[::-1]  # CloudWatch omits empty periods; newest first (TimestampDescending)
        results.append({"Id": f"m{i}", "Label": label, "Timestamps": [iso[j] for j in keep],
                        "Values": [float(noisy[j]) for j in keep], "StatusCode": "Complete"})
    return {"MetricDataResults": results, "Messages": []}
