"""`reconcile recover RUN_DIR`: the recovery plan for a run's lost events, written for a person to review.

Per event, the most exact route the evidence allows:
- `reput`: the whole original event is in the bus log copy or the DLQ body: PutRecords it to the rule's stream with
  the same data and the partition key the rule would use;
- `replay`: no exact payload, but the bus has an archive: the fewest 1-minute StartReplay windows filtered to the
  rule, with how many already delivered events they would send again;
- `none`: neither, and why.
Events lost before the bus are listed apart with what Zendesk holds for them: there is no bus event to re-send.

The plan is plan.json (what `--apply` executes, byte for byte: its sha256 is the plan's digest, kept in plan.sha256)
and plan.csv (one row per event, for review). Making it reads the run folder and the stores, and writes nothing
else: no AWS write permission is needed.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import tempfile
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from .. import emission, outputs, resources
from ..aws import filesystem, region_of
from ..config import USERINFO, Config, without_userinfo
from ..engine import execute_file
from ..errors import ConfigError, ReconcileError
from ..runfolder import ZENDESK_PAGES, RunFolder
from ..sources import events
from ..window import key_of, parse_time
from . import payload

logger = logging.getLogger(__name__)

QUERIES = resources.query_file("recover")
PLAN_KIND = "reconcile-recovery-plan"
PLAN_VERSION = 1
MAX_RECORD = 1024 * 1024  # Kinesis: 1 MiB a record, data and partition key together
MAX_KEY = 256  # Kinesis: partition keys are 1 to 256 characters
REPLAY_SLACK_S = 10  # an event's `time` is set before its log copy is written: its minute may be the one before
CSV_COLUMNS = ("route", "eb_id", "verdict", "source_id", "ticket_id", "kind", "event_time", "from", "where",
               "partition_key", "bytes", "replay_window", "reason", "to")


class PlanError(ReconcileError):
    """A plan that cannot be made, or one that is not the plan that was reviewed."""

    exit_code = 4


def _q(name: str) -> Path:
    return QUERIES / f"{name}.sql"


def run_window(run_dir: Path) -> dict[str, Any]:
    manifest = RunFolder(run_dir).manifest
    if not manifest.exists():
        raise PlanError(f"{run_dir} has no manifest.json: it is not a finished run. Pass the folder a `reconcile run` "
                        f"wrote (or re-run the window).")
    m = orjson.loads(manifest.read_bytes())
    return {"dir": str(run_dir.resolve()), "window": m["window"], "manifest_sha256": m.get("manifest_sha256"),
            "config": m.get("config", {}), "generated_at": m.get("generated_at"),
            "incomplete": [i["source"] for i in m.get("inputs", []) if i.get("complete") is False]}


def require_current(plan: dict[str, Any]) -> None:
    """The plan's run must be the run as it stands: a window run again since (a new manifest) may judge otherwise --
    an event the plan re-sends may have landed and been judged delivered. A run folder not found here (the plan
    applied on another machine) leaves the state's check of the run (cli_recover.require_run_state)."""
    run_dir, want = Path(plan["run"]["dir"]), plan["run"].get("manifest_sha256")
    manifest = RunFolder(run_dir).manifest
    if not want or not manifest.is_file():
        return
    if orjson.loads(manifest.read_bytes()).get("manifest_sha256") != want:
        raise PlanError(f"The run at {run_dir} is not the one this plan was made from (its manifest changed: the "
                        f"window was run again since), so its verdicts may differ. Make a new plan from it: "
                        f"reconcile recover {run_dir}")


# What candidates.sql reads of a run's settlements.parquet, for a run made before runs wrote one
NO_SETTLEMENTS = pa.schema([("eb_id", pa.string()), ("verdict", pa.string()), ("source_id", pa.string()),
                           ("event_time", pa.timestamp("us", tz="UTC")), ("ticket_id", pa.int64()),
                           ("kind", pa.string()), ("window_key", pa.string())])


