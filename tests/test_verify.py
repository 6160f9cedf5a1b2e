"""Auditor evidence: every run is a bundle `reconcile verify` re-proves offline, byte for byte; publishing to S3."""

import shutil
from datetime import timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reconcile import config, ledger, publish, runfolder
from reconcile import run as job
from reconcile.aws import make_client
from reconcile.cli import main
from reconcile.errors import NotARun, ReconcileError, ReportError, VerifyError
from reconcile.state import State
from reconcile.runfolder import load_manifest
from reconcile.verify import Difference, rerender, verify
from reconcile.verify_sources import check_sources

import tinyday
from ledgers import DAY


def produce(out, fingerprints=None):
    """tinyday.produce, with fingerprints of raw inputs attached to the sources' reads."""
    cfg = config.build(None, tinyday.CONFIG)
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    res = tinyday.results()
    for name, fps in (fingerprints or {}).items():
        res[name].fingerprints = fps
    res["sink"].details = {"files": 3, "coverage": "read 3 files"}
    ledgers = job.write_evidence(res, out / "evidence")
    return job.finish(cfg, window, out, res, ledgers, audience="audit", generated_at=DAY + timedelta(hours=26))


def named(v):
    return [str(d) for d in v.differences]


def flip(path, at=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_fresh_run_verifies(tmp_path):
    produce(tmp_path)
    v = verify(tmp_path)
    assert v.ok, named(v)
    assert v.notes == []
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "matches its evidence" in result.output


def test_a_store_recorded_as_read_whole_that_its_evidence_shows_read_in_part_is_a_difference(tmp_path):
    """A run whose manifest, outputs and digests agree, but whose DLQ it records as read whole holds a reject that
    may hide an event (a hand-edited manifest re-rendered, or a bug past completeness.decide): a "clean" resting on a
    partial read. Verify applies completeness's rule to the bundled evidence again and names it."""
    cfg = config.build(None, tinyday.CONFIG)
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    res = tinyday.results()
    res["dlq"].rejects = ledger.rejects_table("dlq", ["m9"], ["not JSON"], ["{cut"])  # kind unparseable: may hide
    job.finish(cfg, window, tmp_path, res, job.write_evidence(res, tmp_path / "evidence"), audience="audit",
               generated_at=DAY + timedelta(hours=26))
    v = verify(tmp_path)
    assert [d.file for d in v.differences] == ["manifest.json"], named(v)
    assert "inputs.dlq: recorded as read whole, but its evidence says it was not: 1 record(s) could not be read" \
        in str(v.differences[0])


def test_a_rejects_file_of_another_shape_is_a_difference_listed_not_a_crash(tmp_path):
    """The completeness check reads the bundled rejects: one edited into another shape (a `kind` that is no text)
    made verify exit 4, "unexpected ArrowInvalid", instead of listing the change (diff review)."""
    import pyarrow as pa
    produce(tmp_path)
    p = tmp_path / "evidence" / "dlq.rejects.parquet"
    t = pq.read_table(p)
    pq.write_table(t.set_column(t.column_names.index("kind"), "kind", pa.array([7] * t.num_rows, pa.int64())), p)
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 5, result.output
    assert "evidence/dlq.rejects.parquet" in result.output


def test_the_manifest_holds_what_verify_needs(tmp_path):
    produce(tmp_path, {"sink": [{"uri": "s3://spark/part-0.parquet", "size": 10, "etag": "abc"}]})
    m, _ = load_manifest(tmp_path)
    assert set(m) >= {"tool", "generated_at", "window", "audience", "config", "inputs", "queries", "templates",
                      "versions", "files", "manifest_sha256"}
    assert m["window"]["as_of"] == "2026-11-24T02:00:00.000Z" and m["window"]["max_event_age_s"] == 7200
    sink = next(i for i in m["inputs"] if i["source"] == "sink")
    assert sink["details"] == {"coverage": "read 3 files", "files": 3}
    assert sink["fingerprints"] == [{"etag": "abc", "size": 10, "uri": "s3://spark/part-0.parquet"}]
    assert "state/history.sql" in m["queries"] and "verdict_counts.sql" in m["queries"]
    assert "report.html.j2" in m["templates"]
    paths = {f["path"] for f in m["files"]}
    assert {"evidence/carried.parquet", "evidence/kind_map.parquet", *runfolder.RENDERED} <= paths


def test_the_manifest_seals_the_run_alone(tmp_path):
    """A state kept in the run folder (`--out reconcile-out` with the default state), a recovery plan made from an
    earlier run of the window, a file someone left: none is the run's, and none is sealed as its evidence (the
    manifest listed every file under the folder, a live state file hashed mid-run among them)."""
    (tmp_path / "reconcile-state.duckdb").write_bytes(b"a state")
    (tmp_path / "recovery").mkdir()
    (tmp_path / "recovery" / "plan.json").write_text("{}")
    produce(tmp_path)
    m, _ = load_manifest(tmp_path)
    evidence = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "evidence").rglob("*") if p.is_file()}
    assert {f["path"] for f in m["files"]} == set(runfolder.RENDERED) | evidence
    (tmp_path / "reconcile-state.duckdb").write_bytes(b"the state, changed by the next run")
    v = verify(tmp_path)
    assert v.ok, named(v)
    assert v.notes == [f"{rel}: not in the manifest (added after the run; not part of the evidence)"
                       for rel in ("reconcile-state.duckdb", "recovery/plan.json")]


