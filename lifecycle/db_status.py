"""`mlflow-stack db status`: each database's schema revision against what this kit's MLflow expects,
the migrations a server start would run, and the last backup.

Where MLflow keeps the revisions (checked in MLflow 3.17):
- tracking + registry: table `alembic_version` of the tracking database, scripts in
  mlflow/store/db_migrations;
- basic-auth: table `alembic_version_auth` of the auth database, scripts in mlflow/server/auth/db.
  Auth databases created before MLflow 3.6 have no such table: their revision is in
  `alembic_version` (mlflow.server.auth.db.utils._is_legacy_database), which the next server
  start stamps into `alembic_version_auth`.

The last backup: on a stack, RDS' automated backups (the newest automated snapshot and the latest
restorable time, i.e. how far point-in-time restore reaches); on the local stack, the newest dump
`db restore-drill` kept in `<state>/backups/`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from lifecycle.db_target import DatabaseTarget

BACKUPS_DIR = "backups"
MANIFEST = "manifest.json"


@dataclass
class SchemaStatus:
    database: str
    kind: str  # "tracking" or "auth"
    version_table: str | None  # where the revision was found (None: no table at all)
    current: str | None
    expected: str
    pending: list[dict[str, str]] = field(default_factory=list)  # oldest first: revision, message
    state: str = ""  # "at head", "behind", "empty", "unknown revision"
    note: str = ""


@dataclass
class StatusReport:
    target: dict[str, Any]
    schemas: list[SchemaStatus]
    last_backup: dict[str, Any] | None
    backup_note: str = ""

    @property
    def up_to_date(self) -> bool:
        return all(s.state == "at head" for s in self.schemas)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "up_to_date": self.up_to_date,
            "schemas": [asdict(s) for s in self.schemas],
            "last_backup": self.last_backup,
            "backup_note": self.backup_note,
        }


def _tracking_scripts() -> Any:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config(db_url=""))


def _auth_scripts() -> Any:
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config(""))


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def _revision(conn: psycopg.Connection, table: str) -> str | None:
    row = conn.execute(f"SELECT version_num FROM {table}").fetchone()  # noqa: S608 - fixed table names
    return str(row[0]) if row else None


def schema_status(conn: psycopg.Connection, database: str, kind: str, scripts: Any) -> SchemaStatus:
    """Compare the revision stored in `database` with the head of `scripts` (alembic)."""
    head = scripts.get_current_head()
    tables = _tables(conn)
    table = None
    note = ""
    if kind == "auth" and "alembic_version_auth" in tables:
        table = "alembic_version_auth"
    elif "alembic_version" in tables:
        table = "alembic_version"
        if kind == "auth":
            note = (
                "revision kept in alembic_version (auth databases from MLflow < 3.6); the next server "
                "start moves it to alembic_version_auth before migrating"
            )
    current = _revision(conn, table) if table else None
    status = SchemaStatus(database, kind, table, current, head, note=note)
    if current == head:
        status.state = "at head"
        return status
    try:
        # iterate_revisions walks from head down to (not including) current.
        revisions = list(scripts.iterate_revisions(head, current or "base"))
    except Exception:  # alembic raises CommandError/ResolutionError for a revision it does not know
        status.state = "unknown revision"
        status.note = (
            f"revision {current} is not one of this MLflow's migrations: a newer MLflow migrated this "
            "database. Do not start an older server on it; deploy the matching (or a newer) image"
        )
        return status
    status.pending = [{"revision": r.revision, "message": r.doc or ""} for r in reversed(revisions)]
    status.state = "empty" if current is None and not tables else "behind"
    return status


def local_last_backup(state_dir: str | Path) -> dict[str, Any] | None:
    """The newest dump under <state>/backups (written by `db restore-drill --keep-dump`)."""
    root = Path(state_dir) / BACKUPS_DIR
    manifests = sorted(root.glob(f"*/{MANIFEST}")) if root.is_dir() else []
    for path in reversed(manifests):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data["path"] = str(path.parent)
        return data
    return None


def rds_last_backup(rds: Any, instance: str) -> dict[str, Any]:
    """From RDS: the newest automated snapshot, the PITR window, retention and backup window.

    https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithAutomatedBackups.html —
    automated backups are a daily snapshot plus transaction logs; point-in-time restore reaches to
    LatestRestorableTime, typically within the last five minutes.
    """
    described = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]
    snapshots: list[dict[str, Any]] = []
    paginator_args: dict[str, Any] = {"DBInstanceIdentifier": instance, "SnapshotType": "automated"}
    while True:
        page = rds.describe_db_snapshots(**paginator_args)
        snapshots += [s for s in page.get("DBSnapshots", []) if s.get("SnapshotCreateTime")]
        if not page.get("Marker"):
            break
        paginator_args["Marker"] = page["Marker"]
    newest = max(snapshots, key=lambda s: s["SnapshotCreateTime"], default=None)
    return {
        "kind": "rds automated backup",
        "latest_restorable_time": _iso(described.get("LatestRestorableTime")),
        "backup_retention_days": described.get("BackupRetentionPeriod"),
        "backup_window": described.get("PreferredBackupWindow"),
        "automated_snapshots": len(snapshots),
        "newest_snapshot": newest["DBSnapshotIdentifier"] if newest else None,
        "created_at": _iso(newest["SnapshotCreateTime"]) if newest else None,
        "status": newest.get("Status") if newest else None,
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return str(value)


def database_status(target: DatabaseTarget, rds: Any = None) -> StatusReport:
    """Both schemas and the last backup. `rds` is a boto3 RDS client (made from the target's region
    when None and the target is a stack)."""
    schemas = []
    with target.connect(target.tracking_db) as conn:
        schemas.append(schema_status(conn, target.tracking_db, "tracking", _tracking_scripts()))
    with target.connect(target.auth_db) as conn:
        schemas.append(schema_status(conn, target.auth_db, "auth", _auth_scripts()))
    backup: dict[str, Any] | None = None
    note = ""
    if target.local_state_dir is not None:
        backup = local_last_backup(target.local_state_dir)
        if backup is None:
            note = "the local stack takes no scheduled backups; `db restore-drill --local` keeps its dump"
    elif target.rds_instance:
        import boto3

        client = rds or boto3.client("rds", region_name=target.region)
        backup = rds_last_backup(client, target.rds_instance)
    else:
        note = "the stack exports no db_instance_identifier: run `pulumi up` with the current kit"
    return StatusReport(target.describe(), schemas, backup, note)


def status_lines(report: StatusReport) -> list[str]:
    lines = [f"db status ({report.target['source']}, {report.target['host']}:{report.target['port']})"]
    for s in report.schemas:
        lines.append(
            f"  {s.kind:<8} {s.database}: {s.state}; current {s.current or '-'}, expected {s.expected}"
            + (f" [{s.version_table}]" if s.version_table else "")
        )
        lines += [f"      pending {p['revision']}: {p['message']}" for p in s.pending]
        if s.note:
            lines.append(f"      note: {s.note}")
    if report.last_backup:
        b = report.last_backup
        lines.append(f"  last backup: {b.get('created_at')} ({b.get('kind')})")
        for key in (
            "newest_snapshot",
            "latest_restorable_time",
            "backup_retention_days",
            "size_bytes",
            "path",
        ):
            if b.get(key) is not None:
                lines.append(f"      {key.replace('_', ' ')}: {b[key]}")
    else:
        lines.append(f"  last backup: none ({report.backup_note})")
    return lines
