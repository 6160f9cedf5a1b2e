"""`reconcile verify`: re-prove a run from its evidence alone, byte for byte; optionally check its inputs still stand.

A run's folder is its evidence bundle: manifest.json (window, config, inputs with fingerprints and details, sha256 of
every file, query and template) and evidence/ (ledgers, rejects, carried-in pending events, shown history, kind map).
`verify` checks every sha256, then runs the same code a run renders with (`run.render`) on the evidence only, into a
temp dir, and compares each output byte for byte, naming the figures that differ. No network, no state file.

`check_sources` HEADs the live objects the manifest fingerprints (never their data) and lists what changed or vanished.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__, config, outputs, resources, run
from .config import AwsConfig, EngineConfig
from .errors import QueryError, VerifyError
from .ledger import SourceResult
from .sources import REGISTRY
from .window import Window, parse_time

DETAILS_PER_FILE = 20  # differences named per file before "... and N more"


@dataclass(frozen=True)
class Difference:
    """One thing that does not match: the file, and what in it (a figure's dotted path, a row, its digest)."""

    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


@dataclass
class Verification:
    run_dir: Path
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def files(self) -> list[str]:
        return sorted({d.file for d in self.differences})

    def error(self, name: str | None = None) -> VerifyError:
        return VerifyError(f"{name or self.run_dir} does not match its evidence: {len(self.differences)} difference(s) in "
                           f"{', '.join(self.files)}. Each is listed above; a file changed since the run, or this "
                           f"tool's code differs from the code that made it.")


# ---------------------------------------------------------------------------------------------------------- manifest

def load_manifest(run_dir: Path) -> tuple[dict[str, Any], bytes]:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise VerifyError(f"{run_dir} has no manifest.json, so it is not a finished run. Give the run's output "
                          f"folder (the one holding manifest.json and evidence/).")
    raw = path.read_bytes()
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise VerifyError(f"{path} is not valid JSON ({e}): it was damaged or edited since the run.") from e
    if not isinstance(manifest, dict) or "files" not in manifest or "window" not in manifest:
        raise VerifyError(f"{path} is not a reconcile manifest (no files or window).")
    return manifest, raw


def check_manifest(manifest: dict[str, Any], raw: bytes) -> list[Difference]:
    out = []
    if "manifest_sha256" not in manifest:
        return [Difference("manifest.json", "has no manifest_sha256 (written by an older reconcile?): the manifest "
                                            "itself cannot be checked")]
    if manifest["manifest_sha256"] != run.manifest_digest(manifest):
        out.append(Difference("manifest.json", "manifest_sha256 does not match its content: edited since the run"))
    elif outputs.dumps(manifest) != raw:
        out.append(Difference("manifest.json", "bytes differ from its canonical form: edited since the run"))
    return out


def _inside(run_dir: Path, rel: str) -> Path | None:
    p = (run_dir / rel).resolve()
    return p if p.is_relative_to(run_dir.resolve()) and not Path(rel).is_absolute() else None


def check_files(run_dir: Path, manifest: dict[str, Any]) -> tuple[list[Difference], list[str]]:
    """Every file the manifest lists, by size and sha256; files it does not list are noted."""
    diffs, listed = [], set()
    for entry in manifest["files"]:
        rel = entry["path"]
        listed.add(rel)
        path = _inside(run_dir, rel)
        if path is None:
            diffs.append(Difference(rel, "path lies outside the run folder"))
        elif not path.is_file():
            diffs.append(Difference(rel, "missing (the manifest lists it)"))
        elif path.stat().st_size != entry["bytes"]:
            diffs.append(Difference(rel, f"sha256 differs from the manifest ({path.stat().st_size:,} bytes, the run "
                                         f"wrote {entry['bytes']:,}): changed since the run"))
        elif outputs.sha256_file(path) != entry["sha256"]:
            diffs.append(Difference(rel, "sha256 differs from the manifest: changed since the run"))
    extra = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                   if p.is_file() and p.name != "manifest.json")
    notes = [f"{rel}: not in the manifest (added after the run; not part of the evidence)"
             for rel in extra if rel not in listed]
    return diffs, notes


