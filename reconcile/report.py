"""The one Jinja2 environment and the context each report template receives.

Templates format numbers and dates; every figure they show is computed before (engine, summary) and handed in.
The helpers here only shape what is drawn: section order per audience, which timeline rows a table lists, chart
scales, and the text safety filter that keeps hostile input inert and short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

import pyarrow as pa
import pyarrow.compute as pc

from . import emission, resources
from .config import redact
from .console import inert
from .errors import ReportError
from .summary import number, percent

TEMPLATE_DIR = resources.TEMPLATE_DIR
GAP_ROWS = 1000
GAP_GROUP_ROWS = 200  # rows listed per gap group (verdict); gaps.csv has them all
TEXT_LIMIT = 300  # characters of any free text (error messages, rejected records) shown in a cell
PROBLEM_LIMIT = 1000  # characters of an input's first problem in the status header: our own sentence, shown whole
TIMELINE_ROWS_ALL = 48  # up to this many buckets the table lists every one; beyond, only buckets with gaps,
TIMELINE_TABLE_ROWS = 120  # at most this many (those with the most gaps, in time order); the chart shows all
BREAKDOWN_ROWS = 100  # rows of a long breakdown table (silent losses, kinds); summary.json has them all

# Section order per audience; sections in BRIEF are trimmed to their headline (the anchor always exists, so links
# from post-mortems keep working whatever the audience).
SECTIONS = {
    "daily": ("status", "funnel", "timeline", "causes", "gaps", "pending", "duplicates", "latency", "metrics",
              "coverage", "run"),
    "incident": ("status", "timeline", "gaps", "causes", "pending", "funnel", "duplicates", "latency", "metrics",
                 "coverage", "run"),
    "audit": ("status", "coverage", "funnel", "metrics", "gaps", "causes", "duplicates", "pending", "timeline",
              "latency", "run"),
}
BRIEF = {
    "daily": frozenset(),
    "incident": frozenset({"coverage", "metrics"}),
    "audit": frozenset({"timeline", "latency"}),
}
HOP_LABELS = emission.hop_labels()  # queries/hops.csv
TITLES = {"status": "Status", "funnel": "Funnel", "timeline": "Timeline", "causes": "Causes",
          "metrics": "Metrics cross-check", "latency": "Latency", "duplicates": "Duplicates & orphans",
          "pending": "Pending", "coverage": "Coverage", "gaps": "Gaps", "run": "Run"}


def _pct(value: Any, digits: int = 3) -> str:
    return percent(value, digits)


def _secs(value: Any) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _short_secs(value: Any) -> str:
    """An axis tick: 0, 0.1s, 5s, 2m, 1h; no lower bound (the bucket below zero): <0."""
    if value is None:
        return "<0"
    if not value:
        return "0"
    for unit, size in (("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def _ts(value: Any) -> str:
    """'2026-11-23T10:00:00.000Z' -> '2026-11-23 10:00:00Z' (UTC, to the second)."""
    if value is None:
        return "–"
    text = str(value)
    return text[:10] + " " + text[11:19] + "Z" if len(text) >= 19 and text[10] == "T" else text


def _text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Free text from the outside world as inert, visible text: control and format characters (bidi overrides,
    zero-width spaces, ...) shown as <U+XXXX> instead of acting, and cut to `limit` characters. Escaping itself is
    autoescape's job; this keeps a string from reordering or hiding what the reader sees."""
    if value is None:
        return ""
    text = str(value)
    return inert(text[:limit]) + (f" … ({len(text):,} characters)" if len(text) > limit else "")


FORMATS = {"num": number, "pct": _pct, "secs": _secs, "ts": _ts, "text": _text, "raw": lambda v: str(v)}


def _fmt(value: Any, kind: str) -> str:
    return FORMATS[kind](value)


def axis(peak: float, ticks: int = 5) -> tuple[float, list[float]]:
    """An axis that fits `peak`: the smallest top that is a whole number of 1/2/2.5/5 × 10^k steps, at most `ticks`
    steps, and the tick values from 0 to that top (integers stay integers)."""
    if not peak or peak <= 0:
        return 1, [0, 1]
    raw = peak / ticks
    exp = 10 ** math.floor(math.log10(raw))
    step = next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= raw)
    if peak >= 1 and step < 1:
        step = 1
    n = math.ceil(peak / step - 1e-9)
    values = [round(step * i, 10) for i in range(n + 1)]
    values = [int(v) if float(v).is_integer() else v for v in values]
    return values[-1], values


