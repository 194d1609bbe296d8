"""The one server spec: built from validated settings + platform outputs, named by the contract."""

from __future__ import annotations

from typing import Any

import pytest

from infra.compute.spec import DB_SSLMODE, SecretRefs, build_server_spec
from infra.settings import Settings, build_settings
from server import contract

# Positional: DB password (an RDS-managed JSON secret's key), admin password, Flask key, KEK
# passphrase, webhook key.
REFS = SecretRefs(
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1-AbCdEf:password::",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow-stack/dev/admin-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow-stack/dev/flask-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow-stack/dev/kek-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow-stack/dev/webhook-AbCdEf",
)


def _settings(stack: str = "dev", **sections: Any) -> Settings:
    raw: dict[str, Any] = {
        "owner": "ml-platform@example.com",
        "costCenter": "cc-1234",
        "domain": {"name": "mlflow.dev.example.com", "hostedZoneId": "Z0123456789ABCDEFGHIJ"},
        **sections,
    }
    return build_settings(stack, "us-east-1", raw)


def _spec(settings: Settings) -> Any:
    return build_server_spec(
        settings,
        image="example.com/mlflow:1",
        db_host="db.internal",
        db_port="5432",
        db_name="mlflow",
        auth_db_name="mlflow_auth",
        db_user="mlflow",
        artifacts_destination="s3://bucket/mlflow-artifacts",
        secret_refs=REFS,
        read_only_root=True,
    )


def test_every_contract_setting_is_set_and_secrets_are_references() -> None:
    spec = _spec(_settings())
    assert set(spec.environment) == {s.name for s in contract.PLAIN_SETTINGS}
    assert dict(spec.secrets) == {
        contract.DB_PASSWORD.name: REFS.db_password,
        contract.ADMIN_PASSWORD.name: REFS.admin_password,
        contract.FLASK_SECRET_KEY.name: REFS.flask_secret_key,
        contract.CRYPTO_KEK_PASSPHRASE.name: REFS.crypto_kek_passphrase,
        contract.WEBHOOK_ENCRYPTION_KEY.name: REFS.webhook_encryption_key,
    }


def test_command_port_and_health_come_from_the_contract() -> None:
    spec = _spec(_settings())
    assert spec.entrypoint == contract.ENTRYPOINT
    assert spec.command == contract.COMMAND
    assert "--app-name" in spec.command and "basic-auth" in spec.command
    assert spec.port == contract.CONTAINER_PORT
    assert spec.environment[contract.PORT.name] == str(contract.CONTAINER_PORT)
    assert spec.health_path == contract.HEALTH_PATH == "/health"


def test_settings_flow_into_the_server_environment() -> None:
    settings = _settings(
        server={
            "workers": 3,
            "keepaliveSeconds": 330,
            "defaultPermission": "READ",
            "authCacheTtlSeconds": 30,
            "adminUsername": "mlflow-admin",
            "cpu": 2048,
            "memory": 4096,
            "maxReplicas": 1,
        },
    )
    spec = _spec(settings)
    env = spec.environment
    assert env[contract.PUBLIC_HOSTS.name] == "mlflow.dev.example.com"
    assert env[contract.DB_SSLMODE.name] == DB_SSLMODE == "require"
    assert env[contract.WORKERS.name] == "3"
    assert env[contract.KEEPALIVE_SECONDS.name] == "330"
    assert env[contract.DEFAULT_PERMISSION.name] == "READ"
    assert env[contract.AUTH_CACHE_TTL_SECONDS.name] == "30"
    assert env[contract.ADMIN_USERNAME.name] == "mlflow-admin"
    assert env[contract.DB_POOL_SIZE.name] == str(settings.server.db_pool_size)
    assert env[contract.DB_MAX_OVERFLOW.name] == str(settings.server.db_max_overflow)
    assert env[contract.ARTIFACTS_DESTINATION.name] == "s3://bucket/mlflow-artifacts"
    assert (spec.cpu, spec.memory) == (2048, 4096)


def test_keepalive_in_the_spec_outlasts_the_load_balancer_idle_timeout() -> None:
    settings = _settings("prod", database={"multiAz": True}, alarms={})
    spec = _spec(settings)
    assert (
        int(spec.environment[contract.KEEPALIVE_SECONDS.name]) > settings.load_balancer.idle_timeout_seconds
    )


def test_spec_refuses_a_secret_setting_in_plain_environment() -> None:
    from infra.compute.spec import ServerSpec

    with pytest.raises(ValueError, match="MLFLOW_FLASK_SERVER_SECRET_KEY"):
        ServerSpec(
            image="x",
            entrypoint=contract.ENTRYPOINT,
            command=contract.COMMAND,
            environment={contract.FLASK_SECRET_KEY.name: "not-a-reference"},
            secrets={},
            port=8080,
            health_path="/health",
            cpu=1024,
            memory=2048,
        )
