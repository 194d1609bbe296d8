"""The application role on AWS, proven on every stack file's resource graph.

RDS keeps the master password (manage_master_user_password: it is generated, stored and rotated
in Secrets Manager by RDS and never enters the Pulumi state), and only the task's `db-bootstrap`
container receives it; the server and the maintenance task connect as the application role.
"Password management with Amazon RDS and AWS Secrets Manager", Amazon RDS User Guide:
https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html — its secret is
JSON with `username` and `password`, which ECS reads by key with `<arn>:password::`
("Pass Secrets Manager secrets through Amazon ECS environment variables", ECS Developer Guide).
ECS starts a container with `dependsOn ... condition SUCCESS` only after that container exited 0
("ContainerDependency", Amazon ECS API Reference).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.database import APP_USERNAME, MASTER_RESERVED_CONNECTIONS, MASTER_USERNAME
from infra.settings import build_settings
from infra.settings.models import connections_at_full_scale
from preview.offline import (
    ResourceGraph,
    iter_plain_strings,
    list_stacks,
    stack_backend,
    stack_database_placement,
    stack_mode,
)
from server import contract

# Stacks with an instance of their own: a platform stack runs no server; a team on the platform's
# shared instance has its own role there (tests/unit/test_shared_database_graph.py).
STACK_FILES = [
    s for s in list_stacks() if stack_mode(s) != "platform" and stack_database_placement(s) != "shared"
]
ECS_STACKS = [s for s in STACK_FILES if stack_backend(s) == "ecs"]
# Kubernetes stacks run the same bootstrap as the migration Job's init container:
# tests/unit/test_kubernetes_stacks.py checks it there.
RDS = "aws:rds/instance:Instance"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def _master_secret_arn(graph: ResourceGraph) -> str:
    """The RDS-managed secret, as the bootstrap container references it (the mocks answer RDS'
    MasterUserSecret like AWS: `secret:rds!db-<uuid>`), checked to come from the instance: the
    task definition is ordered after the RDS instance, whose creation makes the secret."""
    task = _server_task(graph)
    value_from = _secrets(_containers(task)["db-bootstrap"])[contract.DB_MASTER_PASSWORD.name]
    arn, _, key = value_from.partition(":password")
    assert key == "::" and ":secretsmanager:" in arn and ":secret:rds!db-" in arn, value_from
    assert graph.depends_on(task, graph.one(RDS))
    return arn


def _containers(task: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(task.get("containerDefinitions"))}


def _env(container: dict[str, Any]) -> dict[str, str]:
    # ECS container definitions say `environment`; Kubernetes containers say `env`.
    entries = container.get("environment", container.get("env", []))
    return {e["name"]: e["value"] for e in entries if "value" in e}


def _secrets(container: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in container.get("secrets", [])}


def _server_task(graph: ResourceGraph) -> Any:
    return next(t for t in graph.of_type(TASK_DEFINITION) if t.get("family", "").endswith("-server"))


@pytest.mark.parametrize("stack", STACK_FILES)
def test_rds_manages_the_master_password_and_pulumi_never_holds_it(stack_graph, stack):
    graph = stack_graph(stack)
    instance = graph.one(RDS)
    assert instance.get("manageMasterUserPassword") is True
    assert instance.get("password") is None
    assert instance.get("username") == MASTER_USERNAME
    # Encrypted with the stack's secrets key, so the execution role's existing grant decrypts it.
    key = next(
        k for k in graph.of_type("aws:kms/key:Key") if k.get("description", "").startswith("Secrets Manager")
    )
    assert instance.get("masterUserSecretKmsKeyId") == key.arn
    # No output names the master secret's value or any password.
    assert not any("master_password" in name for name in graph.outputs)
    assert graph.outputs["db_user"] == APP_USERNAME


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_only_the_bootstrap_container_receives_the_master_password(stack_graph, stack):
    graph = stack_graph(stack)
    master_secret = _master_secret_arn(graph)
    containers = _containers(_server_task(graph))
    assert list(containers) == ["db-bootstrap", "mlflow"]
    bootstrap, server = containers["db-bootstrap"], containers["mlflow"]
    assert bootstrap["essential"] is False and server["essential"] is True
    assert server["dependsOn"] == [{"containerName": "db-bootstrap", "condition": "SUCCESS"}]
    assert bootstrap["command"] == list(contract.BOOTSTRAP_COMMAND)
    assert bootstrap["user"] == server["user"] and bootstrap["readonlyRootFilesystem"] is True

    assert _secrets(bootstrap)[contract.DB_MASTER_PASSWORD.name] == f"{master_secret}:password::"
    assert _secrets(bootstrap)[contract.DB_PASSWORD.name] == _secrets(server)[contract.DB_PASSWORD.name]
    assert master_secret not in json.dumps(server)
    env = _env(bootstrap)
    assert env[contract.DB_MASTER_USER.name] == MASTER_USERNAME
    assert env[contract.DB_USER.name] == _env(server)[contract.DB_USER.name] == APP_USERNAME
    for name in (contract.DB_HOST, contract.DB_PORT, contract.DB_NAME, contract.AUTH_DB_NAME):
        assert env[name.name] == _env(server)[name.name]


@pytest.mark.parametrize("stack", STACK_FILES)
def test_the_application_role_leaves_the_master_room_to_connect(stack_graph, stack):
    graph = stack_graph(stack)
    raw = {key.removeprefix("mlflow-stack:"): value for key, value in graph.config.items()}
    region = raw.pop("aws:region", None)
    settings = build_settings(graph.stack, region, {k: v for k, v in raw.items() if ":" not in k})
    if stack_backend(stack) == "ecs":
        bootstrap_env = _env(_containers(_server_task(graph))["db-bootstrap"])
    else:
        [init] = graph.one("kubernetes:batch/v1:Job").get("spec.template.spec.initContainers")
        bootstrap_env = _env(init)
    limit = int(bootstrap_env[contract.DB_APP_CONNECTION_LIMIT.name])
    assert limit == settings.database.max_connections - MASTER_RESERVED_CONNECTIONS
    # Every replica the autoscaler may run, every pool full, fits under the role's limit.
    assert connections_at_full_scale(settings.server) <= limit


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_execution_role_reads_the_master_secret_and_the_task_role_does_not(stack_graph, stack):
    graph = stack_graph(stack)
    master_secret = _master_secret_arn(graph)
    task = _server_task(graph)
    roles = {r.arn: r for r in graph.of_type("aws:iam/role:Role")}
    execution, task_role = roles[task.get("executionRoleArn")], roles[task.get("taskRoleArn")]

    def readable_secrets(role: Any) -> set[str]:
        found: set[str] = set()
        for policy in graph.of_type(ROLE_POLICY):
            if policy.get("role") not in (role.id, role.get("name")):
                continue
            for statement in json.loads(policy.get("policy"))["Statement"]:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                if "secretsmanager:GetSecretValue" in actions and statement["Effect"] == "Allow":
                    found |= set(iter_plain_strings(statement["Resource"]))
        return found

    assert master_secret in readable_secrets(execution)
    assert master_secret not in readable_secrets(task_role)
    # The maintenance task connects as the application role and never gets the master secret; the
    # deploy's migration task (infra/compute/ecs_migration.py) runs the server's db-bootstrap container.
    for other in graph.of_type(TASK_DEFINITION):
        if other is task:
            continue
        for name, container in _containers(other).items():
            if name == "db-bootstrap" and other.get("family", "").endswith("-migrate"):
                assert container == _containers(task)["db-bootstrap"]
                continue
            assert master_secret not in json.dumps(container)
            if contract.DB_USER.name in _env(container):
                assert _env(container)[contract.DB_USER.name] == APP_USERNAME
