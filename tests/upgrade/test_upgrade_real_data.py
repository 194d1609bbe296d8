"""MLflow 2.x (and an early 3.x) to the kit's MLflow, on databases a real old server filled.

For each old release: install it from PyPI into a throwaway environment (uv; the pins it needs
today are in OLD_RELEASES), run its own `mlflow server --app-name basic-auth` on real PostgreSQL
and the S3 API emulator, fill it through its own client (experiments, runs with params, metric
histories and tags, artifacts, a deleted run, registered models with versions, aliases and tags,
prompts, traces, users and per-resource grants including an explicit deny), and snapshot all of
it. Then start REPLICAS of the kit's entrypoint at once on those databases and check that:
  - exactly one replica migrated each schema, after dumping both databases;
  - the snapshot read back through the new client is equal to the old one, key for key;
  - every user logs in with the old password; every grant answers as it did (the prompt grant and
    the explicit deny included), and is stored as the equivalent 3.x grant;
  - a client of the old release can still log a run, with an artifact.

Slow (an MLflow install, two servers): run by `make test-upgrade`, not `make test`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from local import s3_emulator
from local.postgres import POSTGRES_BIN_PATH
from local.processes import ProcessRecord, StartupTimeout, spawn, stop, wait_until
from local.secret_files import write_secret
from server import contract
from server.database import _passfile_field
from tests.integration.conftest import free_ports
from tests.postgres_helper import APP_ROLE, Cluster, running_cluster

pytestmark = pytest.mark.upgrade

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("mlflow_client_script.py")
REPLICAS = 3
PROMPT = "greeting"  # the prompt mlflow_client_script.py registers
PROMPT_KIND = "prompt"
BUCKET = "mlflow-artifacts"
ADMIN_PASSWORD = "admin-password-of-the-old-server"  # noqa: S105 - a throwaway test credential
# What installing each old release needs today: SQLAlchemy 2.1 breaks their stores, and with
# OpenTelemetry >= 1.34 their span processors fail to end a span (no trace is ever stored).
OLD_PINS = ["sqlalchemy<2.1", "opentelemetry-api<1.34", "opentelemetry-sdk<1.34"]
OLD_RELEASES = {"2.22.5": ["mlflow[auth]==2.22.5", *OLD_PINS], "3.1.4": ["mlflow[auth]==3.1.4", *OLD_PINS]}
COMMON_PACKAGES = ["psycopg2-binary", "boto3"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("mlflow-stack-upgrade-") as c:
        yield c


@pytest.fixture(scope="module")
def s3_port(cluster: Cluster) -> Iterator[int]:
    port = free_ports(1).s3
    record = s3_emulator.start(port, cluster.state_dir / "s3.log", {"PATH": "/usr/bin:/bin"})
    try:
        wait_until(lambda: s3_emulator.is_ready(port), what="S3 emulator", timeout=60, record=record)
        s3_emulator.ensure_bucket(port, BUCKET)
        yield port
    finally:
        stop(record)


def _install(version: str, directory: Path) -> Path:
    """A throwaway environment with the old release; its interpreter's path."""
    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        [str(uv), "venv", "-q", "-p", sys.executable, str(directory)], check=True, cwd=directory.parent
    )
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "-p",
            str(directory / "bin" / "python"),
            *OLD_RELEASES[version],
            *COMMON_PACKAGES,
        ],
        check=True,
        cwd=directory.parent,
        timeout=900,
    )
    return directory / "bin" / "python"


def _db_uri(cluster: Cluster, database: str) -> str:
    """No password: libpq (psycopg2 in the old release) reads it from PGPASSFILE, so it is on no
    command line or config file of the old server either."""
    return f"postgresql://{APP_ROLE}@127.0.0.1:{cluster.port}/{database}"


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
        return response.status == 200


