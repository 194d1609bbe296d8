"""What the deployer additionally needs while a stack restores its database (`database.restoreFrom…`).

RDS authorizes a restore on the new instance *and* on its source — the snapshot for
RestoreDBInstanceFromDBSnapshot, the source instance for RestoreDBInstanceToPointInTime
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonrds.html). So the
actions and the source ARNs are granted only while the stack file names a source, like the final
snapshot's `rds:CreateDBSnapshot`.
"""

from __future__ import annotations

from collections.abc import Callable

from preview.offline import ResourceGraph

RESTORE_FROM_SNAPSHOT = "rds:RestoreDBInstanceFromDBSnapshot"
RESTORE_TO_POINT_IN_TIME = "rds:RestoreDBInstanceToPointInTime"


def restore_actions(graph: ResourceGraph) -> set[str]:
    actions = set()
    for instance in graph.of_type("aws:rds/instance:Instance"):
        if instance.get("snapshotIdentifier"):
            actions.add(RESTORE_FROM_SNAPSHOT)
        if instance.get("restoreToPointInTime"):
            actions.add(RESTORE_TO_POINT_IN_TIME)
    return actions


def restore_source_arns(graph: ResourceGraph, arn: Callable[[str, str], str]) -> list[str]:
    """The snapshot (identifier or ARN) or the source instance each restoring instance names."""
    arns = []
    for instance in graph.of_type("aws:rds/instance:Instance"):
        snapshot = instance.get("snapshotIdentifier")
        if snapshot:
            arns.append(snapshot if snapshot.startswith("arn:") else arn("rds", f"snapshot:{snapshot}"))
        point = instance.get("restoreToPointInTime") or {}
        if point.get("sourceDbInstanceIdentifier"):
            arns.append(arn("rds", f"db:{point['sourceDbInstanceIdentifier']}"))
    return arns
