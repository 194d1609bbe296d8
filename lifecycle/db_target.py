"""Which PostgreSQL instance `mlflow-stack db ...` reads, and how it logs in.

Unlike the other day-2 commands these need the database itself: schema revisions, sizes and
statement statistics are not in MLflow's REST API. They connect as the application role (the
role the server uses and that owns both databases), never as the master user, and only read —
except `restore-drill`, which writes to a throw-away PostgreSQL of its own.

- `--local`: the local stack's state directory (its port and the role's 0600 password file).
- `--stack NAME`: the stack's outputs (endpoint, role, the password's Secrets Manager ARN). The
  instance is in private subnets, so run the command where it is reachable (the maintenance task,
  a bastion) or through a tunnel given with `--db-host`/`--db-port`, e.g. SSM port forwarding:
  https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-sessions-start.html#sessions-remote-port-forwarding
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from lifecycle.credentials import TargetError, _password_from_secret_string, read_stack_outputs
from lifecycle.targets import UsageError
from server import contract

APPLICATION_NAME = "mlflow-stack-db"
CONNECT_TIMEOUT_SECONDS = 10
# The outputs `--stack` needs (infra/platform.py exports them).
STACK_DB_OUTPUT_KEYS = ("db_endpoint", "db_port", "db_name", "db_user", "db_password_secret_arn", "region")


@dataclass(frozen=True)
class DatabaseTarget:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    tracking_db: str
    auth_db: str
    sslmode: str
    source: str  # "local stack", "stack dev"
    # Where backups are found: the local stack's state dir, or the RDS instance and its region.
    local_state_dir: str | None = None
    rds_instance: str | None = None
    region: str | None = None

    def connect(self, dbname: str | None = None, *, autocommit: bool = True) -> psycopg.Connection:
        """A connection as the application role; psycopg's errors never contain the password."""
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=dbname or self.tracking_db,
                user=self.user,
                password=self.password,
                sslmode=self.sslmode,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                autocommit=autocommit,
                application_name=APPLICATION_NAME,
            )
        except psycopg.OperationalError as error:
            raise DatabaseUnreachable(
                f"cannot connect to {dbname or self.tracking_db!r} at {self.host}:{self.port} as "
                f"{self.user!r} ({self.source}): {str(error).strip()}"
            ) from None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "tracking_db": self.tracking_db,
            "auth_db": self.auth_db,
            "rds_instance": self.rds_instance,
        }


class DatabaseUnreachable(RuntimeError):
    """The database refused or could not be reached; the message names where and as whom."""


def resolve_local_database(state_dir: str | Path | None = None) -> DatabaseTarget:
    from local.stack import AUTH_DB_NAME, DB_NAME, DB_USER, DEFAULT_STATE_DIR, LocalStack

    stack = LocalStack(Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR)
    state_file = stack.state_dir / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        password = stack.secrets.db_password.read_text(encoding="utf-8")
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--local: cannot read the local stack in {stack.state_dir} ({error}); is it up?"
        ) from None
    return DatabaseTarget(
        host="127.0.0.1",
        port=int(state["ports"]["postgres"]),
        user=DB_USER,
        password=password,
        tracking_db=DB_NAME,
        auth_db=AUTH_DB_NAME,
        sslmode="disable",
        source="local stack",
        local_state_dir=str(stack.state_dir),
    )


def read_secret_password(secret_arn: str, region: str, what: str) -> str:
    """A password from Secrets Manager with the caller's AWS credentials."""
    import boto3
    import botocore.exceptions

    try:
        secret = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_arn)
    except botocore.exceptions.NoCredentialsError:
        raise UsageError(f"{what}: no AWS credentials; set AWS_PROFILE (or `aws sso login`)") from None
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Unknown")
        raise UsageError(
            f"{what}: cannot read secret {secret_arn} in {region} ({code}); your AWS identity needs "
            "secretsmanager:GetSecretValue on it and kms:Decrypt on its key"
        ) from None
    password = _password_from_secret_string(secret.get("SecretString") or "")
    if not password:
        raise UsageError(f"{what}: secret {secret_arn} holds no password")
    return password


def resolve_stack_database(
    stack: str, *, host: str | None = None, port: int | None = None, outputs: dict[str, Any] | None = None
) -> DatabaseTarget:
    """The stack's RDS instance; `host`/`port` replace the endpoint when going through a tunnel."""
    try:
        outputs = outputs if outputs is not None else read_stack_outputs(stack)
    except TargetError as error:
        raise UsageError(str(error)) from None
    missing = [key for key in STACK_DB_OUTPUT_KEYS if not outputs.get(key)]
    if missing:
        raise UsageError(
            f"--stack {stack}: the stack outputs lack {', '.join(missing)}; "
            "run `pulumi up` with the current kit"
        )
    region = str(outputs["region"])
    return DatabaseTarget(
        host=host or str(outputs["db_endpoint"]),
        port=port or int(outputs["db_port"]),
        user=str(outputs["db_user"]),
        password=read_secret_password(
            str(outputs["db_password_secret_arn"]), region, f"--stack {stack}: database password"
        ),
        tracking_db=str(outputs["db_name"]),
        auth_db=str(outputs.get("db_auth_name") or contract.AUTH_DB_NAME.default),
        # RDS forces TLS (rds.force_ssl); `require` encrypts, a tunnel's 127.0.0.1 cannot verify the name.
        sslmode="require",
        source=f"stack {stack}",
        rds_instance=str(outputs["db_instance_identifier"])
        if outputs.get("db_instance_identifier")
        else None,
        region=region,
    )
