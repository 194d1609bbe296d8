"""From a declaration and a server's state to the list of changes that make them agree.

How the declaration maps onto MLflow 3.17's basic-auth (mlflow/server/auth):
- a team is an MLflow **role** named `team:<name>` in the team's workspace (`default` without
  workspaces); its members are assigned to it, so a grant to the team is one row, not one per user;
- MLflow's role grants name one resource id or `*` (permissions.py `PatternKind`: no prefixes or
  globs), so each declared pattern is expanded to one grant per *existing* experiment (by id) or
  registered model (by name) that matches it. Objects created later are covered by the next sync
  (the maintenance task runs one on its schedule, docs/users.md);
- the users this declaration manages carry the role `users-sync:managed` (no grants): that is how
  `--prune` tells a user it once created from one made by hand, which it never deletes;
- on a workspace team the workspace is created if missing (never deleted) and the role also gets
  `workspace:*` USE (membership; lets members create experiments and models there).

Pure: no I/O. Changes a prune would make are marked `prune=True` and applied only with --prune.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lifecycle.users_declaration import Declaration, Team
from lifecycle.users_state import DEFAULT_WORKSPACE, Role, ServerState

TEAM_ROLE_PREFIX = "team:"
MANAGED_ROLE = "users-sync:managed"
ROLE_DESCRIPTION = "managed by `mlflow-stack users sync`; edits by hand are undone by the next sync"
PERMISSION_ORDER = ("READ", "USE", "EDIT", "MANAGE")
WORKSPACE_MEMBER = ("workspace", "*", "USE")


class PlanRefused(ValueError):
    """The declaration cannot be applied to this server as it is; the message says why and the fix."""


@dataclass(frozen=True)
class Change:
    """One API call's worth of change. `role` is (workspace, role name)."""

    # create-workspace, create-user, create-role, assign, grant, update-grant,
    # revoke, unassign, delete-role, delete-user
    action: str
    prune: bool = False
    user: str | None = None
    role: tuple[str, str] | None = None
    resource_type: str | None = None
    resource: str | None = None  # experiment id or model name ("*" for the workspace slot)
    resource_name: str | None = None  # the experiment's name, for people
    permission: str | None = None
    role_id: int | None = None
    grant_id: int | None = None

    def describe(self) -> str:
        role = f"team {self.role[1].removeprefix(TEAM_ROLE_PREFIX)}" if self.role else ""
        if self.role and self.role[0] != DEFAULT_WORKSPACE:
            role += f" (workspace {self.role[0]})"
        what = self.resource_type or ""
        if self.resource_type == "experiment":
            what = f"experiment {self.resource_name!r} (id {self.resource})"
        elif self.resource_type == "registered_model":
            what = f"registered model {self.resource!r}"
        elif self.resource_type == "workspace":
            what = "the workspace (member)"
        text = {
            "create-workspace": f"create workspace {self.resource}",
            "create-user": f"create user {self.user} (generated password, stored, never printed)",
            "create-role": f"create role for {role}",
            "assign": f"add {self.user} to {role}",
            "grant": f"grant {role} {self.permission} on {what}",
            "update-grant": f"change {role} to {self.permission} on {what}",
            "revoke": f"revoke {role} {self.permission} on {what}",
            "unassign": f"remove {self.user} from {role}",
            "delete-role": f"delete role of {role} (no longer declared)",
            "delete-user": f"delete user {self.user} (no longer declared)",
        }[self.action]
        if self.role == (DEFAULT_WORKSPACE, MANAGED_ROLE):
            text = {
                "assign": f"mark {self.user} as managed by this declaration",
                "create-role": f"create role {MANAGED_ROLE} (marks the users this declaration manages)",
            }.get(self.action, text)
        return text

    def to_json(self) -> dict[str, object]:
        body = {k: v for k, v in asdict(self).items() if v is not None}
        if self.role:
            body["role"] = {"workspace": self.role[0], "name": self.role[1]}
        body["description"] = self.describe()
        return body


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Declared users the plan does not create (grants-only mode): their memberships wait for them.
    skipped_users: list[str] = field(default_factory=list)

    def applicable(self, prune: bool) -> list[Change]:
        return [c for c in self.changes if prune or not c.prune]

    @property
    def prunable(self) -> list[Change]:
        return [c for c in self.changes if c.prune]


def role_name(team: Team) -> str:
    return TEAM_ROLE_PREFIX + team.name


def team_workspace(team: Team) -> str:
    return team.workspace or DEFAULT_WORKSPACE


def _higher(a: str, b: str) -> str:
    return a if PERMISSION_ORDER.index(a) >= PERMISSION_ORDER.index(b) else b


def desired_grants(team: Team, state: ServerState) -> dict[tuple[str, str], tuple[str, str]]:
    """(resource type, resource id) -> (permission, name for people), for one team's role."""
    workspace = team_workspace(team)
    wanted: dict[tuple[str, str], tuple[str, str]] = {}

    def add(key: tuple[str, str], permission: str, name: str) -> None:
        current = wanted.get(key)
        wanted[key] = (_higher(permission, current[0]) if current else permission, name)

    for grant in team.grants:
        if grant.kind == "experiments":
            for experiment_id, name in state.experiments.get(workspace, []):
                if grant.matches(name):
                    add(("experiment", experiment_id), grant.permission, name)
        else:
            for name in state.models.get(workspace, []):
                if grant.matches(name):
                    add(("registered_model", name), grant.permission, name)
    if team.workspace:
        add(WORKSPACE_MEMBER[:2], WORKSPACE_MEMBER[2], team.workspace)
    return wanted


