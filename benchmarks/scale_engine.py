"""Does the engine finish a day K times bigger than one we can simulate, within its memory limit?

    .venv/bin/python benchmarks/scale_engine.py RUN_DIR --times 10 [--memory-limit 3GB] [--work DIR]

The simulator needs ~8 GB of RAM at 10 M events, so 100 M events cannot be simulated on a 24 GiB machine. The
sources stream their ledgers object by object (bounded memory whatever the day's size); the engine and the
exports are what could run out. This script takes the ledgers of a finished run (RUN_DIR/evidence, e.g. a 10 M
bench run), writes K disjoint copies of the day into one set of ledgers (DuckDB, no Python loop: every id, ticket
and audit shifted per copy, so copies never link to each other), then judges them and writes the outputs in a
fresh process, as `reconcile run` does after reading (run.render), with DuckDB's memory_limit and spill folder.

It checks its own result: every verdict count must be exactly K times the original run's (summary.json).
Prints and writes JSON: wall, CPU, peak RSS (the kernel's VmHWM), rows, spill bytes and the check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Per copy k: numeric ids move by k x a power of ten above any real value, text ids get a suffix.
_SHIFT = {
    "source_id": "CASE WHEN try_cast(source_id AS BIGINT) IS NOT NULL "
                 "THEN (source_id::BIGINT + k * 100000000000000)::VARCHAR ELSE source_id || '~' || k END",
    "zendesk_key": "CASE WHEN try_cast(zendesk_key AS BIGINT) IS NOT NULL "
                   "THEN (zendesk_key::BIGINT + k * 100000000000000)::VARCHAR ELSE zendesk_key || '~' || k END",
    "eb_id": "eb_id || '~' || k",
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


def judge(run_dir: Path, work: Path, memory_limit: str) -> dict:
    """Engine + outputs over the multiplied ledgers (this process: run it fresh)."""
    from datetime import datetime

    import bench
    from reconcile import run
    from reconcile.config import EngineConfig
    from reconcile.ledger import SourceResult
    from reconcile.runfolder import Rendering
    from reconcile.sources import hops
    import pyarrow as pa

    manifest = json.loads((run_dir / "manifest.json").read_text())
    events = int(manifest["inputs"][0]["records"])
    cfg = bench.bench_config(Path("/unused"), events, {"memory_limit": memory_limit,
                                                       "temp_directory": str(work / "spill")})
    window = bench.bench_window(cfg, events)
    out = work / "out"
    (out / "evidence").mkdir(parents=True, exist_ok=True)
    ledgers = {hop: work / f"{hop}.parquet" for hop in hops()}
    results = {i["source"]: SourceResult(name=i["source"], ledger=pa.table({}), details={}) for i in manifest["inputs"]}
    bench._reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    job = Rendering(cfg=cfg, window=window, evidence=out / "evidence", results=results, ledgers=ledgers,
                    audience="daily",
                    generated_at=datetime.fromisoformat(manifest["generated_at"].replace("Z", "+00:00")),
                    engine=EngineConfig(memory_limit=memory_limit, temp_directory=str(work / "spill")))
    s = run.render(job, out)
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
            "rss_peak_gib": round(bench._status("VmHWM") / 2**30, 2), "verdicts": s["verdicts"],
            "verdicts_parquet_bytes": (out / "verdicts.parquet").stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished run (its evidence/, summary.json and manifest.json)")
    ap.add_argument("--times", type=int, default=10)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "scale")
    ap.add_argument("--_judge", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._judge:
        print(json.dumps(judge(a.run_dir, a.work, a.memory_limit)))
        return
    original = json.loads((a.run_dir / "summary.json").read_text())["verdicts"]
    t0 = time.perf_counter()
    rows = multiply(a.run_dir / "evidence", a.work, a.times)
    made = round(time.perf_counter() - t0, 1)
    print(f"ledgers x{a.times}: {rows} in {made} s; judging with memory_limit {a.memory_limit} ...", file=sys.stderr)
    import subprocess
    proc = subprocess.run([sys.executable, __file__, str(a.run_dir), "--times", str(a.times), "--memory-limit",
                           a.memory_limit, "--work", str(a.work), "--_judge"], stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"the engine run failed (exit {proc.returncode}); see above")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    spill = sum(p.stat().st_size for p in (a.work / "spill").rglob("*") if p.is_file())  # a missing folder yields 0
    expected = {k: v * a.times for k, v in original.items()}
    report = {"times": a.times, "rows": rows, "multiply_s": made, "memory_limit": a.memory_limit, **result,
              "spill_left_bytes": spill, "expected_verdicts": expected,
              "verdicts_match": result["verdicts"] == expected, "machine": __import__("bench").machine()}
    (a.work / f"scale-{a.times}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("times", "rows", "wall_s", "cpu_s", "rss_peak_gib", "verdicts_match")}))
    print(a.work / f"scale-{a.times}.json")


if __name__ == "__main__":
    main()
