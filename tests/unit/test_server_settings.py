"""Entrypoint settings: every bad setting in one clear error, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server import contract
from server.settings import PERMISSIONS, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]
SENTINEL_SHORT_PASSWORD = "SENTINEL-7x"  # noqa: S105 - 11 characters: too short; must never be echoed


def good_env(tmp_path: Path) -> dict[str, str]:
    flask_key = tmp_path / "flask_key"
    flask_key.write_text("k" * 32 + "\n", encoding="utf-8")
    return {
        contract.DB_HOST.name: "db.internal",
        contract.ARTIFACTS_DESTINATION.name: "s3://team-bucket/mlflow-artifacts",
        contract.PUBLIC_HOSTS.name: "mlflow.example.com",
        contract.DB_PASSWORD.name: "p@ss:/%#?word",
        contract.ADMIN_PASSWORD.name: "admin-password-123",
        contract.FLASK_SECRET_KEY.name + contract.FILE_SUFFIX: str(flask_key),
    }


def test_valid_settings_get_the_contract_defaults(tmp_path: Path) -> None:
    settings = load_settings(good_env(tmp_path))
    assert (
        settings.db_port == 5432 and settings.db_name == "mlflow" and settings.auth_db_name == "mlflow_auth"
    )
    assert settings.db_sslmode == "require"
    assert settings.default_permission == "NO_PERMISSIONS"
    assert settings.port == contract.CONTAINER_PORT
    assert settings.public_hosts == ("mlflow.example.com",)
    # From the *_FILE, without the trailing newline the file had.
    assert settings.flask_secret_key == "k" * 32
    assert settings.db_password == "p@ss:/%#?word"  # noqa: S105


def test_repr_hides_secrets(tmp_path: Path) -> None:
    settings = load_settings(good_env(tmp_path))
    assert "p@ss" not in repr(settings) and "admin-password" not in repr(settings)


def test_secret_given_twice_is_refused(tmp_path: Path) -> None:
    env = good_env(tmp_path)
    env[contract.FLASK_SECRET_KEY.name] = "x" * 32
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert [p.name for p in err.value.problems] == [contract.FLASK_SECRET_KEY.name]
    assert "Set only one" in str(err.value)


def test_unreadable_secret_file_names_the_variable_and_path(tmp_path: Path) -> None:
    env = good_env(tmp_path)
    del env[contract.DB_PASSWORD.name]
    env[contract.DB_PASSWORD.name + contract.FILE_SUFFIX] = str(tmp_path / "missing")
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    message = str(err.value)
    assert "MLFLOW_STACK_DB_PASSWORD_FILE" in message and str(tmp_path / "missing") in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    env = good_env(tmp_path)
    del env[contract.DB_HOST.name]
    env.update(
        {
            contract.DB_PORT.name: "54x2",
            contract.ADMIN_PASSWORD.name: SENTINEL_SHORT_PASSWORD,
            contract.DEFAULT_PERMISSION.name: "ALL",
            contract.KEEPALIVE_SECONDS.name: "seventy",
            contract.DB_SSLMODE.name: "on",
            contract.ARTIFACTS_DESTINATION.name: "/var/mlflow",
            contract.WORKERS.name: "0",
            contract.AUTH_DB_NAME.name: "mlflow",
        }
    )
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    names = [p.name for p in err.value.problems]
    assert names == [
        contract.DB_HOST.name,
        contract.DB_PORT.name,
        contract.AUTH_DB_NAME.name,
        contract.DB_SSLMODE.name,
        contract.ARTIFACTS_DESTINATION.name,
        contract.WORKERS.name,
        contract.KEEPALIVE_SECONDS.name,
        contract.DEFAULT_PERMISSION.name,
        contract.ADMIN_PASSWORD.name,
    ]
    message = str(err.value)
    assert SENTINEL_SHORT_PASSWORD not in message
    assert "at least 12 characters" in message
    assert "NO_PERMISSIONS" in message  # the fix lists the valid values


def test_permission_names_match_the_installed_mlflow() -> None:
    from mlflow.server.auth.permissions import ALL_PERMISSIONS

    assert set(PERMISSIONS) == set(ALL_PERMISSIONS)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_entrypoint_exits_non_zero_with_one_message_and_starts_nothing(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        contract.DB_PORT.name: "not-a-port",
        contract.ADMIN_PASSWORD.name: SENTINEL_SHORT_PASSWORD,
        contract.DEFAULT_PERMISSION.name: "SUPERUSER",
        contract.KEEPALIVE_SECONDS.name: "1.5",
        contract.PORT.name: str(port),
    }
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, *contract.ENTRYPOINT[1:], *contract.COMMAND],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 2
    err = completed.stderr
    assert err.count("nothing was started") == 1
    for name in (
        contract.DB_HOST.name,  # missing
        contract.DB_PORT.name,
        contract.ADMIN_PASSWORD.name,
        contract.DEFAULT_PERMISSION.name,
        contract.KEEPALIVE_SECONDS.name,
        contract.ARTIFACTS_DESTINATION.name,
        contract.PUBLIC_HOSTS.name,
        contract.DB_PASSWORD.name,
        contract.FLASK_SECRET_KEY.name,
    ):
        assert f"  - {name}:" in err, name
    assert SENTINEL_SHORT_PASSWORD not in completed.stdout + err
    # Fails before importing MLflow (a multi-second import) and before binding anything.
    assert "mlflow server" not in err and elapsed < 10
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # still free: no server was started


def test_upgrade_settings_default_to_changing_nothing(tmp_path: Path) -> None:
    settings = load_settings(good_env(tmp_path))
    assert (settings.auth_legacy_denies, settings.backup_dir) == ("refuse", None)


def test_bad_upgrade_settings_are_named_with_their_fix(tmp_path: Path) -> None:
    env = good_env(tmp_path)
    env[contract.AUTH_LEGACY_DENIES.name] = "keep"
    env[contract.BACKUP_DIR.name] = "backups"
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert [p.name for p in err.value.problems] == [
        contract.AUTH_LEGACY_DENIES.name,
        contract.BACKUP_DIR.name,
    ]
    assert "refuse, convert, drop" in str(err.value) and "absolute" in str(err.value)
