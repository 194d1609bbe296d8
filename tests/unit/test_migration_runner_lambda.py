"""The deploy-time migration runner (infra/compute/migration_runner_lambda.py) against botocore's
Stubber: the requests are validated against ECS's real service model, the responses are ECS's."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from infra.compute.ecs_migration import invocation_input
from infra.compute.migration_runner_lambda import (
    MARGIN_SECONDS,
    POLL_SECONDS,
    STARTED_BY,
    MigrationFailed,
    MigrationRequest,
    handler,
    run_migration,
)

CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/mlflow-dev"
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/mlflow-dev/0123456789abcdef0123456789abcdef"
TASK_ID = "0123456789abcdef0123456789abcdef"
SNAPSHOT = "mlflow-dev-db-pre-mlflow-3-17-2"
LOG_GROUP = "/mlflow-stack/dev/server"
EVENT = json.loads(
    invocation_input(
        cluster_arn=CLUSTER,
        task_family="mlflow-dev-migrate",
        subnet_ids=["subnet-b", "subnet-a"],
        security_group_id="sg-0123",
        log_group_name=LOG_GROUP,
        snapshot_id=SNAPSHOT,
        fingerprint={"image": "repo:tag"},
    )
)


@pytest.fixture
def ecs() -> Any:
    return botocore.session.get_session().create_client(
        "ecs",
        region_name="us-east-1",
        aws_access_key_id="stub",
        aws_secret_access_key="stub",  # noqa: S106 - Stubber answers; nothing is sent
    )


def run_task_params() -> dict[str, Any]:
    return {
        "cluster": CLUSTER,
        "taskDefinition": "mlflow-dev-migrate",
        "launchType": "FARGATE",
        "count": 1,
        "startedBy": STARTED_BY,
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-a", "subnet-b"],
                "securityGroups": ["sg-0123"],
                "assignPublicIp": "DISABLED",
            }
        },
    }


def task(status: str, exit_codes: dict[str, int | None] | None = None, **extra: Any) -> dict[str, Any]:
    containers = [
        {"name": name, "lastStatus": status, **({"exitCode": code} if code is not None else {})}
        for name, code in (exit_codes or {"db-bootstrap": None, "migrate": None}).items()
    ]
    return {"taskArn": TASK_ARN, "lastStatus": status, "containers": containers, **extra}


class Clock:
    """Seconds left of the Lambda's 900, advanced by every sleep."""

    def __init__(self, left: float = 900) -> None:
        self.left = left
        self.slept = 0.0

    def remaining(self) -> float:
        return self.left

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.left -= seconds


def run(ecs: Any, clock: Clock | None = None) -> dict[str, Any]:
    clock = clock or Clock()
    return run_migration(
        ecs, MigrationRequest.from_event(EVENT), remaining_seconds=clock.remaining, sleep=clock.sleep
    )


def test_success_waits_until_stopped_and_reports_the_task(ecs):
    with Stubber(ecs) as stub:
        stub.add_response("run_task", {"tasks": [task("PROVISIONING")], "failures": []}, run_task_params())
        describe = {"cluster": CLUSTER, "tasks": [TASK_ARN]}
        stub.add_response("describe_tasks", {"tasks": [task("RUNNING")]}, describe)
        stub.add_response(
            "describe_tasks", {"tasks": [task("STOPPED", {"db-bootstrap": 0, "migrate": 0})]}, describe
        )
        clock = Clock()
        result = run(ecs, clock)
        stub.assert_no_pending_responses()
    assert result == {
        "status": "migrated",
        "taskArn": TASK_ARN,
        "logStream": f"migrate/migrate/{TASK_ID}",
        "snapshotId": SNAPSHOT,
    }
    assert clock.slept == 2 * POLL_SECONDS


def test_a_failed_migration_names_its_log_stream_and_the_snapshot(ecs):
    stopped = task(
        "STOPPED",
        {"db-bootstrap": 0, "migrate": 3},
        stopCode="EssentialContainerExited",
        stoppedReason="Essential container in task exited",
    )
    with Stubber(ecs) as stub:
        stub.add_response("run_task", {"tasks": [task("PENDING")]}, run_task_params())
        stub.add_response("describe_tasks", {"tasks": [stopped]}, {"cluster": CLUSTER, "tasks": [TASK_ARN]})
        with pytest.raises(MigrationFailed) as failure:
            run(ecs)
    message = str(failure.value)
    assert "container migrate exited 3" in message
    assert f"log group {LOG_GROUP}, stream migrate/migrate/{TASK_ID}" in message
    assert "db-bootstrap" not in message.split("stopped:")[0]  # it exited 0
    assert f"restore the pre-upgrade snapshot {SNAPSHOT}" in message
    assert "old tasks keep serving" in message
    assert "Essential container in task exited" in message


