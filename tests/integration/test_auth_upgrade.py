"""An auth database in the pre-3.6 layout, upgraded by the kit's entrypoint on real PostgreSQL.

The old-schema rows are seeded directly (MLflow 3.17's own initial auth migration, with its
revision moved to `alembic_version` as MLflow < 3.6 kept it): an admin with an old password, a
user with READ on a prompt, a user explicitly denied (NO_PERMISSIONS) an experiment under
default_permission READ. The kit must refuse that upgrade until told what to do with the deny,
then carry every grant over — the prompt grant across the kit's two databases — report the real
starting revision, back both databases up first, and make the admin secret authoritative.
(The same, on databases written by a real MLflow 2.x server: tests/upgrade/.)
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from local.postgres import POSTGRES_BIN_PATH
from local.processes import spawn, stop, wait_until
from local.secret_files import generate_password, write_secret
from server import contract
from tests.postgres_helper import APP_ROLE, REPO, Cluster, running_cluster

pytestmark = pytest.mark.integration

DB = "mlflow_legacy_auth_layout"
AUTH_DB = f"{DB}_auth"
LEGACY_AUTH_REVISION = "8606fa83a998"
PROMPT = "greeting-prompt"
MODEL = "churn-model"
OLD_ADMIN_PASSWORD = "old-admin-password-2x"  # noqa: S105 - a throwaway test credential


@dataclass
class Seeded:
    experiment_id: str
    passwords: dict[str, str]


def _app_uri(cluster: Cluster, database: str) -> str:
    password = urllib.parse.quote(cluster.db_password, safe="")
    return f"postgresql+psycopg://{APP_ROLE}:{password}@127.0.0.1:{cluster.port}/{database}"


def _as_app(cluster: Cluster, database: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user=APP_ROLE,
        password=cluster.db_password,
        dbname=database,
        autocommit=True,
    )


def _seed(cluster: Cluster) -> Seeded:
    from mlflow.entities.model_registry import RegisteredModelTag
    from mlflow.server.auth.db import utils as auth_db_utils
    from mlflow.store.db.utils import create_sqlalchemy_engine
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from werkzeug.security import generate_password_hash

    cluster.bootstrap(DB)
    tracking = TrackingStore(_app_uri(cluster, DB), "mlflow-artifacts:/")
    experiment_id = tracking.create_experiment("denied-in-2x")
    registry = RegistryStore(_app_uri(cluster, DB))
    registry.create_registered_model(PROMPT, tags=[RegisteredModelTag("mlflow.prompt.is_prompt", "true")])
    registry.create_registered_model(MODEL)
    tracking.engine.dispose()
    registry.engine.dispose()

    engine = create_sqlalchemy_engine(_app_uri(cluster, AUTH_DB))
    auth_db_utils.migrate(engine, LEGACY_AUTH_REVISION)
    engine.dispose()
    passwords = {"admin": OLD_ADMIN_PASSWORD, "reader": generate_password(), "denied": generate_password()}
    with _as_app(cluster, AUTH_DB) as conn:
        conn.execute("ALTER TABLE alembic_version_auth RENAME TO alembic_version")
        conn.execute(
            "ALTER TABLE alembic_version RENAME CONSTRAINT alembic_version_auth_pkc TO alembic_version_pkc"
        )
        for name, method in (("admin", "scrypt"), ("reader", "pbkdf2:sha256"), ("denied", "scrypt")):
            conn.execute(
                "INSERT INTO users (username, password_hash, is_admin) VALUES (%s, %s, %s)",
                (name, generate_password_hash(passwords[name], method=method), name == "admin"),
            )
        grants = [
            ("registered_model_permissions", "name", PROMPT, "reader", "READ"),
            ("registered_model_permissions", "name", MODEL, "reader", "EDIT"),
            ("experiment_permissions", "experiment_id", experiment_id, "denied", "NO_PERMISSIONS"),
        ]
        for table, column, resource, user, permission in grants:
            conn.execute(
                f"INSERT INTO {table} ({column}, user_id, permission) "  # noqa: S608 - fixed names
                "SELECT %s, id, %s FROM users WHERE username = %s",
                (resource, permission, user),
            )
    return Seeded(experiment_id, passwords)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("mlflow-stack-auth-upgrade-") as c:
        yield c


@pytest.fixture(scope="module")
def seeded(cluster: Cluster) -> Seeded:
    return _seed(cluster)


def _env(cluster: Cluster, port: int, admin_file: Path, **extra: str) -> dict[str, str]:
    env = cluster.replica_env(DB, port)
    env[contract.ADMIN_PASSWORD.name + contract.FILE_SUFFIX] = str(admin_file)
    env[contract.DEFAULT_PERMISSION.name] = "READ"
    env.update(extra)
    return env


def _auth_tables(cluster: Cluster) -> dict[str, list[tuple[object, ...]]]:
    with _as_app(cluster, AUTH_DB) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            ).fetchall()
        ]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}  # noqa: S608


def test_explicit_denies_stop_the_upgrade_before_anything_changes(
    cluster: Cluster,
    seeded: Seeded,
    pick_free_ports,  # type: ignore[no-untyped-def]
) -> None:
    admin_file = cluster.state_dir / "secrets" / "legacy_admin_password"
    write_secret(admin_file, generate_password())
    backups = cluster.state_dir / "refused-backups"
    before = _auth_tables(cluster)
    env = _env(
        cluster,
        pick_free_ports(1).replica_base,
        admin_file,
        **{contract.BACKUP_DIR.name: str(backups), contract.PG_DUMP.name: str(POSTGRES_BIN_PATH / "pg_dump")},
    )
    done = subprocess.run(
        [sys.executable, *contract.ENTRYPOINT[1:], *contract.COMMAND],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"user 'denied': experiment '{seeded.experiment_id}'" in done.stderr
    assert f"{contract.AUTH_LEGACY_DENIES.name}=convert" in done.stderr
    assert "Nothing was migrated" in done.stderr
    # Not a row, table or revision changed, and no backup was needed for a refusal.
    assert _auth_tables(cluster) == before
    assert "alembic_version_auth" not in before and not backups.exists()


def _status(port: int, path: str, user: str, password: str) -> int:
    return requests.get(f"http://127.0.0.1:{port}{path}", auth=(user, password), timeout=30).status_code


@pytest.fixture(scope="module")
def upgraded(cluster: Cluster, seeded: Seeded, pick_free_ports) -> Iterator[tuple[int, Path, Path, Path]]:  # type: ignore[no-untyped-def]
    """One replica started with the deny kept as DENY and a new admin secret: (port, admin secret
    file, log, backup dir), served for the module's remaining tests."""
    port = pick_free_ports(1).replica_base
    admin_file = cluster.state_dir / "secrets" / "legacy_admin_password"
    write_secret(admin_file, generate_password())
    backups = cluster.state_dir / "backups"
    log = cluster.state_dir / "legacy-upgrade.log"
    env = _env(
        cluster,
        port,
        admin_file,
        **{
            contract.AUTH_LEGACY_DENIES.name: "convert",
            contract.AUTH_CACHE_TTL_SECONDS.name: "0",
            contract.BACKUP_DIR.name: str(backups),
            contract.PG_DUMP.name: str(POSTGRES_BIN_PATH / "pg_dump"),
        },
    )
    record = spawn(
        "legacy-upgrade", [sys.executable, *contract.ENTRYPOINT[1:], *contract.COMMAND], log, env, cwd=REPO
    )
    try:
        wait_until(
            lambda: _status(port, "/health", "-", "-") == 200, what="replica", timeout=240, record=record
        )
        yield port, admin_file, log, backups
    finally:
        stop(record)


