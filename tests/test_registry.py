"""The one source registry: every part of the tool that knows the stores reads it, and its lines hold together."""

import dataclasses
import re

from click.testing import CliRunner

from reconcile import completeness, config
from reconcile.cli import main
from reconcile.cli_fetch import fetch
from reconcile.engine import QUERY_DIR
from reconcile.runfolder import RunFolder
from reconcile.sources import REGISTRY, hops, source


def test_names_hops_and_files_are_unique():
    assert len({s.name for s in REGISTRY}) == len({s.hop for s in REGISTRY}) == len(REGISTRY)
    assert len({s.ledger_file for s in REGISTRY} | {s.rejects_file for s in REGISTRY}) == 2 * len(REGISTRY)
    assert all(source(s.name) is s for s in REGISTRY)


def test_a_store_read_after_another_comes_after_it():
    # run.read_all hands a read the future of the store it comes after: that store must be submitted first
    order = [s.name for s in REGISTRY]
    assert all(order.index(s.after) < order.index(s.name) for s in REGISTRY if s.after)
    assert source("sink").after == "bus_log"


def test_the_completeness_rule_reads_required_and_may_be_empty_from_the_registry():
    assert completeness.REQUIRED == tuple(s.name for s in REGISTRY if s.required)
    assert completeness.MAY_BE_EMPTY == tuple(s.name for s in REGISTRY if s.may_be_empty)
    assert "metrics" not in completeness.REQUIRED and "dlq" in completeness.MAY_BE_EMPTY


def test_every_store_is_a_config_section_and_its_hint_names_real_keys():
    cfg = config.build(None, {}, environ={})
    for s in REGISTRY:
        section = getattr(cfg, s.name)  # the store's name is its config section
        named = re.findall(r"\[(\w+)\] (\w+)", s.hint)
        assert named, s.hint
        for sec, key in named:
            assert sec == s.name and key in {f.name for f in dataclasses.fields(section)}, (s.name, key)


def test_every_store_has_a_fetch_command_and_help():
    for s in REGISTRY:
        assert s.command in fetch.commands
        result = CliRunner().invoke(main, ["fetch", s.command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, result.output


def test_every_hop_is_a_view_the_queries_read():
    sql = " ".join(p.read_text() for p in QUERY_DIR.glob("*.sql"))
    for hop in hops():
        assert re.search(rf"\bFROM {hop}\b|\bJOIN {hop}\b", sql), hop


def test_the_run_folder_names_each_store_s_evidence(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.ledgers() == {s.hop: tmp_path / "evidence" / f"{s.hop}.parquet" for s in REGISTRY}
    assert {folder.rejects(s).name for s in REGISTRY} == {f"{s.name}.rejects.parquet" for s in REGISTRY}


def test_dry_run_describes_every_store_or_names_the_keys_to_set(tmp_path):
    result = CliRunner().invoke(main, ["run", "--date", "2026-11-23", "--out", str(tmp_path / "out"), "--dry-run",
                                       "--no-state", "--set", f'sink.uri="{tmp_path}"'],
                                env={"ZENDESK_URL": ""})
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    for s in REGISTRY:
        assert lines[s.name] == (s.describe(config.build(None, {"sink": {"uri": str(tmp_path)}}, environ={}))
                                 if s.name == "sink" else f"NOT CONFIGURED ({s.hint})")
