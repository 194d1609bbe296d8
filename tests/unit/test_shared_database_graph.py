"""A team's database on the platform's shared RDS instance (database.placement: shared), on the real
program's graph (offline, under mocks) and in the settings.

The platform owns the instance (hardened like a stack's own); the team stack has no instance, points
its server at the platform's endpoint with its own databases and role, admits its tasks on the
platform's database security group, and hands the instance's master secret to its db-bootstrap
container alone. Two teams on one instance still share no bucket, key, secret (but that master
secret, the documented exception) or lock table. "Password management with Amazon RDS and AWS
Secrets Manager": https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import SettingsError, build_settings, connections_at_full_scale
from infra.settings.shared_database import SHARED_ROLE_HEADROOM_CONNECTIONS
from preview.offline import ResourceGraph, load_stack_config, run_program, unwrap
from server import contract

PLATFORM, TEAM = "platform-prod", "media-prod"
STACK_DIR = Path(__file__).resolve().parents[2] / "stacks"
RDS = "aws:rds/instance:Instance"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"


def _raw(stack: str) -> dict[str, Any]:
    return {
        k.split(":", 1)[1]: v for k, v in load_stack_config(stack).items() if k.startswith("mlflow-stack:")
    }


def _problems(stack: str, raw: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        build_settings(stack, "us-east-1", raw)
    return caught.value.problems


def _containers(graph: ResourceGraph) -> dict[str, dict[str, Any]]:
    task = next(t for t in graph.of_type(TASK_DEFINITION) if t.get("family", "").endswith("-server"))
    return {c["name"]: c for c in json.loads(task.get("containerDefinitions"))}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def _secrets(container: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in container.get("secrets", [])}


def _statements(graph: ResourceGraph, role_arn: str) -> list[dict[str, Any]]:
    role = next(r for r in graph.of_type("aws:iam/role:Role") if r.arn == role_arn)
    return [
        statement
        for policy in graph.of_type("aws:iam/rolePolicy:RolePolicy")
        if policy.get("role") in (role.id, role.get("name"))
        for statement in json.loads(policy.get("policy"))["Statement"]
    ]


# --- the platform's instance ---------------------------------------------------------------------


def test_platform_owns_one_hardened_shared_instance(stack_graph: Any) -> None:
    graph = stack_graph(PLATFORM)
    instance = graph.one(RDS)
    assert instance.get("identifier") == "mlflow-platform-prod-shared-db"
    assert instance.get("instanceClass") == "db.m7g.xlarge"
    assert instance.get("dbName") is None  # each team's bootstrap creates its own two databases
    assert instance.get("storageEncrypted") is True and instance.get("publiclyAccessible") is False
    assert instance.get("manageMasterUserPassword") is True and instance.get("password") is None
    # prod preset: Multi-AZ, deletion protection, 14 days of backups.
    assert instance.get("multiAz") is True and instance.get("deletionProtection") is True
    assert instance.get("backupRetentionPeriod") == 14
    # The master secret under a platform key of its own; storage under the instance's key.
    secret_key = next(
        k for k in graph.of_type("aws:kms/key:Key") if "master user secret" in k.get("description")
    )
    assert instance.get("masterUserSecretKmsKeyId") == secret_key.arn
    assert instance.get("kmsKeyId") not in (None, secret_key.arn)
    params = {
        p["name"]: p["value"] for p in graph.one("aws:rds/parameterGroup:ParameterGroup").get("parameters")
    }
    assert params["rds.force_ssl"] == "1" and params["shared_preload_libraries"] == "pg_stat_statements"
    subnets = graph.one("aws:rds/subnetGroup:SubnetGroup").get("subnetIds")
    assert subnets == graph.outputs["private_subnet_ids"]
    outputs = graph.outputs
    assert outputs["shared_db_endpoint"].startswith(f"{instance.get('identifier')}.")
    assert outputs["shared_db_security_group_id"] == instance.get("vpcSecurityGroupIds")[0]
    assert outputs["shared_db_master_secret_kms_key_arn"] == secret_key.arn
    assert outputs["shared_db_connection_budget"] == int(outputs["shared_db_max_connections"] * 0.8)


# --- the team on it --------------------------------------------------------------------------------


def test_the_platforms_on_call_hears_about_the_shared_instance(stack_graph: Any) -> None:
    graph = stack_graph(PLATFORM)
    instance = graph.one(RDS)
    topic = graph.one("aws:sns/topic:Topic")
    alarms = {
        a.get("metricName"): a
        for a in graph.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.get("namespace") == "AWS/RDS"
    }
    assert set(alarms) == {"CPUUtilization", "FreeStorageSpace", "DatabaseConnections"}
    for alarm in alarms.values():
        assert alarm.get("dimensions") == {"DBInstanceIdentifier": instance.get("identifier")}
        assert alarm.get("alarmActions") == [topic.arn] == alarm.get("okActions")
    # Thresholds from the instance's own size: 10 % of its storage, 80 % of max_connections.
    storage_gb = graph.outputs["shared_db_allocated_storage_gb"]
    most = graph.outputs["shared_db_max_connections"]
    assert alarms["FreeStorageSpace"].get("threshold") == pytest.approx(storage_gb * 1024**3 * 0.10)
    assert alarms["DatabaseConnections"].get("threshold") == pytest.approx(most * 0.80)


def test_team_has_no_instance_and_uses_the_platforms(stack_graph: Any) -> None:
    team, platform = stack_graph(TEAM), stack_graph(PLATFORM).outputs
    assert not team.of_type(RDS) and not team.of_type("aws:rds/snapshot:Snapshot")
    assert not team.of_type("aws:rds/subnetGroup:SubnetGroup")
    server = _env(_containers(team)["mlflow"])
    assert server[contract.DB_HOST.name] == platform["shared_db_endpoint"]
    assert server[contract.DB_PORT.name] == "5432"  # not "5432.0": numbers cross a reference as floats
    assert (
        server[contract.DB_NAME.name],
        server[contract.AUTH_DB_NAME.name],
        server[contract.DB_USER.name],
    ) == (
        "media_tracking",
        "media_auth",
        "mlflow_media",
    )
    assert team.outputs["db_instance_identifier"] == platform["shared_db_instance_identifier"]
    assert "pre_upgrade_snapshot_id" not in team.outputs
    # The team's tasks are admitted on the platform's database security group, by the team stack.
    [ingress] = [
        r
        for r in team.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.get("securityGroupId") == platform["shared_db_security_group_id"]
    ]
    assert ingress.get("fromPort") == ingress.get("toPort") == 5432
    service_sg = team.one("aws:ecs/service:Service").get("networkConfiguration.securityGroups")
    assert ingress.get("referencedSecurityGroupId") in service_sg


def test_only_the_bootstrap_container_gets_the_shared_master_secret(stack_graph: Any) -> None:
    team, platform = stack_graph(TEAM), stack_graph(PLATFORM).outputs
    master = platform["shared_db_master_secret_arn"]
    containers = _containers(team)
    bootstrap, server = containers["db-bootstrap"], containers["mlflow"]
    assert _secrets(bootstrap)[contract.DB_MASTER_PASSWORD.name] == f"{master}:password::"
    assert master not in json.dumps(server)
    env = _env(bootstrap)
    assert env[contract.DB_MASTER_USER.name] == platform["shared_db_master_user"]
    settings = build_settings(TEAM, "us-east-1", _raw(TEAM))
    limit = int(env[contract.DB_APP_CONNECTION_LIMIT.name])
    assert limit == connections_at_full_scale(settings.server) + SHARED_ROLE_HEADROOM_CONNECTIONS
    assert limit <= platform["shared_db_connection_budget"]
    task = next(t for t in team.of_type(TASK_DEFINITION) if t.get("family", "").endswith("-server"))
    execution = _statements(team, task.get("executionRoleArn"))
    readable = {r for s in execution if "secretsmanager:GetSecretValue" in s["Action"] for r in s["Resource"]}
    assert master in readable
    decrypt = next(s for s in execution if s["Action"] == ["kms:Decrypt"])
    assert platform["shared_db_master_secret_kms_key_arn"] in decrypt["Resource"]
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}
    }
    # Neither the task role nor the maintenance task sees it.
    assert master not in json.dumps(_statements(team, task.get("taskRoleArn")))
    maintenance = [p for p in team.of_type("aws:iam/rolePolicy:RolePolicy") if "operations" in p.name]
    assert maintenance and not any(master in p.get("policy") for p in maintenance)


# --- two teams on one instance ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_shared_teams(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResourceGraph, ResourceGraph]:
    """media-prod and a second shared team (games-prod) on the same platform, in a scratch stacks dir."""
    directory: Path = tmp_path_factory.mktemp("stacks")
    for stack in (PLATFORM, TEAM):
        shutil.copy(STACK_DIR / f"Pulumi.{stack}.yaml", directory)
    games = yaml.safe_load((STACK_DIR / f"Pulumi.{TEAM}.yaml").read_text())
    games["config"]["mlflow-stack:domain"] = {"name": "games.mlflow.example.com"}
    games["config"]["mlflow-stack:owner"] = "games-ml@example.com"
    (directory / "Pulumi.games-prod.yaml").write_text(yaml.safe_dump(games))
    return run_program(TEAM, stack_dir=directory), run_program("games-prod", stack_dir=directory)


def _owned(graph: ResourceGraph) -> set[str]:
    """A team's own bucket, keys, secrets, lock table and log group (ARNs and names)."""
    owned: set[str] = set()
    for resource in graph.resources:
        if resource.type == "aws:s3/bucket:Bucket":
            owned |= {resource.arn or "", str(resource.id)}
        elif resource.type in {"aws:kms/key:Key", "aws:secretsmanager/secret:Secret"}:
            owned.add(resource.arn or "")
        elif resource.type in {"aws:dynamodb/table:Table", "aws:cloudwatch/logGroup:LogGroup"}:
            owned |= {resource.arn or "", str(resource.get("name"))}
    return {name for name in owned if name and name != "None"}


