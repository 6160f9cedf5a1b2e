"""`reconcile verify`: re-prove a run from its evidence alone, byte for byte; optionally check its inputs still stand.

A run's folder is its evidence bundle: manifest.json (window, config, inputs with fingerprints and details, sha256 of
every file, query and template) and evidence/ (ledgers, rejects, carried-in pending events, shown history, kind map).
`verify` checks every sha256, then runs the same code a run renders with (`run.render`) on the evidence only, into a
temp dir, and compares each output byte for byte, naming the figures that differ. No network, no state file.

Here: the integrity checks (sha256 of the manifest, files and code) and the re-render. How a file differs, per
figure: verify_diff.py. `--against-sources` (HEAD the live objects the manifest fingerprints): verify_sources.py.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__, completeness, outputs, recovered, resources, run, runfolder
from .errors import ConfigError, QueryError, Unverifiable, VerifyError
from .ledger import SourceResult
from .runfolder import MANIFEST, RunFolder, load_manifest
from .sources import source, zendesk
from .verify_diff import diff_csv, diff_parquet, diff_report, diff_summary
from .window import key_of, zendesk_reach

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

def check_manifest(manifest: dict[str, Any], raw: bytes) -> list[Difference]:
    out = []
    if "manifest_sha256" not in manifest:
        return [Difference("manifest.json", "has no manifest_sha256 (written by an older reconcile?): the manifest "
                                            "itself cannot be checked")]
    if manifest["manifest_sha256"] != runfolder.manifest_digest(manifest):
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
    """The SQL and templates this tool would render with must be the ones the run used; its Python is compared too,
    a difference noted (resources.PYTHON)."""
    diffs, notes = [], []
    tool = runfolder.code_digests()
    for kind, root, _ in resources.CODE:
        now = tool[kind]
        for name, digest in sorted(manifest.get(kind, {}).items()):
            if now.get(name) != digest:
                what = "missing from this tool" if name not in now else "differs from the one the run used"
                diffs.append(Difference(f"{root.name}/{name}", f"{what} (sha256): verify with the reconcile version "
                                                               f"that made the run"))
        for name in sorted(set(now) - set(manifest.get(kind, {}))):
            notes.append(f"{root.name}/{name}: added since the run (not used by it)")
    kind, root, _ = resources.PYTHON
    if kind in manifest:  # a run made before its Python was fingerprinted has none to compare
        now, then = tool[kind], manifest[kind]
        changed = sorted(n for n in set(now) | set(then) if now.get(n) != then.get(n))
        if changed:
            shown = ", ".join(f"{root.name}/{n}" for n in changed[:5]) + (" ..." if len(changed) > 5 else "")
            notes.append(f"this tool's Python differs from the one the run used in {len(changed)} file(s) ({shown}): "
                         f"a figure that differs may come from the code, not the evidence; verify with the reconcile "
                         f"build that made the run to tell")
    made_by = manifest.get("versions", {})
    for pkg, version in sorted(runfolder.versions().items()):
        if made_by.get(pkg) not in (None, version):
            notes.append(f"{pkg} {version} here, the run used {made_by[pkg]}")
    return diffs, notes


# ---------------------------------------------------------------------------------------------------------- re-render

def check_inputs(run_dir: Path, manifest: dict[str, Any]) -> list[Difference]:
    """Stores the manifest records as read whole that its own evidence says were not: completeness's one rule
    (completeness.decide) applied again to the bundled rejects and ledgers. Only a bug or a hand-edited manifest (its
    digests recomputed) makes one: a "clean" run resting on a read its evidence shows was partial."""
    try:
        recorded = runfolder.evidence_inputs(RunFolder(run_dir), manifest)
        decided = completeness.decide_all(recorded)
    except (KeyError, TypeError, ValueError, VerifyError, OSError, pa.ArrowException):
        return []  # evidence of another shape than a run writes: the digests and the re-render name it
    out = []
    for name, again in decided.items():
        if recorded[name].complete and not again.complete:
            why = " ".join(again.problems[len(recorded[name].problems):])
            out.append(Difference(MANIFEST, f"inputs.{name}: recorded as read whole, but its evidence says it was "
                                            f"not: {why}"))
    return out


def check_zendesk(run_dir: Path, manifest: dict[str, Any]) -> tuple[list[Difference], list[str]]:
    """The Zendesk ledger and rejects must be what the API pages the evidence bundles make: the pages the read took,
    in its order, each by its sha256 (zendesk.from_pages), written as a run writes them. Re-rendering cannot tell: a
    ledger with an event edited out (its digests recomputed) renders a consistent day without it."""
    entry = next((i for i in manifest.get("inputs", []) if i.get("source") == zendesk.NAME), None)
    taken = (entry or {}).get("fingerprints") or []
    pages = RunFolder(run_dir).evidence / runfolder.ZENDESK_PAGES
    details = (entry or {}).get("details") or {}
    try:
        saved_here = not runfolder.config_of(manifest).zendesk.pages_dir
    except (ValueError, ConfigError):
        saved_here = False  # check_files and the re-render name a manifest whose config does not read
    if saved_here and "replayed_pages" in details:  # the API read (zendesk.read), its pages saved in the run folder
        # the re-derivation is not to be switched off: the manifest's record of the pages emptied, or their folder
        # removed, with the ledger edited and every digest recomputed, verified clean
        if details.get("pages") and not taken:
            return [Difference(MANIFEST, f"inputs.zendesk: the read took {details['pages']:,} API page(s), and the "
                                         f"manifest names none of them")], []
        if taken and not pages.is_dir():
            return [Difference(f"{runfolder.EVIDENCE}/{runfolder.ZENDESK_PAGES}",
                               f"missing: the read saved the {len(taken):,} API page(s) it took there")], []
    if not taken:
        return [], []  # no page was read (a store not configured, a ledger given whole): nothing to re-derive from
    if not pages.is_dir() or not all(isinstance(f, dict) and {"file", "sha256"} <= set(f) for f in taken):
        return [], ["the Zendesk ledger was not re-derived: the evidence holds no API pages it was read from "
                    "([zendesk] pages_dir outside the run folder)"]
    spec = source(zendesk.NAME)
    try:
        cfg = runfolder.config_of(manifest)
        made, rejects = zendesk.from_pages(pages, taken, runfolder.window_of(manifest, cfg),
                                           zendesk_reach(cfg.match.tolerance_seconds))
    except ValueError as e:
        return [Difference(f"{runfolder.EVIDENCE}/{runfolder.ZENDESK_PAGES}", str(e))], []
    out = []
    with tempfile.TemporaryDirectory(prefix="reconcile-verify-") as tmp:
        again = Path(tmp)
        spec.write_evidence(SourceResult(spec.name, made, rejects), again)  # as the run wrote it
        for name in (spec.ledger_file, spec.rejects_file):
            found = RunFolder(run_dir).evidence / name
            if found.is_file() and found.read_bytes() != (again / name).read_bytes():
                out += [Difference(f"{runfolder.EVIDENCE}/{name}", f"not what the bundled Zendesk pages make: {d}")
                        for d in diff_parquet(found, again / name)[:DETAILS_PER_FILE]]
    return out, []


def rerender(run_dir: Path, manifest: dict[str, Any], into: Path) -> None:
    """Render the run's outputs again into `into` from run_dir's evidence and manifest alone."""
    run.render(runfolder.rendering_from(RunFolder(run_dir), manifest), into)




def compare(run_dir: Path, rendered: Path) -> list[Difference]:
    out = []
    for name in runfolder.RENDERED:
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


def unbundled_plans(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """The recovery plans of the run's own window its journal names that its evidence does not hold (a plan made in
    a folder the state does not know, or published with --out s3://): the recoveries judged are in the evidence, the
    reviewed plan they were sent by is not, so what was sent cannot be checked against what was reviewed. (The journal
    holds every window's rows: other windows' plans are their runs' business.)"""
    evidence = RunFolder(run_dir).evidence
    journal = evidence / recovered.JOURNAL_FILE
    if not journal.exists():
        return []
    try:
        key = key_of(manifest["window"])
        rows = pq.read_table(journal, columns=["plan_digest", "window_key"]).to_pylist()
    except (OSError, pa.ArrowException, KeyError, TypeError, ConfigError):  # check_files names a damaged file
        return []
    named = {r["plan_digest"] for r in rows if r["window_key"] == key} - {None}
    absent = sorted(d for d in named if not (evidence / recovered.PLANS_DIR / f"{d}.json").exists())
    if not absent:
        return []
    return [f"the recovery journal names {len(absent)} plan(s) the evidence does not hold "
            f"({', '.join(d[:12] for d in absent)}): the recoveries judged cannot be checked against the plan "
            f"reviewed. Keep each plan in the run folder it was made from (reconcile recover RUN_DIR), where the next "
            f"run finds it"]


def edited_plans(run_dir: Path) -> list[Difference]:
    """The recovery plans the evidence holds are each named by their sha256, the digest the reviewer approved and
    the journal's rows name: one whose bytes are not that (edited, the manifest resealed) is not the plan reviewed."""
    plans = RunFolder(run_dir).evidence / recovered.PLANS_DIR
    return [Difference(f"{runfolder.EVIDENCE}/{recovered.PLANS_DIR}/{p.name}",
                       "not the plan reviewed: its sha256 is not its name (the digest the recovery journal names)")
            for p in sorted(plans.glob("*.json")) if hashlib.sha256(p.read_bytes()).hexdigest() != p.stem]


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
    v.notes += unbundled_plans(run_dir, manifest)
    v.differences += edited_plans(run_dir)
    missing = runfolder.missing_evidence(RunFolder(run_dir))
    if missing:
        v.differences.append(Difference("evidence", f"cannot re-render without {', '.join(missing)}"))
        return v
    v.differences += check_inputs(run_dir, manifest)
    diffs, notes = check_zendesk(run_dir, manifest)
    v.differences += diffs
    v.notes += notes
    with tempfile.TemporaryDirectory(prefix="reconcile-verify-") as tmp:
        try:
            rerender(run_dir, manifest, Path(tmp))
        except KeyError as e:
            if v.differences:  # the manifest or a file differs already: the missing key is part of that
                v.differences.append(Difference("evidence", f"cannot be re-rendered: the manifest has no {e}"))
                return v
            # The manifest is intact (its own digest matched), so a key it lacks is a format this tool does not
            # read, not a change since the run: say so rather than call the evidence different.
            raise Unverifiable(f"{run_dir} cannot be re-rendered by reconcile {__version__}: its intact manifest has no "
                          f"{e} (made by reconcile {manifest.get('tool', {}).get('version', '?')}). Verify it with "
                          f"the reconcile version that made it.") from e
        except Exception as e:  # noqa: BLE001 - a manifest already found changed may hold anything
            expected = (pa.ArrowException, duckdb.Error, QueryError, OSError, ValueError)
            if not isinstance(e, expected) and not v.differences:
                raise
            v.differences.append(Difference("evidence", f"cannot be re-rendered: {type(e).__name__}: {e}"))
            return v
        v.differences += compare(run_dir, Path(tmp))
    return v
