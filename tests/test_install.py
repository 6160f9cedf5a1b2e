"""The wheel is the product: built from this checkout, installed in fresh venvs outside it, it runs the demo and
re-proves the run with `reconcile verify` (no "missing from this tool" for SQL or templates).

Every supported Python found on the machine gets a venv (3.11 is this interpreter; 3.12 when installed). The demo
runs once, under the newest, and every venv verifies it and answers `python -m reconcile --help`. `uv` (from the
test extra) makes the venvs in seconds; without it pip does the same, slower.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
SUPPORTED = ("3.11", "3.12")  # requires-python and the versions the README names
DEMO_EVENTS = 400


def interpreters() -> dict[str, str]:
    """Supported version -> an interpreter for it, from PATH (python3.12, …), pyenv's installs (whose PATH shims
    answer only for the selected version) and this one."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for v in SUPPORTED:
        pyenv = sorted(Path.home().glob(f".pyenv/versions/{v}.*/bin/python{v}"))
        for exe in [shutil.which(f"python{v}"), *map(str, pyenv)]:
            if v not in found and exe and subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0:
                found[v] = exe
    return found


def uv() -> str | None:
    here = Path(sys.executable).parent / "uv"
    return str(here) if here.exists() else shutil.which("uv")


def sh(*args, cwd: Path, env: dict | None = None, ok=(0,)) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode in ok, f"{' '.join(map(str, args))} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def build_wheel(dest: Path) -> Path:
    """From a copy of what a clone holds (setuptools writes build/ beside the sources: not into the checkout)."""
    src = dest / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md", "reconcile", "queries", "reports"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy2
        copy(REPO / item, src / item, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                          if (REPO / item).is_dir() else {}))
    if uv():
        sh(uv(), "build", "--wheel", "--out-dir", dest, src, cwd=dest)
    else:
        sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dest, src, cwd=dest)
    (wheel,) = dest.glob("reconcile-*.whl")
    return wheel


def make_venv(python: str, where: Path, wheel: Path, extras: str = "[demo]") -> Path:
    if uv():
        sh(uv(), "venv", "-q", "--python", python, where, cwd=where.parent)
        sh(uv(), "pip", "install", "-q", "--python", where / "bin" / "python", f"{wheel}{extras}", cwd=where.parent)
    else:
        sh(python, "-m", "venv", where, cwd=where.parent)
        sh(where / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}{extras}", cwd=where.parent)
    return where / "bin"


def test_wheel_installed_outside_the_checkout_runs_demo_and_verify(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"reconcile/{p.relative_to(REPO)}" for folder in ("queries", "reports")
               for p in (REPO / folder).rglob("*") if p.suffix in (".sql", ".csv", ".j2")}
    assert shipped and shipped <= names, f"not in the wheel: {sorted(shipped - names)}"

    work = tmp_path / "elsewhere"  # nothing of the checkout on the path: cwd is outside it, no PYTHONPATH
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RECONCILE_STATE") and not k.startswith("AWS_")}
    found = interpreters()
    for v in sorted(set(SUPPORTED) - set(found)):
        warnings.warn(f"Python {v} is supported but no python{v} is on PATH here: the wheel was not tested with it")
    venvs = {v: make_venv(exe, tmp_path / f"venv-{v}", wheel) for v, exe in sorted(found.items())}
    for v, bin_dir in venvs.items():
        where = sh(bin_dir / "python", "-c", "import reconcile.resources as r, sys; "
                   "print(sys.version_info[:2]); print(r.__file__); print(r.QUERY_DIR); print(r.TEMPLATE_DIR)",
                   cwd=work, env=env).stdout.split("\n")
        assert where[0] == str(tuple(int(x) for x in v.split(".")))
        assert all(line.startswith(str(tmp_path / f"venv-{v}")) for line in where[1:4]), where
        assert "Usage: reconcile" in sh(bin_dir / "python", "-m", "reconcile", "--help", cwd=work, env=env).stdout

    newest = venvs[max(venvs, key=lambda v: tuple(map(int, v.split("."))))]
    # The demo day has losses by design: exit 1, 2 (or 3 while an input is incomplete) is an answer, not a failure.
    # in a shell whose RECONCILE_STATE names a real state: the demo's simulated runs never enter it
    production = tmp_path / "production" / "reconcile-state.duckdb"
    demo = sh(newest / "reconcile", "demo", "--out", "demo-out", "--events", DEMO_EVENTS, "--no-progress", "--json",
              cwd=work, env={**env, "RECONCILE_STATE": str(production)}, ok=(0, 1, 2, 3))
    assert not production.parent.exists()
    assert "not in RECONCILE_STATE (a real state): pass --state reconcile-out/reconcile-state.duckdb" in demo.stderr
    summary = orjson.loads(demo.stdout)
    assert summary["events"] > 0 and (work / "demo-out" / "run" / "report.html").is_file()
    assert summary["report"] == str((work / "demo-out" / "run" / "report.html").resolve())
    assert (work / "reconcile-out" / "reconcile-state.duckdb").is_file()  # the one default state location
    assert "20261123" in sh(newest / "reconcile", "history", cwd=work, env=env).stdout
    for v, bin_dir in venvs.items():
        checked = sh(bin_dir / "reconcile", "verify", "demo-out/run", cwd=work, env=env)
        assert "missing from this tool" not in checked.stdout + checked.stderr
        assert "matches its evidence" in checked.stderr

    # a production install (no extras, so no moto): the CLI works, and the demo says what it lacks
    bare = make_venv(sys.executable, tmp_path / "venv-bare", wheel, extras="")
    assert "Usage: reconcile" in sh(bare / "reconcile", "--help", cwd=work, env=env).stdout
    no_demo = sh(bare / "reconcile", "demo", "--out", "bare-out", "--events", DEMO_EVENTS, "--no-progress", cwd=work,
                 env=env, ok=(4,))
    assert "the wheel with [demo]" in no_demo.stderr and "Traceback" not in no_demo.stderr