@pytest.mark.parametrize("held", ["state", "folder"])
def test_a_run_that_cannot_hold_the_state_or_folder_leaves_the_finished_run(tmp_path, held):
    """A second run of the folder while one holds the state (or, with another state, the folder) fails fast, exit 4,
    and takes nothing from the run there: it reset the folder (outputs, manifest, ledgers) before it asked."""
    out = tmp_path / "run"
    produce(out)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cfg = config.build(None, {**tinyday.CONFIG, "sink": {"uri": str(tmp_path / "sink")}})
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    state = tmp_path / "state.duckdb"
    with (State.open(state) if held == "state" else runfolder.RunFolder(out).writing()):
        with pytest.raises(ReconcileError, match="in use by another run" if held == "state" else
                           "being written by another run") as e:
            job.execute(cfg, window, out, progress=False, state=state)
    assert e.value.exit_code == 4
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert verify(out).ok


def test_a_reset_that_fails_half_way_puts_the_finished_run_back(tmp_path):
    """A re-run whose reset of the folder fails part-way (a file of evidence/ it cannot remove: a folder it may not
    write, here a directory where a ledger would be) deleted the finished run's manifest and reports and left the
    folder no run at all, the state still recording it. The reset is now inside the run's clean-up: the run comes back
    whole, and verifies."""
    out = tmp_path / "run"
    produce(out)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "evidence" / "zz-stuck.parquet").mkdir()  # unlink() cannot remove it
    cfg = config.build(None, {**tinyday.CONFIG, "sink": {"uri": str(tmp_path / "sink")}})
    window = job.window_from(cfg, DAY, DAY + timedelta(days=1), DAY + timedelta(hours=26))
    with pytest.raises(OSError):
        job.execute(cfg, window, out, progress=False)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert verify(out).ok


def test_the_manifest_is_written_before_the_state_commits_and_renamed_after(tmp_path):
    """The run's two commit points: the state's commit ran first, so a manifest that could not be written (a full
    disk) left the state recording a run whose folder was none. Now the manifest is written in full first: if that
    fails, the commit never runs; if the commit fails, no manifest appears."""
    manifest = tmp_path / "manifest.json"
    committed = []
    with pytest.raises(TypeError):  # what cannot be written, as a full disk cannot
        with runfolder.committing(tmp_path, {"unwritable": object()}):
            committed.append(True)
    assert committed == [] and not manifest.exists()
    with pytest.raises(RuntimeError):
        with runfolder.committing(tmp_path, {"window": "w"}):
            raise RuntimeError("the state's commit failed")
    assert not manifest.exists() and list(tmp_path.iterdir()) == []
    with runfolder.committing(tmp_path, {"window": "w"}):
        assert not manifest.exists()  # renamed in only once the state has committed
    assert orjson.loads(manifest.read_bytes()) == {"window": "w"}


def test_secrets_are_redacted_from_the_manifest():
    assert config.redact({"zendesk": {"url": "https://acme", "api_token": "t0k", "password": None},
                       "x": {"client_secret": "s"}}) == {
        "zendesk": {"url": "https://acme", "api_token": "[redacted]", "password": None},
        "x": {"client_secret": "[redacted]"}}


