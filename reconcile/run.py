"""The reconciliation job: read every configured store, judge every event, write the outputs.

sources → evidence/<hop>.parquet → engine (queries/*.sql) → summary.json, gaps.csv, report.html → manifest.json
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__, completeness, interrupt, ledger, outputs, recovered, report, resources, summary
from .config import Config, EngineConfig, redact
from .engine import Engine
from .emission import from_evidence, load_model
from .errors import ReconcileError
from .ledger import SourceResult
from .state import CARRIED_SCHEMA, State
from .window import Window, parse_duration

logger = logging.getLogger(__name__)

REJECTS_IN_REPORT = 20
# What finish() renders from the evidence; `reconcile verify` re-renders these and compares them byte for byte.
RENDERED = ("verdicts.parquet", "gaps.csv", "summary.json", "report.html")
# Evidence a re-render needs besides the ledgers (docs: `reconcile verify`).
CARRIED_FILE, HISTORY_FILE, KIND_MAP_FILE = "carried.parquet", "history.json", "kind_map.parquet"


@dataclass(frozen=True)
class SourceSpec:
    """A store the job reads: the ledger view it fills and how to tell whether it is configured."""

    name: str
    hop: str
    module: str
    configured: Callable[[Config], bool]
    hint: str


SOURCES = (
    SourceSpec("zendesk", "zendesk", "zendesk", lambda c: bool(c.zendesk.url), "set [zendesk] url or ZENDESK_URL"),
    SourceSpec("bus_log", "bus", "buslog", lambda c: bool(c.bus_log.uri or c.bus_log.log_group),
               "set [bus_log] uri (or log_group with format = api)"),
    SourceSpec("sink", "sink", "sink", lambda c: bool(c.sink.uri), "set [sink] uri"),
    SourceSpec("dlq", "dlq", "dlq", lambda c: bool(c.dlq.queue_url or c.dlq.uri), "set [dlq] queue_url or uri"),
    SourceSpec("metrics", "metrics", "metrics", lambda c: bool(c.metrics.rule or c.metrics.uri),
               "set [metrics] rule or uri"),
)


# Sources that take `out=` and stream their ledger into the evidence file (bounded memory on big days).
STREAMED = ("bus_log", "sink", "dlq")


@dataclass
class Outcome:
    out_dir: Path
    summary: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.summary["exit_code"]

    @property
    def report(self) -> Path:
        return self.out_dir / "report.html"


def window_from(cfg: Config, start, end, as_of: datetime | None = None) -> Window:
    w = cfg.window
    as_of = as_of or datetime.now(timezone.utc)
    # The manifest keeps times to the millisecond; a run judges at that instant so `verify` judges at the same one.
    as_of = as_of.replace(microsecond=as_of.microsecond // 1000 * 1000)
    return Window(start=start, end=end, as_of=as_of,
                  margin_before=parse_duration(w.margin_before), margin_after=parse_duration(w.margin_after),
                  max_event_age=parse_duration(w.max_event_age), hop_a_grace=parse_duration(w.hop_a_grace))


def read_source(spec: SourceSpec, cfg: Config, window: Window, evidence: Path, progress: bool) -> SourceResult:
    """Read one store and log, when it finishes, its counts and time (fields for `--log-format json`)."""
    t0 = time.monotonic()
    r = _read_source(spec, cfg, window, evidence, progress)
    seconds = round(time.monotonic() - t0, 3)
    logger.info("%s finished: %d records, %d rejected, %s, %.1f s", spec.name, r.records, r.rejected,
                "read whole" if r.complete else "read in part", seconds,
                extra={"source": spec.name, "records": r.records, "rejected": r.rejected, "complete": r.complete,
                       "seconds": seconds})
    return r


def _read_source(spec: SourceSpec, cfg: Config, window: Window, evidence: Path, progress: bool) -> SourceResult:
    """Read one store; a store that cannot be read at all becomes an incomplete input, never a crash."""
    if not spec.configured(cfg):
        complete = spec.name not in completeness.REQUIRED
        return SourceResult(spec.name, ledger.empty(), complete=complete,
                            problems=[f"not configured: {spec.hint}"])
    module = importlib.import_module(f"reconcile.sources.{spec.module}")
    try:
        if spec.name == "zendesk":
            pages = Path(cfg.zendesk.pages_dir) if cfg.zendesk.pages_dir else evidence / "zendesk-pages"
            # "now" for the API's one-minute cut-off is the time the run judges as of (default: the real now)
            return module.read(cfg.zendesk, window, pages, now=window.as_of, progress=progress,
                               edge=timedelta(seconds=cfg.match.tolerance_seconds))
        section = getattr(cfg, spec.name)
        if spec.name in STREAMED:
            # Written straight into the evidence file as it is read: a day's ledger is never held in memory whole.
            # `match`: the shape of EventBridge ids and Zendesk's `source` values, one rule for every AWS store.
            return module.read(section, window, cfg.aws, out=evidence / f"{spec.hop}.parquet", match=cfg.match)
        return module.read(section, window, cfg.aws)
    except ReconcileError as e:
        if getattr(e, "exit_code", 4) != 3:
            raise
        logger.warning("%s could not be read: %s", spec.name, e)
        return SourceResult(spec.name, ledger.empty(), complete=False, problems=[str(e)])


def read_all(cfg: Config, window: Window, evidence: Path, progress: bool = True) -> dict[str, SourceResult]:
    """Read every store at once. After SIGTERM/SIGINT the reads see interrupt.STOP and stop; they get
    interrupt.GRACE_S to release what they hold (DLQ messages) before Interrupted goes on up."""
    pool = ThreadPoolExecutor(max_workers=len(SOURCES))
    futures = {s.name: pool.submit(read_source, s, cfg, window, evidence, progress) for s in SOURCES}
    try:
        results = {name: f.result() for name, f in futures.items()}
    finally:
        interrupt.shutdown(pool, futures.values())
    decided = completeness.decide_all(results)
    for name, r in decided.items():
        if results[name].complete and not r.complete:  # the rule in completeness.py, beyond what the source saw
            logger.warning("%s judged incomplete: %s", name, "; ".join(r.problems),
                           extra={"source": name, "complete": False})
    return decided


def write_evidence(results: dict[str, SourceResult], evidence: Path) -> dict[str, Path]:
    paths = {}
    for spec in SOURCES:
        r = results[spec.name]
        paths[spec.hop] = write_ledger(spec, r, evidence)
        ledger.write_atomic(r.rejects, evidence / f"{spec.name}.rejects.parquet")
    return paths


def write_ledger(spec: SourceSpec, r: SourceResult, evidence: Path) -> Path:
    """evidence/<hop>.parquet: the ledger the source streamed there (STREAMED), or the one it kept in memory."""
    path = evidence / f"{spec.hop}.parquet"
    if r.ledger.num_columns == 0 and path.exists():
        return path
    table = r.ledger if spec.hop == "metrics" else ledger.conform(r.ledger)
    if spec.hop == "metrics" and table.num_rows == 0:
        table = ledger.METRIC_SCHEMA.empty_table()
    return ledger.write_atomic(table, path)


def params(cfg: Config, window: Window) -> dict[str, Any]:
    return dict(window_start=window.start, window_end=window.end, as_of=window.as_of, horizon=window.horizon,
                hop_a_grace=window.hop_a_grace, tolerance_s=float(cfg.match.tolerance_seconds),
                kinesis_target=cfg.dlq.kinesis_target,
                bucket_s=summary.bucket_seconds(window))


def model_of(cfg: Config) -> pa.Table:
    """The emission model this run judges by: the shipped one, extended by [match] emission_model / kind_map."""
    return load_model(cfg.match.emission_model, cfg.match.kind_map)


def judge(cfg: Config, window: Window, ledgers: dict[str, Path], carried: pa.Table | None = None,
          kind_map: pa.Table | None = None, engine: EngineConfig | None = None,
          recovery: dict[str, pa.Table] | None = None) -> Engine:
    engine = engine or cfg.engine
    e = Engine.open(memory_limit=engine.memory_limit, temp_directory=engine.temp_directory, threads=engine.threads)
    for hop in ("zendesk", "bus", "dlq", "sink", "metrics"):
        e.bind_ledger(hop, ledgers.get(hop))
    e.bind_table("emission_model", from_evidence(kind_map) if kind_map is not None else model_of(cfg))
    e.bind_table("excluded_kinds", pa.table({"kind": pa.array(list(cfg.exclude.event_types), pa.string())}))
    e.bind_table("carried", carried if carried is not None else CARRIED_SCHEMA.empty_table())
    for name, table in (recovery or {}).items():  # recoveries, recovery_journal (reconcile/recovered.py)
        e.bind_table(name, table)
    e.run_all(params(cfg, window))
    return e


def sample_rejects(evidence: Path) -> list[dict]:
    rows: list[dict] = []
    for spec in SOURCES:
        path = evidence / f"{spec.name}.rejects.parquet"
        if path.exists():
            rows.extend(pq.read_table(path).slice(0, REJECTS_IN_REPORT).to_pylist())
    return rows


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "reconcile": __version__}
    for pkg in ("duckdb", "pyarrow", "pandas", "boto3", "jinja2", "click", "orjson"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def execute(cfg: Config, window: Window, out_dir: Path, *, audience: str = "daily", progress: bool = True,
            generated_at: datetime | None = None, state: str | Path | None = None,
            location: str | None = None) -> Outcome:
    """Read, judge, write. With `state`, carry in earlier windows' pending events and record this run.

    `location`: where the run will be published (s3://...), recorded in the state instead of `out_dir`.
    """
    from .check import require_usable
    require_usable(cfg)  # before anything is written: a config mistake is a config error, not an empty report
    generated_at = generated_at or datetime.now(timezone.utc)
    out_dir.mkdir(parents=True, exist_ok=True)
    reset_outputs(out_dir)
    evidence = out_dir / "evidence"
    try:
        if state is None:
            return _execute(cfg, window, out_dir, evidence, None, audience, progress, generated_at, location)
        with State.open(state, cfg.aws) as st:
            return _execute(cfg, window, out_dir, evidence, st, audience, progress, generated_at, location)
    except BaseException:
        discard_unfinished(out_dir)
        raise


def _execute(cfg, window, out_dir, evidence, st: State | None, audience, progress, generated_at,
             location=None) -> Outcome:
    carried = st.carried(window) if st else None
    if carried is not None:
        logger.info("re-checking %d pending events carried in from earlier windows", carried.num_rows)
    logger.info("reading stores for %s", window.key)
    results = read_all(cfg, window, evidence, progress)
    ledgers = write_evidence(results, evidence)
    pa.default_memory_pool().release_unused()  # what the sources parsed is on disk now; hand memory to the engine
    return finish(cfg, window, out_dir, results, ledgers, audience=audience, generated_at=generated_at,
                  carried=carried, state=st, location=location)


def finish(cfg: Config, window: Window, out_dir: Path, results: dict[str, SourceResult],
           ledgers: dict[str, Path], *, audience: str, generated_at: datetime, carried: pa.Table | None = None,
           state: State | None = None, location: str | None = None) -> Outcome:
    """Save what a re-render needs beside the ledgers, render the outputs, record the run, write the manifest."""
    evidence = out_dir / "evidence"
    generated_at = generated_at.replace(microsecond=generated_at.microsecond // 1000 * 1000)
    # The run renders from the same JSON-shaped facts `verify` reads back from the manifest, so both render alike.
    results = {k: replace(r, details=jsonable(r.details), fingerprints=jsonable(r.fingerprints))
               for k, r in results.items()}
    carried = carried if carried is not None else CARRIED_SCHEMA.empty_table()
    ledger.write_atomic(carried, evidence / CARRIED_FILE)
    kind_map = model_of(cfg)
    ledger.write_atomic(kind_map, evidence / KIND_MAP_FILE)
    # recovery (issue 16): the journal and plans the run judges by, saved so `verify` re-renders alike
    journal, plans = recovered.from_state(state) if state is not None else (recovered.empty(), {})
    recovered.write_evidence(journal, evidence, plans)

    def record(s: dict, pending: pa.Table, settlements: pa.Table) -> list[dict]:
        state.record(window, s, location or out_dir.resolve(), pending, settlements)  # found from any folder
        history = jsonable(state.history())
        outputs.write_json(evidence / HISTORY_FILE, history)
        return history

    s = render(cfg, window, out_dir, evidence, results, ledgers, audience=audience, generated_at=generated_at,
               carried=carried, kind_map=kind_map, record=record if state is not None else None)
    manifest = build_manifest(cfg, window, out_dir, results, generated_at, audience=audience)
    # The run's two commit points, together or not at all: the state records the run, the manifest marks the
    # folder complete. A signal before them leaves neither (execute removes the rest); during them, waits.
    with interrupt.deferred():
        if state is not None:
            state.commit()
        outputs.write_json(out_dir / "manifest.json", manifest)
    return Outcome(out_dir, s)


def render(cfg: Config, window: Window, out_dir: Path, evidence: Path, results: dict[str, SourceResult],
           ledgers: dict[str, Path], *, audience: str, generated_at: datetime, carried: pa.Table | None = None,
           kind_map: pa.Table | None = None, record: Callable | None = None, history: list | None = None,
           engine: EngineConfig | None = None) -> dict[str, Any]:
    """Judge the ledgers and write RENDERED into `out_dir`; returns the summary. Needs no state and no network:
    `reconcile verify` calls it on a run's evidence alone, into a temp dir, and compares.

    `record(summary, pending, settlements)` records the run in a state and returns the history to show;
    `history` is a history saved by an earlier run (evidence/history.json).
    """
    e = judge(cfg, window, ledgers, carried, kind_map, engine, recovered.read_evidence(evidence))
    try:
        outputs.write_parquet_stream(e.batches("verdicts", outputs.VERDICTS_ORDER), out_dir / "verdicts.parquet")
        gaps = outputs.write_gaps_csv(e.batches("gaps", outputs.GAPS_ORDER), out_dir / "gaps.csv")
        s = summary.build(e.results(), [summary.input_entry(results[x.name]) for x in SOURCES], cfg, window,
                          orphans=e.count("orphans"),
                          unlogged=e.count("verdicts", "unlogged_at_bus"),
                          gaps=gaps, generated_at=generated_at)
        # the report lists the first rows of each verdict group, losses first (all are in gaps.csv)
        gap_dicts, s["gaps"]["groups"] = report.gap_sample(e.batches("gaps", outputs.GAPS_ORDER))
        settlements = e.con.table("settlements").order("window_key, event_time, source_id").to_arrow_table()
        s["carried"] = carried_summary(settlements)
        if record is not None:
            # One row per expected bus event (its carrier child), the unit run_hops counts: folded children settle
            # with their carrier, so history never adds per-child settlements to per-event figures.
            pending = e.con.table("verdicts").filter("verdict = 'pending' AND source_id = expected_id") \
                .order(outputs.VERDICTS_ORDER)
            history = record(s, pending.to_arrow_table(), settlements)
        if history is not None:
            s["history"] = history
    finally:
        e.close()
    outputs.write_json(out_dir / "summary.json", s)
    ctx = report.ReportContext(summary=s, gaps=gap_dicts, rejects=sample_rejects(evidence),
                               config=cfg.to_dict(), audience=audience)
    outputs.write_bytes(out_dir / "report.html", report.render(ctx).encode())
    return s


def jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists, times as ISO text, keys sorted)."""
    return orjson.loads(outputs.dumps(value))


def carried_summary(settlements: pa.Table) -> dict[str, Any]:
    """What became of the pending events carried in from earlier windows."""
    rows = settlements.to_pylist()
    by: dict[str, int] = {}
    for r in rows:
        by[r["verdict"]] = by.get(r["verdict"], 0) + 1
    shown = [dict(r, event_time=summary.iso(r["event_time"])) for r in rows[:report.GAP_ROWS]]
    return {"events": len(rows), "by_verdict": dict(sorted(by.items())), "events_shown": shown}


def digests(root: Path, pattern: str) -> dict[str, str]:
    """sha256 of every file under `root` matching `pattern`, subfolders included, by path relative to root."""
    return {p.relative_to(root).as_posix(): outputs.sha256_file(p) for p in sorted(root.rglob(pattern)) if p.is_file()}


def code_digests() -> dict[str, dict[str, str]]:
    """The tool's own SQL and templates as the manifest records them (resources.CODE says which files)."""
    out: dict[str, dict[str, str]] = {}
    for kind, root, patterns in resources.CODE:
        out[kind] = {}
        for pattern in patterns:
            out[kind] |= digests(root, pattern)
    return out


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own `manifest_sha256` field: a flipped byte anywhere in it shows."""
    return hashlib.sha256(outputs.dumps({k: v for k, v in manifest.items() if k != "manifest_sha256"})).hexdigest()


def build_manifest(cfg: Config, window: Window, out_dir: Path, results: dict[str, SourceResult],
                   generated_at: datetime, audience: str = "daily") -> dict[str, Any]:
    files = [p for p in out_dir.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".tmp")]
    manifest = {
        "tool": {"name": "reconcile", "version": __version__, "argv": sys.argv[1:]},
        "generated_at": summary.iso(generated_at),
        "window": {"start": summary.iso(window.start), "end": summary.iso(window.end),
                   "as_of": summary.iso(window.as_of),
                   **{f"{k}_s": getattr(window, k).total_seconds()
                      for k in ("margin_before", "margin_after", "max_event_age", "hop_a_grace")}},
        "audience": audience,
        "config": redact(cfg.to_dict()),
        "inputs": [{"source": r.name, "complete": r.complete, "records": r.records, "rejected": r.rejected,
                    "problems": r.problems, "fingerprints": r.fingerprints, "details": r.details}
                   for r in results.values()],
        **code_digests(),
        "versions": versions(),
        "files": outputs.file_digests(out_dir, files),
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    return manifest


def reset_outputs(out_dir: Path) -> None:
    """A re-run of a window replaces its outputs: remove what a previous run left (but keep saved API pages)."""
    for name in (*RENDERED, "manifest.json"):
        (out_dir / name).unlink(missing_ok=True)
    evidence = out_dir / "evidence"
    if evidence.exists():
        for p in evidence.glob("*.parquet"):
            p.unlink()
        (evidence / HISTORY_FILE).unlink(missing_ok=True)


def discard_unfinished(out_dir: Path) -> None:
    """A run that did not finish (a signal, an error) leaves nothing that looks like a result: no report, summary,
    exports or half-written file. Its evidence stays, for a look at what was read (without a manifest, `verify`
    refuses the folder). A manifest here means the run committed before the signal: it is kept whole."""
    if (out_dir / "manifest.json").exists():
        return
    for name in RENDERED:
        (out_dir / name).unlink(missing_ok=True)
    for p in out_dir.rglob("*.tmp"):
        p.unlink(missing_ok=True)
