"""What a run knows of recoveries (`reconcile recover`, issue 16): the judging side.

A run with a state reads the recovery journal from it: `recoveries` (per EventBridge id, what was sent and when:
queries/state/recoveries.sql) and the journal rows themselves (every status, for the recovery funnel). Both are
saved in the run's evidence (evidence/recoveries.parquet, evidence/recovery_journal.parquet), and the engine binds
them from there, so `reconcile verify` re-renders the run from its evidence alone, recoveries included. A run without
a state binds them empty: no recovery is ever assumed.

The rules that use them are in SQL: queries/replay_copies.sql (a replay's copy under a new id), verdicts.sql and
settlements.sql (`recovered`, and pending until the horizon counted from the send), recovery_funnel.sql.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import ledger, outputs

RECOVERIES_FILE, JOURNAL_FILE = "recoveries.parquet", "recovery_journal.parquet"
PLANS_DIR = "recovery-plans"  # evidence/recovery-plans/<digest>.json: the reviewed plans the journal's rows ran
PLAN_FILE = Path("recovery") / "plan.json"  # where `reconcile recover` writes a plan in a run folder
# (reconcile/runfolder.py's RunFolder names these paths for everyone else)

# The columns of the state's recovery_journal table (queries/state/schema.sql), in its types.
JOURNAL_SCHEMA = pa.schema([
    ("plan_digest", pa.string()), ("window_key", pa.string()), ("source_id", pa.string()), ("eb_id", pa.string()),
    ("route", pa.string()), ("target", pa.string()), ("status", pa.string()), ("attempts", pa.int32()),
    ("shard_id", pa.string()), ("sequence_number", pa.string()), ("replay_name", pa.string()),
    ("sent_at", pa.timestamp("us", tz="UTC")), ("error", pa.string()),
])
# What was sent per EventBridge id (queries/state/recoveries.sql), the engine's `recoveries` view.
RECOVERIES_SCHEMA = pa.schema([
    ("eb_id", pa.string()), ("route", pa.string()), ("target", pa.string()), ("replay_name", pa.string()),
    ("plan_digest", pa.string()), ("sent_at", pa.timestamp("us", tz="UTC")),
])


def empty() -> dict[str, pa.Table]:
    """The engine's views when no recovery is known."""
    return {"recoveries": RECOVERIES_SCHEMA.empty_table(), "recovery_journal": JOURNAL_SCHEMA.empty_table()}


def from_state(state) -> tuple[dict[str, pa.Table], dict[str, bytes]]:
    """What the state's journal holds: `recoveries` (State.recoveries), every journal row of every plan, and the
    plans themselves where found (`plans`)."""
    journal = state.journal_rows().cast(JOURNAL_SCHEMA)
    tables = {"recoveries": state.recoveries(), "recovery_journal": journal}
    return tables, plans(state.run_dirs(), set(journal["plan_digest"].to_pylist()))


def plans(run_dirs: list[str], digests: set[str]) -> dict[str, bytes]:
    """The plans (by digest) the journal names, found as <run folder>/recovery/plan.json in the local run folders the
    state knows: a plan's digest is the sha256 of its bytes, so a plan found is the plan applied. Plans elsewhere
    (another folder, s3://) are not searched: the journal rows name their digest."""
    found: dict[str, bytes] = {}
    for d in run_dirs:
        path = Path(d) / PLAN_FILE
        if digests - set(found) and "://" not in d and path.is_file():
            data = path.read_bytes()
            if (digest := hashlib.sha256(data).hexdigest()) in digests:
                found[digest] = data
    return found


def write_evidence(tables: dict[str, pa.Table], evidence: Path, plan_files: dict[str, bytes] | None = None) -> None:
    """Save what the run judged by, beside the ledgers (the manifest then digests these files: a plan's sha256 there
    is its digest)."""
    ledger.write_atomic(tables["recoveries"], evidence / RECOVERIES_FILE)
    ledger.write_atomic(tables["recovery_journal"], evidence / JOURNAL_FILE)
    shutil.rmtree(evidence / PLANS_DIR, ignore_errors=True)  # a re-run keeps only the plans it used
    for digest, data in sorted((plan_files or {}).items()):
        outputs.write_bytes(evidence / PLANS_DIR / f"{digest}.json", data)


def read_evidence(evidence: Path) -> dict[str, pa.Table]:
    """The tables a run saved; empty ones for a run folder from before recoveries were judged."""
    out = empty()
    for name, file in (("recoveries", RECOVERIES_FILE), ("recovery_journal", JOURNAL_FILE)):
        if (evidence / file).exists():
            out[name] = pq.read_table(evidence / file)
    return out


def funnel(row: dict | None) -> dict | None:
    """summary.json's `recovery` (queries/recovery_funnel.sql's one row), or None when no recovery touches the run."""
    if not row or not row["planned"]:
        return None
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
