"""A dump of both databases before any migration that changes a schema (MLFLOW_STACK_BACKUP_DIR).

Runs under the migration lock, after the auth checks that may refuse the upgrade and before
anything is written: if the dump fails, nothing is migrated and the replicas that are already
serving (the old version) keep serving. A new, empty deployment has nothing to lose and is not
dumped. On AWS the deploy takes an RDS snapshot before the new tasks start instead
(docs/upgrading.md); this is the local stack's (and any plain PostgreSQL's) equivalent.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from server.database import DatabaseUnavailable, _connect
from server.settings import ServerSettings

_logger = logging.getLogger("mlflow_stack.server")
DUMP_TIMEOUT_SECONDS = 3600


class BackupFailed(DatabaseUnavailable):
    pass


@dataclass(frozen=True)
class SchemaChange:
    tracking: tuple[str | None, str]  # (current, head)
    auth: tuple[str | None, str]
    has_data: bool

    @property
    def changes(self) -> bool:
        return self.tracking[0] != self.tracking[1] or self.auth[0] != self.auth[1]


def tracking_revision(settings: ServerSettings) -> tuple[str | None, bool]:
    """(revision, has data) of the tracking database, read with SQL (no engine, no MLflow)."""
    with _connect(settings, settings.db_name) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        }
        if "alembic_version" not in tables:
            return None, bool(tables)
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return (row[0] if row else None), True


def dump(settings: ServerSettings, directory: Path, label: str) -> dict[str, Path]:
    """`pg_dump --format=custom` of both databases into `directory`; the password comes from
    libpq's password file (PGPASSFILE), never from the command line."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    env = {**os.environ, "PGSSLMODE": settings.db_sslmode, "PGCONNECT_TIMEOUT": "10"}
    files: dict[str, Path] = {}
    for database in (settings.db_name, settings.auth_db_name):
        target = directory / f"{stamp}-{label}-{database}.dump"
        command = [
            settings.pg_dump,
            "--format=custom",
            f"--file={target}",
            f"--host={settings.db_host}",
            f"--port={settings.db_port}",
            f"--username={settings.db_user}",
            "--no-password",
            database,
        ]
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=DUMP_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackupFailed(
                f"backup before migrating failed ({settings.pg_dump}: {exc}); nothing was migrated. "
                "Fix MLFLOW_STACK_PG_DUMP / MLFLOW_STACK_BACKUP_DIR or unset MLFLOW_STACK_BACKUP_DIR"
            ) from exc
        if done.returncode != 0:
            raise BackupFailed(
                f"backup before migrating failed: pg_dump {database} exited {done.returncode}: "
                f"{done.stderr.strip()[-500:]}; nothing was migrated"
            )
        os.chmod(target, 0o600)
        files[database] = target
    return files


def backup_before_schema_change(settings: ServerSettings, change: SchemaChange) -> dict[str, Path]:
    if not change.changes or not change.has_data:
        return {}  # no schema change, or a new deployment with nothing to lose
    if settings.backup_dir is None:
        _logger.warning(
            "schema change ahead (tracking %s -> %s, auth %s -> %s) and MLFLOW_STACK_BACKUP_DIR is not "
            "set: no dump taken here (on AWS the deploy's RDS snapshot is the backup)",
            change.tracking[0],
            change.tracking[1],
            change.auth[0],
            change.auth[1],
        )
        return {}
    files = dump(settings, Path(settings.backup_dir), label=f"before-{change.tracking[1]}")
    for database, path in files.items():
        _logger.info(
            "backup before migrating: %s (restore: pg_restore --clean --if-exists --no-owner -d %s %s)",
            path,
            database,
            path,
        )
    return files