def _policy_text(graph: ResourceGraph) -> str:
    kinds = {"aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy", "aws:kms/key:Key"}
    return " ".join(str(r.get("policy") or "") for r in graph.resources if r.type in kinds)


def test_two_teams_on_one_instance_share_only_the_instance(
    two_shared_teams: tuple[ResourceGraph, ResourceGraph],
) -> None:
    media, games = two_shared_teams
    assert media.outputs["db_endpoint"] == games.outputs["db_endpoint"]
    assert (media.outputs["db_user"], games.outputs["db_user"]) == ("mlflow_media", "mlflow_games")
    assert {media.outputs["db_name"], media.outputs["db_auth_name"]}.isdisjoint(
        {games.outputs["db_name"], games.outputs["db_auth_name"]}
    )
    for mine, theirs in ((media, games), (games, media)):
        own = _owned(mine)
        text = _policy_text(mine)
        assert sum(name in text for name in own) >= 5  # the check is not vacuous
        leaks = sorted(name for name in _owned(theirs) if name in text)
        assert not leaks, f"{mine.stack} names {theirs.stack}'s {leaks}"
    # The one thing both read: the instance's master secret (docs/teams.md, what isolation each mode gives).
    shared = unwrap(media.outputs["db_master_secret_arn"])
    assert shared == unwrap(games.outputs["db_master_secret_arn"])
    assert shared in _policy_text(media) and shared in _policy_text(games)