def check_code(manifest: dict[str, Any]) -> tuple[list[Difference], list[str]]:
    """The SQL and templates this tool would render with must be the ones the run used."""
    diffs, notes = [], []
    tool = run.code_digests()
    for kind, root, _ in resources.CODE:
        now = tool[kind]
        for name, digest in sorted(manifest.get(kind, {}).items()):
            if now.get(name) != digest:
                what = "missing from this tool" if name not in now else "differs from the one the run used"
                diffs.append(Difference(f"{root.name}/{name}", f"{what} (sha256): verify with the reconcile version "
                                                               f"that made the run"))
        for name in sorted(set(now) - set(manifest.get(kind, {}))):
            notes.append(f"{root.name}/{name}: added since the run (not used by it)")
    made_by = manifest.get("versions", {})
    for pkg, version in sorted(run.versions().items()):
        if made_by.get(pkg) not in (None, version):
            notes.append(f"{pkg} {version} here, the run used {made_by[pkg]}")
    return diffs, notes


# ---------------------------------------------------------------------------------------------------------- re-render

def window_of(manifest: dict[str, Any], cfg: config.Config) -> Window:
    w = manifest["window"]
    start, end, as_of = (parse_time(w[k]) for k in ("start", "end", "as_of"))
    if "hop_a_grace_s" not in w:  # a manifest from before the window's durations were recorded
        return run.window_from(cfg, start, end, as_of)
    return Window(start=start, end=end, as_of=as_of,
                  **{k: timedelta(seconds=w[f"{k}_s"])
                     for k in ("margin_before", "margin_after", "max_event_age", "hop_a_grace")})


def evidence_inputs(evidence: Path, manifest: dict[str, Any]) -> dict[str, SourceResult]:
    """What each source read, rebuilt from the evidence ledgers and the manifest's record of the read."""
    entries = {i["source"]: i for i in manifest.get("inputs", [])}
    out = {}
    for spec in REGISTRY:
        i = entries.get(spec.name)
        if i is None:
            raise VerifyError(f"manifest.json has no input entry for {spec.name}: it cannot be re-rendered.")
        path = evidence / spec.ledger_file  # render needs only its row count
        out[spec.name] = SourceResult(
            spec.name, None, path=path, rows=pq.read_metadata(path).num_rows,
            rejects=pq.read_table(evidence / spec.rejects_file), complete=i["complete"],
            problems=list(i["problems"]), fingerprints=i["fingerprints"], details=i.get("details", {}))
    return out


def rerender(run_dir: Path, manifest: dict[str, Any], into: Path) -> None:
    """Render the run's outputs again into `into` from run_dir's evidence and manifest alone."""
    evidence = run_dir / "evidence"
    cfg = config.build(None, manifest["config"], environ={})
    window = window_of(manifest, cfg)
    results = evidence_inputs(evidence, manifest)
    ledgers = {spec.hop: evidence / spec.ledger_file for spec in REGISTRY}
    carried = evidence / run.CARRIED_FILE
    kind_map = evidence / run.KIND_MAP_FILE
    history = evidence / run.HISTORY_FILE
    # The engine's temp directory was the run machine's; memory and threads stay as the run had them.
    engine = EngineConfig(memory_limit=cfg.engine.memory_limit, threads=cfg.engine.threads)
    run.render(cfg, window, into, evidence, results, ledgers, audience=manifest.get("audience", "daily"),
               generated_at=parse_time(manifest["generated_at"]),
               carried=pq.read_table(carried) if carried.exists() else None,
               kind_map=pq.read_table(kind_map) if kind_map.exists() else None,
               history=orjson.loads(history.read_bytes()) if history.exists() else None, engine=engine)


# ---------------------------------------------------------------------------------------------------------- compare

def _show(v: Any) -> str:
    text = repr(v) if isinstance(v, str) else outputs.dumps(v).decode().strip() if isinstance(v, (dict, list)) \
        else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


_ID_KEYS = ("name", "source", "verdict", "hop", "metric", "match_kind", "window_key")


def _key(item: Any) -> str | None:
    if isinstance(item, dict):
        for k in _ID_KEYS:
            if isinstance(item.get(k), str):
                return k
    return None


