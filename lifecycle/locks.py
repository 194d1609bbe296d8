"""A lease lock arbitrated by DynamoDB, so two pipelines never move a model's aliases at once.

Why DynamoDB and not "read the alias, then write it": a client-side check-then-set has a window in
which both pipelines see the same state and both write. A conditional PutItem is decided by AWS
atomically — exactly one writer's condition holds. The lock is a lease (`expires_at`, epoch seconds)
so a pipeline killed mid-promotion cannot block the model forever; the same attribute is the
table's TTL attribute, so stale items are also swept by DynamoDB. Release is conditional on the
owner token, so a holder whose lease already expired can never delete a successor's lock.

Table contract (created by infra/locks.py in every stack, and by the local stack):
partition key `lock_id` (S), TTL attribute `expires_at` (N, epoch seconds).
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TABLE = "mlflow-stack-locks"
DEFAULT_TTL_SECONDS = 120


class LockHeld(RuntimeError):
    """Another owner holds the lock and did not release it within the wait time."""

    def __init__(self, lock_id: str, holder: dict[str, Any] | None, waited: float) -> None:
        self.lock_id = lock_id
        self.holder = holder or {}
        self.waited = waited
        who = self.holder.get("holder", "another process")
        until = self.holder.get("expires_at")
        detail = f" (its lease ends at epoch {until})" if until else ""
        super().__init__(
            f"lock {lock_id!r} is held by {who}{detail}; waited {waited:.0f}s. "
            "Retry later, or pass --wait SECONDS to queue behind it."
        )


class LockUnavailable(RuntimeError):
    """The lock table cannot be reached or does not exist; the message says how to fix it."""


def default_holder() -> str:
    """Who takes the lock, for the error another pipeline sees: CI actor if any, else user@host."""
    actor = os.environ.get("GITHUB_ACTOR") or os.environ.get("GITLAB_USER_LOGIN")
    try:
        user = actor or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass
class DynamoLock:
    """One named lease in the lock table. Use `hold()` as a context manager."""

    client: Any  # a boto3 DynamoDB client
    table: str
    lock_id: str
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    holder: str = field(default_factory=default_holder)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    owner_token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def try_acquire(self) -> bool:
        """One conditional write: True when this owner now holds the lease."""
        from botocore.exceptions import ClientError

        now = int(self.clock())
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "lock_id": {"S": self.lock_id},
                    "owner_token": {"S": self.owner_token},
                    "holder": {"S": self.holder},
                    "acquired_at": {"N": str(now)},
                    "expires_at": {"N": str(now + self.ttl_seconds)},
                },
                # A missing item, or an expired lease, can be taken; a live one cannot.
                ConditionExpression="attribute_not_exists(lock_id) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                return False
            raise _unavailable(self.table, error) from error
        except Exception as error:  # endpoint unreachable, no credentials, no region
            raise _unavailable(self.table, error) from error
        return True

    def current_holder(self) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={"lock_id": {"S": self.lock_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return {key: next(iter(value.values())) for key, value in item.items()}

    def acquire(self, wait_seconds: float = 0.0, poll_seconds: float = 0.5) -> None:
        """Take the lease, polling until `wait_seconds` have passed; raises LockHeld otherwise."""
        started = self.clock()
        while True:
            if self.try_acquire():
                return
            waited = self.clock() - started
            if waited >= wait_seconds:
                raise LockHeld(self.lock_id, self.current_holder(), waited)
            self.sleep(min(poll_seconds, max(wait_seconds - waited, 0.01)))

    def release(self) -> bool:
        """Delete the item only if this owner still holds it; False if the lease was lost."""
        from botocore.exceptions import ClientError

        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"lock_id": {"S": self.lock_id}},
                ConditionExpression="owner_token = :token",
                ExpressionAttributeValues={":token": {"S": self.owner_token}},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def still_held(self) -> bool:
        """True while this owner's lease is live: checked before each write, so an owner whose
        lease expired (a very slow server) stops instead of racing the next owner."""
        holder = self.current_holder()
        return bool(
            holder
            and holder.get("owner_token") == self.owner_token
            and int(holder.get("expires_at", 0)) >= int(self.clock())
        )

    @contextmanager
    def hold(self, wait_seconds: float = 0.0) -> Iterator[DynamoLock]:
        self.acquire(wait_seconds)
        try:
            yield self
        finally:
            self.release()


def _unavailable(table: str, error: Exception) -> LockUnavailable:
    return LockUnavailable(
        f"cannot use the lock table {table!r}: {error}. Check --lock-table (the stack's `lock_table` "
        "output), AWS credentials and region (AWS_REGION), or --aws-endpoint-url for the local stack."
    )


def dynamodb_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    credentials: dict[str, str] | None = None,
) -> Any:
    """A DynamoDB client from the usual AWS credential chain and region.

    `endpoint_url` and `credentials` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) are only for the
    local stack's emulator, which accepts its own dummy keys.
    """
    import boto3

    keys = credentials or {}
    session = boto3.session.Session(
        # AWS_REGION is what ECS and most CI runners set; not every botocore reads it.
        region_name=region
        or keys.get("AWS_DEFAULT_REGION")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION"),
        aws_access_key_id=keys.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=keys.get("AWS_SECRET_ACCESS_KEY"),
    )
    if not session.region_name:
        raise LockUnavailable(
            "no AWS region for the lock table: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
        )
    return session.client("dynamodb", endpoint_url=endpoint_url)


# Two maintenance runs (the weekly schedule and a manual `aws ecs run-task`) must not overlap.
MAINTENANCE_LOCK_ID = "maintenance/runs"
MAINTENANCE_TTL_SECONDS = 6 * 3600


def model_lock_id(model_name: str) -> str:
    """One lock per registered model: promotions of different models never wait for each other."""
    return f"model-aliases/{model_name}"
