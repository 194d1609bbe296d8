"""The application role: created and handed the databases with the master credentials, once.

`python -m server.entrypoint bootstrap-db` runs this before any replica serves (ECS: a container
the server container waits on; the local stack: before its replicas). Afterwards the server, the
migrations, `mlflow gc` and the maintenance task connect as the application role, which

- owns the tracking and the auth database and every object in their `public` schemas;
- has LOGIN and nothing else: not superuser, no CREATEDB, no CREATEROLE, member of no role;
- has a CONNECTION LIMIT below the instance's max_connections, so a connection leak in the
  server cannot lock the master (the operator) out;
- has the password from the stack's secret (set as a SCRAM-SHA-256 verifier computed here, so the
  password itself never reaches PostgreSQL's statement log).

It also creates `pg_stat_statements` in both databases, in the schema `monitoring` (never
`public`, which the application role owns), where `mlflow-stack db doctor` reads the slowest
statements — when the extension is available and its library is loaded (the stack's parameter
group preloads it; RDS applies that at the next reboot). The schema belongs to the application
role, the extension to the master. The role gets no `pg_read_all_stats`: the doctor reads only
its own statements, which PostgreSQL shows to every role, and the role is member of no role.

Cheap when nothing changed: if the application role logs in with its secret and already owns
everything, the master credentials are not used at all. Otherwise the work runs under a
PostgreSQL advisory lock, so replicas starting together bootstrap one at a time, and it is
idempotent (a second run changes nothing). Existing deployments that ran as the master user are
converted in place: the databases and their objects are re-owned by the application role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from server.database import CONNECT_TIMEOUT_SECONDS, MIGRATION_LOCK_KEY, DatabaseUnavailable
from server.settings import BootstrapSettings

_logger = logging.getLogger("mlflow_stack.server")

# A different key than the migration lock: the bootstrap holds it in the `postgres` database.
BOOTSTRAP_LOCK_KEY = 0x6D6C666C6F77626F
MAINTENANCE_DB = "postgres"  # exists on RDS and on every initdb'd cluster
SCRAM_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
CONNECT_RETRY_SECONDS = 60.0
STATISTICS_EXTENSION = "pg_stat_statements"
# lifecycle/db_doctor.py and local/postgres.py use the same schema.
STATISTICS_SCHEMA = "monitoring"
# Relation kinds ALTER TABLE ... OWNER TO accepts (sequences owned by a column follow their table).
_TABLE_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}


def scram_sha256_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The verifier PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677; the format of
    `pg_authid.rolpassword`). `ALTER ROLE ... PASSWORD '<verifier>'` stores it as is, so the
    plain password is never part of a statement the server could log."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass
class BootstrapReport:
    used_master: bool = False
    changes: list[str] = field(default_factory=list)


def _connect(
    settings: BootstrapSettings, user: str, password: str, database: str, *, retry: bool = True
) -> psycopg.Connection:
    deadline = time.monotonic() + (CONNECT_RETRY_SECONDS if retry else 0)
    while True:
        try:
            return psycopg.connect(
                host=settings.db_host,
                port=settings.db_port,
                dbname=database,
                user=user,
                password=password,
                sslmode=settings.db_sslmode,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                autocommit=True,
                application_name="mlflow-stack-bootstrap",
            )
        except psycopg.OperationalError as exc:
            text = str(exc)
            permanent = "password authentication failed" in text or "does not exist" in text
            if permanent or time.monotonic() >= deadline:
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL database {database!r} at {settings.db_host}:"
                    f"{settings.db_port} as {user!r}: {text.strip()}"
                ) from exc
            time.sleep(1.0)


def _foreign_objects(conn: psycopg.Connection, owner: str) -> int:
    """Objects in `public` (relations, types, functions) not owned by `owner`."""
    row = conn.execute(
        """
        SELECT
          (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r','p','v','m','f','S')
              AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %(owner)s))
        + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'public' AND t.typtype IN ('e','d')
              AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = %(owner)s))
        + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public'
              AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = %(owner)s))
        """,
        {"owner": owner},
    ).fetchone()
    return int(row[0]) if row else 0


def app_role_ready(settings: BootstrapSettings) -> bool:
    """True when the application role logs in with its secret and already has exactly what the
    bootstrap would give it — then the master credentials are not needed."""
    try:
        conn = _connect(settings, settings.app_user, settings.app_password, settings.db_name, retry=False)
    except DatabaseUnavailable:
        return False
    with conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconnlimit "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if role is None or any(role[:5]) or role[5] != settings.app_connection_limit:
            return False
        owned = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = ANY(%s) "
            "AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
            ([settings.db_name, settings.auth_db_name],),
        ).fetchone()
        if owned is None or owned[0] != 2 or _foreign_objects(conn, settings.app_user):
            return False
        if _statistics_missing(conn):
            return False
    with _connect(
        settings, settings.app_user, settings.app_password, settings.auth_db_name, retry=False
    ) as auth:
        return _foreign_objects(auth, settings.app_user) == 0 and not _statistics_missing(auth)


def _statistics_missing(conn: psycopg.Connection) -> bool:
    """pg_stat_statements could be created in this database but is not: the extension is available
    and its library is loaded (its `pg_stat_statements.*` settings exist only then; readable by any
    role, unlike shared_preload_libraries itself)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = %(ext)s) "
        "AND EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE %(settings)s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %(ext)s)",
        {"ext": STATISTICS_EXTENSION, "settings": f"{STATISTICS_EXTENSION}.%"},
    ).fetchone()
    return bool(row and row[0])


