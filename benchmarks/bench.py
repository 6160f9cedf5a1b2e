"""How fast is a day's reconciliation, and how does it compare with what a user would otherwise run?

    .venv/bin/python benchmarks/bench.py [--events 1000000] [--runs 3] [--reuse DIR] [--memory-limit 3GB]
    BENCH_EVENTS=10000000 make bench

1. Simulates N events straight into local files (vectorised; timed, not part of the target). The folder is reused
   by later runs (`--reuse DIR`, default bench-out/sim-<N>), so generation is paid once.
2. Reconciles those files, each run in a fresh child process:
   - `stages`: one stage after another, each with its wall time, CPU time (user+sys of the whole process, so
     DuckDB's and zlib's threads count) and peak RSS. Peak RSS per stage is exact: the kernel's high-water mark
     (VmHWM) is reset before each stage by writing 5 to /proc/self/clear_refs (Linux >= 4.0); where that is not
     allowed a 10 ms sampler of VmRSS stands in (the JSON says which).
   - `end_to_end`: the job as `reconcile run` does it: every source read concurrently (run.read_all's thread pool),
     ledgers streamed into evidence/, then run.write_evidence and run.finish (engine, exports, report, manifest).
   The Zendesk ledger is fed by a vectorised conversion of the simulator's stores/zendesk/ticket_events.parquet
   (DuckDB unnest), not over HTTP: the export API's rate limit (10 requests/min) would dominate any figure, and is
   excluded from the target. benchmarks/bench_zendesk.py measures the HTTP source on its own.
3. The engine (+ outputs) alone at K partitions ([engine] partitions, --partitions 1,auto,8), on the end-to-end
   run's ledgers, each setting in a fresh process, interleaved (benchmarks/scale_engine.py measure): wall, CPU, peak
   RSS, DuckDB spill peak and partition scratch peak (temp folder sampled every 0.1 s), and whether the verdicts and
   summary are identical to the first setting's.
4. References on the same files: (a) benchmarks/reference_pandas.py, the plain pandas script (at --pandas-events,
   default min(N, 1 M), scaled linearly to N when smaller, as the JSON says), and (b) `gzip -dc` over the bus log
   archive objects, one stream: the physical floor of reading that archive.
5. The Zendesk source over HTTP at the documented 10 requests/min, in accelerated simulated time
   (benchmarks/bench_zendesk.py, a child process, at --zendesk-events, default min(N, 1 M)): pages per simulated hour
   without a collector, the collector through the day, and the nightly run's Zendesk stage with its cache.
   --no-zendesk skips it; --zendesk-args passes options on (e.g. "--day-speed 7200 --cron 60").
6. Prints a table and writes bench-out/bench-<N>.json (medians over --runs, and every run).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import reconcile  # noqa: E402 -- before pyarrow, as `reconcile run`: its allocator settings (reconcile.ALLOCATOR)

DEFAULT_EVENTS = 1_000_000
ZENDESK_TARGET_EVENTS = 1_000_000  # issue 17's Zendesk target is for a 1 M-event day (bench_zendesk.py's default)
SIM_MARKER = "bench-sim.json"
STAGES = ("zendesk", "bus_log", "sink", "dlq", "metrics", "evidence", "engine", "outputs")


# --- measuring --------------------------------------------------------------------------------------------------------


def _proc_kb(path: str, field: str) -> int:
    """A `<field>: <n> kB` line of a /proc file, in bytes (0 when absent)."""
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _status(field: str) -> int:
    """A VmXXX line of /proc/self/status, in bytes."""
    return _proc_kb("/proc/self/status", field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Wall, CPU and peak RSS of consecutive stages of this process."""

    def __init__(self):
        self.exact_peak = _reset_peak()
        self.stages: dict[str, dict] = {}

    @contextmanager
    def stage(self, name: str):
        import pyarrow as pa
        gc.collect()
        pa.default_memory_pool().release_unused()
        rss0 = _status("VmRSS")
        sampler = None
        if not (self.exact_peak and _reset_peak()):
            sampler = _Sampler()
            sampler.start()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            peak = _status("VmHWM") if sampler is None else sampler.stop()
            self.stages[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                                 "cores_used": round(cpu / wall, 2) if wall else None,
                                 "rss_start_mb": _mb(rss0), "rss_peak_mb": _mb(peak),
                                 "rss_peak_delta_mb": _mb(peak - rss0)}


