"""The stores the job reads: the one `Source` contract and the one registry, REGISTRY.

Everything that needs to know the stores reads REGISTRY: the run (read every store, write evidence/<hop>.parquet),
completeness.py (required / may be empty), summary.py (status), the engine's views (`hop`), `trace`, `verify`,
`check` (one cheap call each), `run --dry-run` (describe) and `fetch <store>`.

Adding a store: write its module here (a `read` returning a SourceResult), add one `Source(...)` line to REGISTRY,
and the queries/*.sql that use its view (`hop`). See docs/design.md, "How do I add a store?".

The read contract (`Source.read`): whatever a store's module does (keep its ledger in memory, or stream it into the
Parquet file it is given with events.LedgerOut), the result comes back with its ledger on disk at `path`
(evidence/<hop>.parquet), `records` its row count, and `complete`/`problems` saying what the read proved about its
coverage. completeness.decide_all then applies the one completeness rule across stores.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from .. import ledger
from ..errors import ReconcileError, SourceError
from ..ledger import SourceResult
from ..window import zendesk_reach

if TYPE_CHECKING:
    from ..config import Config
    from ..window import Window

# A store's "finished" and "could not be read" lines are the run's log lines: they keep the logger name a log
# shipper filters on (`reconcile.run`, as before the registry moved here).
logger = logging.getLogger("reconcile.run")

# The result of the store a read comes after (Source.after), waited for when called; None when read alone.
Prior = Callable[[], SourceResult] | None
# How a store's module is called: (its config, the window, the run's evidence folder, the ledger file to stream
# into, progress bars?, the prior result) -> SourceResult. A module keeping its ledger in memory ignores the ledger
# file.
Reader = Callable[["Config", "Window", Path, Path, bool, Prior], SourceResult]


def later(target: str) -> Callable:
    """`module:function` under reconcile/, imported when first called (a store's libraries load only when used)."""
    module, _, name = target.partition(":")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"reconcile.{module}"), name)(*args, **kwargs)
    return call


