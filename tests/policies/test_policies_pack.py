"""The pack as the Pulumi engine runs it: a separate process serving the analyzer protocol.

These tests go through `policies/__main__.py` (PolicyPack), gRPC and pulumi_policy's own
deserialization, config handling and enforcement levels — not through the rule functions.
"""

from __future__ import annotations

import json
import os

import pytest

from policies.rules import ALL_RULES
from preview.analyzer import (
    AnalyzedResource,
    PolicyPackError,
    PolicyPackProcess,
    ProviderRef,
    run_policy_pack,
)

TAGS = {"team": "platform", "environment": "prod", "owner": "o@example.com", "cost-center": "CC-1"}
PROVIDER = ProviderRef(
    "pulumi:providers:aws",
    "aws",
    "urn:pulumi:prod::mlflow-stack::pulumi:providers:aws::aws",
    {"defaultTags": json.dumps({"tags": TAGS})},
)


def resource(type_: str, name: str, **props) -> AnalyzedResource:
    urn = f"urn:pulumi:prod::mlflow-stack::{type_}::{name}"
    return AnalyzedResource(type_, name, urn, props, {"id": name, **props}, provider=PROVIDER)


@pytest.fixture(scope="module")
def pack():
    with PolicyPackProcess(project="mlflow-stack", stack="prod") as running:
        yield running


def test_the_pack_serves_every_rule_with_its_enforcement_level(pack):
    served = {p.name: p for p in pack.policies()}
    assert set(served) == {r.name for r in ALL_RULES}
    for rule in ALL_RULES:
        assert served[rule.name].level == rule.enforcement
        assert served[rule.name].scope == rule.scope


def test_the_rules_import_and_build_without_starting_a_server():
    """Only policies/__main__.py constructs PolicyPack (which serves and blocks)."""
    import subprocess
    import sys

    from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

    from policies.pack import build_policies

    built = build_policies()
    assert [p.name for p in built] == [r.name for r in ALL_RULES]
    kinds = {p.name: isinstance(p, StackValidationPolicy) for p in built}
    assert all(isinstance(p, ResourceValidationPolicy | StackValidationPolicy) for p in built)
    assert kinds["s3-tls-only"] and not kinds["rds-not-public"]
    # Importing the package's modules in a fresh interpreter returns at once (no server, no port).
    code = "import policies.pack, policies.rules, preview.analyzer, preview.report; print('imported')"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "imported\n"


