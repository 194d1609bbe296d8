"""The deployer policy of platform and team stacks: a team's deployer reaches the platform's ALB and
cluster only where the team's own resources live (its listener rules, its service), and the
platform's deployer holds no data permission."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy.deployer_policy import PolicyOptions, build_deployer_policy
from preview.offline import list_stacks, stack_mode

ACCOUNT = "111122223333"
TEAM_STACKS = [s for s in list_stacks() if stack_mode(s) == "team"]
PLATFORM_STACKS = [s for s in list_stacks() if stack_mode(s) == "platform"]
ELB = "arn:aws:elasticloadbalancing:us-east-1:111122223333"


def _statements(graph: Any) -> dict[str, dict[str, Any]]:
    policy = build_deployer_policy(graph, PolicyOptions(account_id=ACCOUNT))
    return {s["Sid"]: s for s in policy.statements}


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_deployer_adds_rules_to_the_shared_alb_but_cannot_touch_the_alb(
    stack: str, stack_graph: Any
) -> None:
    elb = _statements(stack_graph(stack))["StackLoadBalancer"]["Resource"]
    assert f"{ELB}:listener-rule/app/mlflow-platform-prod-alb/*/*/*" in elb
    assert not any(arn.startswith(f"{ELB}:loadbalancer/app/mlflow-platform-prod-alb") for arn in elb)
    team = stack.rsplit("-", 1)[0]
    assert f"{ELB}:targetgroup/mlflow-{team}-prod-tg/*" in elb


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_deployer_runs_its_service_in_the_shared_cluster_not_the_cluster(
    stack: str, stack_graph: Any
) -> None:
    ecs = _statements(stack_graph(stack))["StackEcsClusterServicesAndTasks"]["Resource"]
    assert "arn:aws:ecs:us-east-1:111122223333:service/mlflow-platform-prod/*" in ecs
    assert "arn:aws:ecs:us-east-1:111122223333:cluster/mlflow-platform-prod" not in ecs


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_deployer_reaches_only_its_own_data(stack: str, stack_graph: Any) -> None:
    document = json.dumps(_statements(stack_graph(stack)))
    for other in TEAM_STACKS:
        if other != stack:
            assert f"mlflow-stack/{other}/" not in document  # the other team's secrets
            assert f"mlflow-{other.rsplit('-', 1)[0]}-prod-" not in document


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_platform_deployer_has_no_secret_or_database_permissions(stack: str, stack_graph: Any) -> None:
    """None but the shared instance's, when the platform has one (sharedDatabase.enabled): the
    deployer creates that instance, and RDS its managed master secret, never a team's."""
    statements = _statements(stack_graph(stack))
    assert "StackSecrets" not in statements
    shared = bool(stack_graph(stack).of_type("aws:rds/instance:Instance"))
    assert ("StackDatabase" in statements) == shared
    if shared:
        prefix = f"arn:aws:rds:us-east-1:111122223333:db:mlflow-{stack}-shared-db"
        assert [r for r in statements["StackDatabase"]["Resource"] if ":db:" in r] == [prefix]
    creating = {
        a: sid for sid, s in statements.items() for a in s["Action"] if a.startswith("secretsmanager:Create")
    }
    assert set(creating.values()) <= ({"RdsManagedMasterSecret"} if shared else set())
    rds_creates = {sid for sid, s in statements.items() for a in s["Action"] if a.startswith("rds:Create")}
    assert rds_creates <= ({"StackDatabase"} if shared else set())
