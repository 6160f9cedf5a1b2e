"""The gap report: every figure equals summary.json, stable anchors, nothing from the network, hostile input inert,
audiences order and trim the same sections, Chromium renders it, and a 10 M-event day stays small and fast."""

import re
import shutil
import subprocess
from datetime import timedelta

import orjson
import pytest
from bs4 import BeautifulSoup

from reconcile import config, emission, ledger, report, summary
from reconcile import run as job
from reconcile.errors import ConfigError

from ledgers import DAY
from tinyday import produce_report as produce

ANCHORS = ("status", "funnel", "timeline", "causes", "metrics", "latency", "duplicates", "pending", "coverage",
           "gaps", "run")
NAME_KEYS = ("name", "source", "hop", "metric")


def resolve(obj, path: str):
    """The summary.json value at a dotted path; list items by index or by their name/source/hop/metric."""
    for part in path.split("."):
        if isinstance(obj, list):
            obj = obj[int(part)] if part.isdigit() else next(x for x in obj if part in [x.get(k) for k in NAME_KEYS])
        else:
            obj = obj[part]
    return obj


def figures(soup):
    return [(el["data-figure"], el.get("data-format", "num"), el.get_text(strip=True))
            for el in soup.select("[data-figure]")]


@pytest.fixture(scope="module", params=["daily", "incident", "audit"])
def rendered(request, tmp_path_factory):
    return produce(tmp_path_factory.mktemp(request.param), audience=request.param)


def test_every_figure_equals_summary_json(rendered):
    s, _, soup = rendered
    stored = orjson.loads(orjson.dumps(s))  # what summary.json holds
    shown = figures(soup)
    assert len(shown) > 60
    for path, fmt, text in shown:
        assert text == report.FORMATS[fmt](resolve(stored, path)).strip(), path


def test_headline_figures_are_marked(rendered):
    _, _, soup = rendered
    paths = {p for p, _, _ in figures(soup)}
    assert {"status", "window.start", "hops.zendesk_to_bus.loss_rate", "hops.bus_to_sink.threshold", "events",
            "gaps.count", "verdicts.pending", "tool.version"} <= paths


def test_match_kinds_are_explained_from_the_vocabulary(rendered):
    """The funnel lists each kind of match with its count and says what each means, both from
    queries/match_kinds.csv: a kind added there is counted and explained without touching the template."""
    s, _, soup = rendered
    kinds = emission.match_kind_rows()
    assert [k["match_kind"] for k in kinds] == list(s["matching"])
    legend = soup.select_one("#funnel").find_next(string=re.compile("^exact: ")).parent.get_text(" ", strip=True)
    for k in kinds:
        assert f"{k['match_kind']}: {k['meaning']}" in legend, k["match_kind"]


def test_daily_view_shows_every_breakdown(tmp_path):
    s, _, soup = produce(tmp_path)
    paths = {p for p, _, _ in figures(soup)}
    assert {"timeline.0.events", "latency.end_to_end.p99", "metrics_check.MatchedEvents.difference",
            "dlq_causes.0.retry_condition", "dlq_errors.0.error_message", "silent_losses.2.kind",
            "loss_by_type.0.lost_before_bus", "duplicates.1.extra_copies", "orphan_causes.0.in_sink",
            "unlogged_causes.0.reason", "pending_events.0.age_s", "matching.ambiguous",
            "inputs.dlq.rejected", "inputs.zendesk.fingerprints.digest", "inputs.zendesk.fingerprints.bytes"} <= paths
    assert soup.select_one('[data-figure="pending_events.0.age_s"]').get_text() == "2.5 h"


def test_every_anchor_exists(rendered):
    _, _, soup = rendered
    for anchor in ANCHORS:
        assert len(soup.select(f"#{anchor}")) == 1, anchor


def test_nothing_loads_from_the_network(rendered):
    _, html, soup = rendered
    assert not soup.find_all(["script", "iframe", "object", "embed", "img", "link", "base"])
    for el in soup.find_all(True):
        for name, value in el.attrs.items():
            value = " ".join(value) if isinstance(value, list) else value
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
                assert value.startswith("#"), (el.name, name, value)
            assert not re.match(r"\s*(https?:|//|ftp:|javascript:)", value, re.I), (el.name, name, value)
    styles = " ".join(t.get_text() for t in soup.find_all("style")) + " ".join(
        el["style"] for el in soup.find_all(style=True))
    assert "url(" not in styles and "@import" not in styles and "@font-face" not in styles
    csp = soup.find("meta", attrs={"http-equiv": "Content-Security-Policy"})["content"]
    assert "default-src 'none'" in csp