class _Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = _status("VmRSS")
        self._stop = threading.Event()

    def run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _status("VmRSS"))

    def stop(self) -> int:
        self._stop.set()
        self.join()
        return max(self.peak, _status("VmRSS"))


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def machine() -> dict:
    import duckdb
    import pyarrow as pa
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = _proc_kb("/proc/meminfo", "MemTotal")
    return {"cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "ram_gib": round(mem / 2**30, 1),
            "cpu_model": cpu, "python": platform.python_version(), "duckdb": duckdb.__version__,
            "pyarrow": pa.__version__, "allocator": {k: os.environ.get(k) for k in reconcile.ALLOCATOR},
            "platform": platform.platform(), "loadavg_1_5_15": list(os.getloadavg())}


# --- the simulated day ------------------------------------------------------------------------------------------------


def sim_params(events: int):
    from reconcile.simulate.generate import SimParams
    return SimParams(events=events, truth_json=False)


def ensure_simulation(events: int, folder: Path) -> dict:
    """Simulate `events` into `folder` unless a simulation of that size is already there; returns its marker."""
    marker = folder / SIM_MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("events") == events:
            info["reused"] = True
            return info
    print(f"simulating {events:,} events into {folder} (once; later runs reuse it) ...", file=sys.stderr)
    info = _child(["_generate", str(events), str(folder)])
    marker.write_text(json.dumps(info, indent=1))
    info["reused"] = False
    return info


def _generate(events: int, folder: Path) -> dict:
    from reconcile.simulate.generate import simulate
    from reconcile.simulate.stores import write_stores
    t0, c0 = time.perf_counter(), time.process_time()
    sim = simulate(sim_params(events))
    t1 = time.perf_counter()
    written = write_stores(sim, folder)
    t2 = time.perf_counter()
    return {"events": events, "simulate_s": round(t1 - t0, 2), "write_stores_s": round(t2 - t1, 2),
            "cpu_s": round(time.process_time() - c0, 2), "peak_rss_mb": _mb(_status("VmHWM")),
            "truth_events": written["truth"]["events"], "bus_objects": len(written["logs"]["objects"]),
            "sink_files": len(written["sink"]["files"]), "dlq_messages": written["dlq"]["messages"],
            "stores_bytes": _du(folder / "stores")}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_config(stores: Path, events: int, engine: dict):
    from reconcile import config
    p = sim_params(events)
    return config.build(None, {
        "bus_log": {"uri": str(stores / "logs-archive" / "exports"), "format": "cwl-export"},
        "sink": {"uri": str(stores / "spark-output" / "events"), "format": "parquet"},
        "dlq": {"uri": str(stores / "dlq-archive")},
        "metrics": {"uri": str(stores / "metrics" / "get-metric-data.json")},
        "window": {"max_event_age": f"{p.max_event_age.total_seconds():.0f}s",
                   "margin_before": f"{p.margin_before.total_seconds():.0f}s",
                   "hop_a_grace": f"{p.hop_a_grace.total_seconds():.0f}s"},
        "exclude": {"event_types": list(p.excluded_kinds)},
        "engine": {k: v for k, v in engine.items() if v is not None},
    }, environ={})