def test_two_renders_of_the_same_evidence_are_byte_identical(tmp_path):
    produce(tmp_path / "a")
    m, _ = load_manifest(tmp_path / "a")
    for n in ("b", "c"):
        (tmp_path / n).mkdir()
        rerender(tmp_path / "a", m, tmp_path / n)
    for name in runfolder.RENDERED:
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes() \
            == (tmp_path / "a" / name).read_bytes(), name


def test_a_tampered_ledger_is_caught_and_named(tmp_path):
    produce(tmp_path)
    sink = tmp_path / "evidence" / "sink.parquet"
    ledger.write_atomic(pq.read_table(sink).slice(1), sink)  # one sink row quietly removed
    v = verify(tmp_path)
    found = named(v)
    assert any(s.startswith("evidence/sink.parquet: sha256 differs") for s in found), found
    # the re-render from the tampered ledger no longer gives the published figures, and says which
    assert "summary.json: inputs.sink.records is 11, the evidence gives 10" in found, found
    assert "summary.json: hops.bus_to_sink.lost is 2, the evidence gives 3" in found
    assert "verdicts.parquet: column verdict differs in 1 row(s), first row 3: 'delivered', the evidence gives " \
        "'lost_after_bus'" in found
    assert "report.html" in v.files and "verdicts.parquet" in v.files


def test_a_tampered_report_figure_is_caught_and_named(tmp_path):
    s = produce(tmp_path).summary
    html = (tmp_path / "report.html").read_text()
    shown = f'data-figure="verdicts.delivered">{s["verdicts"]["delivered"]}<'
    assert shown in html
    (tmp_path / "report.html").write_text(html.replace(shown, shown.replace(">5<", ">4<"), 1))
    found = named(verify(tmp_path))
    assert any(f.startswith("report.html: figure verdicts.delivered shows '4") and "the evidence gives '5" in f
               for f in found), found
    assert any(f.startswith("report.html: sha256 differs") for f in found)


def test_a_tampered_summary_number_is_caught_and_named(tmp_path):
    produce(tmp_path)
    s = orjson.loads((tmp_path / "summary.json").read_bytes())
    s["hops"][1]["lost"] += 1
    (tmp_path / "summary.json").write_bytes(orjson.dumps(s, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                                            + b"\n")
    found = named(verify(tmp_path))
    assert "summary.json: hops.bus_to_sink.lost is 3, the evidence gives 2" in found, found
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 5
    assert "DIFFERS summary.json: hops.bus_to_sink.lost is 3, the evidence gives 2" in result.output
    assert "Error: " in result.output and "summary.json" in result.output.splitlines()[-1]


def test_a_folder_that_is_not_a_run_is_a_usage_error_not_a_difference(tmp_path):
    """No manifest.json: not a finished run. Exit 4 (give the right folder), never 5 ("the evidence differs")."""
    (tmp_path / "evidence").mkdir()
    with pytest.raises(NotARun, match="has no manifest.json"):
        verify(tmp_path)
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 4 and "not a finished run" in result.output
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "junk.tar.gz")])
    assert result.exit_code == 4 and "not a readable bundle" in result.output


def test_a_run_made_by_other_python_verifies_with_a_note_naming_it(tmp_path):
    """The Python that computes figures (summary, the report's filters) is fingerprinted as the SQL is: a build whose
    code differs is named in a note, so a figure that differs can be told from tampering. A run made before the
    Python was fingerprinted gets no such note."""
    produce(tmp_path)
    m, _ = load_manifest(tmp_path)
    assert "report.py" in m["python"] and "summary.py" in m["python"] and not any(
        n.startswith(("queries/", "reports/")) for n in m["python"])
    m["python"]["report.py"] = "0" * 64  # the run made by another build of report.py
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(tmp_path, m)
    v = verify(tmp_path)
    assert v.ok, named(v)
    assert v.notes == ["this tool's Python differs from the one the run used in 1 file(s) (reconcile/report.py): a "
                       "figure that differs may come from the code, not the evidence; verify with the reconcile build "
                       "that made the run to tell"]
    del m["python"]
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(tmp_path, m)
    assert verify(tmp_path).notes == []