def nice_max(value: float) -> float:
    """The smallest 1/2/5 × 10^k at or above `value` (at least 1): a chart's axis top."""
    if not value or value <= 1:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if m * exp >= value:
            return m * exp
    return 10 * exp


LOSS_SERIES = emission.chart_verdicts()  # the timeline stack, bottom first: `chart` in queries/verdicts.csv


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def timeline_view(summary: dict[str, Any]) -> dict[str, Any]:
    """What the timeline chart and table need to draw: one slot per bucket of the window (a bucket with no events
    has no row and is drawn at zero), the scales, and which rows (with their summary index) the table lists."""
    timeline = summary["timeline"]
    bucket_s = summary["timeline_bucket_s"]
    start = _parse_iso(summary["window"]["start"])
    span = (_parse_iso(summary["window"]["end"]) - start).total_seconds()
    slots: list[dict | None] = [None] * max(1, math.ceil(span / bucket_s))
    for r in timeline:
        i = int((_parse_iso(r["bucket"]) - start).total_seconds() // bucket_s)
        if 0 <= i < len(slots):
            slots[i] = r
    volume_top, volume_ticks = axis(max((r["events"] for r in timeline), default=0), 4)
    loss_top, loss_ticks = axis(max((sum(r[k] for k in LOSS_SERIES) for r in timeline), default=0))
    indexed = list(enumerate(timeline))
    if len(timeline) > TIMELINE_ROWS_ALL:
        shown = [(i, r) for i, r in indexed if any(r[k] for k in LOSS_SERIES)]
        if len(shown) > TIMELINE_TABLE_ROWS:
            # choosing rows to list, not a figure shown: the buckets with the most gaps, back in time order
            worst = sorted(shown, key=lambda ir: -sum(ir[1][k] for k in LOSS_SERIES))[:TIMELINE_TABLE_ROWS]
            shown = sorted(worst, key=lambda ir: ir[0])
    else:
        shown = indexed
    # stacked bars: per series, (slot, count below, count) for each bucket where it is not zero
    stacks: dict[str, list[tuple[int, int, int]]] = {k: [] for k in LOSS_SERIES}
    for i, r in enumerate(slots):
        below = 0
        for k in LOSS_SERIES if r else ():
            if r[k]:
                stacks[k].append((i, below, r[k]))
                below += r[k]
    ticks = [(i, (start + timedelta(seconds=i * bucket_s)).strftime("%H:%M"))
             for i in range(0, len(slots), max(1, math.ceil(len(slots) / 12)))]
    return {"slots": slots, "stacks": stacks, "volume_max": volume_top, "volume_ticks": volume_ticks,
            "loss_max": loss_top, "loss_ticks": loss_ticks, "rows": shown, "hidden": len(timeline) - len(shown),
            "ticks": ticks}


# --- the gap table: one group per verdict, losses first ---------------------------------------------------------

UNLOGGED, ORPHAN = "unlogged", "orphan"


def gap_groups() -> list[dict[str, Any]]:
    """The gap table's groups in reading order, from queries/verdicts.csv: the losses (verdicts with a loss hop, the
    earliest hop first: lost before the bus, lost after it, dead-lettered), then pending, then what is not a loss
    (duplicated, unverified, ...), then delivered-but-unlogged events and orphans. `open`: shown expanded."""
    rows = emission.verdict_rows()
    losses = sorted((v for v in rows if v["loss_hop"]), key=lambda v: -v["ord"])
    rest = sorted((v for v in rows if not v["loss_hop"] and v["verdict"] != "delivered"),
                  key=lambda v: (v["verdict"] != "pending", v["ord"]))
    groups = [{"key": v["verdict"], "label": v["label"], "meaning": v["meaning"], "loss_hop": v["loss_hop"],
               "open": bool(v["loss_hop"])} for v in losses + rest]
    groups.append({"key": UNLOGGED, "label": "delivered, not in the bus log", "loss_hop": None, "open": False,
                   "meaning": "in the sink exactly once but with no bus-log record: an observability gap, not a loss"})
    groups.append({"key": ORPHAN, "label": "orphans", "loss_hop": None, "open": False,
                   "meaning": "downstream records no Zendesk event links to: not a loss"})
    return groups


def _group_key(verdict: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(verdict, "delivered"), UNLOGGED, verdict)


def gap_sample(reader: pa.RecordBatchReader, per_group: int = GAP_GROUP_ROWS) -> tuple[list[dict], dict[str, int]]:
    """From the gaps table in time order: the first `per_group` rows of each gap group (event_time as ISO text) and
    how many rows each group has. Streams batch by batch; nothing but the kept rows is held."""
    from .summary import iso  # summary imports nothing of the report; imported here to keep the module light

    kept: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    for batch in reader:
        keys = _group_key(batch.column("verdict"))
        for vc in pc.value_counts(keys).to_pylist():
            key = vc["values"]
            counts[key] = counts.get(key, 0) + vc["counts"]
            room = per_group - len(kept.setdefault(key, []))
            if room > 0:
                rows = batch.filter(pc.equal(keys, key)).slice(0, room).to_pylist()
                kept[key].extend(dict(r, event_time=iso(r["event_time"])) for r in rows)
    order = [g["key"] for g in gap_groups()]
    ranked = sorted(kept, key=lambda k: order.index(k) if k in order else len(order))
    return [r for k in ranked for r in kept[k]], {k: counts[k] for k in ranked}


# --- coverage details for people ----------------------------------------------------------------------------------

QUIET_WHEN_FALSE = frozenset({"sampled", "tail_pending", "partial"})  # worth a line only when they hold


def detail_rows(details: dict[str, Any]) -> list[dict[str, Any]]:
    """A source's details as rows a person reads: epoch seconds (`*_time`) as UTC times, `*_s` as durations, booleans
    as yes/no, lists as lists, dicts as key/value rows; unset or empty values and flags that only matter when set are
    left out."""
    out = []
    for key, value in (details or {}).items():
        if value is None or value == [] or value == {} or (key in QUIET_WHEN_FALSE and not value):
            continue
        label = key.replace("_", " ")
        if isinstance(value, bool):
            out.append({"key": label, "kind": "word", "value": "yes" if value else "no"})
        elif isinstance(value, (int, float)) and key.endswith("_time") and value > 10**8:
            out.append({"key": label, "kind": "ts",
                        "value": datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        elif isinstance(value, (int, float)) and key.endswith("_s"):
            out.append({"key": label[:-2], "kind": "secs", "value": value})
        elif isinstance(value, (int, float)):
            out.append({"key": label, "kind": "num", "value": value})
        elif isinstance(value, (list, tuple)):
            out.append({"key": label, "kind": "list", "value": [_plain(v) for v in value]})
        elif isinstance(value, dict):
            out.append({"key": label, "kind": "dict", "value": [(str(k), _plain(v)) for k, v in value.items()]})
        else:
            out.append({"key": label, "kind": "text", "value": value})
    return out


def _plain(value: Any) -> str:
    """One list item or dict value as words: numbers with separators, booleans as yes/no, nested values as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return number(value)
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


# Sections a reproduction must not take from the run: it records nothing in the run's state and alerts nobody
# (manifest.json keeps the whole config).
NOT_REPRODUCED = ("state", "alert")


def config_toml(config: dict[str, Any]) -> str:
    """The effective config as a TOML file `reconcile run --config` reads back to reproduce the run (unset keys
    and NOT_REPRODUCED left out)."""
    lines = [f"# [{s}] left out: a reproduction records nothing in the run's state and alerts nobody"
             for s in NOT_REPRODUCED if config.get(s) and any(v is not None for v in config[s].values())]
    lines += [""] if lines else []
    for section, values in config.items():
        if not isinstance(values, dict) or section in NOT_REPRODUCED:
            continue
        items = [(k, v) for k, v in values.items() if v is not None]
        if items:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in items)
            lines.append("")
    return "\n".join(lines)


def reproduce_command(summary: dict[str, Any], audience: str) -> str:
    """The run again, into a folder of its own and with no state: it must never replace the run it reproduces, in
    the state or anywhere (config_toml leaves out [state] and [alert] too)."""
    w = summary["window"]
    return (f"reconcile run --config reconcile.toml --start {w['start']} --end {w['end']} --as-of {w['as_of']} "
            f"--audience {audience} --no-state --out reproduced")


def verify_commands() -> list[str]:
    """How an auditor re-proves a run from its folder (or its .tar.gz bundle, or its s3:// prefix)."""
    return ["reconcile verify RUN_FOLDER", "reconcile verify RUN_FOLDER --against-sources"]


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=number, pct=_pct, secs=_secs, ts=_ts, text=_text, fmt=_fmt, short_secs=_short_secs,
                       details=detail_rows)
    env.globals.update(nice_max=nice_max, axis=axis, BREAKDOWN_ROWS=BREAKDOWN_ROWS, PROBLEM_LIMIT=PROBLEM_LIMIT,
                       TIMELINE_TABLE_ROWS=TIMELINE_TABLE_ROWS, TITLES=TITLES, LOSS_SERIES=LOSS_SERIES,
                       HOP_LABELS=HOP_LABELS,
                       HOPS=emission.hop_rows(), MATCH_KINDS=emission.match_kind_rows(),
                       VERDICTS=emission.verdict_rows(), VERDICT_NAMES=emission.verdicts())
    return env


@dataclass(frozen=True)
class ReportContext:
    """What report.html.j2 receives.

    summary: the summary.json object (window, status, verdicts, hops, inputs, breakdowns).
    gaps: rows of gaps.csv as dicts (event_time, verdict, cause, source_id, eb_id, ...): the first GAP_GROUP_ROWS of
        each gap group (gap_sample), grouped by the report (gap_groups) with summary.json gaps.groups as the counts.
    rejects: per source, the first rejected records (source, source_ref, reason, raw).
    config: the effective configuration; shown redacted (see `redact`).
    audience: daily | incident | audit — orders and trims sections (SECTIONS, BRIEF).
    """

    summary: dict[str, Any]
    gaps: list[dict[str, Any]]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    audience: str = "daily"

    @cached_property
    def gap_groups(self) -> list[dict[str, Any]]:
        """The gap table's groups in reading order (gap_groups), each with its listed rows and how many it has
        (summary.json gaps.groups; the listed rows when a summary predates it). Empty groups left out."""
        counts = self.summary.get("gaps", {}).get("groups")
        by: dict[str, list[dict]] = {}
        for r in self.gaps:
            by.setdefault(UNLOGGED if r["verdict"] == "delivered" else r["verdict"], []).append(r)
        out = []
        for g in gap_groups():
            rows = by.get(g["key"], [])
            count = counts.get(g["key"], 0) if counts is not None else len(rows)
            if count or rows:
                out.append(dict(g, rows=rows, count=count))
        return out

    @cached_property
    def start(self) -> dict[str, Any]:
        """'Where to start': per hop its losses and the trace hints (first event per verdict and cause) of its loss
        verdicts; the other hints; the inputs only partly read; the inputs with rejected records."""
        from .summary import settled_lost
        s = self.summary
        hop_of = emission.loss_hops()
        loss_order = [g["key"] for g in gap_groups()]
        hints = [dict(h, index=i) for i, h in enumerate(s.get("trace_hints", []))]
        hints.sort(key=lambda h: (loss_order.index(h["verdict"]) if h["verdict"] in loss_order else len(loss_order)))
        hops = [dict(h, hints=[x for x in hints if hop_of.get(x["verdict"]) == h["name"]]) for h in s.get("hops", [])]
        return {"hops": hops, "lost": sum(h["lost"] for h in hops),
                # earlier windows' pending events this run settled as lost (their loss may be this run's exit code)
                "settled_lost": settled_lost(s),
                "other_hints": [x for x in hints if not hop_of.get(x["verdict"])],
                "incomplete": [i for i in s.get("inputs", []) if not i["complete"]],
                "rejected": [i for i in s.get("inputs", []) if i["rejected"]],
                "verify": verify_commands()}

    @property
    def sections(self) -> tuple[str, ...]:
        return SECTIONS[self.audience]

    def brief(self, section: str) -> bool:
        return section in BRIEF[self.audience]

    @property
    def timeline(self) -> dict[str, Any]:
        return timeline_view(self.summary)

    @property
    def safe_config(self) -> dict[str, Any]:
        return redact(self.config)

    @property
    def config_toml(self) -> str:
        return config_toml(self.safe_config)

    @property
    def command(self) -> str:
        return reproduce_command(self.summary, self.audience)


def render(ctx: ReportContext) -> str:
    if ctx.audience not in SECTIONS:
        raise ReportError(f"audience {ctx.audience!r} is not one of {', '.join(SECTIONS)}.")
    return environment().get_template("report.html.j2").render(ctx=ctx, s=ctx.summary, tl=ctx.timeline)
