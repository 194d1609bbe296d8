"""The S3 (and DynamoDB) API emulator: `moto_server` in its own process.

MLflow's proxied artifacts talk S3 to it; the day-2 tools use a DynamoDB table on it as a lock.
Its credentials are dummies that only this local emulator accepts; they are not secrets, which is
why they may sit in the replicas' plain environment (unlike the DB and admin passwords).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from local.processes import ProcessRecord, spawn

REGION = "us-east-1"
# Not secrets: moto accepts any key pair; these only ever reach 127.0.0.1.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local-stack-dummy-key",
    "AWS_SECRET_ACCESS_KEY": "local-stack-dummy-secret",
    "AWS_DEFAULT_REGION": REGION,
}


def endpoint_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def client_environment(port: int) -> dict[str, str]:
    """What a process needs to use the emulator with boto3 / MLflow."""
    return {
        **DUMMY_CREDENTIALS,
        "MLFLOW_S3_ENDPOINT_URL": endpoint_url(port),
        "AWS_ENDPOINT_URL_S3": endpoint_url(port),
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url(port),
    }


def start(port: int, log_file: Path, env: dict[str, str]) -> ProcessRecord:
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return spawn("s3-emulator", argv, log_file, env)


def _client(service: str, port: int):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url(port),
        region_name=REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def is_ready(port: int) -> bool:
    _client("s3", port).list_buckets()
    return True


def ensure_bucket(port: int, bucket: str) -> None:
    s3 = _client("s3", port)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def ensure_lock_table(port: int, table: str) -> None:
    """The day-2 tools' lock: partition key `lock_id` (S), items expire via TTL on `expires_at`."""
    dynamodb = _client("dynamodb", port)
    if table in dynamodb.list_tables().get("TableNames", []):
        return
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


# The emulator keeps objects in memory. `down` saves them here and `up` puts them back, so
# artifacts survive a restart like the database does ("down keeps data unless --purge").
SNAPSHOT_MANIFEST = "manifest.json"


def save_snapshot(port: int, directory: Path) -> int:
    """Copy every object of every bucket into `directory` (replaced atomically); returns the count."""
    s3 = _client("s3", port)
    staging = directory.with_name(directory.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True, mode=0o700)
    manifest = []
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                # Keys are not safe file names ("../", very long); store by index, map in the manifest.
                file_name = f"{len(manifest):08d}"
                s3.download_file(bucket, obj["Key"], str(staging / file_name))
                manifest.append({"bucket": bucket, "key": obj["Key"], "file": file_name})
    (staging / SNAPSHOT_MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return len(manifest)


def restore_snapshot(port: int, directory: Path) -> int:
    """Upload a snapshot saved by `save_snapshot` into the (empty) emulator; returns the count."""
    manifest_file = directory / SNAPSHOT_MANIFEST
    if not manifest_file.exists():
        return 0
    s3 = _client("s3", port)
    entries = json.loads(manifest_file.read_text(encoding="utf-8"))
    for bucket in sorted({e["bucket"] for e in entries}):
        ensure_bucket(port, bucket)
    for entry in entries:
        s3.upload_file(str(directory / entry["file"]), entry["bucket"], entry["key"])
    return len(entries)
