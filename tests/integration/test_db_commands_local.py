"""`mlflow-stack db status | doctor | restore-drill | verify-restore` on the real local stack.

The states a user meets (a schema behind or ahead of the server, a long transaction, dead tuples,
a pool near its connection limit) are made for real in PostgreSQL — inside a transaction that is
rolled back, or on a table of the test's own that is dropped — so the shared stack is left as found.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from cli.main import main as cli_main
from lifecycle.client import Connection
from lifecycle.db_doctor import CONNECTION_WARN_RATIO, run_doctor
from lifecycle.db_status import _auth_scripts, _tracking_scripts, schema_status
from lifecycle.db_target import DatabaseTarget, resolve_local_database
from local.stack import APP_CONNECTION_LIMIT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(local_stack: Any) -> DatabaseTarget:
    return resolve_local_database(local_stack.state_dir)


@pytest.fixture(scope="module")
def conn(local_stack: Any) -> Iterator[Connection]:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as c:
        yield c


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli_main([*args, "--json"])
    out = capsys.readouterr().out
    body = json.loads(out)
    assert body["exit_code"] == code
    return code, body


def uid() -> str:
    return uuid.uuid4().hex[:8]


# --- db status ------------------------------------------------------------------------------------


def test_status_shows_both_databases_at_mlflows_head(
    local_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    code, body = run_cli(capsys, "db", "status", "--local", "--state-dir", local_stack.state_dir)
    assert code == 0 and body["up_to_date"] is True
    schemas = {s["kind"]: s for s in body["schemas"]}
    assert schemas["tracking"]["current"] == _get_latest_schema_revision()
    assert schemas["tracking"]["version_table"] == "alembic_version"
    assert schemas["auth"]["version_table"] == "alembic_version_auth"
    assert schemas["auth"]["current"] == _auth_scripts().get_current_head()
    assert all(s["pending"] == [] for s in body["schemas"])


def test_status_names_the_pending_migrations_of_a_database_behind(database: DatabaseTarget) -> None:
    scripts = _tracking_scripts()
    head = scripts.get_revision(scripts.get_current_head())
    older = scripts.get_revision(scripts.get_revision(head.down_revision).down_revision)
    with database.connect(database.tracking_db, autocommit=False) as db:
        # Uncommitted: only this session sees the older revision; the stack is untouched.
        db.execute("UPDATE alembic_version SET version_num = %s", (older.revision,))
        status = schema_status(db, database.tracking_db, "tracking", scripts)
        db.rollback()
    assert status.state == "behind" and status.current == older.revision
    assert [p["revision"] for p in status.pending] == [head.down_revision, head.revision]
    assert status.pending[-1]["message"] == (head.doc or "")


def test_status_refuses_a_revision_from_a_newer_mlflow(database: DatabaseTarget) -> None:
    with database.connect(database.auth_db, autocommit=False) as db:
        db.execute("UPDATE alembic_version_auth SET version_num = 'ffffffffffff'")
        status = schema_status(db, database.auth_db, "auth", _auth_scripts())
        db.rollback()
    assert status.state == "unknown revision"
    assert "newer MLflow" in status.note


def test_status_reads_an_auth_revision_kept_where_mlflow_before_3_6_kept_it(database: DatabaseTarget) -> None:
    scripts = _auth_scripts()
    head = scripts.get_current_head()
    with database.connect(database.auth_db, autocommit=False) as db:
        db.execute("ALTER TABLE alembic_version_auth RENAME TO alembic_version")
        status = schema_status(db, database.auth_db, "auth", scripts)
        db.rollback()
    assert status.version_table == "alembic_version" and status.current == head
    assert status.state == "at head" and "MLflow < 3.6" in status.note


# --- db doctor ------------------------------------------------------------------------------------


@pytest.fixture
def probe_table(database: DatabaseTarget) -> Iterator[str]:
    """A table of the test's own in the tracking database, autovacuum off, dropped afterwards."""
    name = f"doctor_probe_{uid()}"
    with database.connect() as db:
        db.execute(
            sql.SQL(
                "CREATE TABLE {} (id int PRIMARY KEY, payload text) WITH (autovacuum_enabled = false)"
            ).format(sql.Identifier(name))
        )
    try:
        yield name
    finally:
        with database.connect() as db:
            db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def test_doctor_reports_dead_tuples_and_the_slowest_statement_with_fixes(
    database: DatabaseTarget, probe_table: str
) -> None:
    table = sql.Identifier(probe_table)
    with database.connect() as db:
        db.execute(
            sql.SQL("INSERT INTO {} SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g").format(table)
        )
        db.execute(sql.SQL("DELETE FROM {} WHERE id > 1000").format(table))
        db.execute(sql.SQL("ANALYZE {}").format(table))
        # A statement slower than anything the idle stack runs: a 1000 x 1000 cross join.
        db.execute(
            sql.SQL("SELECT count(*) FROM {} a CROSS JOIN {} b WHERE a.id < b.id").format(table, table)
        )
        db.execute("SELECT pg_stat_force_next_flush()")  # table statistics are flushed lazily
    report = run_doctor(database, top=50)
    dead = [f for f in report.findings if f.check == "dead tuples" and probe_table in f.problem]
    assert len(dead) == 1, report.findings
    assert "4000 dead tuples" in dead[0].problem and f"VACUUM (ANALYZE) {probe_table}" in dead[0].fix
    assert "VACUUM FULL" not in dead[0].fix
    slowest = report.databases[database.tracking_db]["slowest_statements"]
    # Sorted by mean time; other tests' statements may be slower, so only "among the slowest".
    assert any("CROSS JOIN" in s["query"] and s["mean_ms"] > 0 for s in slowest), slowest
    tables = {t["table"]: t for t in report.databases[database.tracking_db]["tables"]}
    assert tables[probe_table]["dead_tuples"] == 4000 and tables[probe_table]["table_bytes"] > 0

    with database.connect() as db:
        db.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))  # the fix the finding gave
        db.execute("SELECT pg_stat_force_next_flush()")
    again = run_doctor(database)
    assert not [f for f in again.findings if probe_table in f.problem]


