"""The DynamoDB lease lock, against moto's DynamoDB (in-process), with a controllable clock.

The conditions are evaluated by the emulator, exactly as the code sends them to AWS: these tests
would fail if the lock fell back to a read-then-write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from lifecycle.locks import DynamoLock, LockHeld, LockUnavailable, dynamodb_client

TABLE = "mlflow-stack-locks"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        ddb = dynamodb_client(credentials=KEYS)
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield ddb


def lock(client: Any, clock: Clock, holder: str, ttl: int = 60) -> DynamoLock:
    return DynamoLock(
        client, TABLE, "model-aliases/m", ttl_seconds=ttl, holder=holder, clock=clock, sleep=clock.sleep
    )


def test_only_one_owner_holds_a_live_lease(client: Any) -> None:
    clock = Clock()
    first, second = lock(client, clock, "pipeline-a"), lock(client, clock, "pipeline-b")
    assert first.try_acquire()
    assert not second.try_acquire()
    with pytest.raises(LockHeld, match=r"held by pipeline-a .*lease ends at epoch 1800000060") as error:
        second.acquire(wait_seconds=5)
    assert error.value.waited >= 5
    assert first.still_held() and not second.still_held()


def test_release_frees_the_lock_and_waiters_get_it(client: Any) -> None:
    clock = Clock()
    first, second = lock(client, clock, "a"), lock(client, clock, "b")
    first.acquire()
    assert first.release()
    second.acquire()
    assert second.still_held()


def test_an_expired_lease_can_be_taken_and_the_old_owner_cannot_release_it(client: Any) -> None:
    clock = Clock()
    crashed, successor = lock(client, clock, "crashed", ttl=30), lock(client, clock, "successor", ttl=30)
    crashed.acquire()
    clock.now += 31  # the crashed pipeline never released
    assert not crashed.still_held()
    successor.acquire()
    # The late owner's release is refused by the condition on the owner token...
    assert crashed.release() is False
    # ... so the successor's lease is intact.
    assert successor.still_held()
    assert client.get_item(TableName=TABLE, Key={"lock_id": {"S": "model-aliases/m"}})["Item"]["holder"][
        "S"
    ] == ("successor")


def test_waiting_acquires_once_the_holder_expires(client: Any) -> None:
    clock = Clock()
    holder, waiter = lock(client, clock, "holder", ttl=10), lock(client, clock, "waiter")
    holder.acquire()
    waiter.acquire(wait_seconds=30)  # polls; the lease runs out after 10 s of (fake) time
    assert waiter.still_held()
    assert clock.now > 1_800_000_010


def test_hold_releases_even_when_the_block_fails(client: Any) -> None:
    clock = Clock()
    with pytest.raises(RuntimeError, match="boom"), lock(client, clock, "a").hold():
        raise RuntimeError("boom")
    assert lock(client, clock, "b").try_acquire()


def test_a_missing_table_is_one_clear_error(client: Any) -> None:
    missing = DynamoLock(client, "no-such-table", "x")
    with pytest.raises(LockUnavailable, match="--lock-table"):
        missing.try_acquire()


def test_no_region_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(LockUnavailable, match="AWS_REGION"):
        dynamodb_client()
