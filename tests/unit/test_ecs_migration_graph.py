"""The ECS deploy's one-off migration run, on every ECS stack file's resource graph.

`pulumi up` invokes a Lambda function that runs the migration task and waits for it; the service's
task definition waits for that invocation, so a failed migration stops the deploy before the
service changes. `aws.lambda_.Invocation` (default lifecycle scope CREATE_ONLY) invokes on create
and when its `input` changes (a forced replacement) — so the input must change exactly when the
schema may: https://www.pulumi.com/registry/packages/aws/api-docs/lambda/invocation/
"""

from __future__ import annotations

import ast
import json
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import pytest
from test_iam import ABOVE_LOW, as_list, parliament, statements

from infra.compute.ecs_migration import HANDLER, HANDLER_FILE
from preview.offline import (
    RegisteredResource,
    ResourceGraph,
    list_stacks,
    run_program,
    stack_backend,
    stack_mode,
)
from server import contract

# Every stack that runs an ECS service: standalone and team stacks (a platform stack runs none).
ECS_STACKS = [s for s in list_stacks() if stack_backend(s) == "ecs" and stack_mode(s) != "platform"]
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
INVOCATION = "aws:lambda/invocation:Invocation"
FUNCTION = "aws:lambda/function:Function"
OTHER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-stack-server:other-build"


def compute_child(graph: ResourceGraph, role: str) -> RegisteredResource:
    """The ECS component's `<prefix>-compute-<role>` child (the prefix is the stack's, not the cluster's:
    a team stack's service runs in its platform's cluster)."""
    [child] = [r for r in graph.resources if r.name.endswith(f"-compute-{role}")]
    return child


def cluster_arn(graph: ResourceGraph) -> str:
    """The stack's own cluster, or (team stack) the platform's, read through the StackReference."""
    clusters = graph.of_type("aws:ecs/cluster:Cluster")
    return clusters[0].arn if clusters else str(graph.one("aws:ecs/service:Service").get("cluster"))


def containers(task_definition: RegisteredResource) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(task_definition.get("containerDefinitions"))}


def service_task(graph: ResourceGraph) -> RegisteredResource:
    [task] = [t for t in graph.of_type(TASK_DEFINITION) if t.get("family", "").endswith("-server")]
    return task


def migration_task(graph: ResourceGraph) -> RegisteredResource:
    [task] = [t for t in graph.of_type(TASK_DEFINITION) if t.get("family", "").endswith("-migrate")]
    return task


def event(graph: ResourceGraph) -> dict[str, Any]:
    return json.loads(graph.one(INVOCATION).get("input"))


