"""The users-and-grants declaration: `stacks/users/<stack>.yaml`, parsed and validated.

Why a file next to the stack file and not a `users` key in it: the stack file is Pulumi config,
validated by infra/settings (which lifecycle/ must not import) and read by every `pulumi preview`;
users change far more often than infrastructure, are reviewed by different people (a team lead
adds a member; the platform team changes a NAT gateway), and need no `pulumi up` to take effect.
A separate file keeps those diffs apart and lets `users sync` parse it with no Pulumi at all.

The format (docs/users.md has the full reference)::

    users: [alice, bob, carol]          # every user this file manages
    teams:
      search:
        members: [alice, bob]
        workspace: search               # optional: only on a server with workspaces enabled
        grants:
          - experiments: /search/       # an experiment-name prefix, or a glob (* ? [..])
            access: editor              # reader | editor | manager  (MLflow READ | EDIT | MANAGE)
          - models: search-*            # a registered-model name prefix or glob
            access: manager

Every problem is reported at once, in one `DeclarationError`, each naming the entry and the fix.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The declaration's words for MLflow's permissions (mlflow/server/auth/permissions.py).
ACCESS_LEVELS: dict[str, str] = {"reader": "READ", "editor": "EDIT", "manager": "MANAGE"}
GRANT_KINDS = ("experiments", "models")
GLOB_CHARACTERS = frozenset("*?[")
TOP_LEVEL_KEYS = ("users", "teams")
TEAM_KEYS = ("members", "grants", "workspace")

# Conservative names: they become parts of role names, secret names and file names.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
TEAM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# MLflow workspace names (mlflow/store/workspace): DNS-label-like.
WORKSPACE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class DeclarationError(ValueError):
    """The declaration cannot be used; the message lists every problem with its fix."""


@dataclass(frozen=True)
class Grant:
    """`access` on every experiment (kind "experiments") or registered model ("models") whose name
    matches `pattern`: a prefix, or an fnmatch glob when it holds * ? or [."""

    kind: str
    pattern: str
    access: str

    @property
    def permission(self) -> str:
        return ACCESS_LEVELS[self.access]

    @property
    def resource_type(self) -> str:
        """MLflow's resource type for role permissions."""
        return "experiment" if self.kind == "experiments" else "registered_model"

    @property
    def is_glob(self) -> bool:
        return bool(GLOB_CHARACTERS & set(self.pattern))

    def matches(self, name: str) -> bool:
        if self.is_glob:
            return fnmatch.fnmatchcase(name, self.pattern)
        return name.startswith(self.pattern)

    def describe(self) -> str:
        how = "matching" if self.is_glob else "under"
        return f"{self.access} on {self.kind} {how} {self.pattern!r}"


@dataclass(frozen=True)
class Team:
    name: str
    members: tuple[str, ...]
    grants: tuple[Grant, ...]
    workspace: str | None = None


@dataclass(frozen=True)
class Declaration:
    users: tuple[str, ...]
    teams: tuple[Team, ...]
    source: str = ""

    def teams_of(self, user: str) -> list[Team]:
        return [team for team in self.teams if user in team.members]

    @property
    def workspaces(self) -> set[str]:
        return {team.workspace for team in self.teams if team.workspace}


def default_path(stack: str, stacks_dir: Path | str = "stacks") -> Path:
    """Where the declaration of a stack lives: next to its stack file."""
    return Path(stacks_dir) / "users" / f"{stack}.yaml"


def load_file(path: Path | str) -> Declaration:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeclarationError(
            f"{path}: cannot read the users declaration ({exc.strerror}); create it (docs/users.md "
            "shows the format) or pass --file"
        ) from exc
    return parse_text(text, str(path))


def parse_text(text: str, source: str = "<declaration>") -> Declaration:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{source}: not valid YAML ({exc})") from exc
    return parse(data, source)


def _as_list(value: Any, where: str, what: str, problems: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list of {what}, e.g. [{what.rstrip('s')}-1, ...]")
        return []
    return value


def _parse_grant(raw: Any, where: str, problems: list[str]) -> Grant | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping like {{experiments: /team/, access: editor}}")
        return None
    kinds = [kind for kind in GRANT_KINDS if kind in raw]
    unknown = sorted(set(raw) - {*GRANT_KINDS, "access"})
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; a grant has one of "
            f"{' or '.join(GRANT_KINDS)}, and access"
        )
    if len(kinds) != 1:
        problems.append(f"{where}: give exactly one of 'experiments: <prefix>' or 'models: <pattern>'")
        return None
    kind = kinds[0]
    pattern = raw[kind]
    access = raw.get("access")
    ok = True
    if not isinstance(pattern, str) or not pattern.strip():
        problems.append(f"{where}: {kind} must be a non-empty name prefix or glob, e.g. /search/")
        ok = False
    elif pattern.strip("*") == "":
        problems.append(
            f"{where}: {kind} {pattern!r} matches everything, which is no team boundary; name a "
            "prefix such as /search/ (or give the user admin rights by hand)"
        )
        ok = False
    if access not in ACCESS_LEVELS:
        problems.append(
            f"{where}: access {access!r} is not one of {', '.join(ACCESS_LEVELS)} "
            f"(MLflow {', '.join(ACCESS_LEVELS.values())})"
        )
        ok = False
    return Grant(kind, pattern, access) if ok else None


def _parse_team(name: Any, raw: Any, users: set[str], problems: list[str]) -> Team | None:
    where = f"teams.{name}"
    if not isinstance(name, str) or not TEAM_NAME.fullmatch(name):
        problems.append(f"{where}: team names use lowercase letters, digits and '-' (e.g. search)")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with members and grants")
        return None
    unknown = sorted(set(raw) - set(TEAM_KEYS))
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; use {', '.join(TEAM_KEYS)}")
    members = _as_list(raw.get("members"), f"{where}.members", "users", problems)
    for member in members:
        if member not in users:
            problems.append(
                f"{where}.members: {member!r} is not declared; add it to the top-level users list "
                "(or remove it from the team)"
            )
    if len(set(map(str, members))) != len(members):
        problems.append(f"{where}.members: a user is listed twice; list each member once")
    raw_grants = _as_list(raw.get("grants"), f"{where}.grants", "grants", problems)
    if not raw_grants:
        problems.append(f"{where}.grants: a team needs at least one grant (experiments or models)")
    grants = [_parse_grant(g, f"{where}.grants[{i}]", problems) for i, g in enumerate(raw_grants)]
    workspace = raw.get("workspace")
    if workspace is not None and (not isinstance(workspace, str) or not WORKSPACE_NAME.fullmatch(workspace)):
        problems.append(
            f"{where}.workspace: {workspace!r} is not a workspace name (lowercase letters, digits, '-')"
        )
        workspace = None
    return Team(
        name,
        tuple(str(m) for m in members),
        tuple(g for g in grants if g is not None),
        workspace,
    )


def parse(data: Any, source: str = "<declaration>") -> Declaration:
    """Validate a loaded YAML document; raise one DeclarationError listing every problem."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DeclarationError(f"{source}: must be a mapping with 'users' and 'teams' (docs/users.md)")
    unknown = sorted(set(map(str, data)) - set(TOP_LEVEL_KEYS))
    if unknown:
        problems.append(
            f"unknown top-level key(s) {', '.join(unknown)}; the declaration has only "
            f"{' and '.join(TOP_LEVEL_KEYS)}"
        )
    users = _as_list(data.get("users"), "users", "user names", problems)
    seen: set[str] = set()
    for index, user in enumerate(users):
        if not isinstance(user, str) or not USER_NAME.fullmatch(user):
            problems.append(
                f"users[{index}]: {user!r} is not a user name (letters, digits, '_', '.', '@', '+', '-'; "
                "at most 64 characters)"
            )
        elif user in seen:
            problems.append(f"users[{index}]: {user!r} is listed twice; list each user once")
        seen.add(str(user))
    raw_teams = data.get("teams") or {}
    if not isinstance(raw_teams, dict):
        problems.append("teams: must be a mapping of team name to {members, grants}")
        raw_teams = {}
    teams = [_parse_team(name, raw, seen, problems) for name, raw in raw_teams.items()]
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise DeclarationError(f"{source}: {len(problems)} problem(s) in the users declaration:\n{listed}")
    return Declaration(tuple(users), tuple(t for t in teams if t is not None), source)