def build(run_dir: Path, cfg: Config, now: datetime | None = None) -> dict[str, Any]:
    """The plan for the run in `run_dir` (a dict, as plan.json holds it)."""
    if cfg.sink.uri and USERINFO.search(cfg.sink.uri):
        # the plan is kept, copied into later runs' evidence and reviewed: it holds what apply re-reads, never a secret
        raise ConfigError(f"[sink] uri {without_userinfo(cfg.sink.uri)} holds credentials (or a run's manifest "
                          f"kept them redacted): a plan is kept and reviewed, so it never holds a secret. Give the "
                          f"credentials through the AWS credential chain (AWS_PROFILE, the environment, a role) and "
                          f"set [sink] uri without them.")
    run = run_window(run_dir)
    con = events.connect()
    fetched = tempfile.TemporaryDirectory(prefix="reconcile-plan-")  # earlier runs' ledgers published to s3://
    try:
        folder = RunFolder(run_dir)
        con.read_parquet(str(folder.verdicts)).create_view("verdicts")
        settled = folder.settlements
        if settled.exists():
            con.read_parquet(str(settled)).create_view("settled")
        else:  # a run made before runs wrote it: its settlements are listed nowhere it can read
            con.register("settled", NO_SETTLEMENTS.empty_table())
        con.register("verdict_vocab", emission.verdict_table())
        ledgers = folder.ledgers()
        earlier = _settled_runs(cfg, execute_file(con, _q("settled_windows"), {}).fetchall(), Path(fetched.name))
        for hop in LEDGERS_READ:
            files = [str(ledgers[hop])] + [str(RunFolder(d).ledgers()[hop]) for d in earlier]
            con.read_parquet(files, union_by_name=True).create_view(hop)
        cands = execute_file(con, _q("candidates"), {"kinesis_target": cfg.dlq.kinesis_target}).to_arrow_table()
        before = execute_file(con, _q("before_bus"), {}).to_arrow_table().to_pylist()
        rows = cands.to_pylist()
        routed = _route(rows, cfg)
        windows = replay_windows(con, routed)
        replay_rows = [r for r in routed if r["route"] == "replay"]
    finally:
        con.close()
        fetched.cleanup()
    for i, w in enumerate(windows):
        for r in replay_rows:
            if r["eb_id"] in w["eb_ids"]:
                r["replay_window"] = i
    key = key_of(run["window"])
    reput = [r for r in routed if r["route"] == "reput"]
    plan = {
        "kind": PLAN_KIND, "version": PLAN_VERSION,
        "created_at": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "run": {"dir": run["dir"], "window_key": key, "window": run["window"],
                "manifest_sha256": run["manifest_sha256"], "generated_at": run["generated_at"]},
        # the region a stream name is resolved in: apply refuses another (an ARN names its own)
        "target": {"stream": cfg.recover.stream, "region": region_of(cfg.aws),
                   "partition_key_path": cfg.recover.partition_key_path,
                   "archive_arn": cfg.recover.archive_arn, "rule_arn": cfg.recover.rule_arn,
                   "event_bus_arn": bus_of(cfg.recover.rule_arn)},
        # apply re-checks these stores before sending: an event that landed late is not sent again
        "recheck": {"sink": asdict(cfg.sink), "match": asdict(cfg.match)},
        "counts": {"reput": len(reput), "replay": len(replay_rows), "replay_windows": len(windows),
                   "unrecoverable": sum(r["route"] == "none" for r in routed), "lost_before_bus": len(before),
                   "replay_duplicates": sum(w["already_delivered"] for w in windows)},
        "events": [_event_entry(r, key) for r in routed],
        "replay_windows": [{"start": _iso(w["start_at"]), "end": _iso(w["end_at"]), "eb_ids": w["eb_ids"],
                            "other_events": w["others"], "already_delivered": w["already_delivered"]}
                           for w in windows],
        "lost_before_bus": _before_bus(run_dir, before),
    }
    if run["incomplete"]:
        plan["run"]["inputs_incomplete"] = run["incomplete"]
        logger.warning("the run read %s only in part: some events it calls lost may have landed where it could not "
                       "read (apply re-reads the sink whole before sending, and refuses while it cannot); re-run the "
                       "window once the inputs read whole, and plan from that run", ", ".join(run["incomplete"]))
    if reput and not cfg.recover.stream:
        logger.warning("%d event(s) can be re-put but [recover] stream is not set: the plan cannot be applied until "
                       "it names the rule's Kinesis stream (re-plan with --set recover.stream=NAME_OR_ARN)", len(reput))
    return plan


