"""MLflow's keys reach the workers as 0600 files, and bad or missing ones are handled at start-up."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from server import contract
from server.settings import SettingsError, load_settings
from server.worker_secrets import install_from_files, write_worker_secrets

KEK = "a-stack-kek-passphrase-0123456789"


def env_with(tmp_path: Path, **secrets: str) -> dict[str, str]:
    env = {
        contract.DB_HOST.name: "db.internal",
        contract.ARTIFACTS_DESTINATION.name: "s3://team-bucket/mlflow-artifacts",
        contract.PUBLIC_HOSTS.name: "mlflow.example.com",
        contract.DB_PASSWORD.name: "db-password",
        contract.ADMIN_PASSWORD.name: "admin-password-123",
        contract.FLASK_SECRET_KEY.name: "f" * 32,
    }
    for name, value in secrets.items():
        path = tmp_path / name
        path.write_text(value + "\n", encoding="utf-8")
        env[name + contract.FILE_SUFFIX] = str(path)
    return env


def test_the_keys_go_to_the_workers_as_private_files_and_come_back_exactly(tmp_path: Path) -> None:
    webhook_key = Fernet.generate_key().decode()
    settings = load_settings(
        env_with(
            tmp_path,
            MLFLOW_CRYPTO_KEK_PASSPHRASE=KEK,
            MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=webhook_key,
        )
    )
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    handed = write_worker_secrets(settings, private)
    # Only paths are handed over; the values are not in the environment the workers inherit.
    assert set(handed) == {s.name + contract.FILE_SUFFIX for s in contract.WORKER_SECRETS}
    assert not {KEK, webhook_key, settings.flask_secret_key} & set(handed.values())
    for path in handed.values():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    worker_env: dict[str, str] = {}
    install_from_files(handed, worker_env)
    assert worker_env == {
        contract.FLASK_SECRET_KEY.name: settings.flask_secret_key,
        contract.CRYPTO_KEK_PASSPHRASE.name: KEK,
        contract.WEBHOOK_ENCRYPTION_KEY.name: webhook_key,
    }


def test_unset_keys_are_allowed_and_not_handed_over(tmp_path: Path) -> None:
    settings = load_settings(env_with(tmp_path))
    assert settings.crypto_kek_passphrase is None and settings.webhook_encryption_key is None
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert set(write_worker_secrets(settings, private)) == {contract.FLASK_SECRET_KEY.name + "_FILE"}


@pytest.mark.parametrize(
    "bad_key",
    ["not-a-key", "a" * 44, Fernet.generate_key().decode()[:-2]],
)
def test_a_webhook_key_fernet_would_refuse_fails_the_settings(tmp_path: Path, bad_key: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env_with(tmp_path, MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=bad_key))
    assert contract.WEBHOOK_ENCRYPTION_KEY.name in str(error.value)
    assert bad_key not in str(error.value)


def test_a_short_kek_passphrase_fails_the_settings(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=contract.CRYPTO_KEK_PASSPHRASE.name):
        load_settings(env_with(tmp_path, MLFLOW_CRYPTO_KEK_PASSPHRASE="short"))  # noqa: S106 - test value
