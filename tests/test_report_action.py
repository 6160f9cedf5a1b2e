"""The report for action: every view says where to start, the gap table leads with the losses, ids never wrap, the
inputs read as words, the audit view says how to re-prove the run, the charts fit their data, and the demo report
renders in Chromium at 1024 and 1440 px and prints to PDF.

Set REPORT_SHOTS=<folder> to keep the screenshots and the PDF there (the lead looks at them)."""

import os
import re
import shutil
import subprocess
import sys

import orjson
import pytest
from bs4 import BeautifulSoup

from reconcile import emission, report

from tinyday import produce_report as produce

LOSSES = [v["verdict"] for v in emission.verdict_rows() if v["loss_hop"]]
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module", params=["daily", "incident", "audit"])
def view(request, tmp_path_factory):
    return produce(tmp_path_factory.mktemp(request.param), audience=request.param)


def test_every_view_says_where_to_start(view):
    s, _, soup = view
    start = soup.select_one("#status #start")
    assert start is not None and start.h2.get_text() == "Where to start"
    text = " ".join(start.get_text(" ", strip=True).split())
    for hop in s["hops"]:
        assert f"{report.HOP_LABELS[hop['name']]}: {hop['lost']} lost" in text
    # the first loss of each hop with a loss comes with the command to trace it
    loss_hints = [h for h in s["trace_hints"] if h["verdict"] in LOSSES]
    commands = [c.get_text() for c in start.select(".hints code")]
    assert loss_hints and sorted(commands) == sorted(f"reconcile trace {h['trace_id']}" for h in loss_hints)
    assert "every input was read completely" in text
    audience = soup.body["class"][0].removeprefix("audience-")
    verify = [c.get_text() for c in start.select("pre.verify")]
    assert verify == (["reconcile verify RUN_FOLDER", "reconcile verify RUN_FOLDER --against-sources"]
                      if audience == "audit" else [])
    # every view's Run section says how to re-prove it
    assert [c.get_text() for c in soup.select("#run pre.verify")][0] == "reconcile verify RUN_FOLDER"


def test_incomplete_inputs_say_what_to_do(tmp_path):
    # the tiny day's summary with its bus log marked partly read, as a source reports it
    s, _, _ = produce(tmp_path)
    s = orjson.loads(orjson.dumps(s))
    s["inputs"][1].update(complete=False, problems=["listing s3://logs/exports stopped: AccessDenied"])
    html = report.render(report.ReportContext(summary=s, gaps=[], audience="daily"))
    start = BeautifulSoup(html, "html.parser").select_one("#start")
    text = " ".join(start.get_text(" ", strip=True).split())
    assert f"{s['inputs'][1]['source']} only partly read" in text and "reconcile check" in text
    assert "re-run the same window" in text


def test_gap_table_leads_with_the_losses(view):
    s, _, soup = view
    groups = [d["id"].removeprefix("gaps-") for d in soup.select("#gaps details.gap-group")]
    index = [a["href"].removeprefix("#gaps-") for a in soup.select("#gaps .gap-index a")]
    assert groups == index  # every group in the index has its table, in the same order
    order = [g["key"] for g in report.gap_groups()]
    assert index == sorted(index, key=order.index)
    assert index[: len([g for g in index if g in LOSSES])] == [g for g in index if g in LOSSES]
    assert {"duplicated", "unlogged", "orphan"} <= set(index)  # the tiny day has all three, below the losses
    first_other = min(index.index(g) for g in ("duplicated", "unlogged", "orphan"))
    assert all(index.index(g) < first_other for g in index if g in LOSSES)
    assert s["gaps"]["groups"] and sum(s["gaps"]["groups"].values()) == s["gaps"]["count"]
    for d in soup.select("#gaps details.gap-group"):
        key = d["id"].removeprefix("gaps-")
        assert d.has_attr("open") == (key in LOSSES), key  # losses open, the rest collapsed
        rows = d.select("tbody tr")
        assert len(rows) == min(s["gaps"]["groups"][key], report.GAP_GROUP_ROWS), key


def test_ids_never_wrap(view):
    _, html, soup = view
    css = " ".join(t.get_text() for t in soup.find_all("style"))
    rule = re.search(r"td\.id,[^{]*\{([^}]*)\}", css)
    assert rule and "white-space: nowrap" in rule.group(1)
    cells = soup.select("table.gaps tbody tr")
    for tr in cells:
        tds = tr.find_all("td")
        assert "id" in tds[5]["class"] and "id" in tds[6]["class"]
    for code in soup.select("#start .hints code"):
        assert "cmd" in code["class"]


