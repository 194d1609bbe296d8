"""Upgrading an auth database written by an older MLflow: the steps MLflow's own migrations skip
or get wrong in the kit's layout (tracking + registry in one database, basic-auth in another).

Run under the migration lock (server/database.py `prepare_databases`): `inspect_auth_database`
(reads only, may refuse) and `record_pending_steps` ahead of the schema migrations — with the
backup (server/backup.py) between them — and `after_migrations` once both schemas are at head.

1. Old revision table. Before MLflow 3.6 the auth schema's revision lived in `alembic_version`;
   3.6+ reads `alembic_version_auth`, finds none, and stamps the *initial* revision — right for
   2.x (only the initial revision existed) but a re-run of migrations for anything later. The
   revision found in `alembic_version` is carried over to `alembic_version_auth`, so the report
   and the migration both start from the real revision.
2. Explicit denies. Migration e5f6a7b8c9d0 drops every per-resource `NO_PERMISSIONS` row. With a
   default permission that grants access, a user denied a resource in 2.x could then read it.
   Such rows are refused before anything changes, unless MLFLOW_STACK_AUTH_LEGACY_DENIES says
   `convert` (re-created as 3.x `DENY` grants, same effect) or `drop` (let them go).
3. Prompt grants. Migration f1a2b3c4d5e6 re-labels grants on prompts from `registered_model` to
   `prompt`, but only when the registry's tables are in the auth database; in the kit's layout it
   changes nothing and a user with READ on a prompt gets 403. The kit does it across the two.

Steps 2 (convert) and 3 are recorded as pending in `mlflow_stack_upgrade_steps` before the schema
migration and done (and un-recorded) in one transaction after it, so a replica that dies in
between leaves them for the next start instead of losing them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from server import contract
from server.database import DatabaseUnavailable, _connect
from server.settings import ServerSettings

_logger = logging.getLogger("mlflow_stack.server")

LEGACY_VERSION_TABLE = "alembic_version"
VERSION_TABLE = "alembic_version_auth"
# MLflow's auth revisions that matter here (mlflow/server/auth/db/migrations/versions).
ROLES_BACKFILL_REVISION = "e5f6a7b8c9d0"  # legacy per-resource tables -> role_permissions
PROMPT_RELABEL_REVISION = "f1a2b3c4d5e6"  # registered_model -> prompt, same-database only
PENDING_TABLE = "mlflow_stack_upgrade_steps"
STEP_CONVERT_DENIES = "convert-legacy-denies"
STEP_RELABEL_PROMPTS = "relabel-prompt-grants"
PROMPT_TAG = "mlflow.prompt.is_prompt"
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
LEGACY_DENY = "NO_PERMISSIONS"

# Legacy per-resource tables: (table, resource type in role_permissions, SQL for the resource key).
# The keys are those migration e5f6a7b8c9d0 writes (a scorer's name URL-quoted, see _resource_key).
_LEGACY_TABLES: tuple[tuple[str, str, str], ...] = (
    ("experiment_permissions", "experiment", "experiment_id"),
    ("registered_model_permissions", "registered_model", "name"),
    ("scorer_permissions", "scorer", "experiment_id || '/' || scorer_name"),
    ("gateway_secret_permissions", "gateway_secret", "secret_id"),
    ("gateway_endpoint_permissions", "gateway_endpoint", "endpoint_id"),
    ("gateway_model_definition_permissions", "gateway_model_definition", "model_definition_id"),
)


class UpgradeRefused(DatabaseUnavailable):
    """The upgrade would change who can see what; nothing was migrated."""


@dataclass(frozen=True)
class LegacyDeny:
    username: str
    user_id: int
    resource_type: str
    resource: str
    workspace: str


@dataclass(frozen=True)
class AuthState:
    revision: str | None  # None: an empty (new) auth database
    legacy_table: bool  # the revision was read from alembic_version (MLflow < 3.6)


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    return {name for (name,) in rows}


def _auth_revisions() -> list[str]:
    """Every auth revision MLflow ships, oldest first."""
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(""))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def auth_head() -> str:
    return _auth_revisions()[-1]


def read_auth_state(conn: psycopg.Connection) -> AuthState:
    tables = _tables(conn)
    if VERSION_TABLE in tables:
        query = sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(VERSION_TABLE))
        row = conn.execute(query).fetchone()
        return AuthState(row[0] if row else None, legacy_table=False)
    if "users" in tables and LEGACY_VERSION_TABLE in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return AuthState(row[0] if row else None, legacy_table=True)
    return AuthState(None, legacy_table=False)


def _before(revision: str | None, target: str, order: list[str]) -> bool:
    """True when a database at `revision` has not yet run migration `target`."""
    return revision is None or order.index(revision) < order.index(target)


def _resource_key(resource_type: str, key: str) -> str:
    """A scorer's grant is keyed `<experiment id>/<URL-quoted scorer name>` (a name may hold '/');
    the experiment id never does, so the first '/' splits the two."""
    if resource_type != "scorer":
        return key
    experiment_id, _, name = key.partition("/")
    return f"{experiment_id}/{quote(name, safe='')}"


def legacy_denies(conn: psycopg.Connection) -> list[LegacyDeny]:
    """Per-resource NO_PERMISSIONS rows in the legacy tables (what e5f6a7b8c9d0 drops)."""
    tables = _tables(conn)
    found: list[LegacyDeny] = []
    for table, resource_type, key in _LEGACY_TABLES:
        if table not in tables:
            continue
        columns = {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
            ).fetchall()
        }
        # Only registered_model_permissions has a workspace column (since 2ed73881770d); the
        # migration puts every other legacy grant in the default workspace.
        workspace = sql.SQL("p.workspace") if "workspace" in columns else sql.Literal(DEFAULT_WORKSPACE)
        query = sql.SQL(
            "SELECT u.username, u.id, ({key})::text, {workspace} "
            "FROM {table} p JOIN users u ON u.id = p.user_id WHERE p.permission = %s ORDER BY u.username, 3"
        ).format(key=sql.SQL(key), workspace=workspace, table=sql.Identifier(table))
        for username, user_id, resource, ws in conn.execute(query, (LEGACY_DENY,)).fetchall():
            found.append(
                LegacyDeny(username, user_id, resource_type, _resource_key(resource_type, resource), ws)
            )
    return found


def _refusal(denies: list[LegacyDeny], default_permission: str) -> str:
    setting = contract.AUTH_LEGACY_DENIES.name
    lines = [
        f"auth database: {len(denies)} explicit deny grant(s) (NO_PERMISSIONS) would be dropped by the "
        f"upgrade, and default_permission is {default_permission}, so these users would gain access:",
        *(
            f"  - user {d.username!r}: {d.resource_type} {d.resource!r} (workspace {d.workspace})"
            for d in denies
        ),
        "Nothing was migrated. Choose, then start again:",
        f"  {setting}=convert  keep each as a DENY grant of MLflow 3 (same effect; recommended)",
        f"  {setting}=drop     let them go (the users get default_permission on those resources)",
    ]
    return "\n".join(lines)


def _ensure_pending_table(conn: psycopg.Connection) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            "(step text PRIMARY KEY, detail jsonb, recorded_at timestamptz DEFAULT now())"
        ).format(sql.Identifier(PENDING_TABLE))
    )


@dataclass(frozen=True)
class UpgradePlan:
    state: AuthState
    pending: tuple[str, ...]  # steps to record before the schema migrations
    has_users: bool  # an auth database with data in it (not a new one)
    denies: tuple[LegacyDeny, ...] = ()  # to keep as DENY grants (policy 'convert')


def inspect_auth_database(settings: ServerSettings) -> UpgradePlan:
    """Read the real auth revision and what the migrations would lose; refuse (UpgradeRefused)
    before anything changes. Reads only."""
    order = _auth_revisions()
    with _connect(settings, settings.auth_db_name) as conn:
        state = read_auth_state(conn)
        if state.revision is not None and state.revision not in order:
            raise UpgradeRefused(
                f"auth database {settings.auth_db_name!r} is at revision {state.revision!r}, which this "
                "MLflow does not know (a newer MLflow wrote it, or it is not a basic-auth database); "
                "run the image that wrote it, or restore the backup taken before the upgrade"
            )
        if "users" not in _tables(conn):
            return UpgradePlan(state, (), has_users=False)  # a new auth database: nothing to carry over
        pending: list[str] = []
        to_convert: list[LegacyDeny] = []
        if _before(state.revision, ROLES_BACKFILL_REVISION, order):
            denies = legacy_denies(conn)
            policy = settings.auth_legacy_denies
            if denies and policy == "refuse" and settings.default_permission != LEGACY_DENY:
                raise UpgradeRefused(_refusal(denies, settings.default_permission))
            if denies and policy == "convert":
                pending.append(STEP_CONVERT_DENIES)
                to_convert = denies
            elif denies:
                _logger.warning(
                    "auth database: %d NO_PERMISSIONS grant(s) are dropped by the upgrade (%s=%s, "
                    "default_permission=%s)",
                    len(denies),
                    contract.AUTH_LEGACY_DENIES.name,
                    policy,
                    settings.default_permission,
                )
        if _before(state.revision, PROMPT_RELABEL_REVISION, order):
            pending.append(STEP_RELABEL_PROMPTS)
    return UpgradePlan(state, tuple(pending), has_users=True, denies=tuple(to_convert))


def record_pending_steps(settings: ServerSettings, plan: UpgradePlan) -> None:
    """Before the schema migrations: record the steps to do after them, and carry a pre-3.6
    revision over to the table MLflow 3.6+ reads — one transaction."""
    if not plan.pending and not plan.state.legacy_table:
        return
    with _connect(settings, settings.auth_db_name) as conn, conn.transaction():
        if plan.pending:
            _ensure_pending_table(conn)
            for step in plan.pending:
                # The denies themselves are recorded: a later MLflow may drop the legacy tables.
                detail = [asdict(d) for d in plan.denies] if step == STEP_CONVERT_DENIES else None
                conn.execute(
                    sql.SQL("INSERT INTO {} (step, detail) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                        sql.Identifier(PENDING_TABLE)
                    ),
                    (step, Jsonb(detail)),
                )
        if plan.state.legacy_table and plan.state.revision is not None:
            _logger.info(
                "auth database: revision %s found in %s (the layout of MLflow < 3.6); carried over to %s",
                plan.state.revision,
                LEGACY_VERSION_TABLE,
                VERSION_TABLE,
            )
            # What MLflow's own legacy stamp does, with the real revision instead of the first one.
            conn.execute(
                sql.SQL("CREATE TABLE {} (version_num varchar(32) NOT NULL PRIMARY KEY)").format(
                    sql.Identifier(VERSION_TABLE)
                )
            )
            conn.execute(
                sql.SQL("INSERT INTO {} (version_num) VALUES (%s)").format(sql.Identifier(VERSION_TABLE)),
                (plan.state.revision,),
            )


def _pending_steps(conn: psycopg.Connection) -> dict[str, object]:
    """Recorded step -> its detail."""
    if PENDING_TABLE not in _tables(conn):
        return {}
    query = sql.SQL("SELECT step, detail FROM {}").format(sql.Identifier(PENDING_TABLE))
    return dict(conn.execute(query).fetchall())


def _prompt_names(settings: ServerSettings) -> list[tuple[str, str]]:
    """(workspace, name) of every prompt in the registry (tracking database)."""
    with _connect(settings, settings.db_name) as conn:
        rows = conn.execute(
            "SELECT workspace, name FROM registered_model_tags WHERE key = %s AND lower(value) = 'true'",
            (PROMPT_TAG,),
        ).fetchall()
    return [(ws, name) for ws, name in rows]


def _convert_denies(conn: psycopg.Connection, denies: list[LegacyDeny]) -> int:
    """Each legacy deny as a DENY grant on the user's own role — the role migration e5f6a7b8c9d0
    hangs that user's other grants on (`__user_<id>__` in the grant's workspace)."""
    for deny in denies:
        role_name = f"__user_{deny.user_id}__"
        conn.execute(
            "INSERT INTO roles (name, workspace) VALUES (%s, %s) ON CONFLICT (workspace, name) DO NOTHING",
            (role_name, deny.workspace),
        )
        row = conn.execute(
            "SELECT id FROM roles WHERE workspace = %s AND name = %s", (deny.workspace, role_name)
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO user_role_assignments (user_id, role_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (deny.user_id, row[0]),
        )
        conn.execute(
            "INSERT INTO role_permissions (role_id, resource_type, resource_pattern, permission) "
            "VALUES (%s, %s, %s, 'DENY') ON CONFLICT (role_id, resource_type, resource_pattern) "
            "DO UPDATE SET permission = 'DENY'",
            (row[0], deny.resource_type, deny.resource),
        )
    return len(denies)


def _relabel_prompt_grants(conn: psycopg.Connection, prompts: list[tuple[str, str]]) -> int:
    """Migration f1a2b3c4d5e6's UPDATE, with the prompt list read from the other database."""
    if not prompts:
        return 0
    workspaces = [ws for ws, _ in prompts]
    names = [name for _, name in prompts]
    cursor = conn.execute(
        "UPDATE role_permissions rp SET resource_type = 'prompt' "
        "FROM roles r, unnest(%s::text[], %s::text[]) AS p(workspace, name) "
        "WHERE r.id = rp.role_id AND r.workspace = p.workspace AND rp.resource_pattern = p.name "
        "AND rp.resource_type = 'registered_model' AND rp.resource_pattern <> '*' "
        # A grant already in the prompt namespace for the same role and name wins.
        "AND NOT EXISTS (SELECT 1 FROM role_permissions q WHERE q.role_id = rp.role_id "
        "AND q.resource_type = 'prompt' AND q.resource_pattern = rp.resource_pattern)",
        (workspaces, names),
    )
    return cursor.rowcount


def after_migrations(settings: ServerSettings) -> list[str]:
    """Do the pending steps, all in one transaction with their removal; returns what was done."""
    done: list[str] = []
    with _connect(settings, settings.auth_db_name) as conn:
        pending = _pending_steps(conn)
        if not pending:
            return done
        prompts = _prompt_names(settings) if STEP_RELABEL_PROMPTS in pending else []
        with conn.transaction():
            if STEP_CONVERT_DENIES in pending:
                recorded = pending[STEP_CONVERT_DENIES]
                denies = [LegacyDeny(**d) for d in recorded] if isinstance(recorded, list) else []
                converted = _convert_denies(conn, denies)
                done.append(f"{converted} legacy NO_PERMISSIONS grant(s) kept as DENY grants")
            if STEP_RELABEL_PROMPTS in pending:
                moved = _relabel_prompt_grants(conn, prompts)
                done.append(f"{moved} grant(s) on prompts moved from registered_model to prompt")
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(PENDING_TABLE)))
    for line in done:
        _logger.info("auth database: %s", line)
    return done
