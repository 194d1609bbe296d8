"""The ECS Fargate service under Pulumi mocks: isolation, secrets, task hardening, autoscaling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from edge_harness import SECRET_ARNS, Run, build_edge, run_components, sample_spec

from infra.compute.ecs import EcsServiceArgs
from server import contract

SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
POLICY = "aws:appautoscaling/policy:Policy"


@pytest.fixture(scope="module")
def run() -> Run:
    return run_components(
        lambda: build_edge(
            service={
                "min_tasks": 2,
                "max_tasks": 6,
                "target_cpu_percent": 55,
                "target_requests_per_target": 250,
                "health_check_grace_seconds": 90,
                "log_retention_days": 90,
            }
        )
    )


def _container(run: Run) -> dict[str, Any]:
    [container] = json.loads(run.one(TASK).inputs["containerDefinitions"])
    return container


def test_service_runs_in_private_subnets_without_a_public_ip(run: Run) -> None:
    network = run.one(SERVICE).inputs["networkConfiguration"]
    assert network["assignPublicIp"] is False
    assert network["subnets"] == ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]
    assert network["securityGroups"] == ["compute-sg-id"]


def test_tasks_are_reachable_only_from_the_load_balancer(run: Run) -> None:
    service_rules = [r.inputs for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == "compute-sg-id"]
    assert service_rules == [
        {
            "securityGroupId": "compute-sg-id",
            "referencedSecurityGroupId": "edge-sg-id",
            "ipProtocol": "tcp",
            "fromPort": contract.CONTAINER_PORT,
            "toPort": contract.CONTAINER_PORT,
            "description": "MLflow from the load balancer",
        }
    ]
    # ... and the load balancer may only talk to the tasks' port.
    [alb_egress] = [r.inputs for r in run.of_type(EGRESS) if r.inputs["securityGroupId"] == "edge-sg-id"]
    assert alb_egress["referencedSecurityGroupId"] == "compute-sg-id"
    assert alb_egress["fromPort"] == alb_egress["toPort"] == contract.CONTAINER_PORT


def test_database_admits_only_the_service_on_5432(run: Run) -> None:
    [db_rule] = [
        r.inputs for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == "sg-0dddddddddddddddd"
    ]
    assert db_rule["referencedSecurityGroupId"] == "compute-sg-id"
    assert db_rule["fromPort"] == db_rule["toPort"] == 5432
    assert "cidrIpv4" not in db_rule


def test_nothing_but_the_alb_is_open_to_the_internet(run: Run) -> None:
    world = [r for r in run.of_type(INGRESS) if r.inputs.get("cidrIpv4") == "0.0.0.0/0"]
    assert world, "the ALB's default allowedCidrs should be open to the world"
    assert {r.inputs["securityGroupId"] for r in world} == {"edge-sg-id"}
    assert {r.inputs["fromPort"] for r in world} == {80, 443}


def test_secrets_reach_the_container_only_as_secrets_manager_references(run: Run) -> None:
    container = _container(run)
    secret_names = {s.name for s in contract.SECRET_SETTINGS}
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == SECRET_ARNS
    assert secret_names == set(SECRET_ARNS)
    assert not secret_names & {e["name"] for e in container["environment"]}
    assert {e["name"] for e in container["environment"]} == {s.name for s in contract.PLAIN_SETTINGS}


def test_a_secret_in_plain_environment_is_refused() -> None:
    environment = {s.name: "x" for s in contract.PLAIN_SETTINGS} | {contract.ADMIN_PASSWORD.name: "hunter2"}
    with pytest.raises(ValueError, match="MLFLOW_STACK_ADMIN_PASSWORD"):
        sample_spec(environment=environment, secrets={})


def test_container_runs_basic_auth_read_only_as_non_root(run: Run) -> None:
    container = _container(run)
    assert container["command"][-2:] == ["--app-name", "basic-auth"]
    assert container["entryPoint"] == list(contract.ENTRYPOINT)
    assert container["readonlyRootFilesystem"] is True
    assert container["user"].split(":")[0] not in {"0", "root"}
    assert container["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    [mount] = container["mountPoints"]
    assert mount["containerPath"] == "/tmp"
    volumes = run.one(TASK).inputs["volumes"]
    assert [v["name"] for v in volumes] == [mount["sourceVolume"]]
    assert 0 < container["stopTimeout"] <= 120


def test_container_health_check_calls_the_health_path(run: Run) -> None:
    check = _container(run)["healthCheck"]
    assert check["command"][0] == "CMD"
    assert f"http://127.0.0.1:{contract.CONTAINER_PORT}{contract.HEALTH_PATH}" in check["command"][-1]
    assert check["startPeriod"] == 90


def test_container_logs_to_the_stack_log_group(run: Run) -> None:
    options = _container(run)["logConfiguration"]["options"]
    log_group = run.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert options["awslogs-group"] == log_group["name"] == "/mlflow-stack/dev/server"
    assert options["awslogs-region"] == "us-east-1"
    assert log_group["retentionInDays"] == 90


def test_task_is_fargate_arm64_with_the_spec_size(run: Run) -> None:
    task = run.one(TASK).inputs
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert task["networkMode"] == "awsvpc"
    assert task["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"}
    assert (task["cpu"], task["memory"]) == ("1024", "2048")
    assert task["executionRoleArn"].endswith("role/mlflow-dev-execution")
    assert task["taskRoleArn"].endswith("role/mlflow-dev-task")


def test_service_deploys_safely_behind_the_target_group(run: Run) -> None:
    service = run.one(SERVICE).inputs
    assert service["launchType"] == "FARGATE"
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service["healthCheckGracePeriodSeconds"] == 90
    assert service["enableExecuteCommand"] is False
    assert service["desiredCount"] == 2
    assert service["deploymentMinimumHealthyPercent"] == 100
    [target] = service["loadBalancers"]
    container = _container(run)
    assert target["containerName"] == container["name"]
    assert target["containerPort"] == container["portMappings"][0]["containerPort"] == contract.CONTAINER_PORT
    assert target["targetGroupArn"].endswith("targetgroup/mlflow-dev-tg")


def test_cluster_has_container_insights(run: Run) -> None:
    cluster = run.one("aws:ecs/cluster:Cluster").inputs
    assert {"name": "containerInsights", "value": "enabled"} in cluster["settings"]


def test_autoscaling_tracks_cpu_and_requests_between_min_and_max(run: Run) -> None:
    target = run.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 6)
    assert target["resourceId"] == "service/mlflow-dev/mlflow-dev-server"
    assert target["scalableDimension"] == "ecs:service:DesiredCount"

    policies = {
        p.inputs["targetTrackingScalingPolicyConfiguration"]["predefinedMetricSpecification"][
            "predefinedMetricType"
        ]: p.inputs
        for p in run.of_type(POLICY)
    }
    assert set(policies) == {"ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"}
    cpu = policies["ECSServiceAverageCPUUtilization"]["targetTrackingScalingPolicyConfiguration"]
    requests = policies["ALBRequestCountPerTarget"]["targetTrackingScalingPolicyConfiguration"]
    assert cpu["targetValue"] == 55
    assert requests["targetValue"] == 250
    assert requests["predefinedMetricSpecification"]["resourceLabel"] == (
        "app/mlflow-dev-alb/50dc6c495c0c9188/targetgroup/mlflow-dev-tg/73e2d6bc24d8a067"
    )
    for policy in (cpu, requests):
        assert (policy["scaleInCooldown"], policy["scaleOutCooldown"]) == (300, 60)
    assert all(p.inputs["policyType"] == "TargetTrackingScaling" for p in run.of_type(POLICY))


def test_execute_command_can_be_switched_on_explicitly() -> None:
    run = run_components(lambda: build_edge(service={"enable_execute_command": True}))
    assert run.one(SERVICE).inputs["enableExecuteCommand"] is True


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ValueError, match="min_tasks"):
        EcsServiceArgs(
            name_prefix="mlflow-dev",
            spec=sample_spec(),
            region="us-east-1",
            vpc_id="vpc-1",
            private_subnet_ids=[],
            load_balancer_security_group_id="sg-1",
            target_group_arn="arn",
            request_count_resource_label="label",
            database_security_group_id="sg-2",
            execution_role_arn="arn",
            task_role_arn="arn",
            log_group_name="/x",
            log_retention_days=14,
            min_tasks=3,
            max_tasks=2,
        )


def test_an_image_without_a_scratch_volume_runs_with_a_writable_root() -> None:
    """Fargate task volumes are root-owned 0755 unless the image declares them as VOLUME, so a
    non-root server could not write /tmp on one: no volume then, and a writable root instead."""
    from infra.compute.ecs import container_definitions

    [container] = container_definitions(
        sample_spec(read_only_root=False),
        image="example.com/mlflow:1",
        environment={},
        secrets={},
        log_group_name="/x",
        region="us-east-1",
        health_check_grace_seconds=60,
    )
    assert container["readonlyRootFilesystem"] is False
    assert container["mountPoints"] == []
    assert container["user"] == "10001:10001"
