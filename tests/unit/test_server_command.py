"""What a replica hands to MLflow: store URIs, the basic-auth config, the `mlflow server` options."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from server import contract
from server.auth_config import write_auth_config
from server.command import (
    allowed_hosts,
    cors_origins,
    server_arguments,
    server_environment,
    uvicorn_options,
)
from server.database import sqlalchemy_uri, write_passfile
from server.settings import load_settings

SPECIAL = "p@ss:/%#?word w/ space"
ADMIN_PASSWORD = "adm%in@pass:/#?-42"  # noqa: S105 - test value


def good_env(tmp_path: Path) -> dict[str, str]:
    flask_key = tmp_path / "flask_key"
    flask_key.write_text("k" * 32, encoding="utf-8")
    return {
        "MLFLOW_STACK_DB_HOST": "db.internal",
        "MLFLOW_STACK_ARTIFACTS_DESTINATION": "s3://team-bucket/mlflow-artifacts",
        "MLFLOW_STACK_PUBLIC_HOSTS": "mlflow.example.com",
        "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE": str(flask_key),
    }


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = good_env(tmp_path)
    env["MLFLOW_STACK_DB_PASSWORD"] = SPECIAL
    env["MLFLOW_STACK_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    env["MLFLOW_STACK_DB_USER"] = "ml@flow"
    env["MLFLOW_STACK_KEEPALIVE_SECONDS"] = "90"
    env["MLFLOW_STACK_AUTH_CACHE_TTL_SECONDS"] = "30"
    return load_settings(env)


def test_store_uri_carries_no_password_and_the_passfile_escapes_it(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = make_url(sqlalchemy_uri(settings, "mlflow"))
    assert url.drivername == "postgresql+psycopg"
    assert url.password is None and url.username == "ml@flow"
    # libpq's password file: host:port:database:user:password, ':' and '\\' escaped with '\\'.
    passfile = write_passfile(settings, tmp_path)
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600  # libpq ignores a group/world-readable one
    line = passfile.read_text(encoding="utf-8").rstrip("\n")
    fields = [f.replace("\\:", ":").replace("\\\\", "\\") for f in re.split(r"(?<!\\):", line)]
    assert fields == ["db.internal", "5432", "*", "ml@flow", SPECIAL]
    assert (url.host, url.port, url.database) == ("db.internal", 5432, "mlflow")
    assert url.query["sslmode"] == "require"


def test_auth_config_is_private_and_mlflow_reads_back_the_exact_values(
    settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    path = write_auth_config(settings, directory=str(tmp_path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.admin_password == ADMIN_PASSWORD
    assert config.admin_username == "admin"
    assert config.default_permission == "NO_PERMISSIONS"
    assert config.auth_cache_ttl_seconds == 30
    assert make_url(config.database_uri).password is None  # from PGPASSFILE, not the config
    assert make_url(config.database_uri).database == "mlflow_auth"


def test_allowed_hosts_accept_the_domain_and_loopback_and_reject_others(settings) -> None:  # type: ignore[no-untyped-def]
    from mlflow.server.security_utils import is_allowed_host_header

    hosts = allowed_hosts(settings, own=["10.0.3.7"])
    for header in (
        "mlflow.example.com",
        "mlflow.example.com:443",
        "localhost:18443",
        "127.0.0.1:8080",
        "10.0.3.7:8080",
    ):
        assert is_allowed_host_header(hosts, header), header
    for header in ("evil.example.net", "mlflow.example.com.evil.net", "10.0.3.8:8080"):
        assert not is_allowed_host_header(hosts, header), header


def test_cors_allows_the_public_https_origin_only(settings) -> None:  # type: ignore[no-untyped-def]
    from mlflow.server.security_utils import should_block_cors_request

    origins = cors_origins(settings)
    assert not should_block_cors_request("https://mlflow.example.com", "POST", origins)
    assert should_block_cors_request("https://evil.example.net", "POST", origins)
    assert should_block_cors_request("http://mlflow.example.com", "POST", origins)


def test_keepalive_goes_to_uvicorn(settings) -> None:  # type: ignore[no-untyped-def]
    assert "--timeout-keep-alive 90" in uvicorn_options(settings)


def test_mlflow_server_accepts_the_arguments(settings) -> None:  # type: ignore[no-untyped-def]
    """Parsed by MLflow's own click command (no server started): every option name exists."""
    from mlflow.cli import cli

    args = server_arguments(settings, "basic-auth")
    command = cli.commands["server"]
    ctx = command.make_context("server", args[1:])
    assert ctx.params["app_name"] == "basic-auth"
    assert ctx.params["serve_artifacts"] is True
    assert ctx.params["artifacts_destination"] == "s3://team-bucket/mlflow-artifacts"
    assert str(ctx.params["workers"]) == "2"
    assert ctx.params["gunicorn_opts"] is None  # uvicorn, so the security middleware applies


def test_environment_names_are_mlflow_settings(settings) -> None:  # type: ignore[no-untyped-def]
    import mlflow.environment_variables as ev

    env = server_environment(settings, "/tmp/auth.ini")
    known = {v.name for v in vars(ev).values() if hasattr(v, "name") and hasattr(v, "get")}
    # The kit's own knob for its workers (server/app.py reads it); everything else is MLflow's.
    kit_own = {contract.HOT_PATHS.name, contract.ARTIFACT_CLIENT_ACCESS.name}
    assert set(env) - kit_own <= known, set(env) - kit_own - known
    assert env[contract.HOT_PATHS.name] == "true"
    assert env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "5"
    # The server decides presigned vs proxied (server-info + artifact_access); the client-side
    # override variable would only mislead anyone reading the task definition.
    assert "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD" not in env
    assert env[contract.ARTIFACT_CLIENT_ACCESS.name] == "proxied"


def test_command_and_environment_hold_no_secret(settings) -> None:  # type: ignore[no-untyped-def]
    """The arguments reach MLflow's launcher, which copies the store URIs into the uvicorn process's
    environment; the environment is inherited by every worker. Neither may hold a secret."""
    from urllib.parse import quote

    shown = " ".join(server_arguments(settings, "basic-auth")) + " ".join(
        server_environment(settings, "/tmp/auth.ini").values()
    )
    for secret in (settings.db_password, settings.admin_password, settings.flask_secret_key):
        assert secret not in shown and quote(secret, safe="") not in shown
    assert "postgresql+psycopg://" in shown  # the URIs are there, without a password