def test_an_intact_manifest_of_another_format_is_unverifiable_not_tampered(tmp_path):
    """A key the intact manifest lacks (another version's format) is exit 4 naming the key, not a difference."""
    produce(tmp_path)
    m, _ = load_manifest(tmp_path)
    del m["generated_at"]
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(tmp_path, m)
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 4, result.output
    assert "has no 'generated_at'" in result.output and "DIFFERS" not in result.output


def test_a_single_flipped_byte_in_any_file_is_caught(tmp_path):
    produce(tmp_path / "clean")
    m, _ = load_manifest(tmp_path / "clean")
    for rel in [f["path"] for f in m["files"]] + ["manifest.json"]:
        run_dir = tmp_path / rel.replace("/", "_")
        shutil.copytree(tmp_path / "clean", run_dir)
        flip(run_dir / rel)
        try:
            v = verify(run_dir)
        except VerifyError as e:  # a manifest that no longer parses is refused outright
            assert rel == "manifest.json" and "manifest.json" in str(e)
            continue
        assert rel in v.files, (rel, named(v))


def test_a_flipped_figure_in_the_manifest_is_caught(tmp_path):
    produce(tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    (tmp_path / "manifest.json").write_text(text.replace('"records": 11', '"records": 12', 1))
    assert Difference("manifest.json", "manifest_sha256 does not match its content: edited since the run") \
        in verify(tmp_path).differences


def test_a_manifest_edited_into_what_cannot_be_re_rendered_differs_and_says_so(tmp_path):
    """An edited manifest whose window no longer reads (a duration as text): the edit is the difference (exit 5, the
    list printed), not an unexpected error (exit 4) that hides it."""
    produce(tmp_path)
    manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
    manifest["window"]["hop_a_grace_s"] = "300"
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 5, result.output
    assert "manifest_sha256 does not match its content" in result.output and "cannot be re-rendered" in result.output


def test_a_run_with_state_verifies_without_the_state(tmp_path):
    with State.open(tmp_path / "state.duckdb") as st:
        tinyday.day1(tmp_path, st)
        tinyday.day2(tmp_path, st)
    (tmp_path / "state.duckdb").unlink()
    day2 = tmp_path / "day2"
    assert orjson.loads((day2 / "evidence" / "history.json").read_bytes())
    assert pq_rows(day2 / "evidence" / "carried.parquet") == 1
    assert verify(day2).ok, named(verify(day2))
    assert verify(tmp_path / "day1").ok


def pq_rows(path):
    return pq.read_metadata(path).num_rows


# ------------------------------------------------------------------------------------------------ live sources

def put(s3, key, body):
    s3.put_object(Bucket="logs", Key=key, Body=body)
    h = s3.head_object(Bucket="logs", Key=key)
    return {"uri": f"s3://logs/{key}", "size": h["ContentLength"], "etag": h["ETag"].strip('"'),
            "last_modified": h["LastModified"].isoformat(), "version_id": h.get("VersionId")}


def test_against_sources_flags_changed_and_vanished_objects(tmp_path, aws_cfg):
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="logs")
    a, b = put(s3, "exports/a/000000.gz", b"aaaa"), put(s3, "exports/b/000000.gz", b"bbbb")
    c = put(s3, "exports/c/000000.gz", b"cccc")
    # the shape the bus-log and sink sources write today: location as `key`, pyarrow's `mtime`
    c = {"key": c["uri"], "size": c["size"], "etag": c["etag"], "mtime": c["last_modified"]}
    produce(tmp_path, {"bus_log": [a, b], "sink": [c], "zendesk": [{"file": "page-1.json", "sha256": "00"}]})
    assert check_sources(load_manifest(tmp_path)[0], aws_cfg).changes == []

    s3.put_object(Bucket="logs", Key="exports/a/000000.gz", Body=b"aaaa-rewritten")
    s3.delete_object(Bucket="logs", Key="exports/b/000000.gz")
    check = check_sources(load_manifest(tmp_path)[0], aws_cfg)
    assert check.checked == 3 and check.not_objects == {"zendesk": 1}
    assert [(c.uri, c.status) for c in check.changes] == [("s3://logs/exports/a/000000.gz", "changed"),
                                                           ("s3://logs/exports/b/000000.gz", "vanished")]
    assert "size 4 -> 14" in check.changes[0].what and "ETag" in check.changes[0].what

    result = CliRunner().invoke(main, ["verify", str(tmp_path), "--against-sources",
                                       "--endpoint-url", aws_cfg.endpoint_url])
    assert result.exit_code == 5, result.output
    assert "CHANGED bus_log s3://logs/exports/a/000000.gz" in result.output
    assert "VANISHED bus_log s3://logs/exports/b/000000.gz" in result.output