def test_audiences_order_and_trim_the_same_sections(tmp_path):
    for audience, first in (("daily", ["status", "funnel", "timeline"]), ("incident", ["status", "timeline", "gaps"]),
                            ("audit", ["status", "coverage", "funnel"])):
        _, _, soup = produce(tmp_path / audience, audience=audience)
        order = [el["id"] for el in soup.select("main > [id]")]
        assert sorted(order) == sorted(ANCHORS) and order[:3] == first
        # every view says where to start, inside the status header: the first loss to trace leads
        hints = [c.get_text() for c in soup.select("#status #start code") if c.get_text().startswith("reconcile trace")]
        assert hints[0] == "reconcile trace 6"  # the earliest gap: lost before the bus
        # the incident view adds one event to trace for every other kind of gap
        assert bool(soup.select("#start #trace")) == (audience == "incident")
        trimmed = {el.find_parent(["section", "footer", "header"])["id"] for el in soup.select(".trimmed")}
        assert trimmed == set(report.BRIEF[audience])


def test_metrics_not_available(tmp_path):
    _, _, soup = produce(tmp_path, metrics=False)
    assert "Metrics not available" in soup.select_one("#metrics .empty").get_text()
    assert not soup.select("#metrics table")


def test_metric_disagreement_is_highlighted(rendered):
    s, _, soup = rendered
    rows = {r["metric"]: r for r in s["metrics_check"]}
    assert rows["MatchedEvents"]["difference"] == 0 and rows["MatchedEvents"]["agrees"]
    assert rows["Invocations"]["difference"] is None  # no datapoints: not available, not a disagreement
    flagged = {tr.th.get_text() for tr in soup.select("#metrics tr.row-warn")}
    assert flagged == {m for m, r in rows.items() if r["agrees"] is False}


def test_hostile_input_renders_as_inert_text(tmp_path):
    s, html, soup = produce(tmp_path, hostile=True)
    assert not soup.find_all("script")
    assert len(html) < 300_000  # the 1 MB record is cut
    # the gap table keeps its shape: every row has as many cells as the header
    tables = soup.select("table.gaps")
    for table in tables:
        width = len(table.thead.find_all("th"))
        assert all(len(tr.find_all(["td", "th"])) == width for tr in table.tbody.find_all("tr"))
    kind_cells = [td for table in tables for td in table.find_all("td") if "alert(1)" in td.get_text()]
    assert kind_cells, "the hostile kind is listed"
    text = kind_cells[0].get_text()
    assert "<script>alert(1)</script>\"'</td></tr>" in text  # shown literally, as text
    assert "\u202e" not in text and "\u200b" not in text and "<U+202E>" in text and "<U+200B>" in text
    assert "&amp;" in text  # the literal entity text, not an ampersand
    # error message, problems, rejected record: all text, all cut
    msg = soup.select_one('[data-figure="dlq_errors.0.error_message"]').get_text()
    assert msg.startswith("<script>") and msg.endswith("characters)")
    raw = soup.select_one("#coverage code.raw").get_text()
    assert raw.startswith("<script>alert(2)</script>xxx") and len(raw) < report.TEXT_LIMIT + 40
    problem = soup.select_one("#coverage table.inputs td.msg p").get_text()
    assert problem.startswith("<script>alert(1)") and "<U+202E>" in problem
    # and the figures still match summary.json, hostile strings included
    stored = orjson.loads(orjson.dumps(s))
    for path, fmt, shown in figures(soup):
        assert shown == report.FORMATS[fmt](resolve(stored, path)).strip(), path


