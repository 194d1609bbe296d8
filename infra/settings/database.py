"""The database sections: a stack's own RDS instance, its placement, and a platform's shared one.

- `database` (a standalone or team stack): the RDS PostgreSQL instance of the tracking store, model
  registry and basic-auth DB — or, with `placement: shared` on a team stack, the team's two databases
  and role on the platform stack's shared instance, whose size the platform decides.
- `sharedDatabase` (a platform stack): that shared instance, the same instance settings with the
  same environment presets, off unless `enabled`.

Which section may be set on which stack, and the connection budget of a shared instance, are checked
in infra/settings/shared_database.py.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from infra.settings.limits import (
    GIB,
    INSTANCE_CLASS_MEMORY_GIB,
    RDS_CONNECTION_MEMORY_BYTES,
    RDS_MAX_CONNECTIONS_CAP,
)
from infra.settings.section import _Section

# The two placements of a team's databases: its own RDS instance, or the platform's shared one.
OWN_INSTANCE = "own-instance"
SHARED = "shared"


class DatabaseInstanceSettings(_Section):
    """An RDS PostgreSQL instance: its size, storage, backups, hardening and restore source."""

    engine_version: str = Field("17", description="PostgreSQL major (or major.minor) version")
    instance_class: str = Field("db.t4g.micro", description="RDS instance class")
    allocated_storage_gb: int = Field(20, ge=20, le=65536, description="initial gp3 storage")
    max_allocated_storage_gb: int = Field(100, ge=20, le=65536, description="storage autoscaling ceiling")
    multi_az: bool = Field(False, description="standby replica in a second AZ")
    backup_retention_days: int = Field(7, ge=0, le=35, description="automated backup retention")
    deletion_protection: bool = Field(False, description="RDS deletion protection")
    final_snapshot: bool = Field(False, description="take a final snapshot when the instance is deleted")
    performance_insights: bool = Field(True, description="Performance Insights (7 days, free tier)")
    slow_query_ms: int = Field(500, ge=0, description="log statements slower than this (0 logs all)")
    restore_from_snapshot: str | None = Field(
        None,
        description="create the instance from this DB snapshot (identifier, `rds:` automated identifier "
        "or ARN): a new instance with this stack's settings, named <identifier>-r<hash>; see "
        "docs/operations.md, restoring the database",
    )
    restore_from_instance: str | None = Field(
        None,
        description="point-in-time restore: the instance whose automated backups to restore from "
        "(with restoreTime)",
    )
    restore_time: str | None = Field(
        None,
        description="with restoreFromInstance: a UTC time such as 2026-01-31T12:00:00Z (within the backup "
        "retention), or `latest` (the latest restorable time, about five minutes ago)",
    )

    @field_validator("engine_version")
    @classmethod
    def _engine_version(cls, value: str) -> str:
        if not re.fullmatch(r"1[3-9](\.\d+)?", value):
            raise ValueError("must be a PostgreSQL version 13 or later, e.g. '17' or '17.5'")
        return value

    @field_validator("instance_class")
    @classmethod
    def _instance_class(cls, value: str) -> str:
        if value not in INSTANCE_CLASS_MEMORY_GIB:
            raise ValueError(f"unknown instance class; use one of {', '.join(INSTANCE_CLASS_MEMORY_GIB)}")
        return value

    @field_validator("restore_from_snapshot")
    @classmethod
    def _snapshot(cls, value: str | None) -> str | None:
        # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_RestoreDBInstanceFromDBSnapshot.html
        if value is not None and not re.fullmatch(
            r"(arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:snapshot:)?(rds:)?[A-Za-z][A-Za-z0-9-]{0,254}", value
        ):
            raise ValueError(
                "must be a DB snapshot identifier (my-snapshot, rds:db-2026-01-31-03-10) or its ARN"
            )
        return value

    @field_validator("restore_from_instance")
    @classmethod
    def _source_instance(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z](?!.*--)[A-Za-z0-9-]{0,62}(?<!-)", value):
            raise ValueError("must be a DB instance identifier, e.g. mlflow-prod-db")
        return value

    @field_validator("restore_time")
    @classmethod
    def _restore_time(cls, value: str | None) -> str | None:
        if (
            value is not None
            and value != "latest"
            and not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value)
        ):
            raise ValueError("must be `latest` or a UTC time like 2026-01-31T12:00:00Z")
        return value

    @property
    def restore_source(self) -> str | None:
        """What the instance is restored from (None: a new, empty instance)."""
        if self.restore_from_snapshot:
            return f"snapshot {self.restore_from_snapshot}"
        if self.restore_from_instance:
            return f"instance {self.restore_from_instance} at {self.restore_time}"
        return None

    @property
    def engine_major(self) -> str:
        return self.engine_version.split(".")[0]

    @property
    def max_connections(self) -> int:
        """RDS' default max_connections for this instance class."""
        memory = INSTANCE_CLASS_MEMORY_GIB[self.instance_class] * GIB
        return min(int(memory // RDS_CONNECTION_MEMORY_BYTES), RDS_MAX_CONNECTIONS_CAP)


class DatabaseSettings(DatabaseInstanceSettings):
    """RDS PostgreSQL for the tracking store, model registry and basic-auth DB."""

    placement: Literal["own-instance", "shared"] = Field(
        OWN_INSTANCE,
        description="own-instance: the stack's own RDS instance. shared (team stacks): the team's tracking "
        "and auth databases and its own role on the platform stack's shared instance (sharedDatabase); "
        "the instance settings then come from the platform (docs/teams.md)",
    )
    connection_limit: int | None = Field(
        None,
        ge=1,
        description="placement shared: the CONNECTION LIMIT of the team's PostgreSQL role (unset: what the "
        "server opens at full scale plus headroom for migrations and maintenance); the teams' limits "
        "together must fit the shared instance's budget",
    )

    @property
    def shared(self) -> bool:
        return self.placement == SHARED


class SharedDatabaseSettings(DatabaseInstanceSettings):
    """Platform stacks: one RDS PostgreSQL instance that team stacks with database.placement shared use,
    each with its own databases and role (off unless enabled; sized by the environment's preset)."""

    enabled: bool = Field(False, description="create the shared instance (team stacks opt in per team)")
