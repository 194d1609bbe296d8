"""Replicas started together against an empty database: all come up, migrations run exactly once.

Real PostgreSQL (password auth), real entrypoints (`python -m server.entrypoint serve --app-name
basic-auth`), three at the same moment, repeated on a fresh pair of databases each round.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from local.postgres import SUPERUSER
from local.processes import ProcessRecord, spawn, stop, wait_until
from local.secret_files import URL_SPECIAL, generate_password, write_secret
from server import contract
from tests.postgres_helper import APP_CONNECTION_LIMIT, APP_ROLE, REPO, Cluster, running_cluster

pytestmark = pytest.mark.integration

REPLICAS = 3
ROUNDS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("mlflow-stack-migrations-") as c:
        yield c


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
        return response.status == 200


def _heads() -> tuple[str, str]:
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db.utils import _get_alembic_config
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision(), ScriptDirectory.from_config(
        _get_alembic_config("")
    ).get_current_head()


@pytest.mark.parametrize("round_number", range(1, ROUNDS + 1))
def test_simultaneous_replicas_migrate_exactly_once(
    cluster: Cluster, round_number: int, pick_free_ports
) -> None:  # type: ignore[no-untyped-def]
    assert all(ch in cluster.db_password for ch in URL_SPECIAL)
    db_name = f"mlflow_round{round_number}"
    # A brand-new pair of empty databases, owned by the application role (no CREATEDB).
    cluster.bootstrap(db_name)
    ports = pick_free_ports(REPLICAS).replica_ports(REPLICAS)
    logs = [cluster.state_dir / f"round{round_number}-replica{i}.log" for i in range(REPLICAS)]
    records: list[ProcessRecord] = []
    try:
        for port, log in zip(ports, logs, strict=True):
            records.append(
                spawn(
                    log.stem,
                    [sys.executable, *contract.ENTRYPOINT[1:], *contract.COMMAND],
                    log,
                    cluster.replica_env(db_name, port),
                    cwd=REPO,
                )
            )
        for record, port in zip(records, ports, strict=True):
            wait_until(lambda port=port: _healthy(port), what=record.name, timeout=240, record=record)
    finally:
        for record in records:
            stop(record)

    texts = [log.read_text(errors="replace") for log in logs]
    joined = "\n".join(texts)
    for label in ("tracking", "auth"):
        assert joined.count(f"{label} database: MIGRATED") == 1, joined[-3000:]
        assert joined.count(f"{label} database: already at") == REPLICAS - 1
    assert cluster.db_password not in joined

    tracking_head, auth_head = _heads()
    connect = dict(host="127.0.0.1", port=cluster.port, user=APP_ROLE, password=cluster.db_password)
    with psycopg.connect(dbname=db_name, **connect) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(tracking_head,)]
    with psycopg.connect(dbname=f"{db_name}_auth", **connect) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version_auth").fetchall() == [(auth_head,)]
        assert conn.execute("SELECT count(*) FROM users WHERE username = 'admin'").fetchone() == (1,)


def _run_entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *contract.ENTRYPOINT[1:], *contract.COMMAND],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_database_problems_fail_with_a_clear_message(cluster: Cluster, pick_free_ports) -> None:  # type: ignore[no-untyped-def]
    port = pick_free_ports(1).replica_base
    cluster.bootstrap("mlflow_errors")

    wrong_password = cluster.replica_env("mlflow_errors", port)
    wrong_file = cluster.state_dir / "secrets" / "wrong_db_password"
    write_secret(wrong_file, "not-the-password")
    wrong_password[contract.DB_PASSWORD.name + contract.FILE_SUFFIX] = str(wrong_file)
    refused = _run_entrypoint(wrong_password)
    assert refused.returncode == 3
    assert "password authentication failed" in refused.stderr and "mlflow_errors" in refused.stderr

    # A user without CREATEDB, and no auth database yet: says what to grant or create.
    limited_password = generate_password()
    with cluster.postgres.connect(cluster.superuser_password) as conn:
        conn.execute(sql.SQL("CREATE ROLE limited LOGIN PASSWORD {}").format(sql.Literal(limited_password)))
        conn.execute("CREATE DATABASE mlflow_limited")
        conn.execute("GRANT ALL ON DATABASE mlflow_limited TO limited")
    with cluster.postgres.connect(cluster.superuser_password, dbname="mlflow_limited") as conn:
        conn.execute("GRANT ALL ON SCHEMA public TO limited")
    limited = cluster.replica_env("mlflow_limited", port)
    limited[contract.DB_USER.name] = "limited"
    limited_file = cluster.state_dir / "secrets" / "limited_password"
    write_secret(limited_file, limited_password)
    limited[contract.DB_PASSWORD.name + contract.FILE_SUFFIX] = str(limited_file)
    denied = _run_entrypoint(limited)
    assert denied.returncode == 3
    assert "'mlflow_limited_auth' does not exist" in denied.stderr and "CREATEDB" in denied.stderr
    assert limited_password not in denied.stderr + denied.stdout


def test_migrate_prepares_the_databases_once_and_never_serves(cluster: Cluster, pick_free_ports) -> None:  # type: ignore[no-untyped-def]
    """`python -m server.entrypoint migrate`, the Kubernetes backend's migration Job: the same
    settings and advisory lock as a replica's start, then exit 0 without starting MLflow."""
    db_name = "mlflow_migrate_job"
    cluster.bootstrap(db_name)
    env = cluster.replica_env(db_name, pick_free_ports(1).replica_base)

    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *contract.ENTRYPOINT[1:], *contract.MIGRATE_COMMAND],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    first = migrate()
    assert first.returncode == 0, first.stderr[-3000:]
    for label in ("tracking", "auth"):
        assert f"{label} database: MIGRATED" in first.stderr, first.stderr[-3000:]
    assert "starting: mlflow" not in first.stderr  # the server never started
    again = migrate()
    assert again.returncode == 0, again.stderr[-3000:]
    for label in ("tracking", "auth"):
        assert f"{label} database: already at" in again.stderr
    assert cluster.db_password not in first.stderr + again.stderr

    tracking_head, auth_head = _heads()
    connect = dict(host="127.0.0.1", port=cluster.port, user=APP_ROLE, password=cluster.db_password)
    with psycopg.connect(dbname=db_name, **connect) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(tracking_head,)]
    with psycopg.connect(dbname=f"{db_name}_auth", **connect) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version_auth").fetchall() == [(auth_head,)]


