"""PostgreSQL preparation: connection URIs, the auth database, and migrations run exactly once.

Every replica runs `prepare_databases` before it serves. The work happens under one PostgreSQL
session-level advisory lock, so when N replicas start together one of them migrates and the
others wait, then find the schema at head and skip. MLflow on its own only guards its table
creation with a file lock, which does nothing across containers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from server.auth_change_signal import install_auth_change_triggers
from server.settings import ServerSettings

_logger = logging.getLogger("mlflow_stack.server")

# Any constant works as long as every replica uses the same one; this is "mlflowstk" in ASCII
# squeezed into a signed 64-bit key, so it will not collide with locks other software takes.
MIGRATION_LOCK_KEY = 0x6D6C666C6F777374
CONNECT_TIMEOUT_SECONDS = 10
# Migrating a large tracking database can take minutes; beyond this something is wrong.
MIGRATION_LOCK_WAIT_SECONDS = 900
# RDS can still be finishing a reboot when a task starts; the local stack's PostgreSQL may be a
# second behind. Retry connecting this long before giving up with a clear error.
CONNECT_RETRY_SECONDS = 60.0


_PERMANENT_ERRORS = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


class DatabaseUnavailable(RuntimeError):
    pass


PASSFILE_NAME = "pgpass"
# libpq's variable for the password file; every libpq connection of the process and its children
# (psycopg 3 connects through libpq) reads the password from there.
PASSFILE_ENV = "PGPASSFILE"


def sqlalchemy_uri(settings: ServerSettings, database: str) -> str:
    """`postgresql+psycopg://` URI *without* a password: libpq takes it from the password file
    (`PGPASSFILE`, see `write_passfile`).

    MLflow's server launcher copies the store URIs into the uvicorn process's environment
    (mlflow/server/__init__.py `_run_server`), and the auth URI sits in the basic-auth config, so a
    password here would be readable in /proc/<pid>/environ of every worker.
    """
    user = quote(settings.db_user, safe="")
    return (
        f"postgresql+psycopg://{user}@{settings.db_host}:{settings.db_port}/{database}"
        f"?sslmode={settings.db_sslmode}&connect_timeout={CONNECT_TIMEOUT_SECONDS}"
    )


def _passfile_field(value: str) -> str:
    # https://www.postgresql.org/docs/current/libpq-pgpass.html: ':' and '\' are escaped with '\'.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def passfile_line(settings: ServerSettings) -> str:
    """`host:port:*:user:password` — one line covering the tracking and the auth database."""
    host, port = _passfile_field(settings.db_host), str(settings.db_port)
    user, password = _passfile_field(settings.db_user), _passfile_field(settings.db_password)
    return f"{host}:{port}:*:{user}:{password}"


def write_passfile(settings: ServerSettings, directory: Path) -> Path:
    """Write libpq's password file, 0600 from the start (libpq ignores a group- or world-readable
    one), into the replica's private directory; the caller points PGPASSFILE at it."""
    path = directory / PASSFILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(passfile_line(settings) + "\n")
    return path


def _connect(settings: ServerSettings, database: str) -> psycopg.Connection:
    """Connect with keyword arguments and no password: libpq reads it from PGPASSFILE, exactly as
    the server's engines will, so a password file that does not work fails here, before serving."""
    deadline = time.monotonic() + CONNECT_RETRY_SECONDS
    while True:
        try:
            return psycopg.connect(
                host=settings.db_host,
                port=settings.db_port,
                dbname=database,
                user=settings.db_user,
                sslmode=settings.db_sslmode,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                autocommit=True,
                application_name="mlflow-stack-entrypoint",
            )
        except psycopg.OperationalError as exc:
            # A wrong password or a missing database will not fix itself by waiting.
            permanent = any(m in str(exc) for m in _PERMANENT_ERRORS)
            if permanent or time.monotonic() >= deadline:
                # psycopg's message names host, port, user and the reason; it never includes the password.
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL database {database!r} at "
                    f"{settings.db_host}:{settings.db_port} "
                    f"as {settings.db_user!r}: {exc}".strip()
                ) from exc
            time.sleep(1.0)


@contextmanager
def migration_lock(conn: psycopg.Connection) -> Iterator[None]:
    """Hold the advisory lock; released on exit or when the session dies (a crashed replica
    cannot leave it held). Waiting is bounded: a replica stuck mid-migration must not keep every
    other one waiting silently forever."""
    started = time.monotonic()
    conn.execute(f"SET lock_timeout = '{MIGRATION_LOCK_WAIT_SECONDS}s'")
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    except psycopg.errors.LockNotAvailable as exc:
        raise DatabaseUnavailable(
            f"another replica has held the migration lock for {MIGRATION_LOCK_WAIT_SECONDS}s; "
            "check that replica's log (a long migration, or one that hangs)"
        ) from exc
    conn.execute("RESET lock_timeout")
    waited = time.monotonic() - started
    if waited > 0.5:
        _logger.info("waited %.1fs for another replica to finish preparing the databases", waited)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def ensure_database(conn: psycopg.Connection, name: str) -> bool:
    """Create database `name` if missing (needs CREATEDB, which the RDS master user has)."""
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        return False
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseUnavailable(
            f"the auth database {name!r} does not exist and this user may not create it: "
            f"grant it CREATEDB, or create it once as an admin (CREATE DATABASE {name} OWNER <user>)"
        ) from exc
    return True


