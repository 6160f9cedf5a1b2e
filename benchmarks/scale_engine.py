"""Does the engine finish a day K times bigger than one we can simulate, within its memory limit and without spilling?

    .venv/bin/python benchmarks/scale_engine.py RUN_DIR --times 10 [--partitions 1,auto] [--memory-limit 3GB]
                                                [--runs 1] [--work DIR]

The simulator needs ~8 GB of RAM at 10 M events, so 100 M events cannot be simulated on a 24 GiB machine. The
sources stream their ledgers object by object (bounded memory whatever the day's size); the engine and the
exports are what could run out. This script takes the ledgers of a finished run (RUN_DIR/evidence, e.g. a 10 M
bench run), writes K disjoint copies of the day into one set of ledgers (DuckDB, no Python loop: every id, ticket
and audit shifted per copy, so copies never link to each other; --times 1 judges the evidence as it is), then judges
them and writes the outputs in a fresh process per setting of [engine] partitions (--partitions, A/B interleaved
--runs times), as `reconcile run` does after reading (run.render), with DuckDB's memory_limit and spill folder.

It checks its own result: every verdict count must be exactly K times the original run's (summary.json), and every
setting's verdicts.parquet must hold the same rows as the first setting's (EXCEPT ALL both ways), its summary the same
figures. Prints and writes JSON: per setting, wall, CPU, peak RSS (the kernel's VmHWM), partitions used, spill peak
(DuckDB's temp files, sampled every 0.1 s), partition scratch peak, disk used and the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
__import__("reconcile")  # before pyarrow, as `reconcile run`: its allocator settings (reconcile.ALLOCATOR)

# Per copy k: numeric ids move by k x a power of ten above any real value, text ids get a suffix, and EventBridge ids
# (UUIDs in the ledgers) have k added to their first 32 bits: still UUIDs, distinct per copy, copy 0 unchanged.
_SHIFT = {
    "source_id": "CASE WHEN try_cast(source_id AS BIGINT) IS NOT NULL "
                 "THEN (source_id::BIGINT + k * 100000000000000)::VARCHAR ELSE source_id || '~' || k END",
    "zendesk_key": "CASE WHEN try_cast(zendesk_key AS BIGINT) IS NOT NULL "
                   "THEN (zendesk_key::BIGINT + k * 100000000000000)::VARCHAR ELSE zendesk_key || '~' || k END",
    "eb_id": "(printf('%08x', (('0x' || left(eb_id::VARCHAR, 8))::BIGINT + k) % 4294967296) "
             "|| substr(eb_id::VARCHAR, 9))::UUID",
    "ticket_id": "ticket_id + k * 10000000000000",
    "audit_id": "audit_id + k * 10000000000000",
    "sequence_number": "sequence_number || '~' || k",
    "sequence_id": "sequence_id || '~' || k",  # a connector sequence is one ticket update: one per copy
}


def multiply(evidence: Path, work: Path, times: int) -> dict[str, int]:
    import duckdb
    work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET memory_limit = '3GB'")
    con.execute(f"SET temp_directory = '{work / 'spill'}'")
    rows = {}
    for hop in ("zendesk", "bus", "dlq", "sink"):
        src = evidence / f"{hop}.parquet"
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet($p)", {"p": str(src)}).fetchall()]
        select = ", ".join(f"{_SHIFT[c]} AS {c}" if c in _SHIFT else c for c in cols)
        con.execute(f"COPY (SELECT {select} FROM read_parquet($p), range($k) AS r(k)) TO '{work / hop}.parquet' "
                    f"(FORMAT parquet, COMPRESSION zstd)", {"p": str(src), "k": times})
        rows[hop] = con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(work / f"{hop}.parquet")}
                                ).fetchall()[0][0]
    shutil.copy(evidence / "metrics.parquet", work / "metrics.parquet")
    con.close()
    return rows


class DiskSampler(threading.Thread):
    """Peak bytes under `folder`: DuckDB's spill files, and partitioned judging's scratch (partitions-*) apart."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.spill, self.scratch = folder, 0, 0
        # (seconds since start, spill, scratch) when spill starts, stops or moves by 256 MiB: where in the run it spills
        self.timeline: list[tuple[float, int, int]] = []
        self._start = time.monotonic()
        self._done = threading.Event()

    def sample(self) -> None:
        spill = scratch = 0
        for root, _, names in os.walk(self.folder):
            size = 0
            for n in names:
                try:
                    size += os.stat(os.path.join(root, n)).st_size
                except OSError:
                    pass  # removed while we looked
            if "partitions-" in root:
                scratch += size
            else:
                spill += size
        self.spill, self.scratch = max(self.spill, spill), max(self.scratch, scratch)
        last = self.timeline[-1][1] if self.timeline else 0
        if (spill == 0) != (last == 0) or abs(spill - last) >= 256 * 2**20:
            at = round(time.monotonic() - self._start, 1)
            self.timeline.append((at, spill, scratch))
            print(f"{time.strftime('%H:%M:%S')} +{at}s spill {spill / 2**20:.0f} MiB, scratch {scratch / 2**20:.0f} MiB",
                  file=sys.stderr)

    def run(self):
        while not self._done.wait(0.1):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()


