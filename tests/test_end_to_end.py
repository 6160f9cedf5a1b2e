"""The whole job over real servers: simulated stores in moto's S3/SQS/CloudWatch and the Zendesk API over HTTP.

moto cannot deliver EventBridge -> Kinesis -> Spark or emit AWS/Events metrics by itself, so the simulator seeds
those stores directly (reconcile/simulate/aws_load.py). Every event's verdict must equal the simulator's truth.
"""

import gzip

import pyarrow.parquet as pq
import pytest

from reconcile.simulate.demo import reconcile_simulation
from reconcile.simulate.generate import SimParams, simulate
from reconcile.simulate.stores import write_stores

pytestmark = pytest.mark.usefixtures("restore_environment")  # the demo code sets env vars

MIXES = {
    "default": dict(seed=11),
    "heavy-faults": dict(seed=12, loss_before_bus=0.02, spike_dlq=0.1, spike_drop=0.05, redelivery=0.02,
                         log_target_failure=0.02, replay=0.01, orphans=0.005, rebatch_batches=3),
    "all-legacy": dict(seed=13, webhook_share=0.0, echo_updates=0.02),
    "all-webhook": dict(seed=14, webhook_share=1.0),
    # a connector emitting kinds the shipped emission model lacks, often: no false loss, no false orphan
    "other-kinds": dict(seed=15, unknown_kind=0.08, silent_kind=0.05, custom_fields=0.15),
    # nothing excluded: Notification children are judged, and the emission model says they never reach the bus
    "nothing-excluded": dict(seed=16, excluded_kinds=(), not_mapped=0.05),
}


def verdicts_by_id(path):
    t = pq.read_table(path, columns=["source_id", "verdict"])
    return dict(zip(t["source_id"].to_pylist(), t["verdict"].to_pylist()))


@pytest.mark.parametrize("mix", list(MIXES))
def test_every_verdict_equals_truth(mix, moto, tmp_path):
    sim = simulate(SimParams(events=3000, batch_seconds=900, files_per_batch=1, **MIXES[mix]))
    write_stores(sim, tmp_path / "sim")
    outcome = reconcile_simulation(sim, tmp_path / "sim", tmp_path / "run", moto.endpoint, progress=False)
    truth = pq.read_table(tmp_path / "sim" / "truth.parquet", columns=["source_id", "verdict"])
    expected = dict(zip(truth["source_id"].to_pylist(), truth["verdict"].to_pylist()))
    found = verdicts_by_id(tmp_path / "run" / "verdicts.parquet")
    assert found == expected
    s = outcome.summary
    assert s["orphans"] == sim.summary["orphans"]
    assert all(i["complete"] for i in s["inputs"] if i["source"] != "metrics"), s["inputs"]
    # the simulator plants a malformed record in the log, the sink and the DLQ: counted, not dropped
    assert {i["source"]: i["rejected"] > 0 for i in s["inputs"]} | {"zendesk": True, "metrics": True} == {
        "zendesk": True, "bus_log": True, "sink": True, "dlq": True, "metrics": True}
    assert (s["status"], outcome.exit_code) == ("loss", 2)



def test_an_unreadable_object_makes_the_run_incomplete(moto, tmp_path):
    """A truncated export object: its readable lines are kept, the rest is a counted reject, and no verdict of
    'no loss' can rest on the run (exit 3), with the object named in the report."""
    sim = simulate(SimParams(events=2000, batch_seconds=900, files_per_batch=1, seed=21))
    write_stores(sim, tmp_path / "sim")
    obj = sorted((tmp_path / "sim" / "stores" / "logs-archive").rglob("*.gz"))[0]
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])
    outcome = reconcile_simulation(sim, tmp_path / "sim", tmp_path / "run", moto.endpoint, progress=False)
    assert (outcome.summary["status"], outcome.exit_code) == ("incomplete", 3)
    bus = next(i for i in outcome.summary["inputs"] if i["source"] == "bus_log")
    assert not bus["complete"] and bus["rejected"] >= 1
    assert any(obj.name in p for p in bus["problems"])
    from bs4 import BeautifulSoup
    soup = BeautifulSoup((tmp_path / "run" / "report.html").read_text(), "html.parser")
    alerts = [li.get_text(" ", strip=True) for li in soup.select("#status ul.alerts li")]
    assert any(a.startswith("bus_log incomplete") and obj.name in a for a in alerts), alerts


