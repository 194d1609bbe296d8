"""The local stack: PostgreSQL, an S3/DynamoDB emulator, N MLflow replicas and Caddy, one command.

The replicas run the very entrypoint the container runs (`python -m server.entrypoint serve
--app-name basic-auth`), configured the same way: plain settings as environment variables,
secrets as `<NAME>_FILE` paths to 0600 files in the state directory.

State directory layout (default `.local-stack/`, mode 0700):
    state.json            ports, replica count and the processes started (PID + start time)
    secrets/              admin_password, db_password, flask_secret_key, crypto_kek_passphrase,
                          webhook_encryption_key, postgres_superuser_password
    postgres/data/        the database cluster (kept by `down`, removed by `down --purge`)
    caddy/                Caddyfile and Caddy's storage, including the internal CA (pki/...)
    s3-snapshot/          the emulator's objects, saved by `down` and restored by `up`
    logs/                 one log file per process
    backups/              pg_dump of both databases, taken before each migration that changes a schema
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from local import caddy, s3_emulator
from local.postgres import (
    POSTGRES_BIN_PATH,
    SUPERUSER,
    LocalPostgres,
    create_statement_statistics,
    grant_traversal,
)
from local.processes import ProcessRecord, StartupTimeout, is_running, port_in_use, spawn, stop, wait_until
from local.secret_files import SecretFiles, private_dir
from server import contract

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".local-stack"
ADMIN_USERNAME = "admin"
DB_NAME = "mlflow"
AUTH_DB_NAME = "mlflow_auth"
# The application role the replicas connect as; the bootstrap creates it with the superuser
# (server/db_roles.py), exactly as the ECS task's bootstrap container does with the RDS master.
DB_USER = "mlflow_app"
# Local PostgreSQL's max_connections is 100: the role may use 90, leaving the superuser room.
APP_CONNECTION_LIMIT = 90
BUCKET = "mlflow-artifacts"
DEFAULT_LOCK_TABLE = "mlflow-stack-locks"
# Cold start on a busy 2-core machine: N replicas import MLflow at the same time.
DEFAULT_TIMEOUT_SECONDS = 240.0


class LocalStackError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


@dataclass(frozen=True)
class Ports:
    https: int = 18443
    http: int = 18080
    postgres: int = 15432
    s3: int = 15000
    replica_base: int = 18501  # replica i listens on replica_base + i

    def replica_ports(self, replicas: int) -> list[int]:
        return [self.replica_base + i for i in range(replicas)]

    def named(self, replicas: int) -> dict[str, int]:
        ports = {"https": self.https, "http": self.http, "postgres": self.postgres, "s3": self.s3}
        ports.update({f"replica-{i + 1}": p for i, p in enumerate(self.replica_ports(replicas))})
        return ports


# Which `local up` flag moves each port, for the "port in use" message.
_PORT_FLAGS = {
    "https": "--https-port",
    "http": "--http-port",
    "postgres": "--postgres-port",
    "s3": "--s3-port",
}


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    running: bool
    log_file: str


@dataclass(frozen=True)
class LocalStackInfo:
    url: str
    http_url: str
    username: str
    password_file: str
    ca_file: str
    state_dir: str
    s3_endpoint_url: str
    lock_table: str
    # The stack setting artifacts.clientAccess this stack runs with ("proxied" or "presigned").
    artifact_client_access: str = contract.ARTIFACT_CLIENT_ACCESS.default or "proxied"
    # The stack setting server.workspaces (`mlflow server --enable-workspaces`).
    workspaces: bool = False
    processes: list[ProcessStatus] = field(default_factory=list)
    already_running: bool = False

    @property
    def password(self) -> str:
        """Read on demand from the 0600 file, so the value is never part of the printed info."""
        return Path(self.password_file).read_text(encoding="utf-8")

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.running for p in self.processes)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("already_running")
        return data


@dataclass
class _State:
    replicas: int
    workers: int
    ports: Ports
    lock_table: str
    artifact_client_access: str
    workspaces: bool = False
    processes: list[ProcessRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "replicas": self.replicas,
            "workers": self.workers,
            "ports": asdict(self.ports),
            "lock_table": self.lock_table,
            "artifact_client_access": self.artifact_client_access,
            "workspaces": self.workspaces,
            "processes": [p.to_json() for p in self.processes],
        }

    @classmethod
    def from_json(cls, data: dict) -> _State:  # type: ignore[type-arg]
        return cls(
            replicas=int(data["replicas"]),
            workers=int(data["workers"]),
            ports=Ports(**data["ports"]),
            lock_table=str(data["lock_table"]),
            artifact_client_access=str(
                data.get("artifact_client_access", contract.ARTIFACT_CLIENT_ACCESS.default)
            ),
            workspaces=bool(data.get("workspaces", False)),
            processes=[ProcessRecord.from_json(p) for p in data.get("processes", [])],
        )


class LocalStack:
    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        replicas: int = 2,
        ports: Ports | None = None,
        *,
        workers: int = 1,
        lock_table: str = DEFAULT_LOCK_TABLE,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        artifact_client_access: str = contract.ARTIFACT_CLIENT_ACCESS.default or "proxied",
        workspaces: bool = False,
    ) -> None:
        if replicas < 1:
            raise LocalStackError(f"--replicas must be at least 1 (got {replicas})")
        if workers < 1:
            raise LocalStackError(f"--workers must be at least 1 (got {workers})")
        self.state_dir = Path(state_dir).resolve()
        self.replicas = replicas
        self.workers = workers
        self.ports = ports or Ports()
        named = self.ports.named(replicas)
        if len(set(named.values())) != len(named):
            raise LocalStackError(f"the stack's ports must all differ, got {named}")
        if not all(0 < port < 65536 for port in named.values()):
            raise LocalStackError(f"ports must be between 1 and 65535, got {named}")
        if artifact_client_access not in contract.ARTIFACT_CLIENT_ACCESS_MODES:
            raise LocalStackError(
                f"--artifact-client-access must be one of {', '.join(contract.ARTIFACT_CLIENT_ACCESS_MODES)} "
                f"(got {artifact_client_access!r})"
            )
        self.lock_table = lock_table
        self.timeout = timeout
        self.artifact_client_access = artifact_client_access
        self.workspaces = workspaces
        self.secrets = SecretFiles(self.state_dir / "secrets")

    # -- paths -------------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def _caddy_dir(self) -> Path:
        return self.state_dir / "caddy"

    @property
    def _s3_snapshot(self) -> Path:
        return self.state_dir / "s3-snapshot"

    # -- state -------------------------------------------------------------------------------
    def _load_state(self) -> _State | None:
        try:
            return _State.from_json(json.loads(self._state_file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def _save_state(self, state: _State) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2), encoding="utf-8")
        os.replace(tmp, self._state_file)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `up`/`down` at a time per state directory."""
        with open(self.state_dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _info(self, state: _State, already_running: bool = False) -> LocalStackInfo:
        return LocalStackInfo(
            url=f"https://{caddy.PUBLIC_HOST}:{state.ports.https}",
            http_url=f"http://{caddy.PUBLIC_HOST}:{state.ports.http}",
            username=ADMIN_USERNAME,
            password_file=str(self.secrets.admin_password),
            ca_file=str(caddy.ca_file(self._caddy_dir)),
            state_dir=str(self.state_dir),
            s3_endpoint_url=s3_emulator.endpoint_url(state.ports.s3),
            lock_table=state.lock_table,
            artifact_client_access=state.artifact_client_access,
            workspaces=state.workspaces,
            processes=[ProcessStatus(p.name, p.pid, is_running(p), p.log_file) for p in state.processes],
            already_running=already_running,
        )

    def _new_state(self) -> _State:
        return _State(
            self.replicas,
            self.workers,
            self.ports,
            self.lock_table,
            self.artifact_client_access,
            workspaces=self.workspaces,
        )

    # -- public API --------------------------------------------------------------------------
    def status(self) -> LocalStackInfo:
        state = self._load_state() or self._new_state()
        return self._info(state)

    def up(self) -> LocalStackInfo:
        private_dir(self.state_dir)
        with self._exclusive():
            state = self._load_state()
            if state is not None and state.processes:
                alive = [p for p in state.processes if is_running(p)]
                if len(alive) == len(state.processes):
                    return self._info(state, already_running=True)
                if alive:
                    dead = ", ".join(p.name for p in state.processes if not is_running(p))
                    raise LocalStackError(
                        f"the local stack in {self.state_dir} is only partly running ({dead} stopped). "
                        "Run `mlflow-stack local down` (data is kept) and then `mlflow-stack local up`; "
                        f"the logs are in {self._logs}."
                    )
            # Nothing running: a fresh start, or a restart reusing the data (stale PIDs are dropped).
            state = self._new_state()
            self._check_ports()
            try:
                self._start(state)
            except BaseException:
                # Nothing half-applied keeps running; the logs stay for the error message to point at.
                self._stop_all(state)
                raise
            return self._info(state)

    def replica_environment(self, port: int) -> dict[str, str]:
        """The environment a replica of the running stack gets, for one more replica on `port`
        (started by hand to debug, or by a test with a different setting). Secrets stay files."""
        state = self._load_state()
        if state is None:
            raise LocalStackError(f"no local stack state in {self.state_dir}; run `mlflow-stack local up`")
        return self._replica_env(state, port)

    def bootstrap_environment(self, postgres_port: int, master_password_file: Path) -> dict[str, str]:
        """The bootstrap step's environment against another PostgreSQL of this machine (the one
        `db restore-drill` restores into), with that instance's superuser as the master."""
        state = self._load_state()
        if state is None:
            raise LocalStackError(f"no local stack state in {self.state_dir}; run `mlflow-stack local up`")
        c = contract
        return {
            **self._bootstrap_env(state),
            c.DB_PORT.name: str(postgres_port),
            c.DB_MASTER_PASSWORD.name + c.FILE_SUFFIX: str(master_password_file),
        }

    def down(self, purge: bool = False) -> list[str]:
        """Stop what this stack started (by PID + start time); keep data unless purge."""
        if not self.state_dir.exists():
            return []
        with self._exclusive():
            state = self._load_state()
            stopped = self._stop_all(state, snapshot=not purge) if state else []
        if purge:
            shutil.rmtree(self.state_dir)
        return stopped

    # -- internals ---------------------------------------------------------------------------
    def _check_ports(self) -> None:
        taken = [(name, port) for name, port in self.ports.named(self.replicas).items() if port_in_use(port)]
        if taken:
            lines = [
                f"  - {name} port {port} is in use; choose another with "
                f"{_PORT_FLAGS.get(name, '--replica-base-port')}"
                for name, port in taken
            ]
            raise LocalStackError(
                "cannot start the local stack, ports are taken:\n"
                + "\n".join(lines)
                + "\n(Is another local stack running? `mlflow-stack local status --state-dir ...` shows it.)"
            )

    def _record(self, state: _State, record: ProcessRecord) -> ProcessRecord:
        # Saved right away so that even if this command dies, `down` can find the process.
        state.processes.append(record)
        self._save_state(state)
        return record

    def _stop_all(self, state: _State, snapshot: bool = False) -> list[str]:
        """Front to back — balancer, then replicas, then the stores they use — each tier in
        parallel, since every process takes a few seconds to shut down gracefully. With
        `snapshot`, the emulator's objects are saved once nothing can write to it any more."""
        stopped: list[str] = []
        tiers: dict[int, list[ProcessRecord]] = {}
        for record in state.processes:
            tier = 0 if record.name == "caddy" else 1 if record.name.startswith("replica-") else 2
            tiers.setdefault(tier, []).append(record)
        for tier in sorted(tiers):
            records = tiers[tier]
            if tier == 2 and snapshot:
                self._save_s3_snapshot(state, records)
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(records)) as pool:
                results = list(pool.map(stop, records))
            stopped += [r.name for r, was_running in zip(records, results, strict=True) if was_running]
        state.processes = []
        if self._state_file.parent.exists():
            self._save_state(state)
        return stopped

    def _save_s3_snapshot(self, state: _State, records: list[ProcessRecord]) -> None:
        emulator = next((r for r in records if r.name == "s3-emulator"), None)
        if emulator is None or not is_running(emulator):
            return
        try:
            s3_emulator.save_snapshot(state.ports.s3, self._s3_snapshot)
        except Exception as exc:
            # Stopping must still happen; the previous snapshot (if any) is left untouched.
            print(f"warning: could not save the S3 emulator's objects: {exc}", file=sys.stderr)

    def _base_env(self) -> dict[str, str]:
        """A minimal environment: nothing from the caller's shell (which might hold real AWS
        credentials or an MLFLOW_* override) leaks into the stack's processes."""
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        env.setdefault("PATH", "/usr/bin:/bin")
        return env

    def _replica_env(self, state: _State, port: int) -> dict[str, str]:
        c = contract
        env = self._base_env()
        env.update(s3_emulator.client_environment(state.ports.s3))
        env.update(
            {
                c.DB_HOST.name: "127.0.0.1",
                c.DB_PORT.name: str(state.ports.postgres),
                c.DB_NAME.name: DB_NAME,
                c.AUTH_DB_NAME.name: AUTH_DB_NAME,
                c.DB_USER.name: DB_USER,
                c.DB_SSLMODE.name: "disable",  # loopback only; RDS uses 'require'
                c.ARTIFACTS_DESTINATION.name: f"s3://{BUCKET}/mlflow-artifacts",
                c.PUBLIC_HOSTS.name: caddy.PUBLIC_HOST,
                c.HOST.name: "127.0.0.1",
                c.PORT.name: str(port),
                c.WORKERS.name: str(state.workers),
                c.ADMIN_USERNAME.name: ADMIN_USERNAME,
                # Caddy reaches the replicas from 127.0.0.1: only its X-Forwarded-For is believed.
                c.FORWARDED_ALLOW_IPS.name: "127.0.0.1",
                c.ARTIFACT_CLIENT_ACCESS.name: state.artifact_client_access,
                c.WORKSPACES.name: "true" if state.workspaces else "false",
                # A pg_dump of both databases before any migration that changes a schema.
                c.BACKUP_DIR.name: str(self.backup_dir),
                c.PG_DUMP.name: str(POSTGRES_BIN_PATH / "pg_dump"),
                # Secrets by file path only: the values never enter any environment or command line.
                c.DB_PASSWORD.name + c.FILE_SUFFIX: str(self.secrets.db_password),
                c.ADMIN_PASSWORD.name + c.FILE_SUFFIX: str(self.secrets.admin_password),
                c.FLASK_SECRET_KEY.name + c.FILE_SUFFIX: str(self.secrets.flask_secret_key),
                c.CRYPTO_KEK_PASSPHRASE.name + c.FILE_SUFFIX: str(self.secrets.crypto_kek_passphrase),
                c.WEBHOOK_ENCRYPTION_KEY.name + c.FILE_SUFFIX: str(self.secrets.webhook_encryption_key),
                "PYTHONUNBUFFERED": "1",
                # The entrypoint's private auth config (admin password, auth DB URI) and MLflow's
                # upload spool live in the state dir, not the shared /tmp: `down --purge` takes them.
                "TMPDIR": str(self.replica_tmp_dir),
            }
        )
        return env

    def _bootstrap_env(self, state: _State) -> dict[str, str]:
        c = contract
        return {
            **self._base_env(),
            c.DB_HOST.name: "127.0.0.1",
            c.DB_PORT.name: str(state.ports.postgres),
            c.DB_NAME.name: DB_NAME,
            c.AUTH_DB_NAME.name: AUTH_DB_NAME,
            c.DB_USER.name: DB_USER,
            c.DB_SSLMODE.name: "disable",
            c.DB_MASTER_USER.name: SUPERUSER,
            c.DB_APP_CONNECTION_LIMIT.name: str(APP_CONNECTION_LIMIT),
            c.DB_PASSWORD.name + c.FILE_SUFFIX: str(self.secrets.db_password),
            c.DB_MASTER_PASSWORD.name + c.FILE_SUFFIX: str(self.secrets.postgres_superuser_password),
            "PYTHONUNBUFFERED": "1",
        }

    def _bootstrap_database(self, state: _State) -> None:
        """The same step the ECS task runs before its server: the superuser creates the application
        role and hands it the databases; the replicas never see the superuser's password."""
        log = self._logs / "bootstrap-db.log"
        with open(log, "ab") as out:
            done = subprocess.run(
                [sys.executable, *contract.ENTRYPOINT[1:], *contract.BOOTSTRAP_COMMAND],
                env=self._bootstrap_env(state),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise LocalStackError(f"database bootstrap failed (exit {done.returncode}): {' | '.join(tail)}")

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def replica_tmp_dir(self) -> Path:
        return self.state_dir / "tmp"

    def _start(self, state: _State) -> None:
        self.secrets.ensure()
        superuser_password = self.secrets.postgres_superuser_password.read_text(encoding="utf-8")
        private_dir(self._logs)
        private_dir(self.replica_tmp_dir)
        self._caddy_dir.mkdir(exist_ok=True)

        postgres = LocalPostgres(self.state_dir / "postgres", state.ports.postgres)
        if postgres.user is not None:
            grant_traversal(self.state_dir, postgres.user)
        if not postgres.initialized:
            postgres.initialize(superuser_password)

        # PostgreSQL and the emulator do not depend on each other: start both, then wait.
        pg = self._record(state, postgres.start(self._logs / "postgres.log"))
        s3 = self._record(
            state, s3_emulator.start(state.ports.s3, self._logs / "s3-emulator.log", self._base_env())
        )
        wait_until(lambda: postgres.is_ready(superuser_password), what="PostgreSQL", timeout=60, record=pg)
        self._bootstrap_database(state)
        create_statement_statistics(postgres, superuser_password, (DB_NAME, AUTH_DB_NAME), DB_USER)
        wait_until(lambda: s3_emulator.is_ready(state.ports.s3), what="S3 emulator", timeout=60, record=s3)
        s3_emulator.restore_snapshot(state.ports.s3, self._s3_snapshot)
        s3_emulator.ensure_bucket(state.ports.s3, BUCKET)
        s3_emulator.ensure_lock_table(state.ports.s3, state.lock_table)

        # All replicas at once (they serialise on the migration lock only), and Caddy alongside.
        replica_ports = state.ports.replica_ports(state.replicas)
        replicas = [
            self._record(
                state,
                spawn(
                    f"replica-{i + 1}",
                    [sys.executable, "-m", "server.entrypoint", *contract.COMMAND],
                    self._logs / f"replica-{i + 1}.log",
                    self._replica_env(state, port),
                    cwd=REPO_ROOT,
                ),
            )
            for i, port in enumerate(replica_ports)
        ]
        caddyfile = caddy.write_caddyfile(
            self._caddy_dir / "Caddyfile",
            storage_dir=self._caddy_dir,
            https_port=state.ports.https,
            http_port=state.ports.http,
            replica_ports=replica_ports,
        )
        caddy_env = {
            **self._base_env(),
            "XDG_DATA_HOME": str(self._caddy_dir),
            "XDG_CONFIG_HOME": str(self._caddy_dir),
        }
        lb = self._record(state, caddy.start(caddyfile, self._logs / "caddy.log", caddy_env))

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(replicas)) as pool:
            futures = [
                pool.submit(
                    wait_until,
                    lambda port=port: _http_ok(f"http://127.0.0.1:{port}{contract.HEALTH_PATH}"),
                    what=record.name,
                    timeout=self.timeout,
                    record=record,
                )
                for record, port in zip(replicas, replica_ports, strict=True)
            ]
            for future in futures:
                future.result()
        ca = caddy.ca_file(self._caddy_dir)
        wait_until(
            lambda: _https_ok(f"https://{caddy.PUBLIC_HOST}:{state.ports.https}{contract.HEALTH_PATH}", ca),
            what="Caddy (HTTPS load balancer)",
            timeout=60,
            record=lb,
        )


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - fixed http://127.0.0.1 URL
        return response.status == 200


def _https_ok(url: str, ca_file: Path) -> bool:
    if not ca_file.exists():
        return False
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - fixed https URL
        return response.status == 200


__all__ = [
    "DEFAULT_STATE_DIR",
    "LocalStack",
    "LocalStackError",
    "LocalStackInfo",
    "Ports",
    "ProcessStatus",
    "StartupTimeout",
]
