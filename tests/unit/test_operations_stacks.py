"""Scheduled maintenance in every stack file, through the real program (preview.offline.run_program).

The maintenance task, its roles and schedule exist with each stack's settings and use the stack's
lock table; what
AWS will be asked (RegisterTaskDefinition, CreateSchedule) passes botocore's own validator; no secret
reaches plain environment; the load balancer admits the task; the whole graph still passes every
mandatory rule of the policy pack; `maintenance.enabled: false` creates none of it (the lock table
stays: tests/unit/test_locks_component.py).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from infra.compute.spec import CPU_ARCHITECTURE, RUN_AS_USER, SCRATCH_PATH
from infra.settings import build_settings
from preview.offline import SECRET_SENTINEL, ResourceGraph, iter_plain_strings, run_program

STACKS = ("dev", "staging", "prod", "search-prod")
TABLE = "aws:dynamodb/table:Table"
SCHEDULE = "aws:scheduler/schedule:Schedule"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
OPERATIONS = "mlflow-stack:operations:Operations"

GraphFor = Callable[[str], ResourceGraph]


def _prefix(graph: ResourceGraph) -> str:
    return next(r.name for r in graph.resources if r.type == "mlflow-stack:network:Network").removesuffix(
        "-network"
    )


def _settings(graph: ResourceGraph) -> Any:
    raw = {key.removeprefix("mlflow-stack:"): value for key, value in graph.config.items()}
    region = raw.pop("aws:region", None)
    return build_settings(graph.stack, region, {k: v for k, v in raw.items() if ":" not in k})


def _ops(graph: ResourceGraph) -> str:
    return f"{_prefix(graph)}-operations"


def _maintenance_task(graph: ResourceGraph) -> Any:
    return graph.one(TASK, parent=_ops(graph))


def _container(task: Any) -> dict[str, Any]:
    """The task's essential container: the maintenance command, or the server (whose task also
    runs the database bootstrap first)."""
    [container] = [c for c in json.loads(task.get("containerDefinitions")) if c.get("essential", True)]
    return container


def _parsed_command(container: Mapping[str, Any]) -> argparse.Namespace:
    """The namespace the day-2 CLI's own parser makes of the task's command."""
    import cli.runs

    captured: list[argparse.Namespace] = []
    original = argparse.ArgumentParser.parse_args

    def parse(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        parsed = original(self, args, namespace)
        captured.append(parsed)
        parsed.func = lambda _: 0
        return parsed

    argparse.ArgumentParser.parse_args = parse  # type: ignore[method-assign]
    try:
        assert cli.runs.main(list(container["command"])) == 0
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return captured[-1]


@pytest.mark.parametrize("stack", STACKS)
def test_task_roles_and_schedule_exist_and_use_the_stack_lock_table(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    prefix, ops = _prefix(graph), _ops(graph)
    assert graph.of_type(TABLE, parent=ops) == []
    assert graph.one(TABLE).get("name") == f"{prefix}-locks" == graph.outputs["lock_table"]
    [lease] = [p for p in graph.of_type(POLICY, parent=ops) if p.name == f"{ops}-task-policy"]
    [statement] = json.loads(lease.get("policy"))["Statement"]
    assert statement["Resource"].endswith(f":table/{prefix}-locks")
    roles = {r.get("name") for r in graph.of_type(ROLE, parent=ops)}
    assert roles == {f"{prefix}-maint-execution", f"{prefix}-maint-task", f"{prefix}-maint-scheduler"}
    assert graph.one(SCHEDULE, parent=ops).get("name") == graph.outputs["maintenance_schedule_name"]
    assert _maintenance_task(graph).get("family") == f"{prefix}-maintenance"


@pytest.mark.parametrize("stack", STACKS)
def test_schedule_and_command_carry_the_stack_settings(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    maintenance = _settings(graph).maintenance
    schedule = graph.one(SCHEDULE, parent=_ops(graph))
    assert schedule.get("scheduleExpression") == maintenance.schedule
    assert schedule.get("scheduleExpressionTimezone") == maintenance.timezone
    parsed = _parsed_command(_container(_maintenance_task(graph)))
    assert (parsed.command, parsed.runs_command, parsed.apply, parsed.json) == (
        "runs",
        "maintenance",
        True,
        True,
    )
    assert parsed.cleanup_older_than == f"{maintenance.cleanup_older_than_days}d"
    assert parsed.reap_older_than == f"{maintenance.reap_stuck_after_hours}h"
    assert parsed.gc_older_than == f"{maintenance.gc_older_than_days}d"
    assert parsed.cleanup_experiment == maintenance.cleanup_experiment_pattern
    assert parsed.url == graph.outputs["tracking_url"]
    assert parsed.username == graph.outputs["admin_username"]
    assert parsed.lock_table == graph.outputs["lock_table"]


def test_retention_follows_the_environment(stack_graph: GraphFor) -> None:
    cleanup = {
        stack: _parsed_command(_container(_maintenance_task(stack_graph(stack)))).cleanup_older_than
        for stack in STACKS
    }
    assert cleanup == {"dev": "30d", "staging": "90d", "prod": "180d", "search-prod": "180d"}


@pytest.mark.parametrize("stack", STACKS)
def test_task_runs_the_server_image_where_the_server_runs(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    server_task = graph.one(TASK, parent=f"{_prefix(graph)}-compute")
    task = _maintenance_task(graph)
    container, server = _container(task), _container(server_task)
    assert container["image"] == server["image"] == graph.outputs["image_ref"]
    assert task.get("runtimePlatform") == server_task.get("runtimePlatform")
    assert task.get("runtimePlatform.cpuArchitecture") == CPU_ARCHITECTURE
    assert container["user"] == server["user"] == RUN_AS_USER
    # Both run read-only with a task volume at /tmp: server/Dockerfile declares VOLUME /tmp.
    for definition, one in ((task, container), (server_task, server)):
        assert one["readonlyRootFilesystem"] is True
        assert [m["containerPath"] for m in one["mountPoints"]] == [SCRATCH_PATH]
        assert [v["name"] for v in definition.get("volumes")] == [one["mountPoints"][0]["sourceVolume"]]
    assert container["logConfiguration"]["options"]["awslogs-group"] == graph.outputs["log_group_name"]
    # The database the server uses, over TLS, with the password as a secret reference.
    env = {e["name"]: e["value"] for e in container["environment"]}
    server_env = {e["name"]: e["value"] for e in server["environment"]}
    for name in (
        "MLFLOW_STACK_DB_HOST",
        "MLFLOW_STACK_DB_PORT",
        "MLFLOW_STACK_DB_NAME",
        "MLFLOW_STACK_DB_USER",
    ):
        assert env[name] == server_env[name], name
    assert env["MLFLOW_STACK_DB_SSLMODE"] == "require"
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert secrets == {
        "MLFLOW_STACK_DB_PASSWORD": graph.outputs["db_password_secret_arn"],
        "MLFLOW_TRACKING_PASSWORD": graph.outputs["admin_password_secret_arn"],
    }


@pytest.mark.parametrize("stack", STACKS)
def test_task_runs_in_private_subnets_with_the_service_security_group(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    network = graph.one(SCHEDULE, parent=_ops(graph)).get("target.ecsParameters.networkConfiguration")
    service = graph.one("aws:ecs/service:Service").get("networkConfiguration")
    assert network["subnets"] == graph.outputs["private_subnet_ids"]
    assert network["securityGroups"] == service["securityGroups"]
    assert network.get("assignPublicIp") is False


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_reaches_plain_values(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    names = {r.name for r in graph.resources if r.parent_name == _ops(graph)} | {_ops(graph)}
    for resource in graph.resources:
        if resource.name in names:
            assert not any(SECRET_SENTINEL in s for s in iter_plain_strings(resource.inputs)), resource.name
    env_names = [e["name"] for e in _container(_maintenance_task(graph))["environment"]]
    assert not [name for name in env_names if "PASSWORD" in name or "SECRET" in name]
    assert not any(SECRET_SENTINEL in str(value) for value in graph.outputs.values())


# --- what AWS will be asked, through botocore's own validator ----------------------------------


def _validate(service: str, operation: str, params: dict[str, Any]) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("stack", STACKS)
def test_task_definition_is_a_valid_register_task_definition(stack_graph: GraphFor, stack: str) -> None:
    task = _maintenance_task(stack_graph(stack))
    _validate(
        "ecs",
        "RegisterTaskDefinition",
        {
            "family": task.get("family"),
            "containerDefinitions": json.loads(task.get("containerDefinitions")),
            "taskRoleArn": task.get("taskRoleArn"),
            "executionRoleArn": task.get("executionRoleArn"),
            "networkMode": task.get("networkMode"),
            "requiresCompatibilities": task.get("requiresCompatibilities"),
            "cpu": task.get("cpu"),
            "memory": task.get("memory"),
            "runtimePlatform": task.get("runtimePlatform"),
            "volumes": task.get("volumes"),
        },
    )
    assert (task.get("cpu"), task.get("memory")) == ("512", "1024")


@pytest.mark.parametrize("stack", STACKS)
def test_schedule_is_a_valid_create_schedule(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    schedule = graph.one(SCHEDULE, parent=_ops(graph))
    target, ecs = schedule.get("target"), schedule.get("target.ecsParameters")
    network = ecs["networkConfiguration"]
    _validate(
        "scheduler",
        "CreateSchedule",
        {
            "Name": schedule.get("name"),
            "ScheduleExpression": schedule.get("scheduleExpression"),
            "ScheduleExpressionTimezone": schedule.get("scheduleExpressionTimezone"),
            "FlexibleTimeWindow": {"Mode": schedule.get("flexibleTimeWindow.mode")},
            "Target": {
                "Arn": target["arn"],
                "RoleArn": target["roleArn"],
                "EcsParameters": {
                    "TaskDefinitionArn": ecs["taskDefinitionArn"],
                    "LaunchType": ecs["launchType"],
                    "TaskCount": int(ecs["taskCount"]),
                    "NetworkConfiguration": {
                        "awsvpcConfiguration": {
                            "Subnets": network["subnets"],
                            "SecurityGroups": network["securityGroups"],
                            "AssignPublicIp": "ENABLED" if network["assignPublicIp"] else "DISABLED",
                        }
                    },
                },
            },
        },
    )
    cluster = graph.one("aws:ecs/cluster:Cluster")
    assert target["arn"].endswith(f":cluster/{cluster.get('name')}")
    assert ecs["taskDefinitionArn"].endswith(f":task-definition/{_prefix(graph)}-maintenance:1")


# --- the load balancer's allow-list -------------------------------------------------------------


def _task_rules(graph: ResourceGraph) -> list[Any]:
    return graph.of_type(INGRESS, parent=_ops(graph))


def test_a_public_load_balancer_open_to_all_needs_no_extra_rule(stack_graph: GraphFor) -> None:
    graph = stack_graph("dev")
    assert graph.config.get("mlflow-stack:loadBalancer", {}).get("allowedCidrs") is None
    assert _task_rules(graph) == []


def test_a_cidr_restricted_public_load_balancer_admits_every_nat_gateway_on_443(
    stack_graph: GraphFor,
) -> None:
    graph = stack_graph("prod")
    alb_group = graph.named(f"{_prefix(graph)}-edge-sg").id
    rules = _task_rules(graph)
    assert len(rules) == len(graph.of_type("aws:ec2/natGateway:NatGateway")) == 3  # per_az
    for rule in rules:
        assert rule.get("securityGroupId") == alb_group
        assert (rule.get("ipProtocol"), rule.get("fromPort"), rule.get("toPort")) == ("tcp", 443, 443)
        assert rule.get("cidrIpv4").endswith("/32")
    assert len({rule.get("cidrIpv4") for rule in rules}) == 3


def test_an_internal_load_balancer_admits_the_task_security_group() -> None:
    graph = run_program("staging", config_overrides={"loadBalancer": {"internetFacing": False}})
    assert graph.error is None, graph.error
    (rule,) = _task_rules(graph)
    alb_group = graph.named(f"{_prefix(graph)}-edge-sg").id
    service_group = graph.one("aws:ecs/service:Service").get("networkConfiguration.securityGroups")
    assert rule.get("securityGroupId") == alb_group
    assert [rule.get("referencedSecurityGroupId")] == service_group
    assert (rule.get("fromPort"), rule.get("toPort")) == (443, 443)


# --- the policy pack -----------------------------------------------------------------------------


def _mandatory_violations(graph: ResourceGraph) -> list[str]:
    from policies.environment import from_stack_name
    from policies.model import Context
    from policies.rules import ALL_RULES
    from preview.build import rule_resources

    resources = rule_resources(graph)
    found = []
    for rule in ALL_RULES:
        if rule.enforcement != "mandatory":
            continue
        ctx = Context(config=rule.settings(None), environment=from_stack_name(graph.stack))
        if rule.check_resource is not None:
            found += [
                f"{rule.name}: {m}"
                for r in resources
                if rule.inspects(r.type)
                for m in rule.check_resource(r, ctx)
            ]
        else:
            found += [f"{rule.name}: {v.message}" for v in rule.check_stack(resources, ctx)]
    return found


@pytest.mark.parametrize(
    ("stack", "overrides"),
    [
        ("staging", {"loadBalancer": {"internetFacing": False}}),
        ("prod", {"maintenance": {"schedule": "rate(1 day)", "cleanupOlderThanDays": 365}}),
        ("dev", {"maintenance": {"enabled": False}}),
    ],
)
def test_variants_pass_every_mandatory_policy(stack: str, overrides: dict[str, Any]) -> None:
    graph = run_program(stack, config_overrides=overrides)
    assert graph.error is None, graph.error
    assert _mandatory_violations(graph) == []


def test_the_policy_sweep_can_fail() -> None:
    # A maintenance task that started MLflow without basic-auth would be caught by this same sweep.
    graph = run_program("dev")
    task = _maintenance_task(graph)
    [container] = json.loads(task.inputs["containerDefinitions"])
    task.inputs["containerDefinitions"] = json.dumps(
        [{**container, "entryPoint": ["mlflow"], "command": ["server"]}]
    )
    assert any(v.startswith("mlflow-basic-auth:") for v in _mandatory_violations(graph))


# --- maintenance.enabled: false ------------------------------------------------------------------


def test_disabled_maintenance_creates_none_of_it() -> None:
    graph = run_program("prod", config_overrides={"maintenance": {"enabled": False}})
    assert graph.error is None, graph.error
    assert not [
        r for r in graph.resources if r.type == OPERATIONS or r.parent_name == "mlflow-prod-operations"
    ]
    assert graph.of_type(SCHEDULE) == []
    # The server's and the deploy's migration run (infra/compute/ecs_migration.py), no maintenance task.
    assert sorted(t.name for t in graph.of_type(TASK)) == [
        "mlflow-prod-compute-migration-task",
        "mlflow-prod-compute-task",
    ]
    assert not any("maint" in (r.get("name") or "") for r in graph.of_type(ROLE))
    assert "maintenance_schedule_name" not in graph.outputs
    # Promotion still has its lock table (tests/unit/test_locks_component.py checks it in full).
    assert graph.one(TABLE).get("name") == graph.outputs["lock_table"] == "mlflow-prod-locks"
    # The load balancer keeps only its clients' allow-list.
    edge_cidrs = {r.get("cidrIpv4") for r in graph.of_type(INGRESS) if r.get("cidrIpv4")}
    assert edge_cidrs == {"10.0.0.0/8", "203.0.113.0/24"}