# ------------------------------------------------------------------------------------------------ publishing

def keys(s3, bucket="audit"):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


class FailingUploads:
    """An S3 client whose upload of one key fails midway, recording the order of writes."""

    def __init__(self, client, fail_on):
        self.client, self.fail_on, self.writes = client, fail_on, []

    def upload_file(self, path, bucket, key, **kw):
        if key.endswith(self.fail_on):
            raise OSError("connection reset by peer")
        self.writes.append(key)
        return self.client.upload_file(path, bucket, key, **kw)

    def put_object(self, **kw):
        self.writes.append(kw["Key"])
        return self.client.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_publish_uploads_every_file_then_the_manifest(tmp_path, aws_cfg, monkeypatch):
    produce(tmp_path / "run")
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    spy = FailingUploads(s3, fail_on="(nothing)")
    monkeypatch.setattr(publish, "make_client", lambda *a, **k: spy)
    assert publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg) == "s3://audit/runs/day1/report.html"
    # the prefix's publish lock first (taken, then let go: publish.PUBLISH_LOCK), every file, the manifest last
    assert spy.writes[0] == "runs/day1/publish.lock" and "runs/day1/publish.lock" not in keys(s3)
    assert spy.writes[-1] == "runs/day1/manifest.json" and len(spy.writes) == len(keys(s3)) + 1
    # a published run verifies from S3
    result = CliRunner().invoke(main, ["verify", "s3://audit/runs/day1", "--endpoint-url", aws_cfg.endpoint_url])
    assert result.exit_code == 0, result.output


def test_an_interrupted_publish_leaves_no_manifest(tmp_path, aws_cfg, monkeypatch):
    produce(tmp_path / "run")
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    monkeypatch.setattr(publish, "make_client", lambda *a, **k: FailingUploads(s3, fail_on="report.html"))
    with pytest.raises(ReportError, match="stopped at runs/day1/report.html.*No manifest.json was written"):
        publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
    assert keys(s3) and "runs/day1/manifest.json" not in keys(s3)
    # no manifest, no run: publishing again needs no --replace
    monkeypatch.setattr(publish, "make_client", lambda *a, **k: s3)
    publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
    assert "runs/day1/manifest.json" in keys(s3)


def test_a_publish_whose_answers_trickle_ends_at_the_upload_deadline_with_no_manifest(tmp_path, aws_cfg):
    """A gateway trickling the answer to one upload held the finished run for good, after the commit, where no
    signal stops it (botocore's timeouts are per read: hang review). The publish is given [aws] upload_deadline, then
    left: no manifest (no run) at the prefix, the lock let go, and publishing again goes through."""
    import time
    from dataclasses import replace

    from proxy import Proxy
    produce(tmp_path / "run")
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    proxy = Proxy(aws_cfg.endpoint_url, trickle=lambda method, path: method == "PUT" and "report.html" in path)
    started = time.monotonic()
    try:
        with pytest.raises(ReportError, match=r"s3://audit/runs/day1 was not published within \[aws\] "
                                              r"upload_deadline = 2s: left, so no run is there unless its "
                                              r"manifest.json was put as the deadline passed"):
            publish.publish(tmp_path / "run", "s3://audit/runs/day1",
                            replace(aws_cfg, endpoint_url=proxy.endpoint, upload_deadline="2s"))
        assert time.monotonic() - started < 2 + 10
    finally:
        proxy.close()
    time.sleep(1)  # the upload left behind, cut by the proxy's close, puts nothing more: not even the files after it
    files = publish.bundle_files(tmp_path / "run")  # (it went on with them over any later publisher's: diff review)
    assert set(keys(s3)) <= {"runs/day1/" + f for f in files[:files.index("report.html") + 1]}
    publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
    assert "runs/day1/manifest.json" in keys(s3)


