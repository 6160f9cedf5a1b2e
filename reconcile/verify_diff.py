"""How a rendered output differs from its re-render, said per figure: the four differs `reconcile verify` uses.

summary.json by dotted path of each figure, report.html by its data-figure elements, gaps.csv by row and column,
verdicts.parquet by column and first row. Each returns lines for a person; none decides anything.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import outputs


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