def bench_window(cfg, events: int):
    from reconcile.run import window_from
    p = sim_params(events)
    start = datetime.strptime(p.day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    end = start + timedelta(days=1)
    return window_from(cfg, start, end, as_of=end + p.as_of_after_end)


# --- the Zendesk ledger without HTTP ----------------------------------------------------------------------------------

# One ledger row per child event of an audit created in the window, as reconcile.sources.zendesk writes it (kind
# `Change:<field>` for field changes, time = the audit's created_at, ref = file#audit=<id>), by DuckDB's unnest.
_ZENDESK_SQL = """
SELECT 'zendesk' AS hop, CAST(c.id AS VARCHAR) AS source_id, CAST(c.id AS VARCHAR) AS zendesk_key, ticket_id,
       CASE WHEN c.event_type = 'Change' AND coalesce(c.field_name, '') <> '' THEN 'Change:' || c.field_name
            ELSE c.event_type END AS event_type,
       'api' AS family, created AS event_time, created AS observed_at,
       'ticket_events.parquet#audit=' || CAST(id AS VARCHAR) AS source_ref, id AS audit_id
FROM (SELECT id, ticket_id, CAST(created_at AS TIMESTAMPTZ) AS created, unnest(child_events) AS c FROM audits)
WHERE created >= $start AND created < $end
"""


def read_zendesk_file(stores: Path, window, out: Path):
    from reconcile.ledger import SourceResult
    from reconcile.sources import events
    path = stores / "zendesk" / "ticket_events.parquet"
    con = events.connect()
    sink = events.LedgerOut(out)
    try:
        con.read_parquet(str(path)).create_view("audits")
        reader = con.sql(_ZENDESK_SQL, params={"start": window.start, "end": window.end}).to_arrow_reader(500_000)
        for batch in reader:
            sink.add(_as_table(batch))
        led = sink.result()
    finally:
        con.close()
    return SourceResult("zendesk", led, fingerprints=[{"key": str(path), "size": path.stat().st_size}],
                        details={"mode": "benchmark: ticket_events.parquet read directly (no HTTP)",
                                 "records": sink.rows})


def _as_table(batch):
    import pyarrow as pa
    return pa.Table.from_batches([batch])


# --- one reconciliation (child process) -------------------------------------------------------------------------------


def _reconcile(mode: str, sim: Path, events: int, out: Path, engine: dict) -> dict:
    import pyarrow as pa

    from reconcile import run
    from reconcile.runfolder import RunFolder
    from reconcile.sources import bus_ids, buslog, dlq, metrics, sink, source
    stores = sim / "stores"
    cfg = bench_config(stores, events, engine)
    window = bench_window(cfg, events)
    out.mkdir(parents=True, exist_ok=True)
    RunFolder(out).reset()
    evidence = out / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    # the bus log's result, for the sink (as run.read_all hands it over: Source.after); `readers` starts the bus log
    # before the sink, in both modes, or the sink would wait for ever
    bus_done: Future = Future()

    def bus_log():
        try:
            bus_done.set_result(source("bus_log").keep(buslog.read(cfg.bus_log, window, cfg.aws,
                                                                  out=evidence / "bus.parquet"), evidence))
        except BaseException as e:
            bus_done.set_exception(e)
        return bus_done.result()

    readers = {
        "zendesk": lambda: read_zendesk_file(stores, window, evidence / "zendesk.parquet"),
        "bus_log": bus_log,
        "sink": lambda: sink.read(cfg.sink, window, cfg.aws, out=evidence / "sink.parquet",
                                  bus_ids=lambda: bus_ids(bus_done.result)),
        "dlq": lambda: dlq.read(cfg.dlq, window, cfg.aws, out=evidence / "dlq.parquet"),
        "metrics": lambda: metrics.read(cfg.metrics, window, cfg.aws),
    }
    meter = Meter()
    judge_times: list[tuple[float, float]] = []
    real_judge = run.judge

    def timed_judge(*a, **k):  # render() calls run.judge: time the engine apart from the outputs
        t0, c0 = time.perf_counter(), time.process_time()
        e = real_judge(*a, **k)
        judge_times.append((time.perf_counter() - t0, time.process_time() - c0))
        return e

    run.judge = timed_judge
    generated_at = datetime.now(timezone.utc)
    if mode == "stages":
        results = {}
        for name, read in readers.items():
            with meter.stage(name):
                results[name] = read()
        with meter.stage("evidence"):
            ledgers = run.write_evidence(results, evidence)
        with meter.stage("engine+outputs"):
            outcome = run.finish(cfg, window, out, results, ledgers, audience="daily", generated_at=generated_at)
        both = meter.stages.pop("engine+outputs")
        jw, jc = judge_times[0]
        meter.stages["engine"] = {"wall_s": round(jw, 3), "cpu_s": round(jc, 3),
                                  "cores_used": round(jc / jw, 2), "rss_peak_mb": both["rss_peak_mb"],
                                  "rss_start_mb": both["rss_start_mb"], "note": "peak RSS of engine + outputs"}
        ow, oc = both["wall_s"] - jw, both["cpu_s"] - jc
        meter.stages["outputs"] = {"wall_s": round(ow, 3), "cpu_s": round(oc, 3),
                                   "cores_used": round(oc / ow, 2) if ow > 0 else None,
                                   "rss_peak_mb": both["rss_peak_mb"], "rss_start_mb": both["rss_start_mb"],
                                   "note": "peak RSS of engine + outputs"}
        record = {"stages": meter.stages}
    else:
        from concurrent.futures import ThreadPoolExecutor
        with meter.stage("end_to_end"):
            with ThreadPoolExecutor(len(readers)) as pool:  # as run.read_all: every source at once
                futures = {name: pool.submit(read) for name, read in readers.items()}
                results = {name: f.result() for name, f in futures.items()}
            t_read = time.perf_counter()
            ledgers = run.write_evidence(results, evidence)
            pa.default_memory_pool().release_unused()  # as run._execute does before the engine
            outcome = run.finish(cfg, window, out, results, ledgers, audience="daily", generated_at=generated_at)
        e2e = meter.stages["end_to_end"]
        e2e["read_all_wall_s"] = round(e2e["wall_s"] - (time.perf_counter() - t_read), 3)
        e2e["engine_wall_s"] = round(judge_times[0][0], 3)
        record = {"end_to_end": e2e}
    s = outcome.summary
    record.update(exit_code=outcome.exit_code, status=s.get("status"), peak_rss_exact=meter.exact_peak,
                  records={name: r.records for name, r in results.items()},
                  verdicts=s.get("verdicts") or s.get("verdict_counts"), truth=_truth_check(out, sim))
    return record


def _truth_check(run_dir: Path, sim: Path) -> dict:
    """How many events got the verdict the simulator recorded (outside the timed stages)."""
    import duckdb
    con = duckdb.connect()
    con.read_parquet(str(run_dir / "verdicts.parquet")).create_view("found")
    con.read_parquet(str(sim / "truth.parquet")).create_view("truth")
    total, agree = con.sql("SELECT count(*), count(*) FILTER (WHERE f.verdict = t.verdict) "
                           "FROM truth t LEFT JOIN found f USING (source_id)").fetchall()[0]
    con.close()
    return {"events": total, "agree": agree}


# --- references -------------------------------------------------------------------------------------------------------


def bus_objects(stores: Path) -> list[Path]:
    from reconcile.sources.buslog import WRITE_TEST
    return sorted(p for p in (stores / "logs-archive" / "exports").rglob("*.gz") if p.name != WRITE_TEST)


def gzip_floor(stores: Path) -> dict:
    """`gzip -dc` over every bus log object, one stream (what reading the archive costs at least)."""
    objs = bus_objects(stores)
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["gzip", "-dc", *map(str, objs)], stdout=null, check=True)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "compressed_bytes": sum(p.stat().st_size for p in objs)}


