"""Planning `users sync`: what changes a declaration and a server state give, with no server.

The local-stack test (tests/integration/test_users_sync_local.py) proves the plan's calls work on
MLflow; these pin the planning rules: expansion of patterns per object, the highest access wins,
prunes only with --prune and only of what the declaration managed, and the refusals.
"""

from __future__ import annotations

import pytest

from lifecycle.users_declaration import parse
from lifecycle.users_plan import MANAGED_ROLE, PlanRefused, build_plan
from lifecycle.users_state import Role, RoleGrant, ServerState, User

ADMIN = "admin"


def _declaration(**team_overrides: object) -> object:
    search = {
        "members": ["alice"],
        "grants": [
            {"experiments": "/search/", "access": "reader"},
            {"experiments": "/search/ranking/", "access": "editor"},
            {"models": "search-*", "access": "manager"},
        ],
        **team_overrides,
    }
    return parse({"users": ["alice", "bob"], "teams": {"search": search}})


def _state(**overrides: object) -> ServerState:
    values: dict = {
        "users": {ADMIN: User(ADMIN, True)},
        "roles": [],
        "experiments": {
            "default": [("1", "/search/ranking/v1"), ("2", "/search/misc"), ("3", "/vision/det")]
        },
        "models": {"default": ["search-ranker", "vision-det"]},
    }
    values.update(overrides)
    return ServerState(**values)


def _in_sync_state() -> ServerState:
    managed = Role(10, MANAGED_ROLE, "default")
    team = Role(
        11,
        "team:search",
        "default",
        (
            RoleGrant(1, "experiment", "1", "EDIT"),
            RoleGrant(2, "experiment", "2", "READ"),
            RoleGrant(3, "registered_model", "search-ranker", "MANAGE"),
        ),
    )
    users = {
        ADMIN: User(ADMIN, True),
        "alice": User("alice", False, frozenset({10, 11})),
        "bob": User("bob", False, frozenset({10})),
    }
    return _state(users=users, roles=[managed, team])


def test_a_new_server_gets_users_roles_memberships_and_one_grant_per_matching_object() -> None:
    plan = build_plan(_declaration(), _state(), ADMIN)
    described = [c.describe() for c in plan.changes]
    assert described[:2] == [
        "create user alice (generated password, stored, never printed)",
        "create user bob (generated password, stored, never printed)",
    ]
    grants = {(c.resource_type, c.resource): c.permission for c in plan.changes if c.action == "grant"}
    # /search/ranking/v1 matches both experiment grants: the higher access wins.
    assert grants == {
        ("experiment", "1"): "EDIT",
        ("experiment", "2"): "READ",
        ("registered_model", "search-ranker"): "MANAGE",
    }
    assert not plan.prunable


def test_a_server_in_the_declared_state_plans_nothing() -> None:
    plan = build_plan(_declaration(), _in_sync_state(), ADMIN)
    assert plan.changes == [] and plan.warnings == []


def test_new_objects_get_grants_and_changed_access_is_updated_in_place() -> None:
    state = _in_sync_state()
    state.experiments["default"].append(("4", "/search/new-one"))
    plan = build_plan(_declaration(grants=[{"experiments": "/search/", "access": "manager"}]), state, ADMIN)
    by_action = {(c.action, c.resource) for c in plan.applicable(prune=False)}
    assert by_action == {("update-grant", "1"), ("update-grant", "2"), ("grant", "4")}
    assert {(c.action, c.resource) for c in plan.prunable} == {("revoke", "search-ranker")}


def test_prune_removes_only_what_the_declaration_managed() -> None:
    state = _in_sync_state()
    state.users["hand-made"] = User("hand-made", False)  # not created by users sync
    state.users["other-admin"] = User("other-admin", True, frozenset({10}))
    state.roles.append(Role(12, "team:old", "default", (RoleGrant(9, "experiment", "3", "READ"),)))
    state.roles.append(Role(13, "by-hand-role", "default"))
    declaration = parse(
        {
            "users": ["alice"],
            "teams": {
                "search": {"members": ["alice"], "grants": [{"experiments": "/search/", "access": "reader"}]}
            },
        }
    )
    plan = build_plan(declaration, state, ADMIN)
    pruned = {(c.action, c.user or (c.role[1] if c.role else None), c.resource) for c in plan.prunable}
    assert pruned == {
        ("delete-user", "bob", None),
        ("delete-role", "team:old", None),
        ("revoke", "team:search", "search-ranker"),
    }
    assert all(c.prune for c in plan.changes if c.action in ("delete-user", "delete-role", "revoke"))


def test_a_member_removed_from_a_team_is_unassigned_only_with_prune() -> None:
    state = _in_sync_state()
    state.users["bob"] = User("bob", False, frozenset({10, 11}))
    plan = build_plan(_declaration(), state, ADMIN)
    [change] = plan.changes
    assert (change.action, change.user, change.prune) == ("unassign", "bob", True)
    assert plan.applicable(prune=False) == []


def test_grants_only_mode_creates_no_users_and_defers_their_memberships() -> None:
    plan = build_plan(_declaration(), _state(), ADMIN, create_users=False)
    assert plan.skipped_users == ["alice", "bob"]
    assert not [c for c in plan.changes if c.user]
    assert {c.action for c in plan.changes} == {"create-role", "grant"}


@pytest.mark.parametrize("permission", ["EDIT", "MANAGE"])
def test_a_default_permission_that_grants_writes_is_refused(permission: str) -> None:
    with pytest.raises(
        PlanRefused, match=rf"default permission is {permission}.*defaultPermission: NO_PERMISSIONS"
    ):
        build_plan(_declaration(), _state(default_permission=permission), ADMIN)


def test_a_default_read_permission_is_a_warning() -> None:
    plan = build_plan(_declaration(), _state(default_permission="READ"), ADMIN)
    [warning] = plan.warnings
    assert "every user can read every team's experiments" in warning and "NO_PERMISSIONS" in warning


def test_declaring_an_admin_or_a_workspace_on_a_server_without_workspaces_is_refused() -> None:
    declaration = parse(
        {
            "users": ["admin", "alice"],
            "teams": {
                "search": {
                    "members": ["alice"],
                    "workspace": "search",
                    "grants": [{"experiments": "/s/", "access": "reader"}],
                }
            },
        }
    )
    with pytest.raises(PlanRefused) as caught:
        build_plan(declaration, _state(), ADMIN)
    assert "'admin' is an MLflow admin" in str(caught.value)
    assert "server.workspaces: true" in str(caught.value)


def test_a_workspace_team_gets_its_role_and_membership_in_that_workspace() -> None:
    declaration = _declaration(workspace="search")
    state = _state(
        workspaces_enabled=True, experiments={"default": [("1", "/search/x")], "search": [("7", "/search/y")]}
    )
    plan = build_plan(declaration, state, ADMIN)
    grants = {
        (c.role, c.resource_type, c.resource, c.permission) for c in plan.changes if c.action == "grant"
    }
    assert grants == {
        (("search", "team:search"), "experiment", "7", "READ"),
        (("search", "team:search"), "workspace", "*", "USE"),
    }
    state.workspace_names = {"default", "search"}
    assert "create-workspace" not in {c.action for c in build_plan(declaration, state, ADMIN).changes}