@pytest.mark.parametrize("rate, digits, shown", [
    (3e-6, 3, "< 0.001 %"),  # three losses in a million: a loss, never "0.000 %"
    (0.0, 3, "0.000 %"),
    (1e-5, 3, "0.001 %"),
    (0.000123, 4, "0.0123 %"),
    (0.9999999, 3, "> 99.999 %"),  # not all of them
    (1.0, 3, "100.000 %"),
    (None, 3, "–"),
])
def test_a_rate_that_is_not_zero_never_reads_as_zero(rate, digits, shown):
    """One rule for every rate shown to people (report, SNS summary, `reconcile history`)."""
    assert summary.percent(rate, digits) == shown
    assert report.FORMATS["pct"](rate) == summary.percent(rate)


def test_config_secrets_are_redacted():
    ctx = report.ReportContext(summary={}, gaps=[], config={
        "zendesk": {"url": "https://x.zendesk.com", "api_token": "tok-123", "password": "hunter2"},
        "aws": {"secret_access_key": "AKIA...", "profile": None}, "sink": {"id_column": "partitionKey"}})
    assert ctx.safe_config == {
        "zendesk": {"url": "https://x.zendesk.com", "api_token": "[redacted]", "password": "[redacted]"},
        "aws": {"secret_access_key": "[redacted]", "profile": None}, "sink": {"id_column": "partitionKey"}}
    assert "tok-123" not in ctx.config_toml and "hunter2" not in ctx.config_toml


def test_credentials_in_a_url_are_refused_and_never_shown():
    """user:password@ in any URL of the config is refused when the config is validated, the value shown without
    them; and redact (the manifest, the report) shows such a URL without them whatever reaches it."""
    with pytest.raises(ConfigError) as e:
        config.build(None, {"aws": {"endpoint_url": "http://AKIAX:SeCrEt@localhost:4566"},
                            "dlq": {"queue_url": "https://user:pw@sqs.us-east-1.amazonaws.com/1/dlq"}})
    said = str(e.value)
    assert "[aws] endpoint_url = \"http://[redacted]@localhost:4566\" carries credentials" in said
    assert "[dlq] queue_url" in said and "SeCrEt" not in said and "pw@" not in said
    assert config.redact({"sink": {"uri": "s3://bucket/a@b"}, "x": {"urls": ["https://u:p@h/x"]}}) == {
        "sink": {"uri": "s3://bucket/a@b"}, "x": {"urls": ["https://[redacted]@h/x"]}}
    # a password holding `@` is the user-info up to the authority's last `@` (as urllib splits it): the part after
    # the first `@` was shown ("https://[redacted]@Secret@acme.zendesk.com")
    with pytest.raises(ConfigError) as e:
        config.build(None, {"zendesk": {"url": "https://ops:Sup3r@Secret@acme.zendesk.com"}})
    assert "Secret" not in str(e.value) and "https://[redacted]@acme.zendesk.com" in str(e.value)
    assert config.without_userinfo("https://u:p@ss@h/x?mail=a@b https://h2/") == \
        "https://[redacted]@h/x?mail=a@b https://h2/"


def test_run_section_says_how_to_reproduce(tmp_path):
    s, _, soup = produce(tmp_path)
    cmd = soup.select_one("#run pre.cmd").get_text()
    # with no state and a folder of its own: following it weeks later never replaces the run in the state it was
    # recorded in, nor its folder, and alerts nobody
    assert cmd == ("reconcile run --config reconcile.toml --start 2026-11-23T00:00:00.000Z "
                   "--end 2026-11-24T00:00:00.000Z --as-of 2026-11-24T02:00:00.000Z --audience daily --no-state "
                   "--out reproduced")
    toml = soup.select_one("#run pre.config").get_text()
    assert 'event_types = ["Notification"]' in toml and 'max_event_age = "2h"' in toml
    shown = report.config_toml({"state": {"uri": "s3://audit/state.duckdb"}, "alert": {"sns_topic_arn": "arn:x"},
                                "window": {"max_event_age": "2h"}})
    assert "[state]" not in shown.replace("# [state]", "") and "arn:x" not in shown and "s3://audit" not in shown
    assert shown.startswith("# [state] left out") and '[window]\nmax_event_age = "2h"' in shown


def test_timeline_bucket_matches_the_engine_parameter():
    cfg = config.build(None, {})
    for hours in (1, 6, 7, 24):
        window = job.window_from(cfg, DAY, DAY + timedelta(hours=hours), DAY + timedelta(days=2))
        assert summary.bucket_seconds(window) == job.params(cfg, window, unsettled=None)["bucket_s"]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (apt-get install -y chromium); cannot render to PNG")
