"""Carrying out a plan over the basic-auth REST API as the admin, change by change, in plan order.

Every change is one idempotent-in-effect call; the first failure stops the run (what was done is
reported, and the next sync plans only what is left). Roles created in this run are looked up by
(workspace, name) for the grants and memberships that follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lifecycle.users_passwords import PasswordStore, generate_password
from lifecycle.users_plan import ROLE_DESCRIPTION, Change
from lifecycle.users_state import ROLES_API, WORKSPACES_API, ServerState


@dataclass
class ApplyResult:
    done: list[Change] = field(default_factory=list)
    # user -> where its password is (path or ARN; the location, never the value)
    passwords: dict[str, str] = field(default_factory=dict)


def apply_changes(
    conn: Any, changes: list[Change], state: ServerState, passwords: PasswordStore | None
) -> ApplyResult:
    result = ApplyResult()
    role_ids = {(r.workspace, r.name): r.id for r in state.roles}
    for change in changes:
        _apply_one(conn, change, role_ids, passwords, result)
        result.done.append(change)
    return result


def _apply_one(
    conn: Any,
    change: Change,
    role_ids: dict[tuple[str, str], int],
    passwords: PasswordStore | None,
    result: ApplyResult,
) -> None:
    action = change.action
    if action == "create-workspace":
        body = {"name": change.resource, "description": "created by `mlflow-stack users sync`"}
        conn.call("POST", WORKSPACES_API, json=body)
    elif action == "create-user":
        if passwords is None:
            raise AssertionError("a plan that creates users needs a password store")
        password = generate_password()
        result.passwords[str(change.user)] = passwords.store(str(change.user), password)
        conn.call("POST", "users/create", json={"username": change.user, "password": password})
    elif action == "create-role":
        workspace, name = change.role or ("", "")
        body = {"workspace": workspace, "name": name, "description": ROLE_DESCRIPTION}
        role_ids[change.role] = int(conn.call("POST", ROLES_API + "create", json=body)["role"]["id"])
    elif action == "assign":
        conn.call(
            "POST", ROLES_API + "assign", json={"username": change.user, "role_id": role_ids[change.role]}
        )
    elif action == "grant":
        conn.call(
            "POST",
            ROLES_API + "permissions/add",
            json={
                "role_id": role_ids[change.role],
                "resource_type": change.resource_type,
                "resource_pattern": change.resource,
                "permission": change.permission,
            },
        )
    elif action == "update-grant":
        conn.call(
            "PATCH",
            ROLES_API + "permissions/update",
            json={"role_permission_id": change.grant_id, "permission": change.permission},
        )
    elif action == "revoke":
        conn.call("DELETE", ROLES_API + "permissions/remove", json={"role_permission_id": change.grant_id})
    elif action == "unassign":
        conn.call("DELETE", ROLES_API + "unassign", json={"username": change.user, "role_id": change.role_id})
    elif action == "delete-role":
        conn.call("DELETE", ROLES_API + "delete", json={"role_id": change.role_id})
    elif action == "delete-user":
        conn.call("DELETE", "users/delete", json={"username": change.user})
    else:
        raise AssertionError(f"unknown change {action}")
