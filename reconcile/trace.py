"""`reconcile trace ID`: every observation of an event across hops, with its verdict and where the record lies."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pyarrow as pa

from . import resources
from .config import AwsConfig
from .engine import execute_file
from .errors import ConfigError, NotARun
from .ledger import canonical_eb_id
from .outputs import read_guarded
from .runfolder import RunFolder
from .sources import REGISTRY

logger = logging.getLogger(__name__)
TRACE_QUERIES = resources.query_file("trace")
# gaps.csv's columns trace/orphans_shown.sql reads
_GAPS_READ = ("verdict", "eb_id", "ticket_id", "kind", "event_time", "cause", "match_kind", "log_copies", "sink_rows",
              "error_code", "unlogged_at_bus")


@dataclass
class Trace:
    run_dir: str
    events: list[dict[str, Any]]
    observations: list[dict[str, Any]]
    attempts: list[dict[str, Any]] = field(default_factory=list)  # recovery journal rows (reconcile recover)
    # what later runs settled this run's pending events as (the state's settlements: State.settled)
    settled_later: list[dict[str, Any]] = field(default_factory=list)
    # earlier windows' pending events this run judged again (its settlements.parquet)
    settled_here: list[dict[str, Any]] = field(default_factory=list)


def trace(event_id: str, run_dir: Path) -> Trace:
    """Look `event_id` up in one run's outputs (verdicts.parquet and evidence/)."""
    folder = RunFolder(run_dir)
    verdicts = folder.verdicts
    if not verdicts.exists():
        raise ConfigError(f"{run_dir} holds no verdicts.parquet. Point --run at a folder `reconcile run` wrote.")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.read_parquet(str(verdicts)).create_view("verdicts")
        for spec in REGISTRY:
            if spec.observations:
                rows = con.read_parquet(str(folder.ledger(spec)))
                if "payload_digest" not in rows.columns:  # a run from before ledgers kept it parsed every payload
                    rows = rows.project("*, NULL::UBIGINT AS payload_digest")
                rows.create_view(spec.hop)
        params = {"id": canonical_eb_id(event_id)}  # an id pasted from a raw log may be upper-case
        # the orphans the run found (gaps.csv: no table of their own), which the report asks to trace too
        if folder.gaps.exists():
            read_guarded(con, str(folder.gaps)).create_view("orphans_raw")  # cells as before the formula guard
        else:
            con.register("orphans_raw", pa.table({c: pa.array([], pa.string()) for c in _GAPS_READ}))
        execute_file(con, TRACE_QUERIES / "orphans_shown.sql", {})
        events = execute_file(con, TRACE_QUERIES / "events.sql", params).to_arrow_table().to_pylist()
        events += execute_file(con, TRACE_QUERIES / "orphans.sql", params).to_arrow_table().to_pylist()
        obs = execute_file(con, TRACE_QUERIES / "observations.sql", params).to_arrow_table().to_pylist()
        settled = []
        if folder.settlements.exists():  # runs from before 0.5.0 have none
            con.read_parquet(str(folder.settlements)).create_view("settled")
            settled = execute_file(con, TRACE_QUERIES / "settled.sql", params).to_arrow_table().to_pylist()
        attempts = []
        if folder.recovery_journal.exists():  # runs from before recoveries have none
            con.read_parquet(str(folder.recovery_journal)).create_view("recovery_journal")
            attempts = execute_file(con, TRACE_QUERIES / "attempts.sql", params).to_arrow_table().to_pylist()
    finally:
        con.close()
    return Trace(str(run_dir), events, obs, attempts, settled_here=settled)


def pending_ids(found: list[Trace]) -> list[str]:
    """The Zendesk event ids the traces show pending (a run's verdicts.parquet keeps its own day's verdict)."""
    return sorted({e["source_id"] for t in found for e in t.events if e["verdict"] == "pending"})


def with_settlements(found: list[Trace], settled: list[dict[str, Any]]) -> list[Trace]:
    """Each trace with the settlements (State.settled of pending_ids) of the events it shows pending: a later run
    may have settled them since."""
    for t in found:
        pending = {e["source_id"] for e in t.events if e["verdict"] == "pending"}
        t.settled_later = [s for s in settled if s["source_id"] in pending]
    return found


def trace_runs(event_id: str, runs: Iterable[str], aws: AwsConfig, *, skip_gone: bool = False,
               skipped: list[str] | None = None) -> Iterator[Trace]:
    """`trace` over run locations as the state records them: local folders or s3:// prefixes (published runs are
    downloaded to a temporary folder first; only runs with their manifest). `skip_gone`: a run the state records
    whose folder is gone or holds no finished run (moved, a re-run interrupted, a publish that failed) is warned
    about and left out (appended to `skipped`), instead of failing the trace of every id."""
    from . import publish
    for where in runs:
        try:
            if not publish.is_s3(where):
                found = trace(event_id, Path(where))
            else:
                with tempfile.TemporaryDirectory(prefix="reconcile-trace-") as tmp:
                    found = trace(event_id, publish.download(str(where), Path(tmp), aws))
                found = Trace(str(where), found.events, found.observations, found.attempts,
                              settled_here=found.settled_here)
        except (ConfigError, NotARun) as e:
            if not skip_gone:
                raise
            logger.warning("not traced: the run the state records at %s is not there or did not finish (%s)",
                           where, e)
            if skipped is not None:
                skipped.append(str(where))
            continue
        yield found
