"""`reconcile export-logs`: ask CloudWatch Logs to export the bus log copy for a window to S3, and wait for it.

CreateExportTask runs one export per account at a time and data can take up to 12 h to become exportable
(PIPELINE.md §3), so this only starts and watches the task; the bus-log source then lists the prefix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError

from .aws import make_client
from .config import AwsConfig
from .errors import SourceError
from .window import Window

logger = logging.getLogger(__name__)

DONE = {"COMPLETED"}
FAILED = {"CANCELLED", "FAILED"}


@dataclass(frozen=True)
class ExportTask:
    task_id: str
    status: str
    destination: str

    @property
    def uri(self) -> str:
        return f"s3://{self.destination}"


def request(log_group: str, bucket: str, prefix: str, window: Window) -> dict:
    """CreateExportTask's parameters for the window: its read range [read_start, read_end), in epoch milliseconds."""
    return dict(taskName=f"reconcile-{window.key}", logGroupName=log_group,
                fromTime=int(window.read_start.timestamp() * 1000), to=int(window.read_end.timestamp() * 1000),
                destination=bucket, destinationPrefix=prefix)


def plan(log_group: str, bucket: str, prefix: str, window: Window) -> list[str]:
    """What export_window would ask CloudWatch Logs for (what `export-logs` prints without --apply)."""
    r = request(log_group, bucket, prefix, window)
    return [f"CreateExportTask {r['taskName']}",
            f"  log group    {log_group}",
            f"  from         {window.read_start:%Y-%m-%dT%H:%M:%SZ} ({r['fromTime']} ms)",
            f"  to           {window.read_end:%Y-%m-%dT%H:%M:%SZ} ({r['to']} ms, exclusive)",
            f"  destination  s3://{bucket}/{prefix}".rstrip("/") + " (objects written by logs.amazonaws.com)"]


def export_window(log_group: str, bucket: str, prefix: str, window: Window, aws: AwsConfig, *,
                  wait: float = 3600, poll: float = 10) -> ExportTask:
    """Start a CreateExportTask over [read_start, read_end) and poll until it ends (or `wait` seconds pass)."""
    logs = make_client("logs", aws)
    try:
        task_id = logs.create_export_task(**request(log_group, bucket, prefix, window))["taskId"]
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "LimitExceededException":
            raise SourceError("Another CloudWatch Logs export is running in this account (one at a time). "
                              "Wait for it to finish, then re-run export-logs --apply.") from e
        if code == "ResourceNotFoundException":
            raise SourceError(f"Log group {log_group} was not found. Check --log-group and --region.") from e
        raise SourceError(f"CreateExportTask failed ({code}): {e}. Check the bucket policy allows "
                          "logs.amazonaws.com to write to it.") from e
    deadline = time.monotonic() + wait
    destination = f"{bucket}/{prefix}".rstrip("/")
    logger.warning("export task %s started: CloudWatch Logs writes the window to s3://%s", task_id, destination)
    while True:
        try:
            tasks = logs.describe_export_tasks(taskId=task_id).get("exportTasks", [])
        except ClientError as e:  # the task runs on: say which, so it is neither lost nor started twice
            code = e.response.get("Error", {}).get("Code", "")
            raise SourceError(f"Export task {task_id} was started (writing to s3://{destination}), but its status "
                              f"could not be read ({code}: {e}). It runs on: watch it in the CloudWatch Logs "
                              f"console (or the AWS CLI's describe-export-tasks), and allow logs:DescribeExportTasks "
                              f"on "
                              f"\"Resource\": \"*\" (docs/operations.md).") from e
        status = tasks[0].get("status", {}).get("code", "PENDING") if tasks else "PENDING"
        logger.info("export task %s: %s", task_id, status)
        if status in DONE:
            return ExportTask(task_id, status, destination)
        if status in FAILED:
            raise SourceError(f"Export task {task_id} ended {status}: "
                              f"{tasks[0].get('status', {}).get('message', 'no message')}.")
        if time.monotonic() >= deadline:
            return ExportTask(task_id, status, destination)
        time.sleep(poll)