def test_a_day_with_kinds_the_model_lacks_calibrates(moto, tmp_path):
    """The connector emits Change:custom_status_id ("Custom Status Changed", not in the shipped model) and never
    emits Change:satisfaction_score (not in the model either): no false loss, and `reconcile calibrate` proposes the
    missing lines from the run's own evidence."""
    from click.testing import CliRunner
    from reconcile.cli import main
    sim = simulate(SimParams(events=3000, batch_seconds=900, files_per_batch=1, **MIXES["other-kinds"]))
    write_stores(sim, tmp_path / "sim")
    reconcile_simulation(sim, tmp_path / "sim", tmp_path / "run", moto.endpoint, progress=False)
    t = pq.read_table(tmp_path / "run" / "verdicts.parquet", columns=["kind", "verdict", "cause"]).to_pylist()
    odd = [r for r in t if r["kind"] in ("Change:custom_status_id", "Change:satisfaction_score")]
    assert odd and {r["verdict"] for r in odd if r["kind"] == "Change:satisfaction_score"} == {"unverified"}
    # a loss among kinds the model lacks only where the update's sequence proves the event was emitted
    assert all(r["cause"].startswith("sequence ") for r in odd if r["verdict"] == "lost_before_bus")
    out = CliRunner().invoke(main, ["calibrate", "--run", str(tmp_path / "run"), "--write", str(tmp_path / "m.csv")])
    assert out.exit_code == 0, out.output
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines == ["api_kind,family,bus_type,cardinality",
                     "Change:custom_status_id,legacy,Custom Status Changed,child",
                     "Change:custom_status_id,webhook,zen:event-type:ticket.custom_status_changed,child",
                     "Change:satisfaction_score,,,none"]
    assert "Custom field ids seen: " in out.output and "360012345601" in out.output
    # the suggested lines are a valid [match] emission_model file
    from reconcile.emission import load_model
    assert "Custom Status Changed" in load_model(str(tmp_path / "m.csv"))["bus_type"].to_pylist()


def test_verify_re_derives_the_zendesk_ledger_from_the_pages_the_run_read(moto, tmp_path):
    """The evidence bundles the API pages the run read: verify makes the Zendesk ledger from them again. A ledger
    with an event edited out and every digest recomputed re-rendered a consistent day without it and verified clean;
    it is a difference now, and a page edited alike is named."""
    import hashlib

    from reconcile import ledger, runfolder
    from reconcile.verify import verify
    sim = simulate(SimParams(events=1500, batch_seconds=900, files_per_batch=1, seed=23))
    write_stores(sim, tmp_path / "sim")
    run = tmp_path / "run"
    reconcile_simulation(sim, tmp_path / "sim", run, moto.endpoint, progress=False)
    v = verify(run)
    assert v.ok and v.notes == [], (v.differences, v.notes)

    def reseal(*rels):
        m, _ = runfolder.load_manifest(run)
        for rel in rels:
            entry = next(f for f in m["files"] if f["path"] == rel)
            data = (run / rel).read_bytes()
            entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        m["manifest_sha256"] = runfolder.manifest_digest(m)
        runfolder.write_manifest(run, m)

    zendesk = run / "evidence" / "zendesk.parquet"
    t = pq.read_table(zendesk)
    ledger.write_atomic(t.slice(1), zendesk, **ledger.PARQUET_OPTIONS)  # its first event edited out
    reseal("evidence/zendesk.parquet")
    # every output re-rendered from the edited ledger, and resealed: what an edit that knows the tool leaves
    from reconcile.verify import rerender
    m, _ = runfolder.load_manifest(run)
    rerender(run, m, tmp_path / "again")
    for name in runfolder.RENDERED:
        (run / name).write_bytes((tmp_path / "again" / name).read_bytes())
    reseal("evidence/zendesk.parquet", *runfolder.RENDERED)
    found = [str(d) for d in verify(run).differences]
    assert found == [f"evidence/zendesk.parquet: not what the bundled Zendesk pages make: {t.num_rows - 1:,} rows, "
                     f"the evidence gives {t.num_rows:,}"], found
    page = sorted((run / "evidence" / "zendesk-pages").glob("page-*.json.gz"))[0]
    page.write_bytes(gzip.compress(gzip.decompress(page.read_bytes()).replace(b'"Comment"', b'"Commant"', 1)))
    reseal(f"evidence/zendesk-pages/{page.name}")
    found = [str(d) for d in verify(run).differences]
    assert found == [f"evidence/zendesk-pages: {page.name} is not the page the read took (its sha256 differs from "
                     f"the manifest's)"], found
    # the re-derivation is not to be switched off, the ledger still edited: the manifest's list of the pages the
    # read took emptied, or the pages removed from the folder and the manifest (each resealed), verified clean
    import shutil
    saved = run.parent / "saved-pages"
    shutil.copytree(run / "evidence" / "zendesk-pages", saved)
    m, _ = runfolder.load_manifest(run)
    taken = next(i for i in m["inputs"] if i["source"] == "zendesk")["fingerprints"]
    next(i for i in m["inputs"] if i["source"] == "zendesk")["fingerprints"] = []
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(run, m)
    found = [str(d) for d in verify(run).differences]
    assert any("the manifest names none of them" in f for f in found), found
    next(i for i in m["inputs"] if i["source"] == "zendesk")["fingerprints"] = taken
    shutil.rmtree(run / "evidence" / "zendesk-pages")
    m["files"] = [f for f in m["files"] if not f["path"].startswith("evidence/zendesk-pages/")]
    m["manifest_sha256"] = runfolder.manifest_digest(m)
    runfolder.write_manifest(run, m)
    found = [str(d) for d in verify(run).differences]
    assert any(f.startswith("evidence/zendesk-pages: missing: the read saved the") for f in found), found
