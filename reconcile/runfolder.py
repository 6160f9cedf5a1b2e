"""The run folder: the one owner of its layout, its manifest and the evidence a re-render reads.

    <run>/report.html, summary.json, gaps.csv, verdicts.parquet,   RENDERED: what a run renders from its evidence
          settlements.parquet
    <run>/evidence/<hop>.parquet, <source>.rejects.parquet         each store's ledger and rejects (sources.REGISTRY)
    <run>/evidence/carried.parquet, kind_map.parquet, history.json what a re-render needs besides the ledgers
    <run>/evidence/zendesk-pages/                                  the Zendesk API pages saved as read
    <run>/manifest.json                                            written last: the folder is a finished run

`run` writes a folder, `verify` re-proves one, `publish` packs or uploads one, `trace` and `calibrate` read one; each
goes through this module for the paths and the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__, atomic, outputs, resources
from .summary import iso
from .config import Config, EngineConfig, redact, without_userinfo
from .errors import ConfigError, NotARun, ReconcileError, ReportError, VerifyError
from .ledger import SourceResult
from .recovered import JOURNAL_FILE, PLAN_FILE, PLANS_DIR, RECOVERIES_FILE
from .sources import REGISTRY, Source
from .window import Window, key_of, parse_time

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
EVIDENCE = "evidence"
PREVIOUS = ".previous-run"  # a finished run's files, set aside while a re-run replaces it (RunFolder.reset)
# What a run renders from the evidence; `reconcile verify` re-renders these and compares them byte for byte.
RENDERED = ("verdicts.parquet", "settlements.parquet", "gaps.csv", "summary.json", "report.html")
# The window as the manifest records it, besides start, end and as_of: its durations (in seconds, `<name>_s`; carry_back
# bounds the sink's read both ways) and the sink's read bounds when a run set them (carried events, recoveries);
# window_of reads back what window_record wrote.
WINDOW_DURATIONS = ("margin_before", "margin_after", "max_event_age", "hop_a_grace", "carry_back")
SINK_BOUNDS = ("sink_from", "sink_until")
# Evidence a re-render needs besides the ledgers (docs: `reconcile verify`).
CARRIED_FILE, HISTORY_FILE, KIND_MAP_FILE = "carried.parquet", "history.json", "kind_map.parquet"
ZENDESK_PAGES = "zendesk-pages"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    root: Path

    @property
    def evidence(self) -> Path:
        return self.root / EVIDENCE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def verdicts(self) -> Path:
        return self.root / "verdicts.parquet"

    @property
    def settlements(self) -> Path:
        return self.root / "settlements.parquet"

    @property
    def gaps(self) -> Path:
        return self.root / "gaps.csv"

    def ledger(self, source: Source) -> Path:
        return self.evidence / source.ledger_file

    def rejects(self, source: Source) -> Path:
        return self.evidence / source.rejects_file

    def ledgers(self) -> dict[str, Path]:
        """Every store's ledger, by hop (the engine's view names)."""
        return {s.hop: self.ledger(s) for s in REGISTRY}

    @property
    def carried(self) -> Path:
        return self.evidence / CARRIED_FILE

    @property
    def history(self) -> Path:
        return self.evidence / HISTORY_FILE

    @property
    def kind_map(self) -> Path:
        return self.evidence / KIND_MAP_FILE

    @property
    def recoveries(self) -> Path:
        return self.evidence / RECOVERIES_FILE

    @property
    def recovery_journal(self) -> Path:
        return self.evidence / JOURNAL_FILE

    @property
    def recovery_plans(self) -> Path:
        """evidence/recovery-plans/<digest>.json: the reviewed plans the journal's rows ran."""
        return self.evidence / PLANS_DIR

    @property
    def recovery(self) -> Path:
        """Where `reconcile recover` writes this run's plan (plan.json, plan.csv, plan.sha256)."""
        return self.root / PLAN_FILE.parent

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder for one run from before its reset to its manifest: a second run writing the same folder
        (another state, or none) fails fast instead of deleting the first one's outputs as they are written. An flock
        on the folder itself: no file is added to it, and the kernel lets go however the run ends."""
        fd = os.open(self.root, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReconcileError(f"{self.root} is being written by another run. Wait for it to finish, or pass "
                                     f"another --out.") from None
            except OSError as e:
                # a file system that cannot flock a folder (NFS emulates flock with fcntl locks, which need a file
                # open for writing): nothing to hold, as before the folder was held
                logger.warning("cannot hold %s for this run (%s): a second run into it would not be stopped",
                               self.root, e.strerror)
            yield
        finally:
            os.close(fd)

    def window_key(self) -> str | None:
        """The window of the finished run the folder holds (its manifest's), or None. A run a killed re-run set aside
        (`previous`, no manifest in place: SIGKILL, out of memory) is the folder's run too: reset() puts it back, and
        a run of another window would then delete it."""
        manifest = self.manifest if self.manifest.exists() else self.previous / MANIFEST
        if not manifest.exists():
            return None
        try:
            return key_of(orjson.loads(manifest.read_bytes())["window"])
        except (ValueError, KeyError, TypeError, ConfigError):
            return None  # not a manifest of ours: reset() deals with it as before

    def recorded_in_a_state(self) -> bool:
        """Whether the finished run the folder holds (or a killed re-run set aside) was recorded in a state: its
        evidence holds the history the state gave it."""
        return (self if self.manifest.exists() else RunFolder(self.previous)).history.exists()

    @property
    def previous(self) -> Path:
        """Where reset() sets a finished run's files aside until the run replacing it has its manifest."""
        return self.root / PREVIOUS

    def reset(self) -> None:
        """A re-run of a window replaces its outputs: remove what a previous run left (but keep saved API pages).
        A finished run's files (its manifest and every file it lists) are first set aside in `previous` (hard links:
        nothing is copied, and atomic writes give the new run's files their own): the state still records that run
        until the new one commits, so a re-run that does not finish puts them back (discard_unfinished)."""
        # a run set aside by one then killed outright (no `finally`): back when that one left no manifest, else gone
        if self.manifest.exists():
            self.drop_previous()
        else:
            self.restore_previous()
        if self.manifest.exists():
            for rel in [MANIFEST, *listed_files(self.root, "so it has nothing to set aside")]:
                kept = self.previous / rel
                kept.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self.root / rel, kept)
                except FileNotFoundError:
                    continue  # a file the run listed is gone since: not ours to bring back
                except OSError:  # a file system without hard links
                    shutil.copy2(self.root / rel, kept)
        self._remove_outputs()

    def _remove_outputs(self, strict: bool = True) -> None:
        """The manifest first: a folder missing any file of its run is no finished run (discard_unfinished then puts
        the run set aside back). Not `strict` (a restore): a file that cannot be removed is left for restore_previous,
        which leaves alone a file never removed."""
        paths = [self.root / name for name in (MANIFEST, *RENDERED)]
        if self.evidence.exists():
            paths += [*self.evidence.glob("*.parquet"), self.history]
        for p in paths:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                if strict:
                    raise

    def restore_previous(self) -> None:
        """The finished run reset() set aside, back in place of what the unfinished one left."""
        if not self.previous.exists():
            return
        self._remove_outputs(strict=False)
        # the manifest last: a folder with one is a finished run, which a kill mid-way must not make of half of it
        kept = sorted((p for p in self.previous.rglob("*") if p.is_file()), key=lambda p: (p.name == MANIFEST, p))
        for path in kept:
            live = self.root / path.relative_to(self.previous)
            if live.exists() and os.path.samefile(path, live):
                continue  # never removed (a reset that failed before it, a folder it cannot write): already back
            live.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, live)
        shutil.rmtree(self.previous, ignore_errors=True)

    def drop_previous(self) -> None:
        """The run that replaced the one set aside has its manifest: the old files go."""
        shutil.rmtree(self.previous, ignore_errors=True)

    def discard_unfinished(self) -> None:
        """A run that did not finish (a signal, an error) leaves nothing that looks like a result: no report,
        summary, exports or half-written file. The finished run it was replacing is put back whole (the state still
        records it); with none, its evidence stays, for a look at what was read (without a manifest, `verify`
        refuses the folder). A manifest here means the run committed before the signal: it is kept whole."""
        if self.manifest.exists():
            self.drop_previous()
            return
        if self.previous.exists():
            self.restore_previous()
        else:
            for name in RENDERED:
                (self.root / name).unlink(missing_ok=True)
        for p in self.root.rglob("*.tmp"):
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------- manifest

