"""A team's database on the platform's shared RDS instance (database.placement: shared).

The platform stack (`sharedDatabase.enabled`) owns one RDS PostgreSQL instance built by the same
`Database` component as a stack's own (KMS-encrypted storage, the RDS-managed master password in
Secrets Manager under a platform key, TLS forced, pg_stat_statements, deletion protection per
environment, its own subnet group and security group) and exports its ids and ARNs.

A team stack with `placement: shared` creates no instance. `TeamDatabase` stands where `Database`
stands in a team's own stack: it names the team's two databases and its role on the shared instance
(`<team>_tracking`, `<team>_auth`, `mlflow_<team>` — created by the task's `db-bootstrap` container
with the instance's master password, server/db_roles.py), reads the platform's endpoint, security
group and master secret, and refuses a platform without a shared instance, or one whose connection
budget this team's role alone would exceed, once the StackReference's outputs are known.

The cost of this mode (docs/teams.md): the team's execution role may read the instance's master
secret, and ECS hands it to the db-bootstrap container only (never the server container; the task
role never). No pre-upgrade RDS snapshot is taken: it would be of the whole instance, every team's
data in a snapshot one team's stack owns; the restore point is the instance's point-in-time backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.database import Database, DatabaseArgs
from infra.settings import Settings
from infra.settings.shared_database import shared_connection_budget, team_connection_limit
from infra.team_route import PlatformReference

# What a team stack with placement shared reads from its platform (never a secret value).
SHARED_DATABASE_OUTPUTS = (
    "shared_db_endpoint",
    "shared_db_port",
    "shared_db_security_group_id",
    "shared_db_instance_identifier",
    "shared_db_master_user",
    "shared_db_master_secret_arn",
    "shared_db_master_secret_kms_key_arn",
    "shared_db_kms_key_arn",
    "shared_db_allocated_storage_gb",
    "shared_db_max_connections",
    "shared_db_connection_budget",
)


def team_database_names(team: str) -> tuple[str, str, str]:
    """(tracking database, auth database, role) of a team on a shared instance. Team names have
    hyphens, PostgreSQL identifiers in the server's contract do not (server/settings.py); team
    names never contain underscores, so the mapping stays one-to-one."""
    ident = team.replace("-", "_")
    return f"{ident}_tracking", f"{ident}_auth", f"mlflow_{ident}"


# --- the platform's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class SharedDatabase:
    database: Database
    master_secret_key: aws.kms.Key
    settings: Settings


def build_shared_database(
    settings: Settings, vpc_id: pulumi.Input[str], private_subnet_ids: pulumi.Input[list[str]], opts: Any
) -> SharedDatabase:
    prefix = settings.name_prefix
    # Its own key for the master secret: the teams' execution roles may decrypt with it (through
    # Secrets Manager only), and with nothing else of the platform's.
    key = aws.kms.Key(
        f"{prefix}-shared-db-secret-key",
        description=f"master user secret of {prefix}-shared-db (read by the teams' db-bootstrap containers)",
        enable_key_rotation=True,
        deletion_window_in_days=30,
        opts=opts,
    )
    database = Database(
        f"{prefix}-shared-db",
        DatabaseArgs(
            settings=settings.shared_database,
            identifier=f"{prefix}-shared-db",
            vpc_id=vpc_id,
            private_subnet_ids=private_subnet_ids,
            master_secret_kms_key_arn=key.arn,
            protect=settings.is_prod,
            initial_database=None,  # each team's bootstrap creates its own two
        ),
        opts=opts,
    )
    return SharedDatabase(database=database, master_secret_key=key, settings=settings)


def export_shared_database_outputs(shared: SharedDatabase) -> None:
    database, instance = shared.database, shared.settings.shared_database
    pulumi.export("shared_db_endpoint", database.endpoint)
    pulumi.export("shared_db_port", database.port)
    pulumi.export("shared_db_security_group_id", database.security_group_id)
    pulumi.export("shared_db_instance_identifier", database.instance_identifier)
    pulumi.export("shared_db_master_user", database.master_username)
    pulumi.export("shared_db_master_secret_arn", database.master_secret_arn)
    pulumi.export("shared_db_master_secret_kms_key_arn", shared.master_secret_key.arn)
    pulumi.export("shared_db_kms_key_arn", database.kms_key_arn)
    pulumi.export("shared_db_allocated_storage_gb", instance.allocated_storage_gb)
    pulumi.export("shared_db_max_connections", instance.max_connections)
    pulumi.export("shared_db_connection_budget", shared_connection_budget(instance))


# --- the team's side ---------------------------------------------------------------------------


def _checked_endpoint(
    settings: Settings, reference: str, limit: int, endpoint: str | None, budget: Any
) -> str:
    stack = reference.rsplit("/", 1)[-1]
    if not endpoint:
        raise ValueError(
            f"mlflow-stack:database.placement is shared, but the platform stack {reference} has no shared "
            f"database (no shared_db_endpoint output) — set sharedDatabase.enabled: true in "
            f"stacks/Pulumi.{stack}.yaml and deploy it first, or remove database.placement (own-instance)"
        )
    if budget is not None and limit > int(budget):
        raise ValueError(
            f"mlflow-stack:database.connectionLimit: this team's role needs {limit} connections, more than "
            f"the whole connection budget of {reference}'s shared instance ({int(budget)}) — lower "
            "server.maxReplicas/dbPoolSize/dbMaxOverflow or set a smaller connectionLimit, or choose a "
            "larger sharedDatabase.instanceClass on the platform"
        )
    return endpoint


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class TeamDatabase:
    """A team's databases and role on the platform's shared instance, in the shape of `Database`."""

    def __init__(self, settings: Settings, platform: PlatformReference) -> None:
        assert settings.team is not None  # settings refuse a team stack without a team
        get = platform.stack.get_output
        self.app_connection_limit = team_connection_limit(settings.database, settings.server)
        self.endpoint: pulumi.Output[str] = pulumi.Output.all(
            get("shared_db_endpoint"), get("shared_db_connection_budget")
        ).apply(
            lambda values: _checked_endpoint(
                settings, platform.name, self.app_connection_limit, values[0], values[1]
            )
        )
        # Numbers cross a StackReference as floats (protobuf Struct): 5432.0 would be the DB_PORT.
        self.port: pulumi.Output[int] = get("shared_db_port").apply(_whole)
        self.db_name, self.auth_db_name, self.username = team_database_names(settings.team)
        self.master_username: pulumi.Output[str] = get("shared_db_master_user")
        self.master_secret_arn: pulumi.Output[str] = get("shared_db_master_secret_arn")
        self.master_secret_kms_key_arn: pulumi.Output[str] = get("shared_db_master_secret_kms_key_arn")
        self.security_group_id: pulumi.Output[str] = get("shared_db_security_group_id")
        self.kms_key_arn: pulumi.Output[str] = get("shared_db_kms_key_arn")
        self.instance_identifier: pulumi.Output[str] = get("shared_db_instance_identifier")
        self.allocated_storage_gb: pulumi.Output[int] = get("shared_db_allocated_storage_gb").apply(_whole)
        self.max_connections: pulumi.Output[int] = get("shared_db_max_connections").apply(_whole)
        self.pre_upgrade_snapshot_id: pulumi.Output[str] | None = None

    def pre_upgrade_snapshot(self, mlflow_version: str) -> None:
        """None: a snapshot of the shared instance would hold every team's data (see the module
        docstring); the upgrade's restore point is the instance's point-in-time backup."""
        return None