def json_diff(found: Any, expected: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, value in the file, value the evidence gives) for every figure that differs. List items with a
    name (hops, inputs, ...) are addressed by it: `hops.zendesk_to_bus.lost`, `inputs.dlq.rejected`."""
    if isinstance(found, dict) and isinstance(expected, dict):
        out = []
        for k in sorted(set(found) | set(expected)):
            p = f"{path}.{k}" if path else str(k)
            if k not in found:
                out.append((p, "(absent)", expected[k]))
            elif k not in expected:
                out.append((p, found[k], "(absent)"))
            else:
                out.extend(json_diff(found[k], expected[k], p))
        return out
    if isinstance(found, list) and isinstance(expected, list):
        k = _key(expected[0]) if expected else None
        names_f = [x.get(k) if isinstance(x, dict) else None for x in found] if k else []
        names_e = [x.get(k) for x in expected] if k else []
        if k and names_f == names_e and len(set(names_e)) == len(names_e):
            return [d for name, a, b in zip(names_e, found, expected) for d in json_diff(a, b, f"{path}.{name}")]
        if len(found) != len(expected):
            return [(f"{path} (length)", len(found), len(expected))]
        return [d for i, (a, b) in enumerate(zip(found, expected)) for d in json_diff(a, b, f"{path}.{i}")]
    if found != expected or type(found) is not type(expected):
        return [(path, found, expected)]
    return []


class _Figures(HTMLParser):
    """The text of every element carrying data-figure (the report's figures), in document order per name."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.open: list[tuple[str, int, list[str]]] = []
        self.figures: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        self.depth += 1
        name = dict(attrs).get("data-figure")
        if name is not None:
            self.open.append((name, self.depth, []))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        while self.open and self.open[-1][1] >= self.depth:
            name, _, parts = self.open.pop()
            self.figures.setdefault(name, []).append(" ".join("".join(parts).split()))
        self.depth -= 1

    def handle_data(self, data):
        for _, _, parts in self.open:
            parts.append(data)


def figures(html: bytes) -> dict[str, list[str]]:
    p = _Figures()
    p.feed(html.decode("utf-8", "replace"))
    p.close()
    return p.figures


def _first_line(found: bytes, expected: bytes) -> int:
    for n, (a, b) in enumerate(zip(found.splitlines(), expected.splitlines()), 1):
        if a != b:
            return n
    return min(len(found.splitlines()), len(expected.splitlines())) + 1


def diff_summary(found: bytes, expected: bytes) -> list[str]:
    try:
        f = orjson.loads(found)
    except orjson.JSONDecodeError:
        return ["not valid JSON"]
    diffs = json_diff(f, orjson.loads(expected))
    return ([f"{p} is {_show(a)}, the evidence gives {_show(b)}" for p, a, b in diffs]
            or [f"bytes differ from the re-render (same figures; formatting, line {_first_line(found, expected)})"])


def diff_report(found: bytes, expected: bytes) -> list[str]:
    f, e = figures(found), figures(expected)
    out = []
    for name in sorted(set(f) | set(e)):
        a, b = f.get(name, []), e.get(name, [])
        if a != b:
            shown = lambda v: "(absent)" if not v else " / ".join(v)  # noqa: E731
            out.append(f"figure {name} shows {shown(a)!r}, the evidence gives {shown(b)!r}")
    return out or [f"differs from the re-render outside the figures (line {_first_line(found, expected)})"]


def _csv_line(row) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue()


def diff_csv(found: bytes, expected: bytes) -> list[str]:
    f = list(csv.reader(io.StringIO(found.decode("utf-8", "replace"))))
    e = list(csv.reader(io.StringIO(expected.decode("utf-8", "replace"))))
    out = []
    header = e[0] if e else []
    if len(f) != len(e):  # rows added or removed: name them, not every row after them
        out.append(f"{len(f) - 1:,} rows, the evidence gives {len(e) - 1:,}")
        extra, missing = Counter(map(tuple, f)) - Counter(map(tuple, e)), Counter(map(tuple, e)) - Counter(map(tuple, f))
        out += [f"row not given by the evidence: {_csv_line(r)}" for r in extra.elements()]
        out += [f"row missing: {_csv_line(r)}" for r in missing.elements()]
        return out
    for n, (a, b) in enumerate(zip(f, e), 1):
        if a != b:
            cols = [f"{header[i] if i < len(header) else i} is {x!r} (evidence: {y!r})"
                    for i, (x, y) in enumerate(zip(a, b)) if x != y] or ["cells differ in number"]
            out.append(f"line {n}: " + ", ".join(cols))
    return out or [f"bytes differ from the re-render (line {_first_line(found, expected)})"]


def diff_parquet(found_path: Path, expected_path: Path) -> list[str]:
    try:
        f = pq.read_table(found_path)
    except (pa.ArrowException, OSError) as e:
        return [f"not a readable Parquet file ({e})"]
    e = pq.read_table(expected_path)
    if f.schema != e.schema:
        return ["columns differ from the re-render"]
    if f.num_rows != e.num_rows:
        return [f"{f.num_rows:,} rows, the evidence gives {e.num_rows:,}"]
    out = []
    for name in e.column_names:
        a, b = f[name].to_pylist(), e[name].to_pylist()
        bad = [i for i, (x, y) in enumerate(zip(a, b)) if x != y and not (x != x and y != y)]  # NaN equals NaN
        if bad:
            out.append(f"column {name} differs in {len(bad):,} row(s), first row {bad[0] + 1:,}: "
                       f"{_show(a[bad[0]])}, the evidence gives {_show(b[bad[0]])}")
    return out or ["bytes differ from the re-render (same rows: encoding or file metadata)"]


def compare(run_dir: Path, rendered: Path) -> list[Difference]:
    out = []
    for name in run.RENDERED:
        found_path, expected_path = run_dir / name, rendered / name
        if not found_path.is_file():
            out.append(Difference(name, "missing"))
            continue
        found, expected = found_path.read_bytes(), expected_path.read_bytes()
        if found == expected:
            continue
        if name == "summary.json":
            details = diff_summary(found, expected)
        elif name == "report.html":
            details = diff_report(found, expected)
        elif name == "gaps.csv":
            details = diff_csv(found, expected)
        else:
            details = diff_parquet(found_path, expected_path)
        out.extend(Difference(name, d) for d in details[:DETAILS_PER_FILE])
        if len(details) > DETAILS_PER_FILE:
            out.append(Difference(name, f"... and {len(details) - DETAILS_PER_FILE:,} more"))
    return out


def verify(run_dir: Path) -> Verification:
    """Check every sha256 in the run's manifest and re-render its outputs from its evidence; never raises for a
    difference (they are listed), only when the folder is not a run at all."""
    run_dir = Path(run_dir)
    manifest, raw = load_manifest(run_dir)
    v = Verification(run_dir)
    v.differences += check_manifest(manifest, raw)
    diffs, notes = check_files(run_dir, manifest)
    v.differences += diffs
    v.notes += notes
    diffs, notes = check_code(manifest)
    v.differences += diffs
    v.notes += notes
    if manifest.get("tool", {}).get("version") not in (None, __version__):
        v.notes.append(f"reconcile {__version__} here, the run was made by {manifest['tool']['version']}")
    evidence = run_dir / "evidence"
    missing = [f"evidence/{n}" for spec in REGISTRY
               for n in (spec.ledger_file, spec.rejects_file) if not (evidence / n).is_file()]
    if missing:
        v.differences.append(Difference("evidence", f"cannot re-render without {', '.join(missing)}"))
        return v
    with tempfile.TemporaryDirectory(prefix="reconcile-verify-") as tmp:
        try:
            rerender(run_dir, manifest, Path(tmp))
        except (pa.ArrowException, duckdb.Error, QueryError, OSError, KeyError, ValueError) as e:
            v.differences.append(Difference("evidence", f"cannot be re-rendered: {type(e).__name__}: {e}"))
            return v
        v.differences += compare(run_dir, Path(tmp))
    return v


# ---------------------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class SourceChange:
    source: str
    uri: str
    status: str  # changed | vanished | unchecked
    what: str

    def __str__(self) -> str:
        return f"{self.source} {self.uri}: {self.status} ({self.what})"


def _object(fp: dict[str, Any]) -> dict[str, Any] | None:
    """A fingerprint as {uri, size, etag, last_modified, version_id}; sources may name the location `key` and the
    time `mtime` (pyarrow's names). None for inputs that are not objects (API pages, queues, log groups)."""
    uri = fp.get("uri") or fp.get("key")
    if not isinstance(uri, str) or not uri:
        return None
    return {"uri": uri, "size": fp.get("size"), "etag": fp.get("etag"),
            "last_modified": fp.get("last_modified") or fp.get("mtime"), "version_id": fp.get("version_id")}


def _same_second(a: Any, b: datetime | None) -> bool:
    if a is None or b is None:
        return True
    try:
        return abs((parse_time(a) - b).total_seconds()) < 1
    except Exception:  # noqa: BLE001 - an unreadable recorded time cannot prove a change
        return True


def _changes(was: dict[str, Any], size, etag, last_modified, version_id) -> list[str]:
    out = []
    if was["size"] is not None and size != was["size"]:
        out.append(f"size {was['size']:,} -> {size:,}")
    if was["etag"] and etag and etag.strip('"') != str(was["etag"]).strip('"'):
        out.append(f"ETag {was['etag']} -> {etag.strip(chr(34))}")
    if was["version_id"] and version_id != was["version_id"]:
        out.append(f"VersionId {was['version_id']} -> {version_id}")
    if not _same_second(was["last_modified"], last_modified):
        out.append(f"LastModified {was['last_modified']} -> {last_modified.isoformat()}")
    return out


def _check_s3(client, source: str, was: dict[str, Any]) -> SourceChange | None:
    from .aws import error_code
    import botocore.exceptions
    bucket, _, key = was["uri"][len("s3://"):].partition("/")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return SourceChange(source, was["uri"], "vanished", f"HEAD: {code}")
        return SourceChange(source, was["uri"], "unchecked", f"HEAD failed: {code}")
    except botocore.exceptions.BotoCoreError as e:
        return SourceChange(source, was["uri"], "unchecked", f"HEAD failed: {e}")
    changed = _changes(was, head.get("ContentLength"), head.get("ETag"), head.get("LastModified"),
                       head.get("VersionId"))
    return SourceChange(source, was["uri"], "changed", "; ".join(changed)) if changed else None


def _check_local(source: str, was: dict[str, Any]) -> SourceChange | None:
    try:
        st = os.stat(was["uri"])
    except FileNotFoundError:
        return SourceChange(source, was["uri"], "vanished", "no such file")
    except OSError as e:
        return SourceChange(source, was["uri"], "unchecked", str(e))
    changed = _changes(dict(was, etag=None), st.st_size, None, datetime.fromtimestamp(st.st_mtime, timezone.utc),
                       None)
    return SourceChange(source, was["uri"], "changed", "; ".join(changed)) if changed else None


@dataclass
class SourceCheck:
    checked: int = 0
    changes: list[SourceChange] = field(default_factory=list)
    not_objects: dict[str, int] = field(default_factory=dict)  # per source: fingerprints that are not objects


def check_sources(manifest: dict[str, Any], aws: AwsConfig) -> SourceCheck:
    """HEAD every S3 object (stat every local file) the run read, and list those that changed or vanished."""
    result = SourceCheck()
    objects = []
    for entry in manifest.get("inputs", []):
        for fp in entry.get("fingerprints") or []:
            was = _object(fp) if isinstance(fp, dict) else None
            if was is None:
                result.not_objects[entry["source"]] = result.not_objects.get(entry["source"], 0) + 1
            else:
                objects.append((entry["source"], was))
    client = None
    if any(was["uri"].startswith("s3://") for _, was in objects):
        from .aws import make_client
        client = make_client("s3", aws)

    def one(item):
        source, was = item
        return _check_s3(client, source, was) if was["uri"].startswith("s3://") else _check_local(source, was)

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = list(pool.map(one, objects))
    result.checked = len(objects)
    result.changes = [c for c in found if c is not None]
    return result

