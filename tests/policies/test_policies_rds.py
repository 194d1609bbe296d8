"""RDS rules on crafted instances."""

from __future__ import annotations

from policy_helpers import res, violations

INSTANCE = "aws:rds/instance:Instance"
GOOD = {
    "storageEncrypted": True,
    "publiclyAccessible": False,
    "backupRetentionPeriod": 14,
    "multiAz": True,
    "deletionProtection": True,
    "parameterGroupName": "pg-ssl",
}
SSL_GROUP = res(
    "aws:rds/parameterGroup:ParameterGroup",
    "pg-ssl",
    family="postgres17",
    parameters=[
        {"name": "rds.force_ssl", "value": "1"},
        {"name": "log_min_duration_statement", "value": "500"},
    ],
)


def db(**overrides):
    return res(INSTANCE, "db", **{**GOOD, **overrides})


def test_a_prod_grade_instance_passes_every_rds_rule():
    for rule in ("rds-storage-encrypted", "rds-not-public", "rds-backup-retention"):
        assert violations(rule, db()) == [], rule
    for rule in ("rds-prod-multi-az", "rds-prod-deletion-protection"):
        assert violations(rule, db(), environment="prod") == [], rule
    assert violations("rds-force-ssl", [db(), SSL_GROUP]) == []


def test_unencrypted_storage_fails():
    assert violations("rds-storage-encrypted", db(storageEncrypted=False)) == ["storageEncrypted is not true"]
    assert violations("rds-storage-encrypted", res(INSTANCE, "db")) == ["storageEncrypted is not true"]


def test_public_database_fails():
    assert violations("rds-not-public", db(publiclyAccessible=True)) == ["publiclyAccessible is true"]


def test_short_or_unset_backups_fail_and_the_minimum_is_configurable():
    assert violations("rds-backup-retention", db(backupRetentionPeriod=1)) == [
        "backupRetentionPeriod is 1, minimum 7"
    ]
    assert "unset" in violations("rds-backup-retention", res(INSTANCE, "db"))[0]
    assert violations("rds-backup-retention", db(backupRetentionPeriod=14), config={"minBackupDays": 30})


def test_single_az_and_unprotected_fail_only_in_prod():
    weak = db(multiAz=False, deletionProtection=False)
    assert violations("rds-prod-multi-az", weak, environment="prod") == [
        "prod database is not Multi-AZ (multiAz is not true)"
    ]
    assert violations("rds-prod-deletion-protection", weak, environment="prod") == [
        "prod database has deletionProtection off"
    ]
    assert violations("rds-prod-multi-az", weak, environment="dev") == []
    assert violations("rds-prod-deletion-protection", weak, environment="staging") == []


def test_parameter_group_must_force_ssl():
    no_ssl = res(
        "aws:rds/parameterGroup:ParameterGroup",
        "pg-ssl",
        parameters=[{"name": "rds.force_ssl", "value": "0"}],
    )
    assert violations("rds-force-ssl", [db(), no_ssl]) == [
        "database db: parameter group does not set rds.force_ssl=1"
    ]
    default_group = db(parameterGroupName="default.postgres17")
    assert (
        "does not use a parameter group from this stack"
        in violations("rds-force-ssl", [default_group, SSL_GROUP])[0]
    )