@dataclass(frozen=True)
class Source:
    """One store the job reads.

    name: the config section and the input's name in summary.json / manifest.json (`bus_log`).
    hop: the ledger's view name in queries/*.sql and its evidence file, evidence/<hop>.parquet (`bus`).
    required: a verdict rests on it, so an incomplete read makes the run incomplete (exit 3); metrics are not.
    may_be_empty: "no records" is the normal state of a good day (the DLQ): completeness rule 3 does not apply.
    schema: its ledger's schema (ledger.SCHEMA for observations of events; ledger.METRIC_SCHEMA for counters).
    configured / hint: whether the config names it, and the config keys to set when it does not.
    describe: one line for `run --dry-run`: what would be read.
    reader: how its module is called (Reader); probe: `reconcile check`'s one cheap call, returning what answered.
    after: the store whose result its reader may use (Prior): the sink does not parse what the bus log parsed.
    on_aws: read through AWS (boto3 or pyarrow's S3), so bound by `[aws] read_deadline` (run.read_all): neither
    bounds a body a server trickles. Zendesk's requests have whole-request deadlines of their own.
    Stores are read at once; the reader waits for the other's result where it needs it (the sink lists its files
    and reads the commit log first, then waits before reading any data file).
    """

    name: str
    hop: str
    required: bool
    may_be_empty: bool
    schema: pa.Schema
    configured: Callable[[Config], bool]
    hint: str
    describe: Callable[[Config], str]
    reader: Reader
    probe: Callable[[Config], str]
    after: str | None = None
    on_aws: bool = True

    @property
    def command(self) -> str:
        """Its `reconcile fetch` command (`bus-log`)."""
        return self.name.replace("_", "-")

    @property
    def observations(self) -> bool:
        """Whether its ledger holds observations of events (the hops a trace follows), not counters."""
        return self.schema.equals(ledger.SCHEMA)

    @property
    def ledger_file(self) -> str:
        return f"{self.hop}.parquet"

    @property
    def rejects_file(self) -> str:
        return f"{self.name}.rejects.parquet"

    def read(self, cfg: Config, window: Window, evidence: Path, progress: bool = True,
             prior: Prior = None) -> SourceResult:
        """Read the store; its ledger ends at evidence/<hop>.parquet (`path` of the result). A store that is not
        configured, or cannot be read at all (a SourceError, exit 3), is an incomplete input, never a crash; a
        required one that refuses the credentials (AccessDenied) stops the run with exit 4. Logs,
        when it finishes, its counts and time (fields for `--log-format json`)."""
        t0 = time.monotonic()
        out = evidence / self.ledger_file
        r = self.keep(self._read(cfg, window, evidence, out, progress, prior), evidence)
        seconds = round(time.monotonic() - t0, 3)
        logger.info("%s finished: %d records, %d rejected, %s, %.1f s", self.name, r.records, r.rejected,
                    "read whole" if r.complete else "read in part", seconds,
                    extra={"source": self.name, "records": r.records, "rejected": r.rejected,
                           "complete": r.complete, "seconds": seconds})
        return r

    def _read(self, cfg: Config, window: Window, evidence: Path, out: Path, progress: bool,
              prior: Prior) -> SourceResult:
        if not self.configured(cfg):
            return SourceResult(self.name, ledger.empty(), complete=not self.required,
                                problems=[f"not configured: {self.hint}"])
        try:
            return self.reader(cfg, window, evidence, out, progress, prior)
        except ReconcileError as e:
            # a required store that refuses the credentials stops the run (AccessDenied, exit 4: no retry helps);
            # an optional one (the metrics) is an input read in part, as it is when it cannot be read otherwise
            if not (isinstance(e, SourceError) and (e.exit_code == 3 or not self.required)):
                raise
            logger.warning("%s could not be read: %s", self.name, e)
            return SourceResult(self.name, ledger.empty(), complete=False, problems=[str(e)])

    def keep(self, r: SourceResult, evidence: Path) -> SourceResult:
        """The result with its ledger on disk at evidence/<hop>.parquet. A module that streamed its ledger there
        returns a table of no columns whose num_rows is the file's (events.LedgerOut.result()); one that kept it in
        memory has it written here, conformed to the schema. A result already on disk is returned as it is."""
        out = evidence / self.ledger_file
        if r.ledger is None and r.path == out:
            return r
        if r.ledger is not None and r.ledger.num_columns == 0 and out.exists():
            return replace(r, ledger=None, path=out, rows=r.ledger.num_rows)
        table = r.ledger if r.ledger is not None else self.schema.empty_table()
        if self.observations:
            table = ledger.conform(table)
        elif table.num_rows == 0:
            table = self.schema.empty_table()
        ledger.write_atomic(table, out, **(ledger.PARQUET_OPTIONS if self.observations else {}))
        return replace(r, ledger=None, path=out, rows=table.num_rows)

    def write_evidence(self, r: SourceResult, evidence: Path) -> SourceResult:
        """The result's ledger (keep) and its rejects in evidence/, as a run writes them (run.write_evidence;
        `verify` writes a ledger it makes again alike, to compare byte for byte)."""
        kept = self.keep(r, evidence)
        ledger.write_atomic(r.rejects, evidence / self.rejects_file)
        return kept


# ------------------------------------------------------------------------------------------------------- readers

def _zendesk(cfg: Config, window: Window, evidence: Path, out: Path, progress: bool, prior: Prior) -> SourceResult:
    from . import zendesk
    pages = Path(cfg.zendesk.pages_dir) if cfg.zendesk.pages_dir else evidence / "zendesk-pages"
    # "now" for the API's one-minute cut-off is the time the run judges as of (default: the real now)
    return zendesk.read(cfg.zendesk, window, pages, now=window.as_of, progress=progress,
                        edge=zendesk_reach(cfg.match.tolerance_seconds), aws=cfg.aws)


def streamed(module: str, section: str) -> Reader:
    """A store whose module (reconcile/sources/<module>.py) streams its ledger into `out` (bounded memory on big
    days), configured by [<section>]. `match`: the shape of EventBridge ids and Zendesk's `source` values, one rule
    for every AWS store."""
    def read(cfg: Config, window: Window, evidence: Path, out: Path, progress: bool, prior: Prior) -> SourceResult:
        reader = importlib.import_module(f"reconcile.sources.{module}")
        return reader.read(getattr(cfg, section), window, cfg.aws, out=out, match=cfg.match)
    return read