def _ensure_statement_statistics(settings: BootstrapSettings, report: BootstrapReport) -> None:
    """`CREATE EXTENSION pg_stat_statements SCHEMA monitoring` in both databases, where missing.

    The application role (the databases' owner) creates the schema — the RDS master has no CREATE
    on a database it does not own — and lets the master create in it for the one statement; the
    master creates the extension (on RDS, `rds_superuser` may). A master that may not (a plain
    PostgreSQL's non-superuser) only costs the doctor's slowest-statements list: logged, not fatal."""
    schema = sql.Identifier(STATISTICS_SCHEMA)
    extension = sql.Identifier(STATISTICS_EXTENSION)
    master = sql.Identifier(settings.master_user)
    for name in (settings.db_name, settings.auth_db_name):
        with _connect(settings, settings.app_user, settings.app_password, name) as app:
            if not _statistics_missing(app):
                continue
            granted = False
            try:
                app.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                app.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(schema, master))
                granted = True
                with _connect(settings, settings.master_user, settings.master_password, name) as conn:
                    conn.execute(
                        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}").format(extension, schema)
                    )
                report.changes.append(
                    f"database {name}: created {STATISTICS_EXTENSION} in {STATISTICS_SCHEMA}"
                )
            except psycopg.errors.InsufficientPrivilege as exc:
                _logger.warning(
                    "database %s: %s not created (%s); `mlflow-stack db doctor` will not list the "
                    "slowest statements (docs/database.md)",
                    name,
                    STATISTICS_EXTENSION,
                    exc.diag.message_primary,
                )
            finally:
                if granted:
                    app.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(schema, master))


def _ensure_role(conn: psycopg.Connection, settings: BootstrapSettings, report: BootstrapReport) -> None:
    role = sql.Identifier(settings.app_user)
    verifier = sql.Literal(scram_sha256_verifier(settings.app_password))
    limit = sql.Literal(settings.app_connection_limit)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (settings.app_user,)).fetchone()
    # SUPERUSER/REPLICATION/BYPASSRLS can only be named by a superuser (the RDS master is not one):
    # a new role simply does not get them, and an existing one is checked below.
    verb = "ALTER" if exists else "CREATE"
    conn.execute(
        sql.SQL(verb + " ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}").format(
            role, limit, verifier
        )
    )
    report.changes.append(f"{'refreshed' if exists else 'created'} role {settings.app_user}")
    attributes = conn.execute(
        "SELECT rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = %s", (settings.app_user,)
    ).fetchone()
    if attributes and any(attributes):
        raise DatabaseUnavailable(
            f"role {settings.app_user!r} has SUPERUSER, REPLICATION or BYPASSRLS; as an admin run "
            f"ALTER ROLE {settings.app_user} NOSUPERUSER NOREPLICATION NOBYPASSRLS"
        )
    memberships = conn.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (settings.app_user,),
    ).fetchall()
    for (granted,) in memberships:
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(granted), role))
        report.changes.append(f"revoked membership of {settings.app_user} in {granted}")


