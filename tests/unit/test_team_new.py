"""`mlflow-stack team new` and `team compare` on a temporary stacks directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cli.main import main
from infra.settings import build_settings
from infra.settings.tenancy import derived_listener_priority
from preview.offline import REPO_ROOT, load_stack_config, run_program
from preview.team_scaffold import ScaffoldError, priority_collisions, scaffold_team_stack

SHIPPED = REPO_ROOT / "stacks"
PLATFORM = "acme/mlflow-stack/platform-prod"


@pytest.fixture
def stacks(tmp_path: Path) -> Path:
    for name in ("platform-prod", "recsys-prod", "fraud-prod"):
        shutil.copy(SHIPPED / f"Pulumi.{name}.yaml", tmp_path)
    return tmp_path


def _money(line: str) -> float:
    return float(line.split(":")[1].split()[0].replace(",", ""))


def test_team_new_writes_a_valid_team_stack_and_prints_marginal_cost(stacks: Path, capsys) -> None:
    code = main(
        ["team", "new", "ads", "--env", "prod", "--owner", "ads-ml@example.com", "--stack-dir", str(stacks)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    path = stacks / "Pulumi.ads-prod.yaml"
    assert f"wrote {path}" in out
    config = load_stack_config("ads-prod", stacks)
    assert config["mlflow-stack:tenancy"] == {"mode": "team", "platformStack": PLATFORM}
    assert config["mlflow-stack:domain"] == {"name": "ads.mlflow.example.com"}
    assert config["mlflow-stack:owner"] == "ads-ml@example.com"
    # The cost center defaults to the platform's; region and boundary follow the platform.
    platform = load_stack_config("platform-prod", stacks)
    for key in ("aws:region", "mlflow-stack:costCenter", "mlflow-stack:permissionsBoundaryArn"):
        assert config[key] == platform[key]
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("mlflow-stack:")}
    assert build_settings("ads-prod", config["aws:region"], raw).mode == "team"
    # It previews: the team's service on the platform's cluster, its host on the shared listener.
    graph = run_program("ads-prod", stack_dir=stacks)
    assert graph.error is None
    assert graph.outputs["tracking_url"] == "https://ads.mlflow.example.com"
    # The marginal cost of one more team sits next to a standalone stack of the same environment.
    lines = out.splitlines()
    marginal = _money(next(x for x in lines if "one more team on the shared platform" in x))
    standalone = _money(next(x for x in lines if "a standalone stack of the same environment" in x))
    assert 0 < marginal < standalone
    assert any(x.strip().startswith("workspaces on one standalone stack") for x in lines)
    assert f"listener rule priority {derived_listener_priority('ads')}" in out


def test_team_new_refuses_to_overwrite(stacks: Path, capsys) -> None:
    before = (stacks / "Pulumi.recsys-prod.yaml").read_text()
    code = main(
        ["team", "new", "recsys", "--env", "prod", "--owner", "x@example.com", "--stack-dir", str(stacks)]
    )
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (stacks / "Pulumi.recsys-prod.yaml").read_text() == before


def test_team_new_without_a_platform_stack_says_what_to_create(tmp_path: Path, capsys) -> None:
    code = main(
        ["team", "new", "ads", "--env", "staging", "--owner", "x@example.com", "--stack-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "no platform stack file Pulumi.platform-staging.yaml" in err
    assert not list(tmp_path.iterdir())


def test_team_new_validates_like_the_program(stacks: Path) -> None:
    with pytest.raises(Exception, match="mlflow-stack:owner"):
        scaffold_team_stack("ads", "prod", "", stack_dir=stacks)
    with pytest.raises(ScaffoldError, match="not 'platform'"):
        scaffold_team_stack("platform", "prod", "x@example.com", stack_dir=stacks)
    assert not (stacks / "Pulumi.ads-prod.yaml").exists()


def test_team_new_takes_a_free_priority_when_the_derived_one_is_taken(stacks: Path) -> None:
    # Pin recsys onto the priority `ads` would derive: the scaffold must not collide with it.
    taken = derived_listener_priority("ads")
    recsys = stacks / "Pulumi.recsys-prod.yaml"
    document = yaml.safe_load(recsys.read_text())
    document["config"]["mlflow-stack:tenancy"]["listenerPriority"] = taken
    recsys.write_text(yaml.safe_dump(document))
    team = scaffold_team_stack("ads", "prod", "ads@example.com", stack_dir=stacks)
    assert team.priority != taken
    assert team.document["config"]["mlflow-stack:tenancy"]["listenerPriority"] == team.priority
    team.path.write_text(team.text)
    assert priority_collisions(PLATFORM, stacks) == {}


def test_collisions_between_teams_are_found(stacks: Path) -> None:
    fraud = stacks / "Pulumi.fraud-prod.yaml"
    document = yaml.safe_load(fraud.read_text())
    document["config"]["mlflow-stack:tenancy"]["listenerPriority"] = derived_listener_priority("recsys")
    fraud.write_text(yaml.safe_dump(document))
    assert priority_collisions(PLATFORM, stacks) == {
        derived_listener_priority("recsys"): ["fraud-prod", "recsys-prod"]
    }


@pytest.mark.parametrize("team", ["recsys-prod", "media-prod"])
def test_team_compare_prints_the_three_modes(stacks: Path, capsys, team: str) -> None:
    shutil.copy(SHIPPED / f"Pulumi.{team}.yaml", stacks)
    code = main(["team", "compare", "--stack", team, "--teams", "4", "--stack-dir", str(stacks)])
    out = capsys.readouterr().out
    assert code == 0
    rows = {
        line.strip().split("  ")[0]: [float(v.replace(",", "")) for v in line.split() if v[0].isdigit()]
        for line in out.splitlines()
        if line.strip().startswith(("standalone (", "shared platform", "workspaces on"))
    }
    standalone, shared, workspaces = (
        rows["standalone (a stack per team)"],
        rows["shared platform + team stacks"],
        rows["workspaces on one standalone stack"],
    )
    # total = per team x 4 in every mode; workspaces are the cheapest, standalone the dearest.
    for total, per_team in (standalone, shared, workspaces):
        assert total == pytest.approx(per_team * 4, abs=0.05)
    assert workspaces[1] < shared[1] and workspaces[1] < standalone[1]
    if team == "media-prod":
        # On the platform's shared instance a team pays no instance of its own: the shared mode
        # beats standalone even at 4 teams. An own-instance team on a platform that also carries a
        # shared instance pays 1/N of an instance it does not use, and may not (docs/teams.md).
        assert shared[1] < standalone[1]
