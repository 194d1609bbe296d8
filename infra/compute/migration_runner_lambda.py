"""The AWS Lambda function `pulumi up` invokes to migrate the schemas before the ECS service changes.

Deployed as the only file of the function `<prefix>-migrate` (infra/compute/ecs_migration.py packs
it with `pulumi.AssetArchive`), so it uses the standard library and boto3 (part of the Lambda
Python runtime) only — never pulumi, never anything else of the kit.

One invocation = one migration run:
1. `ecs:RunTask` of the migration task family (its latest revision, which the invocation waits
   for): `db-bootstrap`, then `python -m server.entrypoint migrate --app-name basic-auth`, in the
   service's subnets and security group;
2. `ecs:DescribeTasks` every POLL_SECONDS until the task is STOPPED;
3. every container must have exited 0; otherwise raise. The Lambda runtime turns the exception
   into a function error, which fails the `aws.lambda_.Invocation` and so `pulumi up`, before the
   service's task definition changes: the old tasks keep serving.

Lambda stops a function after 900 s. If the task is still running a little before that, the
function raises with the task's ARN and log stream: the task keeps running (and holds the
migration's advisory lock); the operator waits for it to stop and runs `pulumi up` again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 10
# Kept back from the Lambda's limit to describe the task one last time and report it.
MARGIN_SECONDS = 20
STARTED_BY = "mlflow-stack-migrate"
RESTORE_GUIDE = "docs/upgrading.md#when-the-migration-fails"
SHARED_RESTORE_GUIDE = "docs/teams.md#upgrades-and-restores"


class MigrationFailed(RuntimeError):
    """The migration did not complete; the message says where to look and what to do."""


@dataclass(frozen=True)
class MigrationRequest:
    """The invocation's input (infra/compute/ecs_migration.py builds it)."""

    cluster: str  # cluster ARN
    task_definition: str  # the migration family; RunTask takes its latest ACTIVE revision
    subnets: Sequence[str]
    security_groups: Sequence[str]
    log_group: str
    # container name -> its awslogs-stream-prefix: a stream is <prefix>/<container>/<task id>
    log_stream_prefixes: Mapping[str, str]
    # The restore point taken before this MLflow version's migrations; None for a team on its
    # platform's shared instance (database.placement: shared), whose restore point is PITR.
    snapshot_id: str | None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> MigrationRequest:
        try:
            return cls(
                cluster=str(event["cluster"]),
                task_definition=str(event["taskDefinition"]),
                subnets=[str(s) for s in event["subnets"]],
                security_groups=[str(s) for s in event["securityGroups"]],
                log_group=str(event["logGroup"]),
                log_stream_prefixes={str(k): str(v) for k, v in event["logStreamPrefixes"].items()},
                snapshot_id=str(event["snapshotId"]) if event["snapshotId"] else None,
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise MigrationFailed(f"the invocation's input lacks {exc}: redeploy with `pulumi up`") from exc

    def log_stream(self, container: str, task_arn: str) -> str:
        prefix = self.log_stream_prefixes.get(container, container)
        return f"{prefix}/{container}/{task_arn.rsplit('/', 1)[-1]}"

    def where_to_look(self, container: str, task_arn: str) -> str:
        return f"log group {self.log_group}, stream {self.log_stream(container, task_arn)}"

    def restore_hint(self) -> str:
        if self.snapshot_id is None:
            restore = (
                "restore the shared instance to a time before this deploy as a new instance "
                f"(point-in-time) and copy this team's two databases back — {SHARED_RESTORE_GUIDE}."
            )
        else:
            restore = (
                f"restore the pre-upgrade snapshot {self.snapshot_id} "
                f"(database.restoreFromSnapshot: {self.snapshot_id}) — {RESTORE_GUIDE}."
            )
        return (
            "The ECS service was not changed: the old tasks keep serving. A failed migration rolls "
            "its transaction back (the schema stays at the revision it started from); if the "
            f"databases are damaged, {restore}"
        )


def run_migration(
    ecs: Any,
    request: MigrationRequest,
    *,
    remaining_seconds: Callable[[], float],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Start the migration task, wait until it stopped, check every container's exit code."""
    started = ecs.run_task(
        cluster=request.cluster,
        taskDefinition=request.task_definition,
        launchType="FARGATE",
        count=1,
        startedBy=STARTED_BY,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": list(request.subnets),
                "securityGroups": list(request.security_groups),
                "assignPublicIp": "DISABLED",
            }
        },
    )
    tasks = started.get("tasks") or []
    if not tasks:
        reasons = "; ".join(
            f"{f.get('reason', 'unknown')}{': ' + f['detail'] if f.get('detail') else ''}"
            for f in started.get("failures") or []
        )
        raise MigrationFailed(
            f"the migration task did not start ({reasons or 'RunTask returned no task'}). Nothing was "
            "migrated and the ECS service was not changed; run `pulumi up` again (Fargate capacity "
            "shortages usually pass within minutes)."
        )
    task_arn = str(tasks[0]["taskArn"])
    task = tasks[0]
    while task.get("lastStatus") != "STOPPED":
        if remaining_seconds() < POLL_SECONDS + MARGIN_SECONDS:
            raise MigrationFailed(
                f"the migration task {task_arn} is still {task.get('lastStatus', 'starting')} near the "
                "Lambda function's 15-minute limit. It keeps running (its log: "
                f"{request.where_to_look('migrate', task_arn)}). The ECS service was not changed. Wait "
                f"until it stopped (`aws ecs wait tasks-stopped --cluster {request.cluster} --tasks "
                f"{task_arn}`), check its exit code, then run `pulumi up` again: the next run finds the "
                "schemas migrated (or waits on the migration lock) and the deploy continues."
            )
        sleep(POLL_SECONDS)
        described = ecs.describe_tasks(cluster=request.cluster, tasks=[task_arn])
        if not described.get("tasks"):
            raise MigrationFailed(
                f"the migration task {task_arn} disappeared ({described.get('failures')}); "
                + request.restore_hint()
            )
        task = described["tasks"][0]
    failed = _failed_containers(task)
    if failed:
        details = "; ".join(
            f"container {name} {outcome} (its log: {request.where_to_look(name, task_arn)})"
            for name, outcome in failed
        )
        stopped = task.get("stoppedReason") or task.get("stopCode") or "unknown"
        raise MigrationFailed(
            f"the MLflow migration failed: {details}; task {task_arn} stopped: {stopped}. "
            + request.restore_hint()
        )
    return {
        "status": "migrated",
        "taskArn": task_arn,
        "logStream": request.log_stream("migrate", task_arn),
        "snapshotId": request.snapshot_id,
    }


def _failed_containers(task: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, what happened) of every container that did not exit 0. A container without an exit
    code never ran (image pull, secrets, or an earlier container failed)."""
    containers = task.get("containers") or []
    if not containers:
        return [("(none)", "reported by ECS")]
    failed = []
    for container in containers:
        code = container.get("exitCode")
        if code == 0:
            continue
        outcome = (
            f"exited {code}"
            if code is not None
            else f"never ran ({container.get('reason') or container.get('lastStatus', 'no exit code')})"
        )
        failed.append((str(container.get("name")), outcome))
    return failed


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (`migration_runner_lambda.handler`)."""
    import boto3  # in the Lambda runtime; imported here so the module's tests need no credentials

    request = MigrationRequest.from_event(event)
    result = run_migration(
        boto3.client("ecs"),
        request,
        remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    print(f"migration task {result['taskArn']} completed; log stream {result['logStream']}")
    return result