def bus_of(rule_arn: str | None) -> str | None:
    """The event bus a rule belongs to, from its ARN (arn:...:rule/[bus/]name; no bus part: the default bus). A rule
    name holds no `/`, while a partner bus's name does (aws.partner/zendesk.com/<account>/<name>): the bus is all
    before the last `/`."""
    if not rule_arn:
        return None
    head, _, path = rule_arn.partition(":rule/")
    bus = path.rsplit("/", 1)[0] if "/" in path else "default"
    return f"{head}:event-bus/{bus}"


LEDGERS_READ = ("bus", "dlq", "sink")  # the hops whose ledgers hold an event's copies (candidates.sql)


def _settled_runs(cfg: Config, windows: list[tuple[str]], into: Path) -> list[Path]:
    """The folders of the runs (as the state records them) of `windows` (queries/recover/settled_windows.sql: those
    whose pending events this run settled as lost after the bus): those events' bus log copies and dead letters were
    read by that window's run, not this one. A folder on this machine is read where it is; a run published to s3://
    has its ledgers fetched into `into`. None without a state; a run whose ledgers cannot be read is left out (the
    plan then says where the copies would have been)."""
    keys = [k for (k,) in windows]
    if not keys:
        return []
    from ..state import State
    try:
        with State.open(str(cfg.state.uri), cfg.aws, write=False) as st:
            dirs = [str(d) for d in ((st.run_of(k) or {}).get("out_dir") for k in keys) if d]
    except ReconcileError:
        return []
    out = []
    for n, d in enumerate(dirs):
        folder = _fetched(cfg, d, into / f"run-{n}") if d.startswith("s3://") else Path(d)
        if folder is not None and all(RunFolder(folder).ledgers()[hop].is_file() for hop in LEDGERS_READ):
            out.append(folder)
    return out


