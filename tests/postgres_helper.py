"""A private PostgreSQL for tests that need a cluster of their own (not the shared local stack):
real password auth over TCP, the application role and the kit's settings as the replicas see them.

`running_cluster(prefix)` initialises and starts one on a free 127.0.0.1 port in a fresh state dir
(traversable by PostgreSQL when the tests run as root), yields its `Cluster`, and stops it by PID
and removes the state dir at the end. Used by tests/integration/test_server_migrations.py,
tests/integration/test_auth_upgrade.py and tests/upgrade/test_upgrade_real_data.py, each as a
module-scoped fixture.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from local.postgres import SUPERUSER, LocalPostgres, grant_traversal
from local.processes import stop, wait_until
from local.secret_files import generate_password, private_dir, write_secret
from server import contract
from server.db_roles import BootstrapReport, bootstrap
from server.settings import BootstrapSettings
from tests.integration.conftest import free_ports, new_state_dir

REPO = Path(__file__).resolve().parents[1]
APP_ROLE = "mlflow_app"
APP_CONNECTION_LIMIT = 40


class Cluster:
    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        secrets = private_dir(state_dir / "secrets")
        self.superuser_password = generate_password()
        self.db_password = generate_password()
        self.files = {
            contract.DB_PASSWORD.name: secrets / "db_password",
            contract.ADMIN_PASSWORD.name: secrets / "admin_password",
            contract.FLASK_SECRET_KEY.name: secrets / "flask_secret_key",
        }
        write_secret(self.files[contract.DB_PASSWORD.name], self.db_password)
        write_secret(self.files[contract.ADMIN_PASSWORD.name], generate_password())
        write_secret(self.files[contract.FLASK_SECRET_KEY.name], "f" * 64)
        self.postgres = LocalPostgres(state_dir / "postgres", port)

    def bootstrap_settings(self, db_name: str, **changes: object) -> BootstrapSettings:
        settings = BootstrapSettings(
            db_host="127.0.0.1",
            db_port=self.port,
            db_sslmode="disable",
            db_name=db_name,
            auth_db_name=f"{db_name}_auth",
            app_user=APP_ROLE,
            app_password=self.db_password,
            master_user=SUPERUSER,
            master_password=self.superuser_password,
            app_connection_limit=APP_CONNECTION_LIMIT,
        )
        return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]

    def bootstrap(self, db_name: str, **changes: object) -> BootstrapReport:
        """What the local stack and the ECS task do before any replica starts."""
        return bootstrap(self.bootstrap_settings(db_name, **changes))

    def replica_env(self, db_name: str, port: int) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            contract.DB_HOST.name: "127.0.0.1",
            contract.DB_PORT.name: str(self.port),
            contract.DB_NAME.name: db_name,
            contract.AUTH_DB_NAME.name: f"{db_name}_auth",
            contract.DB_USER.name: APP_ROLE,
            contract.DB_SSLMODE.name: "disable",
            contract.ARTIFACTS_DESTINATION.name: "s3://unused-bucket/artifacts",
            contract.PUBLIC_HOSTS.name: "localhost",
            contract.HOST.name: "127.0.0.1",
            contract.PORT.name: str(port),
            contract.WORKERS.name: "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        env.update({name + contract.FILE_SUFFIX: str(path) for name, path in self.files.items()})
        return env


@contextmanager
def running_cluster(prefix: str) -> Iterator[Cluster]:
    """A started PostgreSQL (`shared_preload_libraries=pg_stat_statements`, as RDS with the stack's
    parameter group), stopped and removed on exit."""
    state_dir = new_state_dir(prefix)
    cluster = Cluster(state_dir, free_ports(1).postgres)
    record = None
    try:
        if cluster.postgres.user is not None:
            grant_traversal(state_dir, cluster.postgres.user)
        cluster.postgres.initialize(cluster.superuser_password)
        record = cluster.postgres.start(state_dir / "postgres.log")
        wait_until(
            lambda: cluster.postgres.is_ready(cluster.superuser_password),
            what="PostgreSQL",
            timeout=60,
            record=record,
        )
        yield cluster
    finally:
        if record is not None:
            stop(record)
        shutil.rmtree(state_dir, ignore_errors=True)