@dataclass(frozen=True)
class PreparationReport:
    auth_database_created: bool
    tracking_migrated: bool
    auth_migrated: bool
    tracking_revision: str
    auth_revision: str


def _migrate_tracking(uri: str) -> tuple[bool, str | None, str]:
    """Bring the tracking + registry schema to head; (migrated?, revision before, revision after)."""
    from mlflow.store.db import utils as db_utils

    engine = db_utils.create_sqlalchemy_engine(uri)
    try:
        head = db_utils._get_latest_schema_revision()
        current = db_utils._get_schema_version(engine)
        if current == head and db_utils._all_tables_exist(engine):
            return False, current, head
        if db_utils._is_empty_database(engine):
            # The same path MLflow takes on a fresh database: create the initial tables, then upgrade.
            db_utils._initialize_tables(engine)
        else:
            db_utils._upgrade_db(engine)
        return True, current, db_utils._get_schema_version(engine)
    finally:
        engine.dispose()


def _migrate_auth(uri: str) -> tuple[bool, str | None, str]:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db import utils as auth_db_utils
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(uri)
    try:
        config = auth_db_utils._get_alembic_config(engine.url.render_as_string(hide_password=False))
        head = ScriptDirectory.from_config(config).get_current_head()

        def current_revision() -> str | None:
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"version_table": "alembic_version_auth"})
                return context.get_current_revision()

        before = current_revision()
        if before == head:
            return False, before, head
        auth_db_utils.migrate(engine, "head")
        after = current_revision()
        assert after is not None
        return True, before, after
    finally:
        engine.dispose()


def _bootstrap_admin() -> None:
    """Create the admin user under the lock, so concurrent replicas never race to insert it, and
    apply the stack's admin secret to it (server/admin_password.py)."""
    from mlflow.server import auth

    from server.admin_password import apply_admin_secret

    auth.bootstrap_admin_user()
    apply_admin_secret(auth.store, auth.auth_config.admin_username, auth.auth_config.admin_password)


def _before_schema_migrations(settings: ServerSettings) -> None:
    """Refuse an upgrade that would lose grants, back up if a schema will change, then record
    what the kit does after the migrations (server/auth_upgrade.py, server/backup.py)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    from server import auth_upgrade, backup

    plan = auth_upgrade.inspect_auth_database(settings)
    tracking_revision, tracking_has_data = backup.tracking_revision(settings)
    change = backup.SchemaChange(
        tracking=(tracking_revision, _get_latest_schema_revision()),
        auth=(plan.state.revision, auth_upgrade.auth_head()),
        has_data=tracking_has_data or plan.has_users,
    )
    backup.backup_before_schema_change(settings, change)
    auth_upgrade.record_pending_steps(settings, plan)


def _after_schema_migrations(settings: ServerSettings) -> None:
    from server import auth_upgrade

    auth_upgrade.after_migrations(settings)


def _import_mlflow() -> None:
    """Import MLflow's store and auth modules (seconds of CPU) *before* taking the lock, so
    replicas starting together pay that cost in parallel instead of one after another.
    `mlflow.server.auth` reads MLFLOW_AUTH_CONFIG_PATH at import: the config is written by now."""
    import mlflow.server.auth
    import mlflow.server.auth.db.utils
    import mlflow.store.db.utils  # noqa: F401


def prepare_databases(settings: ServerSettings) -> PreparationReport:
    """Create the auth DB if missing and migrate both schemas, once across all replicas."""
    _import_mlflow()
    conn = _connect(settings, settings.db_name)
    try:
        with migration_lock(conn):
            created = ensure_database(conn, settings.auth_db_name)
            if created:
                _logger.info("created auth database %r", settings.auth_db_name)
            _before_schema_migrations(settings)
            tracking_migrated, tracking_before, tracking_rev = _migrate_tracking(
                sqlalchemy_uri(settings, settings.db_name)
            )
            auth_migrated, auth_before, auth_rev = _migrate_auth(
                sqlalchemy_uri(settings, settings.auth_db_name)
            )
            install_auth_change_triggers(sqlalchemy_uri(settings, settings.auth_db_name))
            _bootstrap_admin()
            _after_schema_migrations(settings)
    finally:
        conn.close()
    # These two lines are the contract the concurrency test counts: exactly one replica says MIGRATED.
    for label, migrated, before, after in (
        ("tracking", tracking_migrated, tracking_before, tracking_rev),
        ("auth", auth_migrated, auth_before, auth_rev),
    ):
        if migrated:
            _logger.info("%s database: MIGRATED from %s to %s", label, before or "empty", after)
        else:
            _logger.info("%s database: already at %s, migration skipped", label, after)
    return PreparationReport(
        auth_database_created=created,
        tracking_migrated=tracking_migrated,
        auth_migrated=auth_migrated,
        tracking_revision=tracking_rev,
        auth_revision=auth_rev,
    )