# --- settings and the platform's answer ------------------------------------------------------------


def test_shared_placement_refuses_instance_settings_with_the_fix() -> None:
    raw = _raw(TEAM)
    raw["database"] = {"placement": "shared", "instanceClass": "db.r7g.large", "multiAz": True}
    problems = _problems(TEAM, raw)
    assert [p.split(":", 2)[1] for p in problems] == ["database.instanceClass", "database.multiAz"]
    assert "remove it here (the platform sets sharedDatabase.instanceClass)" in problems[0]


def test_connection_limit_below_the_teams_full_scale_is_refused() -> None:
    raw = _raw(TEAM)
    raw["database"] = {"placement": "shared", "connectionLimit": 100}
    (problem,) = _problems(TEAM, raw)
    needed = connections_at_full_scale(build_settings(TEAM, "us-east-1", _raw(TEAM)).server) + 10
    assert problem.startswith("mlflow-stack:database.connectionLimit: 100 is below")
    assert f"raise connectionLimit to at least {needed}" in problem


@pytest.mark.parametrize(
    ("stack", "section", "value", "key"),
    [
        ("recsys-prod", "sharedDatabase", {"enabled": True}, "sharedDatabase"),
        ("prod", "database", {"placement": "shared"}, "database.placement"),
        ("recsys-prod", "database", {"connectionLimit": 500}, "database.connectionLimit"),
        (PLATFORM, "sharedDatabase", {"enabled": True, "multiAz": False}, "sharedDatabase.multiAz"),
        (
            PLATFORM,
            "sharedDatabase",
            {"enabled": False, "instanceClass": "db.m7g.large"},
            "sharedDatabase.enabled",
        ),
    ],
)
def test_settings_in_the_wrong_stack_are_refused(stack: str, section: str, value: Any, key: str) -> None:
    raw = {**_raw(stack), section: value}
    (problem,) = _problems(stack, raw)
    assert problem.startswith(f"mlflow-stack:{key}: ")