def test_a_broken_stack_fails_with_the_right_rule_names():
    """Public database, plain-HTTP forwarding with no TLS, wildcard IAM: blocked, by name."""
    broken = [
        resource(
            "aws:rds/instance:Instance",
            "db",
            storageEncrypted=True,
            publiclyAccessible=True,
            backupRetentionPeriod=14,
            multiAz=True,
            deletionProtection=True,
        ),
        resource(
            "aws:lb/listener:Listener",
            "http",
            protocol="HTTP",
            port=80,
            defaultActions=[{"type": "forward", "targetGroupArn": "tg"}],
        ),
        resource(
            "aws:lb/listener:Listener",
            "https",
            protocol="HTTPS",
            port=443,
            sslPolicy="ELBSecurityPolicy-2016-08",
        ),
        resource(
            "aws:iam/rolePolicy:RolePolicy",
            "task-policy",
            policy=json.dumps({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        ),
    ]
    found = run_policy_pack(broken, project="mlflow-stack", stack="prod")
    by_policy = {(d.policy, d.urn.rsplit("::", 1)[-1]) for d in found if d.mandatory}
    assert ("rds-not-public", "db") in by_policy
    assert ("alb-http-redirect-only", "http") in by_policy
    assert ("alb-https-tls-policy", "https") in by_policy
    assert ("iam-no-wildcard-actions", "task-policy") in by_policy


def test_configuration_changes_levels_and_thresholds(pack):
    instance = resource(
        "aws:rds/instance:Instance",
        "db",
        storageEncrypted=True,
        publiclyAccessible=True,
        backupRetentionPeriod=3,
        multiAz=True,
        deletionProtection=True,
    )
    pack.configure({"rds-not-public": "advisory", "rds-backup-retention": {"minBackupDays": 3}})
    levels = {d.policy: d.level for d in pack.analyze([instance])}
    assert levels.get("rds-not-public") == "advisory"
    assert "rds-backup-retention" not in levels
    pack.configure({"all": "disabled"})
    assert pack.analyze([instance]) == []
    pack.configure(None)
    levels = {d.policy: d.level for d in pack.analyze([instance])}
    assert levels["rds-not-public"] == "mandatory"
    assert levels["rds-backup-retention"] == "mandatory"


def test_unknown_policy_in_config_is_one_clear_error(pack):
    with pytest.raises(PolicyPackError, match=r"unknown policies \['rds-no-public'\]"):
        pack.configure({"rds-no-public": "advisory"})


def test_config_is_checked_against_each_policys_schema(pack):
    bad = {
        "rds-backup-retention": {"minBackupDays": "seven", "minBackupDay": 7},
        "s3-lifecycle": {"maxAbortIncompleteMultipartDays": 0},
        "alb-https-tls-policy": {"approvedPolicies": ["ELBSecurityPolicy-TLS13-1-2-2021-06", 3]},
        "rds-prod-multi-az": {"environment": "production"},
    }
    with pytest.raises(PolicyPackError) as raised:
        pack.configure(bad)
    message = str(raised.value)
    assert "rds-backup-retention.minBackupDays: 'seven' is not of type integer" in message
    assert (
        "rds-backup-retention.minBackupDay: not a setting of this policy (settings: minBackupDays)" in message
    )
    assert "s3-lifecycle.maxAbortIncompleteMultipartDays: 0 is below the minimum 1" in message
    assert "alb-https-tls-policy.approvedPolicies: every item must be of type string" in message
    assert "rds-prod-multi-az.environment: 'production' is not one of ['dev', 'staging', 'prod']" in message


def test_secret_values_reach_the_pack_as_secrets_and_never_come_back(pack):
    sentinel = "SENTINEL-policy-pack-secret"
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": sentinel}
    task = resource(
        "aws:ecs/taskDefinition:TaskDefinition",
        "task",
        containerDefinitions=json.dumps(
            [{"name": "mlflow", "environment": [{"name": "MLFLOW_STACK_DB_PASSWORD", "value": sentinel}]}]
        ),
        password=secret,
    )
    pack.configure(None)
    found = pack.analyze([task])
    assert any(d.policy == "ecs-no-plaintext-secrets" for d in found)
    assert not any(sentinel in d.message for d in found)


def test_the_pack_process_is_stopped_by_pid():
    running = PolicyPackProcess(project="mlflow-stack", stack="dev")
    running.start()
    pid = running.pid
    assert pid is not None
    running.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's "unknown string" during preview


def test_during_preview_companions_are_matched_by_property_dependencies(pack):
    """A first `pulumi preview`: bucket names are unknown, the engine's dependencies are not."""
    bucket = resource("aws:s3/bucket:Bucket", "logs", bucket=UNKNOWN)
    other = resource("aws:s3/bucket:Bucket", "other", bucket=UNKNOWN)
    block = AnalyzedResource(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "logs-pab",
        "urn:pulumi:prod::mlflow-stack::aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock::logs-pab",
        {"bucket": UNKNOWN},
        {
            "bucket": UNKNOWN,
            "blockPublicAcls": True,
            "blockPublicPolicy": True,
            "ignorePublicAcls": True,
            "restrictPublicBuckets": True,
        },
        provider=PROVIDER,
        property_dependencies={"bucket": (bucket.urn,)},
    )
    pack.configure(None)
    found = [d for d in pack.analyze([bucket, other, block]) if d.policy == "s3-public-access-blocked"]
    assert [(d.level, d.urn.rsplit("::", 1)[-1], d.message) for d in found] == [
        ("mandatory", "other", "bucket other has no BucketPublicAccessBlock")
    ]


def test_an_unknown_judged_value_is_reported_as_not_checkable_yet(pack):
    listener = resource(
        "aws:lb/listener:Listener", "https", protocol="HTTPS", sslPolicy=UNKNOWN, certificateArn="c"
    )
    pack.configure(None)
    found = [d for d in pack.analyze([listener]) if d.policy == "alb-https-tls-policy"]
    assert len(found) == 1
    assert found[0].level == "advisory"
    assert "can't run policy 'alb-https-tls-policy'" in found[0].message and ".sslPolicy" in found[0].message


def test_a_pack_that_cannot_start_is_one_clear_error_with_its_stderr(tmp_path):
    (tmp_path / "__main__.py").write_text("raise RuntimeError('the pack is broken')\n")
    broken = PolicyPackProcess(project="mlflow-stack", stack="dev", pack_dir=tmp_path)
    with pytest.raises(PolicyPackError, match=r"exited before serving:[\s\S]*the pack is broken"):
        broken.start()
    assert broken.pid is None  # stopped and reaped
