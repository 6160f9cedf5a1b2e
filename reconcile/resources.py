"""Where the tool's own files are: SQL (queries/) and templates (reports/), shipped with the package.

The single place that knows the layout, so an installed wheel and a checkout find them alike. A checkout keeps
queries/ and reports/ at the top of the repo (the design card fixes them there); pyproject.toml installs them as the
packages `reconcile.queries` and `reconcile.reports` (the wheel copies them in; an editable install maps them to the
checkout's folders), so both are found through importlib.resources and nothing here guesses a path.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ConfigError


def _folder(package: str) -> Path:
    try:
        found = files(package)
    except ModuleNotFoundError:  # `python -m reconcile` in a checkout: its reconcile/ hides the installed package
        raise ConfigError(f"{package} is not found: the reconcile package imported from {Path(__file__).parent} is a "
                          f"source checkout without it (queries/ and reports/ sit beside it there). Run from outside "
                          f"the checkout, or install it in place with `pip install -e .`.") from None
    # DuckDB and Jinja2 read real files; a zipped install (zipimport) would hand back a zip path.
    if not isinstance(found, Path):
        raise ConfigError(f"{package} is installed as {found!r}, not as a folder. Install reconcile with pip "
                          f"(a wheel or `pip install -e .`), not as a zip.")
    return found


QUERY_DIR = _folder("reconcile.queries")
TEMPLATE_DIR = _folder("reconcile.reports")

# What the manifest fingerprints, and verify compares with the tool it runs under: (manifest key, folder, patterns).
CODE = (("queries", QUERY_DIR, ("*.sql", "*.csv")), ("templates", TEMPLATE_DIR, ("*.j2",)))
# The Python that computes the rest (summary, report filters): fingerprinted too, and a difference is a note, not a
# failure (a build may change code without changing a figure), so an auditor can tell code drift from tampering.
# In a wheel, queries/ and reports/ sit inside the package: their *.py are left out (they hold no code).
PYTHON = ("python", Path(__file__).resolve().parent, ("*.py",))
NOT_PYTHON = ("queries/", "reports/")


def query_file(name: str) -> Path:
    """A file in queries/, e.g. `emission_model.csv` or `state/schema.sql`."""
    return QUERY_DIR / name
