"""The auth database announces its own changes: triggers NOTIFY, every worker LISTENs.

Every statement that inserts, updates, deletes or truncates rows of an auth table (users,
roles, role permissions, assignments, the legacy permission tables) sends one notification on
`CHANNEL` when its transaction commits. PostgreSQL delivers it to every listening session of
every replica, in milliseconds, and only after the change is visible to new reads — so a worker
that flushes its authorization cache on it can never re-read the old state afterwards.

The triggers are installed by the entrypoint right after the auth migrations, under the same
advisory lock, by the role that runs those migrations (it owns the auth tables). They are
(re)created on every start for every table then present, so a table a later MLflow migration
adds is covered by the next start. Each worker's listener lives in server/auth_cache.py.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

CHANNEL = "mlflow_stack_auth_changed"
NOTIFY_FUNCTION = "mlflow_stack_notify_auth_change"
TRIGGER = "mlflow_stack_auth_changed"
# Alembic's bookkeeping; no authorization input lives there.
_IGNORED_TABLES = frozenset({"alembic_version_auth"})


def libpq_uri(sqlalchemy_uri: str) -> str:
    """The auth DB's SQLAlchemy URI (`postgresql+psycopg://…`) as a libpq URI. It carries no
    password: libpq reads it from PGPASSFILE, as the server's engines do."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_uri).set(drivername="postgresql").render_as_string(hide_password=False)


def is_postgresql(sqlalchemy_uri: str) -> bool:
    return sqlalchemy_uri.startswith(("postgresql:", "postgresql+"))


def install_auth_change_triggers(sqlalchemy_uri: str) -> list[str]:
    """Create (or replace) the notify function and a statement-level trigger on every auth
    table; return the tables covered. Idempotent, one transaction."""
    with psycopg.connect(libpq_uri(sqlalchemy_uri), application_name="mlflow-stack-entrypoint") as conn:
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN PERFORM pg_notify({channel}, TG_TABLE_NAME); RETURN NULL; END $$"
            ).format(function=sql.Identifier(NOTIFY_FUNCTION), channel=sql.Literal(CHANNEL))
        )
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        ).fetchall()
        tables = [name for (name,) in rows if name not in _IGNORED_TABLES]
        for table in tables:
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                    "ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
                ).format(
                    trigger=sql.Identifier(TRIGGER),
                    table=sql.Identifier(table),
                    function=sql.Identifier(NOTIFY_FUNCTION),
                )
            )
    return tables