def _fetched(cfg: Config, uri: str, into: Path) -> Path | None:
    """A published run's bus, DLQ and sink ledgers, downloaded into `into` (a run folder's layout); None, with a
    warning, when they cannot be read."""
    fs, root = filesystem(uri, cfg.aws)
    local = RunFolder(into)
    try:
        for hop in LEDGERS_READ:
            path = local.ledgers()[hop]
            path.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(f"{root}/{path.relative_to(into).as_posix()}", str(path), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
    except OSError as e:
        logger.warning("Could not read the ledgers of the run published at %s (%s): the copies of the events it "
                       "held are not looked for there.", uri, e)
        return None
    return into


def _route(rows: list[dict], cfg: Config) -> list[dict]:
    """Each candidate with its route: reput (data and partition key), replay, or none (and why)."""
    bus = payload.from_bus_log(cfg, {r["eb_id"]: r["bus_ref"] for r in rows if r["bus_ref"]})
    dlq = payload.from_dlq(cfg, {r["eb_id"]: r["dlq_ref"] for r in rows if r["dlq_ref"]})
    can_replay = bool(cfg.recover.archive_arn and cfg.recover.rule_arn)
    out = []
    for r in rows:
        eb_id = r["eb_id"]
        # The DLQ body is what the Kinesis target itself was given: first for a dead-lettered event.
        order = [("dlq", dlq), ("bus_log", bus)] if r["verdict"] == "dead_lettered" else [("bus_log", bus), ("dlq", dlq)]
        problems = []
        chosen = None
        for name, found in order:
            p = found.get(eb_id)
            if p is None:
                problems.append(f"no {'DLQ message' if name == 'dlq' else 'bus log copy'}" +
                                (f" in this run's reads or those of {r['settled_from']}'s run, the window of the "
                                 f"event (settled by this run)" if r.get("settled_from") else ""))
            elif p.data is None:
                problems.append(p.problem)
            else:
                chosen = (name, p.data)
                break
        r = dict(r, route="none", origin=None, data=None, partition_key=None, reason=None, replay_window=None)
        if chosen:
            key, why = payload.partition_key(chosen[1], eb_id, cfg.recover.partition_key_path)
            size = len(chosen[1].encode()) + len((key or "").encode())
            if why:
                problems.append(why)
            elif len(key) > MAX_KEY:
                problems.append(f"partition key longer than Kinesis's {MAX_KEY} characters")
            elif size > MAX_RECORD:
                problems.append(f"{size:,} bytes: over Kinesis's 1 MiB record limit")
            else:
                r.update(route="reput", origin=chosen[0], data=chosen[1], partition_key=key,
                         where=r["dlq_ref"] if chosen[0] == "dlq" else r["bus_ref"])
                out.append(r)
                continue
        if can_replay and r["logged_at"] is not None:
            r.update(route="replay", reason="no exact payload (" + "; ".join(problems) + "): replay from the archive")
        else:
            hint = ("no time on the bus to replay by" if can_replay else
                    "no archive to replay from ([recover] archive_arn and rule_arn not set)")
            r.update(reason="; ".join(problems + [hint]))
        out.append(r)
    return out


def replay_windows(con, routed: list[dict]) -> list[dict]:
    """The replay windows of the routed events (queries/recover/replay_windows.sql over the views `bus` and `sink`).
    A replay re-sends every event of its minutes: an event routed to a re-put there would be sent twice, so it is
    replayed instead (route changed in `routed`), its minutes joined to the windows -- which may then reach further:
    again, until no re-put event lies in one."""
    windows: list[dict] = []
    for r in routed:  # a re-put event's own `time`, which a replay selects by (its log copy may come much later)
        if r["route"] == "reput" and "sent_at" not in r:
            r["sent_at"] = payload.sent_time(r["data"])
    while True:
        replay_rows = [r for r in routed if r["route"] == "replay"]
        if not replay_rows:
            return windows
        # a replayed event's minute is found from its log copy's time, or from its own `time` where a payload gave it
        # (one caught below): its log copy may have come much later
        con.register("replay_events", pa.table({"eb_id": [r["eb_id"] for r in replay_rows],
                                                "logged_at": pa.array([r.get("sent_at") or r["logged_at"]
                                                                       for r in replay_rows],
                                                                      pa.timestamp("us", tz="UTC"))}))
        windows = execute_file(con, _q("replay_windows"), {"slack_s": REPLAY_SLACK_S}).to_arrow_table().to_pylist()
        caught = [r for r in routed if r["route"] == "reput" and replayed_by(r["logged_at"], windows, r["sent_at"])]
        if not caught:
            return windows
        for r in caught:
            r.update(route="replay", origin=None, data=None, partition_key=None, where=None,
                     reason="a replay window re-sends its minute for other events: replayed, not re-put as well")


def replayed_by(logged_at, windows: list[dict], sent_at: datetime | None = None) -> bool:
    """Whether a replay window may re-send an event: by its own `time` (`sent_at`, from its exact payload), which a
    replay selects by; without one, by its log copy's time `logged_at`, the event's lying up to REPLAY_SLACK_S
    before it (replay_windows.sql). A log copy can come much later (the log target throttled and retried): an
    event re-put by its payload was then also replayed, reaching the stream twice."""
    if sent_at is not None:
        return any(w["start_at"] <= sent_at < w["end_at"] for w in windows)
    if logged_at is None:
        return False
    earliest = logged_at - timedelta(seconds=REPLAY_SLACK_S)
    return any(logged_at >= w["start_at"] and earliest < w["end_at"] for w in windows)


def _iso(t) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_entry(r: dict, key: str) -> dict:
    return {"eb_id": r["eb_id"], "route": r["route"], "verdict": r["verdict"], "window_key": key,
            "settled_from": r.get("settled_from"),
            "source_id": r["source_id"], "children": r["children"], "ticket_id": r["ticket_id"], "kind": r["kind"],
            "event_time": _iso(r["event_time"]), "logged_at": _iso(r["logged_at"]),
            "from": r["origin"], "where": r.get("where"), "partition_key": r["partition_key"], "data": r["data"],
            "bytes": len(r["data"].encode()) if r["data"] else None, "replay_window": r["replay_window"],
            "reason": r["reason"]}


# What a team can do about an event that never reached the bus: the bus has nothing to replay or re-put.
BEFORE_BUS_ROUTE = ("publish a corrective event from the Zendesk record (the connector does not re-emit), or touch "
                    "the ticket so Zendesk emits a fresh event; reconcile never publishes to the bus itself")


def _before_bus(run_dir: Path, rows: list[dict]) -> list[dict]:
    """What the run's saved Zendesk pages hold for each event lost before the bus (ticket, kind, values)."""
    pages: dict[str, dict] = {}
    out = []
    for r in rows:
        page, _, audit = (r["source_ref"] or "").partition("#audit=")
        child = None
        path = RunFolder(run_dir).evidence / ZENDESK_PAGES / page
        if page and path.is_file():
            if page not in pages:
                raw = path.read_bytes()
                doc = orjson.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
                pages[page] = {str(a.get("id")): a for a in doc.get("ticket_events", [])}
            audit_doc = pages[page].get(audit) or {}
            child = next((c for c in audit_doc.get("child_events", []) if str(c.get("id")) == r["source_id"]), None)
        values = {k: child[k] for k in ("field_name", "value", "previous_value", "public") if child and k in child}
        out.append({"source_id": r["source_id"], "zendesk_key": r["zendesk_key"], "ticket_id": r["ticket_id"],
                    "kind": r["kind"], "event_time": _iso(r["event_time"]), "audit_id": r["audit_id"],
                    "source_ref": r["source_ref"], "values": values, "route": BEFORE_BUS_ROUTE})
    return out


def dumps(plan: dict) -> bytes:
    return orjson.dumps(plan, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write(plan: dict, out_dir: Path) -> tuple[Path, str]:
    """plan.json, plan.sha256 and plan.csv in `out_dir` (atomic); returns plan.json's path and digest."""
    data = dumps(plan)
    digest = hashlib.sha256(data).hexdigest()
    path = outputs.write_bytes(out_dir / "plan.json", data)
    outputs.write_bytes(out_dir / "plan.csv", csv_bytes(orjson.loads(data)))  # as `load` reads it back
    outputs.write_bytes(out_dir / "plan.sha256", f"{digest}  plan.json\n".encode())
    return path, digest


def csv_bytes(plan: dict) -> bytes:
    """plan.csv, the rows a person reviews: one per event, with where it goes (`to`: the stream and its region, or
    the archive replayed to the rule's bus). Made from plan.json alone, so `load` can tell a plan.csv that is not."""
    t = plan["target"]
    to = {"reput": f"{t['stream']} ({t.get('region') or 'the applier region'})",
          "replay": f"{t['archive_arn']} -> {t['rule_arn']}", "none": ""}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    rows = [[e["route"], e["eb_id"], e["verdict"], e["source_id"], e["ticket_id"], e["kind"], e["event_time"],
             e["from"] or "", e["where"] or "", e["partition_key"] or "", e["bytes"] or "",
             "" if e["replay_window"] is None else _window_text(plan, e["replay_window"]), e["reason"] or "",
             to.get(e["route"], "")]
            for e in plan["events"]]
    rows += [["lost_before_bus", "", "lost_before_bus", b["source_id"], b["ticket_id"], b["kind"], b["event_time"],
              "zendesk", b["source_ref"], "", "", "", orjson.dumps(b["values"]).decode() + "; " + b["route"], ""]
             for b in plan["lost_before_bus"]]
    w.writerows([outputs.guard_cell(c) for c in r] for r in rows)  # text a spreadsheet would run, inert
    return buf.getvalue().encode()


def _window_text(plan: dict, i: int) -> str:
    w = plan["replay_windows"][i]
    return f"{w['start']} → {w['end']}"


def load(path: Path, digest: str | None = None) -> tuple[dict, str]:
    """A plan and its digest, refused when it is not the plan that was made (plan.sha256) or reviewed (`digest`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "plan.json"
    if not path.is_file():
        raise PlanError(f"No plan at {path}. Make one with `reconcile recover RUN_DIR`.")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    recorded = path.with_name("plan.sha256")
    if not recorded.is_file():
        raise PlanError(f"{recorded} is missing: nothing shows {path} is the plan `reconcile recover` wrote. "
                        f"Make the plan again.")
    made = recorded.read_text().split()[0] if recorded.read_text().split() else ""
    if actual != made:
        raise PlanError(f"{path} was changed after it was made (sha256 {actual[:12]}…, made as {made[:12]}…). "
                        f"Apply only a plan as `reconcile recover` wrote it: make it again and review that.")
    if digest and not actual.startswith(digest.lower()):
        raise PlanError(f"{path} has digest {actual[:12]}…, not the reviewed {digest[:12]}…: this is not the plan "
                        f"that was reviewed. Review this one and pass its digest.")
    try:
        plan = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise PlanError(f"{path} is not JSON ({e}). Make the plan again.") from e
    if plan.get("kind") != PLAN_KIND or plan.get("version") != PLAN_VERSION:
        raise PlanError(f"{path} is not a reconcile recovery plan (version {PLAN_VERSION}). Make the plan again.")
    # the rows a person reviewed: the digest covers plan.json, and plan.csv beside it must be what plan.json makes
    rows = path.with_name("plan.csv")
    if rows.is_file() and not _same_rows(rows.read_bytes(), csv_bytes(plan)):
        raise PlanError(f"{rows} is not the rows of {path.name} (it was changed after the plan was made): what was "
                        f"reviewed is not what would be sent. Make the plan again and review its plan.csv.")
    return plan, actual


def _same_rows(found: bytes, made: bytes) -> bool:
    """Whether a plan.csv holds the rows `made` (csv_bytes), read as a spreadsheet or a checkout may have saved it
    (a byte-order mark, CRLF line ends); one written before the `to` column is compared without it."""
    def rows(data: bytes) -> list[list[str]]:
        return list(csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline="")))
    have, want = rows(found), rows(made)
    if have and have[0] == list(CSV_COLUMNS[:-1]):  # a plan made before the `to` column
        want = [r[:-1] for r in want]
    return have == want


def require_run(st, plan: dict, uri: str) -> None:
    """The state `st` (at `uri`) records the run this plan was made from: else the journal would not be seen by the
    next run of the window, or the window was run again since and may judge otherwise (ConfigError)."""
    key = plan["run"]["window_key"]
    run = st.run_of(key)
    if run is None:
        raise ConfigError(f"The state {uri} has no run of window {key}: the journal would not be seen by the next "
                          f"run of that window. Pass --state (or [state] uri / RECONCILE_STATE) naming the state the "
                          f"run was recorded in.")
    made = plan["run"].get("generated_at")  # plans from before it was recorded: the run folder's check alone
    if made and run["generated_at"] != parse_time(made):
        raise ConfigError(f"The state {uri} records a run of window {key} made at "
                          f"{run['generated_at']:%Y-%m-%dT%H:%M:%S}Z ({run['out_dir']}), not the run this plan was "
                          f"made from ({made}): the window was run "
                          f"again since, and may judge otherwise. Make a new plan from that run: reconcile recover "
                          f"{run['out_dir']}")


def require_target(plan: dict, region: str | None = None) -> None:
    """The plan names what it sends to; `region`: where this apply's clients call, which must be the plan's for a
    stream named without its ARN (the same name in another region is another stream)."""
    t = plan["target"]
    if region and plan["counts"]["reput"] and t.get("region") and region != t["region"] \
            and not str(t["stream"]).startswith("arn:"):
        raise ConfigError(f"The plan re-puts events to stream {t['stream']!r} in {t['region']}, and this apply's AWS "
                          f"region is {region}: the same name there is another stream. Apply with --region "
                          f"{t['region']} (or [aws] region), or set [recover] stream to the stream's ARN and make the "
                          f"plan again. Nothing was sent.")
    if plan["counts"]["reput"] and not t["stream"]:
        raise ConfigError("The plan re-puts events but names no stream: set [recover] stream (the rule's Kinesis "
                          "stream name or ARN) and make the plan again.")
    if plan["counts"]["replay"] and not (t["archive_arn"] and t["rule_arn"]):
        raise ConfigError("The plan replays events but names no archive and rule: set [recover] archive_arn and "
                          "rule_arn and make the plan again.")
