"""From engine results and what each source read to the run's verdict: status, exit code and summary.json."""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from . import __version__, completeness, emission, recovered
from .completeness import REQUIRED
from .config import Config
from .ledger import SourceResult
from .window import Window

VERDICTS = emission.verdicts()
EXIT = {"clean": 0, "pending": 1, "loss": 2, "incomplete": 3}


def number(value: Any) -> str:
    """A figure as text for people: `12,345`, `1.50`; `–` where there is none."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def percent(rate: float | None, digits: int = 3) -> str:
    """A rate as text for people: `0.012 %`. A rate that is not zero never reads as zero, nor one that is not whole as
    100 %: one loss in a million is "< 0.001 %", not "0.000 %" (a loss shown as none)."""
    if rate is None:
        return "–"
    step = 10.0 ** -digits
    shown = rate * 100
    if 0 < shown < step:
        return f"< {step:.{digits}f} %"
    if 100 - step < shown < 100:
        return f"> {100 - step:.{digits}f} %"
    return f"{shown:.{digits}f} %"


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# Fingerprint fields that say when or how a read went, not what it read: left out of the digest.
NOT_CONTENT = ("fetched_at",)


def fingerprint_summary(fingerprints: list[dict]) -> dict[str, Any]:
    """How many raw objects/pages a source read, their bytes where known, and one digest over all their fingerprints
    (the full list is in manifest.json) less NOT_CONTENT: two runs that read the same objects or pages show the same
    digest. A live read with nothing to fingerprint but its counts (a queue, metrics) gets no such proof from it."""
    content = [{k: v for k, v in f.items() if k not in NOT_CONTENT} for f in fingerprints]
    canonical = orjson.dumps(sorted(content, key=lambda f: orjson.dumps(f, option=orjson.OPT_SORT_KEYS)),
                             option=orjson.OPT_SORT_KEYS, default=str)
    sizes = [f.get("size") for f in fingerprints if isinstance(f.get("size"), int)]
    return {"objects": len(fingerprints), "bytes": sum(sizes) if sizes else None,
            "digest": "sha256:" + hashlib.sha256(canonical).hexdigest() if fingerprints else None}


def input_entry(result: SourceResult) -> dict[str, Any]:
    return {
        "source": result.name,
        "complete": bool(result.complete),
        "records": result.records,
        "rejected": result.rejected,
        "problems": list(result.problems),
        "details": result.details,
        "fingerprints": fingerprint_summary(result.fingerprints),
    }


# Metrics are counted by period start, events by event time: edges differ slightly, so "agrees" allows 0.1 %.
METRIC_TOLERANCE = 0.001


def metric_row(r: dict[str, Any], whole: set[str] = frozenset(), partial: set[str] = frozenset()) -> dict[str, Any]:
    """A metrics_check row with the difference (metric − per-event) and whether the two agree; None when either
    side is missing (no per-event counterpart, or no datapoints from a read not known whole). `whole`: the metrics
    read whole (sources.metrics `read_whole`), where no datapoint is 0: EventBridge sends a metric only when it is
    not 0. `partial`: those GetMetricData gave in part (a lower bound): they can be shown to disagree (above the
    per-event figure), never to agree."""
    row = {k: v for k, v in r.items() if k != "ord"}
    if row["metric_value"] is None and row["metric"] in whole:
        row["metric_value"] = 0
    m, e = row["metric_value"], row["per_event_value"]
    if isinstance(e, Decimal):  # DuckDB sums of counts come back as DECIMAL
        e = row["per_event_value"] = int(e) if e == e.to_integral_value() else float(e)
    diff = None if m is None or e is None else m - e
    row["difference"] = diff
    within = None if diff is None else METRIC_TOLERANCE * max(abs(e), 1)
    if diff is None:
        row["agrees"] = None
    elif row["metric"] in partial:  # a lower bound: above the figure it disagrees; at or below, it may yet agree
        row["agrees"] = False if diff > within else None
    else:
        row["agrees"] = abs(diff) <= within
    return row


def bucket_seconds(window: Window) -> int:
    """The timeline's bucket width (run.params gives it to loss_by_hour.sql): per minute up to 6 h, per hour beyond."""
    return 60 if (window.end - window.start).total_seconds() <= 6 * 3600 else 3600


def _rows(rows: list[dict], times: tuple[str, ...] = (), floats: tuple[str, ...] = ()) -> list[dict]:
    """Result rows as JSON-ready dicts: timestamps as ISO strings, floats rounded to the millisecond."""
    return [{k: iso(v) if k in times else (None if v is None else round(v, 3)) if k in floats else v
             for k, v in r.items()} for r in rows]


