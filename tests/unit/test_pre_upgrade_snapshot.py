"""The restore point before an MLflow upgrade, on every stack file's resource graph.

A new MLflow version migrates the schemas when its first server (ECS task) or migration Job
starts; the stack takes a manual RDS snapshot first and the consumers wait for it
("Creating a DB snapshot for a Single-AZ DB instance", Amazon RDS User Guide:
https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_CreateSnapshot.html).
"""

from __future__ import annotations

import pytest

from infra.compute.image import mlflow_version
from preview.offline import list_stacks, stack_backend, stack_database_placement, stack_mode

# Stacks with an instance of their own: a platform stack runs no server, and a team on the platform's
# shared instance takes no snapshot of it (tests/unit/test_shared_database_graph.py).
STACK_FILES = [
    s for s in list_stacks() if stack_mode(s) != "platform" and stack_database_placement(s) != "shared"
]
SNAPSHOT = "aws:rds/snapshot:Snapshot"


@pytest.mark.parametrize("stack", STACK_FILES)
def test_a_snapshot_per_mlflow_version_is_taken_before_anything_migrates(stack_graph, stack):
    graph = stack_graph(stack)
    instance = graph.one("aws:rds/instance:Instance")
    [snapshot] = graph.of_type(SNAPSHOT)
    version = mlflow_version().replace(".", "-")
    assert snapshot.get("dbSnapshotIdentifier") == f"{instance.get('identifier')}-pre-mlflow-{version}"
    assert snapshot.get("dbInstanceIdentifier") == instance.get("identifier")
    assert graph.depends_on(snapshot, instance)
    if stack_backend(stack) == "ecs":
        migrators = [
            t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition") if "-compute-" in t.name
        ]
    else:
        migrators = graph.of_type("kubernetes:batch/v1:Job")
    assert migrators
    for consumer in migrators:
        assert graph.depends_on(consumer, snapshot), consumer.name
    assert graph.outputs["pre_upgrade_snapshot_id"] == snapshot.get("dbSnapshotIdentifier")