def _may_act_as_app(conn: psycopg.Connection, settings: BootstrapSettings) -> None:
    """Re-owning an object to the application role needs the master to be able to SET ROLE to it
    (PostgreSQL: ALTER ... OWNER TO). A superuser (the local stack) already can."""
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if superuser and superuser[0]:
        return
    version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    privilege = "SET" if version >= 160000 else "MEMBER"
    allowed = conn.execute(
        "SELECT pg_has_role(current_user, %s, %s)", (settings.app_user, privilege)
    ).fetchone()
    if allowed and allowed[0]:
        return
    options = sql.SQL(" WITH INHERIT FALSE, SET TRUE" if version >= 160000 else "")
    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER{}").format(sql.Identifier(settings.app_user), options))


def _ensure_databases(conn: psycopg.Connection, settings: BootstrapSettings, report: BootstrapReport) -> None:
    role = sql.Identifier(settings.app_user)
    for name in (settings.db_name, settings.auth_db_name):
        db = sql.Identifier(name)
        owner = conn.execute(
            "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = %s",
            (name,),
        ).fetchone()
        if owner is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
                report.changes.append(f"created database {name}")
            except psycopg.errors.DuplicateDatabase:
                pass  # another bootstrap outside this lock (an older entrypoint) created it
        elif owner[0] != settings.app_user:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role))
            report.changes.append(f"database {name}: owner {owner[0]} -> {settings.app_user}")
        # Only the owner (and admins) may connect: other roles of the instance see neither database.
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))


def _reown_objects(settings: BootstrapSettings, report: BootstrapReport) -> None:
    role = sql.Identifier(settings.app_user)
    for name in (settings.db_name, settings.auth_db_name):
        with _connect(settings, settings.master_user, settings.master_password, name) as conn:
            if not _foreign_objects(conn, settings.app_user):
                conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
                continue
            # No replica migrates while its tables change owner (the migration lock is per database).
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                moved = _reown_in(conn, settings.app_user, role)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
            report.changes.append(f"database {name}: {moved} object(s) re-owned by {settings.app_user}")


def _reown_in(conn: psycopg.Connection, app_user: str, role: sql.Identifier) -> int:
    moved = 0
    schema = conn.execute(
        "SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
        "WHERE n.nspname = 'public'"
    ).fetchone()
    if schema and schema[0] not in (app_user, "pg_database_owner"):
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role))
        moved += 1
    relations = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r','p','v','m','f') "
        "AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (app_user,),
    ).fetchall()
    for relname, relkind in relations:
        kind = sql.SQL(_TABLE_KINDS[relkind])
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(kind, sql.Identifier("public", relname), role))
        moved += 1
    # Sequences that belong to no column (a column's sequence moved with its table above).
    sequences = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'S' "
        "AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (app_user,),
    ).fetchall()
    for (relname,) in sequences:
        conn.execute(sql.SQL("ALTER SEQUENCE {} OWNER TO {}").format(sql.Identifier("public", relname), role))
        moved += 1
    types = conn.execute(
        "SELECT t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = 'public' AND t.typtype IN ('e','d') "
        "AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (app_user,),
    ).fetchall()
    for typname, typtype in types:
        kind = "DOMAIN" if typtype == "d" else "TYPE"
        conn.execute(
            sql.SQL(f"ALTER {kind} {{}} OWNER TO {{}}").format(sql.Identifier("public", typname), role)
        )
        moved += 1
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
        "AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (app_user,),
    ).fetchall()
    for signature, prokind in functions:
        kind = sql.SQL("PROCEDURE" if prokind == "p" else "AGGREGATE" if prokind == "a" else "FUNCTION")
        # regprocedure text is a signature PostgreSQL itself quoted and qualified.
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(kind, sql.SQL(signature), role))
        moved += 1
    return moved


def bootstrap(settings: BootstrapSettings) -> BootstrapReport:
    """Make the application role exactly what the module docstring says; idempotent."""
    report = BootstrapReport()
    if app_role_ready(settings):
        return report
    report.used_master = True
    with _connect(settings, settings.master_user, settings.master_password, MAINTENANCE_DB) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (BOOTSTRAP_LOCK_KEY,))
        try:
            # Another replica may have finished while this one waited for the lock.
            if app_role_ready(settings):
                return report
            _ensure_role(conn, settings, report)
            _may_act_as_app(conn, settings)
            _ensure_databases(conn, settings, report)
            _reown_objects(settings, report)
            _ensure_statement_statistics(settings, report)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseUnavailable(
                f"the master user {settings.master_user!r} may not bootstrap the application role: "
                f"{exc.diag.message_primary}; it needs CREATEROLE and CREATEDB (the RDS master has both)"
            ) from exc
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (BOOTSTRAP_LOCK_KEY,))
    return report