def test_a_published_run_is_replaced_only_with_replace(tmp_path, aws_cfg):
    produce(tmp_path / "run")
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
    # the old run's manifest lists a file the new run will not have; another object lies there, listed by no run
    listed = orjson.loads(s3.get_object(Bucket="audit", Key="runs/day1/manifest.json")["Body"].read())
    listed["files"].append({"path": "evidence/old-only.parquet", "bytes": 14, "sha256": "0" * 64})
    s3.put_object(Bucket="audit", Key="runs/day1/manifest.json", Body=orjson.dumps(listed))
    s3.put_object(Bucket="audit", Key="runs/day1/evidence/old-only.parquet", Body=b"old run's file")
    s3.put_object(Bucket="audit", Key="runs/day1/notes/audit-notes.txt", Body=b"someone's own object")
    before = s3.get_object(Bucket="audit", Key="runs/day1/manifest.json")["Body"].read()
    with pytest.raises(ReportError, match="already published at s3://audit/runs/day1.*Use --replace"):
        publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
    with pytest.raises(ReportError, match="Use --replace"):
        publish.ensure_free("s3://audit/runs/day1", aws_cfg, replace=False)
    # --replace replaces the same window's run only: a run of another window there is refused (a daily task
    # publishing to one fixed prefix deleted each previous day's evidence, the state still recording it there)
    with pytest.raises(ReportError, match=r"holds the run of another window \(20261123T000000Z-20261124T000000Z\); "
                                          r"--replace replaces a run of the same window only"):
        publish.ensure_free("s3://audit/runs/day1", aws_cfg, replace=True, window_key="20261124T000000Z-x")
    publish.ensure_free("s3://audit/runs/day1", aws_cfg, replace=True, window_key="20261123T000000Z-20261124T000000Z")
    assert s3.get_object(Bucket="audit", Key="runs/day1/manifest.json")["Body"].read() == before
    # a run a state recorded (its evidence holds the history the state gave it) is not replaced by one without the
    # state (run --no-state --replace): the state would go on naming the prefix for a run that is not there
    recorded = dict(listed, files=listed["files"] + [{"path": "evidence/history.json", "bytes": 2, "sha256": "0" * 64}])
    s3.put_object(Bucket="audit", Key="runs/day1/manifest.json", Body=orjson.dumps(recorded))
    with pytest.raises(ReportError, match="holds a run a state recorded; a run without the state"):
        publish.ensure_free("s3://audit/runs/day1", aws_cfg, replace=True,
                            window_key="20261123T000000Z-20261124T000000Z", stateless=True)
    publish.ensure_free("s3://audit/runs/day1", aws_cfg, replace=True, window_key="20261123T000000Z-20261124T000000Z")
    s3.put_object(Bucket="audit", Key="runs/day1/manifest.json", Body=before)

    shutil.rmtree(tmp_path / "run")
    produce(tmp_path / "run")  # the same window again
    publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg, replace=True)
    # the old run's own files go; what no run listed is not ours to delete
    assert "runs/day1/evidence/old-only.parquet" not in keys(s3) and "runs/day1/notes/audit-notes.txt" in keys(s3)
    assert s3.get_object(Bucket="audit", Key="runs/day1/manifest.json")["Body"].read() == \
        (tmp_path / "run" / "manifest.json").read_bytes()
    # another prefix is another run
    publish.publish(tmp_path / "run", "s3://audit/runs/day1-again", aws_cfg)
    # --replace where no run is published (the date left off the prefix): the runs below it are left alone
    publish.publish(tmp_path / "run", "s3://audit/runs", aws_cfg, replace=True)
    assert {"runs/day1/manifest.json", "runs/day1-again/manifest.json", "runs/manifest.json"} <= set(keys(s3))
    # fetched back (verify, trace), the run there is its own files only, not the runs below it
    fetched = publish.download("s3://audit/runs", tmp_path / "fetched", aws_cfg)
    assert sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()) == \
        sorted([*publish.bundle_files(tmp_path / "run"), "manifest.json"])