def check_preconditions(declaration: Declaration, state: ServerState, admin: str) -> list[str]:
    """Refuse what cannot work (PlanRefused); return warnings for what works but is weak."""
    problems: list[str] = []
    warnings: list[str] = []
    for user in declaration.users:
        if user == admin or (user in state.users and state.users[user].is_admin):
            problems.append(
                f"users: {user!r} is an MLflow admin on this server; admins bypass every grant and are "
                "not managed by users sync: remove it from the declaration"
            )
    if declaration.workspaces and not state.workspaces_enabled:
        teams = ", ".join(t.name for t in declaration.teams if t.workspace)
        problems.append(
            f"teams {teams} name a workspace, but this server runs without workspaces: set "
            "`server.workspaces: true` in the stack file (local: `mlflow-stack local up --workspaces`), "
            "or remove `workspace:` from those teams"
        )
    if declaration.teams:
        fix = (
            "set `mlflow-stack:server: {defaultPermission: NO_PERMISSIONS}` in the stack file "
            "(the kit's default; infra/settings/models.py ServerSettings.default_permission) and redeploy"
        )
        if state.default_permission in ("EDIT", "MANAGE"):
            problems.append(
                f"the server's default permission is {state.default_permission}: every user may change "
                f"every team's experiments and models, so the declared grants isolate nothing; {fix}"
            )
        elif state.default_permission in ("READ", "USE"):
            warnings.append(
                f"the server's default permission is {state.default_permission}: every user can read every "
                f"team's experiments and models; the grants only separate who may write. For isolation, {fix}"
            )
    if problems:
        raise PlanRefused("\n".join(f"  - {p}" for p in problems))
    return warnings


def build_plan(
    declaration: Declaration,
    state: ServerState,
    admin: str,
    *,
    create_users: bool = True,
) -> Plan:
    """Every change that makes the server match the declaration (prunes marked as such)."""
    plan = Plan(warnings=check_preconditions(declaration, state, admin))
    changes = plan.changes
    for workspace in sorted(declaration.workspaces - state.workspace_names):
        # Never deleted by a sync: a workspace holds experiments and models.
        changes.append(Change("create-workspace", resource_type="workspace", resource=workspace))
    managed_role = state.role(DEFAULT_WORKSPACE, MANAGED_ROLE)
    managed_key = (DEFAULT_WORKSPACE, MANAGED_ROLE)

    # Users, and the marker that says this declaration manages them.
    present: set[str] = set()
    for user in declaration.users:
        if user in state.users:
            present.add(user)
        elif create_users:
            changes.append(Change("create-user", user=user))
            present.add(user)
        else:
            plan.skipped_users.append(user)
    if managed_role is None and declaration.users:
        changes.append(Change("create-role", role=managed_key))
    for user in sorted(present):
        existing = state.users.get(user)
        if managed_role is None or existing is None or managed_role.id not in existing.role_ids:
            changes.append(Change("assign", user=user, role=managed_key))

    # Team roles, memberships and grants.
    for team in declaration.teams:
        key = (team_workspace(team), role_name(team))
        role = state.role(*key)
        if role is None:
            changes.append(Change("create-role", role=key))
        for member in team.members:
            if member not in present:
                continue
            existing = state.users.get(member)
            if role is None or existing is None or role.id not in existing.role_ids:
                changes.append(Change("assign", user=member, role=key))
        current = {(g.resource_type, g.resource_pattern): g for g in (role.grants if role else ())}
        wanted = desired_grants(team, state)
        for (resource_type, resource), (permission, name) in sorted(wanted.items()):
            have = current.get((resource_type, resource))
            common = {
                "role": key,
                "resource_type": resource_type,
                "resource": resource,
                "resource_name": name,
            }
            if have is None:
                changes.append(Change("grant", permission=permission, **common))
            elif have.permission != permission:
                changes.append(Change("update-grant", permission=permission, grant_id=have.id, **common))
        if role is not None:
            names = {experiment_id: n for experiment_id, n in state.experiments.get(key[0], [])}
            for (resource_type, resource), have in sorted(current.items()):
                if (resource_type, resource) not in wanted:
                    changes.append(
                        Change(
                            "revoke",
                            prune=True,
                            role=key,
                            resource_type=resource_type,
                            resource=resource,
                            resource_name=names.get(resource, resource),
                            permission=have.permission,
                            grant_id=have.id,
                            role_id=role.id,
                        )
                    )
            declared_members = set(team.members)
            for user in sorted(state.users.values(), key=lambda u: u.username):
                if role.id in user.role_ids and user.username not in declared_members:
                    if _will_delete(user.username, declaration, managed_role, state):
                        continue  # deleting the user drops its memberships
                    changes.append(
                        Change("unassign", prune=True, user=user.username, role=key, role_id=role.id)
                    )

    # What the declaration no longer lists: team roles, then the users it once managed.
    declared_roles = {(team_workspace(t), role_name(t)) for t in declaration.teams}
    for role in sorted(state.roles, key=lambda r: (r.workspace, r.name)):
        if role.name.startswith(TEAM_ROLE_PREFIX) and (role.workspace, role.name) not in declared_roles:
            changes.append(
                Change("delete-role", prune=True, role=(role.workspace, role.name), role_id=role.id)
            )
    for username in sorted(state.users):
        if _will_delete(username, declaration, managed_role, state) and username != admin:
            changes.append(Change("delete-user", prune=True, user=username))
    return plan


def _will_delete(
    username: str, declaration: Declaration, managed_role: Role | None, state: ServerState
) -> bool:
    user = state.users[username]
    return (
        managed_role is not None
        and managed_role.id in user.role_ids
        and username not in declaration.users
        and not user.is_admin
    )
