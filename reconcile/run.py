"""The reconciliation job: read every configured store, judge every event, write the outputs.

sources → evidence/<hop>.parquet → engine (queries/*.sql) → summary.json, gaps.csv, report.html → manifest.json
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import completeness, emission, interrupt, ledger, outputs, partition, recovered, report, runfolder, summary
from .config import Config, EngineConfig
from .engine import Engine, execute_file, query_path
from .errors import AccessDenied, ConfigError, ReadDeadline, SourceError
from .emission import from_evidence, load_model
from .ledger import SourceResult
from .runfolder import Rendering, RunFolder
from .sources import REGISTRY, buslog, dlq, hops, sink, zendesk
from .state import CARRIED_SCHEMA, State, as_carried, holders
from .window import Window, parse_duration

logger = logging.getLogger(__name__)

# How long before a run's read start an archive replay may still be landing copies in its stores.
REPLAY_REACH = timedelta(days=1)

REJECTS_IN_REPORT = 20


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
                  max_event_age=parse_duration(w.max_event_age), hop_a_grace=parse_duration(w.hop_a_grace),
                  carry_back=parse_duration(w.carry_back))


def read_all(cfg: Config, window: Window, evidence: Path, progress: bool = True) -> dict[str, SourceResult]:
    """Read every store at once. After SIGTERM/SIGINT the reads see interrupt.STOP and stop; they get
    interrupt.GRACE_S to release what they hold (DLQ messages) before Interrupted goes on up."""
    pool = ThreadPoolExecutor(max_workers=len(REGISTRY))  # one thread each: a read waiting on another never blocks it
    futures = {}
    try:
        # Submitting is inside the try: starting a thread can wait on the GIL while the first reads import their
        # libraries, and a signal then must still give the reads already started their time to stop and release.
        for s in REGISTRY:
            prior = futures[s.after].result if s.after else None
            futures[s.name] = pool.submit(s.read, cfg, window, evidence, progress, prior)
        _watch(cfg, futures, {s.name for s in REGISTRY if s.on_aws})
        results = {name: f.result() for name, f in futures.items()}
    finally:
        interrupt.shutdown(pool, futures.values())
    decided = completeness.decide_all(results)
    for name, r in decided.items():
        if results[name].complete and not r.complete:  # the rule in completeness.py, beyond what the source saw
            logger.warning("%s judged incomplete: %s", name, "; ".join(r.problems),
                           extra={"source": name, "complete": False})
    return decided


def _watch(cfg: Config, reads: dict[str, Future], on_aws: set[str]) -> None:
    """Wait for the reads. A store that refuses the credentials (AccessDenied, a required one's) ends them all at
    once: the run stops with exit 4 however long the others would take. The AWS reads end at [aws] read_deadline:
    past it every read is stopped as a signal stops it (interrupt.GRACE_S to stop and release what it holds) and
    ReadDeadline is raised, so the run has no result (exit 3). botocore's and pyarrow's timeouts are per request and
    per idle socket: a body trickled a byte at a time beats both."""
    end = time.monotonic() + parse_duration(cfg.aws.read_deadline).total_seconds()
    bounded = {f for name, f in reads.items() if name in on_aws}
    waiting = set(reads.values())
    while waiting:
        timeout = max(0.0, end - time.monotonic()) if waiting & bounded else None
        done, waiting = wait(waiting, timeout=timeout, return_when=FIRST_EXCEPTION)
        denied = next((f.exception() for f in done if isinstance(f.exception(), AccessDenied)), None)
        if denied is not None:
            interrupt.expire()
            raise denied
        if not done:
            break
    late = [name for name, f in reads.items() if f in bounded and not f.done()]
    if late:
        interrupt.expire()
        # a receive left waiting never releases what the read holds: a redrive or consumer started now misses those
        hidden = (" If the DLQ read does not stop in time to release the messages it received (said below), they stay "
                  "hidden from other consumers until their visibility timeout ends ([dlq] visibility_timeout; by "
                  "default a minute and a second per ten messages): a redrive started before then misses them."
                  if dlq.NAME in late and cfg.dlq.queue_url else "")
        raise ReadDeadline(f"Still reading {', '.join(late)} after [aws] read_deadline = {cfg.aws.read_deadline}: the "
                           f"reads were stopped and the run has no result. A store answering this slowly (a proxy "
                           f"or gateway trickling its bodies?) will not get faster: check the endpoint ([aws] "
                           f"endpoint_url, AWS_ENDPOINT_URL); raise read_deadline if the day is that big.{hidden}")


def write_evidence(results: dict[str, SourceResult], evidence: Path) -> dict[str, Path]:
    """Each store's ledger (Source.read has written it already; a result built in memory is written here) and its
    rejects in evidence/; returns the ledgers by hop."""
    paths = {}
    for spec in REGISTRY:
        paths[spec.hop] = spec.write_evidence(results[spec.name], evidence).path
    return paths


def params(cfg: Config, window: Window, *, unsettled: dict[str, str] | None, dlq_reach: datetime | None = None,
           dlq_in_part: str | None = None, bus_log_covered: datetime | None = None,
           unexpired_files: list[str] | None = None) -> dict[str, Any]:
    """The queries' parameters. `unsettled`: why losses at each hop may not settle (completeness.unsettled), or
    None. `dlq_reach`: up to when the DLQ read holds messages, when it is an archive (sources.dlq.reach);
    `dlq_in_part`: completeness.dlq_in_part; `bus_log_covered`: up to when the bus log holds what was exportable
    (sources.buslog.covered); `unexpired_files`: the sink's files outside the commit log no compaction can have
    expired (sources.sink.unexpired)."""
    return dict(window_start=window.start, window_end=window.end, as_of=window.as_of, horizon=window.horizon,
                hop_a_grace=window.hop_a_grace, tolerance_s=float(cfg.match.tolerance_seconds),
                both_families=bool(cfg.match.both_families),
                kinesis_target=cfg.dlq.kinesis_target, bucket_s=summary.bucket_seconds(window),
                sink_read_start=window.sink_read_start, bus_read_start=window.read_start,
                outside_log=cfg.sink.outside_log, dlq_reach=dlq_reach, dlq_in_part=dlq_in_part,
                bus_log_covered=bus_log_covered, unexpired_files=unexpired_files or [],
                stream_retention=parse_duration(cfg.sink.stream_retention),
                **completeness.held_params(unsettled))


def model_of(cfg: Config) -> pa.Table:
    """The emission model this run judges by: the shipped one, extended by [match] emission_model / kind_map."""
    return load_model(cfg.match.emission_model, cfg.match.kind_map)


def bind(e: Engine, cfg: Config, ledgers: dict[str, Path], carried: pa.Table | None = None,
         kind_map: pa.Table | None = None, recovery: dict[str, pa.Table] | None = None) -> None:
    """Bind what the queries read: the ledgers, the emission model, the excluded kinds, the carried events and the
    recoveries."""
    for hop in hops():
        e.bind_ledger(hop, ledgers.get(hop))
    e.bind_table("emission_model", from_evidence(kind_map) if kind_map is not None else model_of(cfg))
    e.bind_table("excluded_kinds", pa.table({"kind": pa.array(list(cfg.exclude.event_types), pa.string())}))
    e.bind_table("carried", as_carried(carried) if carried is not None else CARRIED_SCHEMA.empty_table())
    for name, table in (recovery or {}).items():  # recoveries, recovery_journal (reconcile/recovered.py)
        e.bind_table(name, table)


def judge(cfg: Config, window: Window, ledgers: dict[str, Path], carried: pa.Table | None = None,
          kind_map: pa.Table | None = None, engine: EngineConfig | None = None,
          recovery: dict[str, pa.Table] | None = None, *, unsettled: dict[str, str] | None,
          dlq_reach: datetime | None = None, dlq_in_part: str | None = None,
          bus_log_covered: datetime | None = None, unexpired_files: list[str] | None = None) -> Engine:
    """Bind and run every query. `unsettled`: completeness.unsettled of the run's sources; `dlq_reach`,
    `dlq_in_part`: the DLQ read's (sources.dlq.reach, completeness.dlq_in_part); `bus_log_covered`: the bus log
    read's (sources.buslog.covered); `unexpired_files`: the sink read's (sources.sink.unexpired)."""
    engine = engine or cfg.engine
    e = Engine.open(memory_limit=engine.memory_limit, temp_directory=engine.temp_directory, threads=engine.threads)
    try:
        bind(e, cfg, ledgers, carried, kind_map, recovery)
        k = partition.count(engine.partitions, ledgers, engine.memory_limit)
        if k > 1 and partition.replay_in_reach(e, window.sink_read_start - REPLAY_REACH):
            logger.info("judging in one pass, not %d partitions: an archive replay's copies are paired across ids", k)
            k = 1
        if k > 1 and partition.sequences_across_tickets(e):
            logger.info("judging in one pass, not %d partitions: a connector sequence's events name several tickets",
                        k)
            k = 1
        values = params(cfg, window, unsettled=unsettled, dlq_reach=dlq_reach, dlq_in_part=dlq_in_part,
                        bus_log_covered=bus_log_covered, unexpired_files=unexpired_files)
        if k == 1:
            e.run_all(values)
        else:
            partition.run_all(e, ledgers, values, k)
    except BaseException:
        e.close()
        raise
    return e


def sample_rejects(evidence: Path) -> list[dict]:
    rows: list[dict] = []
    for spec in REGISTRY:
        path = evidence / spec.rejects_file
        if path.exists():
            rows.extend(pq.read_table(path).slice(0, REJECTS_IN_REPORT).to_pylist())
    return rows


def execute(cfg: Config, window: Window, out_dir: Path, *, audience: str = "daily", progress: bool = True,
            generated_at: datetime | None = None, state: str | Path | None = None,
            location: str | None = None) -> Outcome:
    """Read, judge, write. With `state`, carry in earlier windows' pending events and record this run.

    `location`: where the run will be published (s3://...), recorded in the state instead of `out_dir`.
    """
    from .check import require_usable
    require_usable(cfg)  # before anything is written: a config mistake is a config error, not an empty report
    interrupt.begin()
    generated_at = generated_at or datetime.now(timezone.utc)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder: give a folder for the run's outputs.")
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out_dir)
    # The folder and the state are held before the folder is reset: a run that cannot have them (another run holds
    # one, the state cannot be reached) leaves the folder's finished run as it was.
    with folder.writing(), contextlib.ExitStack() as held:
        if (other := folder.window_key()) not in (None, window.key):
            # a re-run replaces its own window's run; another window's would be deleted, while a state may still
            # record it there (its trace, verify and recovery gone)
            beside = out_dir.parent / f"{window.start:%Y-%m-%d}"
            raise ConfigError(f"{out_dir} holds the finished run of another window ({other}); a run of {window.key} "
                              f"there would delete it. Give each window its own --out (the default is "
                              f"reconcile-out/<window>), e.g. --out {beside}.")
        if state is None and folder.recorded_in_a_state():
            # the state still names this folder for the window: its trace, recover and history would read a run
            # the state never recorded, and the recorded one would be gone
            raise ConfigError(f"{out_dir} holds a run a state recorded; a run without the state (--no-state) there "
                              f"would replace it while the state still names this folder. Run with the state, or "
                              f"give --out another folder.")
        st = held.enter_context(State.open(state, cfg.aws)) if state is not None else None
        try:
            folder.reset()  # inside: a reset that fails half-way (an unwritable folder) puts back what it set aside
            outcome = _execute(cfg, window, out_dir, folder.evidence, st, audience, progress, generated_at, location)
        except BaseException:
            folder.discard_unfinished()  # the finished run it was replacing comes back
            raise
        folder.drop_previous()
        return outcome


def _read_back(window: Window, carried: pa.Table) -> datetime | None:
    """Where the sink is read from for the carried events (Window.sink_from): the oldest one's time, when before the
    window's own read range and within [window] carry_back of it. One older still is not read back to (and so never
    settled as lost: queries/settlements.sql); nor does it widen every later run's read."""
    times = carried["event_time"]
    reach = pa.scalar(window.read_start - window.carry_back, times.type)
    oldest = pc.min(times.filter(pc.greater_equal(times, reach))).as_py()
    return oldest if oldest is not None and oldest < window.read_start else None


def with_state(window: Window, st: State | None) -> tuple[Window, pa.Table | None]:
    """The window as the state widens its sink read (recoveries sent for it: up to as_of; pending events carried
    in: back to the oldest, within carry_back), and the carried events. `run --dry-run` shows the same."""
    carried = st.carried(window) if st else None
    if st and st.sent_for_window(window.key):
        window = replace(window, sink_until=window.as_of)  # recoveries land after the read window: read up to now
        logger.info("a recovery sent events of this window: the sink is read up to %s", window.as_of)
    if carried is not None and carried.num_rows:
        window = replace(window, sink_from=_read_back(window, carried))
        logger.info("re-checking %d pending events carried in from earlier windows: the sink is read from %s",
                    carried.num_rows, window.sink_read_start)
    return window, carried


def _execute(cfg, window, out_dir, evidence, st: State | None, audience, progress, generated_at,
             location=None) -> Outcome:
    window, carried = with_state(window, st)
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
    folder = RunFolder(out_dir)
    generated_at = generated_at.replace(microsecond=generated_at.microsecond // 1000 * 1000)
    # The run renders from the same JSON-shaped facts `verify` reads back from the manifest, so both render alike.
    results = {k: replace(r, details=jsonable(r.details), fingerprints=jsonable(r.fingerprints))
               for k, r in results.items()}
    carried = carried if carried is not None else CARRIED_SCHEMA.empty_table()
    ledger.write_atomic(carried, folder.carried)
    kind_map = model_of(cfg)
    ledger.write_atomic(kind_map, folder.kind_map)
    # recovery (issue 16): the journal and plans the run judges by, saved so `verify` re-renders alike
    journal, plans = recovered.from_state(state) if state is not None else (recovered.empty(), {})
    recovered.write_evidence(journal, folder.evidence, plans)

    def record(s: dict, pending: pa.Table, settlements: pa.Table, unjudged: Callable[[pa.Table], pa.Table]
               ) -> list[dict]:
        keep_recorded(state, window, s)
        # A run whose Zendesk read was incomplete did not list every event: the pending ones of the window's previous
        # run it gave no verdict stay pending (they would never be settled otherwise).
        listed_all = next(i["complete"] for i in s["inputs"] if i["source"] == zendesk.NAME)
        kept = None if listed_all else unjudged(state.pending_of(window.key))
        if kept is not None and kept.num_rows:
            logger.warning("%d pending event(s) of this window's previous run are not in this run's incomplete "
                           "Zendesk read: kept pending for a later run to settle", kept.num_rows)
        state.record(window, s, location or out_dir.resolve(), pending, settlements, kept)  # found from any folder
        history = jsonable(state.history())
        changed = summary.fold_carried(s, settlements.to_pylist(), history, cfg, holders(carried))
        if changed:
            state.restate(window, s)
            history = jsonable(state.history())  # with the status the run now has (the figures folded are the same)
        outputs.write_json(folder.history, history)
        return history

    job = Rendering(cfg=cfg, window=window, evidence=folder.evidence, results=results, ledgers=ledgers,
                    audience=audience, generated_at=generated_at, carried=carried, kind_map=kind_map)
    s = render(job, out_dir, record=record if state is not None else None)
    manifest = runfolder.build_manifest(cfg, window, out_dir, results, generated_at, audience=audience)
    # The run's two commit points, together or not at all: the state records the run, the manifest marks the
    # folder complete. A signal before them leaves neither (execute removes the rest); during them, waits, and then
    # no longer stops the run: it has its result.
    with interrupt.deferred(then_stop=False), runfolder.committing(out_dir, manifest):
        if state is not None:
            state.commit()
    return Outcome(out_dir, s)


def keep_recorded(state: State, window: Window, s: dict[str, Any]) -> None:
    """A re-run that read a store only in part never replaces a recorded run of the window that read them whole:
    its losses, proven, would leave the history, and nothing would carry them (a Zendesk outage, a DLQ still held by a
    killed run). Raises SourceError (exit 3) before anything is recorded: execute puts the folder's run back."""
    recorded = state.run_of(window.key)
    if s["status"] != "incomplete" or recorded is None or recorded["status"] == "incomplete":
        return
    partial = ", ".join(i["source"] for i in s["inputs"] if not i["complete"])
    raise SourceError(
        f"This run read {partial} only in part, and the state records a run of {window.key} that read every store "
        f"whole (made {recorded['generated_at']:%Y-%m-%dT%H:%M:%S}Z, status {recorded['status']}, in "
        f"{recorded['out_dir']}): kept that run, its folder and the state as they were. Re-run when the stores answer "
        f"(see `reconcile check`); nothing of this run was recorded.")


def render(job: Rendering, out_dir: Path, record: Callable | None = None) -> dict[str, Any]:
    """Judge the ledgers and write runfolder.RENDERED into `out_dir`; returns the summary. Needs no state and no
    network: `reconcile verify` calls it on a run's evidence alone (runfolder.rendering_from), into a temp dir, and
    compares.

    `record(summary, pending, settlements, unjudged)` records the run in a state, folds the losses it settled into its
    status (summary.fold_carried) and returns the history to show (instead of `job.history`, a history saved by an
    earlier run: evidence/history.json). `unjudged(previous)`: which of those pending events this run gave no verdict.
    """
    cfg, window, results, history = job.cfg, job.window, job.results, job.history
    e = judge(cfg, window, job.ledgers, job.carried, job.kind_map, job.engine, recovered.read_evidence(job.evidence),
              unsettled=completeness.unsettled(results), dlq_reach=dlq.reach(results[dlq.NAME].details),
              dlq_in_part=completeness.dlq_in_part(results),
              bus_log_covered=buslog.covered(results[buslog.NAME].details, cfg.bus_log),
              unexpired_files=sink.unexpired(results[sink.NAME].details))
    try:
        # the Zendesk read as the other stores bear it out (the rule in completeness.py, known only once judged)
        listed = completeness.listing_short(results[zendesk.NAME], e.arrow("zendesk_shortfall").to_pylist()[0])
        if listed is not results[zendesk.NAME]:
            logger.warning("%s judged incomplete: %s", zendesk.NAME, listed.problems[-1],
                           extra={"source": zendesk.NAME, "complete": False})
            results = dict(results, **{zendesk.NAME: listed})
        outputs.write_parquet_sorted(e.batches("verdicts", outputs.VERDICTS_ORDER), out_dir / "verdicts.parquet")
        gaps = outputs.write_gaps_csv(e.batches("gaps", outputs.GAPS_ORDER), out_dir / "gaps.csv")
        s = summary.build(e.results(), [summary.input_entry(results[x.name]) for x in REGISTRY], cfg, window,
                          orphans=e.count("orphans"),
                          unlogged=e.count("verdicts", "unlogged_at_bus AND source_id = expected_id"),
                          gaps=gaps, generated_at=job.generated_at)
        # the report lists the first rows of each verdict group, losses first (all are in gaps.csv)
        gap_dicts, s["gaps"]["groups"] = report.gap_sample(e.batches("gaps", outputs.GAPS_ORDER))
        settlements = e.con.table("settlements").order(outputs.SETTLEMENTS_ORDER).to_arrow_table()
        # every carried event with what this run made of it (the summary and the report show counts and the first
        # rows): the losses it settles for earlier windows are listed here, and `reconcile recover` plans them
        outputs.write_parquet_sorted(settlements.to_reader(), out_dir / "settlements.parquet")
        s["carried"] = carried_summary(settlements)
        if record is not None:  # records the run and folds the losses it settled into its status
            pending = execute_file(e.con, query_path("export/pending"),
                                   {"tolerance_s": float(cfg.match.tolerance_seconds)}).order(outputs.VERDICTS_ORDER)
            history = record(s, pending.to_arrow_table(), settlements, lambda previous: _unjudged(e, previous))
        elif history is not None:  # a re-render (verify): the history the run recorded, folded in alike
            summary.fold_carried(s, settlements.to_pylist(), history, cfg,
                                 holders(job.carried) if job.carried is not None else None)
        if history is not None:
            s["history"] = history
    finally:
        e.close()
    outputs.write_json(out_dir / "summary.json", s)
    ctx = report.ReportContext(summary=s, gaps=gap_dicts, rejects=sample_rejects(job.evidence),
                               config=cfg.to_dict(), audience=job.audience)
    outputs.write_bytes(out_dir / "report.html", report.render(ctx).encode())
    return s


def _unjudged(e: Engine, previous: pa.Table) -> pa.Table:
    """Of `previous` (state.pending_of), the events this run gave no verdict."""
    e.con.register("previous", previous)
    try:
        return execute_file(e.con, query_path("export/unjudged"), {}).to_arrow_table()
    finally:
        e.con.unregister("previous")


def jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists, times as ISO text, keys sorted)."""
    return orjson.loads(outputs.dumps(value))


def carried_summary(settlements: pa.Table) -> dict[str, Any]:
    """What became of the pending events carried in from earlier windows: counts by verdict, and of those still
    pending, the losses held back per hop (`held`: by the hop of the loss each would be, queries/verdicts.csv)."""
    rows = settlements.to_pylist()
    hop_of = emission.loss_hops()
    by: dict[str, int] = {}
    held: dict[str, int] = {}
    for r in rows:
        by[r["verdict"]] = by.get(r["verdict"], 0) + 1
        if (hop := hop_of.get(r.get("would_be"))) is not None:
            held[hop] = held.get(hop, 0) + 1
    shown = [dict(r, event_time=summary.iso(r["event_time"])) for r in rows[:report.GAP_ROWS]]
    return {"events": len(rows), "by_verdict": dict(sorted(by.items())), "held": dict(sorted(held.items())),
            "events_shown": shown}