@cache
def overridden(stack: str, override: str) -> ResourceGraph:
    overrides = {
        "image": {"server": {"image": OTHER_IMAGE}},
        "unrelated": {"server": {"authCacheTtlSeconds": 30, "targetCpuPercent": 50}},
    }[override]
    graph = run_program(stack, config_overrides=overrides)
    assert graph.error is None, graph.error
    return graph


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_the_migration_task_runs_the_service_image_bootstrap_first(stack_graph, stack):
    graph = stack_graph(stack)
    service, migration = service_task(graph), migration_task(graph)
    server = containers(service)["mlflow"]
    tasks = containers(migration)
    assert list(tasks) == ["db-bootstrap", "migrate"]
    migrate = tasks["migrate"]
    assert migrate["image"] == server["image"] == tasks["db-bootstrap"]["image"]
    assert migrate["command"] == list(contract.MIGRATE_COMMAND)
    assert migrate["dependsOn"] == [{"containerName": "db-bootstrap", "condition": "SUCCESS"}]
    assert tasks["db-bootstrap"] == containers(service)["db-bootstrap"]
    # The server's settings and secrets; nothing listens.
    assert migrate["environment"] == server["environment"]
    assert migrate["secrets"] == server["secrets"]
    assert "portMappings" not in migrate and "healthCheck" not in migrate
    assert migrate["readonlyRootFilesystem"] is True
    assert migrate["logConfiguration"]["options"]["awslogs-stream-prefix"] == "migrate"
    for key in ("executionRoleArn", "taskRoleArn", "cpu", "memory", "networkMode"):
        assert migration.get(key) == service.get(key), key


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_the_service_rolls_only_after_the_migration_which_runs_after_the_snapshot(stack_graph, stack):
    graph = stack_graph(stack)
    invocation = graph.one(INVOCATION)
    assert graph.depends_on(service_task(graph), invocation)
    assert graph.depends_on(graph.one("aws:ecs/service:Service"), invocation)
    snapshots = graph.of_type("aws:rds/snapshot:Snapshot")
    # A team on its platform's shared instance has none: a snapshot would hold every team's data.
    assert len(snapshots) == (0 if "pre_upgrade_snapshot_id" not in graph.outputs else 1)
    for snapshot in snapshots:
        assert graph.depends_on(invocation, snapshot)
    assert graph.depends_on(invocation, migration_task(graph))
    assert graph.depends_on(invocation, graph.one(FUNCTION))
    # The task must reach PostgreSQL on the first deploy too.
    for rule in ("out-to-db", "db-in-from-service"):
        assert graph.depends_on(invocation, compute_child(graph, rule))
    assert not graph.depends_on(migration_task(graph), service_task(graph))


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_the_invocation_names_this_stacks_task_network_and_restore_point(stack_graph, stack):
    graph = stack_graph(stack)
    request = event(graph)
    service = graph.one("aws:ecs/service:Service")
    assert request["cluster"] == cluster_arn(graph) == service.get("cluster")
    assert request["taskDefinition"] == migration_task(graph).get("family")
    assert request["subnets"] == sorted(service.get("networkConfiguration.subnets"))
    assert request["securityGroups"] == service.get("networkConfiguration.securityGroups")
    assert request["snapshotId"] == graph.outputs.get("pre_upgrade_snapshot_id")
    assert request["logGroup"] == graph.outputs["log_group_name"]
    assert request["fingerprint"]["image"] == containers(service_task(graph))["mlflow"]["image"]
    assert graph.one(INVOCATION).get("functionName") == graph.one(FUNCTION).get("name")
    # CREATE_ONLY (the default): invoked on create and when the input changes, never on delete.
    assert graph.one(INVOCATION).get("lifecycleScope") in (None, "CREATE_ONLY")


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_a_new_image_reruns_the_migration_an_unrelated_setting_does_not(stack_graph, stack):
    before = event(stack_graph(stack))
    new_image = event(overridden(stack, "image"))
    assert new_image != before
    assert new_image["fingerprint"]["image"] == OTHER_IMAGE
    unrelated = overridden(stack, "unrelated")
    # The service itself changes (another credential-cache TTL) ...
    assert (
        containers(service_task(unrelated))["mlflow"]
        != containers(service_task(stack_graph(stack)))["mlflow"]
    )
    # ... but the invocation's input, and so the migration run, does not.
    assert event(unrelated) == before


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_the_runner_may_run_only_this_task_and_pass_only_its_roles(stack_graph, stack):
    graph = stack_graph(stack)
    [policy] = [
        p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("-migration-policy")
    ]
    document = policy.get("policy")
    findings = [parliament.enhance_finding(f) for f in parliament.analyze_policy_string(document).findings]
    assert not [f for f in findings if f.severity in ABOVE_LOW], findings
    by_sid = {s["Sid"]: s for s in statements(document)}
    region = graph.config["aws:region"]
    cluster = cluster_arn(graph)
    family = migration_task(graph).get("family")
    run = by_sid["RunMigrationTask"]
    assert run["Action"] == ["ecs:RunTask"]
    assert run["Resource"] == f"arn:aws:ecs:{region}:123456789012:task-definition/{family}:*"
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": cluster}}
    assert by_sid["WatchMigrationTask"]["Resource"] == (
        f"arn:aws:ecs:{region}:123456789012:task/{graph.outputs['ecs_cluster_name']}/*"
    )
    migration = migration_task(graph)
    assert by_sid["PassMigrationTaskRoles"]["Resource"] == sorted(
        [migration.get("executionRoleArn"), migration.get("taskRoleArn")]
    )
    assert by_sid["PassMigrationTaskRoles"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    log_group = graph.one(FUNCTION).get("name")
    assert by_sid["WriteOwnLogs"]["Resource"] == [
        f"arn:aws:logs:{region}:123456789012:log-group:/aws/lambda/{log_group}",
        f"arn:aws:logs:{region}:123456789012:log-group:/aws/lambda/{log_group}:log-stream:*",
    ]
    assert set(by_sid) == {"RunMigrationTask", "WatchMigrationTask", "PassMigrationTaskRoles", "WriteOwnLogs"}
    for statement in by_sid.values():
        assert "*" not in as_list(statement["Resource"])
    (trust,) = statements(graph.named(policy.name.replace("-policy", "-role")).get("assumeRolePolicy"))
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_the_function_logs_to_its_own_group_with_retention_and_waits_its_full_limit(stack_graph, stack):
    graph = stack_graph(stack)
    function = graph.one(FUNCTION)
    [log_group] = [
        g for g in graph.of_type("aws:cloudwatch/logGroup:LogGroup") if g.name.endswith("-migration-logs")
    ]
    server_logs = compute_child(graph, "logs")
    assert log_group.get("name") == f"/aws/lambda/{function.get('name')}"
    assert log_group.get("retentionInDays") == server_logs.get("retentionInDays")
    assert log_group.get("kmsKeyId") == server_logs.get("kmsKeyId")
    assert graph.depends_on(function, log_group)
    assert function.get("timeout") == 900  # Lambda's maximum
    assert function.get("handler") == HANDLER


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_the_handler_is_packaged_alone_and_never_imports_pulumi(stack_graph, stack):
    code = stack_graph(stack).one(FUNCTION).inputs["code"]
    assert isinstance(code, pulumi.AssetArchive)
    [(name, asset)] = code.assets.items()
    assert name == f"{HANDLER.split('.')[0]}.py"
    assert isinstance(asset, pulumi.FileAsset) and Path(asset.path).resolve() == HANDLER_FILE.resolve()
    tree = ast.parse(HANDLER_FILE.read_text())
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    # The Lambda Python runtime: the standard library and boto3, nothing of the kit.
    assert imported <= {"__future__", "time", "collections", "dataclasses", "typing", "boto3"}, imported