def uncompressed_bytes(stores: Path) -> int:
    import zlib
    n = 0
    for p in bus_objects(stores):
        d = zlib.decompressobj(wbits=31)
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                n += len(d.decompress(chunk))
    return n


# --- orchestration ----------------------------------------------------------------------------------------------------


def _child(args: list[str]) -> dict:
    """Run this script's hidden sub-command in a fresh process; it prints one JSON object last."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step {args[0]} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _median_stages(runs: list[dict]) -> dict:
    out = {}
    for name in runs[0]["stages"]:
        keys = [k for k, v in runs[0]["stages"][name].items() if isinstance(v, (int, float))]
        out[name] = {k: _median([r["stages"][name].get(k) for r in runs]) for k in keys}
    return out


def _run_set(sim: Path, events: int, runs: int, out: Path, engine: dict, modes=("stages", "end_to_end")) -> dict:
    res: dict = {m: [] for m in modes}
    eng = json.dumps(engine)
    for i in range(runs):
        for mode in modes:
            print(f"  run {i + 1}/{runs}: {mode} ({events:,} events) ...", file=sys.stderr)
            folder = out / f"run-{mode}-{events}"
            res[mode].append(_child(["_reconcile", mode, str(sim), str(events), str(folder), eng]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", DEFAULT_EVENTS)))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    ap.add_argument("--reuse", type=Path, help="simulation folder (default bench-out/sim-<N>); made if missing")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--pandas-events", type=int, help="size the pandas reference runs at (default min(N, 1M))")
    ap.add_argument("--pandas-runs", type=int, default=1)
    ap.add_argument("--pandas-reuse", type=Path, help="simulation folder for the pandas size (default "
                    "bench-out/sim-<M>); made if missing")
    ap.add_argument("--no-pandas", action="store_true")
    ap.add_argument("--zendesk-events", type=int, help="size of the Zendesk HTTP day (default min(N, 1M))")
    ap.add_argument("--zendesk-args", default="", help="more options for benchmarks/bench_zendesk.py, one string")
    ap.add_argument("--no-zendesk", action="store_true", help="skip the Zendesk source over HTTP (about 5 minutes)")
    ap.add_argument("--memory-limit", default=None, help="[engine] memory_limit (default: the config's 3GB)")
    ap.add_argument("--temp-directory", default=None, help="[engine] temp_directory: where DuckDB spills")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--partitions", default="1,auto,8",
                    help="[engine] partitions settings the engine is measured at on the end-to-end run's ledgers")
    a = ap.parse_args()

    n = a.events
    a.out.mkdir(parents=True, exist_ok=True)
    engine = {"memory_limit": a.memory_limit, "temp_directory": a.temp_directory or str(a.out / "spill"),
              "threads": a.threads}
    report: dict = {"events": n, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine(), "engine": engine, "command": " ".join(["benchmarks/bench.py", *sys.argv[1:]])}
    sim = a.reuse or a.out / f"sim-{n}"
    report["generation"] = ensure_simulation(n, sim)
    stores = sim / "stores"

    runs = _run_set(sim, n, a.runs, a.out, engine)
    report["runs"] = runs
    e2e = [r["end_to_end"] for r in runs["end_to_end"]]
    report["median"] = {
        "stages": _median_stages(runs["stages"]),
        "end_to_end": {k: _median([r[k] for r in e2e]) for k in ("wall_s", "cpu_s", "cores_used", "rss_peak_mb",
                                                                   "read_all_wall_s", "engine_wall_s")},
    }
    report["truth_check"] = runs["end_to_end"][-1]["truth"]

    # the engine (+ outputs) alone at K partitions, each setting in a fresh process, A/B interleaved
    import scale_engine
    report["engine_partitions"] = scale_engine.measure(
        a.out / f"run-end_to_end-{n}", a.out / "engine-partitions", 1, a.memory_limit or "3GB",
        a.partitions.split(","), a.runs)

    # (b) the physical floor of the bus archive
    print("  reference: gzip -dc over the bus log archive ...", file=sys.stderr)
    floors = [gzip_floor(stores) for _ in range(a.runs)]
    raw = uncompressed_bytes(stores)
    gz_wall = _median([f["wall_s"] for f in floors])
    bus_wall = report["median"]["stages"]["bus_log"]["wall_s"]
    report["bus_archive"] = {
        "objects": len(bus_objects(stores)), "compressed_bytes": floors[0]["compressed_bytes"],
        "uncompressed_bytes": raw, "gzip_dc_wall_s": gz_wall, "gzip_dc_runs_s": [f["wall_s"] for f in floors],
        "gzip_dc_mb_s": round(raw / 2**20 / gz_wall, 1), "reconcile_parse_wall_s": bus_wall,
        "reconcile_parse_mb_s": round(raw / 2**20 / bus_wall, 1),
        "ratio_vs_gzip_dc": round(gz_wall / bus_wall, 2), "target_ratio": 1.5,
        "note": "reconcile_parse = the bus_log stage (list, read, gunzip, split, parse JSON, write the ledger)",
    }

    # (a) the pandas script a user would otherwise write
    if not a.no_pandas:
        m = a.pandas_events or min(n, DEFAULT_EVENTS)
        psim = sim if m == n else (a.pandas_reuse or a.out / f"sim-{m}")
        if m != n:
            ensure_simulation(m, psim)
        pruns = []
        for i in range(a.pandas_runs):
            print(f"  reference: pandas script ({m:,} events), run {i + 1}/{a.pandas_runs} ...", file=sys.stderr)
            pruns.append(_child(["_pandas", str(psim)]))
        p_wall = _median([r["wall_s"] for r in pruns])
        ours_same = e2e if m == n else [r["end_to_end"] for r in
                                        _run_set(psim, m, a.runs, a.out, engine, ("end_to_end",))["end_to_end"]]
        ours_wall_m = _median([r["wall_s"] for r in ours_same])
        report["pandas"] = {
            "events": m, "runs": pruns, "wall_s": p_wall, "cpu_s": _median([r["cpu_s"] for r in pruns]),
            "rss_peak_mb": _median([r["rss_peak_mb"] for r in pruns]),
            "reconcile_wall_s_same_size": ours_wall_m, "speedup_same_size": round(p_wall / ours_wall_m, 1),
            "extrapolated_to_n": m != n, "pandas_wall_s_at_n": round(p_wall * n / m, 1),
            "speedup_at_n": round(p_wall * n / m / report["median"]["end_to_end"]["wall_s"], 1),
            "target_speedup": 10,
            "note": "pandas_wall_s_at_n scales the pandas time linearly from its size to N when they differ",
        }
    if not a.no_zendesk:
        report["zendesk"] = zendesk_http(a.zendesk_events or min(n, ZENDESK_TARGET_EVENTS), a.out, a.zendesk_args)
    report["targets"] = _targets(report)
    report["machine"]["loadavg_after"] = list(os.getloadavg())

    path = a.out / f"bench-{n}.json"
    path.write_text(json.dumps(report, indent=1))
    _print(report)
    print(path)


def zendesk_http(events: int, out: Path, extra: str) -> dict:
    """benchmarks/bench_zendesk.py's day at the documented budget (10 requests/min), in a child process; its
    figures as it writes them with --json."""
    print(f"  Zendesk over HTTP at 10 requests/min, accelerated ({events:,} events) ...", file=sys.stderr)
    path = out / f"zendesk-{events}.json"
    path.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_zendesk.py"), "--events", str(events),
                           "--budget", "10", "--json", str(path), *shlex.split(extra)], stdout=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks/bench_zendesk.py failed (exit {proc.returncode})")
    return json.loads(path.read_text())


def _targets(r: dict) -> dict:
    """Issue 17's targets: 10 M events end to end <= 90 s (required; the goal is 60 s) in <= 4 GiB, the bus archive
    parse >= 1.5x single-stream `gzip -dc`, >= 10x the pandas script at the same size (1 M events), and the nightly
    run's Zendesk stage <= 60 s from the collector's cache (a 1 M-event day)."""
    e = r["median"]["end_to_end"]
    t = {"end_to_end_wall_s": {"value": e["wall_s"], "target": 90, "goal": 60, "better": "low",
                               "scaled_to_10M": round(e["wall_s"] * 1e7 / r["events"], 1)},
         "peak_rss_gib": {"value": round(e["rss_peak_mb"] / 1024, 2), "target": 4, "better": "low"},
         "bus_vs_gzip_dc": {"value": r["bus_archive"]["ratio_vs_gzip_dc"], "target": 1.5, "better": "high"}}
    if "pandas" in r:
        t["speedup_vs_pandas"] = {"value": r["pandas"]["speedup_same_size"], "target": 10, "better": "high",
                                  "at_events": r["pandas"]["events"]}
    if "zendesk" in r:
        t["zendesk_with_collector_s"] = {"value": round(r["zendesk"]["nightly_with_cache"]["wall_s"], 1),
                                         "target": 60, "better": "low", "at_events": r["zendesk"]["events"]}
    for v in t.values():
        v["met"] = v["value"] <= v["target"] if v["better"] == "low" else v["value"] >= v["target"]
        if "goal" in v:
            v["goal_met"] = v["value"] <= v["goal"]
    if r["events"] < 10_000_000:
        # The wall-time and memory targets are for a 10 M-event day: a smaller run cannot meet them, only hint.
        t["end_to_end_wall_s"]["met"] = t["end_to_end_wall_s"]["goal_met"] = None
        t["peak_rss_gib"]["met"] = None
        t["end_to_end_wall_s"]["judged_at"] = t["peak_rss_gib"]["judged_at"] = "10 M events"
        t["note"] = "end_to_end_wall_s and peak_rss_gib targets are for 10 M events; run BENCH_EVENTS=10000000"
    if "zendesk_with_collector_s" in t and r["zendesk"]["events"] != ZENDESK_TARGET_EVENTS:
        t["zendesk_with_collector_s"]["met"] = None
        t["zendesk_with_collector_s"]["judged_at"] = "a 1 M-event day"
    return t


def _print(r: dict) -> None:
    m = r["machine"]
    print(f"\nreconcile benchmark: {r['events']:,} events, median of {len(r['runs']['end_to_end'])} runs")
    print(f"machine: {m['cores']} cores, {m['ram_gib']} GiB, {m['cpu_model']}; python {m['python']}, duckdb "
          f"{m['duckdb']}, pyarrow {m['pyarrow']}; load {m['loadavg_1_5_15'][0]:.2f} -> {m['loadavg_after'][0]:.2f}")
    g = r["generation"]
    print(f"generation (not part of the target): simulate {g['simulate_s']} s + write {g['write_stores_s']} s"
          f"{' (reused)' if g.get('reused') else ''}")
    print(f"\n{'stage':<10} {'wall s':>8} {'cpu s':>8} {'cores':>6} {'peak RSS MiB':>13}")
    for name, s in r["median"]["stages"].items():
        print(f"{name:<10} {s['wall_s']:>8.2f} {s['cpu_s']:>8.2f} {s.get('cores_used') or 0:>6.2f} "
              f"{s['rss_peak_mb']:>13,.0f}")
    e = r["median"]["end_to_end"]
    print(f"{'end to end':<10} {e['wall_s']:>8.2f} {e['cpu_s']:>8.2f} {e['cores_used']:>6.2f} {e['rss_peak_mb']:>13,.0f}"
          f"   (sources concurrently {e['read_all_wall_s']} s, engine {e['engine_wall_s']} s)")
    k = r["engine_partitions"]
    print(f"\nengine + outputs at K partitions (memory_limit {k['memory_limit']}; median of {k['runs']} runs):")
    print(f"{'partitions':<10} {'K':>4} {'wall s':>8} {'cpu s':>8} {'peak RSS GiB':>13} {'spill MiB':>10} "
          f"{'scratch MiB':>12} {'same results':>13}")
    for p, m in k["median"].items():
        same = m["same_as_" + k["settings"][0]]["identical"]
        print(f"{p:<10} {m['partitions_used']:>4} {m['wall_s']:>8.1f} {m['cpu_s']:>8.1f} {m['rss_peak_gib']:>13.2f} "
              f"{m['spill_peak_bytes'] / 2**20:>10,.0f} {m['scratch_peak_bytes'] / 2**20:>12,.0f} {str(same):>13}")
    b = r["bus_archive"]
    print(f"\nbus archive: {b['uncompressed_bytes'] / 2**20:,.0f} MiB of text in {b['objects']} objects; gzip -dc "
          f"{b['gzip_dc_wall_s']} s ({b['gzip_dc_mb_s']} MiB/s), reconcile {b['reconcile_parse_wall_s']} s "
          f"({b['reconcile_parse_mb_s']} MiB/s): {b['ratio_vs_gzip_dc']}x gzip -dc")
    if "pandas" in r:
        p = r["pandas"]
        print(f"pandas script: {p['wall_s']} s at {p['events']:,} events (reconcile {p['reconcile_wall_s_same_size']} s:"
              f" {p['speedup_same_size']}x); at {r['events']:,}: {p['speedup_at_n']}x"
              f"{' (pandas scaled linearly)' if p['extrapolated_to_n'] else ''}")
    if "pandas" in r and r["pandas"]["extrapolated_to_n"]:
        print(f"  (pandas peak RSS {r['pandas']['rss_peak_mb']:,.0f} MiB at {r['pandas']['events']:,} events: at "
              f"{r['events']:,} it would need ~{r['pandas']['rss_peak_mb'] * r['events'] / r['pandas']['events'] / 1024:,.0f} GiB)")
    if "zendesk" in r:
        z = r["zendesk"]
        for w in z["without_collector"]:
            rate = "?" if w["pages_per_sim_hour"] is None else f"{w['pages_per_sim_hour']:,.0f}"
            print(f"Zendesk over HTTP, {z['events']:,} events, {w['budget']:g} requests/min, no collector: "
                  f"{w['pages']} pages, {rate} pages per simulated hour, {w['sim_hours'] * 60:,.1f} simulated minutes")
        c, n = z["collector"], z["nightly_with_cache"]
        print(f"  collector through the day (cron every {z['cron_min']:g} simulated min): {c['pages']} pages with "
              f"{c['requests']} requests, {c['rate_limited']} x 429, at most {c['worst_behind_s'] / 60:.1f} simulated "
              f"min behind; the nightly run with its cache: {n['wall_s']:.1f} s wall, {n['cpu_s']:.1f} CPU-s, "
              f"{n['requests']} requests, same events: {n['same_events']}")
    print(f"truth check: {r['truth_check']['agree']:,} of {r['truth_check']['events']:,} verdicts as simulated")
    for k, v in r["targets"].items():
        if k == "note":
            print(f"note: {v}")
            continue
        scaled = f", {v['scaled_to_10M']} s scaled linearly to 10 M" if "scaled_to_10M" in v and r["events"] != 10**7 else ""
        verdict = (f"not judged (the target is for {v['judged_at']})" if v["met"] is None
                   else "met" if v["met"] else "MISSED")
        goal = ""
        if v.get("goal_met") is not None:
            goal = f"; goal {v['goal']}: {'met' if v['goal_met'] else 'missed'}"
        print(f"target {k}: {v['value']} (target {v['target']}{scaled}) {verdict}{goal}")


def _hidden() -> bool:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "_generate":
        print(json.dumps(_generate(int(sys.argv[2]), Path(sys.argv[3]))))
    elif cmd == "_reconcile":
        mode, sim, events, out, engine = sys.argv[2:7]
        print(json.dumps(_reconcile(mode, Path(sim), int(events), Path(out), json.loads(engine)), default=str))
    elif cmd == "_pandas":
        from benchmarks import reference_pandas
        print(json.dumps(reference_pandas.measure(Path(sys.argv[2]) / "stores")))
    else:
        return False
    return True


if __name__ == "__main__":
    if not _hidden():
        main()
