"""The servers under test, all on one embedded PostgreSQL and one S3 emulator.

Like with like: every server is ONE `mlflow server` process tree (its uvicorn workers included)
pinned to the same CPU set with `taskset`, on the same PostgreSQL and S3 emulator, with its own
empty databases and artifact prefix, reached directly on 127.0.0.1 (no proxy in front).

- `stock-auth`:   `mlflow server --app-name basic-auth`, MLflow's defaults (4 workers, no
                  credential cache), its auth DB on the same PostgreSQL;
- `stock-noauth`: `mlflow server`, MLflow's defaults;
- `kit`:          the kit's entrypoint (`python -m server.entrypoint serve --app-name basic-auth`)
                  with the kit's defaults from server/contract.py, or explicit overrides.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local import s3_emulator
from local.postgres import SUPERUSER, LocalPostgres, grant_traversal
from local.processes import ProcessRecord, is_running, spawn, stop, wait_until
from local.secret_files import private_dir, write_secret
from server import contract

REPO_ROOT = Path(__file__).resolve().parent.parent
DB_ROLE = "mlflow_app"
BUCKET = "bench-artifacts"
ADMIN_USERNAME = "admin"
KINDS = ("stock-auth", "stock-noauth", "kit")
# Cold start of an MLflow server (imports, migrations) on a busy 2-core machine.
START_TIMEOUT_SECONDS = 240.0


# The stack file whose replica the default kit rows run: a 2-vCPU task, like the pinned CPU set.
TUNING_STACK = "prod"


def stack_tuning(stack: str = TUNING_STACK) -> dict[str, str]:
    """The replica settings (workers, pools, keep-alive, caches) a stack file deploys, as env."""
    from infra.compute.spec import tuning_environment
    from infra.settings import CONFIG_NAMESPACE, build_settings
    from preview.offline import load_stack_config

    config = load_stack_config(stack, REPO_ROOT / "stacks")
    prefix = CONFIG_NAMESPACE + ":"
    raw = {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}
    return tuning_environment(build_settings(stack, config.get("aws:region"), raw).server)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token() -> str:
    # Hex only: these credentials go into URIs and an INI file without any quoting concerns.
    return secrets.token_hex(16)


@dataclass
class Server:
    label: str
    kind: str
    port: int
    record: ProcessRecord
    # None for the unauthenticated server.
    admin: tuple[str, str] | None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _health_ok(url: str) -> bool:
    with urllib.request.urlopen(url + contract.HEALTH_PATH, timeout=2) as response:  # noqa: S310 - loopback
        return response.status == 200


class BenchEnvironment:
    """PostgreSQL + S3 emulator in a private temporary directory, and the servers started on them.

    Everything is stopped by PID in `close()`; the directory is removed.
    """

    def __init__(self, cpus: str) -> None:
        self.cpus = cpus
        # Directly under /tmp: PostgreSQL runs as an unprivileged user when we are root and must be
        # able to traverse every parent directory.
        self.root = Path(tempfile.mkdtemp(prefix="mlflow-stack-bench-"))
        self.logs = private_dir(self.root / "logs")
        self.secrets = private_dir(self.root / "secrets")
        self.pg_port = free_port()
        self.s3_port = free_port()
        self.superuser_password = _token()
        self.db_password = _token()
        self.postgres = LocalPostgres(self.root / "postgres", self.pg_port)
        self.infra: list[ProcessRecord] = []
        self.servers: list[Server] = []

    # -- infrastructure ------------------------------------------------------------------------
    def start(self) -> None:
        if self.postgres.user is not None:
            grant_traversal(self.root, self.postgres.user)
        self.postgres.initialize(self.superuser_password)
        pg = self.postgres.start(self.logs / "postgres.log")
        self.infra.append(pg)
        s3 = s3_emulator.start(self.s3_port, self.logs / "s3-emulator.log", self._base_env())
        self.infra.append(s3)
        wait_until(
            lambda: self.postgres.is_ready(self.superuser_password), what="PostgreSQL", timeout=60, record=pg
        )
        wait_until(lambda: s3_emulator.is_ready(self.s3_port), what="S3 emulator", timeout=60, record=s3)
        s3_emulator.ensure_bucket(self.s3_port, BUCKET)

    @property
    def postgres_record(self) -> ProcessRecord:
        return self.infra[0]

    def create_database(self, name: str) -> None:
        """`name` and `<name>_users` (the auth database of both kit and stock rows), owned by the
        benchmark's application role: the same bootstrap the local stack and ECS run."""
        from server.db_roles import bootstrap
        from server.settings import BootstrapSettings

        bootstrap(
            BootstrapSettings(
                db_host="127.0.0.1",
                db_port=self.pg_port,
                db_sslmode="disable",
                db_name=name,
                auth_db_name=f"{name}_users",
                app_user=DB_ROLE,
                app_password=self.db_password,
                master_user=SUPERUSER,
                master_password=self.superuser_password,
            )
        )

    def db_uri(self, database: str) -> str:
        return f"postgresql+psycopg://{DB_ROLE}:{self.db_password}@127.0.0.1:{self.pg_port}/{database}"

    def _base_env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        env.setdefault("PATH", "/usr/bin:/bin")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _pinned(self, argv: list[str]) -> list[str]:
        # taskset execs the command: the recorded PID is the server's, and its workers inherit the set.
        return ["taskset", "-c", self.cpus, *argv]

    # -- servers ---------------------------------------------------------------------------------
    def start_stock(self, label: str, *, auth: bool) -> Server:
        port = free_port()
        database = f"bench_{label.replace('-', '_')}"
        self.create_database(database)
        env = self._base_env()
        env.update(s3_emulator.client_environment(self.s3_port))
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.db_uri(database),
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{BUCKET}/{label}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        admin = None
        if auth:
            argv[4:4] = ["--app-name", "basic-auth"]
            admin = (ADMIN_USERNAME, _token())
            config = configparser.ConfigParser(interpolation=None)
            # MLflow's shipped basic_auth.ini, with only what must differ: the auth DB on the same
            # PostgreSQL and an admin password (MLflow ships none). No credential cache: the default.
            config["mlflow"] = {
                "default_permission": "READ",
                "database_uri": self.db_uri(database + "_users"),
                "admin_username": admin[0],
                "admin_password": admin[1],
                "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
            }
            ini = self.secrets / f"{label}.ini"
            fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                config.write(handle)
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
            env[contract.FLASK_SECRET_KEY.name] = secrets.token_hex(32)
        kind = "stock-auth" if auth else "stock-noauth"
        return self._launch(label, kind, port, argv, env, admin, {"workers": "4 (MLflow default)"})

    def kit_environment(self, label: str, port: int, overrides: Mapping[str, str]) -> dict[str, str]:
        c = contract
        database = f"bench_{label.replace('-', '_')}"
        self.create_database(database)
        secret_dir = private_dir(self.secrets / label)
        files = {
            c.DB_PASSWORD: self.db_password,
            c.ADMIN_PASSWORD: _token(),
            c.FLASK_SECRET_KEY: secrets.token_hex(32),
        }
        env = self._base_env()
        env.update(s3_emulator.client_environment(self.s3_port))
        for setting, value in files.items():
            path = secret_dir / setting.name.lower()
            write_secret(path, value)
            env[setting.name + c.FILE_SUFFIX] = str(path)
        env.update(
            {
                c.DB_HOST.name: "127.0.0.1",
                c.DB_PORT.name: str(self.pg_port),
                c.DB_NAME.name: database,
                c.AUTH_DB_NAME.name: database + "_users",
                c.DB_USER.name: DB_ROLE,
                c.DB_SSLMODE.name: "disable",
                c.ARTIFACTS_DESTINATION.name: f"s3://{BUCKET}/{label}",
                c.PUBLIC_HOSTS.name: "localhost",
                c.HOST.name: "127.0.0.1",
                c.PORT.name: str(port),
                c.ADMIN_USERNAME.name: ADMIN_USERNAME,
            }
        )
        env.update(overrides)
        return env

    def start_kit(self, label: str, overrides: Mapping[str, str]) -> Server:
        c = contract
        port = free_port()
        env = self.kit_environment(label, port, overrides)
        admin = (ADMIN_USERNAME, Path(env[c.ADMIN_PASSWORD.name + c.FILE_SUFFIX]).read_text(encoding="utf-8"))
        tuned = (
            c.WORKERS,
            c.AUTH_CACHE_TTL_SECONDS,
            c.DB_POOL_SIZE,
            c.DB_MAX_OVERFLOW,
            c.KEEPALIVE_SECONDS,
            c.HOT_PATHS,
        )
        settings = {s.name: env.get(s.name, f"{s.default} (default)") for s in tuned}
        argv = [sys.executable, "-m", "server.entrypoint", *c.COMMAND]
        return self._launch(label, "kit", port, argv, env, admin, settings)

    def _launch(
        self,
        label: str,
        kind: str,
        port: int,
        argv: list[str],
        env: dict[str, str],
        admin: tuple[str, str] | None,
        settings: dict[str, str],
    ) -> Server:
        record = spawn(label, self._pinned(argv), self.logs / f"{label}.log", env, cwd=REPO_ROOT)
        server = Server(label, kind, port, record, admin, settings)
        self.servers.append(server)
        return server

    def wait_ready(self, server: Server, timeout: float = START_TIMEOUT_SECONDS) -> None:
        wait_until(lambda: _health_ok(server.url), what=server.label, timeout=timeout, record=server.record)

    def stop_server(self, server: Server) -> None:
        stop(server.record)
        self.servers.remove(server)

    def close(self) -> None:
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                stop(server.record)
        self.servers.clear()
        for record in reversed(self.infra):
            with contextlib.suppress(Exception):
                stop(record)
        self.infra.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, server: Server, lines: int = 30) -> str:
        text = Path(server.record.log_file).read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def bench_environment(cpus: str) -> Iterator[BenchEnvironment]:
    env = BenchEnvironment(cpus)
    try:
        env.start()
        yield env
    finally:
        env.close()


def running(server: Server) -> bool:
    return is_running(server.record)


def wait_seconds(seconds: float) -> None:
    time.sleep(seconds)
