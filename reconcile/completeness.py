"""The one completeness rule: when may a verdict rest on what a source read?

A required store is complete only when
  1. the source read every object, page, file or message it listed for the read range (`SourceResult.complete`,
     set by the source: a unit it could not read, a read cut short, a throttled or sampled listing all clear it), and
  2. every record it met became a ledger row or was rejected for a reason that provably cannot hide an in-window event
     (a reject `kind` whose `hides_events` is false in queries/reject_kinds.csv), and
  3. it is not empty while another required store holds records for the window (an empty export prefix, an empty
     sink listing: "nothing there" is not proof of "nothing happened"). The DLQ is exempt (may_be_empty): an empty
     dead-letter queue is the healthy state, and its read proves coverage by itself (the queue's attributes, or
     the archive objects it listed and read), and
  4. (the Zendesk read, once judged: listing_short) the bus holds no event its listing should have linked past the
     newest audit it lists.
Anything else makes the input incomplete: the run exits 3 and the report names the source, the count and what to do.
Sources report facts; only this module decides completeness, and `run` and `fetch` both call it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import emission, resources
from .ledger import DEFAULT_REJECT_KIND, SourceResult
from .sources import REGISTRY

# Sources a verdict rests on (`required` in the registry); metrics are a sanity check only, so a metrics read never
# makes a run incomplete.
REQUIRED = tuple(s.name for s in REGISTRY if s.required)
# Required stores for which "no records" is the normal state of a good day (rule 3 does not apply).
MAY_BE_EMPTY = tuple(s.name for s in REGISTRY if s.may_be_empty)


@cache
def reject_kinds() -> dict[str, bool]:
    """kind -> whether a reject of that kind may hide an in-window event (queries/reject_kinds.csv)."""
    t = pacsv.read_csv(resources.query_file("reject_kinds.csv"))
    return dict(zip(t["kind"].to_pylist(), t["hides_events"].to_pylist()))


def hiding_mask(rejects: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Per reject, whether it may hide an event: its kind says so, or it is of a kind we do not know."""
    harmless = [k for k, hides in reject_kinds().items() if not hides]
    kind = rejects["kind"] if "kind" in rejects.column_names else pa.nulls(rejects.num_rows, pa.string())
    kind = pc.fill_null(kind, DEFAULT_REJECT_KIND)
    return pc.invert(pc.is_in(kind, pa.array(harmless, pa.string())))


def hiding_rejects(rejects: pa.Table) -> int:
    """How many rejects may hide an event (hiding_mask)."""
    if rejects.num_rows == 0:
        return 0
    return pc.sum(hiding_mask(rejects)).as_py() or 0


def decide(result: SourceResult, others_have_records: bool) -> SourceResult:
    """`result` with `complete` and `problems` as the rule above says (metrics: never incomplete)."""
    if result.name not in REQUIRED:
        return replace(result, complete=True)
    problems = list(result.problems)
    complete = result.complete
    hiding = hiding_rejects(result.rejects)
    if hiding:
        complete = False
        first = result.rejects.filter(hiding_mask(result.rejects)).slice(0, 1).to_pylist()[0]
        problems.append(f"{hiding:,} record(s) could not be read and may be in-window events (first: "
                        f"{first['source_ref']}: {first['reason']}; all in evidence/{result.name}.rejects.parquet "
                        f"and the report's rejected records); fix or remove them at the source and re-run.")
    if complete and result.records == 0 and others_have_records and result.name not in MAY_BE_EMPTY:
        complete = False
        problems.append(f"{result.name} has no records for the read range while other stores do: an empty read is "
                        f"not proof that nothing happened. Check the source's location in the config and its "
                        f"permissions.")
    return replace(result, complete=complete, problems=problems)


def listing_short(result: SourceResult, shortfall: dict) -> SourceResult:
    """The Zendesk read as the other stores bear it out (`shortfall`: the row of queries/zendesk_shortfall.sql, made
    by the judging): complete by its own account, it is not when the bus holds events of tickets it lists, past the
    newest audit it lists, that none of its events links to -- the listing ended early (an end-of-stream page too
    soon), and every event after it went unjudged."""
    n = shortfall["events"]
    if not result.complete or not (shortfall["short"] or shortfall["held_off"]):
        return result
    when = f"{shortfall['newest_audit']:%Y-%m-%dT%H:%M:%S}Z"
    found = (f"the bus holds {n:,} event(s) of tickets this read lists, of kinds an audit stands for, after the "
             f"newest audit it lists ({when}), which none of its events links to (the first: "
             f"{shortfall['first_eb_id']})")
    if shortfall["held_off"]:  # said, not held against the read: such orphans lie before that audit too
        return replace(result, problems=[*result.problems, (
            f"{found}; {shortfall['before']:,} such event(s) lie before it too (another Zendesk account on the same "
            f"bus? see the report's orphans), so they do not show the export ended early, and the read counts as "
            f"whole. If it did end early, re-run the window.")])
    problem = (f"{found}: the export ended before the window did, and what follows it went unjudged. Re-run the "
               f"window; `reconcile trace {shortfall['first_eb_id']}` shows the event.")
    return replace(result, complete=False, problems=[*result.problems, problem])


def unsettled(results: dict[str, SourceResult]) -> dict[str, str] | None:
    """Why a run may not settle losses at each hop (hop -> the stores that loss rests on, queries/hops.csv
    `rests_on`, that were not read whole, after `decide`), or None when it may settle every loss. A loss is the
    absence of an event from what was read: found while a store it rests on was read only in part, it is not final:
    the event stays pending, and a later run judges it again (queries/rules.sql loss_held_by). A sink read in part
    holds every loss; a bus log or DLQ read in part only the losses before the bus (the record it may hold puts the
    event on the bus, but cannot land it). A DLQ read in part also holds a loss after the bus with no DLQ message
    (dlq_in_part): the message may be in the unread part, which would make it dead_lettered."""
    return unsettled_by({name: r.complete for name, r in results.items()})


def unsettled_by(complete: dict[str, bool]) -> dict[str, str] | None:
    """`unsettled` from whether each store was read whole (by source name; a store not named was not read whole):
    also what the summary says of each hop (summary.build), from the inputs a run or a re-render records."""
    held = {}
    for hop, stores in emission.rests_on().items():
        partial = [name for name in stores if not complete.get(name, False)]
        if partial:
            held[hop] = in_part(*partial)
    return held or None


def in_part(*names: str) -> str:
    """Why a loss resting on these stores is held (the text the queries show)."""
    return f"{' and '.join(names)} read only in part"


def dlq_in_part(results: dict[str, SourceResult]) -> str | None:
    """in_part of the DLQ when it was read only in part: then no loss after the bus can say "no DLQ message"
    (queries/rules.sql beyond_dlq), though the loss itself rests on the sink alone."""
    r = results.get("dlq")
    return None if r is None or r.complete else in_part("dlq")


def held_params(unsettled: dict[str, str] | None) -> dict[str, str | None]:
    """The queries' `$unsettled_<hop>` parameters of `unsettled`'s answer (None: nothing held)."""
    return {f"unsettled_{hop}": (unsettled or {}).get(hop) for hop in emission.rests_on()}


def decide_all(results: dict[str, SourceResult]) -> dict[str, SourceResult]:
    """Apply `decide` to every source of one run (the emptiness check compares the required stores)."""
    with_records = {n for n, r in results.items() if n in REQUIRED and r.records > 0}
    return {n: decide(r, bool(with_records - {n})) for n, r in results.items()}