def test_a_platform_without_a_shared_instance_is_refused_by_the_team(tmp_path: Path) -> None:
    shutil.copy(STACK_DIR / f"Pulumi.{TEAM}.yaml", tmp_path)
    platform = yaml.safe_load((STACK_DIR / f"Pulumi.{PLATFORM}.yaml").read_text())
    del platform["config"]["mlflow-stack:sharedDatabase"]
    (tmp_path / f"Pulumi.{PLATFORM}.yaml").write_text(yaml.safe_dump(platform))
    with pytest.raises(Exception, match="has no shared database") as caught:
        graph = run_program(TEAM, stack_dir=tmp_path)
        if graph.error is not None:
            raise graph.error
    message = str(caught.value)
    assert "mlflow-stack:database.placement is shared" in message
    assert "set sharedDatabase.enabled: true in stacks/Pulumi.platform-prod.yaml" in message


def test_a_team_larger_than_the_whole_instance_is_refused(tmp_path: Path) -> None:
    shutil.copy(STACK_DIR / f"Pulumi.{TEAM}.yaml", tmp_path)
    platform = yaml.safe_load((STACK_DIR / f"Pulumi.{PLATFORM}.yaml").read_text())
    platform["config"]["mlflow-stack:sharedDatabase"]["instanceClass"] = "db.t4g.small"  # 225 connections
    (tmp_path / f"Pulumi.{PLATFORM}.yaml").write_text(yaml.safe_dump(platform))
    with pytest.raises(Exception, match=r"database\.connectionLimit: this team's role needs 406 connections"):
        graph = run_program(TEAM, stack_dir=tmp_path)
        if graph.error is not None:
            raise graph.error


def test_shipped_shared_teams_fit_their_instance_together(stack_graph: Any) -> None:
    """What no single team stack can check: the sum of the roles' limits on one instance."""
    from preview.offline import list_stacks, stack_database_placement

    shared = [s for s in list_stacks() if stack_database_placement(s) == "shared"]
    assert TEAM in shared
    limits = [
        int(_env(_containers(stack_graph(s))["db-bootstrap"])[contract.DB_APP_CONNECTION_LIMIT.name])
        for s in shared
    ]
    assert sum(limits) <= stack_graph(PLATFORM).outputs["shared_db_connection_budget"]