def test_doctor_names_a_long_transaction_and_how_to_end_it(
    database: DatabaseTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    with database.connect(autocommit=False) as holder:
        pid = holder.info.backend_pid
        holder.execute("SELECT txid_current()")  # a transaction with an xid, then idle in it
        time.sleep(1.5)
        code, body = run_cli(
            capsys,
            "db",
            "doctor",
            "--local",
            "--state-dir",
            database.local_state_dir or "",
            "--long-transaction-seconds",
            "1",
        )
        holder.rollback()
    assert code == 1 and body["healthy"] is False
    longest = [
        f for f in body["findings"] if f["check"] == "long transaction" and f"pid {pid} " in f["problem"]
    ]
    assert len(longest) == 1, body["findings"]
    assert "is idle" in longest[0]["problem"] and f"pg_terminate_backend({pid})" in longest[0]["fix"]
    assert any(t["pid"] == pid for t in body["long_transactions"])


def test_doctor_warns_when_the_role_nears_its_connection_limit(database: DatabaseTarget) -> None:
    baseline = run_doctor(database).connections
    assert baseline["role_limit"] == APP_CONNECTION_LIMIT
    needed = int(CONNECTION_WARN_RATIO * APP_CONNECTION_LIMIT) - baseline["used"] + 1
    with contextlib.ExitStack() as stack:
        for _ in range(needed):
            stack.enter_context(database.connect())
        report = run_doctor(database)
    assert report.connections["used"] >= CONNECTION_WARN_RATIO * APP_CONNECTION_LIMIT
    warning = [f for f in report.findings if f.check == "connections"]
    assert len(warning) == 1 and f"of its {APP_CONNECTION_LIMIT} connections" in warning[0].problem
    assert "dbPoolSize" in warning[0].fix


def test_doctor_never_reads_or_prints_the_password(
    database: DatabaseTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    _, body = run_cli(capsys, "db", "doctor", "--local", "--state-dir", database.local_state_dir or "")
    assert database.password not in json.dumps(body)
    assert body["target"]["user"] == "mlflow_app"


# --- verify-restore and the restore drill ----------------------------------------------------------


def _model_with_alias(conn: Connection, name: str, *, healthy: bool) -> str:
    """A registered model whose version 1 (alias champion) does or does not hold an MLmodel."""
    import mlflow
    from mlflow import MlflowClient

    with conn.mlflow_client_env():
        mlflow.set_experiment(f"db-verify-{name}")
        with mlflow.start_run() as run:
            mlflow.log_text("artifact_path: model\nflavors: {}\n", "model/MLmodel")
        client = MlflowClient()
        client.create_registered_model(name)
        source = f"runs:/{run.info.run_id}/{'model' if healthy else 'nothing-here'}"
        version = client.create_model_version(name, source=source, run_id=run.info.run_id)
        client.set_registered_model_alias(name, "champion", version.version)
        return run.info.run_id


def test_verify_restore_fails_on_an_alias_whose_version_does_not_load(
    local_stack: Any, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"db-verify-{uid()}"
    _model_with_alias(conn, f"{prefix}-good", healthy=True)
    _model_with_alias(conn, f"{prefix}-bad", healthy=False)
    args = ("db", "verify-restore", "--local", "--state-dir", local_stack.state_dir)

    code, body = run_cli(capsys, *args, "--models", f"{prefix}-good")
    assert code == 0 and body["passed"] is True and [m["model"] for m in body["models"]] == [f"{prefix}-good"]

    code, body = run_cli(capsys, *args, "--models", f"{prefix}-*")
    assert code == 1
    assert [a.split(" ")[0] for a in body["broken_aliases"]] == [f"{prefix}-bad@champion"]
    assert "nothing-here" in body["broken_aliases"][0]


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_restore_drill_restores_every_row_serves_it_and_leaves_nothing_behind(
    local_stack: Any, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"db-drill-{uid()}"
    run_id = _model_with_alias(conn, name, healthy=True)
    # Writes keep arriving during the drill: the counts must still match the dump's own snapshot.
    stop = threading.Event()

    written: list[int] = []
    errors: list[Exception] = []

    def keep_writing() -> None:
        while not stop.is_set():
            step = len(written)
            try:
                conn.call(
                    "POST",
                    "runs/log-metric",
                    json={"run_id": run_id, "key": "live", "value": step, "timestamp": 1, "step": step},
                )
            except Exception as error:  # surfaced by the assertion below
                errors.append(error)
                return
            written.append(step)

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    deadline = time.monotonic() + 30
    while not written and not errors and time.monotonic() < deadline:
        time.sleep(0.05)  # the dump must contain some of the writes, and miss the later ones
    try:
        code, body = run_cli(capsys, "db", "restore-drill", "--local", "--state-dir", local_stack.state_dir)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not errors and written, errors
    assert code == 0 and body["passed"] is True, json.dumps(body, indent=1)[:4000]
    steps = {s["name"]: s for s in body["steps"]}
    assert list(steps) == [
        "dump",
        "new instance",
        "restore",
        "compare counts",
        "start replica",
        "verify-restore",
        "smoke",
        "tear down",
    ]
    assert all(s["ok"] and s["seconds"] > 0 for s in body["steps"])
    tracking = body["counts"]["mlflow"]
    nonzero = {t: c for t, c in tracking.items() if c["restored"]}
    assert tracking["registered_models"]["restored"] >= 1 and tracking["metrics"]["restored"] >= 1, (
        nonzero,
        len(written),
    )
    assert all(c["source"] == c["restored"] for db in body["counts"].values() for c in db.values())
    assert body["counts"]["mlflow_auth"]["users"]["restored"] >= 1
    # The replica served the restored registry: the model made before the dump is there, healthy.
    verified = {m["model"]: m for m in body["verify"]["models"]}
    assert verified[name]["broken"] == [] and verified[name]["versions"][0]["aliases"] == ["champion"]
    assert {s["status"] for s in body["smoke"]} == {"PASS"}
    # Torn down: the replica's port is closed and the drill's cluster is gone.
    replica_url = steps["start replica"]["detail"].split(" ")[0]
    assert not _port_open(replica_url)
    assert not (Path(local_stack.state_dir) / "restore-drill").exists()
    # The smoke on the replica shared the bucket, yet the live stack's model still loads.
    import mlflow

    with conn.mlflow_client_env():
        assert mlflow.artifacts.load_text(f"runs:/{run_id}/model/MLmodel").startswith("artifact_path")
    # The dump is kept and is what `db status` reports as the last backup.
    code, status = run_cli(capsys, "db", "status", "--local", "--state-dir", local_stack.state_dir)
    assert status["last_backup"]["path"] == body["dump_path"]
    assert status["last_backup"]["size_bytes"] == sum(body["dump_bytes"].values())
    assert status["last_backup"]["drill_passed"] is True