# --- the application role (server/db_roles.py) -------------------------------------------------


def _superuser(cluster: Cluster, dbname: str = "postgres") -> psycopg.Connection:
    return cluster.postgres.connect(cluster.superuser_password, dbname=dbname)


def _as_app(cluster: Cluster, dbname: str, password: str | None = None) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user=APP_ROLE,
        password=password or cluster.db_password,
        dbname=dbname,
        autocommit=True,
    )


def test_bootstrap_gives_the_application_role_its_databases_and_nothing_more(cluster: Cluster) -> None:
    first = cluster.bootstrap("mlflow_roles")
    assert first.used_master
    with _superuser(cluster) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconnlimit, "
            "rolpassword FROM pg_authid WHERE rolname = %s",
            (APP_ROLE,),
        ).fetchone()
        assert role is not None and role[:6] == (False, False, False, False, False, APP_CONNECTION_LIMIT)
        # Stored as a SCRAM verifier computed by the bootstrap: the password never reached the server.
        assert role[6].startswith("SCRAM-SHA-256$4096:") and cluster.db_password not in role[6]
        member_of = conn.execute(
            "SELECT count(*) FROM pg_auth_members "
            "WHERE member = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (APP_ROLE,),
        ).fetchone()
        assert member_of == (0,)
        owners = dict(
            conn.execute(
                "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                "WHERE d.datname LIKE 'mlflow_roles%%'"
            ).fetchall()
        )
        assert owners == {"mlflow_roles": APP_ROLE, "mlflow_roles_auth": APP_ROLE}
        outsider = generate_password()
        conn.execute(sql.SQL("CREATE ROLE outsider LOGIN PASSWORD {}").format(sql.Literal(outsider)))
    # Another login role of the instance cannot even connect to the kit's databases.
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(
            host="127.0.0.1", port=cluster.port, user="outsider", password=outsider, dbname="mlflow_roles"
        )
    with _as_app(cluster, "mlflow_roles") as app:
        for statement in ("CREATE DATABASE sneaky", "CREATE ROLE sneaky"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)

    # Idempotent, and cheap: the second run finds everything in place and never logs in as master.
    second = cluster.bootstrap("mlflow_roles", master_password=generate_password())
    assert (second.used_master, second.changes) == (False, [])


