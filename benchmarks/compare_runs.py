"""Compare the outputs of two runs, to show a refactoring changed no behaviour.

For each run folder (a folder holding verdicts.parquet, summary.json, gaps.csv and report.html) under BASE, the
folder at the same relative path under NEW is compared:
  verdicts.parquet  row counts and EXCEPT ALL both ways (DuckDB), so order does not matter but every row does;
  gaps.csv          byte-identical;
  summary.json      equal after dropping the keys that name the moment or the place of the run (NOISE_KEYS);
  report.html       identical after masking the generation time, digests, the run's own paths, the demo servers'
                    loopback ports and SQS message ids; the inline <style> block is compared on its own and its
                    differing lines are listed (a CSS change does not shift the body's line numbers).
Exit 0 when every folder is the same, 1 otherwise; prints one line per file.

Example (the baseline from the base commit, the new outputs from the branch):
    git archive main --prefix=base/ | tar -x -C /tmp
    PYTHONPATH=/tmp/base .venv/bin/python -m reconcile demo --out /tmp/run-base --state /tmp/run-base/state.duckdb
    .venv/bin/python -m reconcile demo --out /tmp/run-new --state /tmp/run-new/state.duckdb
    .venv/bin/python benchmarks/compare_runs.py /tmp/run-base /tmp/run-new
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path

import duckdb

NOISE_KEYS = {"generated_at", "out_dir", "report", "run_dir", "path", "state", "location"}
# What differs between two runs of the same inputs in a rendered report: when, where, and the code's digests.
_MASKS = [
    (re.compile(r'(data-figure="generated_at"[^>]*>)[^<]*'), r"\1<time>"),
    (re.compile(r"http://127\.0\.0\.1:\d+"), "<endpoint>"),  # the demo's loopback servers take a free port
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),  # SQS message ids
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r"/tmp/[^\s\"'<]*"), "<path>"),
]


def _strip(value, noise=NOISE_KEYS):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in noise}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str):
        return _mask(value)
    return value


def _mask(text: str) -> str:
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return text


def _diff_json(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'new' if k in b else 'base'}")
            else:
                out += _diff_json(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff_json(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


# verdicts.parquet columns that name the moment of the run, not a judgement: the demo loads its DLQ into moto's SQS
# as it runs, so a message's SentTimestamp (dlq_at) is the wall clock of that run.
WALL_CLOCK_COLUMNS = ("dlq_at",)


def compare_verdicts(base: Path, new: Path) -> tuple[bool, str]:
    con = duckdb.connect()
    # our own paths, given on the command line
    a, b = (f"(SELECT * EXCLUDE ({', '.join(WALL_CLOCK_COLUMNS)}) FROM read_parquet('{p}'))" for p in (base, new))
    n_a = con.execute(f"SELECT count(*) FROM {a}").fetchone()[0]
    n_b = con.execute(f"SELECT count(*) FROM {b}").fetchone()[0]
    only_a = con.execute(f"SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})").fetchone()[0]
    only_b = con.execute(f"SELECT count(*) FROM (FROM {b} EXCEPT ALL FROM {a})").fetchone()[0]
    same = n_a == n_b and only_a == only_b == 0
    return same, (f"rows {n_a:,} / {n_b:,}, only in base {only_a}, only in new {only_b} "
                  f"(all columns but {', '.join(WALL_CLOCK_COLUMNS)})")


STYLE_LINES_SHOWN = 40


def _split_style(html: str) -> tuple[str, str]:
    """The report's inline stylesheet, and the rest: a CSS change is shown as its own diff, not as shifted lines."""
    m = re.search(r"<style>.*?</style>", html, re.S)
    return (m.group(0), html[:m.start()] + html[m.end():]) if m else ("", html)


def compare_folder(base: Path, new: Path) -> bool:
    ok = True
    same, text = compare_verdicts(base / "verdicts.parquet", new / "verdicts.parquet")
    print(f"{'same' if same else 'DIFF'}  {new / 'verdicts.parquet'}: {text}")
    ok &= same
    same = (base / "gaps.csv").read_bytes() == (new / "gaps.csv").read_bytes()
    lines = (base / "gaps.csv").read_bytes().count(b"\n")
    print(f"{'same' if same else 'DIFF'}  {new / 'gaps.csv'}: {lines:,} lines")
    ok &= same
    diffs = _diff_json(_strip(json.loads((base / "summary.json").read_text())),
                       _strip(json.loads((new / "summary.json").read_text())))
    print(f"{'same' if not diffs else 'DIFF'}  {new / 'summary.json'}" + "".join(f"\n      {d}" for d in diffs[:20]))
    ok &= not diffs
    (sa, ba), (sb, bb) = (_split_style(_mask((f / "report.html").read_text())) for f in (base, new))
    ra, rb = ba.splitlines(), bb.splitlines()
    bad = [i for i, (x, y) in enumerate(zip(ra, rb)) if x != y]
    same = len(ra) == len(rb) and not bad
    print(f"{'same' if same else 'DIFF'}  {new / 'report.html'} outside <style>: {len(ra):,} / {len(rb):,} lines"
          + "".join(f"\n      line {i + 1}: {ra[i][:100]!r} != {rb[i][:100]!r}" for i in bad[:5]))
    style = [d for d in difflib.unified_diff(sa.splitlines(), sb.splitlines(), lineterm="", n=0)
             if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    print(f"{'same' if not style else 'DIFF'}  {new / 'report.html'} <style>: {len(style)} lines differ"
          + "".join(f"\n      {d[:110]}" for d in style[:STYLE_LINES_SHOWN]))
    ok &= not style
    return ok and same


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    base_root, new_root = Path(argv[0]), Path(argv[1])
    folders = sorted(p.parent.relative_to(base_root) for p in base_root.rglob("verdicts.parquet"))
    if not folders:
        print(f"no verdicts.parquet under {base_root}", file=sys.stderr)
        return 2
    ok = True
    for rel in folders:
        if not (new_root / rel / "verdicts.parquet").exists():
            print(f"MISSING {new_root / rel}")
            ok = False
            continue
        ok &= compare_folder(base_root / rel, new_root / rel)
    print("all the same" if ok else "differences found")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