def test_a_team_on_a_shared_instance_is_pointed_at_point_in_time_recovery(ecs):
    # database.placement: shared — no per-team RDS snapshot exists (it would hold every team's data).
    shared = MigrationRequest.from_event({**EVENT, "snapshotId": None})
    stopped = task("STOPPED", {"db-bootstrap": 0, "migrate": 1}, stopCode="EssentialContainerExited")
    with Stubber(ecs) as stub:
        stub.add_response("run_task", {"tasks": [task("PENDING")]}, run_task_params())
        stub.add_response("describe_tasks", {"tasks": [stopped]}, {"cluster": CLUSTER, "tasks": [TASK_ARN]})
        with pytest.raises(MigrationFailed) as failure:
            clock = Clock()
            run_migration(ecs, shared, remaining_seconds=clock.remaining, sleep=clock.sleep)
    message = str(failure.value)
    assert "snapshot" not in message and "None" not in message
    assert "point-in-time" in message and "docs/teams.md#upgrades-and-restores" in message


def test_a_failed_bootstrap_names_its_stream_and_the_migration_that_never_ran(ecs):
    stopped = task("STOPPED", {"db-bootstrap": 1, "migrate": None})
    stopped["containers"][1]["reason"] = "dependency db-bootstrap did not succeed"
    with Stubber(ecs) as stub:
        stub.add_response("run_task", {"tasks": [task("PENDING")]}, run_task_params())
        stub.add_response("describe_tasks", {"tasks": [stopped]}, {"cluster": CLUSTER, "tasks": [TASK_ARN]})
        with pytest.raises(MigrationFailed) as failure:
            run(ecs)
    message = str(failure.value)
    assert f"container db-bootstrap exited 1 (its log: log group {LOG_GROUP}, stream " in message
    assert f"db-bootstrap/db-bootstrap/{TASK_ID}" in message
    assert "container migrate never ran (dependency db-bootstrap did not succeed" in message


def test_a_task_that_never_starts_fails_without_waiting(ecs):
    capacity = {
        "tasks": [],
        "failures": [
            {"arn": CLUSTER, "reason": "Capacity is unavailable at this time. Please try again later."}
        ],
    }
    with Stubber(ecs) as stub:
        stub.add_response("run_task", capacity, run_task_params())
        clock = Clock()
        with pytest.raises(MigrationFailed) as failure:
            run(ecs, clock)
        stub.assert_no_pending_responses()
    message = str(failure.value)
    assert "did not start (Capacity is unavailable" in message
    assert "Nothing was migrated" in message and "run `pulumi up` again" in message
    assert clock.slept == 0


def test_a_task_that_stops_before_its_containers_run_is_a_failure(ecs):
    stopped = task("STOPPED", stopCode="TaskFailedToStart", stoppedReason="CannotPullContainerError: denied")
    with Stubber(ecs) as stub:
        stub.add_response("run_task", {"tasks": [task("PENDING")]}, run_task_params())
        stub.add_response("describe_tasks", {"tasks": [stopped]}, {"cluster": CLUSTER, "tasks": [TASK_ARN]})
        with pytest.raises(MigrationFailed, match="CannotPullContainerError"):
            run(ecs)


def test_near_the_lambda_limit_it_fails_with_the_running_task_and_how_to_continue(ecs):
    # 3 polls fit before the margin, then the function gives up (the task keeps running).
    clock = Clock(left=MARGIN_SECONDS + POLL_SECONDS + 3 * POLL_SECONDS - 1)
    with Stubber(ecs) as stub:
        stub.add_response("run_task", {"tasks": [task("PENDING")]}, run_task_params())
        for _ in range(3):
            stub.add_response(
                "describe_tasks", {"tasks": [task("RUNNING")]}, {"cluster": CLUSTER, "tasks": ANY}
            )
        with pytest.raises(MigrationFailed) as failure:
            run(ecs, clock)
        stub.assert_no_pending_responses()
    message = str(failure.value)
    assert f"the migration task {TASK_ARN} is still RUNNING" in message
    assert f"aws ecs wait tasks-stopped --cluster {CLUSTER} --tasks {TASK_ARN}" in message
    assert f"stream migrate/migrate/{TASK_ID}" in message
    assert "run `pulumi up` again" in message
    assert clock.left >= MARGIN_SECONDS  # returned before Lambda would kill it


def test_the_handler_reads_the_invocation_input_and_uses_the_lambda_clock(ecs, monkeypatch):
    class Context:
        @staticmethod
        def get_remaining_time_in_millis() -> int:
            return 900_000

    import boto3

    monkeypatch.setattr(boto3, "client", lambda service: ecs)
    with Stubber(ecs) as stub:
        stub.add_response(
            "run_task", {"tasks": [task("STOPPED", {"db-bootstrap": 0, "migrate": 0})]}, run_task_params()
        )
        assert handler(EVENT, Context())["taskArn"] == TASK_ARN


def test_an_input_without_the_task_is_refused_clearly():
    with pytest.raises(MigrationFailed, match="lacks 'cluster'"):
        MigrationRequest.from_event({k: v for k, v in EVENT.items() if k != "cluster"})
