"""The operations recipes (docs/operations.md), as far as this machine can check them: the IAM policy covers every
AWS API the code calls and grants nothing it does not call, writes reach only the job's own prefixes and the alert
targets, the JSON blocks parse, and every `reconcile` flag the recipes use exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import botocore.session
import orjson
from botocore import xform_name

import reconcile
from reconcile.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
PACKAGE = Path(reconcile.__file__).parent
SERVICES = ("s3", "sqs", "logs", "cloudwatch", "sns")
# API (or boto3 transfer method) -> the IAM actions it needs. IAM spells most as the API; these are the exceptions.
IAM = {
    "s3:ListObjectsV2": {"s3:ListBucket"},
    "s3:HeadObject": {"s3:GetObject"},
    "s3:download_file": {"s3:GetObject"},
    "s3:upload_file": {"s3:PutObject", "s3:AbortMultipartUpload"},  # multipart for big files; aborts on failure
    "s3:DeleteObjects": {"s3:DeleteObject"},
    "sqs:ChangeMessageVisibilityBatch": {"sqs:ChangeMessageVisibility"},
}
# pyarrow's S3FileSystem (aws.filesystem) lists and reads: the sink, the log and DLQ archives, the state.
PYARROW_READS = {"s3:ListBucket", "s3:GetObject"}
WRITES = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "cloudwatch:PutMetricData", "sns:Publish",
          "logs:CreateExportTask"}


def operations() -> dict[str, str]:
    """python method name -> "service:Operation" for every operation of the services the job uses."""
    session = botocore.session.get_session()
    ops = {xform_name(op): f"{svc}:{op}" for svc in SERVICES for op in session.get_service_model(svc).operation_names}
    return ops | {"upload_file": "s3:upload_file", "download_file": "s3:download_file"}


def called_apis() -> dict[str, str]:
    """Every AWS API the job's code calls ("service:Operation" -> where), found in its syntax tree: client method
    calls and paginators. The simulator (it seeds moto for the demo and tests) is not the job."""
    ops = operations()
    ours = {p.stem for p in PACKAGE.rglob("*.py")}
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "simulate" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if isinstance(node.func.value, ast.Name) and node.func.value.id in ours:
                continue  # one of our modules' functions (publish.publish), not a client's
            name = node.func.attr
            if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                name = node.args[0].value
            if name in ops:
                found.setdefault(ops[name], f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def policy() -> dict:
    """The nightly job's policy (the recovery role's, tests/test_recover_iam.py, is the other one)."""
    (doc,) = [d for d in (orjson.loads(b) for b in blocks("json") if '"Statement"' in b)
              if not d["Statement"][0]["Sid"].startswith("Recover")]
    return doc


def actions_of(statement: dict) -> set[str]:
    a = statement["Action"]
    return {a} if isinstance(a, str) else set(a)


def test_the_scan_finds_the_calls_it_must():
    found = called_apis()
    assert {"s3:ListObjectsV2", "sqs:ReceiveMessage", "logs:FilterLogEvents", "cloudwatch:GetMetricData",
            "cloudwatch:PutMetricData", "sns:Publish", "s3:PutObject"} <= set(found), found


def test_the_iam_policy_lists_exactly_the_actions_the_job_calls():
    needed = set(PYARROW_READS)
    for api in called_apis():
        needed |= IAM.get(api, {api})
    granted = set().union(*(actions_of(s) for s in policy()["Statement"]))
    assert needed - granted == set(), "called but not granted"
    assert granted - needed == set(), "granted but never called"
    assert "sqs:DeleteMessage" not in granted  # the DLQ is read, never consumed


def test_writes_reach_only_the_jobs_own_prefixes_and_the_alert_targets():
    for s in policy()["Statement"]:
        assert s["Effect"] == "Allow" and "*" not in "".join(actions_of(s))
        writes = actions_of(s) & WRITES
        if not writes:
            continue
        resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        if writes & {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}:
            assert all(r.startswith("arn:aws:s3:::audit/") for r in resources), s
        if "cloudwatch:PutMetricData" in writes:  # no resource-level permission: the namespace condition instead
            assert s["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Reconcile"}}
        if "sns:Publish" in writes:
            assert all(r.startswith("arn:aws:sns:") and "*" not in r for r in resources), s
        if "logs:CreateExportTask" in writes:  # writes to the export bucket, not to the log group
            assert all(r.endswith("/aws/events/zendesk:*") for r in resources), s


def test_every_json_block_parses():
    parsed = [orjson.loads(b) for b in blocks("json")]
    assert len(parsed) == 4  # the task definition, the schedule, the job's policy, the recovery role's
    task = parsed[0]["containerDefinitions"][0]
    assert task["command"][0] == "reconcile" and task["stopTimeout"] >= 20 + 5
    assert all("TOKEN" not in e["name"] for e in task["environment"])  # secrets come from "secrets", not values


def test_every_flag_the_recipes_use_exists():
    options = {o for p in main.params for o in p.opts}
    for cmd in main.commands.values():
        options |= {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    text = "\n".join(blocks("cron") + blocks("python") + blocks("json"))
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert {"--log-format", "--json", "--config", "--no-progress"} <= used
    assert used - options == set()


def test_the_readme_links_the_recipes():
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
