"""The shared local stack, as a user sees it: TLS, login, redirect, secrets handling."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests

from local.secret_files import URL_SPECIAL
from local.stack import AUTH_DB_NAME, DB_NAME, DB_USER, LocalStackInfo

pytestmark = pytest.mark.integration


def _secret(info: LocalStackInfo, name: str) -> str:
    return (Path(info.state_dir) / "secrets" / name).read_text(encoding="utf-8")


def _ports(info: LocalStackInfo) -> dict:
    import json

    return json.loads((Path(info.state_dir) / "state.json").read_text())["ports"]


def test_admin_password_with_url_special_characters_logs_in_through_caddy(
    local_stack: LocalStackInfo,
) -> None:
    password = local_stack.password
    assert all(ch in password for ch in URL_SPECIAL), "generated password must exercise URL quoting"
    ok = requests.get(
        f"{local_stack.url}/version",
        auth=(local_stack.username, password),
        verify=local_stack.ca_file,
        timeout=10,
    )
    assert ok.status_code == 200 and ok.text.startswith("3.17")
    denied = requests.get(
        f"{local_stack.url}/version",
        auth=(local_stack.username, "not-the-password"),
        timeout=10,
        verify=local_stack.ca_file,
    )
    assert denied.status_code == 401


def test_tls_is_verified_against_the_stack_ca_only(local_stack: LocalStackInfo) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{local_stack.url}/health", timeout=10)  # system trust store: not trusted
    assert (
        requests.get(f"{local_stack.url}/health", verify=local_stack.ca_file, timeout=10).status_code == 200
    )


def test_http_redirects_to_https_keeping_the_port(local_stack: LocalStackInfo) -> None:
    response = requests.get(f"{local_stack.http_url}/version?x=1", allow_redirects=False, timeout=10)
    assert response.status_code in (301, 308)
    assert response.headers["Location"] == f"{local_stack.url}/version?x=1"


def test_db_password_with_url_special_characters_is_what_the_database_enforces(
    local_stack: LocalStackInfo,
) -> None:
    db_password = _secret(local_stack, "db_password")
    assert all(ch in db_password for ch in URL_SPECIAL)
    port = _ports(local_stack)["postgres"]
    # The replicas are up and serving from this database, so their (quoted) URI worked; this shows
    # the server really checks the password (password auth, not trust).
    with psycopg.connect(
        host="127.0.0.1", port=port, user=DB_USER, password=db_password, dbname=DB_NAME
    ) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"experiments", "runs", "registered_models", "alembic_version"} <= tables
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, password="wrong", dbname=DB_NAME)  # noqa: S106


def test_every_server_connection_is_the_application_role(local_stack: LocalStackInfo) -> None:
    """The replicas connect as the least-privilege role the bootstrap created, never as the
    superuser, and that role owns both databases and every table the migrations made."""
    port = _ports(local_stack)["postgres"]
    superuser = _secret(local_stack, "postgres_superuser_password")
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=superuser, dbname="postgres"
    ) as conn:
        sessions = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity "
            "WHERE datname IN (%s, %s) AND pid <> pg_backend_pid()",
            (DB_NAME, AUTH_DB_NAME),
        ).fetchall()
        assert sessions == [(DB_USER,)]
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (DB_USER,)
        ).fetchone()
        assert role == (False, False, False)
    for database in (DB_NAME, AUTH_DB_NAME):
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", password=superuser, dbname=database
        ) as conn:
            owners = conn.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
            assert owners == [(DB_USER,)], (database, owners)


def test_secret_files_are_private(local_stack: LocalStackInfo) -> None:
    state_dir = Path(local_stack.state_dir)
    # 0700, or 0710 (group: the PostgreSQL account, traverse only) when running as root.
    assert stat.S_IMODE(state_dir.stat().st_mode) & 0o077 in (0, 0o010)
    secrets_dir = state_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for path in secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _unless_gone(read: Callable[[], Any], gone: Any) -> Any:
    """What `read` returns, or `gone` for a process that exited since it was listed: PostgreSQL's
    backends come and go with every connection, and a process that is gone holds no secret."""
    try:
        return read()
    except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
        return gone


def test_no_secret_in_any_command_line_or_log_and_none_in_the_replica_environment(
    local_stack: LocalStackInfo,
) -> None:
    secrets = {
        name: _secret(local_stack, name) for name in ("admin_password", "db_password", "flask_secret_key")
    }
    top_level = [psutil.Process(p.pid) for p in local_stack.processes]
    everything = top_level + [c for p in top_level for c in p.children(recursive=True)]
    for proc in everything:
        cmdline = " ".join(_unless_gone(proc.cmdline, []))
        for name, value in secrets.items():
            assert value not in cmdline, f"{name} on the command line of {proc.pid}"
    # The processes the stack launched get secrets only as *_FILE paths.
    for proc in top_level:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
        for name, value in secrets.items():
            assert value not in environ, f"{name} in the environment of {proc.pid}"
        if "entrypoint" in " ".join(proc.cmdline()):
            assert "MLFLOW_STACK_ADMIN_PASSWORD_FILE=" in environ
    # The admin password reaches MLflow only through the 0600 auth config file: no descendant has it.
    for proc in everything:
        environ = _unless_gone(Path(f"/proc/{proc.pid}/environ").read_bytes, b"").decode(errors="replace")
        assert secrets["admin_password"] not in environ, f"admin password in the environment of {proc.pid}"
    for log in (Path(local_stack.state_dir) / "logs").iterdir():
        text = log.read_text(errors="replace")
        for name, value in secrets.items():
            assert value not in text, f"{name} appears in {log}"


def test_status_json_has_the_documented_keys(local_stack: LocalStackInfo) -> None:
    import json
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "cli", "local", "status", "--json", "--state-dir", local_stack.state_dir],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    status = json.loads(completed.stdout)
    for key in ("url", "http_url", "username", "password_file", "ca_file", "state_dir", "s3_endpoint_url"):
        assert status[key] == getattr(local_stack, key)
    assert status["lock_table"] == "mlflow-stack-locks"
    assert status["running"] is True
    assert {p["name"] for p in status["processes"]} == {
        "postgres",
        "s3-emulator",
        "replica-1",
        "replica-2",
        "caddy",
    }


def test_lock_table_exists_on_the_emulator(local_stack: LocalStackInfo) -> None:
    import boto3

    from local.s3_emulator import DUMMY_CREDENTIALS, REGION

    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=local_stack.s3_endpoint_url,
        region_name=REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    table = dynamodb.describe_table(TableName=local_stack.lock_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "lock_id", "KeyType": "HASH"}]
    ttl = dynamodb.describe_time_to_live(TableName=local_stack.lock_table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
