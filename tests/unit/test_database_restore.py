"""Restoring the database on AWS: the stack settings `database.restoreFromSnapshot` /
`restoreFromInstance` + `restoreTime` on the resource graph under mocks, the requests RDS would get
checked against botocore's own service model, and `db status --stack` reading backups through a
botocore Stubber. Plus pg_stat_statements in the parameter group (`db doctor`)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from infra.settings import SettingsError, build_settings
from lifecycle.db_status import rds_last_backup
from lifecycle.db_target import resolve_stack_database
from preview.offline import run_program

RDS = "aws:rds/instance:Instance"
SNAPSHOT = "rds:mlflow-staging-db-2026-01-31-03-10"
BASE: dict[str, Any] = {
    "owner": "ml-platform@example.com",
    "costCenter": "CC-4100",
    "domain": {"name": "mlflow.dev.example.com", "hostedZoneId": "Z04517273RN5WZ0CTKS7E"},
}
RDS_MODEL = botocore.session.get_session().get_service_model("rds")


def stubbed_client(service: str) -> Any:
    return boto3.client(
        service,
        region_name="eu-west-1",
        aws_access_key_id="stubbed",
        aws_secret_access_key="stubbed",  # noqa: S106 - Stubber answers; nothing is signed for AWS
    )


def restored(database: dict[str, Any]) -> Any:
    return _restored(tuple(sorted(database.items())))


@functools.cache
def _restored(database: tuple[tuple[str, str], ...]) -> Any:
    # Cached: the program under mocks takes seconds, and several tests read the same graph.
    return run_program("staging", config_overrides={"database": dict(database)})


@pytest.fixture(scope="module")
def fresh() -> Any:
    return run_program("staging")


@pytest.fixture(scope="module")
def from_snapshot() -> Any:
    return restored({"restoreFromSnapshot": SNAPSHOT})


def test_a_snapshot_restore_is_a_new_instance_with_the_stacks_settings(
    fresh: Any, from_snapshot: Any
) -> None:
    assert from_snapshot.error is None, from_snapshot.error
    new, old = from_snapshot.one(RDS), fresh.one(RDS)
    assert new.get("snapshotIdentifier") == SNAPSHOT
    assert re.fullmatch(r"mlflow-staging-db-r[0-9a-f]{8}", new.get("identifier"))
    assert new.get("identifier") != old.get("identifier")
    # Same settings as the instance it replaces.
    for key in (
        "instanceClass",
        "multiAz",
        "backupRetentionPeriod",
        "storageType",
        "allocatedStorage",
        "maxAllocatedStorage",
        "publiclyAccessible",
        "caCertIdentifier",
        "deletionProtection",
        "manageMasterUserPassword",
        "engineVersion",
    ):
        assert new.get(key) == old.get(key), key
    assert new.get("storageEncrypted") is True
    # The replaced instance's point-in-time window outlives it (retained automated backups).
    assert new.get("deleteAutomatedBackups") is False and old.get("deleteAutomatedBackups") is False
    # The final snapshot of the restored instance is named after it, so it cannot collide.
    assert new.get("finalSnapshotIdentifier").startswith(new.get("identifier") + "-final-")
    # The server, `db status` and the alarms follow the restored instance.
    assert from_snapshot.outputs["db_instance_identifier"] == new.get("identifier")
    assert from_snapshot.outputs["db_endpoint"].startswith(new.get("identifier") + ".")


def test_what_rds_takes_from_the_snapshot_is_not_set(from_snapshot: Any) -> None:
    """RestoreDBInstanceFromDBSnapshot accepts no master user, database name for PostgreSQL, or
    KMS key (the snapshot's key is kept): setting them would make Pulumi replace the restored
    instance on the next `up`, whose values then differ."""
    shape = RDS_MODEL.operation_model("RestoreDBInstanceFromDBSnapshot").input_shape.members
    assert not {"MasterUsername", "KmsKeyId", "StorageEncrypted"} & set(shape)
    instance = from_snapshot.one(RDS)
    assert instance.get("username") is None and instance.get("kmsKeyId") is None
    assert instance.get("dbName") is None


def test_the_snapshot_restore_request_is_valid_for_rds(from_snapshot: Any) -> None:
    instance = from_snapshot.one(RDS)
    request = {
        "DBInstanceIdentifier": instance.get("identifier"),
        "DBSnapshotIdentifier": instance.get("snapshotIdentifier"),
        "DBInstanceClass": instance.get("instanceClass"),
        "DBSubnetGroupName": instance.get("dbSubnetGroupName"),
        "MultiAZ": instance.get("multiAz"),
        "PubliclyAccessible": instance.get("publiclyAccessible"),
        "VpcSecurityGroupIds": instance.get("vpcSecurityGroupIds"),
        "DBParameterGroupName": instance.get("parameterGroupName"),
        "DeletionProtection": instance.get("deletionProtection"),
        "ManageMasterUserPassword": instance.get("manageMasterUserPassword"),
        "MasterUserSecretKmsKeyId": instance.get("masterUserSecretKmsKeyId"),
        "CACertificateIdentifier": instance.get("caCertIdentifier"),
        "BackupRetentionPeriod": instance.get("backupRetentionPeriod"),
        "StorageType": instance.get("storageType"),
        "EnableCloudwatchLogsExports": instance.get("enabledCloudwatchLogsExports"),
    }
    shape = RDS_MODEL.operation_model("RestoreDBInstanceFromDBSnapshot").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize(
    ("restore_time", "expected"),
    [
        ("latest", {"useLatestRestorableTime": True}),
        ("2026-01-31T12:00:00Z", {"restoreTime": "2026-01-31T12:00:00Z"}),
    ],
)
def test_a_point_in_time_restore_names_the_source_and_the_time(
    restore_time: str, expected: dict[str, Any]
) -> None:
    graph = restored({"restoreFromInstance": "mlflow-staging-db", "restoreTime": restore_time})
    assert graph.error is None, graph.error
    instance = graph.one(RDS)
    point = instance.get("restoreToPointInTime")
    assert point["sourceDbInstanceIdentifier"] == "mlflow-staging-db"
    assert {k: v for k, v in point.items() if k != "sourceDbInstanceIdentifier" and v is not None} == expected
    assert re.fullmatch(r"mlflow-staging-db-r[0-9a-f]{8}", instance.get("identifier"))
    request = {
        "SourceDBInstanceIdentifier": point["sourceDbInstanceIdentifier"],
        "TargetDBInstanceIdentifier": instance.get("identifier"),
        **({"UseLatestRestorableTime": True} if restore_time == "latest" else {}),
        **({"RestoreTime": datetime(2026, 1, 31, 12, tzinfo=UTC)} if restore_time != "latest" else {}),
        "ManageMasterUserPassword": True,
    }
    shape = RDS_MODEL.operation_model("RestoreDBInstanceToPointInTime").input_shape
    assert not ParamValidator().validate(request, shape).has_errors()


@pytest.mark.parametrize(
    ("database", "key", "message"),
    [
        (
            {
                "restoreFromSnapshot": SNAPSHOT,
                "restoreFromInstance": "mlflow-staging-db",
                "restoreTime": "latest",
            },
            "database.restoreFromSnapshot",
            "not both",
        ),
        ({"restoreFromInstance": "mlflow-staging-db"}, "database.restoreTime", "is missing"),
        ({"restoreTime": "latest"}, "database.restoreTime", "without database.restoreFromInstance"),
        ({"restoreFromSnapshot": "snap shot!"}, "database.restoreFromSnapshot", "DB snapshot identifier"),
        (
            {"restoreFromInstance": "mlflow-staging-db", "restoreTime": "yesterday"},
            "database.restoreTime",
            "2026-01-31T12:00:00Z",
        ),
    ],
)
def test_a_restore_setting_that_cannot_work_is_refused_with_one_message(
    database: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        build_settings("staging", "us-east-1", {**BASE, "database": database})
    lines = [line for line in str(caught.value).splitlines() if key in line]
    assert len(lines) == 1 and message in lines[0], str(caught.value)


def test_the_parameter_group_preloads_pg_stat_statements_at_the_next_reboot(fresh: Any) -> None:
    parameters = {p["name"]: p for p in fresh.one("aws:rds/parameterGroup:ParameterGroup").get("parameters")}
    preload = parameters["shared_preload_libraries"]
    assert preload["value"] == "pg_stat_statements" and preload["applyMethod"] == "pending-reboot"


# --- db status --stack: the backups, read through the RDS API --------------------------------------


def test_status_reads_the_newest_automated_snapshot_and_the_pitr_window() -> None:
    rds = stubbed_client("rds")
    instance = "mlflow-prod-db-r1a2b3c4d"
    with Stubber(rds) as stub:
        stub.add_response(
            "describe_db_instances",
            {
                "DBInstances": [
                    {
                        "DBInstanceIdentifier": instance,
                        "LatestRestorableTime": datetime(2026, 2, 1, 9, 55, tzinfo=UTC),
                        "BackupRetentionPeriod": 14,
                        "PreferredBackupWindow": "03:00-03:30",
                    }
                ]
            },
            {"DBInstanceIdentifier": instance},
        )
        stub.add_response(
            "describe_db_snapshots",
            {
                "DBSnapshots": [
                    {
                        "DBSnapshotIdentifier": "rds:a",
                        "SnapshotCreateTime": datetime(2026, 1, 31, 3, 9, tzinfo=UTC),
                    },
                    {"DBSnapshotIdentifier": "rds:creating", "Status": "creating"},
                ],
                "Marker": "page-2",
            },
            {"DBInstanceIdentifier": instance, "SnapshotType": "automated"},
        )
        stub.add_response(
            "describe_db_snapshots",
            {
                "DBSnapshots": [
                    {
                        "DBSnapshotIdentifier": "rds:b",
                        "SnapshotCreateTime": datetime(2026, 2, 1, 3, 11, tzinfo=UTC),
                        "Status": "available",
                    }
                ]
            },
            {"DBInstanceIdentifier": instance, "SnapshotType": "automated", "Marker": "page-2"},
        )
        backup = rds_last_backup(rds, instance)
        stub.assert_no_pending_responses()
    assert backup["newest_snapshot"] == "rds:b" and backup["created_at"] == "2026-02-01T03:11:00+00:00"
    assert backup["latest_restorable_time"] == "2026-02-01T09:55:00+00:00"
    assert backup["backup_retention_days"] == 14 and backup["automated_snapshots"] == 2


def test_stack_database_target_reads_the_role_password_from_secrets_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = stubbed_client("secretsmanager")
    arn = "arn:aws:secretsmanager:eu-west-1:307946651234:secret:mlflow-stack/search-prod/db-password-AbCdEf"
    outputs = {
        "db_endpoint": "mlflow-search-prod-db.c0ffee.eu-west-1.rds.amazonaws.com",
        "db_port": 5432,
        "db_name": "mlflow",
        "db_user": "mlflow_app",
        "db_password_secret_arn": arn,
        "db_instance_identifier": "mlflow-search-prod-db",
        "region": "eu-west-1",
    }
    value = "p@ss:w/rd-" + "x" * 20
    with Stubber(secrets) as stub:
        stub.add_response("get_secret_value", {"SecretString": value}, {"SecretId": arn})
        monkeypatch.setattr(boto3, "client", lambda service, region_name=None: secrets)
        target = resolve_stack_database("search-prod", host="127.0.0.1", port=15432, outputs=outputs)
    assert (target.host, target.port, target.user, target.sslmode) == (
        "127.0.0.1",
        15432,
        "mlflow_app",
        "require",
    )
    assert target.rds_instance == "mlflow-search-prod-db" and target.auth_db == "mlflow_auth"
    assert target.password == value and value not in repr(target) and value not in str(target.describe())


# --- the deployer's policy grants the restore only while one is configured -----------------------


def _rds_statement(graph: Any) -> dict[str, Any]:
    from deploy.deployer_policy import PolicyOptions, build_deployer_policy

    policy = build_deployer_policy(graph, PolicyOptions(account_id="111122223333"))
    return next(s for s in policy.statements if s["Sid"] == "StackDatabase")


def test_the_deployer_may_restore_from_exactly_the_named_snapshot(fresh: Any, from_snapshot: Any) -> None:
    from deploy.deployer_restore import RESTORE_FROM_SNAPSHOT, RESTORE_TO_POINT_IN_TIME

    plain = _rds_statement(fresh)
    assert not {RESTORE_FROM_SNAPSHOT, RESTORE_TO_POINT_IN_TIME} & set(plain["Action"])
    restoring = _rds_statement(from_snapshot)
    assert (
        RESTORE_FROM_SNAPSHOT in restoring["Action"] and RESTORE_TO_POINT_IN_TIME not in restoring["Action"]
    )
    assert f"arn:aws:rds:us-east-1:111122223333:snapshot:{SNAPSHOT}" in restoring["Resource"]
    identifier = from_snapshot.one(RDS).get("identifier")
    assert f"arn:aws:rds:us-east-1:111122223333:db:{identifier}" in restoring["Resource"]


def test_the_deployer_may_restore_a_point_in_time_of_the_named_instance() -> None:
    from deploy.deployer_restore import RESTORE_TO_POINT_IN_TIME

    graph = restored({"restoreFromInstance": "mlflow-staging-db", "restoreTime": "latest"})
    statement = _rds_statement(graph)
    assert RESTORE_TO_POINT_IN_TIME in statement["Action"]
    assert "arn:aws:rds:us-east-1:111122223333:db:mlflow-staging-db" in statement["Resource"]
