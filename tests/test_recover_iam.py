"""The recovery role's IAM policy (docs/operations.md) grants exactly the write APIs `recover --apply` calls, on
named resources, and making a plan calls none: found in the code's syntax tree, as tests/test_operations.py does for
the nightly job."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import botocore.session
import orjson
from botocore import xform_name

import reconcile

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
PACKAGE = Path(reconcile.__file__).parent
SERVICES = ("kinesis", "events")  # the services only recovery writes to


def calls(paths: list[Path]) -> dict[str, str]:
    """"service:Operation" -> where, for every call of a kinesis or events client method in `paths`."""
    session = botocore.session.get_session()
    ops = {xform_name(op): f"{svc}:{op}" for svc in SERVICES for op in session.get_service_model(svc).operation_names}
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ops:
                found.setdefault(ops[node.func.attr], f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def job_code() -> list[Path]:
    """Every module of the tool but the simulator (which seeds moto and plays the Spark job)."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "simulate" not in p.relative_to(PACKAGE).parts]


def recovery_policy() -> dict:
    docs = [orjson.loads(b) for b in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S) if '"Statement"' in b]
    (doc,) = [d for d in docs if d["Statement"][0]["Sid"].startswith("Recover")]
    return doc


def test_the_recovery_policy_grants_exactly_what_apply_calls():
    called = calls(job_code())
    assert set(called) == {"kinesis:PutRecords", "events:StartReplay"}, called
    assert all(where.startswith("recover/apply.py") for where in called.values()), called
    granted = set()
    for s in recovery_policy()["Statement"]:
        assert s["Effect"] == "Allow" and all("*" not in r for r in s["Resource"]), s
        granted |= set(s["Action"])
    assert granted == set(called)


def test_making_a_plan_calls_no_write_api():
    plan_code = [PACKAGE / "recover" / "plan.py", PACKAGE / "recover" / "payload.py", PACKAGE / "cli_recover.py"]
    assert calls(plan_code) == {}
    source = "\n".join(p.read_text() for p in plan_code)
    for write in ("put_records", "start_replay", "put_events", "delete_message", "send_message"):
        assert f".{write}(" not in source


def test_every_recover_query_is_run():
    source = (PACKAGE / "recover" / "plan.py").read_text() + (PACKAGE / "recover" / "apply.py").read_text()
    for p in (ROOT / "queries" / "recover").glob("*.sql"):
        assert f'"{p.stem}' in source, f"queries/recover/{p.name} is run by nobody"
