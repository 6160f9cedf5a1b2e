"""`reconcile calibrate`: what the last runs say about the emission model (docs/design.md, "The emission model").

Reads each run folder's verdicts.parquet, the orphan rows of its gaps.csv and the model it judged by
(evidence/kind_map.parquet), and runs queries/calibrate/*.sql over them: per API kind and field, how often its
expected bus events reached the bus and as which types; per bus type, how often it matched and how often it was an
orphan; custom field ids seen; and the emission-model lines the evidence supports, as a CSV `[match] emission_model`
takes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from . import emission, outputs
from .engine import QUERY_DIR, execute_file
from .errors import ConfigError
from .runfolder import RunFolder

QUERIES = ("kinds", "bus_types", "suggest")


@dataclass
class Calibration:
    runs: list[str]
    kinds: list[dict[str, Any]] = field(default_factory=list)
    bus_types: list[dict[str, Any]] = field(default_factory=list)
    suggest: list[dict[str, Any]] = field(default_factory=list)
    model_file: list[dict[str, Any]] = field(default_factory=list)  # queries/calibrate/model_file.sql

    @property
    def custom_fields(self) -> list[dict[str, Any]]:
        return [k for k in self.kinds if k["custom_field"]]

    def model_csv(self) -> str:
        """An emission-model CSV (api_kind,family,bus_type,cardinality) with the suggested lines, and for each kind
        they name its other lines (model_file): the file replaces every line of the kinds it names."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(emission.SCHEMA.names)
        for r in self.model_file:
            w.writerow([r["api_kind"], r["family"] or "", r["bus_type"] or "", r["cardinality"]])
        return out.getvalue()


def calibrate(run_dirs: list[Path]) -> Calibration:
    """Calibrate over `run_dirs` (newest first: the newest run's emission model is the one compared with)."""
    if not run_dirs:
        raise ConfigError("No runs to calibrate from. Pass --run DIR (a folder `reconcile run` wrote) or a --state "
                          "file that knows some runs.")
    verdicts = [str(RunFolder(usable(Path(d))).verdicts) for d in run_dirs]
    gaps = [str(RunFolder(Path(d)).gaps) for d in run_dirs if RunFolder(Path(d)).gaps.exists()]
    saved = RunFolder(Path(run_dirs[0])).kind_map
    model = emission.from_evidence(pq.read_table(saved)) if saved.exists() else emission.load_model()
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.read_parquet(verdicts, filename=True, union_by_name=True).project(
            "*, filename AS run").create_view("verdicts")
        if gaps:
            outputs.read_guarded(con, gaps).filter("verdict = 'orphan'").project("kind").create_view("orphans")
        else:
            con.execute("CREATE VIEW orphans AS SELECT NULL::VARCHAR AS kind WHERE false")
        con.register("emission_model", model)
        con.register("verdict_vocab", emission.verdict_table())
        tables = {name: execute_file(con, QUERY_DIR / "calibrate" / f"{name}.sql", {}).to_arrow_table()
                  for name in QUERIES}
        con.register("suggest_rows", tables["suggest"])
        tables["model_file"] = execute_file(con, QUERY_DIR / "calibrate" / "model_file.sql", {}).to_arrow_table()
        out = {name: t.to_pylist() for name, t in tables.items()}
    finally:
        con.close()
    return Calibration([str(d) for d in run_dirs], **out)


def usable(run_dir: Path) -> Path:
    """`run_dir`, when it holds verdicts calibrate can read; a ConfigError saying why not otherwise."""
    v = RunFolder(run_dir).verdicts
    if not v.exists():
        raise ConfigError(f"{run_dir} holds no verdicts.parquet. Point --run at a folder `reconcile run` wrote.")
    if "expected_id" not in pq.read_schema(v).names:
        raise ConfigError(f"{v} was written before the emission model (no expected_id column). Run that window "
                          f"again, or leave the folder out.")
    return run_dir


def render_text(c: Calibration) -> str:
    lines = [f"calibrated over {len(c.runs)} run(s)", "", "API kinds (expected bus events):"]
    for k in c.kinds:
        lines.append(f"  {k['kind']:<32} {k['events']:>9,} events  on bus {k['on_bus_rate']:>7.2%}  "
                     f"unverified {k['unverified']:,}  not emitted {k['not_emitted']:,}  lost {k['lost_before_bus']:,}"
                     f"  -> {k['bus_types'] or '(never on the bus)'}")
    lines += ["", "Bus types:"]
    for b in c.bus_types:
        lines.append(f"  {b['bus_type']:<48} matched {b['matched']:>9,}  orphans {b['orphans']:>7,}"
                     f"{'' if b['in_model'] else '  (not in the model)'}")
    lonely = [b["bus_type"] for b in c.bus_types if b["orphans"] and not b["matched"]]
    lines += ["", "Bus types with no API counterpart: " + (", ".join(lonely) if lonely else "none")]
    ids = [k["kind"].split(":", 1)[1] for k in c.custom_fields]
    lines += ["Custom field ids seen: " + (", ".join(ids) if ids else "none"), "",
              "Suggested emission-model lines ([match] emission_model):"]
    if not c.suggest:
        lines.append("  none: the model agrees with what the runs saw")
    for s in c.suggest:
        lines.append(f"  {s['api_kind']},{s['family'] or ''},{s['bus_type'] or ''},{s['cardinality']}"
                     f"    # {s['why']}")
    return "\n".join(lines)
