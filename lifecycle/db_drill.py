"""`mlflow-stack db restore-drill --local`: prove the backups restore, and time it.

dump → restore into a fresh PostgreSQL → compare row counts of every table with the source → start a
replica on it → `db verify-restore`'s checks → smoke → tear down, with a timing per step
(docs/operations.md turns those timings into the RTO table).

How each step stays honest:
- The dump of each database runs in an exported snapshot (`pg_export_snapshot` + `pg_dump
  --snapshot`), and the source's row counts are taken in that same snapshot: the comparison is
  exact even while the stack keeps serving writes.
- "Fresh" is a new PostgreSQL cluster on its own port (like RDS restoring a snapshot into a new
  instance), prepared by the kit's own `bootstrap-db` step, then `pg_restore` as that cluster's
  superuser so every object keeps its owner (the application role).
- The replica is the stack's own entrypoint with the stack's settings and secrets, only pointed at
  the restored cluster. It shares the artifact bucket, as a restored RDS instance does. Experiment
  ids are a sequence, so the restored database would hand out ids the live one hands out too — and
  the smoke's cleanup deletes its experiment's whole artifact prefix. Before the smoke, the drill
  therefore moves the restored experiment-id sequence far past the source's
  (EXPERIMENT_ID_OFFSET): nothing the drill writes can share a prefix with the live stack.
- Client tools read the passwords from a 0600 libpq password file (PGPASSFILE), never from the
  command line or the environment.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lifecycle.db_doctor import STATISTICS_SCHEMA
from lifecycle.db_status import BACKUPS_DIR, MANIFEST
from lifecycle.db_target import DatabaseTarget, DatabaseUnreachable
from server import contract

DRILL_DIR = "restore-drill"
KEEP_DUMPS = 3  # the newest dumps kept under <state>/backups when --keep-dump
EXPERIMENT_ID_OFFSET = 1_000_000
REPLICA_START_TIMEOUT_SECONDS = 240.0
# The drill's replica serves plain HTTP on 127.0.0.1 (no load balancer): TLS checks do not apply.
SMOKE_SKIPPED_CHECKS = ("https redirect", "tls")


class DrillFailed(RuntimeError):
    """A step could not run at all (the report so far is attached)."""

    def __init__(self, message: str, report: DrillReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Step:
    name: str
    seconds: float
    detail: str
    ok: bool = True


@dataclass
class DrillReport:
    source: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    counts: dict[str, dict[str, dict[str, int | None]]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    smoke: list[dict[str, Any]] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)
    dump_bytes: dict[str, int] = field(default_factory=dict)
    dump_path: str | None = None
    total_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps) and not self.mismatches

    def timing(self, name: str) -> float | None:
        return next((s.seconds for s in self.steps if s.name == name), None)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["passed"] = self.passed
        return body


def _passfile_field(value: str) -> str:
    # https://www.postgresql.org/docs/current/libpq-pgpass.html: ':' and '\' are escaped with '\'.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: int(
            conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))
            ).fetchone()[0]  # type: ignore[index]
        )
        for table in _tables(conn)
    }


def compare_counts(
    database: str, source: dict[str, int], restored: dict[str, int]
) -> tuple[dict[str, dict[str, int | None]], list[str]]:
    table = {
        name: {"source": source.get(name), "restored": restored.get(name)}
        for name in sorted({*source, *restored})
    }
    mismatches = [
        f"{database}.{name}: source {c['source']}, restored {c['restored']}"
        for name, c in table.items()
        if c["source"] != c["restored"]
    ]
    return table, mismatches


class _Drill:
    def __init__(self, target: DatabaseTarget, work: Path, dump_dir: Path) -> None:
        from local.stack import LocalStack

        assert target.local_state_dir is not None
        self.target = target
        self.stack = LocalStack(target.local_state_dir)
        self.work = work
        self.dump_dir = dump_dir
        self.passfile = work / "pgpass"
        self.superuser_password = secrets.token_urlsafe(24)
        self.superuser_password_file = work / "drill-superuser-password"
        self.port = _free_port()
        self.records: list[Any] = []
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSFILE": str(self.passfile)}

    def write_passfile(self) -> None:
        from local.postgres import SUPERUSER
        from local.secret_files import write_secret

        lines = [
            f"127.0.0.1:{self.target.port}:*:{_passfile_field(self.target.user)}:"
            f"{_passfile_field(self.target.password)}",
            f"127.0.0.1:{self.port}:*:{SUPERUSER}:{_passfile_field(self.superuser_password)}",
        ]
        write_secret(self.passfile, "\n".join(lines) + "\n")
        write_secret(self.superuser_password_file, self.superuser_password)

    def tool(self, name: str, *args: str) -> None:
        from local.postgres import POSTGRES_BIN_PATH

        done = subprocess.run(
            [str(POSTGRES_BIN_PATH / name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name} exited {done.returncode}: {done.stderr.strip()[-800:]}")

    def dump(self, database: str) -> dict[str, int]:
        """Dump `database` and count its rows, both in one exported snapshot."""
        path = self.dump_dir / f"{database}.dump"
        with self.target.connect(database, autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            counts = count_rows(conn)
            self.tool(
                "pg_dump",
                f"--snapshot={snapshot}",
                # The statement statistics' schema holds no MLflow data, and the new instance's
                # bootstrap-db creates its own (the extension itself is dumped IF NOT EXISTS).
                f"--exclude-schema={STATISTICS_SCHEMA}",
                "--format=custom",
                f"--file={path}",
                "--host=127.0.0.1",
                f"--port={self.target.port}",
                f"--username={self.target.user}",
                "--no-password",
                database,
            )
            conn.rollback()
        return counts

    def start_postgres(self) -> None:
        from local.postgres import LocalPostgres
        from local.processes import wait_until

        postgres = LocalPostgres(self.work / "postgres", self.port)
        postgres.initialize(self.superuser_password)
        record = postgres.start(self.work / "logs" / "postgres.log")
        self.records.append(record)
        wait_until(
            lambda: postgres.is_ready(self.superuser_password),
            what="the drill's PostgreSQL",
            timeout=60,
            record=record,
        )

    def bootstrap(self) -> None:
        env = self.stack.bootstrap_environment(self.port, self.superuser_password_file)
        log = self.work / "logs" / "bootstrap-db.log"
        with open(log, "ab") as out:
            done = subprocess.run(
                [sys.executable, *contract.ENTRYPOINT[1:], *contract.BOOTSTRAP_COMMAND],
                env=env,
                cwd=_repo_root(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(
                f"bootstrap-db on the restored instance failed (exit {done.returncode}): {tail}"
            )

    def superuser(self, database: str) -> psycopg.Connection:
        from local.postgres import SUPERUSER

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )

    def restore(self, database: str) -> None:
        from local.postgres import SUPERUSER

        # As the superuser, owners kept: the objects belong to the application role, as in the source.
        self.tool(
            "pg_restore",
            "--exit-on-error",
            "--single-transaction",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            "--no-password",
            f"--dbname={database}",
            str(self.dump_dir / f"{database}.dump"),
        )

    def move_experiment_ids(self) -> None:
        with self.superuser(self.target.tracking_db) as conn:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('experiments', 'experiment_id'), "
                "(SELECT coalesce(max(experiment_id), 0) FROM experiments) + %s)",
                (EXPERIMENT_ID_OFFSET,),
            )

    def start_replica(self) -> str:
        from local.processes import spawn, wait_until
        from local.secret_files import private_dir

        port = _free_port()
        tmp = self.work / "tmp"
        private_dir(tmp)
        env = self.stack.replica_environment(port)
        env[contract.DB_PORT.name] = str(self.port)
        env["TMPDIR"] = str(tmp)
        record = spawn(
            "restore-drill-replica",
            [sys.executable, "-m", "server.entrypoint", *contract.COMMAND],
            self.work / "logs" / "replica.log",
            env,
            cwd=_repo_root(),
        )
        self.records.append(record)
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _http_ok(url + contract.HEALTH_PATH),
            what="the drill's replica",
            timeout=REPLICA_START_TIMEOUT_SECONDS,
            record=record,
        )
        return url

    def stop_all(self) -> None:
        from local.processes import stop

        for record in reversed(self.records):
            stop(record)
        self.records.clear()


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - fixed http://127.0.0.1 URL
        return response.status == 200


@contextmanager
def _timed(report: DrillReport, name: str) -> Iterator[Callable[[str], None]]:
    started = time.monotonic()
    details: list[str] = []
    try:
        yield details.append
    except Exception as error:
        report.steps.append(Step(name, time.monotonic() - started, str(error), ok=False))
        raise
    report.steps.append(Step(name, time.monotonic() - started, "; ".join(details)))


def _smoke(url: str, info: Any, report: DrillReport) -> None:
    from lifecycle.credentials import ServerTarget
    from lifecycle.smoke import run_smoke
    from lifecycle.smoke_checks import CHECKS

    target = ServerTarget(
        url=url,
        username=info.username,
        password=info.password,
        source="restore drill replica",
        artifact_client_access=info.artifact_client_access,
    )
    result = run_smoke(target, checks=[c for c in CHECKS if c.name not in SMOKE_SKIPPED_CHECKS])
    rows = [*result.checks, *result.cleanup]
    report.smoke = [{"name": r.name, "phase": r.phase, "status": r.status, "detail": r.detail} for r in rows]
    failed = [r.name for r in result.failures]
    if failed or not result.ok:
        raise RuntimeError(f"smoke failed on the restored replica: {', '.join(failed)}")


def _verify(url: str, info: Any) -> dict[str, Any]:
    """`db verify-restore` on the replica. What it finds was in the source too (the counts match),
    so it is reported, and the drill fails only on counts and the smoke."""
    from lifecycle.client import Connection
    from lifecycle.db_verify import verify_restore

    with Connection(url, info.username, info.password) as conn:
        return verify_restore(conn, gc_older_than=timedelta(seconds=1)).to_json()


def _prune_dumps(root: Path, keep: int) -> None:
    dumps = sorted(p for p in root.iterdir() if (p / MANIFEST).exists())
    for old in dumps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def restore_drill(target: DatabaseTarget, *, keep_dump: bool = True, smoke: bool = True) -> DrillReport:
    """Run the drill against the local stack `target` (resolve_local_database). Never leaves a
    process running; raises DrillFailed (with the report) when a step fails."""
    from local.secret_files import private_dir
    from local.stack import LocalStack

    if target.local_state_dir is None:
        raise ValueError("the restore drill runs against the local stack (--local)")
    state_dir = Path(target.local_state_dir)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    private_dir(state_dir / BACKUPS_DIR)
    dump_dir = state_dir / BACKUPS_DIR / stamp
    private_dir(dump_dir)
    work = state_dir / DRILL_DIR
    shutil.rmtree(work, ignore_errors=True)  # a previous drill that was killed
    work.mkdir(mode=0o755)
    (work / "logs").mkdir()
    report = DrillReport(target.describe())
    drill = _Drill(target, work, dump_dir)
    started = time.monotonic()
    databases = (target.tracking_db, target.auth_db)
    try:
        drill.write_passfile()
        source_counts: dict[str, dict[str, int]] = {}
        with _timed(report, "dump") as note:
            for database in databases:
                source_counts[database] = drill.dump(database)
                report.dump_bytes[database] = (dump_dir / f"{database}.dump").stat().st_size
            note(", ".join(f"{db} {_mib(n)}" for db, n in report.dump_bytes.items()))
        with _timed(report, "new instance") as note:
            drill.start_postgres()
            drill.bootstrap()
            note(f"PostgreSQL on 127.0.0.1:{drill.port}, application role and databases by bootstrap-db")
        with _timed(report, "restore") as note:
            for database in databases:
                drill.restore(database)
            note("pg_restore --single-transaction, owners kept")
        with _timed(report, "compare counts") as note:
            for database in databases:
                with drill.superuser(database) as conn:
                    restored = count_rows(conn)
                report.counts[database], mismatches = compare_counts(
                    database, source_counts[database], restored
                )
                report.mismatches += mismatches
            rows = sum(sum(c.values()) for c in source_counts.values())
            tables = sum(len(c) for c in source_counts.values())
            note(f"{tables} tables, {rows} rows, {len(report.mismatches)} differ")
        with _timed(report, "start replica") as note:
            drill.move_experiment_ids()
            url = drill.start_replica()
            note(f"{url} (the stack's entrypoint and settings, restored database)")
        with _timed(report, "verify-restore") as note:
            report.verify = _verify(url, LocalStack(state_dir).status())
            note(
                f"{len(report.verify['models'])} model(s): {len(report.verify['broken_versions'])} broken "
                f"version(s), {len(report.verify['broken_aliases'])} alias(es) on them, "
                f"{len(report.verify['gc_candidate_runs'])} deleted run(s) for gc (reported, not failed on)"
            )
        if smoke:
            with _timed(report, "smoke") as note:
                _smoke(url, LocalStack(state_dir).status(), report)
                note(
                    f"{sum(1 for s in report.smoke if s['status'] == 'PASS')} checks and cleanup steps passed"
                )
    except DatabaseUnreachable:
        raise  # the source stack is down: nothing was drilled (exit 3, like every db command)
    except Exception as error:
        raise DrillFailed(str(error), report) from error
    finally:
        with _timed(report, "tear down") as note:
            drill.stop_all()
            shutil.rmtree(work, ignore_errors=True)
            note("replica and PostgreSQL stopped, restored cluster removed")
        report.total_seconds = time.monotonic() - started
        if keep_dump and report.dump_bytes:
            manifest = {
                "kind": "restore-drill dump (pg_dump custom format)",
                "created_at": started_at.isoformat(timespec="seconds"),
                "size_bytes": sum(report.dump_bytes.values()),
                "files": {db: f"{db}.dump" for db in report.dump_bytes},
                "dump_seconds": report.timing("dump"),
                "restore_seconds": report.timing("restore"),
                "drill_passed": report.passed,
            }
            (dump_dir / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            report.dump_path = str(dump_dir)
            _prune_dumps(state_dir / BACKUPS_DIR, KEEP_DUMPS)
        else:
            shutil.rmtree(dump_dir, ignore_errors=True)
    return report


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def drill_lines(report: DrillReport) -> list[str]:
    lines = [f"db restore-drill ({report.source['source']}): {'PASS' if report.passed else 'FAIL'}"]
    for s in report.steps:
        lines.append(f"  {'ok  ' if s.ok else 'FAIL'} {s.name:<15} {s.seconds:7.2f} s  {s.detail}")
    lines += [f"  count differs: {m}" for m in report.mismatches]
    lines += [f"  smoke {r['status']}: {r['name']}" for r in report.smoke if r["status"] != "PASS"]
    lines.append(f"  total {report.total_seconds:.2f} s")
    if report.dump_path:
        lines.append(f"  dump kept in {report.dump_path} (the last backup `db status --local` shows)")
    return lines