def _sink(cfg: Config, window: Window, evidence: Path, out: Path, progress: bool, prior: Prior) -> SourceResult:
    from . import sink
    return sink.read(cfg.sink, window, cfg.aws, out=out, match=cfg.match, bus_ids=lambda: bus_ids(prior))


def bus_ids(prior: Prior):
    """The bus log's (EventBridge id, payload digest) pairs (sources/explained.py) when it was read whole by the one
    completeness rule; None when it was not, or failed (its error is the run's to raise, from its own read)."""
    from .. import completeness
    from .explained import BusIds
    try:
        bus = prior() if prior is not None else None
    except Exception:  # noqa: BLE001 -- the sink then parses every payload; read_all raises the bus log's error
        return None
    if bus is None or bus.path is None or not completeness.decide(bus, others_have_records=True).complete:
        return None
    return BusIds.of_ledger(bus.path)


def _metrics(cfg: Config, window: Window, evidence: Path, out: Path, progress: bool, prior: Prior) -> SourceResult:
    from . import metrics
    return metrics.read(cfg.metrics, window, cfg.aws)


# ------------------------------------------------------------------------------------------------------ describe

def _describe_dlq(c: Config) -> str:
    if c.dlq.uri:  # read instead of the queue when both are set (dlq.read)
        return f"{c.dlq.uri} (archive)"
    visibility = "sized to the queue" if c.dlq.visibility_timeout is None else f"{c.dlq.visibility_timeout}s"
    return f"{c.dlq.queue_url} (received, released after the read, never deleted; visibility {visibility})"


REGISTRY: tuple[Source, ...] = (
    Source("zendesk", "zendesk", required=True, may_be_empty=False, schema=ledger.SCHEMA,
           configured=lambda c: bool(c.zendesk.url), hint="set [zendesk] url or ZENDESK_URL",
           describe=lambda c: f"{c.zendesk.url}/api/v2/incremental/ticket_events.json "
                              f"({c.zendesk.requests_per_minute:g} requests/min)",
           reader=_zendesk, probe=later("check:probe_zendesk"), on_aws=False),
    Source("bus_log", "bus", required=True, may_be_empty=False, schema=ledger.SCHEMA,
           configured=lambda c: bool(c.bus_log.uri or c.bus_log.log_group),
           hint="set [bus_log] uri (or log_group with format = api)",
           describe=lambda c: f"{c.bus_log.uri or c.bus_log.log_group} ({c.bus_log.format})",
           reader=streamed("buslog", "bus_log"), probe=later("check:probe_bus_log")),
    Source("sink", "sink", required=True, may_be_empty=False, schema=ledger.SCHEMA,
           configured=lambda c: bool(c.sink.uri), hint="set [sink] uri",
           describe=lambda c: f"{c.sink.uri} ({c.sink.format}, id from "
                              f"{c.sink.id_path or 'column ' + c.sink.id_column})",
           reader=_sink, probe=later("check:probe_sink"), after="bus_log"),
    Source("dlq", "dlq", required=True, may_be_empty=True, schema=ledger.SCHEMA,
           configured=lambda c: bool(c.dlq.queue_url or c.dlq.uri), hint="set [dlq] queue_url or uri",
           describe=_describe_dlq, reader=streamed("dlq", "dlq"), probe=later("check:probe_dlq")),
    Source("metrics", "metrics", required=False, may_be_empty=True, schema=ledger.METRIC_SCHEMA,
           configured=lambda c: bool(c.metrics.rule or c.metrics.uri), hint="set [metrics] rule or uri",
           describe=lambda c: f"{c.metrics.uri}" if c.metrics.uri else f"AWS/Events rule {c.metrics.rule}",
           reader=_metrics, probe=later("check:probe_metrics")),
)

BY_NAME = {s.name: s for s in REGISTRY}


def source(name: str) -> Source:
    return BY_NAME[name]


def hops() -> tuple[str, ...]:
    """Every ledger view the queries read, in registry order."""
    return tuple(s.hop for s in REGISTRY)

