"""The emission model and the verdict vocabulary: two small tables SQL, Python and templates all read.

queries/emission_model.csv says, for each Zendesk API child kind (`Create`, `Comment`, `Change:<field_name>`,
`Change:<custom field id>` for any numeric field id), which bus type each family carries it as and how many bus events
it makes: `child` (one per child), `audit` (all such children of one audit -> one bus event: a new ticket's `Create`
children -> one `Ticket Created`) or `none` (never on the bus). A kind the model does not list is *unverified*: never
counted as a loss (PIPELINE.md §2: which API children become which connector events is not documented).

queries/verdicts.csv is the verdict vocabulary: name, order, the hop whose loss it is (if any), whether the hop
funnel counts it, whether the sink holds it (reached_sink) or the sink or the Kinesis DLQ (past_bus), whether no
store reported the loss (silent), whether gaps.csv lists it (in_gaps), its place in the report's timeline stack
(chart), colour, label and meaning. queries/hops.csv is the hop vocabulary: name, order, whether the funnel counts
it, label and meaning. queries/match_kinds.csv is the vocabulary of how an expected bus event was matched (the
verdicts' match_kind): name, order and meaning. queries/journal_statuses.csv is the recovery journal's status
vocabulary (`reconcile recover`): name, order (an event several plans name counts once, by its status furthest in
this order), whether it needs no further send (done), whether the attempt is over (final) and meaning. They are bound
in SQL as verdict_vocab, hop_vocab, match_vocab and journal_status_vocab (engine.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import ConfigError
from .resources import QUERY_DIR

MODEL_FILE = QUERY_DIR / "emission_model.csv"
VERDICTS_FILE = QUERY_DIR / "verdicts.csv"
HOPS_FILE = QUERY_DIR / "hops.csv"
MATCH_KINDS_FILE = QUERY_DIR / "match_kinds.csv"
JOURNAL_STATUSES_FILE = QUERY_DIR / "journal_statuses.csv"
CUSTOM_FIELD = "Change:<custom field id>"  # the model's row for any numeric field_name (queries/source_events.sql)
CARDINALITIES = ("child", "audit", "none")
SCHEMA = pa.schema([("api_kind", pa.string()), ("family", pa.string()), ("bus_type", pa.string()),
                    ("cardinality", pa.string())])
_STRINGS = pacsv.ConvertOptions(column_types={f.name: pa.string() for f in SCHEMA}, strings_can_be_null=True)


def _read(path: Path, key: str) -> pa.Table:
    if not path.exists():
        raise ConfigError(f"{key} file {path} does not exist. Give a CSV with columns api_kind,family,bus_type,"
                          f"cardinality (see queries/emission_model.csv).")
    try:
        t = pacsv.read_csv(path, convert_options=_STRINGS)
    except pa.ArrowInvalid as e:
        raise ConfigError(f"{key} file {path} is not a CSV: {e}") from e
    cols = set(t.column_names)
    if cols == {"api_kind", "bus_type"}:  # the older [match] kind_map shape: one bus event per child
        fam = pc.if_else(pc.starts_with(t["bus_type"], "zen:event-type:"), "webhook", "legacy")
        t = t.append_column("family", fam).append_column("cardinality", pa.repeat(pa.scalar("child"), t.num_rows))
    elif cols != set(SCHEMA.names):
        raise ConfigError(f"{key} file {path} must have the columns api_kind,family,bus_type,cardinality "
                          f"(or api_kind,bus_type for a kind map); it has {','.join(t.column_names)}.")
    t = t.select(SCHEMA.names).cast(SCHEMA)
    bad = sorted(set(t["cardinality"].to_pylist()) - set(CARDINALITIES))
    if bad:
        raise ConfigError(f"{key} file {path}: cardinality {bad[0]!r} is not one of {', '.join(CARDINALITIES)}.")
    return t


def load_model(extra: str | None = None, kind_map: str | None = None) -> pa.Table:
    """The shipped model, with the rows of `[match] emission_model` / `[match] kind_map` files replacing the shipped
    rows of the kinds they name (so a file can also say a kind is `none`)."""
    table = _read(MODEL_FILE, "emission_model")
    for key, path in (("match.kind_map", kind_map), ("match.emission_model", extra)):
        if path:
            more = _read(Path(path), key)
            named = pa.array(sorted(set(more["api_kind"].to_pylist())), pa.string())
            table = pa.concat_tables([table.filter(pc.invert(pc.is_in(table["api_kind"], named))), more])
    check(table)
    return table


def check(table: pa.Table) -> None:
    """One cardinality per kind, and one kind per bus type: else matching would be ambiguous by construction."""
    rows = table.to_pylist()
    card: dict[str, str] = {}
    kind_of: dict[str, str] = {}
    for r in rows:
        if card.setdefault(r["api_kind"], r["cardinality"]) != r["cardinality"]:
            raise ConfigError(f"emission model: kind {r['api_kind']} has two cardinalities "
                              f"({card[r['api_kind']]}, {r['cardinality']}). Give it one.")
        if r["bus_type"] and kind_of.setdefault(r["bus_type"], r["api_kind"]) != r["api_kind"]:
            raise ConfigError(f"emission model: bus type {r['bus_type']!r} is given to {kind_of[r['bus_type']]} and "
                              f"{r['api_kind']}. A bus type stands for one API kind.")


def from_evidence(table: pa.Table) -> pa.Table:
    """A model saved with a run (evidence/kind_map.parquet): older runs saved an api_kind,bus_type kind map."""
    if set(table.column_names) >= set(SCHEMA.names):
        return table.select(SCHEMA.names).cast(SCHEMA)
    fam = pc.if_else(pc.starts_with(table["bus_type"], "zen:event-type:"), "webhook", "legacy")
    return pa.table({"api_kind": table["api_kind"], "family": fam, "bus_type": table["bus_type"],
                     "cardinality": pa.repeat(pa.scalar("child"), table.num_rows)}, schema=SCHEMA)


# The vocabulary files' columns that are not text.
_INTS = ("ord", "chart")
_BOOLS = ("in_funnel", "reached_sink", "past_bus", "silent", "in_gaps", "done", "final")


def _vocab(path: Path) -> pa.Table:
    header = path.read_text().split("\n", 1)[0].split(",")
    types = {c: pa.int32() if c in _INTS else pa.bool_() if c in _BOOLS else pa.string() for c in header}
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
                          ).sort_by("ord")


@lru_cache(maxsize=1)
def verdict_table() -> pa.Table:
    return _vocab(VERDICTS_FILE)


@lru_cache(maxsize=1)
def hop_table() -> pa.Table:
    return _vocab(HOPS_FILE)


@lru_cache(maxsize=1)
def match_kind_table() -> pa.Table:
    return _vocab(MATCH_KINDS_FILE)


@lru_cache(maxsize=1)
def journal_status_table() -> pa.Table:
    return _vocab(JOURNAL_STATUSES_FILE)


def journal_statuses(flag: str | None = None) -> tuple[str, ...]:
    """The recovery journal's statuses (queries/journal_statuses.csv) in order, or those whose `flag` column (done,
    final) is true."""
    rows = journal_status_table().to_pylist()
    return tuple(r["status"] for r in rows if flag is None or r[flag])


def match_kind_rows() -> list[dict]:
    """The kinds of match (queries/match_kinds.csv) in report order: name, order, meaning."""
    return match_kind_table().to_pylist()


def hop_rows() -> list[dict]:
    """The hops (queries/hops.csv) in report order: name, whether the funnel counts it, label, meaning."""
    return hop_table().to_pylist()


def rests_on() -> dict[str, tuple[str, ...]]:
    """hop -> the stores a loss at that hop rests on (queries/hops.csv `rests_on`): read in part, one of them may hold
    the record that makes it no loss, or a loss at another hop (completeness.unsettled)."""
    return {h["hop"]: tuple((h["rests_on"] or "").split()) for h in hop_rows() if h["rests_on"]}


def hop_labels() -> dict[str, str]:
    return {h["hop"]: h["label"] for h in hop_rows()}


def chart_verdicts() -> tuple[str, ...]:
    """The verdicts the report's timeline stacks, bottom first (the `chart` column of queries/verdicts.csv)."""
    rows = [v for v in verdict_rows() if v["chart"] is not None]
    return tuple(v["verdict"] for v in sorted(rows, key=lambda v: v["chart"]))


def loss_rate(lost: int, entered: int) -> float:
    """A hop's loss rate: lost / in, 0 when nothing entered it (summary.json, history, the CLI)."""
    return lost / entered if entered else 0.0


def over_threshold(lost: int, rate: float, threshold: float) -> bool:
    """Whether a hop's losses are over its budget ([thresholds]): a run's status, a window's in `history`."""
    return lost > 0 and rate > threshold


def verdicts() -> tuple[str, ...]:
    """Verdict names in report order."""
    return tuple(verdict_table()["verdict"].to_pylist())


def verdict_rows() -> list[dict]:
    return verdict_table().to_pylist()


def loss_hops() -> dict[str, str]:
    """Each loss verdict and the hop it is a loss of (queries/verdicts.csv `loss_hop`)."""
    return {r["verdict"]: r["loss_hop"] for r in verdict_rows() if r["loss_hop"]}
