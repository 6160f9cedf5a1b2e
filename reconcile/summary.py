"""From engine results and what each source read to the run's verdict: status, exit code and summary.json."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import __version__
from .config import Config
from .ledger import SourceResult
from .window import Window

VERDICTS = ("delivered", "duplicated", "dead_lettered", "lost_after_bus", "lost_before_bus", "pending", "excluded")
EXIT = {"clean": 0, "pending": 1, "loss": 2, "incomplete": 3}
# Sources a verdict rests on; metrics are a sanity check only, so a missing metrics read never makes a run incomplete.
REQUIRED = ("zendesk", "bus_log", "sink", "dlq")


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def input_entry(result: SourceResult) -> dict[str, Any]:
    return {
        "source": result.name,
        "complete": bool(result.complete),
        "records": result.records,
        "rejected": result.rejected,
        "problems": list(result.problems),
        "details": result.details,
    }


def status_of(inputs: list[dict], hops: list[dict], pending: int) -> str:
    if any(not i["complete"] for i in inputs if i["source"] in REQUIRED):
        return "incomplete"
    if any(h["over_threshold"] for h in hops):
        return "loss"
    if pending:
        return "pending"
    return "clean"


def build(results: dict[str, list[dict]], inputs: list[dict], cfg: Config, window: Window, *,
          orphans: int, unlogged: int, gaps: int, generated_at: datetime) -> dict[str, Any]:
    verdicts = {v: 0 for v in VERDICTS}
    verdicts.update({r["verdict"]: r["events"] for r in results["verdict_counts"]})
    thresholds = {"zendesk_to_bus": cfg.thresholds.zendesk_to_bus, "bus_to_sink": cfg.thresholds.bus_to_sink}
    hops = []
    for r in results["funnel"]:
        rate = r["lost"] / r["in"] if r["in"] else 0.0
        hops.append({"name": r["name"], "in": r["in"], "out": r["out"], "lost": r["lost"], "pending": r["pending"],
                     "loss_rate": round(rate, 8), "threshold": thresholds[r["name"]],
                     "over_threshold": r["lost"] > 0 and rate > thresholds[r["name"]]})
    status = status_of(inputs, hops, verdicts["pending"])
    return {
        "window": {"start": iso(window.start), "end": iso(window.end), "read_start": iso(window.read_start),
                   "read_end": iso(window.read_end), "as_of": iso(window.as_of),
                   "horizon_h": window.horizon.total_seconds() / 3600},
        "status": status,
        "exit_code": EXIT[status],
        "events": sum(verdicts.values()),
        "verdicts": verdicts,
        "orphans": orphans,
        "unlogged_at_bus": unlogged,
        "hops": hops,
        "matching": {r["match_kind"]: r["events"] for r in results["match_stats"]},
        "inputs": inputs,
        "duplicates": results["duplicates"],
        "dlq_causes": results["dlq_causes"],
        "latency": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in results["latency"]],
        "metrics_check": [{k: v for k, v in r.items() if k != "ord"} for r in results["metrics_check"]],
        "loss_by_type": results["loss_by_type"],
        "timeline": [dict(r, bucket=iso(r["bucket"])) for r in results["loss_by_hour"]],
        "gaps": {"count": gaps, "file": "gaps.csv"},
        "tool": {"name": "reconcile", "version": __version__},
        "generated_at": iso(generated_at),
    }
