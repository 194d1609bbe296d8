"""What a server holds that `users sync` compares against: users, roles with their grants, the
experiments and registered models grants are expanded to, and the effective default permission.

Read over MLflow 3.17's basic-auth REST API as the admin:
- `GET /api/2.0/mlflow/users/list`: every user, with each user's roles (and their grants);
- `GET /api/3.0/mlflow/roles/list`: every role in every workspace (admin-only, no `workspace`);
- `POST experiments/search` (all lifecycle stages) and `GET registered-models/search`, per workspace
  (header X-MLFLOW-WORKSPACE) when teams name one;
- `GET /api/3.0/mlflow/users/permissions/get?username=<admin>&resource_type=experiment&resource_id=*`:
  MLflow resolves it "the same way the runtime authorization check does"; with no wildcard grant it
  is the server's `default_permission`, which the kit cannot otherwise read over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES_API = "/api/3.0/mlflow/roles/"
USER_PERMISSION_API = "/api/3.0/mlflow/users/permissions/get"
WORKSPACES_API = "/api/3.0/mlflow/workspaces"
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"  # mlflow.utils.workspace_utils.WORKSPACE_HEADER_NAME
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
PAGE_SIZE = 1000


@dataclass(frozen=True)
class RoleGrant:
    id: int
    resource_type: str
    resource_pattern: str
    permission: str


@dataclass(frozen=True)
class Role:
    id: int
    name: str
    workspace: str
    grants: tuple[RoleGrant, ...] = ()


@dataclass(frozen=True)
class User:
    username: str
    is_admin: bool
    role_ids: frozenset[int] = frozenset()


@dataclass
class ServerState:
    users: dict[str, User]
    roles: list[Role]
    # workspace -> [(experiment id, name)], workspace -> [registered model name]
    experiments: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)
    default_permission: str = "NO_PERMISSIONS"
    workspaces_enabled: bool = False
    workspace_names: set[str] = field(default_factory=lambda: {DEFAULT_WORKSPACE})

    def role(self, workspace: str, name: str) -> Role | None:
        return next((r for r in self.roles if r.workspace == workspace and r.name == name), None)


def _role(raw: dict[str, Any]) -> Role:
    grants = tuple(
        RoleGrant(int(p["id"]), str(p["resource_type"]), str(p["resource_pattern"]), str(p["permission"]))
        for p in raw.get("permissions", [])
    )
    return Role(int(raw["id"]), str(raw["name"]), str(raw.get("workspace") or DEFAULT_WORKSPACE), grants)


def _search_all(conn: Any, method: str, endpoint: str, body: dict[str, Any], key: str, workspace: str | None):
    """Every item of a paginated search, in one workspace (header) or the server's default."""
    from lifecycle.client import _error_from_response

    headers = {WORKSPACE_HEADER: workspace} if workspace else {}
    token: str | None = None
    while True:
        page = dict(body, max_results=PAGE_SIZE, **({"page_token": token} if token else {}))
        if method == "GET":
            response = conn.request("GET", endpoint, params=page, headers=headers)
        else:
            response = conn.request("POST", endpoint, json=page, headers=headers, idempotent=True)
        if not response.ok:
            raise _error_from_response(response, conn.endpoint_path(endpoint), method)
        data = response.json() if response.content else {}
        yield from data.get(key, [])
        token = data.get("next_page_token") or None
        if not token:
            return


def workspace_names(conn: Any) -> set[str] | None:
    """The server's workspaces, or None when it runs without --enable-workspaces (the workspace
    API then answers 503, mlflow/server/handlers.py `_disable_if_workspaces_disabled`)."""
    response = conn.request("GET", WORKSPACES_API)
    if response.status_code != 200:
        return None
    return {str(w["name"]) for w in response.json().get("workspaces", [])}


def default_permission(conn: Any) -> str:
    """The permission a user without any grant gets on an experiment (the admin, resolved as a
    plain user: admins bypass checks at request time, not in this resolution)."""
    result = conn.call(
        "GET",
        USER_PERMISSION_API,
        params={"username": conn.username, "resource_type": "experiment", "resource_id": "*"},
    )
    return str(result.get("permission") or "NO_PERMISSIONS")


def read_state(conn: Any, workspaces: set[str], *, with_objects: bool = True) -> ServerState:
    """The server's users, roles and (unless `with_objects` is false) the objects in `workspaces`
    (the default workspace is always read)."""
    users: dict[str, User] = {}
    for raw in conn.call("GET", "users/list").get("users", []):
        role_ids = frozenset(int(r["id"]) for r in raw.get("roles", []))
        users[str(raw["username"])] = User(str(raw["username"]), bool(raw.get("is_admin")), role_ids)
    roles = [_role(r) for r in conn.call("GET", ROLES_API + "list").get("roles", [])]
    state = ServerState(users, roles, default_permission=default_permission(conn))
    names = workspace_names(conn) if workspaces else None
    if names is not None:
        state.workspaces_enabled, state.workspace_names = True, names
    if not with_objects:
        return state
    for workspace in sorted({DEFAULT_WORKSPACE, *workspaces} & state.workspace_names):
        header = workspace if state.workspaces_enabled else None
        state.experiments[workspace] = [
            (str(e["experiment_id"]), str(e["name"]))
            for e in _search_all(
                conn, "POST", "experiments/search", {"view_type": "ALL"}, "experiments", header
            )
        ]
        state.models[workspace] = [
            str(m["name"])
            for m in _search_all(conn, "GET", "registered-models/search", {}, "registered_models", header)
        ]
    return state