def test_bootstrap_creates_statement_statistics_for_db_doctor_without_widening_the_role(
    cluster: Cluster,
) -> None:
    """pg_stat_statements (preloaded here, as by the stack's parameter group) in both databases, in
    the schema `db doctor` reads; the application role sees its own statements and gains nothing
    else; a database that lost the extension gets it back at the next bootstrap."""
    from lifecycle.db_doctor import STATISTICS_SCHEMA

    report = cluster.bootstrap("mlflow_stats")
    created = [c for c in report.changes if "pg_stat_statements" in c]
    assert len(created) == 2, report.changes
    for name in ("mlflow_stats", "mlflow_stats_auth"):
        with _superuser(cluster, name) as conn:
            where = conn.execute(
                "SELECT n.nspname, pg_get_userbyid(n.nspowner), "
                "has_schema_privilege(%s, n.nspname, 'CREATE') FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
                (SUPERUSER,),
            ).fetchone()
            # The app's own schema (not public); the master's CREATE on it was only for the statement.
            granted = conn.execute(
                "SELECT nspacl::text FROM pg_namespace WHERE nspname = %s", (STATISTICS_SCHEMA,)
            ).fetchone()
        assert where is not None and where[:2] == (STATISTICS_SCHEMA, APP_ROLE), where
        assert granted is not None and f"{SUPERUSER}=" not in str(granted[0]), granted
        with _as_app(cluster, name) as app:
            app.execute("CREATE TABLE IF NOT EXISTS probe (id int)")
            app.execute("SELECT count(*) FROM probe")
            mine = app.execute(
                sql.SQL(
                    "SELECT count(*) FROM {} WHERE query ILIKE %s AND userid = "
                    "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
                ).format(sql.Identifier(STATISTICS_SCHEMA, "pg_stat_statements")),
                ("%from probe%",),
            ).fetchone()
            assert mine is not None and mine[0] >= 1
            member_of = app.execute(
                "SELECT count(*) FROM pg_auth_members WHERE member = "
                "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
            ).fetchone()
            assert member_of == (0,)  # no pg_read_all_stats: its own statements are enough
    # In place: nothing to do, the master's password is not even needed.
    again = cluster.bootstrap("mlflow_stats", master_password=generate_password())
    assert (again.used_master, again.changes) == (False, [])
    # A database whose extension was dropped (or never made): noticed as the app role, re-created.
    with _superuser(cluster, "mlflow_stats_auth") as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
    repaired = cluster.bootstrap("mlflow_stats")
    assert repaired.used_master
    assert (
        repaired.changes[-1]
        == f"database mlflow_stats_auth: created pg_stat_statements in {STATISTICS_SCHEMA}"
    )


def test_bootstrap_takes_over_databases_the_master_user_owned(cluster: Cluster) -> None:
    """A deployment that ran the server as the master user: after the bootstrap every object of
    both databases belongs to the application role, which can then migrate them."""
    with _superuser(cluster) as conn:
        for name in ("mlflow_legacy", "mlflow_legacy_auth"):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with _superuser(cluster, "mlflow_legacy") as conn:
        conn.execute("CREATE TYPE stage AS ENUM ('active', 'deleted')")
        conn.execute("CREATE TABLE runs (id serial PRIMARY KEY, stage stage)")
        conn.execute("CREATE SEQUENCE loose_counter")
        conn.execute("CREATE VIEW active_runs AS SELECT id FROM runs")
        conn.execute("CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    with _superuser(cluster, "mlflow_legacy_auth") as conn:
        conn.execute("CREATE TABLE users (id serial PRIMARY KEY, username text)")

    report = cluster.bootstrap("mlflow_legacy")
    assert any("re-owned" in change for change in report.changes), report.changes
    for name in ("mlflow_legacy", "mlflow_legacy_auth"):
        with _superuser(cluster, name) as conn:
            foreign = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> %s "
                "UNION ALL SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND t.typtype = 'e' AND pg_get_userbyid(t.typowner) <> %s "
                "UNION ALL SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %s",
                (APP_ROLE, APP_ROLE, APP_ROLE),
            ).fetchall()
            assert foreign == [], (name, foreign)
    with _as_app(cluster, "mlflow_legacy") as app:
        app.execute("ALTER TABLE runs ADD COLUMN note text")  # what an alembic migration does
        app.execute("INSERT INTO runs (stage) VALUES ('active')")


def test_rotating_the_application_password_takes_effect_at_the_next_bootstrap(cluster: Cluster) -> None:
    cluster.bootstrap("mlflow_rotate")
    rotated = generate_password()
    report = cluster.bootstrap("mlflow_rotate", app_password=rotated)
    assert report.used_master  # the old password no longer matches the secret: the master resets it
    with _as_app(cluster, "mlflow_rotate", password=rotated) as app:
        assert app.execute("SELECT current_user").fetchone() == (APP_ROLE,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _as_app(cluster, "mlflow_rotate")
    cluster.bootstrap("mlflow_rotate")  # back to the cluster's password for the other tests


def test_bootstrap_command_refuses_bad_settings_in_one_message(cluster: Cluster) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        contract.DB_HOST.name: "127.0.0.1",
        contract.DB_PORT.name: str(cluster.port),
        contract.DB_USER.name: SUPERUSER,
        contract.DB_MASTER_USER.name: SUPERUSER,
        contract.DB_APP_CONNECTION_LIMIT.name: "many",
        contract.DB_PASSWORD.name + contract.FILE_SUFFIX: str(cluster.files[contract.DB_PASSWORD.name]),
    }
    done = subprocess.run(
        [sys.executable, *contract.ENTRYPOINT[1:], *contract.BOOTSTRAP_COMMAND],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    for name in (contract.DB_USER, contract.DB_APP_CONNECTION_LIMIT, contract.DB_MASTER_PASSWORD):
        assert name.name in done.stderr
    assert "is the master user" in done.stderr and cluster.db_password not in done.stderr