def status_of(inputs: list[dict], hops: list[dict], pending: int) -> str:
    return status_from(any(not i["complete"] for i in inputs if i["source"] in REQUIRED),
                       any(h["over_threshold"] for h in hops), bool(pending))


def status_from(incomplete: bool, over_threshold: bool, pending: bool) -> str:
    """A run's status, or a window's in `history` (state.standing), in the order one outranks another."""
    if incomplete:
        return "incomplete"
    if over_threshold:
        return "loss"
    if pending:
        return "pending"
    return "clean"


def settled_lost(s: dict[str, Any]) -> int:
    """Carried events of earlier windows this run settled as lost (a verdict with a loss hop, queries/verdicts.csv)."""
    losses = emission.loss_hops()
    return sum(n for v, n in s.get("carried", {}).get("by_verdict", {}).items() if v in losses)


def fold_carried(s: dict[str, Any], settlements: list[dict], history: list[dict], cfg: Config,
                 holders: dict[str, tuple[list[str], bool]] | None = None) -> bool:
    """Losses this run settled for earlier windows' pending events are those windows' losses: where they leave a
    window's hop (its figures with every settlement folded in: `history`, queries/state/history.sql) over the hop's
    threshold (the one that window's run recorded, as `history` judges it; this run's [thresholds] for a window
    recorded before the state kept them), the run's status is `loss`, as an incomplete read still outranks it.
    Otherwise a day's losses after the bus, nearly all pending when the day is first judged (the retry horizon),
    would never reach an exit code. `holders` (state.holders): every window that left each event pending
    (overlapping windows both fold a settlement in), by default the one it was carried from, and whether it waited
    on the bus.
    A carried event whose loss is held (`would_be`: a store read in part, the sink not read back to it) makes a clean
    run `pending`: its fate is not settled, and the hold may never lift by itself. One merely within its retry horizon
    (or a recovery not landed yet) does not: the next run settles it.
    Sets `carried.windows` (each earlier window hop whose figures this run's settlements changed, losses or not:
    alert.py publishes the rate of those left with nothing pending) and `carried.over_threshold` (those of them this
    run settled losses of, over the threshold); returns whether the status changed."""
    hop_of = emission.loss_hops()
    holders = holders or {}

    def windows(r: dict) -> list[str]:
        return holders[r["source_id"]][0] if r["source_id"] in holders else [r["window_key"]]
    lost = {(w, hop_of[r["verdict"]]) for r in settlements if r["verdict"] in hop_of for w in windows(r)}
    funnel = [h["hop"] for h in emission.hop_rows() if h["in_funnel"]]
    vocab = {v["verdict"]: v for v in emission.verdict_rows()}
    touched = lost | {(w, h) for r in settlements if r["verdict"] != "pending"
                      for h in _hops_settled(r, holders, funnel, vocab) for w in windows(r)}
    folded = [{"window_key": h["window_key"], "window_end": h["window_end"], "hop": h["hop"], "in": h["in"],
               "lost": h["lost"], "pending": h["pending"], "loss_rate": round(h["loss_rate"], 8),
               "threshold": getattr(cfg.thresholds, h["hop"]) if h.get("threshold") is None else h["threshold"]}
              for h in history if (h["window_key"], h["hop"]) in touched]
    # each earlier window hop this run's settlements changed, as it stands now (alert.py publishes the final ones'
    # rates: a window whose last pending events all landed has a final rate too)
    s["carried"]["windows"] = folded
    over = [{k: v for k, v in h.items() if k not in ("window_end", "pending")} for h in folded
            if (h["window_key"], h["hop"]) in lost and emission.over_threshold(h["lost"], h["loss_rate"],
                                                                              h["threshold"])]
    s["carried"]["over_threshold"] = over
    status = s["status"]
    if over and status in ("clean", "pending"):
        status = "loss"
    elif status == "clean" and any(r["verdict"] == "pending" and r.get("would_be") for r in settlements):
        status = "pending"
    if status == s["status"]:
        return False
    s["status"], s["exit_code"] = status, EXIT[status]
    return True


def _hops_settled(r: dict, holders: dict[str, tuple[list[str], bool]], funnel: list[str],
                  vocab: dict[str, dict]) -> set[str]:
    """The funnel hops (`funnel`, in order) whose figures a settlement changes (history.sql's rule): the hop the event
    waited at (the second when it waited on the bus), and the second too when one that waited before the bus was
    found on it. Its loss hop besides (fold_carried). None known for a run folder that predates state.holders."""
    if r["source_id"] not in holders:
        return set()
    first, second = funnel
    if holders[r["source_id"]][1]:
        return {second}
    verdict = vocab[r["verdict"]]
    return {first, second} if verdict["in_funnel"] and verdict["loss_hop"] != first else {first}


