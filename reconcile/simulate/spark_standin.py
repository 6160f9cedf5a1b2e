"""A small stand-in for the Spark job: move what a Kinesis stream holds into the sink's layout.

Reads every shard from TRIM_HORIZON (GetShardIterator / GetRecords), writes the records as one Parquet part file with
the Spark Kinesis source's columns (PIPELINE.md §6: data, streamName, partitionKey, sequenceNumber,
approximateArrivalTimestamp) under `dt=/hr=` of their arrival, and commits it as the next batch of the output's
`_spark_metadata` log, as Spark's file sink does. Used by `reconcile demo --recover` and the recovery tests to close
the loop; it is not the job (the real one runs on EMR or Databricks).
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..aws import make_client
from ..config import AwsConfig
from .stores import BLOCK_SIZE, spark_log, spark_log_entries


def stream_records(stream: str, aws: AwsConfig) -> list[dict]:
    """Every record in the stream, shard by shard, from the oldest kept."""
    kinesis = make_client("kinesis", aws)
    out = []
    shards = [s for page in kinesis.get_paginator("list_shards").paginate(StreamName=stream) for s in page["Shards"]]
    for shard in shards:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            r = kinesis.get_records(ShardIterator=it, Limit=10_000)
            out += [dict(x, ShardId=shard["ShardId"]) for x in r["Records"]]
            if not r["Records"] or r.get("MillisBehindLatest", 0) == 0:
                break
            it = r.get("NextShardIterator")
    return out


def run_batch(stream: str, bucket: str, prefix: str, aws: AwsConfig, arrival: datetime | None,
              already: set[tuple[str, str]] | None = None) -> int:
    """One micro-batch: the stream's records not in `already` ((shard id, sequence number): a checkpoint) into one
    committed part file.

    `arrival`: the clock the files are stamped and partitioned with (the demo's simulated now: moto's own arrival
    stamps are the real time, days after the simulated day); None: each record's own ApproximateArrivalTimestamp, as
    Spark's Kinesis source writes it (the file partitioned by the earliest). Returns how many records were written.
    """
    records = [r for r in stream_records(stream, aws) if (r["ShardId"], r["SequenceNumber"]) not in (already or set())]
    if not records:
        return 0
    stamps = [(arrival or r["ApproximateArrivalTimestamp"]).astimezone(timezone.utc) for r in records]
    arrival = min(stamps)
    arrival_ms = int(arrival.timestamp() * 1000)
    table = pa.table({
        "data": pa.array([bytes(r["Data"]) for r in records], pa.binary()),
        "streamName": pa.array([stream] * len(records), pa.string()),
        "partitionKey": pa.array([r["PartitionKey"] for r in records], pa.string()),
        "sequenceNumber": pa.array([r["SequenceNumber"] for r in records], pa.string()),
        "approximateArrivalTimestamp": pa.array([int(t.timestamp() * 1000) for t in stamps],
                                                pa.timestamp("ms", tz="UTC")),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    rel = f"dt={arrival:%Y-%m-%d}/hr={arrival:%H}/part-00000-{uuid.uuid4()}.c000.snappy.parquet"
    s3 = make_client("s3", aws)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=buf.getvalue())
    log_prefix = f"{prefix}/_spark_metadata/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=log_prefix)
            for o in page.get("Contents", [])]
    entries = spark_log_entries({k.rsplit("/", 1)[1]: s3.get_object(Bucket=bucket, Key=k)["Body"].read()
                                 for k in keys if not k.endswith(".crc")})
    batch = max(entries, default=-1) + 1
    entries[batch] = [orjson.dumps({"path": f"s3://{bucket}/{prefix}/{rel}", "size": buf.tell(), "isDir": False,
                                    "modificationTime": arrival_ms, "blockReplication": 1, "blockSize": BLOCK_SIZE,
                                    "action": "add"}).decode()]
    written = spark_log({b: lines for b, lines in entries.items() if lines})
    for name in (n for n in written if n.split(".")[0] == str(batch) or n.startswith(f"{batch}.")):
        s3.put_object(Bucket=bucket, Key=log_prefix + name, Body=written[name])
    return len(records)