def judge(run_dir: Path, ledger_dir: Path, out: Path, spill: Path, memory_limit: str, partitions: str) -> dict:
    """Engine + outputs over the ledgers in `ledger_dir` (this process: run it fresh)."""
    from datetime import datetime

    import bench
    from reconcile import run
    from reconcile.ledger import SourceResult
    from reconcile.runfolder import Rendering
    from reconcile.sources import hops
    import pyarrow as pa

    manifest = json.loads((run_dir / "manifest.json").read_text())
    events = int(manifest["inputs"][0]["records"])
    k = partitions if partitions == "auto" else int(partitions)
    cfg = bench.bench_config(Path("/unused"), events, {"memory_limit": memory_limit, "temp_directory": str(spill),
                                                       "partitions": k})
    window = bench.bench_window(cfg, events)
    shutil.rmtree(out, ignore_errors=True)
    (out / "evidence").mkdir(parents=True, exist_ok=True)
    ledgers = {hop: ledger_dir / f"{hop}.parquet" for hop in hops()}
    results = {i["source"]: SourceResult(name=i["source"], ledger=pa.table({}), details={}) for i in manifest["inputs"]}
    used = {}
    real_judge = run.judge

    def judge_and_note(*a, **kw):  # how many partitions "auto" chose
        e = real_judge(*a, **kw)
        used["partitions"] = e.partitions
        return e

    run.judge = judge_and_note
    disk = DiskSampler(spill)
    disk.start()
    bench._reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    job = Rendering(cfg=cfg, window=window, evidence=out / "evidence", results=results, ledgers=ledgers,
                    audience="daily",
                    generated_at=datetime.fromisoformat(manifest["generated_at"].replace("Z", "+00:00")),
                    engine=cfg.engine)
    s = run.render(job, out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    disk.stop()
    disk.sample()
    ledger_bytes = sum(p.stat().st_size for p in ledgers.values() if p.exists())
    out_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"partitions": partitions, "partitions_used": used.get("partitions"), "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "rss_peak_gib": round(bench._status("VmHWM") / 2**30, 2),
            "spill_peak_bytes": disk.spill, "scratch_peak_bytes": disk.scratch,
            "disk_used_peak_bytes": ledger_bytes + disk.spill + disk.scratch + out_bytes, "spill_timeline": disk.timeline,
            "verdicts": s["verdicts"], "verdicts_parquet_bytes": (out / "verdicts.parquet").stat().st_size}


def same_results(a: Path, b: Path) -> dict:
    """Do two judged output folders hold the same verdict rows (EXCEPT ALL both ways) and the same summary?"""
    import duckdb
    con = duckdb.connect()
    con.read_parquet(str(a / "verdicts.parquet")).create_view("a")
    con.read_parquet(str(b / "verdicts.parquet")).create_view("b")
    only_a = con.sql("SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)").fetchall()[0][0]
    only_b = con.sql("SELECT count(*) FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a)").fetchall()[0][0]
    con.close()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    differ = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
    return {"verdict_rows_only_in_first": only_a, "verdict_rows_only_in_this": only_b, "summary_keys_differ": differ,
            "identical": only_a == 0 and only_b == 0 and not differ}


