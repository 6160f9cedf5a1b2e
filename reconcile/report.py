"""The one Jinja2 environment and the context each report template receives.

Templates format numbers and dates; every figure they show is computed before (engine, summary) and handed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "reports"
GAP_ROWS = 1000


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _pct(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


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


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=_num, pct=_pct, secs=_secs)
    return env


@dataclass(frozen=True)
class ReportContext:
    """What report.html.j2 receives.

    summary: the summary.json object (window, status, verdicts, hops, inputs, breakdowns).
    gaps: the first GAP_ROWS rows of gaps.csv as dicts (event_time, verdict, cause, source_id, eb_id, ...).
    rejects: per source, the first rejected records (source, source_ref, reason, raw).
    config: the effective configuration, secrets never included (they are not part of Config).
    audience: daily | incident | audit — orders and trims sections.
    """

    summary: dict[str, Any]
    gaps: list[dict[str, Any]]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    audience: str = "daily"


def render(ctx: ReportContext) -> str:
    return environment().get_template("report.html.j2").render(ctx=ctx, s=ctx.summary)
