"""The S3 (and DynamoDB) API emulator: `moto_server` in its own process.

MLflow's proxied artifacts talk S3 to it; the day-2 tools use a DynamoDB table on it as a lock.
Its credentials are dummies that only this local emulator accepts; they are not secrets, which is
why they may sit in the replicas' plain environment (unlike the DB and admin passwords).
"""

from __future__ import annotations

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
