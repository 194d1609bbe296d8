"""Where a day-2 command acts: the server connection, and what --stack/--local know besides it
(the lock table, the AWS endpoint and credentials for the local emulator, the local state dir).

Shared by `mlflow-stack runs` and `mlflow-stack models` (cli/ only parses options and prints).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The lock table when neither the stack nor --lock-table names one (a --url target).
DEFAULT_LOCK_TABLE = "mlflow-stack-locks"


@dataclass
class Target:
    """Where to talk to: the server connection, plus what --stack/--local know about locks and DB."""

    conn: Any  # lifecycle.client.Connection
    lock_table: str | None = None
    aws_endpoint_url: str | None = None
    aws_credentials: dict[str, str] | None = None
    aws_region: str | None = None
    local_state_dir: str | None = None


class UsageError(ValueError):
    """A target or lock that cannot be resolved from the options given; the message names the fix."""


def resolve_target(
    *,
    url: str | None = None,
    username: str | None = None,
    password_file: str | None = None,
    ca_file: str | None = None,
    stack: str | None = None,
    local: bool = False,
    state_dir: str | None = None,
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The server to talk to: --url, --stack or --local; with none of them MLflow's client variables
    (MLFLOW_TRACKING_URI, ...); with none of those a UsageError — resolved the way `mlflow-stack
    smoke` resolves it (lifecycle.credentials, whose docstring states the precedence)."""
    from lifecycle import credentials
    from lifecycle.client import Connection

    try:
        if url:
            target = credentials.resolve_url(url, username, password_file, ca_file, environ=environ)
            return Target(Connection.from_target(target, timeout=timeout))
        if stack:
            target = credentials.resolve_stack(stack, ca_file=ca_file)
            outputs = credentials.read_stack_outputs(stack)
            return Target(
                Connection.from_target(target, timeout=timeout),
                lock_table=outputs.get("lock_table"),
                aws_region=outputs.get("region"),
            )
        if not local:
            from_env = credentials.resolve_env(environ, ca_file=ca_file)
            if from_env is None:
                raise UsageError(credentials.NO_TARGET_MESSAGE)
            # Like --url: the lock table is named by --lock-table (else the default), its region
            # comes from AWS_REGION.
            return Target(Connection.from_target(from_env, timeout=timeout))
        from local import s3_emulator
        from local.stack import DEFAULT_STATE_DIR, LocalStack

        conn = Connection.from_local(state_dir, timeout=timeout)
        info = LocalStack(state_dir or DEFAULT_STATE_DIR).status()
        return Target(
            conn,
            lock_table=info.lock_table,
            aws_endpoint_url=info.s3_endpoint_url,
            aws_credentials=dict(s3_emulator.DUMMY_CREDENTIALS),
            local_state_dir=info.state_dir,
        )
    except credentials.TargetError as error:
        raise UsageError(str(error)) from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def make_lock(
    target: Target,
    lock_id: str,
    *,
    ttl_seconds: int,
    wait_seconds: float = 0.0,
    lock_table: str | None = None,
    aws_endpoint_url: str | None = None,
    stack: str | None = None,
) -> Any:
    """The DynamoDB lease for `lock_id` in the target's lock table (or the one named)."""
    from lifecycle.locks import DynamoLock, dynamodb_client

    if ttl_seconds <= 0:
        raise UsageError("--lock-ttl must be a positive number of seconds")
    if wait_seconds < 0:
        raise UsageError("--wait must not be negative")
    endpoint = aws_endpoint_url or target.aws_endpoint_url
    client = dynamodb_client(endpoint, target.aws_region, target.aws_credentials if endpoint else None)
    table = lock_table or target.lock_table
    if table is None and stack:
        # A deployed stack always exports its table; guessing a name here would take a lock in a
        # table no other pipeline uses, which is no lock at all.
        raise UsageError(
            f"stack {stack} exports no lock_table output: run `pulumi up` with the current kit "
            "(every stack creates its lock table), or name the table with --lock-table"
        )
    table = table or DEFAULT_LOCK_TABLE
    return DynamoLock(client, table, lock_id, ttl_seconds=ttl_seconds)


def gc_backend_store_uri(target: Target) -> str:
    """The tracking DB URI: from the local stack's state dir with --local, else the contract env."""
    from lifecycle.gc import backend_store_uri_from_env
    from server import contract

    if target.local_state_dir is None:
        return backend_store_uri_from_env()
    from local.stack import DB_NAME, DB_USER, LocalStack

    state_dir = Path(target.local_state_dir)
    try:
        state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--local: cannot read {state_dir / 'state.json'} ({error}); is the stack up?"
        ) from None
    return backend_store_uri_from_env(
        {
            contract.DB_HOST.name: "127.0.0.1",
            contract.DB_PORT.name: str(state["ports"]["postgres"]),
            contract.DB_NAME.name: DB_NAME,
            contract.DB_USER.name: DB_USER,
            contract.DB_SSLMODE.name: "disable",
            contract.DB_PASSWORD.name + contract.FILE_SUFFIX: str(LocalStack(state_dir).secrets.db_password),
        }
    )