def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "reconcile": __version__}
    for pkg in ("duckdb", "pyarrow", "pandas", "boto3", "jinja2", "click", "orjson"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def digests(root: Path, pattern: str) -> dict[str, str]:
    """sha256 of every file under `root` matching `pattern`, subfolders included, by path relative to root."""
    return {p.relative_to(root).as_posix(): outputs.sha256_file(p) for p in sorted(root.rglob(pattern)) if p.is_file()}


def code_digests() -> dict[str, dict[str, str]]:
    """The tool's own SQL, templates and Python as the manifest records them (resources.CODE and PYTHON)."""
    out: dict[str, dict[str, str]] = {}
    for kind, root, patterns in resources.CODE:
        out[kind] = {}
        for pattern in patterns:
            out[kind] |= digests(root, pattern)
    kind, root, (pattern,) = resources.PYTHON
    out[kind] = {k: v for k, v in digests(root, pattern).items() if not k.startswith(resources.NOT_PYTHON)}
    return out


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own `manifest_sha256` field: a flipped byte anywhere in it shows."""
    return hashlib.sha256(outputs.dumps({k: v for k, v in manifest.items() if k != "manifest_sha256"})).hexdigest()


def build_manifest(cfg: Config, window: Window, out_dir: Path, results: dict[str, SourceResult],
                   generated_at: datetime, audience: str = "daily") -> dict[str, Any]:
    files = sealed_files(RunFolder(out_dir))
    manifest = {
        "tool": {"name": "reconcile", "version": __version__, "argv": without_userinfo(sys.argv[1:])},
        "generated_at": iso(generated_at),
        "window": window_record(window),
        "audience": audience,
        "config": redact(cfg.to_dict()),
        "inputs": [{"source": r.name, "complete": r.complete, "records": r.records, "rejected": r.rejected,
                    "problems": r.problems, "fingerprints": r.fingerprints, "details": r.details}
                   for r in results.values()],
        **code_digests(),
        "versions": versions(),
        "files": outputs.file_digests(out_dir, files),
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    return manifest


def sealed_files(folder: RunFolder) -> list[Path]:
    """What a manifest seals: the rendered outputs and the evidence, nothing else the folder may hold (a state file
    kept there, a recovery plan made from an earlier run of the window, a file someone added)."""
    missing = [name for name in RENDERED if not (folder.root / name).is_file()]
    if missing:
        raise ReportError(f"{folder.root} lacks {', '.join(missing)}: the run did not write its outputs, so it is not "
                          f"sealed. Run the window again.")
    return [folder.root / name for name in RENDERED] + [
        p for p in folder.evidence.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """The run's commit point: with its manifest, the folder is a finished run."""
    return outputs.write_json(RunFolder(run_dir).manifest, manifest)


@contextlib.contextmanager
def committing(run_dir: Path, manifest: dict[str, Any]) -> Iterator[None]:
    """write_manifest in two steps around the block (the state's commit): the manifest is written in full beside its
    name first, so a disk that fills up fails the run before the state records it, and renamed in once the block
    has run (nothing is renamed when it fails)."""
    with atomic.replacing(RunFolder(run_dir).manifest) as tmp:
        tmp.write_bytes(outputs.dumps(manifest))
        yield


def load_manifest(run_dir: Path) -> tuple[dict[str, Any], bytes]:
    """The manifest and its bytes. No manifest: not a finished run (NotARun, exit 4); a manifest that does not read
    as one: damaged since the run (VerifyError, exit 5)."""
    folder = RunFolder(Path(run_dir))
    path = folder.manifest
    if not path.is_file():
        aside = (f" A finished run is set aside in {folder.previous} (a re-run into the folder was killed): the "
                 f"next run into it puts it back, or move its files back by hand." if folder.previous.exists() else "")
        raise NotARun(f"{run_dir} has no {MANIFEST}, so it is not a finished run. Give the run's output "
                      f"folder (the one holding {MANIFEST} and {EVIDENCE}/).{aside}")
    raw = path.read_bytes()
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise VerifyError(f"{path} is not valid JSON ({e}): it was damaged or edited since the run.") from e
    if not isinstance(manifest, dict) or "files" not in manifest or "window" not in manifest:
        raise VerifyError(f"{path} is not a reconcile manifest (no files or window).")
    return manifest, raw


def listed_files(run_dir: Path, what: str) -> list[str]:
    """The files of a finished run, as its manifest lists them (the manifest itself not included). `what` finishes
    the sentence saying the run did not finish (`so there is nothing to publish`)."""
    path = RunFolder(Path(run_dir)).manifest
    if not path.is_file():
        raise NotARun(f"{run_dir} has no {MANIFEST}: the run did not finish, {what}.")
    return [f["path"] for f in orjson.loads(path.read_bytes())["files"]]


# ---------------------------------------------------------------------------------------------------------- evidence

@dataclass(frozen=True)
class Rendering:
    """Everything `run.render` judges and renders from: what a run has in hand when it finishes, and what `verify`
    rebuilds from a run folder's evidence and manifest alone (`from_folder`).

    results: what each store read (counts, rejects, problems, fingerprints, details); ledgers: their files by hop.
    carried: pending events carried in from earlier windows; kind_map: the emission model the run judged by (None:
    the config's); history: the history an earlier run showed (None: none, or `record` gives it).
    """

    cfg: Config
    window: Window
    evidence: Path
    results: dict[str, SourceResult]
    ledgers: dict[str, Path]
    audience: str
    generated_at: datetime
    carried: pa.Table | None = None
    kind_map: pa.Table | None = None
    history: list | None = None
    engine: EngineConfig | None = None


def window_record(window: Window) -> dict[str, Any]:
    """The window as the manifest records it (window_of reads it back)."""
    return {"start": iso(window.start), "end": iso(window.end), "as_of": iso(window.as_of),
            **{f"{k}_s": getattr(window, k).total_seconds() for k in WINDOW_DURATIONS},
            **{k: iso(getattr(window, k)) for k in SINK_BOUNDS if getattr(window, k)}}


def window_of(manifest: dict[str, Any], cfg: Config) -> Window:
    """The window a manifest records (window_record); a duration a manifest predates takes its default."""
    w = manifest["window"]
    start, end, as_of = (parse_time(w[k]) for k in ("start", "end", "as_of"))
    if "hop_a_grace_s" not in w:  # a manifest from before the window's durations were recorded
        from .run import window_from
        return window_from(cfg, start, end, as_of)
    return Window(start=start, end=end, as_of=as_of,
                  **{k: timedelta(seconds=w[f"{k}_s"]) for k in WINDOW_DURATIONS if f"{k}_s" in w},
                  **{k: parse_time(w[k]) for k in SINK_BOUNDS if w.get(k)})


def evidence_inputs(folder: RunFolder, manifest: dict[str, Any]) -> dict[str, SourceResult]:
    """What each source read, rebuilt from the evidence ledgers and the manifest's record of the read."""
    entries = {i["source"]: i for i in manifest.get("inputs", [])}
    out = {}
    for spec in REGISTRY:
        i = entries.get(spec.name)
        if i is None:
            raise VerifyError(f"{MANIFEST} has no input entry for {spec.name}: it cannot be re-rendered.")
        path = folder.ledger(spec)  # a render needs only its row count
        out[spec.name] = SourceResult(
            spec.name, None, path=path, rows=pq.read_metadata(path).num_rows,
            rejects=pq.read_table(folder.rejects(spec)), complete=i["complete"],
            problems=list(i["problems"]), fingerprints=i["fingerprints"], details=i.get("details", {}))
    return out


def missing_evidence(folder: RunFolder) -> list[str]:
    """The evidence files a re-render cannot do without that the folder lacks."""
    return [f"{EVIDENCE}/{p.name}" for spec in REGISTRY for p in (folder.ledger(spec), folder.rejects(spec))
            if not p.is_file()]


def config_of(manifest: dict[str, Any]) -> Config:
    """The config a manifest records, as a run had it (nothing from this machine's environment)."""
    from . import config
    recorded = dict(manifest["config"])
    engine_keys = dict(recorded.get("engine") or {})
    if isinstance(engine_keys.get("memory_limit"), str) and config.memory_bytes(engine_keys["memory_limit"]) < \
            config.MIN_MEMORY:
        # a run made before the least was enforced: the re-render's memory does not change what it renders
        engine_keys.pop("memory_limit")
        recorded["engine"] = engine_keys
    return config.build(None, recorded, environ={})


def rendering_from(folder: RunFolder, manifest: dict[str, Any]) -> Rendering:
    """A run's Rendering from its folder and manifest alone (no state, no network)."""
    cfg = config_of(manifest)
    # The engine's temp directory was the run machine's; memory and threads stay as the run had them.
    engine = EngineConfig(memory_limit=cfg.engine.memory_limit, threads=cfg.engine.threads)
    return Rendering(
        cfg=cfg, window=window_of(manifest, cfg), evidence=folder.evidence,
        results=evidence_inputs(folder, manifest), ledgers=folder.ledgers(),
        audience=manifest.get("audience", "daily"), generated_at=parse_time(manifest["generated_at"]),
        carried=pq.read_table(folder.carried) if folder.carried.exists() else None,
        kind_map=pq.read_table(folder.kind_map) if folder.kind_map.exists() else None,
        history=orjson.loads(folder.history.read_bytes()) if folder.history.exists() else None, engine=engine)