def test_a_bundle_archive_verifies_and_packs_reproducibly(tmp_path):
    produce(tmp_path / "run")
    a = publish.pack(tmp_path / "run", tmp_path / "a.tar.gz")
    b = publish.pack(tmp_path / "run", tmp_path / "b.tar.gz")
    assert a.read_bytes() == b.read_bytes()
    assert CliRunner().invoke(main, ["verify", str(a)]).exit_code == 0
    flip(a, at=len(a.read_bytes()) // 2)
    result = CliRunner().invoke(main, ["verify", str(a)])
    assert result.exit_code == 5 and "Error:" in result.output
    # a run written with `--out .` packs under its folder's own name (its entries were absolute: never verified)
    import os
    here = os.getcwd()
    os.chdir(tmp_path / "run")
    try:
        dot = publish.pack(Path("."), tmp_path / "dot.tar.gz")
    finally:
        os.chdir(here)
    assert CliRunner().invoke(main, ["verify", str(dot)]).exit_code == 0


def test_a_bundle_holding_more_than_one_run_is_refused(tmp_path):
    """A genuine run packed beside another folder (a tampered run sorting after it): verify would prove the genuine one
    and say the archive matches. A bundle holds exactly one run's folder, or it is refused as differing (exit 5)."""
    import tarfile

    produce(tmp_path / "a-genuine")
    produce(tmp_path / "tampered")
    summary = tmp_path / "tampered" / "summary.json"
    summary.write_bytes(summary.read_bytes().replace(b'"status": "loss"', b'"status": "clean"'))
    archive = tmp_path / "both.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("a-genuine", "tampered"):
            tar.add(tmp_path / name, arcname=name)
    result = CliRunner().invoke(main, ["verify", str(archive)])
    assert result.exit_code == 5 and "holds more than one run's folder" in result.output, result.output
    assert CliRunner().invoke(main, ["verify", str(publish.pack(tmp_path / "a-genuine", tmp_path / "one.tar.gz"))]) \
        .exit_code == 0


def test_run_publishes_to_s3_and_packs_a_bundle(tmp_path, aws_cfg):
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    (tmp_path / "sink").mkdir()
    args = ["run", "--date", "2026-11-23", "--out", "s3://audit/runs/2026-11-23", "--no-state", "--no-progress",
            "--endpoint-url", aws_cfg.endpoint_url, "--set", f'sink.uri="{tmp_path / "sink"}"']
    result = CliRunner().invoke(main, [*args, "--bundle", str(tmp_path / "run.tar.gz")])
    assert result.exit_code == 3, result.output  # an empty sink alone: incomplete, but a finished run
    assert "s3://audit/runs/2026-11-23/report.html" in result.output
    assert "runs/2026-11-23/manifest.json" in keys(s3)
    assert CliRunner().invoke(main, ["verify", str(tmp_path / "run.tar.gz")]).exit_code == 0

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 4 and "already published at s3://audit/runs/2026-11-23" in again.output
    assert CliRunner().invoke(main, [*args, "--replace"]).exit_code == 3


def test_a_run_recorded_with_a_memory_limit_now_refused_still_verifies(tmp_path):
    """[engine] memory_limit below 256MB is refused now; a run recorded with one re-renders all the same (its
    memory does not change what it renders): verify said "fix the config file" where there is none to fix."""
    produce(tmp_path)
    m, _ = load_manifest(tmp_path)
    m["config"].setdefault("engine", {})["memory_limit"] = "64MB"
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(tmp_path, m)
    v = verify(tmp_path)
    assert v.ok, named(v)


def test_a_prefix_being_published_is_not_published_into(tmp_path, aws_cfg):
    """Two runs publishing to one prefix at once (a re-run beside the nightly run) uploaded to the same keys: the
    manifest that won listed one run's files while the other's lay there ("no loss" under a manifest that recorded
    a loss, every digest wrong). A publisher holds the prefix's publish.lock from its first upload to its manifest:
    a second one stops before uploading anything, naming the holder; once the first is done the prefix is free."""
    produce(tmp_path / "run")
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    other = publish._lock(s3, "audit", "runs/day1/", "s3://audit/runs/day1")  # another publisher at work
    try:
        with pytest.raises(ReportError, match=r"s3://audit/runs/day1 is being published by .*uploaded nothing"):
            publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
        assert keys(s3) == ["runs/day1/publish.lock"]
    finally:
        other.release()
    publish.publish(tmp_path / "run", "s3://audit/runs/day1", aws_cfg)
    assert "runs/day1/manifest.json" in keys(s3) and "runs/day1/publish.lock" not in keys(s3)
    result = CliRunner().invoke(main, ["verify", "s3://audit/runs/day1", "--endpoint-url", aws_cfg.endpoint_url])
    assert result.exit_code == 0, result.output


def test_a_bundle_that_cannot_be_written_leaves_the_run_s_verdict_and_alert(tmp_path):
    """--bundle at a path that cannot be written: the run was committed, yet it exited 4 (a config error, for a
    recorded run) with nothing on stdout and no alert. The bundle's failure is an error line and its status in
    --json; the exit code is the run's."""
    (tmp_path / "sink").mkdir()
    (tmp_path / "a-file").write_text("x")
    args = ["run", "--date", "2026-11-23", "--out", str(tmp_path / "out"), "--no-state", "--no-progress", "--json",
            "--set", f'sink.uri="{tmp_path / "sink"}"', "--bundle", str(tmp_path / "a-file" / "run.tar.gz")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output  # an empty sink alone: incomplete, but a finished run
    out = orjson.loads(result.stdout)
    assert out["exit_code"] == 3 and out["bundle"]["status"] == "failed" and "a-file" in out["bundle"]["path"]
    assert (tmp_path / "out" / "manifest.json").exists()


def test_a_run_whose_publish_fails_keeps_its_folder_and_alerts(tmp_path, aws_cfg, monkeypatch, caplog):
    """An upload failing part-way (the network): the run was recorded, yet its temporary folder -- the only copy of
    its outputs -- was deleted, and no alert went out for its losses. The folder is kept, named, and verifies."""
    import re
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    (tmp_path / "sink").mkdir()
    monkeypatch.setattr(publish, "make_client", lambda *a, **k: FailingUploads(s3, fail_on="report.html"))
    args = ["run", "--date", "2026-11-23", "--out", "s3://audit/runs/2026-11-23", "--no-state", "--no-progress",
            "--endpoint-url", aws_cfg.endpoint_url, "--set", f'sink.uri="{tmp_path / "sink"}"',
            "--set", 'alert.cloudwatch_namespace="Rec"', "--set", 'alert.rule="r"']
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 4 and "stopped at runs/2026-11-23/report.html" in result.output, result.output
    assert make_client("cloudwatch", aws_cfg).list_metrics(Namespace="Rec")["Metrics"]  # the alert went out
    kept_at = re.compile(r"its folder is kept at (\S+): `(reconcile publish [^`]+)`")
    (kept, command) = [m.groups() for r in caplog.records if (m := kept_at.search(r.getMessage()))][0]
    assert (Path(kept) / "manifest.json").exists()
    assert CliRunner().invoke(main, ["verify", kept]).exit_code == 0
    # the command the error gives publishes the kept folder where the state records the run, without a re-run
    monkeypatch.setattr(publish, "make_client", make_client)
    endpoint = ["--endpoint-url", aws_cfg.endpoint_url]
    result = CliRunner().invoke(main, command.split()[1:] + endpoint)
    assert result.exit_code == 0 and result.stdout.strip() == "s3://audit/runs/2026-11-23/report.html", result.output
    assert CliRunner().invoke(main, ["verify", "s3://audit/runs/2026-11-23", *endpoint]).exit_code == 0
    # `--out` with {window}, as a schedule gives `run` it: the run's window key, not a prefix named {window}
    args = ["publish", kept, "--out", "s3://audit/by-window/{window}", *endpoint]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and result.stdout.strip() == (
        "s3://audit/by-window/20261123T000000Z-20261124T000000Z/report.html"), result.output
    shutil.rmtree(Path(kept).parent, ignore_errors=True)


def test_publish_refuses_a_folder_that_does_not_match_its_evidence(tmp_path, aws_cfg):
    produce(tmp_path / "run")
    s3 = make_client("s3", aws_cfg)
    s3.create_bucket(Bucket="audit")
    (tmp_path / "run" / "gaps.csv").write_text("edited")
    args = ["publish", str(tmp_path / "run"), "--out", "s3://audit/runs/day1", "--endpoint-url", aws_cfg.endpoint_url]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 5 and "gaps.csv" in result.output, result.output
    assert not keys(s3)  # nothing went up
    result = CliRunner().invoke(main, ["publish", str(tmp_path / "run"), "--out", str(tmp_path / "elsewhere")])
    assert result.exit_code == 4 and "not an s3:// prefix" in result.output
