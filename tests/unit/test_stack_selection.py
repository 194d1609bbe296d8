"""`mlflow-stack preview stacks`: which stacks a pull request previews and each environment deploys."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from cli.main import main
from preview.stack_selection import affected_stacks, of_tier, stack_names, stacks_by_environment

STACKS = ["dev", "prod", "search-prod", "staging"]


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["stacks/Pulumi.search-prod.yaml"], ["search-prod"]),
        (["README.md", "docs/ci.md", "lifecycle/models.py"], []),
        (["stacks/Pulumi.gone-dev.yaml"], []),  # deleted on the head: nothing to preview there
        (["infra/settings/presets.py"], STACKS),
        (["policies/rules/tags.py"], STACKS),
        (["preview/prices.json"], STACKS),
        (["uv.lock"], STACKS),
        (["__main__.py"], STACKS),
        (["./stacks/Pulumi.dev.yaml", "", "stacks/Pulumi.prod.yaml"], ["dev", "prod"]),
        (["infrastructure.md"], []),  # a prefix of infra/, not under it
    ],
)
def test_affected_stacks(changed: list[str], expected: list[str]) -> None:
    assert affected_stacks(changed, STACKS) == expected


def test_the_shipped_stacks_by_environment() -> None:
    names = stack_names(".")
    assert {"dev", "staging", "prod"} <= set(names)
    grouped = stacks_by_environment(".", names)
    assert grouped["dev"][0] == "dev" and "staging" in grouped["staging"]
    assert "prod" in grouped["prod"] and all(s.endswith("prod") for s in grouped["prod"])


def test_an_environment_setting_beats_the_name(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.sandbox.yaml").write_text("config:\n  mlflow-stack:environment: dev\n")
    (tmp_path / "stacks" / "Pulumi.team-prod.yaml").write_text("config: {}\n")
    assert stacks_by_environment(tmp_path, stack_names(tmp_path)) == {
        "dev": ["sandbox"],
        "prod": ["team-prod"],
    }


def test_stacks_command_for_a_matrix(tmp_path: Path) -> None:
    changed = tmp_path / "changed.txt"
    changed.write_text("stacks/Pulumi.prod.yaml\nstacks/Pulumi.dev.yaml\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["preview", "stacks", "--changed-files", str(changed), "--environment", "prod", "--json"])
    assert code == 0 and json.loads(out.getvalue()) == ["prod"]


def test_a_changed_platform_previews_its_teams_and_deploys_first() -> None:
    names = stack_names(".")
    # The shipped platform and its two team stacks (docs/teams.md).
    assert affected_stacks(["stacks/Pulumi.platform-prod.yaml"], names, ".") == [
        "fraud-prod",
        "media-prod",
        "platform-prod",
        "recsys-prod",
    ]
    assert affected_stacks(["stacks/Pulumi.recsys-prod.yaml"], names, ".") == ["recsys-prod"]
    prod = stacks_by_environment(".", names)["prod"]
    assert of_tier(".", prod, "platform") == ["platform-prod"]
    servers = of_tier(".", prod, "server")
    assert "platform-prod" not in servers and {"prod", "recsys-prod", "fraud-prod"} <= set(servers)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["preview", "stacks", "--environment", "prod", "--tier", "platform", "--json"])
    assert code == 0 and json.loads(out.getvalue()) == ["platform-prod"]
