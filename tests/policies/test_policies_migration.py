"""mlflow-migrates-before-rollout: the server's task definition waits for the deploy's migration run."""

from __future__ import annotations

import json
from dataclasses import replace

from policy_helpers import res, violations

from preview.offline import run_program

RULE = "mlflow-migrates-before-rollout"
ENTRYPOINT = ["python", "-m", "server.entrypoint"]


def _task(name: str, command: list[str]) -> object:
    definition = [
        {"name": "c", "image": "repo/mlflow-server:1", "entryPoint": ENTRYPOINT, "command": command}
    ]
    return res("aws:ecs/taskDefinition:TaskDefinition", name, containerDefinitions=json.dumps(definition))


def _stack(*, server_waits: bool, run_after_migration_task: bool = True) -> list:
    migrate = _task("migrate-task", ["migrate", "--app-name", "basic-auth"])
    invocation = res("aws:lambda/invocation:Invocation", "migrate-run", input="{}")
    if run_after_migration_task:
        invocation = replace(invocation, dependencies=(migrate.urn,))
    server = _task("server-task", ["serve", "--app-name", "basic-auth"])
    if server_waits:
        # Through the invocation, transitively (the kit passes it as depends_on).
        server = replace(server, dependencies=(invocation.urn,))
    return [migrate, invocation, server]


def test_a_server_created_after_the_migration_run_passes():
    assert violations(RULE, _stack(server_waits=True)) == []


def test_a_server_that_does_not_wait_for_the_migration_run_fails():
    [message] = violations(RULE, _stack(server_waits=False))
    assert message.startswith("server-task rolls MLflow servers out without waiting for a migration run")


def test_an_invocation_unrelated_to_a_migration_task_does_not_count():
    [message] = violations(RULE, _stack(server_waits=True, run_after_migration_task=False))
    assert message.startswith("server-task ")


def test_stacks_without_mlflow_servers_on_ecs_are_not_concerned():
    maintenance = _task("maintenance", ["runs", "maintenance"])
    assert violations(RULE, [maintenance]) == []


def test_the_kits_stacks_migrate_before_rolling_out(own_stacks):
    for stack, resources in own_stacks.items():
        assert violations(RULE, resources) == [], stack


def test_a_kit_stack_without_the_migration_run_fails(monkeypatch):
    """The rule catches the kit itself when the service is built without `before_rollout`."""
    from infra import platform
    from preview.build import rule_resources

    monkeypatch.setattr(platform, "migrate_before_rollout", lambda **_: None)
    graph = run_program("dev")
    assert graph.error is None, graph.error
    assert not graph.of_type("aws:lambda/invocation:Invocation")
    [message] = violations(RULE, rule_resources(graph))
    assert message.startswith("mlflow-dev-compute-task rolls MLflow servers out")