def test_the_real_starting_revision_is_reported_and_both_databases_are_dumped_first(
    cluster: Cluster,
    upgraded: tuple[int, Path, Path, Path],
) -> None:
    _, _, log, backups = upgraded
    text = log.read_text(errors="replace")
    assert f"auth database: MIGRATED from {LEGACY_AUTH_REVISION} to f1a2b3c4d5e6" in text, text[-3000:]
    assert "MIGRATED from empty" not in text
    assert f"revision {LEGACY_AUTH_REVISION} found in alembic_version" in text
    dumps = sorted(backups.iterdir())
    assert sorted(p.name.split("-")[-1] for p in dumps) == sorted([f"{AUTH_DB}.dump", f"{DB}.dump"])
    for dump in dumps:
        # A dump pg_restore can read, holding the pre-upgrade auth revision table.
        listing = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_restore"), "--list", str(dump)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "TABLE public alembic_version" in listing
        assert "TABLE public alembic_version_auth" not in listing
    assert cluster.db_password not in text


def test_grants_on_prompts_survive_the_split_databases(
    cluster: Cluster,
    seeded: Seeded,
    upgraded: tuple[int, Path, Path, Path],
) -> None:
    port = upgraded[0]
    reader = ("reader", seeded.passwords["reader"])
    assert _status(port, f"/api/2.0/mlflow/registered-models/get?name={PROMPT}", *reader) == 200
    # EDIT on the ordinary model stayed an ordinary registered-model grant: reader may rename-tag it.
    response = requests.post(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/set-tag",
        json={"name": MODEL, "key": "owner", "value": "reader"},
        auth=reader,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    with _as_app(cluster, AUTH_DB) as conn:
        grants = conn.execute(
            "SELECT rp.resource_type, rp.resource_pattern, rp.permission FROM role_permissions rp "
            "JOIN user_role_assignments a ON a.role_id = rp.role_id JOIN users u ON u.id = a.user_id "
            "WHERE u.username = 'reader' ORDER BY 2"
        ).fetchall()
    assert grants == [("registered_model", MODEL, "EDIT"), ("prompt", PROMPT, "READ")]


def _dicts(value: object) -> Iterator[dict[str, object]]:
    """Every JSON object nested in `value`."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def test_2x_permission_endpoints_are_gone_and_the_documented_3x_ones_answer(
    seeded: Seeded, upgraded: tuple[int, Path, Path, Path]
) -> None:
    """docs/upgrading.md's endpoint mapping, on the upgraded grants."""
    port = upgraded[0]
    admin = ("admin", upgraded[1].read_text(encoding="utf-8"))
    old = f"/api/2.0/mlflow/registered-models/permissions/get?name={PROMPT}&username=reader"
    assert _status(port, old, *admin) == 404
    # Prompts are not served by the per-user endpoints (400); a user's grants list shows them.
    listed = requests.get(
        f"http://127.0.0.1:{port}/api/3.0/mlflow/users/permissions/list?username=reader",
        auth=admin,
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    assert {"resource_type": "prompt", "resource_pattern": PROMPT, "permission": "READ"}.items() <= next(
        row for row in _dicts(listed.json()) if row.get("resource_type") == "prompt"
    ).items()
    model = (
        "/api/3.0/mlflow/users/permissions/get?username=reader&resource_type=registered_model"
        f"&resource_id={MODEL}"
    )
    response = requests.get(f"http://127.0.0.1:{port}{model}", auth=admin, timeout=30)
    assert response.status_code == 200 and response.json()["permission"] == "EDIT", response.text
    denied = (
        "/api/3.0/mlflow/users/permissions/get?username=denied&resource_type=experiment"
        f"&resource_id={seeded.experiment_id}"
    )
    assert (
        requests.get(f"http://127.0.0.1:{port}{denied}", auth=admin, timeout=30).json()["permission"]
        == "DENY"
    )


def test_a_user_denied_in_2x_is_still_denied(seeded: Seeded, upgraded: tuple[int, Path, Path, Path]) -> None:
    port = upgraded[0]
    path = f"/api/2.0/mlflow/experiments/get?experiment_id={seeded.experiment_id}"
    assert _status(port, path, "denied", seeded.passwords["denied"]) == 403
    # default_permission READ: anyone else may read it, so the deny is what stops 'denied'.
    assert _status(port, path, "reader", seeded.passwords["reader"]) == 200


def test_the_admin_secret_is_authoritative_and_rotates(
    cluster: Cluster,
    seeded: Seeded,
    upgraded: tuple[int, Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from server import auth_upgrade
    from server.admin_password import apply_admin_secret
    from server.database import PASSFILE_ENV, write_passfile
    from server.settings import load_settings

    port, admin_file, _, _ = upgraded
    whoami = "/api/2.0/mlflow/users/get?username=reader"
    current = admin_file.read_text(encoding="utf-8")
    # The start replaced the 2.x admin password with the secret's.
    assert _status(port, whoami, "admin", current) == 200
    assert _status(port, whoami, "admin", OLD_ADMIN_PASSWORD) == 401

    # Rotation: a new value in the secret; the next start applies it under the lock, with the same
    # call as here. The running replica checks the stored hash (its credential cache is off here;
    # with the cache, a worker keeps accepting the old password for auth_cache_ttl_seconds).
    store = SqlAlchemyStore()
    store.init_db(_app_uri(cluster, AUTH_DB))
    rotated = generate_password()
    assert apply_admin_secret(store, "admin", rotated) == [
        "password reset to the stack's secret (the previous password no longer works)"
    ]
    assert _status(port, whoami, "admin", rotated) == 200
    assert _status(port, whoami, "admin", current) == 401
    assert apply_admin_secret(store, "admin", rotated) == []  # already in step: nothing changes
    store.engine.dispose()

    # The upgrade's own steps ran once: nothing is left pending for the next start.
    settings = load_settings(_env(cluster, port, admin_file))
    monkeypatch.setenv(PASSFILE_ENV, str(write_passfile(settings, cluster.state_dir)))
    plan = auth_upgrade.inspect_auth_database(settings)
    assert (plan.state.revision, plan.pending) == ("f1a2b3c4d5e6", ())
    assert auth_upgrade.after_migrations(settings) == []
