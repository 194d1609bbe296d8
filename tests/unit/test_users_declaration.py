"""The users declaration: the shipped example parses, patterns match as documented, and every
mistake is reported at once, naming the entry and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.users_declaration import DeclarationError, Grant, default_path, load_file, parse, parse_text

REPO_ROOT = Path(__file__).resolve().parents[2]


def _valid() -> dict:
    return {
        "users": ["alice", "bob"],
        "teams": {
            "search": {"members": ["alice"], "grants": [{"experiments": "/search/", "access": "editor"}]},
            "vision": {"members": ["bob"], "grants": [{"models": "vision-*", "access": "reader"}]},
        },
    }


def test_every_shipped_declaration_parses_and_has_a_stack_file() -> None:
    files = sorted((REPO_ROOT / "stacks" / "users").glob("*.yaml"))
    assert files
    for file in files:
        declaration = load_file(file)
        assert declaration.users and declaration.teams
        assert (REPO_ROOT / "stacks" / f"Pulumi.{file.stem}.yaml").is_file(), f"{file} names no stack"
        assert default_path(file.stem, REPO_ROOT / "stacks") == file


def test_access_levels_map_to_mlflow_permissions() -> None:
    declaration = parse(_valid())
    [search, vision] = declaration.teams
    assert search.grants[0].permission == "EDIT" and search.grants[0].resource_type == "experiment"
    assert vision.grants[0].permission == "READ" and vision.grants[0].resource_type == "registered_model"
    assert [t.name for t in declaration.teams_of("alice")] == ["search"]


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("/search/", "/search/ranking/v2", True),
        ("/search/", "/searchers/x", False),
        ("/search/", "/vision/search/", False),
        ("search-*", "search-ranker", True),
        ("search-*", "my-search-ranker", False),
        ("search-ranker-v?", "search-ranker-v2", True),
        ("search-", "search-ranker", True),
    ],
)
def test_patterns_are_prefixes_or_globs(pattern: str, name: str, expected: bool) -> None:
    assert Grant("experiments", pattern, "reader").matches(name) is expected


def test_every_problem_is_reported_at_once_with_its_entry_and_fix() -> None:
    data = {
        "users": ["alice", "alice", "bad name"],
        "teams": {
            "Search": {"members": [], "grants": [{"experiments": "/s/", "access": "reader"}]},
            "vision": {
                "members": ["carol"],
                "grants": [
                    {"experiments": "/v/", "access": "writer"},
                    {"experiments": "*", "access": "reader"},
                    {"experiments": "/v/", "models": "v-", "access": "reader"},
                ],
                "workspace": "Not_A_Workspace",
            },
        },
        "groups": {},
    }
    with pytest.raises(DeclarationError) as caught:
        parse(data, "stacks/users/dev.yaml")
    message = str(caught.value)
    assert message.startswith("stacks/users/dev.yaml: 9 problem(s)")
    for expected in (
        "unknown top-level key(s) groups",
        "users[1]: 'alice' is listed twice",
        "users[2]: 'bad name' is not a user name",
        "teams.Search: team names use lowercase",
        "teams.vision.members: 'carol' is not declared; add it to the top-level users list",
        "teams.vision.grants[0]: access 'writer' is not one of reader, editor, manager",
        "teams.vision.grants[1]: experiments '*' matches everything",
        "teams.vision.grants[2]: give exactly one of",
        "teams.vision.workspace: 'Not_A_Workspace' is not a workspace name",
    ):
        assert expected in message


def test_a_team_without_grants_and_bad_yaml_are_refused() -> None:
    with pytest.raises(DeclarationError, match=r"teams.search.grants: a team needs at least one grant"):
        parse({"users": ["a"], "teams": {"search": {"members": ["a"]}}})
    with pytest.raises(DeclarationError, match="not valid YAML"):
        parse_text("users: [a\n", "x.yaml")
    with pytest.raises(DeclarationError, match="cannot read the users declaration"):
        load_file(REPO_ROOT / "stacks" / "users" / "no-such-stack.yaml")
