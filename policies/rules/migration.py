"""Schema migrations before the rollout: an ECS service's MLflow servers wait for a migration run.

The kit runs `python -m server.entrypoint migrate` as a one-off task, through a Lambda function
that `pulumi up` invokes (`aws:lambda/invocation:Invocation`, infra/compute/ecs_migration.py), and
the server's task definition is created after that invocation. Without the ordering a failed
migration would be found by the new tasks themselves, while the service is already rolling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from policies.model import Context, Resource, Violation, of_type
from policies.rules.ecs import TASK_DEFINITION, containers
from policies.rules.mlflow import _words, is_mlflow_server
from policies.rules.network import _created_after
from policies.spec import Rule

INVOCATION = "aws:lambda/invocation:Invocation"
ENTRYPOINT_MODULE = "server.entrypoint"


def runs_migration(task_definition: Resource) -> bool:
    """A task definition with a container running the kit's `server.entrypoint migrate`."""
    for container in containers(task_definition):
        words = _words(container)
        if ENTRYPOINT_MODULE in words and words[words.index(ENTRYPOINT_MODULE) + 1 :][:1] == ["migrate"]:
            return True
    return False


def check_migration_before_rollout(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    task_definitions = of_type(resources, TASK_DEFINITION)
    servers = [t for t in task_definitions if any(is_mlflow_server(c) for c in containers(t))]
    if not servers:
        return
    after = _created_after(resources)
    migrations = {t.urn for t in task_definitions if runs_migration(t)}
    runs = [i for i in of_type(resources, INVOCATION) if migrations & after[i.urn]]
    for server in servers:
        if not any(run.urn in after[server.urn] for run in runs):
            yield Violation(
                f"{server.name} rolls MLflow servers out without waiting for a migration run (an "
                "aws:lambda/invocation:Invocation after a task definition running `server.entrypoint "
                "migrate`): a failed migration would only show once the service is changing",
                server.urn,
            )


RULES = (
    Rule(
        name="mlflow-migrates-before-rollout",
        description="An ECS task definition of MLflow servers is created after the deploy's migration run.",
        enforcement="mandatory",
        remediation="Build the service with infra/compute/ecs_migration.py (EcsServiceArgs.before_rollout): "
        "the migration task runs, through the Lambda invocation, before the task definition changes.",
        check_stack=check_migration_before_rollout,
    ),
)