def test_chromium_renders_the_report(tmp_path):
    produce(tmp_path / "run")
    png = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,3000",
                    (tmp_path / "run" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def large_day(tiny: dict) -> tuple[dict, list[dict], list[dict]]:
    """A summary shaped like a 10 M-event day at minute resolution: 1,440 buckets, 300 kinds, 1,000 gap rows."""
    s = orjson.loads(orjson.dumps(tiny))
    s["timeline_bucket_s"] = 60
    s["timeline"] = []
    for m in range(1440):
        lost = 3 if m % 10 == 0 else 0
        s["timeline"].append({"bucket": summary.iso(DAY + timedelta(minutes=m)), "events": 6944, "at_bus": 6944 - lost,
                              "at_sink": 6940, "delivered": 6940, "duplicated": 1, "dead_lettered": 1,
                              "lost_after_bus": 1, "lost_before_bus": lost, "pending": 0, "unverified": 0,
                              "not_emitted": 0, "excluded": 1, "recovered": 0})
    kinds = [f"Change:custom_field_{i}" for i in range(300)]
    s["loss_by_type"] = [{"kind": k, "events": 33_000, "delivered": 32_990, "duplicated": 3, "dead_lettered": 2,
                          "lost_after_bus": 2, "lost_before_bus": 3, "pending": 0, "unverified": 0, "not_emitted": 0,
                          "excluded": 0, "recovered": 0} for k in kinds]
    s["silent_losses"] = [{"hour": summary.iso(DAY + timedelta(hours=h)), "kind": k, "lost": 5,
                           "lost_before_bus": 3, "lost_after_bus": 2} for h in range(24) for k in kinds[:40]]
    s["pending_events"] = [dict(tiny["pending_events"][0], source_id=str(i)) for i in range(100)]
    gaps = [{"event_time": summary.iso(DAY + timedelta(seconds=i * 80)), "verdict": "lost_before_bus",
             "cause": "not in any AWS store", "source_id": str(10**12 + i), "eb_id": None, "ticket_id": 10**7 + i,
             "kind": kinds[i % 300], "match_kind": "unmatched", "unlogged_at_bus": False} for i in range(report.GAP_ROWS)]
    s["gaps"]["count"] = 41_000
    rejects = [{"source": "sink", "source_ref": f"s3://b/part-{i}.parquet", "reason": "no id",
                "raw": "y" * ledger.RAW_LIMIT} for i in range(100)]
    return s, gaps, rejects


@pytest.mark.parametrize("audience", ["daily", "incident", "audit"])
def test_a_ten_million_event_day_renders_small(tmp_path, audience):
    # Render time is measured by the benchmark (its outputs stage), not asserted here: a wall-clock limit in the
    # default suite fails on a loaded machine without saying anything about the code.
    tiny, _, _ = produce(tmp_path)
    s, gaps, rejects = large_day(tiny)
    ctx = report.ReportContext(summary=s, gaps=gaps, rejects=rejects, config={}, audience=audience)
    html = report.render(ctx)
    size = len(html.encode())
    assert size < 5_000_000
    soup = BeautifulSoup(html, "html.parser")
    assert len(soup.select("table.gaps tbody tr")) == (0 if audience in () else report.GAP_ROWS)
    bars = soup.select_one("#timeline path.s-lost_before_bus")["d"]
    assert bars.count("M") == 144  # every minute with a loss before the bus is drawn


def test_a_pending_table_cut_short_says_so_when_its_rows_outnumber_the_pending_events(tmp_path):
    """Pending events count expected bus events, the table lists Zendesk events (rows of verdicts.parquet): 60 new
    tickets pending are 60 events and 250 rows. The table shows 100 of them and says so; it compared 100 with 60."""
    tiny, _, _ = produce(tmp_path)
    s = orjson.loads(orjson.dumps(tiny))
    s["verdicts"]["pending"], s["verdict_rows"]["pending"] = 60, 250
    s["pending_events"] = [dict(tiny["pending_events"][0], source_id=str(i)) for i in range(100)]
    soup = BeautifulSoup(report.render(report.ReportContext(summary=s, gaps=[], rejects=[], config={})), "html.parser")
    assert soup.select_one("#pending h3").get_text() == "Oldest pending events (the 100 oldest of 250 Zendesk events)"
    assert len(soup.select("#pending table tbody tr")) == 100
    s["verdict_rows"]["pending"] = 100
    soup = BeautifulSoup(report.render(report.ReportContext(summary=s, gaps=[], rejects=[], config={})), "html.parser")
    assert soup.select_one("#pending h3").get_text() == "Oldest pending events"


def test_an_incomplete_input_shows_its_first_problem_whole_and_points_to_the_rest(tmp_path):
    """Forty damaged objects: the status header ran every problem together, each cut mid-sentence at 300 characters.
    It shows the first whole, says how many there are and where each is listed (Coverage, in full)."""
    tiny, _, _ = produce(tmp_path)
    s = orjson.loads(orjson.dumps(tiny))
    bus = next(i for i in s["inputs"] if i["source"] == "bus_log")
    bus["complete"] = False
    bus["problems"] = [f"s3://archive/exports/{'x' * 200}/{n:06d}.gz: truncated gzip stream (the object ends "
                       f"mid-member); kept the 1,234 records read before it. Check the object (copy or export it "
                       f"again): events after the damage are missing." for n in range(40)]
    soup = BeautifulSoup(report.render(report.ReportContext(summary=s, gaps=[], rejects=[], config={})), "html.parser")
    alert = soup.select_one("#status ul.alerts li").get_text()
    assert alert == f"bus_log incomplete: {bus['problems'][0]} (40 problems in all: Coverage lists each)"
    assert len(bus["problems"][0]) > report.TEXT_LIMIT
    assert soup.select_one("#status ul.alerts a")["href"] == "#coverage"
    assert len(soup.select("#coverage td.msg p")) == 40


def test_trace_and_text_logs_show_store_text_inert(tmp_path):
    """`trace` printed the stores' text (a DLQ error code, a kind, a cause) as it is: an erase-line sequence and a
    carriage return in an error code made a dead-lettered event's line read "delivered (ok)" on a terminal, and a
    bidi override reordered it. It shows them as the report does (<U+XXXX>), and so do text logs. An orphan's kind,
    read back from gaps.csv, is shown without the CSV's formula guard (`'`), as the observation below shows it."""
    import csv
    import logging

    from click.testing import CliRunner

    from reconcile import logformat, outputs
    from reconcile.cli import main
    produce(tmp_path, hostile=True)
    gaps = tmp_path / "gaps.csv"
    rows = list(csv.reader(gaps.open(newline="")))
    kind = rows[0].index("kind")
    for r in rows[1:]:
        if r[1] == "orphan":
            r[kind] = outputs.guard_cell("=HYPERLINK(1)")  # as the writer guards a kind that starts with `=`
    with gaps.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = CliRunner().invoke(main, ["trace", "4", "--run", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "dead_lettered" in out.stdout and "<U+202E>" in out.stdout and "\u202e" not in out.stdout
    orphan = CliRunner().invoke(main, ["trace", "4c000000-0000-0000-0000-000000000000", "--run", str(tmp_path)])
    assert "orphan eb_id" in orphan.stdout and "=HYPERLINK(1), " in orphan.stdout
    assert "'=HYPERLINK" not in orphan.stdout
    record = logging.LogRecord("reconcile", logging.WARNING, "", 0, "reject: %s", ("THROTTLING\x1b[2K\rdelivered",),
                               None)
    line = logformat.formatter("text").format(record)
    assert line.endswith("reject: THROTTLING<U+001B>[2K<U+000D>delivered") and "\x1b" not in line


def test_a_table_beside_another_scrolls_rather_than_running_under_it(tmp_path):
    """The funnel's per-hop table (eight columns) sat in its half of a two-column grid without a scroll box: at a
    1024 px window it ran under the verdicts beside it, hiding the Budget column. A table with more than two columns
    in a side-by-side column sits in a `.scroll` box, which keeps it within its column."""
    _, _, soup = produce(tmp_path)
    beside = [t for cols in soup.select(".cols") for t in cols.find_all("table")]
    wide = [t for t in beside if len(t.find("tr").find_all(["th", "td"])) > 2]
    assert wide and all(t.find_parent(class_="scroll") is not None for t in wide)
