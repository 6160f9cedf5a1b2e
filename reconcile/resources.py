"""Where the tool's own files are: SQL (queries/) and templates (reports/), shipped with the package.

The single place that knows the layout, so an installed wheel and a checkout find them alike.
"""

from __future__ import annotations

from pathlib import Path

# A checkout keeps queries/ and reports/ at the top of the repo (the design card fixes them there).
_ROOT = Path(__file__).resolve().parent.parent
QUERY_DIR = _ROOT / "queries"
TEMPLATE_DIR = _ROOT / "reports"


def query_file(name: str) -> Path:
    return QUERY_DIR / name