def test_inputs_read_as_words(view):
    _, _, soup = view
    table = soup.select_one("#coverage table.inputs")
    text = table.get_text(" ", strip=True)
    for raw in ("['", "{'", "True", "False", "None"):
        assert raw not in text, raw
    if soup.select_one("#coverage td.details"):
        # the tiny day's zendesk end_time (epoch seconds) is shown as a time
        assert "2026-11-24T00:00:00Z" in text and "1795478400" not in text


def test_detail_rows_format_for_people():
    rows = {r["key"]: r for r in report.detail_rows({
        "uri": "s3://logs/exports", "end_time": 1795481837, "waited_s": 2.5, "sampled": False, "tail_pending": True,
        "partial": [], "pages_set_aside": None, "leftover_names": ["s3://a/1.parquet", "s3://a/2.parquet"],
        "totals": {"FailedInvocations": 256.0, "MatchedEvents": 2784.0}, "commit_log": True, "pages": 2})}
    assert set(rows) == {"uri", "end time", "waited", "tail pending", "leftover names", "totals", "commit log", "pages"}
    assert rows["end time"] == {"key": "end time", "kind": "ts", "value": "2026-11-24T00:57:17Z"}
    assert rows["waited"]["kind"] == "secs" and rows["commit log"]["value"] == "yes"
    assert rows["leftover names"]["value"] == ["s3://a/1.parquet", "s3://a/2.parquet"]
    assert rows["totals"]["value"] == [("FailedInvocations", "256"), ("MatchedEvents", "2,784")]


def test_axis_fits_the_peak():
    assert report.axis(21) == (25, [0, 5, 10, 15, 20, 25])
    assert report.axis(3) == (3, [0, 1, 2, 3])
    assert report.axis(0) == (1, [0, 1])
    for peak in (1, 7, 13, 99, 101, 730, 6944, 41_000):
        top, ticks = report.axis(peak)
        assert peak <= top < 1.5 * peak + 1 and ticks[0] == 0 and ticks[-1] == top and len(ticks) <= 6, peak


def test_charts_have_axes_and_fit(view):
    s, _, soup = view
    svg = soup.select_one("#timeline svg.timeline-chart")
    # one stacked-bar panel of gaps (no overlapping per-hop lines), its top tick the fitted peak
    assert not svg.select("polyline")
    peak = max(sum(r[k] for k in report.LOSS_SERIES) for r in s["timeline"])
    ticks = [t.get_text() for t in svg.select("text.tick[text-anchor=end]")]
    assert str(report.axis(peak)[0]) in ticks
    for hist in soup.select("#latency svg.hist"):
        assert [t.get_text() for t in hist.select("text.tick[text-anchor=end]")][0] == "0"  # a y axis
    funnel = soup.select_one("#funnel svg.funnel-chart")
    width = float(funnel["viewbox"].split()[2])
    for t in funnel.select("text.flost"):
        assert float(t["x"]) + 7.5 * len(t.get_text()) <= width  # 12.5 px text: at most ~7.5 px a character


# --- Chromium: the demo report at two widths and printed ----------------------------------------------------------

def chromium(tmp_path, *args):
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args],
                   check=True, capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, "-m", "reconcile", "demo", "--out", str(out / "demo"), "--events", "600",
                           "--no-progress", "--state", str(out / "state.duckdb")],
                          capture_output=True, timeout=300, cwd=out)
    assert done.returncode == 2, done.stderr.decode()[-2000:]  # the demo injects losses: exit 2 (loss)
    return out / "demo" / "run" / "report.html"


@pytest.mark.skipif(CHROMIUM is None,
                    reason="Debian's chromium is not installed (apt-get install -y chromium); cannot render")
def test_demo_report_renders_at_two_widths_and_prints(tmp_path, demo_report):
    soup = BeautifulSoup(demo_report.read_text(), "html.parser")
    assert soup.select_one("#status #start") and soup.select("#gaps details.gap-group[open]")
    files = []
    for width in (1024, 1440):
        png = tmp_path / f"report-{width}.png"
        chromium(tmp_path, f"--screenshot={png}", f"--window-size={width},6000", demo_report.as_uri())
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000
        assert int.from_bytes(data[16:20], "big") == width  # IHDR: the page was laid out at that width
        files.append(png)
    pdf = tmp_path / "report.pdf"
    chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", demo_report.as_uri())
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 50_000
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert 2 <= pages <= 60, pages
    files.append(pdf)
    if os.environ.get("REPORT_SHOTS"):
        keep = os.path.abspath(os.environ["REPORT_SHOTS"])
        os.makedirs(keep, exist_ok=True)
        for f in files:
            shutil.copy(f, os.path.join(keep, "demo-" + f.name))