def build(results: dict[str, list[dict]], inputs: list[dict], cfg: Config, window: Window, *,
          orphans: int, unlogged: int, gaps: int, generated_at: datetime) -> dict[str, Any]:
    verdicts = {v: 0 for v in VERDICTS}
    verdicts.update({r["verdict"]: r["events"] for r in results["verdict_counts"]})
    hops = []
    # a hop whose losses rest on a store read in part has held them: its figures are no proof of "no loss" yet
    unsettled = completeness.unsettled_by({i["source"]: i["complete"] for i in inputs}) or {}
    for r in results["funnel"]:
        rate = emission.loss_rate(r["lost"], r["in"])
        threshold = getattr(cfg.thresholds, r["name"])  # [thresholds] has one key per hop of queries/hops.csv
        hops.append({"name": r["name"], "in": r["in"], "out": r["out"], "lost": r["lost"], "pending": r["pending"],
                     "held": r["held"], "recovered": r["recovered"],
                     # also when the reads are whole: losses held as a read ends before them (the bus log's end,
                     # the DLQ archive's newest object) are no proof of "within budget" either
                     "unsettled": unsettled.get(r["name"]) or (
                         f"{r['held']:,} loss(es) held until a later read proves them" if r["held"] else None),
                     "loss_rate": round(rate, 8), "threshold": threshold,
                     "over_threshold": emission.over_threshold(r["lost"], rate, threshold)})
    status = status_of(inputs, hops, verdicts["pending"])
    metrics = next((i["details"] for i in inputs if i["source"] == "metrics" and i["complete"]), {})
    return {
        "window": {"start": iso(window.start), "end": iso(window.end), "read_start": iso(window.read_start),
                   "read_end": iso(window.read_end), "as_of": iso(window.as_of),
                   "horizon_h": window.horizon.total_seconds() / 3600,
                   # the sink's own range, where it differs (read back for carried events, on to as_of)
                   **({"sink_read_start": iso(window.sink_read_start)} if window.sink_from else {}),
                   **({"sink_read_end": iso(window.sink_read_end)}
                      if window.sink_read_end > window.read_end else {})},
        "status": status,
        "exit_code": EXIT[status],
        "events": sum(verdicts.values()),
        "verdicts": verdicts,
        # rows of verdicts.parquet (Zendesk child events) per verdict, where `verdicts` counts expected bus events
        "verdict_rows": {r["verdict"]: r["children"] for r in results["verdict_counts"]},
        "orphans": orphans,
        "unlogged_at_bus": unlogged,
        # events that reached the sink only in files outside Spark's commit log (queries/rules.sql only_outside_log),
        # and how they count ([sink] honour_commit_log and retention): landed ('counted', 'expired') or not ('leftover')
        "outside_commit_log": sum(r["outside_log"] for r in results["verdict_counts"]),
        # of those, the losses: leftovers ([sink] retention unset, or written too recently for it to have expired them)
        "outside_commit_log_lost": sum(r["outside_log"] for r in results["verdict_counts"]
                                       if r["verdict"] in emission.loss_hops()),
        "outside_commit_log_counts": cfg.sink.outside_log,
        "hops": hops,
        "matching": {r["match_kind"]: r["events"] for r in results["match_stats"]},
        "inputs": inputs,
        "duplicates": results["duplicates"],
        "dlq_causes": results["dlq_causes"],
        "latency": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in results["latency"]],
        "metrics_check": [metric_row(r, whole=set(metrics.get("read_whole", [])),
                                     partial=set(metrics.get("partial", []))) for r in results["metrics_check"]],
        "loss_by_type": results["loss_by_type"],
        "timeline": [dict(r, bucket=iso(r["bucket"])) for r in results["loss_by_hour"]],
        "timeline_bucket_s": bucket_seconds(window),
        "silent_losses": _rows(results["silent_losses"], times=("hour",)),
        "latency_histogram": _rows(results["latency_histogram"]),
        "pending_events": _rows(results["pending_events"], times=("event_time",), floats=("age_s",)),
        "orphan_causes": results["orphan_causes"],
        "unlogged_causes": results["unlogged_causes"],
        "dlq_errors": results["dlq_errors"],
        "trace_hints": _rows(results["trace_hints"], times=("first_event_time",)),
        "gaps": {"count": gaps, "file": "gaps.csv"},
        # recovery (issue 16): the recovery funnel, only when a recovery touches the run
        **({"recovery": r} if (r := recovered.funnel(results["recovery_funnel"][0])) else {}),
        "tool": {"name": "reconcile", "version": __version__},
        "generated_at": iso(generated_at),
    }