def measure(run_dir: Path, work: Path, times: int, memory_limit: str, settings: list[str], runs: int) -> dict:
    """Judge the (multiplied) day once per setting of [engine] partitions, `runs` times interleaved, each in a fresh
    process; returns every run, the median per setting and the checks."""
    import subprocess

    import bench
    original = json.loads((run_dir / "summary.json").read_text())["verdicts"]
    rows, made = None, 0.0
    if times == 1:
        ledger_dir = run_dir / "evidence"
    else:
        t0 = time.perf_counter()
        ledger_dir = work
        rows = multiply(run_dir / "evidence", work, times)
        made = round(time.perf_counter() - t0, 1)
        print(f"ledgers x{times}: {rows} in {made} s", file=sys.stderr)
    every: dict[str, list[dict]] = {p: [] for p in settings}
    for i in range(runs):
        for p in settings:
            print(f"  judging x{times}, partitions {p}, run {i + 1}/{runs} (memory_limit {memory_limit}) ...",
                  file=sys.stderr)
            spill = work / f"spill-{p}"
            shutil.rmtree(spill, ignore_errors=True)
            proc = subprocess.run([sys.executable, __file__, str(run_dir), "--times", str(times), "--memory-limit",
                                   memory_limit, "--work", str(work), "--_judge", str(ledger_dir), p],
                                  stdout=subprocess.PIPE, text=True)
            if proc.returncode:
                raise SystemExit(f"the engine run failed (exit {proc.returncode}); see above")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["spill_left_bytes"] = sum(f.stat().st_size for f in spill.rglob("*") if f.is_file())
            every[p].append(r)
    expected = {k: v * times for k, v in original.items()}
    median = {}
    for p, rs in every.items():
        median[p] = {k: bench._median([r[k] for r in rs]) for k in ("wall_s", "cpu_s", "rss_peak_gib",
                                                                    "spill_peak_bytes", "scratch_peak_bytes",
                                                                    "disk_used_peak_bytes")}
        median[p]["partitions_used"] = rs[-1]["partitions_used"]
        median[p]["verdicts_match"] = all(r["verdicts"] == expected for r in rs)
        # the first setting is what the others are compared with (EXCEPT ALL of the day's verdicts: at 100 M not to
        # be run for nothing, against itself)
        median[p]["same_as_" + settings[0]] = (same_results(work / f"out-{settings[0]}", work / f"out-{p}")
                                               if p != settings[0] else {"identical": True, "compared": False})
    return {"times": times, "rows": rows, "multiply_s": made, "memory_limit": memory_limit, "runs": runs,
            "settings": settings, "median": median, "every_run": every, "expected_verdicts": expected,
            "verdicts_match": all(m["verdicts_match"] for m in median.values()), "machine": bench.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished run (its evidence/, summary.json and manifest.json)")
    ap.add_argument("--times", type=int, default=10)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--partitions", default="auto", help="[engine] partitions settings to compare, e.g. 1,auto,16")
    ap.add_argument("--runs", type=int, default=1, help="runs of each setting, interleaved")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "scale")
    ap.add_argument("--_judge", nargs=2, metavar=("LEDGERS", "PARTITIONS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._judge:
        import logging
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
        ledger_dir, p = Path(a._judge[0]), a._judge[1]
        print(json.dumps(judge(a.run_dir, ledger_dir, a.work / f"out-{p}", a.work / f"spill-{p}", a.memory_limit, p)))
        return
    a.work.mkdir(parents=True, exist_ok=True)
    report = measure(a.run_dir, a.work, a.times, a.memory_limit, a.partitions.split(","), a.runs)
    (a.work / f"scale-{a.times}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"times": a.times, "rows": report["rows"], "verdicts_match": report["verdicts_match"],
                      "median": {p: {k: v for k, v in m.items() if not k.startswith("same_as")}
                                 for p, m in report["median"].items()},
                      "identical": {p: m["same_as_" + report["settings"][0]]["identical"]
                                    for p, m in report["median"].items()}}))
    print(a.work / f"scale-{a.times}.json")


if __name__ == "__main__":
    main()