def _client_env(s3_port: int, port: int, user: str, password: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/root" if Path("/root").is_dir() else "/tmp",
        **s3_emulator.client_environment(s3_port),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # A failing call should fail the test in seconds, not after minutes of backoff.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    }


def _client(python: Path, command: str, out: Path, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [str(python), str(SCRIPT), command, str(out)],
        env=env,
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{python} {command}:\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


def _start_old_server(
    python: Path, cluster: Cluster, db: str, s3_port: int, work: Path
) -> tuple[ProcessRecord, int]:
    port = free_ports(1).replica_base
    ini = work / "basic_auth.ini"
    auth_uri = _db_uri(cluster, f"{db}_auth")
    passfile = work / "pgpass"
    write_secret(passfile, f"127.0.0.1:{cluster.port}:*:{APP_ROLE}:{_passfile_field(cluster.db_password)}\n")
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {auth_uri}\n"
        "admin_username = admin\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        **s3_emulator.client_environment(s3_port),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "PGPASSFILE": str(passfile),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    command = [
        str(python.parent / "mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        _db_uri(cluster, db),
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    record = spawn("old-server", command, work / "old-server.log", env, cwd=work)
    wait_until(lambda: _healthy(port), what="old MLflow server", timeout=300, record=record)
    return record, port


def _kit_env(cluster: Cluster, db: str, s3_port: int, port: int, work: Path) -> dict[str, str]:
    env = cluster.replica_env(db, port)
    admin_file = work / "admin_password"
    if not admin_file.exists():
        write_secret(admin_file, ADMIN_PASSWORD)  # the operator carries the admin password over
    env.update(s3_emulator.client_environment(s3_port))
    env.update(
        {
            contract.ARTIFACTS_DESTINATION.name: f"s3://{BUCKET}/mlflow-artifacts",
            contract.ADMIN_PASSWORD.name + contract.FILE_SUFFIX: str(admin_file),
            contract.DEFAULT_PERMISSION.name: "READ",
            contract.AUTH_LEGACY_DENIES.name: "convert",
            contract.BACKUP_DIR.name: str(work / "backups"),
            contract.PG_DUMP.name: str(POSTGRES_BIN_PATH / "pg_dump"),
        }
    )
    return env


def _http(port: int, method: str, path: str, auth: tuple[str, str], **kwargs: object) -> int:
    response = requests.request(method, f"http://127.0.0.1:{port}{path}", auth=auth, timeout=60, **kwargs)  # type: ignore[arg-type]
    return response.status_code


# What each 2.x permission lets a user do, as HTTP statuses: read, then update (a tag write).
EXPECTED = {"READ": (200, 403), "EDIT": (200, 200), "MANAGE": (200, 200), "NO_PERMISSIONS": (403, 403)}


def _check_grant(port: int, manifest: dict, user: str, kind: str, resource: str, permission: str) -> None:  # type: ignore[type-arg]
    auth = (user, manifest["users"][user])
    if kind == "experiment":
        read = _http(port, "GET", f"/api/2.0/mlflow/experiments/get?experiment_id={resource}", auth)
        update = _http(
            port,
            "POST",
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            auth,
            json={"experiment_id": resource, "key": "touched-by", "value": user},
        )
    else:
        read = _http(port, "GET", f"/api/2.0/mlflow/registered-models/get?name={resource}", auth)
        update = _http(
            port,
            "POST",
            "/api/2.0/mlflow/registered-models/set-tag",
            auth,
            json={"name": resource, "key": "touched-by", "value": user},
        )
    assert (read, update) == EXPECTED[permission], (user, kind, resource, permission)


@pytest.mark.parametrize("version", list(OLD_RELEASES))
def test_upgrade_keeps_every_object_grant_and_password(
    cluster: Cluster, s3_port: int, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = "mlflow_from_" + version.replace(".", "_")
    work = cluster.state_dir / db
    work.mkdir()
    cluster.bootstrap(db)
    python = _install(version, work / "venv")

    old_server, old_port = _start_old_server(python, cluster, db, s3_port, work)
    try:
        admin_env = _client_env(s3_port, old_port, "admin", ADMIN_PASSWORD)
        manifest = _client(python, "fill", work / "manifest.json", admin_env)
        before = _client(python, "snapshot", work / "before.json", admin_env)
        # What the comparison below covers (so an empty read-back cannot pass as "equal").
        exp_a = before["experiments"]["exp-a"]
        assert len(exp_a["traces"]) == 2 and all(len(t["spans"]) == 2 for t in exp_a["traces"])
        assert sum(len(e["runs"]) for e in before["experiments"].values()) == 5
        assert all(
            len(r["metrics"]["loss"]) == 25 and len(r["artifacts"]) == 2 for r in exp_a["runs"].values()
        )
        assert set(before["models"]["model-a"]["aliases"]) == {"champion", "challenger"}
        assert before["prompts"] == {
            "greeting/1": "Hello {{name}}!",
            "greeting/2": "Hello {{name}}, welcome.",
        }
    finally:
        stop(old_server)
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=APP_ROLE, password=cluster.db_password, dbname=f"{db}_auth"
    ) as conn:
        hashes_before = dict(conn.execute("SELECT username, password_hash FROM users").fetchall())
        # Every grant the old server stored (the admin's automatic MANAGE grants included).
        grants_before = conn.execute(
            "SELECT u.username, 'experiment', p.experiment_id, p.permission FROM experiment_permissions p "
            "JOIN users u ON u.id = p.user_id UNION ALL "
            "SELECT u.username, 'registered_model', p.name, p.permission FROM registered_model_permissions p "
            "JOIN users u ON u.id = p.user_id"
        ).fetchall()
    assert set(map(tuple, manifest["grants"])) <= {
        (user, PROMPT_KIND if resource == PROMPT else kind, resource, permission)
        for user, kind, resource, permission in grants_before
    }

    ports = free_ports(REPLICAS).replica_ports(REPLICAS)
    logs = [work / f"replica-{i}.log" for i in range(REPLICAS)]
    records: list[ProcessRecord] = []
    try:
        for port, log in zip(ports, logs, strict=True):
            records.append(
                spawn(
                    log.stem,
                    [sys.executable, *contract.ENTRYPOINT[1:], *contract.COMMAND],
                    log,
                    _kit_env(cluster, db, s3_port, port, work),
                    cwd=REPO,
                )
            )
        for record, port, log in zip(records, ports, logs, strict=True):
            try:
                wait_until(lambda port=port: _healthy(port), what=record.name, timeout=300, record=record)
            except StartupTimeout as exc:
                raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-6000:]}") from exc

        joined = "\n".join(log.read_text(errors="replace") for log in logs)
        for label in ("tracking", "auth"):
            assert joined.count(f"{label} database: MIGRATED from ") == 1, joined[-4000:]
            assert joined.count(f"{label} database: already at") == REPLICAS - 1
        assert "MIGRATED from empty" not in joined
        dumps = sorted((work / "backups").iterdir())
        assert len(dumps) == 2 and all(p.stat().st_size > 0 for p in dumps)
        assert cluster.db_password not in joined and ADMIN_PASSWORD not in joined

        # Every object, read back through the kit's MLflow, equals what the old server held.
        after = _client(
            Path(sys.executable),
            "snapshot",
            work / "after.json",
            _client_env(s3_port, ports[0], "admin", ADMIN_PASSWORD),
        )
        assert after == before

        # Every password, of either hash kind, still logs in; the admin's was not reset.
        for user, password in {**manifest["users"], "admin": ADMIN_PASSWORD}.items():
            assert (
                _http(ports[1], "GET", "/api/2.0/mlflow/experiments/search?max_results=1", (user, password))
                == 200
            )
        with psycopg.connect(
            host="127.0.0.1",
            port=cluster.port,
            user=APP_ROLE,
            password=cluster.db_password,
            dbname=f"{db}_auth",
        ) as conn:
            assert dict(conn.execute("SELECT username, password_hash FROM users").fetchall()) == hashes_before
            stored = set(
                conn.execute(
                    "SELECT u.username, rp.resource_type, rp.resource_pattern, rp.permission "
                    "FROM role_permissions rp JOIN user_role_assignments a ON a.role_id = rp.role_id "
                    "JOIN users u ON u.id = a.user_id"
                ).fetchall()
            )
        # Every grant is stored as its 3.x equivalent (prompts in their own namespace, the deny as
        # DENY), and every non-admin grant answers as it did (admins are never restricted).
        assert stored == {
            (
                user,
                PROMPT_KIND if resource == PROMPT else kind,
                resource,
                "DENY" if permission == "NO_PERMISSIONS" else permission,
            )
            for user, kind, resource, permission in grants_before
        }
        for user, kind, resource, permission in grants_before:
            if user != "admin":
                _check_grant(ports[2], manifest, user, kind, resource, permission)

        # A client of the old release still logs, through the upgraded server.
        logged = _client(
            python, "log", work / "logged.json", _client_env(s3_port, ports[1], "admin", ADMIN_PASSWORD)
        )
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        new_client = MlflowClient(f"http://127.0.0.1:{ports[0]}")
        run = new_client.get_run(logged["run_id"])
        assert run.data.params == {"client": version}
        assert [a.path for a in new_client.list_artifacts(logged["run_id"])] == ["after.txt"]
    finally:
        for record in records:
            stop(record)
