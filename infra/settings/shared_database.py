"""A database on the platform's shared instance: which stack may set what, and connection budgets.

A platform stack (tenancy.mode platform) may own one shared RDS instance (`sharedDatabase`); a team
stack opts in with `database.placement: shared` and then gets, on that instance, its own tracking
and auth databases and its own PostgreSQL role with a CONNECTION LIMIT (`database.connectionLimit`,
or derived from the team's autoscaling ceiling and pool sizes).

What one stack file can check is checked here, before anything is created. What needs the platform
(does it have a shared instance? does this team's limit fit its budget?) is checked once the
StackReference outputs are known (infra/shared_database.py). The *sum* of every team's limit cannot
be checked from one team stack: the graph tests check it for the stacks in stacks/, and
docs/teams.md tells a platform engineer how to keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.settings.database import DatabaseInstanceSettings, DatabaseSettings, SharedDatabaseSettings
from infra.settings.limits import CONNECTION_BUDGET_FRACTION, MIN_PROD_BACKUP_DAYS
from infra.settings.models import ServerSettings, _problem, connections_at_full_scale
from infra.settings.tenancy import TenancySettings

# Connections a team's role needs besides its replicas at full scale: the one-off migration task of
# an upgrade, the maintenance task (`mlflow gc`, the users re-sync) and an operator's session.
SHARED_ROLE_HEADROOM_CONNECTIONS = 10
# The instance-level keys (YAML names): a team with placement shared takes them from the platform.
INSTANCE_KEYS: tuple[str, ...] = tuple(
    field.alias or name for name, field in DatabaseInstanceSettings.model_fields.items()
)


def team_connection_limit(database: DatabaseSettings, server: ServerSettings) -> int:
    """The CONNECTION LIMIT of a team's role on a shared instance: the setting, or what the server
    can open at full scale plus the headroom above."""
    if database.connection_limit is not None:
        return database.connection_limit
    return connections_at_full_scale(server) + SHARED_ROLE_HEADROOM_CONNECTIONS


def shared_connection_budget(shared: DatabaseInstanceSettings) -> int:
    """Connections the teams' roles may hold together on the shared instance: the same fraction of
    max_connections a stack's own server may use (the rest: RDS' reserved slots, the master)."""
    return int(shared.max_connections * CONNECTION_BUDGET_FRACTION)


def shared_database_problems(ctx: Mapping[str, Any], raw: Mapping[str, Any]) -> list[str]:
    """Every contradiction between database.placement, sharedDatabase and tenancy.mode."""
    needs = ("tenancy", "database", "server", "sharedDatabase", "environment")
    if not all(need in ctx for need in needs):
        return []  # a section already failed validation and was reported
    tenancy: TenancySettings = ctx["tenancy"]
    database: DatabaseSettings = ctx["database"]
    server: ServerSettings = ctx["server"]
    shared: SharedDatabaseSettings = ctx["sharedDatabase"]
    raw_database = raw.get("database") if isinstance(raw.get("database"), Mapping) else {}
    mode = tenancy.mode
    problems: list[str] = []

    if raw.get("sharedDatabase") and mode != "platform":
        problems.append(
            _problem(
                "sharedDatabase",
                f"is a platform stack's setting (the instance teams share), and this stack's tenancy.mode "
                f"is {mode}",
                "remove it; a team stack uses its platform's shared instance with database.placement: shared",
            )
        )
    if mode == "platform" and raw.get("sharedDatabase"):
        if not shared.enabled:
            problems.append(
                _problem(
                    "sharedDatabase.enabled",
                    "is false, so the other sharedDatabase settings would create nothing",
                    "set sharedDatabase.enabled: true, or remove the section",
                )
            )
        else:
            problems.extend(_shared_instance_problems(shared, ctx["environment"]))

    if database.shared and mode != "team":
        problems.append(
            _problem(
                "database.placement",
                f"shared puts the databases on a platform stack's shared instance, which only a team stack "
                f"has (this stack's tenancy.mode is {mode})",
                "remove it (own-instance), or make this a team stack (tenancy.mode: team) on a platform "
                "with sharedDatabase.enabled: true",
            )
        )
    if database.connection_limit is not None and not database.shared:
        problems.append(
            _problem(
                "database.connectionLimit",
                "only applies with database.placement: shared (on its own instance the role may use "
                "max_connections minus a reserve for the master)",
                "remove it, or set database.placement: shared",
            )
        )
    if database.shared and mode == "team":
        for key in INSTANCE_KEYS:
            if key in raw_database:
                problems.append(
                    _problem(
                        f"database.{key}",
                        "is an instance setting, and with database.placement: shared the instance is the "
                        "platform stack's",
                        f"remove it here (the platform sets sharedDatabase.{key}), or use "
                        "database.placement: own-instance",
                    )
                )
        used = connections_at_full_scale(server)
        needed = used + SHARED_ROLE_HEADROOM_CONNECTIONS
        limit = team_connection_limit(database, server)
        if limit < needed:
            problems.append(
                _problem(
                    "database.connectionLimit",
                    f"{limit} is below what this team needs on the shared instance: {used} connections "
                    f"from server.maxReplicas {server.max_replicas} replicas at full scale (workers "
                    f"{server.workers}, dbPoolSize {server.db_pool_size}, dbMaxOverflow "
                    f"{server.db_max_overflow}) + {SHARED_ROLE_HEADROOM_CONNECTIONS} for migrations and "
                    "maintenance",
                    f"raise connectionLimit to at least {needed} (or remove it: derived), or lower "
                    "server.maxReplicas, workers, dbPoolSize or dbMaxOverflow",
                )
            )
    return problems


def _shared_instance_problems(shared: SharedDatabaseSettings, environment: str) -> list[str]:
    """The rules a stack's own instance obeys (infra/settings/checks.py), for the shared one."""
    from infra.settings.checks import min_max_allocated_storage_gb

    problems = []
    minimum = min_max_allocated_storage_gb(shared.allocated_storage_gb)
    if shared.max_allocated_storage_gb < minimum:
        problems.append(
            _problem(
                "sharedDatabase.maxAllocatedStorageGb",
                f"{shared.max_allocated_storage_gb} is less than 10 % above allocatedStorageGb "
                f"{shared.allocated_storage_gb}; RDS refuses it (InvalidParameterCombination)",
                f"set maxAllocatedStorageGb to at least {minimum}",
            )
        )
    if environment == "prod":
        # Every prod team on it depends on it: no overrides here (docs/teams.md).
        guards = {
            "multiAz": (not shared.multi_az, "prod requires Multi-AZ"),
            "deletionProtection": (not shared.deletion_protection, "prod requires deletion protection"),
            "backupRetentionDays": (
                shared.backup_retention_days < MIN_PROD_BACKUP_DAYS,
                f"prod requires >= {MIN_PROD_BACKUP_DAYS} days of backups "
                f"(got {shared.backup_retention_days})",
            ),
        }
        problems += [
            _problem(f"sharedDatabase.{key}", what, "fix the value: every prod team on the instance needs it")
            for key, (violated, what) in guards.items()
            if violated
        ]
    return problems
